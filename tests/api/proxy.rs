//! The API proxy (SPEC §6) against the real IdP and a real upstream.

use crate::helpers::*;
use crate::upstream;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn routes(upstream: &str) -> String {
    format!(
        r#"
[[routes]]
prefix = "/api"
upstream = "{upstream}"
timeout_secs = 2

[[routes]]
prefix = "/public"
upstream = "{upstream}"
auth = "none"

[[routes]]
prefix = "/opt"
upstream = "{upstream}"
auth = "optional"
strip_prefix = true

[[routes]]
prefix = "/passthrough"
upstream = "{upstream}"
forward_set_cookie = true

[[routes]]
prefix = "/files"
upstream = "{upstream}"
csrf = false
methods = ["GET", "HEAD"]
"#
    )
}

async fn proxied(idp_extra: Value) -> (Idp, Bff, upstream::Running) {
    let up = upstream::start().await;
    // A generous IdP timeout: the whole suite runs in parallel on two cores, and a refresh
    // that times out would (correctly) fall back to the still-valid token, hiding the refresh
    // these tests count.
    let (idp, bff) = stack_with(idp_extra, &[("BFF_OIDC__HTTP_TIMEOUT_SECS", "10")], &routes(&up.url())).await;
    (idp, bff, up)
}

async fn introspect(idp: &Idp, token: &str) -> Value {
    let body = format!("token={}", urlencode(token));
    reqwest::Client::new()
        .post(format!("{}/introspect", idp.issuer))
        .basic_auth("bff-basic", Some(SECRET_BASIC))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default()
}

fn bearer(echo: &Value) -> String {
    echo["headers"]["authorization"].as_str().unwrap_or("").strip_prefix("Bearer ").unwrap_or("").to_owned()
}

