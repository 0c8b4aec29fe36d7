//! Cookie attributes, transaction-cookie limits, CSRF, hostile cookies and return_to values.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn session_cookie_attributes_are_host_prefixed_httponly_secure_strict() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    let cb = b.login(&bff, "alice", "/").await;
    let line = cb.set_cookies().into_iter().find(|c| c.starts_with("__Host-bff=") && !c.contains("Max-Age=0"));
    let line = line.unwrap_or_else(|| panic!("no session cookie in {:?}", cb.set_cookies()));
    let attrs: Vec<&str> = line.split(';').map(str::trim).collect();
    for a in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&a), "{a} missing in {line}");
    }
    assert!(!line.to_ascii_lowercase().contains("domain"));
    let tx = cb.set_cookies().into_iter().find(|c| c.starts_with("__Host-bff-tx.")).unwrap_or_default();
    assert!(tx.contains("SameSite=Lax") && tx.contains("HttpOnly") && tx.contains("Secure"), "{tx}");
}

#[tokio::test]
async fn insecure_mode_names_the_cookie_bff() {
    let (_idp, bff) = stack(json!({}), &[("BFF_SESSION__SECURE", "false")]).await;
    let mut b = Browser::new(&bff);
    let cb = b.login(&bff, "alice", "/").await;
    let line = cb.set_cookies().into_iter().find(|c| c.starts_with("bff=")).unwrap_or_default();
    assert!(line.contains("HttpOnly") && line.contains("SameSite=Strict") && !line.contains("Secure"), "{line}");
    assert_eq!(b.session(&bff).await.status, 200);
}

#[tokio::test]
async fn eight_abandoned_logins_leave_at_most_five_transaction_cookies() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    for _ in 0..8 {
        assert_eq!(b.get(&bff.url("/login")).await.status, 302);
    }
    let n = b.jar().keys().filter(|k| k.starts_with("__Host-bff-tx.")).count();
    assert_eq!(n, 5);
}

#[tokio::test]
async fn missing_x_csrf_is_403_on_every_spa_endpoint() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    let origin = bff.url("");
    for (method, path) in [
        (Method::GET, "/session"),
        (Method::POST, "/login/start"),
        (Method::POST, "/login/end"),
        (Method::POST, "/logout"),
    ] {
        let r = b.request(method.clone(), &bff.url(path), &[("origin", &origin)], Some("{}".into())).await;
        assert_eq!((r.status, r.json()["error"].clone()), (403, json!("csrf")), "{method} {path}");
    }
}

#[tokio::test]
async fn foreign_origin_on_post_is_403() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    for origin in ["http://evil.example", "null"] {
        let r = b.request(Method::POST, &bff.url("/logout"), &[("x-csrf", "1"), ("origin", origin)], None).await;
        assert_eq!((r.status, r.json()["error"].clone()), (403, json!("csrf")), "{origin}");
    }
    let r =
        b.request(Method::POST, &bff.url("/logout"), &[("x-csrf", "1"), ("sec-fetch-site", "cross-site")], None).await;
    assert_eq!(r.status, 403);
    assert_eq!(b.session(&bff).await.status, 200, "the session survived the forged logouts");
}

#[tokio::test]
async fn tampered_truncated_unknown_key_and_expired_cookies_are_anonymous() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let jar = b.jar();
    let value = jar.get("__Host-bff").cloned().unwrap_or_default();
    let mut flipped = value.clone().into_bytes();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap_or_default();

    let foreign_keys = oidc_bff::session::seal::Keyring::new(&[oidc_bff::settings::KeyMaterial([9; 32])]);
    let mut session = open_session(&bff, &jar).unwrap_or_else(|| panic!("no session"));
    let unknown_key = oidc_bff::session::cookie::seal_session(bff.state.sessions.cookies(), &foreign_keys, &session);
    session.absolute_expires_at = 1;
    let expired =
        oidc_bff::session::cookie::seal_session(bff.state.sessions.cookies(), bff.state.sessions.keys(), &session);

    for (what, v) in [
        ("tampered", flipped),
        ("truncated", value[..value.len() - 10].to_owned()),
        ("unknown key", unknown_key),
        ("expired", expired),
        ("garbage", "%%%".into()),
    ] {
        let mut other = Browser::new(&bff);
        let mut j = jar.clone();
        j.insert("__Host-bff".into(), v);
        other.set_jar(j);
        let r = other.session(&bff).await;
        assert_eq!((r.status, r.json()), (401, json!({"authenticated": false})), "{what}");
        let expired = r.set_cookies().iter().any(|c| c.starts_with("__Host-bff=;"));
        if what == "unknown key" {
            // SPEC §4: another replica mid key rotation may hold that key; not ours to expire.
            assert!(!expired, "{what}: a cookie under a key this instance lacks was expired");
        } else {
            assert!(expired, "{what}: stale cookie not expired");
        }
    }
}

