//! The public error contract (SPEC §7): every failure a client can see is one of these codes,
//! rendered as JSON `{"error", "error_description"}` or, on navigational endpoints, as an inert
//! HTML page (or a redirect to `error_url`). Descriptions are fixed text: nothing the client or
//! the IdP sent is ever reflected, except an IdP error code that passed [`IdpErrorCode::filter`].
//!
//! This is also the one place where the errors of protocol and storage code (`oidc`, `store`)
//! become SPEC codes: those modules return their own error types, mapped below.

use crate::oidc::NotDiscovered;
use crate::oidc::par::ParError;
pub use crate::oidc::token::IdpErrorCode;
use crate::oidc::token::TokenError;
use crate::store::StoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Stable error codes of SPEC §5–§7. Each variant's doc names its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: malformed body or parameters.
    InvalidRequest,
    /// 400: `return_to` is not a same-origin path or an allowed origin.
    InvalidReturnTo,
    /// 400: the callback's `state` matches no login transaction of this browser.
    InvalidState,
    /// 400: the RFC 9207 `iss` parameter is missing (when required) or wrong.
    InvalidIssuer,
    /// 400: the IdP answered the authorization request with `error=`.
    LoginFailed,
    /// 400: the token endpoint refused the code (OAuth error answer).
    TokenExchangeFailed,
    /// 400: the ID token failed validation (SPEC §3.4).
    InvalidIdToken,
    /// 400: `GET /logout` without the session's `sid`.
    InvalidLogoutRequest,
    /// 400: a proxied path with dot-segments, encoded slashes, control characters.
    InvalidPath,
    /// 401: a route that needs a session was called without one.
    Unauthenticated,
    /// 401: the IdP refused to refresh the session's tokens.
    SessionExpired,
    /// 403: missing `X-CSRF: 1` or a foreign `Origin`.
    Csrf,
    /// 403: the IdP refused a route's token exchange (SPEC §6.2).
    TokenExchangeRefused,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 413.
    PayloadTooLarge,
    /// 429: token exchanges per client IP above `exchange_rate_per_minute`.
    RateLimited,
    /// 431.
    HeadersTooLarge,
    /// 502: the IdP is unreachable, answered 5xx/3xx, non-JSON, oversized, or not yet discovered.
    IdpUnavailable,
    /// 504: the IdP did not answer within `http_timeout_secs`.
    IdpTimeout,
    /// 502: the PAR endpoint answered an OAuth error (SPEC §3.5).
    ParRejected,
    /// 503: not ready (discovery or JWKS not loaded yet).
    NotReady,
    /// 400: `Upgrade` on a route without websocket support.
    WebsocketUnsupported,
    /// 502: the route's upstream could not be reached.
    UpstreamUnavailable,
    /// 504: the route's upstream did not answer within `timeout_secs`.
    UpstreamTimeout,
    /// 502: the IdP's tokens and claims do not fit in 8 cookie chunks (~30 KB).
    SessionTooLarge,
    /// 503: the session store (`[session] url`) did not answer in time or failed.
    SessionStoreUnavailable,
    /// 503: `max_event_streams` event streams and WebSockets are open, or 8 streams of this
    /// session (SPEC §5).
    EventStreamsExhausted,
    /// 501: back-channel logout in cookie mode without a `[session] url` for the revocation list.
    BackchannelUnavailable,
    /// 400: a back-channel logout token failed validation.
    InvalidLogoutToken,
    /// 400: `provider=` names no configured provider (SPEC §3.7).
    UnknownProvider,
    /// 403: the route is limited to other providers' sessions (SPEC §3.7).
    ProviderNotAllowed,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidReturnTo => "invalid_return_to",
            Self::InvalidState => "invalid_state",
            Self::InvalidIssuer => "invalid_issuer",
            Self::LoginFailed => "login_failed",
            Self::TokenExchangeFailed => "token_exchange_failed",
            Self::InvalidIdToken => "invalid_id_token",
            Self::InvalidLogoutRequest => "invalid_logout_request",
            Self::InvalidPath => "invalid_path",
            Self::Unauthenticated => "unauthenticated",
            Self::SessionExpired => "session_expired",
            Self::Csrf => "csrf",
            Self::TokenExchangeRefused => "token_exchange_refused",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::HeadersTooLarge => "headers_too_large",
            Self::IdpUnavailable => "idp_unavailable",
            Self::IdpTimeout => "idp_timeout",
            Self::ParRejected => "par_rejected",
            Self::NotReady => "not_ready",
            Self::WebsocketUnsupported => "websocket_unsupported",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::SessionTooLarge => "session_too_large",
            Self::SessionStoreUnavailable => "session_store_unavailable",
            Self::EventStreamsExhausted => "event_streams_exhausted",
            Self::BackchannelUnavailable => "backchannel_unavailable",
            Self::InvalidLogoutToken => "invalid_logout_token",
            Self::UnknownProvider => "unknown_provider",
            Self::ProviderNotAllowed => "provider_not_allowed",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest
            | Self::InvalidReturnTo
            | Self::InvalidState
            | Self::InvalidIssuer
            | Self::LoginFailed
            | Self::TokenExchangeFailed
            | Self::InvalidIdToken
            | Self::InvalidLogoutRequest
            | Self::InvalidPath
            | Self::WebsocketUnsupported
            | Self::InvalidLogoutToken
            | Self::UnknownProvider => StatusCode::BAD_REQUEST,
            Self::Unauthenticated | Self::SessionExpired => StatusCode::UNAUTHORIZED,
            Self::Csrf | Self::TokenExchangeRefused | Self::ProviderNotAllowed => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::IdpUnavailable | Self::ParRejected | Self::UpstreamUnavailable | Self::SessionTooLarge => {
                StatusCode::BAD_GATEWAY
            }
            Self::IdpTimeout | Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::NotReady | Self::SessionStoreUnavailable | Self::EventStreamsExhausted => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::BackchannelUnavailable => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// Fixed, human-readable text. Never built from input.
    pub fn description(self) -> &'static str {
        match self {
            Self::InvalidRequest => "The request is malformed.",
            Self::InvalidReturnTo => "return_to must be a same-origin path or an allowed origin.",
            Self::InvalidState => "The login transaction is unknown or has expired. Start again.",
            Self::InvalidIssuer => "The authorization response came from an unexpected issuer.",
            Self::LoginFailed => "The identity provider did not complete the login.",
            Self::TokenExchangeFailed => "The identity provider refused the authorization code.",
            Self::InvalidIdToken => "The identity provider's ID token failed validation.",
            Self::InvalidLogoutRequest => "The logout link is not valid for this session.",
            Self::InvalidPath => "The path is not allowed.",
            Self::Unauthenticated => "A session is required.",
            Self::SessionExpired => "The session has ended. Log in again.",
            Self::Csrf => "The request failed the cross-site request forgery check.",
            Self::TokenExchangeRefused => "The identity provider refused a token for this API.",
            Self::NotFound => "Not found.",
            Self::MethodNotAllowed => "Method not allowed.",
            Self::PayloadTooLarge => "The request body is too large.",
            Self::RateLimited => "Too many requests. Try again later.",
            Self::HeadersTooLarge => "The request headers are too large.",
            Self::IdpUnavailable => "The identity provider is unavailable.",
            Self::IdpTimeout => "The identity provider did not answer in time.",
            Self::ParRejected => "The identity provider refused the pushed authorization request.",
            Self::NotReady => "The service is not ready.",
            Self::WebsocketUnsupported => "WebSocket upgrades are not allowed on this route.",
            Self::UpstreamUnavailable => "The API is unavailable.",
            Self::UpstreamTimeout => "The API did not answer in time.",
            Self::SessionTooLarge => "The identity provider's tokens are too large for a cookie session.",
            Self::SessionStoreUnavailable => "The session store is unavailable. Try again shortly.",
            Self::EventStreamsExhausted => "Too many live session streams are open. Try again later.",
            Self::BackchannelUnavailable => "Back-channel logout needs a session store ([session] url).",
            Self::InvalidLogoutToken => "The logout token failed validation.",
            Self::UnknownProvider => "No identity provider of that name is configured.",
            Self::ProviderNotAllowed => "This API does not accept sessions of your identity provider.",
        }
    }
}

