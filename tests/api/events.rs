//! `GET /session/events` (SPEC §5): the first event, logout in another tab, refreshes and
//! back-channel logouts on other instances sharing Redis or PostgreSQL, expiry warnings and
//! idle expiry with a server-side store, the caps, and SIGTERM. Every wait is bounded.

use crate::helpers::*;
use crate::stores::{Kind, TestStore, logout_at_idp, stack_store, store_vars};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// An open event stream, read as the SPA's `bff.js` reads it.
pub(crate) struct Stream {
    resp: reqwest::Response,
    buf: String,
}

/// A request to `/session/events` with `jar`'s cookies and `headers`.
pub(crate) async fn open_with(
    bff: &Bff,
    jar: &BTreeMap<String, String>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let cookie: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut req = reqwest::Client::new().get(bff.url("/session/events")).header("cookie", cookie.join("; "));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap_or_else(|e| panic!("/session/events: {e}"))
}

impl Stream {
    pub(crate) async fn open(bff: &Bff, jar: &BTreeMap<String, String>) -> Stream {
        let resp = open_with(bff, jar, &[("x-csrf", "1")]).await;
        assert_eq!(resp.status(), 200, "/session/events answered {}", resp.status());
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        Stream { resp, buf: String::new() }
    }

    /// The next event (type and data) within `limit`, comments skipped; `None` when the stream
    /// ended or nothing came in time.
    pub(crate) async fn next(&mut self, limit: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut kind, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(k) = line.strip_prefix("event: ") {
                        kind = k.to_owned();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                if kind.is_empty() {
                    continue; // a comment (keep-alive)
                }
                let value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data {data:?}: {e}"));
                return Some((kind, value));
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// The stream has ended (within `limit`), nothing more sent.
    pub(crate) async fn ended(&mut self, limit: Duration) -> bool {
        matches!(tokio::time::timeout(limit, self.resp.chunk()).await, Ok(Ok(None) | Err(_)))
    }
}

fn session_cookie_only(b: &Browser) -> BTreeMap<String, String> {
    b.jar().into_iter().filter(|(k, _)| k.contains("bff") && !k.contains("tx")).collect()
}

#[tokio::test]
async fn a_stream_starts_with_the_session_and_ends_when_another_tab_logs_out() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "ada", "/").await;
    let jar = session_cookie_only(&b);
    let mut s = Stream::open(&bff, &jar).await;
    let (kind, data) = s.next(Duration::from_secs(2)).await.unwrap_or_else(|| panic!("no first event"));
    assert_eq!(kind, "session");
    assert_eq!((data["authenticated"].clone(), data["sub"].clone()), (json!(true), json!("ada")), "{data}");
    assert!(data["session_expires_at"].as_i64().is_some() && data.get("access_token").is_none(), "{data}");

    // Another tab (the same cookie) logs out: this stream hears why, then ends.
    let mut other = b.clone();
    let started = Instant::now();
    assert_eq!(other.fetch(Method::POST, &bff.url("/logout"), None).await.status, 200);
    let (kind, data) = s.next(Duration::from_secs(1)).await.unwrap_or_else(|| panic!("no ended event"));
    assert_eq!((kind.as_str(), data), ("ended", json!({ "reason": "logout" })));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(s.ended(Duration::from_secs(2)).await, "the stream closes after `ended`");
    assert_eq!(bff.state.sessions.events().open(), 0, "the listener is gone");
}