#[tokio::test]
async fn upstream_receives_an_active_bearer_token_and_none_of_the_browsers_credentials() {
    let (idp, bff, _up) = proxied(json!({})).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let mut jar = b.jar();
    jar.insert("theme".into(), "dark".into());
    b.set_jar(jar);
    let origin = bff.url("");
    let r = b
        .request(
            Method::GET,
            &bff.url("/api/orders?id=7&x=%20y"),
            &[
                ("x-csrf", "1"),
                ("origin", &origin),
                ("authorization", "Basic YnJvd3Nlcjpzbnk="),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-custom", "kept"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    let token = bearer(&echo);
    assert!(!token.is_empty(), "no bearer token: {echo}");
    assert_eq!(introspect(&idp, &token).await["active"], true);
    let cookie = echo["headers"]["cookie"].as_str().unwrap_or("");
    assert_eq!(cookie, "theme=dark");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    assert_eq!(echo["headers"]["x-forwarded-host"], bff.addr.to_string());
    assert_eq!(echo["headers"]["x-custom"], "kept");
    assert_eq!(echo["path"], "/api/orders");
    assert_eq!(echo["query"], "id=7&x=%20y");
    assert_eq!(r.header("x-upstream"), "echo");
}

#[tokio::test]
async fn methods_bodies_statuses_and_headers_round_trip() {
    let (_idp, bff, _up) = proxied(json!({})).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let origin = bff.url("");
    for method in [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let body = (method != Method::GET).then(|| format!("{{\"m\":\"{method}\"}}"));
        let r = b
            .request(
                method.clone(),
                &bff.url("/api/things/1"),
                &[("x-csrf", "1"), ("origin", &origin), ("x-echo-status", "201"), ("content-type", "application/json")],
                body.clone(),
            )
            .await;
        assert_eq!(r.status, 201, "{method}: {}", r.body);
        let echo = r.json();
        assert_eq!(echo["method"], method.as_str());
        assert_eq!(echo["body"], body.unwrap_or_default());
        assert_eq!(echo["headers"]["content-type"], "application/json");
    }
}

#[tokio::test]
async fn auth_none_passes_anonymous_and_auth_required_answers_401() {
    let (_idp, bff, up) = proxied(json!({})).await;
    let mut b = Browser::new(&bff);
    let r = b.fetch(Method::GET, &bff.url("/public/hello"), None).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["headers"]["authorization"].is_null());
    let hits = up.hits();
    let r = b.fetch(Method::GET, &bff.url("/api/hello"), None).await;
    assert_eq!((r.status, r.json()["error"].clone()), (401, json!("unauthenticated")));
    assert_eq!(up.hits(), hits, "nothing reached the upstream");
    // Optional: anonymous passes without a token; strip_prefix removes /opt.
    let r = b.fetch(Method::GET, &bff.url("/opt/x"), None).await;
    assert_eq!((r.status, r.json()["path"].clone()), (200, json!("/x")));
    // With a session, auth=none still sends no token.
    b.login(&bff, "alice", "/").await;
    let r = b.fetch(Method::GET, &bff.url("/public/hello"), None).await;
    assert!(r.json()["headers"]["authorization"].is_null());
    let r = b.fetch(Method::GET, &bff.url("/opt"), None).await;
    assert_eq!(r.json()["path"], "/");
    assert!(!bearer(&r.json()).is_empty());
}

async fn raw_get(bff: &Bff, target: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(bff.addr).await.unwrap_or_else(|e| panic!("{e}"));
    let req = format!("GET {target} HTTP/1.1\r\nHost: {}\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n", bff.addr);
    s.write_all(req.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn traversal_paths_are_invalid_path_and_never_reach_the_upstream() {
    let (_idp, bff, up) = proxied(json!({})).await;
    for target in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/%2F..%2Fadmin",
        "/api\\..\\admin",
        "/api/%2E%2e/admin",
        "/public/./x",
        "/public/%00",
    ] {
        let (status, text) = raw_get(&bff, target).await;
        assert_eq!(status, 400, "{target}: {text}");
        assert!(text.contains("invalid_path"), "{target}: {text}");
    }
    assert_eq!(up.hits(), 0);
    let (status, _) = raw_get(&bff, "/apix").await;
    assert_eq!(status, 404, "/apix does not match /api");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn upstream_set_cookie_and_cors_headers_are_filtered() {
    let (_idp, bff, _up) = proxied(json!({})).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let r = b.fetch(Method::GET, &bff.url("/api/set-cookie"), None).await;
    assert_eq!(r.status, 200);
    assert!(r.set_cookies().iter().all(|c| !c.contains("evil") && !c.starts_with("pref=")), "{:?}", r.set_cookies());
    assert!(r.header("access-control-allow-origin").is_empty());
    let r = b.fetch(Method::GET, &bff.url("/passthrough/set-cookie"), None).await;
    assert!(r.set_cookies().iter().any(|c| c.starts_with("pref=1")));
    assert!(r.set_cookies().iter().all(|c| !c.contains("evil")), "{:?}", r.set_cookies());
    assert_eq!(b.session(&bff).await.status, 200, "our session survived");
}

#[tokio::test]
async fn csrf_upstream_down_timeout_and_redirects() {
    let up = upstream::start().await;
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        format!("http://{}", l.local_addr().unwrap_or_else(|e| panic!("{e}")))
    };
    let extra =
        format!("{}\n[[routes]]\nprefix = \"/down\"\nupstream = \"{down}\"\nauth = \"none\"\n", routes(&up.url()));
    let (_idp, bff) = stack_with(json!({}), &[], &extra).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let r = b.get(&bff.url("/api/x")).await;
    assert_eq!((r.status, r.json()["error"].clone()), (403, json!("csrf")));
    let r = b.fetch(Method::GET, &bff.url("/down/x"), None).await;
    assert_eq!((r.status, r.json()["error"].clone()), (502, json!("upstream_unavailable")));
    let r = b.fetch(Method::GET, &bff.url("/api/slow"), None).await;
    assert_eq!((r.status, r.json()["error"].clone()), (504, json!("upstream_timeout")));
    let r = b.fetch(Method::GET, &bff.url("/api/redirect"), None).await;
    assert_eq!((r.status, r.location()), (302, "http://127.0.0.1:1/elsewhere".to_owned()));
    // csrf = false on a GET-only route: a plain navigation works; other methods are 405.
    let r = b.get(&bff.url("/files/report.csv")).await;
    assert_eq!(r.status, 200);
    let r = b.fetch(Method::POST, &bff.url("/files/x"), None).await;
    assert_eq!(r.status, 405);
    let r = b
        .request(
            Method::GET,
            &bff.url("/api/ws"),
            &[("x-csrf", "1"), ("upgrade", "websocket"), ("connection", "upgrade")],
            None,
        )
        .await;
    assert_eq!((r.status, r.json()["error"].clone()), (400, json!("websocket_unsupported")));
}

const SHORT: &str = r#"{"accessTokenTtl": 35}"#;

fn short() -> Value {
    serde_json::from_str(SHORT).unwrap_or_default()
}

#[tokio::test]
async fn twenty_concurrent_requests_share_one_refresh_and_old_cookies_reuse_it() {
    let (idp, bff, _up) = proxied(short()).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let old_jar = b.jar();
    let old = open_session(&bff, &old_jar).unwrap_or_else(|| panic!("no session"));
    // 35 s tokens with the 30 s margin are due 5 s after issue.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut c = b.clone();
        let url = bff.url("/api/concurrent");
        tasks.push(tokio::spawn(async move { c.fetch(Method::GET, &url, None).await }));
    }
    let mut new_cookie_seen = 0;
    let mut tokens = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 200, "{}", r.body);
        tokens.insert(bearer(&r.json()));
        if r.set_cookies().iter().any(|c| c.starts_with("__Host-bff=") && !c.contains("Max-Age=0")) {
            new_cookie_seen += 1;
            b.absorb_set_cookies(&r);
        }
    }
    assert_eq!(idp.grants("refresh_token").await, 1, "exactly one refresh grant");
    assert_eq!(tokens.len(), 1, "all 20 used the one refreshed token");
    assert!(!tokens.contains(old.access_token.compact().expose()));
    assert_eq!(new_cookie_seen, 20, "every response carries the refreshed cookie");
    let new = open_session(&bff, &b.jar()).unwrap_or_else(|| panic!("no session"));
    let rt = |s: &oidc_bff::session::model::Session| s.refresh_token.as_ref().map(|r| r.expose().to_owned());
    assert!(rt(&new).is_some());
    assert_ne!(rt(&new), rt(&old), "the rotated refresh token is stored");
    // The next request uses the new token.
    let r = b.fetch(Method::GET, &bff.url("/api/next"), None).await;
    assert_eq!(bearer(&r.json()), new.access_token.compact().expose());
    // 10 requests still carrying the pre-refresh cookie reuse the refreshed tokens.
    for _ in 0..10 {
        let mut stale = Browser::new(&bff);
        stale.set_jar(old_jar.clone());
        let r = stale.fetch(Method::GET, &bff.url("/api/stale"), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(bearer(&r.json()), new.access_token.compact().expose());
    }
    assert_eq!(idp.grants("refresh_token").await, 1, "no further grant");
}

