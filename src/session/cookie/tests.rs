use super::*;
use crate::secret::Secret;
use crate::session::model::{LogoutToken, Token};
use crate::settings::KeyMaterial;
use http::HeaderValue;
use http::header::COOKIE;

fn names(secure: bool) -> CookieNames {
    CookieNames::new(&SessionSettings {
        store: crate::settings::StoreKind::Cookie,
        url: None,
        keys: vec![KeyMaterial([7; 32])],
        secure,
        same_site: SameSite::Strict,
        idle_timeout_secs: 1800,
        absolute_timeout_secs: 28800,
        cache_max_bytes: 16 << 20,
        events_warning_secs: 120,
    })
}

fn session(id_token_len: usize) -> Session {
    Session {
        sub: "alice".into(),
        sid: Some("sid-1".into()),
        id_token: Token::Opaque { text: format!("e30.{}.sig", "a".repeat(id_token_len)), bearer: Default::default() },
        access_token: Token::new("at"),
        access_expires_at: 100,
        access_issued_at: 1,
        refresh_token: Some(Secret::new("rt")),
        scope: None,
        created_at: 1,
        absolute_expires_at: 1000,
        sealed_at: 1,
        refreshed_from: None,
        logout_token: LogoutToken::random(),
        stored: None,
        dpop: None,
        provider: None,
    }
}

/// Turn Set-Cookie lines into the Cookie header a browser would send back.
fn browser_sends(lines: &[String]) -> HeaderMap {
    let pairs: Vec<String> = lines
        .iter()
        .filter(|l| !l.contains("Max-Age=0"))
        .filter_map(|l| l.split(';').next().map(str::to_owned))
        .collect();
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(&pairs.join("; ")).unwrap_or(HeaderValue::from_static("")));
    h
}

#[test]
fn small_session_is_one_cookie_and_expires_all_chunks() {
    let (n, keys) = (names(true), Keyring::new(&[KeyMaterial([7; 32])]));
    let lines = n.write_session(&seal_session(&n, &keys, &session(100)), 50);
    assert!(lines[0].starts_with("__Host-bff="));
    assert!(lines[0].contains("HttpOnly") && lines[0].contains("Secure") && lines[0].contains("SameSite=Strict"));
    assert!(lines[0].contains("Path=/") && !lines[0].contains("Domain"));
    assert_eq!(lines.iter().filter(|l| l.contains("Max-Age=0")).count(), MAX_CHUNKS);
    let h = browser_sends(&lines);
    let opened = SessionCookie::from_headers(&n, &h).open(&n, &keys);
    assert_eq!(opened.map(|s| s.sub.clone()), Ok("alice".to_owned()));
}

#[test]
fn large_session_round_trips_as_chunks() {
    let (n, keys) = (names(true), Keyring::new(&[KeyMaterial([7; 32])]));
    let lines = n.write_session(&seal_session(&n, &keys, &session(9000)), 50);
    let live: Vec<_> = lines.iter().filter(|l| !l.contains("Max-Age=0")).collect();
    assert!(live.len() >= 3 && live.iter().all(|l| l.starts_with("__Host-bff.")));
    assert!(lines.iter().any(|l| l.starts_with("__Host-bff=;") && l.contains("Max-Age=0")));
    let h = browser_sends(&lines);
    assert!(SessionCookie::from_headers(&n, &h).open(&n, &keys).is_ok());
}

#[test]
fn mixed_forms_and_foreign_chunks_are_anonymous() {
    let (n, keys) = (names(true), Keyring::new(&[KeyMaterial([7; 32])]));
    let a = n.write_session(&seal_session(&n, &keys, &session(9000)), 50);
    let b = n.write_session(&seal_session(&n, &keys, &session(9000)), 50);
    // Chunk 1 of another session.
    let mut mixed: Vec<String> = a.iter().filter(|l| !l.starts_with("__Host-bff.1")).cloned().collect();
    mixed.extend(b.iter().filter(|l| l.starts_with("__Host-bff.1")).cloned());
    assert_eq!(SessionCookie::from_headers(&n, &browser_sends(&mixed)).open(&n, &keys).err(), Some(Unopened::Invalid));
    // Both the single cookie and chunks.
    let single = n.write_session(&seal_session(&n, &keys, &session(10)), 50);
    let mut both = a.clone();
    both.push(single[0].clone());
    assert_eq!(SessionCookie::from_headers(&n, &browser_sends(&both)).open(&n, &keys).err(), Some(Unopened::Ambiguous));
}

#[test]
fn a_chunk_name_sent_twice_or_an_unknown_key_is_not_expired() {
    let (n, keys) = (names(true), Keyring::new(&[KeyMaterial([7; 32])]));
    let lines = n.write_session(&seal_session(&n, &keys, &session(9000)), 50);
    let mut h = browser_sends(&lines);
    let chunk0 = lines.iter().find(|l| l.starts_with("__Host-bff.0=")).and_then(|l| l.split(';').next());
    h.append(COOKIE, HeaderValue::from_str(chunk0.unwrap_or_default()).unwrap_or(HeaderValue::from_static("")));
    let dup = SessionCookie::from_headers(&n, &h).open(&n, &keys).err();
    assert_eq!(dup, Some(Unopened::Ambiguous));
    assert!(dup.is_some_and(|d| !d.expire()));
    let newer = Keyring::new(&[KeyMaterial([8; 32]), KeyMaterial([7; 32])]);
    let single = n.write_session(&seal_session(&n, &newer, &session(10)), 50);
    let unknown = SessionCookie::from_headers(&n, &browser_sends(&single)).open(&n, &keys).err();
    assert_eq!(unknown, Some(Unopened::UnknownKey));
    assert!(unknown.is_some_and(|u| !u.expire()));
}

#[test]
fn insecure_mode_drops_the_host_prefix() {
    let n = names(false);
    assert_eq!(n.session, "bff");
    assert_eq!(n.tx_prefix, "bff-tx.");
    let line = n.set_cookie("bff", "v".into(), 5, false);
    assert!(!line.contains("Secure"));
}

#[test]
fn present_in_sees_the_session_cookie_by_name_alone() {
    let n = names(true);
    let headers = |fields: &[&str]| {
        let mut h = HeaderMap::new();
        for f in fields {
            h.append(COOKIE, HeaderValue::from_str(f).unwrap_or(HeaderValue::from_static("")));
        }
        h
    };
    for (fields, want) in [
        (vec!["theme=dark; __Host-bff=sealed"], true),
        (vec!["theme=dark", "__Host-bff.0=part; __Host-bff.1=part"], true),
        (vec!["__Host-bff.1=part"], false),
        (vec!["__Host-bffx=1; x__Host-bff=2; __Host-bff-tx.abc=3"], false),
        (vec![], false),
    ] {
        let h = headers(&fields);
        assert_eq!(SessionCookie::present_in(&n, &h), want, "{fields:?}");
        // Where both can see it, the cheap check agrees with the full read.
        assert_eq!(SessionCookie::from_headers(&n, &h).is_present(), want, "{fields:?}");
    }
}
