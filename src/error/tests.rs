//! The error contract against SPEC §7.

use super::*;

#[test]
fn idp_error_filter_accepts_only_lowercase_identifiers() {
    assert_eq!(IdpErrorCode::filter("access_denied").as_str(), "access_denied");
    assert_eq!(IdpErrorCode::filter("<script>").as_str(), "unknown");
    assert_eq!(IdpErrorCode::filter("").as_str(), "unknown");
    assert_eq!(IdpErrorCode::filter(&"a".repeat(65)).as_str(), "unknown");
    assert_eq!(IdpErrorCode::filter("Invalid_Grant").as_str(), "unknown");
}

/// Every variant, by an exhaustive match: a new code that is not listed here fails to build.
fn all_codes() -> Vec<ErrorCode> {
    use ErrorCode::*;
    let all = [
        InvalidRequest,
        InvalidReturnTo,
        InvalidState,
        InvalidIssuer,
        LoginFailed,
        TokenExchangeFailed,
        InvalidIdToken,
        InvalidLogoutRequest,
        InvalidPath,
        Unauthenticated,
        SessionExpired,
        Csrf,
        TokenExchangeRefused,
        NotFound,
        MethodNotAllowed,
        PayloadTooLarge,
        RateLimited,
        HeadersTooLarge,
        IdpUnavailable,
        IdpTimeout,
        ParRejected,
        NotReady,
        WebsocketUnsupported,
        UpstreamUnavailable,
        UpstreamTimeout,
        SessionTooLarge,
        SessionStoreUnavailable,
        EventStreamsExhausted,
        BackchannelUnavailable,
        InvalidLogoutToken,
        UnknownProvider,
        ProviderNotAllowed,
    ];
    for code in all {
        match code {
            InvalidRequest
            | InvalidReturnTo
            | InvalidState
            | InvalidIssuer
            | LoginFailed
            | TokenExchangeFailed
            | InvalidIdToken
            | InvalidLogoutRequest
            | InvalidPath
            | Unauthenticated
            | SessionExpired
            | Csrf
            | TokenExchangeRefused
            | NotFound
            | MethodNotAllowed
            | PayloadTooLarge
            | RateLimited
            | HeadersTooLarge
            | IdpUnavailable
            | IdpTimeout
            | ParRejected
            | NotReady
            | WebsocketUnsupported
            | UpstreamUnavailable
            | UpstreamTimeout
            | SessionTooLarge
            | SessionStoreUnavailable
            | EventStreamsExhausted
            | BackchannelUnavailable
            | InvalidLogoutToken
            | UnknownProvider
            | ProviderNotAllowed => {}
        }
    }
    all.to_vec()
}

/// SPEC §7's list ("Every error code, with its status"), read from docs/spec.md: status →
/// the codes it names.
fn spec_statuses() -> std::collections::HashMap<String, u16> {
    let spec = include_str!("../../docs/spec.md");
    let start = spec.find("Every error code, with its status").expect("SPEC §7 lists the error codes");
    let list = &spec[start..];
    let list = &list[..list.find("\n\n").unwrap_or(list.len())];
    let mut out = std::collections::HashMap::new();
    let mut status = 0;
    for word in list.split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '.') {
        if let Ok(n) = word.parse::<u16>() {
            status = n;
        } else if let Some(code) = word.strip_prefix('`').and_then(|w| w.strip_suffix('`')) {
            out.insert(code.to_owned(), status);
        }
    }
    out
}

#[test]
fn every_code_maps_to_its_spec_status() {
    let spec = spec_statuses();
    assert!(spec.len() >= 27, "SPEC list not read: {spec:?}");
    for code in all_codes() {
        let want = spec.get(code.as_str()).unwrap_or_else(|| panic!("{} is not in SPEC §7", code.as_str()));
        assert_eq!(code.status().as_u16(), *want, "{}", code.as_str());
        assert!(!code.description().is_empty());
    }
    let names: std::collections::HashSet<&str> = all_codes().iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), all_codes().len(), "two variants share a code");
    // The six cases this test began with, kept as they were.
    let cases = [
        (ErrorCode::InvalidState, 400, "invalid_state"),
        (ErrorCode::Csrf, 403, "csrf"),
        (ErrorCode::IdpUnavailable, 502, "idp_unavailable"),
        (ErrorCode::IdpTimeout, 504, "idp_timeout"),
        (ErrorCode::SessionExpired, 401, "session_expired"),
        (ErrorCode::HeadersTooLarge, 431, "headers_too_large"),
    ];
    for (code, status, name) in cases {
        assert_eq!(code.status().as_u16(), status);
        assert_eq!(code.as_str(), name);
    }
}

#[test]
fn protocol_and_storage_errors_map_to_their_codes() {
    let store: AppError = StoreError::Timeout.into();
    assert_eq!(store.code, ErrorCode::SessionStoreUnavailable);
    assert_eq!(AppError::from(NotDiscovered).code, ErrorCode::IdpUnavailable);
    let refused = AppError::from(TokenError::Refused(IdpErrorCode::filter("invalid_grant")));
    assert_eq!(
        (refused.code, refused.idp_error.as_ref().map(IdpErrorCode::as_str)),
        (ErrorCode::TokenExchangeFailed, Some("invalid_grant"))
    );
    assert_eq!(AppError::from(TokenError::Timeout).code, ErrorCode::IdpTimeout);
    assert_eq!(AppError::from(TokenError::Unavailable("x")).code, ErrorCode::IdpUnavailable);
    let route = route_exchange_error(TokenError::Refused(IdpErrorCode::filter("invalid_scope")));
    assert_eq!(
        (route.code, route.code.status().as_u16(), route.idp_error.as_ref().map(IdpErrorCode::as_str)),
        (ErrorCode::TokenExchangeRefused, 403, Some("invalid_scope"))
    );
    assert_eq!(route_exchange_error(TokenError::Timeout).code, ErrorCode::IdpTimeout);
    assert_eq!(route_exchange_error(TokenError::Unavailable("x")).code, ErrorCode::IdpUnavailable);
    let par = AppError::from(ParError::Rejected(IdpErrorCode::filter("invalid_request")));
    assert_eq!(
        (par.code, par.code.status().as_u16(), par.idp_error.as_ref().map(IdpErrorCode::as_str)),
        (ErrorCode::ParRejected, 502, Some("invalid_request"))
    );
    assert_eq!(AppError::from(ParError::Timeout).code, ErrorCode::IdpTimeout);
    assert_eq!(AppError::from(ParError::Unavailable("x")).code, ErrorCode::IdpUnavailable);
}

#[test]
fn navigational_page_is_inert() {
    let r = AppError::idp(ErrorCode::LoginFailed, IdpErrorCode::filter("<script>")).into_navigational(None);
    assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], "default-src 'none'");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
