//! Refresh coordination on one instance, against a wiremock token endpoint: interleavings the
//! integration tests cannot time (a test hook pauses a request at a chosen point).

use super::grant::Fresh;
use super::*;
use crate::session::Sessions;
use crate::session::cookie::SessionCookie;
use crate::session::model::{LogoutToken, Token};
use crate::settings::Settings;
use http::{HeaderMap, HeaderValue};
use std::sync::Arc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";

/// Where a request pauses: it says it arrived, then waits to be let go.
#[derive(Default)]
pub(super) struct Gate {
    reached: tokio::sync::Notify,
    resume: tokio::sync::Notify,
}

tokio::task_local! {
    static AFTER_CACHE_MISS: Arc<Gate>;
}

/// Called by `refresh_session` between its cache check and taking the in-flight slot.
pub(super) async fn after_cache_miss() {
    if let Ok(gate) = AFTER_CACHE_MISS.try_with(Arc::clone) {
        gate.reached.notify_one();
        gate.resume.notified().await;
    }
}

/// The session service of an instance whose IdP is `server` (discovery, an empty JWKS, no
/// store), and its refresh grace period.
struct Fixture {
    sessions: Sessions,
    refresh_grace_secs: u64,
}

impl std::ops::Deref for Fixture {
    type Target = Sessions;
    fn deref(&self) -> &Sessions {
        &self.sessions
    }
}

/// `Refresher::ensure_fresh`, spelled as the tests were first written.
async fn ensure_fresh(state: &Sessions, s: &mut Arc<Session>, when: When) -> Result<bool, RefreshFailure> {
    state.refresher().ensure_fresh(s, when).await
}

/// Cache a refresh result as a finished refresh does.
async fn store(state: &Sessions, id: [u8; 32], rt: &str, fresh: Option<&Fresh>, t: i64) -> bool {
    state.refresher().0.cache.put(id, rt, fresh, t).await
}

async fn state_with(server: &MockServer) -> Fixture {
    crate::startup::install_crypto_providers();
    let issuer = server.uri();
    let discovery = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
    });
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(discovery))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"keys": []})))
        .mount(server)
        .await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:1\"\n\
         [oidc]\nissuer = \"{issuer}\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
         [session]\nkeys = [\"{KEY}\"]\n"
    );
    let settings = Settings::from_toml_str(&toml, vec![]).unwrap_or_else(|e| panic!("{e}"));
    let oidc = Arc::new(crate::oidc::Oidc::new(settings.oidc.clone()).unwrap_or_else(|e| panic!("{e}")));
    oidc.load().await.unwrap_or_else(|e| panic!("{e}"));
    let providers = Arc::new(crate::oidc::providers::Providers::single(oidc));
    let sessions =
        Sessions::new(&settings.session, None, providers, &settings.routes, crate::events::Events::new(10, None));
    Fixture { sessions, refresh_grace_secs: settings.oidc.refresh_grace_secs }
}

/// A session whose access token has expired, holding refresh token `rt`.
fn expired_session(rt: &str) -> Session {
    let t = now();
    Session {
        sub: "alice".into(),
        sid: None,
        id_token: Token::new("e30.e30.c2ln"),
        access_token: Token::new("at-1"),
        access_expires_at: t - 10,
        access_issued_at: t - 310,
        refresh_token: Some(Secret::new(rt)),
        scope: None,
        created_at: t - 310,
        absolute_expires_at: t + 3600,
        sealed_at: t,
        refreshed_from: None,
        logout_token: LogoutToken::random(),
        stored: None,
        dpop: None,
        provider: None,
    }
}

fn granted(at: &str, rt: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "access_token": at, "token_type": "Bearer", "expires_in": 300, "refresh_token": rt,
    }))
}

/// Request B misses the cache, then request A refreshes and leaves the in-flight map before B
/// takes it: B must find A's result in the cache, not spend the (now rotated) token again.
#[tokio::test]
async fn in_memory_single_flight_rechecks_the_cache_after_taking_the_in_flight_slot() {
    let server = MockServer::start().await;
    let state = state_with(&server).await;
    Mock::given(method("POST")).and(path("/token")).respond_with(granted("at-2", "rt-2")).mount(&server).await;
    let gate = Arc::new(Gate::default());
    let (state_b, session) = (state.refresher().clone(), expired_session("rt-1"));
    let mut b_session = Arc::new(session.clone());
    let b = tokio::spawn(AFTER_CACHE_MISS.scope(gate.clone(), async move {
        let changed = state_b.ensure_fresh(&mut b_session, When::Expired).await;
        (changed.is_ok(), b_session)
    }));
    gate.reached.notified().await;
    let mut a_session = Arc::new(session);
    assert!(matches!(ensure_fresh(&state, &mut a_session, When::Expired).await, Ok(true)));
    gate.resume.notify_one();
    let (ok, b_session) = b.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(ok);
    let grants = server.received_requests().await.unwrap_or_default();
    assert_eq!(grants.iter().filter(|r| r.url.path() == "/token").count(), 1, "the refresh token was spent twice");
    assert_eq!(b_session.access_token.compact().expose(), "at-2");
}

