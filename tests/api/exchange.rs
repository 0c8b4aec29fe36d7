//! A token per route (SPEC §6.2, RFC 8693 and RFC 8707) against the real IdP: its token-exchange
//! grant checks the subject token, honours `resource`/`audience`/`scope` and refuses scopes the
//! subject token does not hold.

use crate::helpers::*;
use crate::upstream;
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const PAYMENTS: &str = "https://payments.example.test/";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The login asks for API scopes too, so that routes can be down-scoped from them.
const SCOPES: (&str, &str) = ("BFF_OIDC__SCOPES", "openid,profile,email,offline_access,read,write");

fn routes(upstream: &str) -> String {
    format!(
        r#"
[[routes]]
prefix = "/payments"
upstream = "{upstream}"
token = "exchange"
resource = "{PAYMENTS}"
scopes = ["read"]

[[routes]]
prefix = "/avatars"
upstream = "{upstream}"
token = "exchange"
audience = "avatars"
scopes = ["write"]

[[routes]]
prefix = "/admin"
upstream = "{upstream}"
token = "exchange"
resource = "https://admin.example.test/"
scopes = ["admin"]

[[routes]]
prefix = "/api"
upstream = "{upstream}"

[[routes]]
prefix = "/bare"
upstream = "{upstream}"
token = "none"
"#
    )
}

async fn exchanging(idp_extra: Value, vars: &[(&str, &str)]) -> (Idp, Bff, upstream::Running) {
    let up = upstream::start().await;
    let mut vars = vars.to_vec();
    vars.push(SCOPES);
    vars.push(("BFF_OIDC__HTTP_TIMEOUT_SECS", "10"));
    let (idp, bff) = stack_with(idp_extra, &vars, &routes(&up.url())).await;
    (idp, bff, up)
}

/// The bearer token the upstream received ("" when none).
fn bearer(r: &Resp) -> String {
    let echo = r.json();
    echo["headers"]["authorization"].as_str().unwrap_or("").strip_prefix("Bearer ").unwrap_or("").to_owned()
}

/// A JWT's payload, unverified (the IdP signed it; these tests read what it says).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// The token requests the IdP received with this grant type.
async fn token_requests(idp: &Idp, grant_type: &str) -> Vec<Value> {
    let all = idp.control_method(Method::GET, "requests").await;
    all.as_array().into_iter().flatten().filter(|r| r["grant_type"] == grant_type).cloned().collect()
}

async fn get(b: &mut Browser, bff: &Bff, path: &str) -> Resp {
    b.fetch(Method::GET, &bff.url(path), None).await
}

#[tokio::test]
async fn each_exchange_route_gets_a_token_for_its_api_alone() {
    let (idp, bff, _up) = exchanging(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;

    let own = get(&mut b, &bff, "/api/me").await;
    assert_eq!(own.status, 200, "{}", own.body);
    let session_token = bearer(&own);
    assert!(!session_token.is_empty());

    let pay = get(&mut b, &bff, "/payments/1").await;
    assert_eq!(pay.status, 200, "{}", pay.body);
    let pay_token = bearer(&pay);
    let pay_claims = claims(&pay_token);
    assert_eq!(pay_claims["aud"], PAYMENTS, "{pay_claims}");
    assert_eq!(pay_claims["scope"], "read");
    assert_eq!(pay_claims["sub"], "alice");
    assert_ne!(pay_token, session_token, "the session's token never reaches an exchange route");

    let av = get(&mut b, &bff, "/avatars/me").await;
    assert_eq!(av.status, 200, "{}", av.body);
    let av_token = bearer(&av);
    assert_eq!(claims(&av_token)["aud"], "avatars");
    assert_eq!(claims(&av_token)["scope"], "write");
    assert_ne!(av_token, pay_token, "another resource, another token");
    assert_ne!(av_token, session_token);

    // What the BFF sent: RFC 8693 with the route's resource, audience and scope.
    let sent = token_requests(&idp, TOKEN_EXCHANGE).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0]["resource"], json!([PAYMENTS]));

    // Up-scoping is refused: 403 with the IdP's code, and the session goes on.
    let admin = get(&mut b, &bff, "/admin/x").await;
    assert_eq!(admin.status, 403, "{}", admin.body);
    assert_eq!(admin.json()["error"], "token_exchange_refused");
    assert_eq!(admin.json()["idp_error"], "invalid_scope");
    assert!(!admin.body.contains(&session_token));

    // token = "none": a session is required, no Authorization reaches the upstream.
    let bare = get(&mut b, &bff, "/bare/x").await;
    assert_eq!(bare.status, 200, "{}", bare.body);
    assert!(bare.json()["headers"]["authorization"].is_null());
    assert_eq!(Browser::new(&bff).fetch(Method::GET, &bff.url("/bare/x"), None).await.status, 401);

    // /session says which exchanged tokens are cached and until when, never the tokens.
    let s = b.session(&bff).await;
    assert_eq!(s.status, 200);
    let routes = &s.json()["routes"];
    assert_eq!(routes["/payments"]["token_expires_at"], pay_claims["exp"], "{}", s.body);
    assert!(routes["/avatars"]["token_expires_at"].is_i64());
    assert!(routes.get("/admin").is_none(), "a refusal is no cached token");
    assert!(!s.body.contains(&pay_token) && !s.body.contains(&av_token) && !s.body.contains(&session_token));
    assert_eq!(get(&mut b, &bff, "/payments/2").await.status, 200);
    assert_eq!(idp.grants("token_exchange").await, 2, "the second call used the cached token");
}

