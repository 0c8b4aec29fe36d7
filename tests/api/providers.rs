//! Several IdPs in one deployment (SPEC §3.7): two real oidc-provider instances with different
//! issuers and keys, each login, refresh and logout reaching its own IdP, and the mix-up
//! defences (RFC 9700 §4.4): nothing of one provider is accepted as another's.

use crate::helpers::*;
use crate::stores::{Kind, TestStore};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// `[[providers]]` "partners" at `issuer`, as client `bff-basic` (registered at every test IdP:
/// the same client id at two issuers, as mix-up attacks assume), plus `extra` keys.
fn partners(issuer: &str, extra: &str) -> String {
    format!(
        "[[providers]]\nname = \"partners\"\nissuer = \"{issuer}\"\nclient_id = \"bff-basic\"\n\
         client_secret = \"{SECRET_BASIC}\"\nhttp_timeout_secs = 10\n{extra}\n"
    )
}

struct Two {
    a: Idp,
    b: Idp,
    bff: Bff,
}

/// IdP A behind `[oidc]`, IdP B behind `[[providers]]` "partners".
async fn two(a_extra: Value, b_extra: Value, vars: &[(&str, &str)], b_keys: &str, toml: &str) -> Two {
    two_with(a_extra, b_extra, vars, b_keys, toml, false).await
}

/// `backchannel`: both IdPs' clients register the BFF's back-channel logout URI (their ID
/// tokens then carry a `sid`).
async fn two_with(
    a_extra: Value,
    b_extra: Value,
    vars: &[(&str, &str)],
    b_keys: &str,
    toml: &str,
    backchannel: bool,
) -> Two {
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let mut b_cfg = json!({ "envId": "PARTNERS" });
    if let (Some(c), Some(e)) = (b_cfg.as_object_mut(), b_extra.as_object()) {
        c.extend(e.clone());
    }
    let (a_extra, b_cfg) = if backchannel {
        (crate::stores::backchannel_idp(port, a_extra), crate::stores::backchannel_idp(port, b_cfg))
    } else {
        (a_extra, b_cfg)
    };
    let (a, b) = tokio::join!(Idp::start(port, a_extra), Idp::start(port, b_cfg));
    assert_ne!(a.issuer, b.issuer);
    let extra = format!("{}{toml}", partners(&b.issuer, b_keys));
    let bff = spawn_bff(listener, settings_with(port, &a.issuer, vars, &extra)).await;
    wait_until_ready(&bff, "partners").await;
    Two { a, b, bff }
}

