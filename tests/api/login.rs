//! Login, session and logout against the real oidc-provider (SPEC §3–§5).

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

fn assert_no_tokens(bodies: &[String], tokens: &[&str]) {
    for t in tokens.iter().filter(|t| !t.is_empty()) {
        for b in bodies {
            assert!(!b.contains(t), "a token reached the browser in a response body");
        }
    }
}

#[tokio::test]
async fn redirect_mode_login_ends_in_session_with_claims_and_no_token_in_any_body() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    let cb = b.login(&bff, "alice", "/orders?id=7").await;
    assert_eq!(cb.status, 302, "{}", cb.body);
    assert_eq!(cb.location(), "/orders?id=7");
    let s = b.session(&bff).await;
    assert_eq!(s.status, 200, "{}", s.body);
    let j = s.json();
    assert_eq!(j["authenticated"], true);
    assert_eq!(j["sub"], "alice");
    assert_eq!(j["claims"]["email"], "alice@example.test");
    assert!(j["expires_at"].as_i64().unwrap_or(0) > 0);
    assert!(j["session_expires_at"].as_i64().unwrap_or(0) > 0);
    assert!(j["bff_logout_url"].as_str().unwrap_or("").starts_with("/logout?sid="));
    let session = open_session(&bff, &b.jar()).unwrap_or_else(|| panic!("session cookie does not open"));
    let rt = session.refresh_token.as_ref().map(|r| r.expose().to_owned()).unwrap_or_default();
    assert!(!rt.is_empty(), "the IdP issued a refresh token");
    let (at, it) = (session.access_token.compact(), session.id_token.compact());
    assert_no_tokens(&b.bff_bodies, &[at.expose(), it.expose(), &rt]);
}

async fn spa_stack() -> (Idp, Bff) {
    let (idp, bff, _) = spa_stack_with(json!({}), &[]).await;
    (idp, bff)
}

#[tokio::test]
async fn spa_mode_login_start_and_end_with_the_full_url() {
    let (_idp, bff) = spa_stack().await;
    let mut b = Browser::new(&bff);
    let start = b.fetch(Method::POST, &bff.url("/login/start"), Some(json!({"return_to": "/inbox"}))).await;
    assert_eq!(start.status, 200, "{}", start.body);
    let auth = start.json()["authorization_url"].as_str().unwrap_or_default().to_owned();
    let landed = b.idp_login(&auth, "bob").await;
    assert!(landed.contains("/spa/callback?"));
    let end = b.fetch(Method::POST, &bff.url("/login/end"), Some(json!({"url": landed}))).await;
    assert_eq!(end.status, 200, "{}", end.body);
    assert_eq!(end.json()["return_to"], "/inbox");
    assert_eq!(end.json()["sub"], "bob");
    assert_eq!(b.session(&bff).await.status, 200);
}

#[tokio::test]
async fn spa_mode_login_end_with_code_and_state() {
    let (idp, bff) = spa_stack().await;
    let mut b = Browser::new(&bff);
    let start = b.fetch(Method::POST, &bff.url("/login/start"), Some(json!({}))).await;
    let auth = start.json()["authorization_url"].as_str().unwrap_or_default().to_owned();
    let landed = url::Url::parse(&b.idp_login(&auth, "carol").await).unwrap_or_else(|e| panic!("{e}"));
    let q: std::collections::HashMap<_, _> = landed.query_pairs().into_owned().collect();
    let body = json!({"code": q["code"], "state": q["state"], "iss": idp.issuer});
    let end = b.fetch(Method::POST, &bff.url("/login/end"), Some(body)).await;
    assert_eq!(end.status, 200, "{}", end.body);
    assert_eq!(end.json()["return_to"], "/");
    // A url that is not the redirect_uri is refused.
    let bad = b
        .fetch(
            Method::POST,
            &bff.url("/login/end"),
            Some(json!({"url": "http://evil.example/spa/callback?code=x&state=y"})),
        )
        .await;
    assert_eq!((bad.status, bad.json()["error"].clone()), (400, json!("invalid_request")));
}

