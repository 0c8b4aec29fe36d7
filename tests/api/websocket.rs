//! WebSocket routes (SPEC §6.3) through the real app: a real upstream (tokio-tungstenite's
//! server) that echoes and records what reached it, a real client. The token on the upstream
//! upgrade, frames both ways, 4401 when the session ends (same instance; another instance
//! sharing Redis), the Origin rule, 401, the refusals, 1009 over 1 MiB, and an upstream that
//! does not answer 101.

use crate::events::Stream;
use crate::helpers::*;
use crate::stores::{Kind, TestStore, stack_store, store_vars};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What the upstream saw: each upgrade's headers, and each close frame it received.
#[derive(Default)]
struct Seen {
    upgrades: Vec<http::HeaderMap>,
    closes: Vec<Option<u16>>,
}

/// A WebSocket upstream that echoes every message back; `/plain` answers 200 instead of 101.
async fn ws_upstream() -> (String, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut closing_4401 = false;
                #[allow(clippy::result_large_err)] // tungstenite's callback type
                let callback = |req: &http::Request<()>, resp: http::Response<()>| {
                    record.lock().unwrap_or_else(|e| e.into_inner()).upgrades.push(req.headers().clone());
                    closing_4401 = req.uri().path().ends_with("/close-4401");
                    if req.uri().path() == "/ws/plain" || req.uri().path() == "/open/ws/plain" {
                        let mut r = http::Response::new(Some("not a websocket".to_owned()));
                        *r.status_mut() = http::StatusCode::OK;
                        return Err(r);
                    }
                    Ok(resp)
                };
                let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .max_message_size(Some(8 << 20))
                    .max_frame_size(Some(8 << 20));
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
                else {
                    return;
                };
                if closing_4401 {
                    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                        code: 4401.into(),
                        reason: "token expired".into(),
                    };
                    let _ = ws.send(Message::Close(Some(frame))).await;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Close(f) => {
                            record.lock().unwrap_or_else(|e| e.into_inner()).closes.push(f.map(|f| u16::from(f.code)));
                            break;
                        }
                        m @ (Message::Text(_) | Message::Binary(_)) => {
                            let Ok(()) = ws.send(m).await else { break };
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

pub(crate) fn ws_route(upstream: &str, auth: &str) -> String {
    format!("[[routes]]\nprefix = \"/ws\"\nupstream = \"{upstream}\"\nauth = \"{auth}\"\nwebsocket = true\n")
}

pub(crate) type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Open `path` on `bff` as a browser page of `origin` would, with `jar`'s cookies.
pub(crate) async fn connect(
    bff: &Bff,
    path: &str,
    jar: &BTreeMap<String, String>,
    origin: Option<&str>,
) -> Result<Client, WsError> {
    let mut req = format!("ws://{}{path}", bff.addr).into_client_request().unwrap_or_else(|e| panic!("{e}"));
    let h = req.headers_mut();
    if let Some(o) = origin {
        h.insert("origin", o.parse().unwrap_or_else(|e| panic!("{e}")));
    }
    let cookie: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !cookie.is_empty() {
        h.insert("cookie", cookie.join("; ").parse().unwrap_or_else(|e| panic!("{e}")));
    }
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

/// The refusal's status and error code.
async fn refused(result: Result<Client, WsError>) -> (u16, String) {
    match result {
        Err(WsError::Http(resp)) => {
            let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            let code = serde_json::from_str::<serde_json::Value>(&body).ok().map(|v| v["error"].to_string());
            (resp.status().as_u16(), code.unwrap_or(body))
        }
        Err(e) => panic!("not an HTTP refusal: {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

/// The close code the client gets next (other messages skipped), within `limit`.
async fn close_code(ws: &mut Client, limit: Duration) -> Option<(u16, String)> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| (u16::from(f.code), f.reason.to_string())),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

fn session_jar(b: &Browser) -> BTreeMap<String, String> {
    b.jar().into_iter().filter(|(k, _)| k.contains("bff") && !k.contains("tx")).collect()
}

#[tokio::test]
async fn frames_are_relayed_with_the_token_and_logout_in_another_tab_closes_with_4401() {
    let (upstream, seen) = ws_upstream().await;
    let (_idp, bff) = stack_with(json!({}), &[], &ws_route(&upstream, "required")).await;
    let origin = bff.url("");
    let mut b = Browser::new(&bff);
    b.login(&bff, "ada", "/").await;
    let jar = session_jar(&b);
    let mut ws = connect(&bff, "/ws/chat?room=1", &jar, Some(&origin)).await.unwrap_or_else(|e| panic!("{e}"));
    {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let h = &seen.upgrades[0];
        let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(auth.starts_with("Bearer ") && auth.len() > 20, "{auth:?}");
        assert!(h.get("cookie").is_none(), "the BFF's cookies never reach the upstream");
        assert!(h.get("sec-websocket-extensions").is_none());
    }
    assert_eq!(bff.state.sessions.events().open(), 1);
    ws.send(Message::text("hello")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ws.next().await.and_then(Result::ok), Some(Message::text("hello")));
    let blob: Vec<u8> = (0..=255).cycle().take(300_000).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ws.next().await.and_then(Result::ok), Some(Message::binary(blob)));

    let started = Instant::now();
    assert_eq!(b.fetch(Method::POST, &bff.url("/logout"), None).await.status, 200);
    let code = close_code(&mut ws, Duration::from_secs(1)).await;
    assert_eq!(code, Some((4401, "session ended".to_owned())), "after {:?}", started.elapsed());
    for _ in 0..50 {
        if !seen.lock().unwrap_or_else(|e| e.into_inner()).closes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.lock().unwrap_or_else(|e| e.into_inner()).closes, vec![Some(1001)], "the upstream side gets 1001");
    for _ in 0..50 {
        if bff.state.sessions.events().open() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bff.state.sessions.events().open(), 0, "the socket's place is let go");
}

#[tokio::test]
async fn upgrades_are_refused_by_origin_session_route_and_upstream_and_big_messages_close_with_1009() {
    let (upstream, seen) = ws_upstream().await;
    let routes = format!(
        "{}[[routes]]\nprefix = \"/plain-api\"\nupstream = \"{upstream}\"\n[[routes]]\nprefix = \"/open\"\nupstream = \"{upstream}\"\nauth = \"none\"\nwebsocket = true\nstrip_prefix = true\n",
        ws_route(&upstream, "required")
    );
    let (_idp, bff) = stack_with(json!({}), &[], &routes).await;
    let origin = bff.url("");
    let anonymous = BTreeMap::new();
    assert_eq!(
        refused(connect(&bff, "/ws/x", &anonymous, Some(&origin)).await).await,
        (401, "\"unauthenticated\"".into())
    );
    let mut b = Browser::new(&bff);
    b.login(&bff, "ada", "/").await;
    let jar = session_jar(&b);
    for bad_origin in [Some("http://evil.example"), Some("null"), None] {
        let r = refused(connect(&bff, "/ws/x", &jar, bad_origin).await).await;
        assert_eq!(r, (403, "\"csrf\"".into()), "Origin {bad_origin:?}");
    }
    let r = refused(connect(&bff, "/plain-api/x", &jar, Some(&origin)).await).await;
    assert_eq!(r, (400, "\"websocket_unsupported\"".into()));
    // An upstream that does not answer 101: nothing relayed.
    let r = refused(connect(&bff, "/ws/plain", &jar, Some(&origin)).await).await;
    assert_eq!(r, (502, "\"upstream_unavailable\"".into()));
    // h2c (or anything but websocket) is refused on every route.
    let h2c = reqwest::Client::new()
        .get(bff.url("/plain-api/x"))
        .header("connection", "upgrade")
        .header("upgrade", "h2c")
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h2c.status(), 400);
    assert_eq!(h2c.json::<serde_json::Value>().await.ok().map(|v| v["error"].clone()), Some(json!("invalid_request")));
    // auth = "none": no session needed, no token sent; still counted.
    let mut open = connect(&bff, "/open/ws/x", &anonymous, Some(&origin)).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrades
            .last()
            .is_some_and(|h| h.get("authorization").is_none())
    );
    // 4401 is the BFF's word: an upstream's 4401 reaches the browser without its code.
    let mut by_upstream =
        connect(&bff, "/open/ws/close-4401", &anonymous, Some(&origin)).await.unwrap_or_else(|e| panic!("{e}"));
    let got = tokio::time::timeout(Duration::from_secs(5), by_upstream.next()).await;
    assert!(matches!(got, Ok(Some(Ok(Message::Close(None))))), "{got:?}");
    // Over 1 MiB: both sides closed with 1009.
    open.send(Message::binary(vec![7u8; (1 << 20) + 1])).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(close_code(&mut open, Duration::from_secs(5)).await.map(|c| c.0), Some(1009));
    for _ in 0..50 {
        if seen.lock().unwrap_or_else(|e| e.into_inner()).closes.contains(&Some(1009)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.lock().unwrap_or_else(|e| e.into_inner()).closes.contains(&Some(1009)), "the upstream got 1009");
}

#[tokio::test]
async fn logout_on_another_instance_sharing_redis_closes_the_socket_with_4401() {
    let Some(store) = TestStore::new(Kind::Redis, "ws").await else { return };
    let (upstream, _seen) = ws_upstream().await;
    let url = store.url();
    let vars = store_vars("redis", &url);
    let routes = ws_route(&upstream, "required");
    let (idp, a) = stack_store(json!({}), &vars, &routes, false).await;
    let listener = reserve().await;
    let port_b = listener.local_addr().map(|x| x.port()).unwrap_or_default();
    let b_inst = spawn_bff(listener, settings_with(port_b, &idp.issuer, &vars, &routes)).await;
    let mut browser = Browser::new(&a);
    browser.login(&a, "ada", "/").await;
    let jar = session_jar(&browser);
    let mut ws = connect(&b_inst, "/ws/x", &jar, Some(&b_inst.url(""))).await.unwrap_or_else(|e| panic!("{e}"));
    ws.send(Message::text("ping")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ws.next().await.and_then(Result::ok), Some(Message::text("ping")));
    let started = Instant::now();
    assert_eq!(browser.fetch(Method::POST, &a.url("/logout"), None).await.status, 200);
    assert_eq!(close_code(&mut ws, Duration::from_secs(2)).await.map(|c| c.0), Some(4401));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    store.drop_all().await;
}

#[tokio::test]
async fn sockets_and_streams_share_max_event_streams() {
    let (upstream, _seen) = ws_upstream().await;
    let vars = [("BFF_SERVER__MAX_EVENT_STREAMS", "2")];
    let (_idp, bff) = stack_with(json!({}), &vars, &ws_route(&upstream, "required")).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "ada", "/").await;
    let jar = session_jar(&b);
    let _stream = Stream::open(&bff, &jar).await;
    let _ws = connect(&bff, "/ws/x", &jar, Some(&bff.url(""))).await.unwrap_or_else(|e| panic!("{e}"));
    let r = refused(connect(&bff, "/ws/y", &jar, Some(&bff.url(""))).await).await;
    assert_eq!(r, (503, "\"event_streams_exhausted\"".into()));
}

#[tokio::test]
async fn a_session_holds_at_most_8_streams_and_sockets_together() {
    let (upstream, _seen) = ws_upstream().await;
    let (_idp, bff) = stack_with(json!({}), &[], &ws_route(&upstream, "required")).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "ada", "/").await;
    let jar = session_jar(&b);
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(Stream::open(&bff, &jar).await);
    }
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(connect(&bff, "/ws/x", &jar, Some(&bff.url(""))).await.unwrap_or_else(|e| panic!("{e}")));
    }
    let r = refused(connect(&bff, "/ws/y", &jar, Some(&bff.url(""))).await).await;
    assert_eq!(r, (503, "\"event_streams_exhausted\"".into()));
    let r = crate::events::open_with(&bff, &jar, &[("x-csrf", "1")]).await;
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn at_sigterm_sockets_stay_for_the_drain_then_close_with_1001() {
    let (upstream, seen) = ws_upstream().await;
    let vars = [("BFF_SERVER__SHUTDOWN_TIMEOUT_SECS", "3")];
    let (_idp, bff) = stack_with(json!({}), &vars, &ws_route(&upstream, "required")).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "ada", "/").await;
    let mut ws = connect(&bff, "/ws/x", &session_jar(&b), Some(&bff.url(""))).await.unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let stopping = tokio::spawn(bff.stop());
    // Still relaying during the drain.
    ws.send(Message::text("still here")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ws.next().await.and_then(Result::ok), Some(Message::text("still here")));
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.map(|c| c.0), Some(1001));
    let closed_after = started.elapsed();
    assert!(closed_after >= Duration::from_millis(1500), "closed before the drain ran out: {closed_after:?}");
    assert!(tokio::time::timeout(Duration::from_secs(5), stopping).await.is_ok(), "the server did not stop");
    for _ in 0..50 {
        if seen.lock().unwrap_or_else(|e| e.into_inner()).closes.contains(&Some(1001)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.lock().unwrap_or_else(|e| e.into_inner()).closes, vec![Some(1001)], "the upstream side gets 1001");
}