/// The one error type handlers return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    pub code: ErrorCode,
    pub idp_error: Option<IdpErrorCode>,
}

impl AppError {
    pub fn idp(code: ErrorCode, idp_error: IdpErrorCode) -> Self {
        Self { code, idp_error: Some(idp_error) }
    }

    pub fn json_body(&self) -> String {
        let mut body = serde_json::json!({
            "error": self.code.as_str(),
            "error_description": self.code.description(),
        });
        if let Some(idp) = &self.idp_error {
            body["idp_error"] = idp.as_str().into();
        }
        body.to_string()
    }

    /// The SPEC §7 rendering for `GET /login`, `/callback`, `/logout`: an inert page with fixed
    /// text, or a redirect to `error_url?error=<code>` when one is configured.
    pub fn into_navigational(self, error_url: Option<&url::Url>) -> Response {
        let mut response = match error_url {
            Some(base) => {
                let mut target = base.clone();
                target.query_pairs_mut().append_pair("error", self.code.as_str());
                let mut r = StatusCode::FOUND.into_response();
                if let Ok(v) = HeaderValue::from_str(target.as_str()) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
            None => {
                // Codes are fixed ASCII identifiers, so escaping is belt and braces.
                let code = html_escape(self.code.as_str());
                let idp = self.idp_error.as_ref().map(|c| html_escape(c.as_str()));
                let detail =
                    idp.map(|c| format!("<p>Identity provider error: <code>{c}</code></p>")).unwrap_or_default();
                let body = format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign-in error</title></head>\
                     <body><h1>Sign-in error</h1><p>{}</p><p>Error code: <code>{code}</code></p>{detail}</body></html>",
                    html_escape(self.code.description())
                );
                let mut r = (self.code.status(), body).into_response();
                let h = r.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
                h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'"));
                h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                r
            }
        };
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response.extensions_mut().insert(self);
        response
    }
}