#[tokio::test]
async fn two_logins_started_in_parallel_both_complete() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    let first = b.get(&bff.url("/login?return_to=/one")).await;
    let second = b.get(&bff.url("/login?return_to=/two")).await;
    let tx_cookies = b.jar().keys().filter(|k| k.starts_with("__Host-bff-tx.")).count();
    assert_eq!(tx_cookies, 2);
    let cb2 = b.idp_login(&second.location(), "dave").await;
    let cb1 = b.idp_login(&first.location(), "dave").await;
    let r2 = b.get(&cb2).await;
    let r1 = b.get(&cb1).await;
    assert_eq!((r2.status, r2.location()), (302, "/two".to_owned()), "{}", r2.body);
    assert_eq!((r1.status, r1.location()), (302, "/one".to_owned()), "{}", r1.body);
    assert_eq!(b.session(&bff).await.status, 200);
}

#[tokio::test]
async fn anonymous_session_is_401_authenticated_false() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    let s = b.session(&bff).await;
    assert_eq!(s.status, 401);
    assert_eq!(s.json(), json!({"authenticated": false}));
    assert_eq!(s.header("cache-control"), "no-store");
}

#[tokio::test]
async fn logout_expires_cookies_revokes_at_the_idp_and_returns_the_logout_url() {
    let (idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "erin", "/").await;
    let revocations_before = idp.events().await["revocations"].as_u64().unwrap_or(0);
    let out = b.fetch(Method::POST, &bff.url("/logout"), None).await;
    assert_eq!(out.status, 200, "{}", out.body);
    let logout_url = url::Url::parse(out.json()["logout_url"].as_str().unwrap_or("")).unwrap_or_else(|e| panic!("{e}"));
    assert!(logout_url.as_str().starts_with(&format!("{}/signoff", idp.issuer)));
    let q: std::collections::HashMap<_, _> = logout_url.query_pairs().into_owned().collect();
    assert!(q.get("id_token_hint").is_some_and(|t| t.split('.').count() == 3));
    assert_eq!(q.get("post_logout_redirect_uri").map(String::as_str), Some(bff.url("/").as_str()));
    let expired: Vec<String> = out.set_cookies().into_iter().filter(|c| c.contains("Max-Age=0")).collect();
    for name in ["__Host-bff=", "__Host-bff.0=", "__Host-bff.7="] {
        assert!(expired.iter().any(|c| c.starts_with(name)), "{name} not expired");
    }
    assert!(b.jar().keys().all(|k| !k.starts_with("__Host-bff")), "cookies left: {:?}", b.jar().keys());
    assert_eq!(idp.events().await["revocations"].as_u64().unwrap_or(0), revocations_before + 1);
    assert_eq!(b.session(&bff).await.status, 401);
}

#[tokio::test]
async fn rp_token_endpoint_client_secret_post_logs_in() {
    let (idp, bff) = stack(
        json!({}),
        &[
            ("BFF_OIDC__CLIENT_ID", "bff-post"),
            ("BFF_OIDC__CLIENT_SECRET", SECRET_POST),
            ("BFF_OIDC__CLIENT_AUTH", "client_secret_post"),
        ],
    )
    .await;
    let mut b = Browser::new(&bff);
    assert_eq!(b.login(&bff, "frank", "/").await.status, 302);
    assert_eq!(b.session(&bff).await.json()["sub"], "frank");
    assert_eq!(idp.grants("authorization_code").await, 1);
}

#[tokio::test]
async fn rp_token_endpoint_client_secret_basic_logs_in() {
    let (idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    assert_eq!(b.login(&bff, "grace", "/").await.status, 302);
    assert_eq!(b.session(&bff).await.json()["sub"], "grace");
    assert_eq!(idp.grants("authorization_code").await, 1);
}

#[tokio::test]
async fn large_session_round_trips_as_chunks_and_logout_removes_them_all() {
    let (_idp, bff) = stack(json!({"bigClaimBytes": 6000}), &[]).await;
    let mut b = Browser::new(&bff);
    let cb = b.login(&bff, "heidi", "/").await;
    assert_eq!(cb.status, 302, "{}", cb.body);
    let chunks: Vec<String> = b.jar().keys().filter(|k| k.starts_with("__Host-bff.")).cloned().collect();
    assert!(chunks.len() >= 2, "expected chunks, got {:?}", b.jar().keys());
    assert!(!b.jar().contains_key("__Host-bff"));
    let s = b.session(&bff).await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.json()["claims"]["big"].as_str().map(str::len), Some(6000));
    b.fetch(Method::POST, &bff.url("/logout"), None).await;
    assert!(b.jar().keys().all(|k| !k.starts_with("__Host-bff")), "left: {:?}", b.jar().keys());
}