#[tokio::test]
async fn anonymous_streams_are_401_without_x_csrf_403_and_the_caps_503() {
    let (_idp, bff) = stack(json!({}), &[("BFF_SERVER__MAX_EVENT_STREAMS", "10")]).await;
    let r = open_with(&bff, &BTreeMap::new(), &[("x-csrf", "1")]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.ok(), Some(json!({ "authenticated": false })));
    let mut b = Browser::new(&bff);
    b.login(&bff, "ada", "/").await;
    let jar = session_cookie_only(&b);
    let r = open_with(&bff, &jar, &[]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.ok().map(|v| v["error"].clone()), Some(json!("csrf")));

    // 8 streams per session; the 9th is refused, another session still gets one.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(Stream::open(&bff, &jar).await);
    }
    let r = open_with(&bff, &jar, &[("x-csrf", "1")]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.ok().map(|v| v["error"].clone()), Some(json!("event_streams_exhausted")));
    let mut other = Browser::new(&bff);
    other.login(&bff, "bob", "/").await;
    let other_jar = session_cookie_only(&other);
    held.push(Stream::open(&bff, &other_jar).await);
    held.push(Stream::open(&bff, &other_jar).await);
    // max_event_streams = 10 for the process.
    let r = open_with(&bff, &other_jar, &[("x-csrf", "1")]).await;
    assert_eq!(r.status(), 503, "the process cap");
    // A client that goes away frees its place.
    held.truncate(5);
    let mut reopened = false;
    for _ in 0..50 {
        let r = open_with(&bff, &other_jar, &[("x-csrf", "1")]).await;
        if r.status() == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened, "closed streams were not let go");
}

/// Two instances sharing `kind`'s store (server-side sessions): a refresh on B is `refreshed` on
/// A's stream within 1 s; a back-channel logout the IdP sends to A ends the streams on both.
pub(crate) async fn two_instances(kind: Kind) {
    let Some(store) = TestStore::new(kind, "events").await else { return };
    let url = store.url();
    let vars = store.vars(store.store_name(), &url);
    let (idp, a) = stack_store(json!({ "accessTokenTtl": 3 }), &vars, "", true).await;
    let listener = reserve().await;
    let port_b = listener.local_addr().map(|x| x.port()).unwrap_or_default();
    let b_inst = spawn_bff(listener, settings_with(port_b, &idp.issuer, &vars, "")).await;
    let mut browser = Browser::new(&a);
    browser.login(&a, "grace", "/").await;
    let jar = session_cookie_only(&browser);
    let mut on_a = Stream::open(&a, &jar).await;
    let first = on_a.next(Duration::from_secs(2)).await.unwrap_or_else(|| panic!("no first event"));
    let old_expiry = first.1["expires_at"].as_i64().unwrap_or_default();
    let mut on_b = Stream::open(&b_inst, &jar).await;
    assert_eq!(on_b.next(Duration::from_secs(2)).await.map(|e| e.0), Some("session".to_owned()));

    // The access token expires; /session on B refreshes it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut at_b = Browser::new(&b_inst);
    at_b.set_jar(jar.clone());
    let r = at_b.session(&b_inst).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let refreshed_at = Instant::now();
    let new_expiry = r.json()["expires_at"].as_i64().unwrap_or_default();
    assert!(new_expiry > old_expiry, "{old_expiry} → {new_expiry}");
    let (kind_a, data) = on_a.next(Duration::from_secs(1)).await.unwrap_or_else(|| panic!("A heard no refresh"));
    assert_eq!((kind_a.as_str(), data), ("refreshed", json!({ "expires_at": new_expiry })));
    assert!(refreshed_at.elapsed() < Duration::from_secs(1), "{:?}", refreshed_at.elapsed());
    assert_eq!(on_b.next(Duration::from_secs(1)).await.map(|e| e.0), Some("refreshed".to_owned()));

    // The IdP's back-channel call reaches A only; B's stream ends too.
    logout_at_idp(&mut browser, &idp).await;
    for (name, s) in [("A", &mut on_a), ("B", &mut on_b)] {
        let e = s.next(Duration::from_secs(5)).await;
        assert_eq!(e, Some(("ended".to_owned(), json!({ "reason": "backchannel" }))), "instance {name}");
        assert!(s.ended(Duration::from_secs(2)).await, "instance {name}'s stream closes");
    }
    store.drop_all().await;
}

#[tokio::test]
async fn refresh_and_backchannel_logout_reach_every_instance_sharing_redis() {
    two_instances(Kind::Redis).await;
}

#[tokio::test]
async fn refresh_and_backchannel_logout_reach_every_instance_sharing_postgres() {
    two_instances(Kind::Postgres).await;
}

