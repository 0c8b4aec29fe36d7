//! PAR (RFC 9126, SPEC §3.5) and DPoP (RFC 9449, §3.6) against the real oidc-provider, with the
//! echo API (examples/echo-api) as the resource server that checks every proof.

use crate::helpers::*;
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const SCOPES: (&str, &str) = ("BFF_OIDC__SCOPES", "openid,profile,offline_access,read");

/// The echo API as a child process (killed when dropped).
struct Echo {
    _child: tokio::process::Child,
    url: String,
}

impl Echo {
    async fn start(demand_nonces: bool) -> Echo {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/echo-api/echo.mjs");
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(script).arg("0");
        if demand_nonces {
            cmd.arg("--dpop-nonce");
        }
        let (child, line) = spawn_until_ready_line(cmd, "echo API").await;
        let url = line.strip_prefix("echo-api listening on ").unwrap_or_else(|| panic!("ready line {line:?}"));
        Echo { _child: child, url: url.to_owned() }
    }

    /// What reached it: `{method, path, scheme, status, dpop: {ok, reason, jkt, nonce}}`.
    async fn requests(&self) -> Vec<Value> {
        let r: Value = reqwest::get(format!("{}/__echo/requests", self.url))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default();
        r.as_array().cloned().unwrap_or_default()
    }

    async fn control(&self, method: Method, path: &str) {
        let r = reqwest::Client::new().request(method, format!("{}{path}", self.url)).send().await;
        assert!(r.is_ok_and(|r| r.status().is_success()), "echo control {path}");
    }

    /// A request straight to the API, past the BFF (what a thief with the token could send).
    async fn direct(&self, authorization: &str, dpop: Option<&str>) -> reqwest::Response {
        let mut req = reqwest::Client::new().get(format!("{}/api/x", self.url)).header("authorization", authorization);
        if let Some(p) = dpop {
            req = req.header("dpop", p);
        }
        req.send().await.unwrap_or_else(|e| panic!("{e}"))
    }
}

fn api_route(echo: &Echo) -> String {
    format!("[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n", echo.url)
}

/// A stack with DPoP on, logins through PAR, the login's token a JWT for the echo API (its
/// `cnf.jkt` is what the echo checks proofs against).
async fn dpop_stack(idp_extra: Value, echo: &Echo, vars: &[(&str, &str)]) -> (Idp, Bff) {
    let resource = format!("{}/", echo.url);
    let mut all = vec![("BFF_OIDC__DPOP", "true"), ("BFF_OIDC__RESOURCE", resource.as_str()), SCOPES];
    all.extend_from_slice(vars);
    stack_with(idp_extra, &all, &api_route(echo)).await
}

async fn requests(idp: &Idp, endpoint: &str) -> Vec<Value> {
    let all = idp.control_method(Method::GET, "requests").await;
    all.as_array().into_iter().flatten().filter(|r| r["endpoint"] == endpoint).cloned().collect()
}

fn thumbprint(bff: &Bff, b: &Browser) -> String {
    let s = open_session(bff, &b.jar()).unwrap_or_else(|| panic!("no session"));
    let key = s.dpop.unwrap_or_else(|| panic!("the session has no DPoP key"));
    key.signer().map(|s| s.thumbprint().to_owned()).unwrap_or_default()
}

fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[tokio::test]
async fn par_required_carries_only_the_request_uri_in_both_login_modes() {
    let (idp, bff) = stack(json!({"requirePar": true}), &[("BFF_OIDC__PAR", "required")]).await;
    // Redirect mode.
    let mut b = Browser::new(&bff);
    let start = b.get(&bff.url("/login?return_to=/inbox")).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let auth = url::Url::parse(&start.location()).unwrap_or_else(|e| panic!("{e}"));
    let mut keys: Vec<String> = auth.query_pairs().map(|(k, _)| k.into_owned()).collect();
    keys.sort();
    assert_eq!(keys, ["client_id", "request_uri"]);
    let callback = b.idp_login(&start.location(), "alice").await;
    let done = b.get(&callback).await;
    assert_eq!((done.status, done.location()), (302, "/inbox".to_owned()), "{}", done.body);
    assert_eq!(b.session(&bff).await.json()["sub"], "alice");
    let pushed = requests(&idp, "par").await;
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!((pushed[0]["status"].as_u64(), pushed[0]["client_auth"].as_str()), (Some(201), Some("basic")));
    let authorize = requests(&idp, "authorize").await;
    assert!(authorize.iter().all(|a| a["query_keys"] == json!(["client_id", "request_uri"])), "{authorize:?}");

    // SPA mode: the IdP returns to an SPA page, which completes with POST /login/end.
    let (_idp, bff, redirect) = spa_stack_with(json!({"requirePar": true}), &[("BFF_OIDC__PAR", "required")]).await;
    let mut spa = Browser::new(&bff);
    let start = spa.fetch(Method::POST, &bff.url("/login/start"), Some(json!({"return_to": "/spa"}))).await;
    assert_eq!(start.status, 200, "{}", start.body);
    let auth_url = start.json()["authorization_url"].as_str().unwrap_or_default().to_owned();
    let mut keys: Vec<String> =
        url::Url::parse(&auth_url).map(|u| u.query_pairs().map(|(k, _)| k.into_owned()).collect()).unwrap_or_default();
    keys.sort();
    assert_eq!(keys, ["client_id", "request_uri"], "{auth_url}");
    let landed = spa.idp_login(&auth_url, "bob").await;
    assert!(landed.starts_with(&redirect), "{landed}");
    let end = spa.fetch(Method::POST, &bff.url("/login/end"), Some(json!({"url": landed}))).await;
    assert_eq!((end.status, end.json()["return_to"].as_str()), (200, Some("/spa")), "{}", end.body);
    assert_eq!(spa.session(&bff).await.json()["sub"], "bob");
}

#[tokio::test]
async fn par_client_auth_post_and_a_refused_or_unreachable_push() {
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
    b.login(&bff, "carol", "/").await;
    assert_eq!(b.session(&bff).await.status, 200);
    assert_eq!(requests(&idp, "par").await.last().map(|p| p["client_auth"].clone()), Some(json!("post")));

    idp.control("refuse-par").await;
    let mut c = Browser::new(&bff);
    let r = c.fetch(Method::POST, &bff.url("/login/start"), Some(json!({}))).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str(), r.json()["idp_error"].as_str()),
        (502, Some("par_rejected"), Some("invalid_request")),
        "{}",
        r.body
    );
    assert!(r.set_cookies().iter().all(|c| !c.contains("bff-tx.")), "a transaction cookie without a pushed request");
    let nav = c.get(&bff.url("/login")).await;
    assert_eq!(nav.status, 502);
    assert!(nav.body.contains("par_rejected"));
    idp.control_method(Method::DELETE, "refuse-par").await;

    // The IdP gone: the push cannot be made, and no transaction starts.
    drop(idp);
    let r = c.fetch(Method::POST, &bff.url("/login/start"), Some(json!({}))).await;
    assert_eq!((r.status, r.json()["error"].as_str()), (502, Some("idp_unavailable")), "{}", r.body);
    assert!(r.set_cookies().iter().all(|c| !c.contains("bff-tx.")));
}

#[tokio::test]
async fn par_auto_without_an_endpoint_uses_the_front_channel() {
    let (_idp, bff) = stack(json!({"par": false}), &[]).await;
    let mut b = Browser::new(&bff);
    let start = b.get(&bff.url("/login")).await;
    let auth = url::Url::parse(&start.location()).unwrap_or_else(|e| panic!("{e}"));
    for k in ["state", "nonce", "code_challenge", "redirect_uri", "scope"] {
        assert!(auth.query_pairs().any(|(n, _)| n == k), "{k} missing from {auth}");
    }
    assert!(!auth.query_pairs().any(|(n, _)| n == "request_uri"));
    b.login(&bff, "dave", "/").await;
    assert_eq!(b.session(&bff).await.status, 200);
}