#[tokio::test]
async fn hostile_return_to_values_are_refused_with_400() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    let hostile = [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "/%2F%2Fevil.example",
        "/%2f%2fevil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,x",
        "/x\r\nSet-Cookie: a=b",
        "/x%0D%0ASet-Cookie:%20a=b",
        "https://127.0.0.1.evil.example/",
        "http://user@evil.example",
        "///evil.example",
        "\\\\evil.example",
    ];
    for h in hostile {
        let r = b.fetch(Method::POST, &bff.url("/login/start"), Some(json!({ "return_to": h }))).await;
        assert_eq!((r.status, r.json()["error"].clone()), (400, json!("invalid_return_to")), "{h:?}");
        let r = b.get(&bff.url(&format!("/login?return_to={}", urlencode(h)))).await;
        assert_eq!(r.status, 400, "GET /login {h:?}");
    }
}

#[tokio::test]
async fn get_logout_without_the_right_sid_changes_nothing() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    for q in ["", "?sid=wrong"] {
        let r = b.get(&bff.url(&format!("/logout{q}"))).await;
        assert_eq!(r.status, 400);
        assert!(r.body.contains("invalid_logout_request"));
    }
    let s = b.session(&bff).await;
    assert_eq!(s.status, 200);
    let link = s.json()["bff_logout_url"].as_str().unwrap_or_default().to_owned();
    let r = b.get(&bff.url(&link)).await;
    assert_eq!(r.status, 302);
    assert!(r.location().contains("/signoff?"), "{}", r.location());
    assert_eq!(b.session(&bff).await.status, 401);
}

#[tokio::test]
async fn health_and_readiness_answer_at_the_root() {
    let (_idp, bff) = stack(json!({}), &[("BFF_SERVER__BASE_PATH", "/bff")]).await;
    let mut b = Browser::new(&bff);
    assert_eq!(b.get(&bff.url("/healthz")).await.status, 200);
    assert_eq!(b.get(&bff.url("/readyz")).await.status, 200);
    assert_eq!(b.session(&bff).await.status, 404);
    let r = b.fetch(Method::GET, &bff.url("/bff/session"), None).await;
    assert_eq!(r.status, 401);
}

/// A cookie that is not ASCII, set for the whole site by a sibling subdomain or a script, sits
/// beside the session cookie: the session, the proxy and a login must all still work (SPEC §4
/// "Reading cookies").
#[tokio::test]
async fn one_non_ascii_cookie_locks_nobody_out() {
    let up = crate::upstream::start().await;
    let routes = format!("[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n", up.url());
    let (_idp, bff) = stack_with(json!({}), &[], &routes).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let mut jar = b.jar();
    jar.insert("z".into(), "é".into());
    jar.insert("theme".into(), "dark".into());
    b.set_jar(jar.clone());
    let r = b.session(&bff).await;
    assert_eq!((r.status, r.json()["sub"].clone()), (200, json!("alice")), "/session: {}", r.body);
    let r = b.fetch(Method::GET, &bff.url("/api/x"), None).await;
    assert_eq!(r.status, 200, "proxied: {}", r.body);
    let echo = r.json();
    assert!(echo["headers"]["authorization"].as_str().is_some_and(|a| a.starts_with("Bearer ")), "{echo}");
    assert_eq!(echo["headers"]["cookie"], "theme=dark; z=é", "the upstream keeps the browser's other cookies");
    // A login whose callback carries the cookie completes.
    let mut fresh = Browser::new(&bff);
    fresh.set_jar([("z".to_owned(), "é".to_owned())].into_iter().collect());
    let cb = fresh.login(&bff, "bob", "/").await;
    assert_eq!(cb.status, 302, "callback: {}", cb.body);
    assert_eq!(fresh.session(&bff).await.json()["sub"], "bob");
}