#[tokio::test]
async fn a_request_after_expiry_is_refreshed_and_the_session_endpoint_stays_truthful() {
    let (idp, bff, _up) = proxied(short()).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let before = b.session(&bff).await.json()["expires_at"].as_i64().unwrap_or(0);
    let old = open_session(&bff, &b.jar()).unwrap_or_else(|| panic!("no session"));
    tokio::time::sleep(Duration::from_secs(36)).await;
    // The first proxied request after expiry refreshes, succeeds and carries the new cookie.
    let r = b.fetch(Method::GET, &bff.url("/api/after"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.set_cookies().iter().any(|c| c.starts_with("__Host-bff=") && !c.contains("Max-Age=0")),
        "no refreshed cookie"
    );
    let token = bearer(&r.json());
    assert_ne!(token, old.access_token.compact().expose());
    assert_eq!(introspect(&idp, &token).await["active"], true);
    // The next request uses the new token, and /session tells the new expiry.
    let r = b.fetch(Method::GET, &bff.url("/api/next"), None).await;
    assert_eq!(bearer(&r.json()), token);
    let s = b.session(&bff).await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert!(s.json()["expires_at"].as_i64().unwrap_or(0) > before);
    assert_eq!(idp.grants("refresh_token").await, 1);
}

#[tokio::test]
async fn a_revoked_refresh_token_ends_the_session() {
    let (idp, bff, _up) = proxied(short()).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    idp.control("revoke-refresh-tokens").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let r = b.fetch(Method::GET, &bff.url("/api/x"), None).await;
    assert_eq!((r.status, r.json()["error"].clone()), (401, json!("session_expired")), "{}", r.body);
    assert!(r.set_cookies().iter().any(|c| c.starts_with("__Host-bff=;") && c.contains("Max-Age=0")));
    assert_eq!(b.session(&bff).await.status, 401);
}

#[tokio::test]
async fn idp_down_during_refresh_is_502_and_the_session_recovers() {
    let (idp, bff, _up) = proxied(short()).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    idp.control("outage").await;
    tokio::time::sleep(Duration::from_secs(36)).await;
    let r = b.fetch(Method::GET, &bff.url("/api/x"), None).await;
    assert_eq!((r.status, r.json()["error"].clone()), (502, json!("idp_unavailable")), "{}", r.body);
    idp.control_method(Method::DELETE, "outage").await;
    let r = b.fetch(Method::GET, &bff.url("/api/x"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn a_stalled_upstream_body_is_cut_off_after_the_route_timeout() {
    let (_idp, bff, _up) = proxied(json!({})).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let started = std::time::Instant::now();
    let cookie: Vec<String> = b.jar().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let r = reqwest::Client::new()
        .get(bff.url("/api/stall"))
        .header("x-csrf", "1")
        .header("cookie", cookie.join("; "))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let body = r.bytes().await;
    assert!(body.is_err(), "the stalled body must not complete");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cut off after the 2 s route timeout, took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connection_named_headers_cannot_strip_what_the_bff_adds_and_preflights_are_not_forwarded() {
    let up = upstream::start().await;
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let idp = Idp::start(port, json!({})).await;
    let spa = "http://127.0.0.1:1";
    let vars = [("BFF_SERVER__ALLOWED_ORIGINS", spa)];
    let bff = spawn_bff(listener, settings_with(port, &idp.issuer, &vars, &routes(&up.url()))).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let origin = bff.url("");
    let r = b
        .request(
            Method::GET,
            &bff.url("/api/conn"),
            &[
                ("x-csrf", "1"),
                ("origin", &origin),
                ("connection", "authorization, x-forwarded-for, x-request-id, cookie"),
                ("x-forwarded-for", "6.6.6.6"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    assert!(!bearer(&echo).is_empty(), "the bearer token survived Connection: authorization");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1", "spoofed X-Forwarded-For replaced");
    assert!(echo["headers"]["x-request-id"].is_string());
    // A CORS preflight from an allowed origin is answered by the BFF, never forwarded.
    let hits = up.hits();
    let pre = [("origin", spa), ("access-control-request-method", "PUT"), ("access-control-request-headers", "x-csrf")];
    let r = b.request(Method::OPTIONS, &bff.url("/api/things"), &pre, None).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), spa);
    assert_eq!(up.hits(), hits, "the preflight reached the upstream");
}

#[tokio::test]
async fn rp_key_rotation_op_sign_key_mid_session_refresh_verifies_with_the_new_key() {
    let (idp, bff, _up) = proxied(short()).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    idp.control("rotate-keys").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    // The refresh returns an ID token signed with a kid the BFF has never seen.
    let r = b.fetch(Method::GET, &bff.url("/api/after-rotation"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(idp.grants("refresh_token").await, 1);
    b.absorb_set_cookies(&r);
    assert_eq!(b.session(&bff).await.status, 200);
}

/// A TLS listener presenting a self-signed certificate for `localhost`: counts handshakes the
/// client aborted and whether any request bytes ever arrived.
async fn untrusted_tls_upstream()
-> (String, std::sync::Arc<(std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicBool)>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::atomic::Ordering;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let cert =
        CertificateDer::from_pem_file(format!("{dir}/untrusted-localhost.crt")).unwrap_or_else(|e| panic!("{e}"));
    let key = PrivateKeyDer::from_pem_file(format!("{dir}/untrusted-localhost.key")).unwrap_or_else(|e| panic!("{e}"));
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert], key))
            .unwrap_or_else(|e| panic!("{e}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let seen = std::sync::Arc::new((std::sync::atomic::AtomicUsize::new(0), std::sync::atomic::AtomicBool::new(false)));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            match acceptor.accept(tcp).await {
                Err(_) => {
                    s.0.fetch_add(1, Ordering::SeqCst);
                }
                Ok(mut tls) => {
                    let mut buf = [0u8; 1];
                    if tls.read(&mut buf).await.is_ok_and(|n| n > 0) {
                        s.1.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
    });
    (format!("https://localhost:{port}"), seen)
}

#[tokio::test]
async fn an_upstream_certificate_the_system_does_not_trust_is_refused_before_anything_is_sent() {
    use std::sync::atomic::Ordering;
    let (url, seen) = untrusted_tls_upstream().await;
    let extra = format!("[[routes]]\nprefix = \"/api\"\nupstream = \"{url}\"\n");
    let (_idp, bff) = stack_with(json!({}), &[], &extra).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let r = b.fetch(Method::GET, &bff.url("/api/x"), None).await;
    assert_eq!((r.status, r.json()["error"].clone()), (502, json!("upstream_unavailable")));
    assert!(seen.0.load(Ordering::SeqCst) >= 1, "the handshake was not refused by the BFF");
    assert!(!seen.1.load(Ordering::SeqCst), "request bytes (and the bearer token) reached an untrusted upstream");
}

/// An HTTP/2 client may split `Cookie` into crumbs (RFC 9113 §8.2.3); an HTTP/1.1 upstream
/// must receive them joined with `; ` into one field, without the BFF's cookies (SPEC §6).
#[tokio::test]
async fn http2_cookie_crumbs_reach_an_http1_upstream_as_one_cookie_field() {
    use http_body_util::BodyExt;
    let (_idp, bff, _up) = proxied(json!({})).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let session: Vec<String> = b.jar().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let tcp = tokio::net::TcpStream::connect(bff.addr).await.unwrap_or_else(|e| panic!("{e}"));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap_or_else(|e| panic!("h2c handshake: {e}"));
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/api/crumbs", bff.addr))
        .header("x-csrf", "1")
        .header("cookie", "a=1")
        .header("cookie", session.join("; "))
        .header("cookie", "b=2; c=3")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = send.send_request(req).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap_or_else(|e| panic!("{e}")).to_bytes();
    let echo: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert!(!bearer(&echo).is_empty(), "the crumbs carried the session: {echo}");
    assert_eq!(echo["headers"]["cookie"], "a=1; b=2; c=3", "one Cookie field: {echo}");
}

/// A request still carrying the login's cookie arrives after two rotations, while both cached
/// answers live (a slow request sent before the first refresh): it must be answered with the
/// newest tokens, never handed the first refresh's (by then rotated-away) refresh token, which
/// the browser would store and later spend — and the IdP would then revoke the whole grant.
#[tokio::test]
async fn an_old_cookie_after_two_rotations_within_the_grace_period_never_spends_a_dead_refresh_token() {
    let up = upstream::start().await;
    let vars = [("BFF_OIDC__HTTP_TIMEOUT_SECS", "10"), ("BFF_OIDC__REFRESH_GRACE_SECS", "12")];
    let (idp, bff) = stack_with(short(), &vars, &routes(&up.url())).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let first = b.jar();
    // 35 s tokens and a 30 s margin: due 5 s after each refresh.
    for n in 1..=2 {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let r = b.fetch(Method::GET, &bff.url("/api/rotate"), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(idp.grants("refresh_token").await, n, "refresh {n}");
    }
    let newest = open_session(&bff, &b.jar()).unwrap_or_else(|| panic!("no session"));
    let rt = |s: &oidc_bff::session::model::Session| s.refresh_token.as_ref().map(|r| r.expose().to_owned());
    let mut late = Browser::new(&bff);
    late.set_jar(first);
    let r = late.fetch(Method::GET, &bff.url("/api/late"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(bearer(&r.json()), newest.access_token.compact().expose(), "the newest access token");
    let given = open_session(&bff, &late.jar()).unwrap_or_else(|| panic!("no cookie set"));
    assert_eq!(rt(&given), rt(&newest), "the old cookie was given a rotated-away refresh token");
    assert_eq!(idp.grants("refresh_token").await, 2, "no grant for the old cookie");
    // Once every cached answer has expired, the cookie it was given still refreshes.
    tokio::time::sleep(Duration::from_secs(13)).await;
    let r = late.fetch(Method::GET, &bff.url("/api/after"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(idp.grants("refresh_token").await, 3);
}

async fn raw_request(bff: &Bff, method: &str, target: &str, cookie: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(bff.addr).await.unwrap_or_else(|e| panic!("{e}"));
    let origin = bff.url("");
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nX-CSRF: 1\r\nOrigin: {origin}\r\nCookie: {cookie}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        bff.addr
    );
    s.write_all(req.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    (text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), text)
}

/// A path whose lenient reading (how nginx, Tomcat, Spring or IIS upstreams may read it: decoded,
/// `;params` dropped, trailing dots and spaces stripped, NFKC, case-folded, empty segments
/// collapsed) selects another route than its literal reading is refused: a second spelling of
/// `/api/admin` (GET only) cannot reach it through `/api` (SPEC §6).
#[tokio::test]
async fn second_spellings_of_a_more_specific_route_are_invalid_path() {
    let up = upstream::start().await;
    let extra = format!(
        "[[routes]]\nprefix = \"/api\"\nupstream = \"{0}\"\n\n[[routes]]\nprefix = \"/api/admin\"\nupstream = \"{0}\"\nmethods = [\"GET\"]\n",
        up.url()
    );
    let (_idp, bff) = stack_with(json!({}), &[], &extra).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let cookie: Vec<String> = b.jar().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cookie = cookie.join("; ");
    for target in [
        "/api//admin/x",
        "/api/admin;x/y",
        "/api/ADMIN/x",
        "/api/Admin",
        "/api/public/..;/admin",
        "/api/public/.;/admin",
        "/api/public/..%20/admin",
        "/api/%61dmin",
        "/api/admin%20/x",
        "/api/admin./x",
        "/api/%EF%BD%81dmin",
        "/api/%EF%BC%8E%EF%BC%8E/admin",
        "/api/x/%EF%BC%8E%EF%BC%8E/%EF%BC%8E%EF%BC%8E/admin",
        "/api/%2561dmin",
        "/API/admin",
    ] {
        let (status, text) = raw_request(&bff, "DELETE", target, &cookie).await;
        assert_eq!(status, 400, "DELETE {target}: {text}");
        assert!(text.contains("invalid_path"), "DELETE {target}: {text}");
    }
    assert_eq!(up.hits(), 0, "a second spelling reached the upstream");
    // The literal spellings behave as configured; other paths under /api pass.
    assert_eq!(raw_request(&bff, "DELETE", "/api/admin/x", &cookie).await.0, 405);
    assert_eq!(raw_request(&bff, "GET", "/api/admin/x", &cookie).await.0, 200);
    assert_eq!(raw_request(&bff, "DELETE", "/api/orders/1", &cookie).await.0, 200);
    assert_eq!(raw_request(&bff, "DELETE", "/api/a%20b;v=1", &cookie).await.0, 200);
    assert_eq!(up.hits(), 3);
}

/// A shared cache in front of the BFF sees a cookie, not the `Authorization` that RFC 9111
/// §3.5 protects: answers to requests that carried a session are made private unless the
/// upstream already said `private` or `no-store` (SPEC §6).
#[tokio::test]
async fn authenticated_answers_are_never_stored_by_a_shared_cache() {
    let (_idp, bff, _up) = proxied(json!({})).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let origin = bff.url("");
    let ask = async |b: &mut Browser, path: &str, upstream_says: Option<&str>| {
        let mut h = vec![("x-csrf", "1"), ("origin", origin.as_str())];
        if let Some(cc) = upstream_says {
            h.push(("x-echo-cache-control", cc));
        }
        let r = b.request(Method::GET, &bff.url(path), &h, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let vary: Vec<String> =
            r.headers.get_all("vary").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
        (r.header("cache-control"), vary.join(", ").to_ascii_lowercase())
    };
    let directives = |cc: &str| cc.split(',').map(|d| d.trim().to_ascii_lowercase()).collect::<Vec<_>>();
    let (cc, vary) = ask(&mut b, "/api/public-ish", Some("public, max-age=60, s-maxage=300")).await;
    let d = directives(&cc);
    assert!(d.contains(&"private".to_owned()) && d.contains(&"max-age=60".to_owned()), "{cc}");
    assert!(!d.iter().any(|x| x == "public" || x.starts_with("s-maxage")), "{cc}");
    assert!(vary.contains("cookie"), "Vary: {vary}");
    let (cc, vary) = ask(&mut b, "/api/silent", None).await;
    assert_eq!((directives(&cc), vary.contains("cookie")), (vec!["private".to_owned()], true), "{cc}");
    let (cc, _) = ask(&mut b, "/api/qualified", Some("private=\"set-cookie, x-a\", max-age=30")).await;
    assert_eq!(directives(&cc), ["private", "max-age=30"], "{cc}");
    assert_eq!(ask(&mut b, "/api/ns", Some("no-store")).await.0, "no-store");
    assert_eq!(ask(&mut b, "/api/p", Some("Private, max-age=5")).await.0, "Private, max-age=5");
    // Without a session the upstream's own caching stands.
    let mut anon = Browser::new(&bff);
    let (cc, vary) = ask(&mut anon, "/public/x", Some("public, max-age=60")).await;
    assert_eq!((cc.as_str(), vary.contains("cookie")), ("public, max-age=60", false));
}

/// Behind a trusted proxy, `X-Real-IP` and `Forwarded` name the client (the first address of
/// `X-Forwarded-For`, read from the right, that is not a trusted proxy), as `X-Forwarded-For`'s
/// chain does — not the balancer's own address (SPEC §6).
#[tokio::test]
async fn behind_a_trusted_proxy_x_real_ip_and_forwarded_name_the_client() {
    let up = upstream::start().await;
    let vars = [("BFF_SERVER__TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8")];
    let (_idp, bff) = stack_with(json!({}), &vars, &routes(&up.url())).await;
    let mut b = Browser::new(&bff);
    let r = b
        .request(
            Method::GET,
            &bff.url("/public/who"),
            &[("x-csrf", "1"), ("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3")],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 203.0.113.9, 10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "203.0.113.9", "{h}");
    assert_eq!(h["forwarded"], format!("for=203.0.113.9;proto=http;host=\"{}\"", bff.addr));
    // Without a chain, the peer itself is the client.
    let r = b.request(Method::GET, &bff.url("/public/who"), &[("x-csrf", "1")], None).await;
    assert_eq!(r.json()["headers"]["x-real-ip"], "127.0.0.1");
    // `ip:port` as some balancers write it is read; an entry that is not an address ends the
    // walk: nothing left of it is believed (the peer stands in).
    let who = async |b: &mut Browser, xff: &str| {
        let r =
            b.request(Method::GET, &bff.url("/public/who"), &[("x-csrf", "1"), ("x-forwarded-for", xff)], None).await;
        r.json()["headers"]["x-real-ip"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(who(&mut b, "6.6.6.6, 203.0.113.9:4431").await, "203.0.113.9");
    assert_eq!(who(&mut b, "6.6.6.6, [2001:db8::7]:443, 10.0.0.1").await, "2001:db8::7");
    assert_eq!(who(&mut b, "6.6.6.6, unknown, 10.0.0.1").await, "127.0.0.1");
}

/// Proxied routes go past the router unless a CORS layer wraps it (`routes::serve`): every path
/// class gets the same answer both ways — BFF endpoints under a `base_path`, near-endpoints,
/// refused paths, a route, static files, the SPA fallback.
#[tokio::test]
async fn the_router_shortcut_answers_every_path_class_as_the_router_does() {
    let up = crate::upstream::start().await;
    let dir = std::env::temp_dir().join(format!("oidc-bff-shortcut-{}", free_port()));
    let _ = std::fs::create_dir_all(&dir);
    std::fs::write(dir.join("index.html"), "spa").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("x.txt"), "file").unwrap_or_else(|e| panic!("{e}"));
    let toml = |port: u16, origins: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\nbase_path = \"/bff\"\n\
             static_dir = \"{}\"\nallowed_origins = [{origins}]\n\
             [oidc]\nissuer = \"http://127.0.0.1:9/ENV/as\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             [session]\nkeys = [\"{KEY_A}\"]\n[logging]\naccess_log = false\n\
             [[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\nauth = \"none\"\n",
            dir.display(),
            up.url()
        )
    };
    let (a, b) = (free_port(), free_port());
    let direct = spawn_binary(a, &toml(a, "")).await;
    let routed = spawn_binary(b, &toml(b, "\"http://127.0.0.1:9\"")).await;
    let client = reqwest::Client::new();
    let answer = |base: String, method: reqwest::Method, path: &'static str| {
        let client = client.clone();
        async move {
            let r = client
                .request(method, format!("{base}{path}"))
                .header("x-csrf", "1")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            // The echo's own view of the request: only the path and method it saw.
            let body = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("path").map(|p| format!("upstream saw {p}")))
                .unwrap_or(body);
            (status, body)
        }
    };
    let mut proxied = 0;
    for (method, path) in [
        (reqwest::Method::GET, "/bff/session"),
        (reqwest::Method::POST, "/bff/session"),
        (reqwest::Method::GET, "/bff/session/"),
        (reqwest::Method::GET, "/bff/Session"),
        (reqwest::Method::GET, "/session"),
        (reqwest::Method::GET, "/bff/unknown"),
        (reqwest::Method::GET, "/bff"),
        (reqwest::Method::GET, "/healthz"),
        (reqwest::Method::GET, "/x.txt"),
        (reqwest::Method::GET, "/some/spa/page"),
        (reqwest::Method::GET, "/api/echo"),
        (reqwest::Method::DELETE, "/api/echo?q=1"),
        (reqwest::Method::GET, "/api/%2e%2e/bff/session"),
        (reqwest::Method::GET, "/API/echo"),
        (reqwest::Method::TRACE, "/api/echo"),
    ] {
        let one = answer(direct.base.clone(), method.clone(), path).await;
        let two = answer(routed.base.clone(), method.clone(), path).await;
        assert_eq!(one, two, "{method} {path}");
        proxied += usize::from(one.1.starts_with("upstream saw"));
    }
    assert!(proxied >= 2, "the route was reached");
    let _ = std::fs::remove_dir_all(&dir);
}
