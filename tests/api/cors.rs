//! CORS for `allowed_origins` and the CSRF rules of SPEC §5 as a browser would meet them.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn preflights_from_allowed_origins_are_answered_and_others_are_not() {
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let idp = Idp::start(port, json!({})).await;
    let spa = "http://127.0.0.1:1";
    let bff = spawn_bff(listener, settings(port, &idp.issuer, &[("BFF_SERVER__ALLOWED_ORIGINS", spa)])).await;
    let mut b = Browser::new(&bff);
    let pre =
        [("origin", spa), ("access-control-request-method", "POST"), ("access-control-request-headers", "x-csrf")];
    let r = b.request(Method::OPTIONS, &bff.url("/logout"), &pre, None).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), spa);
    assert_eq!(r.header("access-control-allow-credentials"), "true");
    assert!(r.header("access-control-allow-headers").contains("x-csrf"));
    assert!(r.headers.get_all("vary").iter().any(|v| v == "Origin"));

    let evil = [("origin", "http://evil.example"), ("access-control-request-method", "POST")];
    let r = b.request(Method::OPTIONS, &bff.url("/logout"), &evil, None).await;
    assert!(r.header("access-control-allow-origin").is_empty());
    assert_ne!(r.status, 204);

    // An allowed origin may call with credentials; a foreign one gets no CORS headers.
    let r = b.request(Method::GET, &bff.url("/session"), &[("origin", spa), ("x-csrf", "1")], None).await;
    assert_eq!((r.status, r.header("access-control-allow-origin")), (401, spa.to_owned()));
    let r = b.request(Method::POST, &bff.url("/logout"), &[("origin", spa), ("x-csrf", "1")], None).await;
    assert_eq!(r.status, 200, "allowed origin passes the Origin check");
    let r =
        b.request(Method::GET, &bff.url("/session"), &[("origin", "http://evil.example"), ("x-csrf", "1")], None).await;
    assert!(r.header("access-control-allow-origin").is_empty());
    assert!(r.headers.get_all("vary").iter().any(|v| v == "Origin"));
}

#[tokio::test]
async fn allowed_origins_must_be_same_site() {
    let e = oidc_bff::settings::Settings::from_toml_str(
        &format!(
            "[server]\npublic_url = \"https://app.example.com\"\nallowed_origins = [\"https://spa.example.com\", \"https://evil.example\"]\n\
             [oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\nclient_secret = \"s\"\n[session]\nkeys = [\"{KEY_A}\"]\n"
        ),
        vec![],
    )
    .err()
    .map(|e| e.0)
    .unwrap_or_default();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("https://evil.example"));
}