/// A session-cookie name that occurs twice (one of them planted, e.g. with a narrower Path)
/// makes the request anonymous, whichever copy would open (SPEC §4).
#[tokio::test]
async fn a_session_cookie_sent_twice_is_anonymous() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let value = b.jar().get("__Host-bff").cloned().unwrap_or_default();
    let mut alone = Browser::new(&bff);
    let origin = bff.url("");
    let once = format!("__Host-bff={value}");
    let r = alone.request(Method::GET, &bff.url("/session"), &[("x-csrf", "1"), ("cookie", &once)], None).await;
    assert_eq!(r.status, 200, "control: the cookie alone opens");
    for twice in [
        format!("__Host-bff={value}; __Host-bff={value}"),
        format!("__Host-bff=planted; __Host-bff={value}"),
        format!("__Host-bff={value}; __Host-bff=planted"),
        // A planted chunk beside the single form is as ambiguous.
        format!("__Host-bff={value}; __Host-bff.0=2.planted"),
    ] {
        let r = alone
            .request(
                Method::GET,
                &bff.url("/session"),
                &[("x-csrf", "1"), ("origin", &origin), ("cookie", &twice)],
                None,
            )
            .await;
        assert_eq!((r.status, r.json()), (401, json!({"authenticated": false})), "{twice:.40}");
        assert!(r.set_cookies().is_empty(), "the user's own cookie was expired: {:?}", r.set_cookies());
    }
    // Also as two crumbs (two Cookie fields).
    let r = alone
        .request(Method::GET, &bff.url("/session"), &[("x-csrf", "1"), ("cookie", &once), ("cookie", &once)], None)
        .await;
    assert_eq!(r.status, 401, "two Cookie fields naming the session cookie twice");
}

/// SPEC §4's worst case — 8 full session chunks and 5 live login transactions, each with a 2 KiB
/// `return_to` — is a request head the smallest `max_header_bytes` check-config accepts still
/// reads (no 431), with a browser's usual fields beside it.
#[tokio::test]
async fn the_largest_cookie_header_fits_the_smallest_accepted_max_header_bytes() {
    let refused = oidc_bff::settings::Settings::from_toml_str(
        &format!(
            "[server]\npublic_url = \"http://127.0.0.1:1\"\nmax_header_bytes = 1\n[oidc]\nissuer = \"http://127.0.0.1:1/as\"\n\
             client_id = \"c\"\nclient_secret = \"s\"\n[session]\nkeys = [\"{KEY_A}\"]\n"
        ),
        vec![],
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    let smallest: String = refused
        .lines()
        .find_map(|l| l.strip_prefix("server.max_header_bytes: must be between "))
        .unwrap_or_else(|| panic!("{refused}"))
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let (_idp, bff) = stack(json!({}), &[("BFF_SERVER__MAX_HEADER_BYTES", &smallest)]).await;
    let mut b = Browser::new(&bff);
    let longest = format!("/{}", "a".repeat(2047));
    for _ in 0..5 {
        let r = b.get(&bff.url(&format!("/login?return_to={longest}"))).await;
        assert_eq!(r.status, 302, "{}", r.body);
    }
    let mut jar = b.jar();
    assert_eq!(jar.keys().filter(|k| k.starts_with("__Host-bff-tx.")).count(), 5);
    let chunk = "A".repeat(3800);
    jar.insert("__Host-bff.0".into(), format!("8.{chunk}"));
    for i in 1..8 {
        jar.insert(format!("__Host-bff.{i}"), chunk.clone());
    }
    b.set_jar(jar);
    let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
    let headers = [
        ("x-csrf", "1"),
        ("user-agent", ua),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-GB,en-US;q=0.9,en;q=0.8,de;q=0.7"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("referer", "http://127.0.0.1/some/page/of/the/spa?with=a&query=string"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-dest", "empty"),
    ];
    let r = b.request(Method::GET, &bff.url("/session"), &headers, None).await;
    assert_ne!(r.status, 431, "the worst-case Cookie header was refused at max_header_bytes = {smallest}");
    assert_eq!(r.status, 401, "the made-up chunks do not open: {}", r.body);
}