/// SPEC §3.5–§3.6: a discovery that contradicts the configuration stops the server, with a line
/// that names what is missing.
#[tokio::test]
async fn start_up_stops_when_discovery_contradicts_par_or_dpop() {
    for (idp_extra, var, want) in [
        (json!({"par": false}), ("BFF_OIDC__PAR", "required"), "pushed_authorization_request_endpoint"),
        (json!({"requirePar": true}), ("BFF_OIDC__PAR", "off"), "require_pushed_authorization_requests"),
        (json!({"dpop": false}), ("BFF_OIDC__DPOP", "true"), "dpop_signing_alg_values_supported"),
    ] {
        let listener = reserve().await;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let idp = Idp::start(port, idp_extra).await;
        let app = oidc_bff::startup::App::with_listener(settings(port, &idp.issuer, &[var]), listener)
            .unwrap_or_else(|e| panic!("{e}"));
        let result = tokio::time::timeout(Duration::from_secs(10), app.run_until(std::future::pending())).await;
        let err = match result {
            Ok(Err(e @ oidc_bff::startup::StartupError::Discovery(_))) => e.to_string(),
            other => panic!("{var:?}: the server did not stop: {other:?}"),
        };
        assert!(err.contains(want) && !err.contains('\n'), "{var:?}: {err}");
    }
}

