//! Property tests (10,000 cases each, on stable Rust): the parsers that read browser and IdP
//! input never panic, and the cookie codec round-trips and fails closed.

use oidc_bff::login::CallbackParams;
use oidc_bff::login::return_to::ReturnTo;
use oidc_bff::proxy::path::is_safe;
use oidc_bff::secret::Secret;
use oidc_bff::session::cookie::{CookieNames, SessionCookie, seal_session};
use oidc_bff::session::model::{LogoutToken, Session, Token};
use oidc_bff::session::seal::{Keyring, Purpose};
use oidc_bff::settings::{KeyMaterial, SameSite, SessionSettings};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 10_000, failure_persistence: None, ..ProptestConfig::default() }
}

fn names_keys() -> (CookieNames, Keyring) {
    let s = SessionSettings {
        store: oidc_bff::settings::StoreKind::Cookie,
        url: None,
        keys: vec![KeyMaterial([3; 32])],
        secure: true,
        same_site: SameSite::Strict,
        idle_timeout_secs: 1800,
        absolute_timeout_secs: 28800,
        cache_max_bytes: 16 << 20,
        events_warning_secs: 120,
    };
    (CookieNames::new(&s), Keyring::new(&s.keys))
}

fn header_for(lines: &[String]) -> http::HeaderMap {
    let pairs: Vec<String> = lines
        .iter()
        .filter(|l| !l.contains("Max-Age=0"))
        .filter_map(|l| l.split(';').next().map(str::to_owned))
        .collect();
    let mut h = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&pairs.join("; ")) {
        h.insert(http::header::COOKIE, v);
    }
    h
}

fn session(sub: String, id_token: String, access: String, claims_pad: usize) -> Session {
    Session {
        sub,
        sid: None,
        id_token: Token::new(&format!("{id_token}{}", "x".repeat(claims_pad))),
        access_token: Token::new(&access),
        access_expires_at: 10,
        access_issued_at: 1,
        refresh_token: Some(Secret::new("rt")),
        scope: None,
        created_at: 1,
        absolute_expires_at: 100,
        sealed_at: 1,
        refreshed_from: None,
        logout_token: LogoutToken::random(),
        stored: None,
        dpop: None,
        provider: None,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sessions_round_trip_through_cookies_of_any_size(
        sub in ".{0,40}", id_token in "[A-Za-z0-9_.-]{0,200}", access in "\\PC{0,100}", pad in 0usize..20_000,
    ) {
        let (names, keys) = names_keys();
        let s = session(sub.clone(), id_token, access.clone(), pad);
        let sealed = seal_session(&names, &keys, &s);
        let lines = names.write_session(&sealed, 60);
        let h = header_for(&lines);
        let opened = SessionCookie::from_headers(&names, &h).open_uncached(&names, &keys);
        if sealed.len() <= oidc_bff::session::cookie::MAX_SEALED_BYTES {
            let opened = opened.ok_or_else(|| TestCaseError::fail("did not open"))?;
            prop_assert_eq!(opened.sub, sub);
            let at = opened.access_token.compact();
            prop_assert_eq!(at.expose(), access.as_str());
        } else {
            prop_assert!(opened.is_none());
        }
    }

    #[test]
    fn any_change_to_a_sealed_value_fails_closed(pos in any::<prop::sample::Index>(), with in "[A-Za-z0-9_-]") {
        let (_, keys) = names_keys();
        let sealed = keys.seal(Purpose::Session, "__Host-bff", b"payload bytes");
        let i = pos.index(sealed.len());
        let mut tampered = sealed.clone().into_bytes();
        tampered[i] = with.as_bytes()[0];
        let tampered = String::from_utf8(tampered).unwrap_or_default();
        let opened = keys.open(Purpose::Session, "__Host-bff", &tampered);
        prop_assert!(tampered == sealed || opened.is_none() || opened.as_deref() == Some(&b"payload bytes"[..]));
    }

    #[test]
    fn arbitrary_cookie_headers_never_panic(header in "\\PC{0,600}") {
        let (names, keys) = names_keys();
        let mut h = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&header) {
            h.insert(http::header::COOKIE, v);
        }
        let c = SessionCookie::from_headers(&names, &h);
        let _ = c.sealed();
        prop_assert!(c.open(&names, &keys).is_err());
    }

    #[test]
    fn arbitrary_chunk_sets_never_panic(chunks in prop::collection::vec(("[0-9]{1,2}", "[A-Za-z0-9_.-]{0,60}"), 0..10)) {
        let (names, keys) = names_keys();
        let header: Vec<String> = chunks.iter().map(|(i, v)| format!("__Host-bff.{i}={v}")).collect();
        let mut h = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&header.join("; ")) {
            h.insert(http::header::COOKIE, v);
        }
        prop_assert!(SessionCookie::from_headers(&names, &h).open(&names, &keys).is_err());
    }

    #[test]
    fn callback_parameters_parse_or_refuse_never_panic(query in "\\PC{0,300}") {
        let _ = CallbackParams::from_query(&query);
    }

    #[test]
    fn accepted_return_to_values_are_same_origin_paths(v in "\\PC{0,80}") {
        if let Ok(r) = ReturnTo::parse(Some(&v), &[]) {
            let s = r.as_str();
            prop_assert!(s.starts_with('/') && !s.starts_with("//") && !s.contains('\\'));
            let decoded = percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            prop_assert!(!decoded.starts_with("//") && !decoded.contains('\\'));
            prop_assert!(s.bytes().all(|b| (0x21..0x7f).contains(&b)));
        }
    }

    #[test]
    fn safe_paths_have_no_dot_segment_once_decoded(p in "/[a-z%2eEfF5cC/.;\\\\0-9]{0,40}") {
        if is_safe(&p) {
            let decoded = percent_encoding::percent_decode_str(&p).decode_utf8_lossy().into_owned();
            prop_assert!(decoded.split('/').all(|seg| {
                let name = seg.split(';').next().unwrap_or(seg);
                name != "." && name != ".."
            }), "{} decodes to a dot-segment", p);
            prop_assert!(!decoded.contains('\\'));
        }
    }

    #[test]
    fn tokens_are_stored_losslessly(t in "\\PC{0,300}") {
        let stored = Token::new(&t).compact();
        prop_assert_eq!(stored.expose(), t.as_str());
    }
}