async fn wait_until_ready(bff: &Bff, provider: &str) {
    for _ in 0..400 {
        if bff.state.providers.get(provider).is_some_and(|p| p.is_ready()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("provider {provider} not ready in 20 s");
}

/// Redirect-mode login at `provider`; the callback's response.
async fn login_at(b: &mut Browser, bff: &Bff, provider: &str, user: &str) -> Resp {
    let start = b.get(&bff.url(&format!("/login?provider={provider}&return_to=/"))).await;
    assert_eq!(start.status, 302, "GET /login?provider={provider}: {}", start.body);
    let callback = b.idp_login(&start.location(), user).await;
    b.get(&callback).await
}

/// The SPEC error code of a JSON answer or of a navigational error page.
fn code(r: &Resp) -> String {
    if let Some(c) = r.json()["error"].as_str() {
        return c.to_owned();
    }
    r.body.split("<code>").nth(1).and_then(|s| s.split("</code>").next()).unwrap_or_default().to_owned()
}

async fn token_requests(idp: &Idp) -> u64 {
    idp.events().await["token_requests"]["total"].as_u64().unwrap_or_else(|| panic!("no token_requests counter"))
}

#[tokio::test]
async fn each_provider_logs_in_refreshes_and_logs_out_at_its_own_idp() {
    let ttl = json!({ "accessTokenTtl": 2 });
    let t = two(ttl.clone(), ttl, &[], "", "").await;
    let (a, b, bff) = (&t.a, &t.b, &t.bff);

    let mut staff = Browser::new(bff);
    let r = login_at(&mut staff, bff, "default", "ada").await;
    assert_eq!((r.status, r.location()), (302, "/".into()), "{}", r.body);
    let mut partner = Browser::new(bff);
    let r = login_at(&mut partner, bff, "partners", "pat").await;
    assert_eq!((r.status, r.location()), (302, "/".into()), "{}", r.body);
    assert_eq!((a.grants("authorization_code").await, b.grants("authorization_code").await), (1, 1));

    let s = staff.session(bff).await.json();
    assert_eq!((&s["provider"], &s["sub"], &s["claims"]["iss"]), (&json!("default"), &json!("ada"), &json!(a.issuer)));
    let s = partner.session(bff).await.json();
    assert_eq!((&s["provider"], &s["sub"], &s["claims"]["iss"]), (&json!("partners"), &json!("pat"), &json!(b.issuer)));

    // Refresh: the partner's expired token is renewed at B only, then the staff's at A only.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(partner.session(bff).await.status, 200);
    assert_eq!((a.grants("refresh_token").await, b.grants("refresh_token").await), (0, 1));
    assert_eq!(staff.session(bff).await.status, 200);
    assert_eq!((a.grants("refresh_token").await, b.grants("refresh_token").await), (1, 1));

    // Logout: the refresh token is revoked at the session's IdP, and its logout URL is there.
    let r = partner.fetch(Method::POST, &bff.url("/logout"), None).await;
    let url = r.json()["logout_url"].as_str().unwrap_or_default().to_owned();
    assert!(url.starts_with(&format!("{}/signoff", b.issuer)), "{url}");
    let (ra, rb) = (a.events().await["revocations"].clone(), b.events().await["revocations"].clone());
    assert_eq!((ra, rb), (json!(0), json!(1)));
    let r = staff.fetch(Method::POST, &bff.url("/logout"), None).await;
    assert!(r.json()["logout_url"].as_str().unwrap_or_default().starts_with(&a.issuer));
    assert_eq!(a.events().await["revocations"], json!(1));
    assert_eq!(partner.session(bff).await.status, 401);
}

#[tokio::test]
async fn unknown_providers_are_refused_and_the_spa_can_list_the_known_ones() {
    let t = two(json!({}), json!({}), &[], "", "").await;
    let bff = &t.bff;
    let mut b = Browser::new(bff);
    let r = b.get(&bff.url("/login?provider=nope")).await;
    assert_eq!((r.status, code(&r)), (400, "unknown_provider".to_owned()), "{}", r.body);
    let r = b.fetch(Method::POST, &bff.url("/login/start"), Some(json!({ "provider": "nope" }))).await;
    assert_eq!((r.status, code(&r)), (400, "unknown_provider".to_owned()), "{}", r.body);
    assert!(r.set_cookies().is_empty(), "no transaction for an unknown provider");
    let r = b.fetch(Method::POST, &bff.url("/login/start"), Some(json!({ "provider": "partners" }))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["authorization_url"].as_str().unwrap_or_default().starts_with(&t.b.issuer), "{}", r.body);
    let r = b.session(bff).await;
    assert_eq!(r.json(), json!({ "authenticated": false, "providers": ["default", "partners"] }));
    // Only configured providers have a callback path.
    let r = b.get(&bff.url("/callback/nope?code=x&state=y")).await;
    assert_eq!((r.status, code(&r)), (404, "not_found".to_owned()));
}

/// Start a login at `provider` and return its state; the browser keeps the transaction cookie.
async fn started(b: &mut Browser, bff: &Bff, idp: &Idp, provider: &str) -> String {
    let start = b.get(&bff.url(&format!("/login?provider={provider}"))).await;
    assert_eq!(start.status, 302, "{}", start.body);
    idp.state_of(&start.location()).await
}

/// A code issued by `idp` for a login started at `provider` (the redirect the IdP answered,
/// never delivered to the BFF).
async fn code_from(bff: &Bff, idp: &Idp, provider: &str) -> (String, String) {
    let mut other = Browser::new(bff);
    let start = other.get(&bff.url(&format!("/login?provider={provider}"))).await;
    let back = url::Url::parse(&other.idp_login(&start.location(), "mallory").await).unwrap_or_else(|e| panic!("{e}"));
    let get = |k: &str| back.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned()).unwrap_or_default();
    assert_eq!(get("iss"), idp.issuer);
    (get("code"), get("iss"))
}

#[tokio::test]
async fn a_code_or_iss_of_another_provider_is_refused_before_any_token_call() {
    let t = two(json!({}), json!({}), &[], "", "").await;
    let (a, b, bff) = (&t.a, &t.b, &t.bff);
    let (b_code, b_iss) = code_from(bff, b, "partners").await;
    let before = (token_requests(a).await, token_requests(b).await);

    // B's code and B's iss replayed into a transaction started for A.
    let mut victim = Browser::new(bff);
    let state = started(&mut victim, bff, a, "default").await;
    let q =
        |iss: &str| format!("/callback?code={}&state={}&iss={}", urlencode(&b_code), urlencode(&state), urlencode(iss));
    let r = victim.clone().get(&bff.url(&q(&b_iss))).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_issuer".to_owned()), "{}", r.body);
    // Without iss: A sends it on every response (RFC 9207), so its absence is refused too.
    let no_iss = format!("/callback?code={}&state={}", urlencode(&b_code), urlencode(&state));
    let r = victim.clone().get(&bff.url(&no_iss)).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_issuer".to_owned()), "{}", r.body);
    // B's code presented with A's iss: the state was spent by the refusals above; a fresh
    // transaction. The code reaches A's token endpoint, which refuses it (a code is only
    // valid where it was issued), so the login fails without a session.
    let mut victim = Browser::new(bff);
    let state = started(&mut victim, bff, a, "default").await;
    let forged =
        format!("/callback?code={}&state={}&iss={}", urlencode(&b_code), urlencode(&state), urlencode(&a.issuer));
    let r = victim.get(&bff.url(&forged)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(victim.session(bff).await.status, 401);
    let after = (token_requests(a).await, token_requests(b).await);
    assert_eq!(after.1, before.1, "B's token endpoint never saw a request");
    assert_eq!(after.0, before.0 + 1, "A saw only the forged request that carried A's own iss");

    // The SPA-mode entry point applies the same rules.
    let mut victim = Browser::new(bff);
    let state = started(&mut victim, bff, a, "default").await;
    let body = json!({ "code": b_code, "state": state, "iss": b_iss });
    let r = victim.fetch(Method::POST, &bff.url("/login/end"), Some(body)).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_issuer".to_owned()), "{}", r.body);
    assert_eq!(token_requests(a).await, after.0);
}

#[tokio::test]
async fn tokens_signed_by_another_provider_are_refused() {
    let t = two(json!({}), json!({}), &[], "", "").await;
    let (a, b, bff) = (&t.a, &t.b, &t.bff);
    let now = oidc_bff::clock::now();
    // An ID token in A's name (A's issuer, the client id both know) signed with B's key.
    let claims =
        json!({ "iss": a.issuer, "aud": "bff-basic", "sub": "ada", "iat": now, "exp": now + 300, "nonce": "n" });
    let forged = b.sign(json!({}), claims).await;
    let default = bff.state.providers.default_provider();
    let provider = default.provider().unwrap_or_else(|e| panic!("{e}"));
    let check = oidc_bff::oidc::id_token::Check { login: true, nonce: Some("n"), sub: None, access_token: None, now };
    assert!(default.verify_id_token(&provider, &forged, &check).await.is_err(), "B's signature passed as A's");
    // The same token signed by A passes: the refusal above is B's key, nothing else.
    let genuine = a
        .sign(
            json!({}),
            json!({ "iss": a.issuer, "aud": "bff-basic", "sub": "ada", "iat": now, "exp": now + 300, "nonce": "n" }),
        )
        .await;
    assert!(default.verify_id_token(&provider, &genuine, &check).await.is_ok());
}

async fn post_logout(bff: &Bff, token: &str) -> Resp {
    let mut b = Browser::new(bff);
    let body = format!("logout_token={}", urlencode(token));
    b.request(
        Method::POST,
        &bff.url("/backchannel-logout"),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(body),
    )
    .await
}

/// The same `sub` (and the same `sid`) at both IdPs: a logout token of one provider ends only
/// that provider's sessions — in each server-side store and in cookie mode's revocation list.
async fn logouts_stay_with_their_provider(kind: Kind, mode: &str) {
    let Some(store) = TestStore::new(kind, "providers").await else { return };
    let url = store.url();
    let vars =
        [("BFF_SESSION__STORE", mode), ("BFF_SESSION__URL", url.as_str()), ("BFF_OIDC__HTTP_TIMEOUT_SECS", "10")];
    let t = two_with(json!({}), json!({}), &vars, "", "", true).await;
    let (a, b, bff) = (&t.a, &t.b, &t.bff);
    let mut at_a = Browser::new(bff);
    login_at(&mut at_a, bff, "default", "ann").await;
    let mut at_b = Browser::new(bff);
    login_at(&mut at_b, bff, "partners", "ann").await;
    let sid_a = at_a.session(bff).await.json()["claims"]["sid"].as_str().map(str::to_owned);
    let sid_a = sid_a.unwrap_or_else(|| panic!("A's session has no sid"));
    // SPEC §9: Redis key names carry hashes of ids, never the ids.
    let keys = store.redis_keys().await;
    assert_eq!(keys.is_empty(), kind != Kind::Redis, "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains("ann") && !k.contains(&sid_a) && !k.contains('\u{1}')), "{keys:?}");
    let now = oidc_bff::clock::now();
    let typ = json!({ "typ": "logout+jwt" });
    let token = |iss: &str, jti: &str, who: (&str, &str)| json!({ "iss": iss, "aud": "bff-basic", "iat": now, "jti": jti, who.0: who.1, "events": { EVENT: {} } });

    // A logout token in A's name signed by B: chosen by its iss (A), refused by A's keys.
    let r = post_logout(bff, &b.sign(typ.clone(), token(&a.issuer, "forged", ("sub", "ann"))).await).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_logout_token".to_owned()), "{}", r.body);
    // And one naming no configured issuer.
    let r = post_logout(bff, &b.sign(typ.clone(), token("https://elsewhere.example", "x", ("sub", "ann"))).await).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_logout_token".to_owned()), "{}", r.body);

    // B names A's sid: a valid token of B, applied to B's sessions only.
    let r = post_logout(bff, &b.sign(typ.clone(), token(&b.issuer, "same-jti", ("sid", &sid_a))).await).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A's token with the same jti is not a replay: spent ids are scoped too.
    // B names the user both IdPs call "ann": B's session ends, A's stays.
    let r = post_logout(bff, &b.sign(typ.clone(), token(&b.issuer, "b-sub", ("sub", "ann"))).await).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let wait = |mut br: Browser, want: u16| async move {
        let mut last = 0;
        for _ in 0..60 {
            last = br.session(bff).await.status;
            if last == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        last
    };
    assert_eq!(wait(at_b.clone(), 401).await, 401, "B's session ends");
    // Give cookie mode's revocation mirror a poll or two before judging that A's survives.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(at_a.session(bff).await.status, 200, "A's session survives B's logout of the same sub and sid");

    let r = post_logout(bff, &a.sign(typ.clone(), token(&a.issuer, "same-jti", ("sid", &sid_a))).await).await;
    assert_eq!(r.status, 200, "A's token with a jti B used: {}", r.body);
    assert_eq!(wait(at_a.clone(), 401).await, 401, "A's own logout ends it");
    store.drop_all().await;
}

#[tokio::test]
async fn logouts_stay_with_their_provider_sqlite() {
    logouts_stay_with_their_provider(Kind::Sqlite, "sqlite").await;
}

#[tokio::test]
async fn logouts_stay_with_their_provider_postgres() {
    logouts_stay_with_their_provider(Kind::Postgres, "postgres").await;
}

#[tokio::test]
async fn logouts_stay_with_their_provider_redis() {
    logouts_stay_with_their_provider(Kind::Redis, "redis").await;
}

#[tokio::test]
async fn logouts_stay_with_their_provider_cookie_mode_revocation_list() {
    logouts_stay_with_their_provider(Kind::Sqlite, "cookie").await;
}

#[tokio::test]
async fn a_provider_down_at_start_up_fails_only_its_own_logins_and_recovers() {
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let a = Idp::start(port, json!({})).await;
    let b_port = free_port();
    let b_issuer = format!("http://127.0.0.1:{b_port}/PARTNERS/as");
    let bff = spawn_bff(listener, settings_with(port, &a.issuer, &[], &partners(&b_issuer, ""))).await;

    let mut user = Browser::new(&bff);
    let r = user.get(&bff.url("/login?provider=partners")).await;
    assert_eq!((r.status, code(&r)), (502, "idp_unavailable".to_owned()), "{}", r.body);
    let ready = user.get(&bff.url("/readyz")).await;
    assert_eq!(ready.status, 200, "readiness needs only the default provider: {}", ready.body);
    assert_eq!(ready.json()["providers"], json!({ "default": "ready", "partners": "unavailable" }));
    let r = login_at(&mut user, &bff, "default", "ada").await;
    assert_eq!(r.status, 302, "logins at A work meanwhile: {}", r.body);

    // B comes up: its provider is loaded by the retry loop, without a restart.
    let b = Idp::start(port, json!({ "port": b_port, "envId": "PARTNERS" })).await;
    assert_eq!(b.issuer, b_issuer);
    wait_until_ready(&bff, "partners").await;
    let ready = user.get(&bff.url("/readyz")).await;
    assert_eq!(ready.json()["providers"]["partners"], json!("ready"));
    let mut partner = Browser::new(&bff);
    let r = login_at(&mut partner, &bff, "partners", "pat").await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(partner.session(&bff).await.json()["provider"], json!("partners"));
}

#[tokio::test]
async fn a_provider_without_rfc9207_needs_its_own_callback_path() {
    let no_iss = json!({ "issAuthResp": false });
    // Sharing {base}/callback: its logins are refused before anything reaches the IdP.
    let t = two(json!({}), no_iss.clone(), &[], "", "").await;
    let mut b = Browser::new(&t.bff);
    let r = b.get(&t.bff.url("/login?provider=partners")).await;
    assert_eq!((r.status, code(&r)), (502, "idp_unavailable".to_owned()), "{}", r.body);
    drop(t);

    // With its own redirect_uri it works, and only at that path.
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let own = format!("redirect_uri = \"http://127.0.0.1:{port}/callback/partners\"");
    let (a, pb) = tokio::join!(
        Idp::start(port, json!({})),
        Idp::start(port, json!({ "envId": "PARTNERS", "issAuthResp": false }))
    );
    let bff = spawn_bff(listener, settings_with(port, &a.issuer, &[], &partners(&pb.issuer, &own))).await;
    wait_until_ready(&bff, "partners").await;
    let mut p = Browser::new(&bff);
    let r = login_at(&mut p, &bff, "partners", "pat").await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(p.session(&bff).await.json()["provider"], json!("partners"));

    // B's response (no iss) delivered at the shared path, for a transaction of B: refused.
    let mut m = Browser::new(&bff);
    let start = m.get(&bff.url("/login?provider=partners")).await;
    let back = m.idp_login(&start.location(), "pat").await;
    assert!(back.contains("/callback/partners?") && !back.contains("iss="), "{back}");
    let shared = back.replace("/callback/partners?", "/callback?");
    let r = m.clone().get(&shared).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_issuer".to_owned()), "{}", r.body);
    // And a transaction of A answered at B's path.
    let mut v = Browser::new(&bff);
    let state = started(&mut v, &bff, &a, "default").await;
    let r = v.get(&bff.url(&format!("/callback/partners?code=x&state={}", urlencode(&state)))).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_issuer".to_owned()), "{}", r.body);
    assert_eq!(a.grants("authorization_code").await, 0);
}

#[tokio::test]
async fn routes_limited_to_a_provider_refuse_the_others_sessions() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let echo_port = echo.local_addr().map(|a| a.port()).unwrap_or_default();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { "upstream" });
        let _ = axum::serve(echo, app).await;
    });
    let route = format!(
        "[[routes]]\nprefix = \"/partner-api\"\nupstream = \"http://127.0.0.1:{echo_port}\"\nproviders = [\"partners\"]\n"
    );
    let t = two(json!({}), json!({}), &[], "", &route).await;
    let bff = &t.bff;
    let mut staff = Browser::new(bff);
    login_at(&mut staff, bff, "default", "ada").await;
    let r = staff.fetch(Method::GET, &bff.url("/partner-api/x"), None).await;
    assert_eq!((r.status, code(&r)), (403, "provider_not_allowed".to_owned()), "{}", r.body);
    let mut partner = Browser::new(bff);
    login_at(&mut partner, bff, "partners", "pat").await;
    let r = partner.fetch(Method::GET, &bff.url("/partner-api/x"), None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "upstream"));
}