/// A session ended by a refused refresh leaves the opened-cookie memo at once (its tokens are
/// not kept in memory until the slot is reused).
#[tokio::test]
async fn a_session_ended_by_a_refused_refresh_is_dropped_from_the_memo() {
    let server = MockServer::start().await;
    let state = state_with(&server).await;
    let refused = ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": "invalid_grant"}));
    Mock::given(method("POST")).and(path("/token")).respond_with(refused).mount(&server).await;
    let sealed = crate::session::cookie::seal_session(state.cookies(), state.keys(), &expired_session("rt-dead"));
    let mut headers = HeaderMap::new();
    let cookie = format!("{}={sealed}", state.cookies().session);
    headers.insert(http::header::COOKIE, HeaderValue::from_str(&cookie).unwrap_or_else(|e| panic!("{e}")));
    let found = SessionCookie::from_headers(state.cookies(), &headers);
    let mut s = found.open(state.cookies(), state.keys()).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(crate::session::memo::get(state.keys().id(), &state.cookies().session, &sealed).is_some(), "memoised");
    let ended = ensure_fresh(&state, &mut s, When::Expired).await;
    assert!(matches!(ended, Err(RefreshFailure::Ended(_))));
    assert!(
        crate::session::memo::get(state.keys().id(), &state.cookies().session, &sealed).is_none(),
        "the ended session is still in the memo"
    );
}

/// (entries, sealed bytes) of the in-memory refresh cache.
fn memory_cache(r: &Refresher) -> (usize, usize) {
    r.0.cache.memory_usage()
}

fn fresh_of(bytes: usize, t: i64) -> Fresh {
    Fresh {
        access_token: Secret::new("a".repeat(bytes)),
        expires_at: t + 300,
        issued_at: t,
        refresh_token: Some(Secret::new("r".repeat(bytes))),
        id_token: None,
        scope: None,
    }
}

/// PingOne-sized tokens (3 KB each) refreshed faster than the grace period lets entries expire:
/// the in-memory cache stays within `[session] cache_max_bytes` (default 16 MiB), and entries
/// expire in order on every insert, not only once some count is reached.
#[tokio::test]
async fn in_memory_refresh_cache_is_bounded_by_bytes_and_expires_in_order() {
    let server = MockServer::start().await;
    let state = state_with(&server).await;
    let t = now();
    let fresh = fresh_of(3 * 1024, t);
    for i in 0..4000u32 {
        let rt = format!("rt-{i}");
        let id = shared_id(SharedLabel::RefreshCache, &rt);
        assert!(store(&state, id, &rt, Some(&fresh), t).await);
    }
    let (entries, bytes) = memory_cache(state.refresher());
    assert!(bytes <= 16 * 1024 * 1024, "{entries} entries hold {bytes} bytes");
    assert!(entries > 1000, "the bound evicts only what it must: {entries} left");
    // One grace period later, the next insert finds every older entry expired.
    let later = t + state.refresh_grace_secs as i64 + 1;
    let id = shared_id(SharedLabel::RefreshCache, "rt-late");
    assert!(store(&state, id, "rt-late", Some(&fresh_of(10, later)), later).await);
    assert_eq!(memory_cache(state.refresher()).0, 1, "expired entries were kept");
}

/// A cached answer whose access token has already expired (tokens shorter-lived than the grace
/// period) is still the newest link: the old cookie takes its refresh token and refreshes with
/// that one, never again with its own, rotated-away token.
#[tokio::test]
async fn a_cached_answer_whose_access_token_expired_is_followed_not_spent_again() {
    use wiremock::matchers::body_string_contains;
    let server = MockServer::start().await;
    let state = state_with(&server).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("refresh_token=rt-2"))
        .respond_with(granted("at-3", "rt-3"))
        .with_priority(1)
        .mount(&server)
        .await;
    let reused = ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": "invalid_grant"}));
    Mock::given(method("POST")).and(path("/token")).respond_with(reused).with_priority(2).mount(&server).await;
    let t = now();
    // Refresh 1 happened 40 s ago: rt-1 -> (at-2, rt-2), at-2 lived 30 s.
    let earlier = Fresh {
        access_token: Secret::new("at-2"),
        expires_at: t - 10,
        issued_at: t - 40,
        refresh_token: Some(Secret::new("rt-2")),
        id_token: None,
        scope: None,
    };
    let id = shared_id(SharedLabel::RefreshCache, "rt-1");
    assert!(store(&state, id, "rt-1", Some(&earlier), t - 40).await);
    let mut old = Arc::new(Session { access_issued_at: t - 100, ..expired_session("rt-1") });
    assert!(matches!(ensure_fresh(&state, &mut old, When::Expired).await, Ok(true)));
    assert_eq!(old.access_token.compact().expose(), "at-3");
    assert_eq!(old.refresh_token.as_ref().map(Secret::expose), Some("rt-3"));
}