#[tokio::test]
async fn dpop_binds_the_tokens_to_the_session_key_end_to_end() {
    let echo = Echo::start(false).await;
    let (idp, bff) = dpop_stack(json!({}), &echo, &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "erin", "/").await;
    let jkt = thumbprint(&bff, &b);
    // The code was bound to the key at the pushed request, and redeemed with a proof.
    let pushed = requests(&idp, "par").await;
    assert_eq!(pushed.last().map(|p| p["dpop_jkt"].clone()), Some(json!(jkt)));
    let token = requests(&idp, "token").await;
    assert_eq!(token.last().map(|t| (t["dpop_proof"].clone(), t["status"].clone())), Some((json!(true), json!(200))));

    let r = b.fetch(Method::GET, &bff.url("/api/x?q=1"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let auth = &r.json()["authorization"];
    assert_eq!(auth["scheme"], "DPoP", "{}", r.body);
    assert_eq!(auth["cnf_jkt"], json!(jkt));
    assert_eq!(auth["dpop"]["verified"], true);
    assert_eq!(auth["dpop"]["jkt"], json!(jkt));
    assert_eq!(auth["dpop"]["htm"], "GET");
    assert_eq!(auth["dpop"]["htu"], format!("{}/api/x", echo.url));
    // A POST with a body carries its own proof.
    let r = b.fetch(Method::POST, &bff.url("/api/y"), Some(json!({"a": 1}))).await;
    assert_eq!((r.status, r.json()["authorization"]["dpop"]["htm"].as_str()), (200, Some("POST")), "{}", r.body);

    // The token is useless without the key: as a bearer token, or with another key's proof.
    let s = open_session(&bff, &b.jar()).unwrap_or_else(|| panic!("no session"));
    let at = s.access_token.compact().expose().to_owned();
    assert_eq!(jwt_claims(&at)["cnf"]["jkt"], json!(jkt));
    let replay = echo.direct(&format!("Bearer {at}"), None).await;
    assert_eq!(replay.status(), 401);
    let thief = oidc_bff::oidc::dpop::DpopKey::generate();
    let signer = thief.signer().cloned().unwrap_or_else(|| panic!("no signer"));
    let ath = oidc_bff::oidc::dpop::ath(at.as_bytes());
    let proof = signer.proof("GET", &format!("{}/api/x", echo.url), Some(&ath), None, oidc_bff::clock::now());
    let replay = echo.direct(&format!("DPoP {at}"), proof.as_deref()).await;
    assert_eq!(replay.status(), 401);
    let verdicts: Vec<Value> = echo.requests().await.iter().map(|e| e["dpop"]["reason"].clone()).collect();
    assert_eq!(verdicts[verdicts.len() - 2..], [json!("bearer"), json!("cnf")], "{verdicts:?}");

    // /session never shows the key or a token.
    let body = b.session(&bff).await.body;
    let key = s.dpop.map(|k| k.to_encoded()).unwrap_or_default();
    assert!(!body.contains(&key) && !body.contains(&at) && !body.contains("dpop"), "{body}");

    // Logout revokes without a proof and ends the session.
    let out = b.fetch(Method::POST, &bff.url("/logout"), None).await;
    assert_eq!(out.status, 200);
    assert_eq!(b.session(&bff).await.status, 401);
}

#[tokio::test]
async fn two_sessions_have_two_keys_and_a_refresh_stays_bound() {
    let echo = Echo::start(false).await;
    let (idp, bff) = dpop_stack(json!({"accessTokenTtl": 4}), &echo, &[("BFF_OIDC__REFRESH_MARGIN_SECS", "3")]).await;
    let mut a = Browser::new(&bff);
    a.login(&bff, "frank", "/").await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "grace", "/").await;
    let (ka, kb) = (thumbprint(&bff, &a), thumbprint(&bff, &b));
    assert_ne!(ka, kb);
    let before = open_session(&bff, &a.jar()).map(|s| s.access_token.compact().expose().to_owned());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = a.fetch(Method::GET, &bff.url("/api/after-refresh"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authorization"]["dpop"]["verified"], true, "{}", r.body);
    assert_eq!(r.json()["authorization"]["cnf_jkt"], json!(ka));
    let after = open_session(&bff, &a.jar()).map(|s| s.access_token.compact().expose().to_owned());
    assert_ne!(before, after, "the access token was refreshed");
    let refreshes = requests(&idp, "token").await;
    let refresh = refreshes.iter().rev().find(|t| t["grant_type"] == "refresh_token");
    assert_eq!(refresh.map(|t| (t["dpop_proof"].clone(), t["status"].clone())), Some((json!(true), json!(200))));
}

/// A server-side session keeps its key in its sealed row (SPEC §3.6): the proofs go on, request
/// after request, each from a freshly decoded row.
#[tokio::test]
async fn a_server_side_session_keeps_its_key_in_the_store() {
    let echo = Echo::start(false).await;
    let db = std::env::temp_dir().join(format!("oidc-bff-dpop-{}.db", std::process::id()));
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let vars = [("BFF_SESSION__STORE", "sqlite"), ("BFF_SESSION__URL", url.as_str())];
    let (_idp, bff) = dpop_stack(json!({}), &echo, &vars).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "kim", "/").await;
    let mut jkts = Vec::new();
    for _ in 0..3 {
        let r = b.fetch(Method::GET, &bff.url("/api/x"), None).await;
        assert_eq!((r.status, &r.json()["authorization"]["dpop"]["verified"]), (200, &json!(true)), "{}", r.body);
        jkts.push(r.json()["authorization"]["cnf_jkt"].clone());
    }
    assert!(jkts[0].is_string() && jkts.iter().all(|j| *j == jkts[0]), "{jkts:?}");
    let _ = std::fs::remove_file(&db);
}

#[tokio::test]
async fn a_nonce_demanded_by_the_idp_and_by_the_upstream_costs_one_retry_each() {
    let echo = Echo::start(true).await;
    let (idp, bff) = dpop_stack(json!({"dpopNonce": true}), &echo, &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "heidi", "/").await;
    let token: Vec<(Value, Value)> =
        requests(&idp, "token").await.iter().map(|t| (t["status"].clone(), t["dpop_nonce"].clone())).collect();
    assert_eq!(token.len(), 2, "{token:?}");
    assert_eq!((&token[0].0, &token[0].1, &token[1].0), (&json!(400), &Value::Null, &json!(200)));
    assert!(token[1].1.is_string(), "the retry carried the nonce");

    // The upstream: a GET is sent once more with the nonce, once.
    let r = b.fetch(Method::GET, &bff.url("/api/one"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen: Vec<Value> = echo.requests().await.iter().map(|e| e["status"].clone()).collect();
    assert_eq!(seen, [json!(401), json!(200)]);
    // The nonce is remembered: the next request needs no retry.
    let r = b.fetch(Method::GET, &bff.url("/api/two"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(echo.requests().await.len(), 3);
    // A request with a body is not sent twice: the 401 goes back, and its nonce is kept.
    echo.control(Method::POST, "/__echo/dpop-nonce").await;
    let r = b.fetch(Method::POST, &bff.url("/api/three"), Some(json!({"x": 1}))).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(echo.requests().await.len(), 4);
    let r = b.fetch(Method::POST, &bff.url("/api/three"), Some(json!({"x": 1}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echo.requests().await.len(), 5);
}

/// The browser's own `DPoP` header never reaches an upstream: not with the BFF's bearer token,
/// nor on routes where the BFF adds no credential (`token = "none"`, `auth = "none"`).
#[tokio::test]
async fn the_browser_cannot_send_its_own_dpop_proof_upstream() {
    let echo = Echo::start(false).await;
    let routes = format!(
        "{}[[routes]]\nprefix = \"/bare\"\nupstream = \"{u}\"\ntoken = \"none\"\n\
         [[routes]]\nprefix = \"/open\"\nupstream = \"{u}\"\nauth = \"none\"\n",
        api_route(&echo),
        u = echo.url
    );
    // The login's token a JWT for the echo API, so that the echo can check the BFF's proof.
    let resource = format!("{}/", echo.url);
    let vars = [("BFF_OIDC__DPOP", "true"), ("BFF_OIDC__RESOURCE", resource.as_str()), SCOPES];
    let (_idp, bff) = stack_with(json!({}), &vars, &routes).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "ivan", "/").await;
    let cookie = b.jar().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
    for path in ["/api/x", "/bare/x", "/open/x"] {
        let forged = reqwest::Client::new()
            .get(bff.url(path))
            .header("x-csrf", "1")
            .header("cookie", &cookie)
            .header("dpop", "forged.proof.value")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(forged.status(), 200, "{path}");
        let last = echo.requests().await.pop().unwrap_or_default();
        let want = path == "/api/x"; // the BFF's own proof, not the browser's
        assert_eq!(last["dpop_header"], json!(want), "{path}: {last}");
        if want {
            assert_eq!(last["dpop"]["ok"], true, "{last}");
        }
    }
}

/// A route's exchanged token (SPEC §6.2) is requested with the session's proof, bound to the
/// same key, and sent as DPoP.
#[tokio::test]
async fn an_exchanged_route_token_is_bound_to_the_session_key_too() {
    let echo = Echo::start(false).await;
    let routes = format!(
        "{}[[routes]]\nprefix = \"/payments\"\nupstream = \"{}\"\ntoken = \"exchange\"\nresource = \"https://payments.example.test/\"\n",
        api_route(&echo),
        echo.url
    );
    let resource = format!("{}/", echo.url);
    let vars = [("BFF_OIDC__DPOP", "true"), ("BFF_OIDC__RESOURCE", resource.as_str()), SCOPES];
    let (idp, bff) = stack_with(json!({}), &vars, &routes).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "judy", "/").await;
    let jkt = thumbprint(&bff, &b);
    let r = b.fetch(Method::GET, &bff.url("/payments/x"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let auth = &r.json()["authorization"];
    assert_eq!(
        (auth["scheme"].as_str(), auth["audience"].as_str()),
        (Some("DPoP"), Some("https://payments.example.test/")),
        "{}",
        r.body
    );
    assert_eq!((&auth["cnf_jkt"], &auth["dpop"]["verified"]), (&json!(jkt), &json!(true)), "{}", r.body);
    let exchange = requests(&idp, "token")
        .await
        .into_iter()
        .rev()
        .find(|t| t["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange");
    assert_eq!(exchange.map(|t| t["dpop_proof"].clone()), Some(json!(true)));
}

/// SPEC §6.3: a WebSocket upgrade carries the route's token as any proxied request — with DPoP,
/// `Authorization: DPoP` and a proof for `GET` and the upstream URL, which the echo verifies.
#[tokio::test]
async fn a_websocket_upgrade_carries_a_dpop_proof_the_echo_verifies() {
    let echo = Echo::start(false).await;
    let resource = format!("{}/", echo.url);
    let vars = [("BFF_OIDC__DPOP", "true"), ("BFF_OIDC__RESOURCE", resource.as_str()), SCOPES];
    let routes = crate::websocket::ws_route(&echo.url, "required");
    let (_idp, bff) = stack_with(json!({}), &vars, &routes).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "erin", "/").await;
    let jkt = thumbprint(&bff, &b);
    let jar = b.jar().into_iter().filter(|(k, _)| !k.contains("tx")).collect();
    let ws = crate::websocket::connect(&bff, "/ws/tick", &jar, Some(&bff.url(""))).await;
    assert!(ws.is_ok(), "the upgrade was refused: {:?}", ws.err());
    let upgrade = echo.requests().await.into_iter().rfind(|r| r["path"] == "/ws/tick");
    let upgrade = upgrade.unwrap_or_else(|| panic!("the echo saw no upgrade"));
    assert_eq!((upgrade["status"].clone(), upgrade["scheme"].clone()), (json!(101), json!("DPoP")), "{upgrade}");
    assert_eq!(upgrade["dpop"]["ok"], true, "{upgrade}");
    assert_eq!(upgrade["dpop"]["jkt"], json!(jkt), "{upgrade}");
}