#[tokio::test]
async fn key_rotation_old_key_opens_while_listed_second_and_not_after_removal() {
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let idp = Idp::start(port, json!({})).await;
    let bff = spawn_bff(listener, settings(port, &idp.issuer, &[])).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "ivan", "/").await;
    let jar = b.jar();
    bff.stop().await;

    let rotated = format!("{KEY_B},{KEY_A}");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("{e}"));
    let bff = spawn_bff(listener, settings(port, &idp.issuer, &[("BFF_SESSION__KEYS", &rotated)])).await;
    let mut b2 = Browser::new(&bff);
    b2.set_jar(jar.clone());
    assert_eq!(b2.session(&bff).await.status, 200);
    bff.stop().await;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("{e}"));
    let bff = spawn_bff(listener, settings(port, &idp.issuer, &[("BFF_SESSION__KEYS", KEY_B)])).await;
    let mut b3 = Browser::new(&bff);
    b3.set_jar(jar);
    let s = b3.session(&bff).await;
    assert_eq!((s.status, s.json()), (401, json!({"authenticated": false})));
}

#[tokio::test]
async fn rp_key_rotation_op_sign_key_login_still_works() {
    let (idp, bff) = stack(json!({}), &[]).await;
    let rotated = idp.control("rotate-keys").await;
    assert!(rotated["kids"].as_array().is_some_and(|k| !k.is_empty()));
    let mut b = Browser::new(&bff);
    let cb = b.login(&bff, "judy", "/").await;
    assert_eq!(cb.status, 302, "{}", cb.body);
    assert_eq!(b.session(&bff).await.status, 200);
}

#[tokio::test]
async fn completed_state_presented_again_redirects_to_return_to_without_calling_the_idp() {
    let (idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    let start = b.get(&bff.url("/login?return_to=/back")).await;
    let cb = b.idp_login(&start.location(), "ken").await;
    assert_eq!(b.get(&cb).await.status, 302);
    let grants = idp.grants("authorization_code").await;
    let again = b.get(&cb).await;
    assert_eq!((again.status, again.location()), (302, "/back".to_owned()), "{}", again.body);
    assert_eq!(idp.grants("authorization_code").await, grants);
}

#[tokio::test]
async fn replayed_transaction_cookie_from_another_browser_is_refused_without_calling_the_idp() {
    let (idp, bff) = stack(json!({}), &[]).await;
    let mut victim = Browser::new(&bff);
    let start = victim.get(&bff.url("/login")).await;
    let stolen = victim.jar();
    let cb = victim.idp_login(&start.location(), "leo").await;
    assert_eq!(victim.get(&cb).await.status, 302);
    let grants = idp.grants("authorization_code").await;
    let mut attacker = Browser::new(&bff);
    attacker.set_jar(stolen);
    let r = attacker.get(&cb).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("invalid_state"));
    assert_eq!(idp.grants("authorization_code").await, grants);
}

#[tokio::test]
async fn unknown_state_is_invalid_state() {
    let (idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    b.get(&bff.url("/login")).await;
    let r = b.get(&bff.url(&format!("/callback?code=abc&state=not-mine&iss={}", urlencode(&idp.issuer)))).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("<code>invalid_state</code>"), "{}", r.body);
    assert_eq!(r.header("content-security-policy"), "default-src 'none'");
}