#[tokio::test]
async fn concurrent_first_requests_share_one_exchange_and_later_ones_use_the_cache() {
    // Exchanged tokens live 40 s; with a 30 s margin they are re-exchanged after 10 s.
    let (idp, bff, _up) = exchanging(json!({ "exchangeTtl": 40 }), &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let mut tokens = std::collections::BTreeSet::new();
    for r in fan_out(&[&bff], &b.jar(), "/payments/x", 20).await {
        assert_eq!(r.status, 200, "{}", r.body);
        tokens.insert(bearer(&r));
    }
    assert_eq!(idp.grants("token_exchange").await, 1, "20 concurrent first requests, one exchange");
    assert_eq!(tokens.len(), 1);
    for _ in 0..100 {
        assert_eq!(get(&mut b, &bff, "/payments/x").await.status, 200);
    }
    assert_eq!(idp.grants("token_exchange").await, 1, "100 later requests, no exchange");
    // Within the margin of its expiry, the next request exchanges again.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let r = get(&mut b, &bff, "/payments/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(idp.grants("token_exchange").await, 2);
    assert!(!tokens.contains(&bearer(&r)));
}

#[tokio::test]
async fn a_refresh_of_the_session_token_causes_exactly_one_new_exchange() {
    // Session access tokens live 4 s (refreshed at expiry: the lifetime is inside the margin).
    let (idp, bff, _up) = exchanging(json!({ "accessTokenTtl": 4 }), &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let first = get(&mut b, &bff, "/payments/x").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(idp.grants("token_exchange").await, 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = get(&mut b, &bff, "/payments/x").await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(idp.grants("refresh_token").await, 1);
    assert_eq!(idp.grants("token_exchange").await, 2, "the new session token was exchanged once");
    assert_ne!(bearer(&after), bearer(&first));
    for _ in 0..5 {
        assert_eq!(get(&mut b, &bff, "/payments/x").await.status, 200);
    }
    assert_eq!(idp.grants("token_exchange").await, 2);
}

#[tokio::test]
async fn an_unreachable_idp_is_502_and_a_later_request_succeeds() {
    let (idp, bff, up) = exchanging(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    idp.control("outage").await;
    let r = get(&mut b, &bff, "/payments/x").await;
    assert_eq!((r.status, r.json()["error"].as_str()), (502, Some("idp_unavailable")), "{}", r.body);
    assert_eq!(up.hits(), 0, "nothing reached the upstream without its token");
    idp.control_method(Method::DELETE, "outage").await;
    let r = get(&mut b, &bff, "/payments/x").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(claims(&bearer(&r))["aud"], PAYMENTS);
}

#[tokio::test]
async fn a_refusal_is_remembered_for_ten_seconds_without_ending_the_session() {
    let (idp, bff, _up) = exchanging(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    idp.control("refuse-exchanges").await;
    let r = get(&mut b, &bff, "/payments/x").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        (r.json()["error"].as_str(), r.json()["idp_error"].as_str()),
        (Some("token_exchange_refused"), Some("invalid_grant"))
    );
    idp.control_method(Method::DELETE, "refuse-exchanges").await;
    assert_eq!(get(&mut b, &bff, "/payments/x").await.status, 403, "answered from memory");
    assert_eq!(token_requests(&idp, TOKEN_EXCHANGE).await.len(), 1, "the IdP was asked once");
    assert_eq!(b.session(&bff).await.status, 200, "the session goes on");
    assert_eq!(get(&mut b, &bff, "/api/x").await.status, 200);
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(get(&mut b, &bff, "/payments/x").await.status, 200, "asked again after 10 s");
}

#[tokio::test]
async fn logout_deletes_the_cached_tokens_so_an_old_cookie_copy_never_receives_them() {
    let (idp, bff, _up) = exchanging(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let cached = bearer(&get(&mut b, &bff, "/payments/x").await);
    assert!(!cached.is_empty());
    let copy = b.jar();
    assert_eq!(b.fetch(Method::POST, &bff.url("/logout"), None).await.status, 200);
    assert_eq!(token_requests(&idp, TOKEN_EXCHANGE).await.len(), 1);
    // Cookie mode: the copy still opens (SPEC §4) but must go to the IdP again, which may
    // refuse it (the logout revoked the grant); either way the cached token is gone.
    let mut thief = Browser::new(&bff);
    thief.set_jar(copy);
    let r = get(&mut thief, &bff, "/payments/x").await;
    assert!(!r.body.contains(&cached), "the cached token was served after logout");
    assert_eq!(token_requests(&idp, TOKEN_EXCHANGE).await.len(), 2, "the copy had to exchange anew");
}

#[tokio::test]
async fn oidc_resource_goes_with_the_authorization_code_and_refresh_requests() {
    const ORDERS: &str = "https://orders.example.test/";
    let (idp, bff, _up) = exchanging(json!({ "accessTokenTtl": 4 }), &[("BFF_OIDC__RESOURCE", ORDERS)]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "alice", "/").await;
    let r = get(&mut b, &bff, "/api/x").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let login_token = claims(&bearer(&r));
    assert_eq!(login_token["aud"], ORDERS, "the login's token carries the resource: {login_token}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = get(&mut b, &bff, "/api/x").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(claims(&bearer(&r))["aud"], ORDERS);
    let all = idp.control_method(Method::GET, "requests").await;
    let with = |endpoint: &str, grant: Value| {
        all.as_array()
            .into_iter()
            .flatten()
            .filter(|q| q["endpoint"] == endpoint && q["grant_type"] == grant)
            .map(|q| q["resource"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(with("authorize", Value::Null), vec![json!([ORDERS])], "{all}");
    assert_eq!(with("token", json!("authorization_code")), vec![json!([ORDERS])]);
    assert_eq!(with("token", json!("refresh_token")), vec![json!([ORDERS])]);
}