impl From<ErrorCode> for AppError {
    fn from(code: ErrorCode) -> Self {
        Self { code, idp_error: None }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "session store unavailable");
        ErrorCode::SessionStoreUnavailable.into()
    }
}

impl From<NotDiscovered> for AppError {
    fn from(_: NotDiscovered) -> Self {
        ErrorCode::IdpUnavailable.into()
    }
}

/// A failed authorization-code exchange (a failed refresh ends or keeps the session instead:
/// `session::refresh`).
impl From<TokenError> for AppError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Refused(code) => AppError::idp(ErrorCode::TokenExchangeFailed, code),
            TokenError::Timeout => ErrorCode::IdpTimeout.into(),
            TokenError::Unavailable(_) => ErrorCode::IdpUnavailable.into(),
        }
    }
}

/// A pushed authorization request that failed (SPEC §3.5).
impl From<ParError> for AppError {
    fn from(e: ParError) -> Self {
        match e {
            ParError::Rejected(code) => AppError::idp(ErrorCode::ParRejected, code),
            ParError::Timeout => ErrorCode::IdpTimeout.into(),
            ParError::Unavailable(_) => ErrorCode::IdpUnavailable.into(),
        }
    }
}

/// A route's token exchange that failed (SPEC §6.2): a refusal is this route's 403, not the
/// login's `token_exchange_failed`; the session goes on either way.
pub fn route_exchange_error(e: TokenError) -> AppError {
    match e {
        TokenError::Refused(code) => AppError::idp(ErrorCode::TokenExchangeRefused, code),
        other => other.into(),
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut r = (self.code.status(), self.json_body()).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // The access-log layer reads this to record the code; the body stays pure.
        r.extensions_mut().insert(self);
        r
    }
}

pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