/// Cookie mode with Redis: the fan-out carries a logout in another tab to the other instance's
/// stream (the cookie is the same on both).
#[tokio::test]
async fn cookie_mode_instances_sharing_redis_hear_each_others_logouts() {
    let Some(store) = TestStore::new(Kind::Redis, "events-cookie").await else { return };
    let url = store.url();
    let vars = store_vars("cookie", &url);
    let (idp, a) = stack_store(json!({}), &vars, "", false).await;
    let listener = reserve().await;
    let port_b = listener.local_addr().map(|x| x.port()).unwrap_or_default();
    let b_inst = spawn_bff(listener, settings_with(port_b, &idp.issuer, &vars, "")).await;
    let mut browser = Browser::new(&a);
    browser.login(&a, "hedy", "/").await;
    let jar = session_cookie_only(&browser);
    let mut on_b = Stream::open(&b_inst, &jar).await;
    assert_eq!(on_b.next(Duration::from_secs(2)).await.map(|e| e.0), Some("session".to_owned()));
    let started = Instant::now();
    assert_eq!(browser.fetch(Method::POST, &a.url("/logout"), None).await.status, 200);
    let e = on_b.next(Duration::from_secs(2)).await;
    assert_eq!(e, Some(("ended".to_owned(), json!({ "reason": "logout" }))));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    store.drop_all().await;
}

/// SQLite server-side sessions, 60 s idle: `expiring` comes `events_warning_secs` before the
/// idle end, the open stream does not keep the session alive, and it ends `expired`.
#[tokio::test]
async fn expiring_then_expired_and_a_stream_does_not_slide_the_idle_expiry() {
    let Some(store) = TestStore::new(Kind::Sqlite, "events-idle").await else { return };
    let url = store.url();
    let mut vars = store_vars("sqlite", &url);
    vars.extend([
        ("BFF_SESSION__IDLE_TIMEOUT_SECS", "60"),
        ("BFF_SESSION__ABSOLUTE_TIMEOUT_SECS", "600"),
        ("BFF_SESSION__EVENTS_WARNING_SECS", "56"),
    ]);
    let (_idp, bff) = stack_store(json!({}), &vars, "", false).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "ida", "/").await;
    let jar = session_cookie_only(&b);
    let mut s = Stream::open(&bff, &jar).await;
    let (_, first) = s.next(Duration::from_secs(2)).await.unwrap_or_else(|| panic!("no first event"));
    let ends = first["session_expires_at"].as_i64().unwrap_or_default();
    let (kind, data) = s.next(Duration::from_secs(10)).await.unwrap_or_else(|| panic!("no expiring event"));
    assert_eq!((kind.as_str(), data), ("expiring", json!({ "session_expires_at": ends })));
    let now = oidc_bff::clock::now();
    assert!((ends - now - 56).abs() <= 2, "warned {}s before the end", ends - now);
    let (kind, data) = s.next(Duration::from_secs(70)).await.unwrap_or_else(|| panic!("no ended event"));
    assert_eq!((kind.as_str(), data), ("ended", json!({ "reason": "expired" })));
    assert!(oidc_bff::clock::now() >= ends, "ended early");
    assert_eq!(b.session(&bff).await.status, 401, "the open stream did not keep the session alive");
    store.drop_all().await;
}

#[tokio::test]
async fn streams_end_at_once_when_the_server_stops() {
    let (_idp, bff) = stack(json!({}), &[("BFF_SERVER__SHUTDOWN_TIMEOUT_SECS", "20")]).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "ada", "/").await;
    let mut s = Stream::open(&bff, &session_cookie_only(&b)).await;
    assert!(s.next(Duration::from_secs(2)).await.is_some());
    let started = Instant::now();
    let stopping = tokio::spawn(bff.stop());
    assert!(s.ended(Duration::from_secs(5)).await, "the stream did not end");
    let _ = tokio::time::timeout(Duration::from_secs(10), stopping).await;
    assert!(started.elapsed() < Duration::from_secs(10), "the drain waited for the stream: {:?}", started.elapsed());
}