#[tokio::test]
async fn iss_parameter_that_differs_from_the_issuer_is_invalid_issuer() {
    let (idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    let start = b.get(&bff.url("/login")).await;
    let cb = b.idp_login(&start.location(), "mia").await;
    let tampered = cb.replace(&urlencode(&idp.issuer), &urlencode(&format!("{}/", idp.issuer)));
    assert_ne!(tampered, cb);
    let r = b.get(&tampered).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("invalid_issuer"), "{}", r.body);
    assert_eq!(idp.grants("authorization_code").await, 0);
}

#[tokio::test]
async fn idp_error_is_login_failed_and_nothing_is_reflected() {
    let (idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    let start = b.get(&bff.url("/login")).await;
    let state = idp.state_of(&start.location()).await;
    let iss = urlencode(&idp.issuer);
    let r = b.get(&bff.url(&format!("/callback?error=access_denied&error_description=%3Cscript%3Ealert(2)%3C%2Fscript%3E&state={state}&iss={iss}"))).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("login_failed") && r.body.contains("access_denied"), "{}", r.body);
    assert!(!r.body.contains("script") && !r.body.contains("alert"), "{}", r.body);

    let start = b.get(&bff.url("/login")).await;
    let state = idp.state_of(&start.location()).await;
    let r =
        b.get(&bff.url(&format!("/callback?error=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={state}&iss={iss}"))).await;
    assert_eq!(r.status, 400);
    assert!(!r.body.contains("script") && !r.body.contains("alert"), "{}", r.body);
    assert!(r.body.contains("<code>unknown</code>"), "{}", r.body);
    assert_eq!(r.header("content-security-policy"), "default-src 'none'");
    assert_eq!(r.header("x-content-type-options"), "nosniff");
}

#[tokio::test]
async fn id_tokens_signed_with_rs256_es256_and_ps256_are_accepted() {
    for alg in ["RS256", "ES256", "PS256"] {
        let (_idp, bff) = stack(json!({"signingAlgs": [alg]}), &[]).await;
        let mut b = Browser::new(&bff);
        let cb = b.login(&bff, "alg", "/").await;
        assert_eq!(cb.status, 302, "{alg}: {}", cb.body);
        assert_eq!(b.session(&bff).await.status, 200, "{alg}");
    }
}

#[tokio::test]
async fn rp_token_endpoint_private_key_jwt_logs_in_with_rs256_and_es256_keys() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let fixtures = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    for (file, alg) in [("rsa.pem", Algorithm::RS256), ("ec.pem", Algorithm::ES256)] {
        let pem = std::fs::read(format!("{fixtures}/{file}")).unwrap_or_default();
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .unwrap_or_else(|e| panic!("{e}"));
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg).unwrap_or_else(|e| panic!("{e}"));
        jwk.common.key_id = Some("bff-key".into());
        let listener = reserve().await;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let client = json!({
            "client_id": "bff-jwt",
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": format!("{alg:?}"),
            "jwks": {"keys": [jwk]},
            "redirect_uris": [format!("http://127.0.0.1:{port}/callback")],
            "post_logout_redirect_uris": [format!("http://127.0.0.1:{port}/")],
        });
        let idp = Idp::start(port, json!({"clients": [client]})).await;
        let key_file = format!("{fixtures}/{file}");
        let vars = [
            ("BFF_OIDC__CLIENT_ID", "bff-jwt"),
            ("BFF_OIDC__CLIENT_SECRET", ""),
            ("BFF_OIDC__CLIENT_AUTH", "private_key_jwt"),
            ("BFF_OIDC__PRIVATE_KEY_FILE", key_file.as_str()),
            ("BFF_OIDC__PRIVATE_KEY_ID", "bff-key"),
        ];
        let bff = spawn_bff(listener, settings(port, &idp.issuer, &vars)).await;
        let mut b = Browser::new(&bff);
        let cb = b.login(&bff, "jwt", "/").await;
        assert_eq!(cb.status, 302, "{alg:?}: {}", cb.body);
        assert_eq!(b.session(&bff).await.json()["sub"], "jwt", "{alg:?}");
        assert_eq!(idp.grants("authorization_code").await, 1);
    }
}