#[tokio::test]
async fn sessions_of_a_removed_provider_end_at_their_next_request() {
    let t = two(json!({}), json!({}), &[], "", "").await;
    let mut partner = Browser::new(&t.bff);
    login_at(&mut partner, &t.bff, "partners", "pat").await;
    assert_eq!(partner.session(&t.bff).await.status, 200);
    // The same keys, the partners entry gone (a compromised IdP removed from the configuration).
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let without = spawn_bff(listener, settings(port, &t.a.issuer, &[])).await;
    let mut same = Browser::new(&without);
    same.set_jar(partner.jar());
    let r = same.session(&without).await;
    assert_eq!((r.status, r.json()["error"].clone()), (401, json!("session_expired")), "{}", r.body);
    assert!(r.set_cookies().iter().any(|c| c.contains("Max-Age=0")), "the cookie is expired: {:?}", r.set_cookies());
}

#[tokio::test]
async fn a_provider_whose_idp_calls_pile_up_does_not_hold_up_the_others() {
    let t = two(json!({}), json!({}), &[], "", "").await;
    let bff = &t.bff;
    // Every login slot of "partners" taken (its IdP hanging on code exchanges).
    let partners = bff.state.providers.get("partners").unwrap_or_else(|| panic!("no partners"));
    let all = oidc_bff::oidc::LOGIN_SLOTS as u32;
    let held = partners.slots().login.try_acquire_many(all).unwrap_or_else(|e| panic!("{e}"));
    let mut staff = Browser::new(bff);
    let r = login_at(&mut staff, bff, "default", "ada").await;
    assert_eq!(r.status, 302, "the default provider's logins go on: {}", r.body);
    // Its own logins wait: the PAR push at login start takes a slot too.
    let r = Browser::new(bff).get(&bff.url("/login?provider=partners")).await;
    assert_eq!((r.status, code(&r)), (429, "rate_limited".to_owned()), "{}", r.body);
    drop(held);
    assert_eq!(t.b.events().await["token_requests"]["total"], json!(0));
}

#[tokio::test]
async fn provider_readiness_is_exported_also_for_a_provider_down_since_start_up() {
    let (port, admin) = (free_port(), free_port());
    let a = Idp::start(port, json!({})).await;
    let down = format!("http://127.0.0.1:{}/PARTNERS/as", free_port());
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         admin_listen = \"127.0.0.1:{admin}\"\n[oidc]\nissuer = \"{}\"\nclient_id = \"bff-basic\"\n\
         client_secret = \"{SECRET_BASIC}\"\n[session]\nkeys = [\"{KEY_A}\"]\n{}",
        a.issuer,
        partners(&down, "")
    );
    let bin = spawn_binary(port, &toml).await;
    bin.wait_ready().await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    let ready = |p: &str| {
        metrics.lines().find(|l| l.starts_with(&format!("bff_provider_ready{{provider=\"{p}\"}}"))).map(str::to_owned)
    };
    assert_eq!(ready("default").as_deref(), Some("bff_provider_ready{provider=\"default\"} 1"), "{metrics}");
    assert_eq!(ready("partners").as_deref(), Some("bff_provider_ready{provider=\"partners\"} 0"), "{metrics}");
}