/// The in-flight cap on code exchanges answers 429 before anything is spent: the transaction
/// cookie is not expired and the state not burnt, so the same callback succeeds once there is
/// room (SPEC §5: a 429 spends nothing).
#[tokio::test]
async fn a_429_for_code_exchanges_in_flight_spends_nothing() {
    let (idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    let start = b.get(&bff.url("/login?return_to=/after")).await;
    let callback = b.idp_login(&start.location(), "alice").await;
    let all = oidc_bff::login::MAX_CONCURRENT_EXCHANGES as u32;
    let held = bff.state.login.exchanges().try_acquire_many(all).unwrap_or_else(|e| panic!("{e}"));
    let r = b.get(&callback).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("rate_limited"), "{}", r.body);
    assert!(r.set_cookies().is_empty(), "a 429 expired something: {:?}", r.set_cookies());
    assert_eq!(idp.grants("authorization_code").await, 0, "the IdP was not called");
    drop(held);
    let r = b.get(&callback).await;
    assert_eq!((r.status, r.location()), (302, "/after".to_owned()), "{}", r.body);
    assert_eq!(b.session(&bff).await.json()["sub"], "alice");
}

/// Mid-rollout of a key rotation, a replica that does not have the new key yet receives a cookie
/// sealed under it: the request is anonymous there, but the cookie is not expired (the next
/// request may reach a replica that has the key), and the login transaction cookies started
/// there survive too (SPEC §4). A cookie that fails under a key it has is still expired.
#[tokio::test]
async fn a_replica_without_the_new_key_does_not_log_users_out_during_a_rotation_rollout() {
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    // The second replica's redirect_uri (another port) is not registered: a pushed request
    // would be refused at once, so these logins use the front channel.
    let idp = Idp::start(port, json!({"par": false})).await;
    let rotated = format!("{KEY_B},{KEY_A}");
    let new = spawn_bff(listener, settings(port, &idp.issuer, &[("BFF_SESSION__KEYS", &rotated)])).await;
    let old_listener = reserve().await;
    let old_port = old_listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let old = spawn_bff(old_listener, settings(old_port, &idp.issuer, &[])).await;
    let mut b = Browser::new(&new);
    b.login(&new, "ivan", "/").await;
    let started = b.get(&new.url("/login")).await;
    assert_eq!(started.status, 302);
    let jar = b.jar();
    assert!(jar.keys().any(|k| k.starts_with("__Host-bff-tx.")), "a login transaction is pending");
    let mut at_old = Browser::new(&old);
    at_old.set_jar(jar.clone());
    let s = at_old.session(&old).await;
    assert_eq!((s.status, s.json()), (401, json!({"authenticated": false})));
    assert!(s.set_cookies().is_empty(), "the old replica expired a cookie it cannot open: {:?}", s.set_cookies());
    let r = at_old.get(&old.url("/login")).await;
    assert_eq!(r.status, 302);
    let expired: Vec<_> = r.set_cookies().into_iter().filter(|c| c.contains("Max-Age=0")).collect();
    assert!(expired.is_empty(), "the old replica expired transaction cookies it cannot open: {expired:?}");
    let mut back = Browser::new(&new);
    back.set_jar(jar.clone());
    assert_eq!(back.session(&new).await.status, 200, "the session lives on at a replica with the key");
    // Tampered under a key the old replica has: expired as before.
    let mut tampered = jar;
    let s = open_session(&new, &tampered).unwrap_or_else(|| panic!("no session"));
    let mut sealed =
        oidc_bff::session::cookie::seal_session(old.state.sessions.cookies(), old.state.sessions.keys(), &s)
            .into_bytes();
    let last = sealed.len() - 2;
    sealed[last] = if sealed[last] == b'A' { b'B' } else { b'A' };
    tampered.insert("__Host-bff".into(), String::from_utf8(sealed).unwrap_or_default());
    at_old.set_jar(tampered);
    let s = at_old.session(&old).await;
    assert_eq!(s.status, 401);
    assert!(
        s.set_cookies().iter().any(|c| c.starts_with("__Host-bff=;")),
        "a cookie failing under a known key is expired"
    );
}
