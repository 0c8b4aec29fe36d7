//! WebSocket routes (SPEC §6.3), without the HTTP handler (`routes::websocket`): the browser's
//! handshake checked, the upstream's handshake made on a connection of its own (HTTP/1.1, our
//! own `Sec-WebSocket-Key`, its `Sec-WebSocket-Accept` verified), and the relay of messages
//! both ways until either side closes or the session ends.
//!
//! Messages are relayed whole (tungstenite reassembles fragments), one at a time each way: a
//! side that does not read holds the other back (back-pressure), and a write that waits
//! [`SEND_TIMEOUT`] ends the socket. A message over [`MAX_MESSAGE`] closes both sides with
//! 1009. Compression extensions are not offered upstream.

use crate::session::Sessions;
use crate::session::live::{Live, Update};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The largest message relayed (SPEC §6.3).
pub const MAX_MESSAGE: usize = 1 << 20;
/// How long a write to either side may wait before the socket is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a closing handshake may take once begun.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The close code and reason the browser sees when its session ends (SPEC §6.3).
const SESSION_ENDED: u16 = 4401;

/// What a request's `Upgrade` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    None,
    WebSocket,
    /// Anything else (`h2c`…): refused on every route.
    Other,
}

pub fn upgrade_of(headers: &HeaderMap) -> Upgrade {
    let mut values = headers.get_all(header::UPGRADE).iter();
    match (values.next(), values.next()) {
        (None, _) => Upgrade::None,
        (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"websocket") => Upgrade::WebSocket,
        _ => Upgrade::Other,
    }
}

/// The browser's opening handshake (RFC 6455 §4.2.1), as much as the relay needs of it.
pub struct Handshake {
    key: HeaderValue,
    /// `Sec-WebSocket-Protocol` as offered: passed upstream, and the upstream must pick one.
    protocols: Vec<HeaderValue>,
}

/// Check the browser's handshake: `GET` over HTTP/1.1, `Connection: Upgrade`, version 13 and
/// a key of 16 bytes. `None` if any of it is wrong.
fn connection_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

pub fn handshake(method: &Method, version: Version, headers: &HeaderMap) -> Option<Handshake> {
    let connection_upgrade = connection_upgrade(headers);
    let version_13 = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    let key_ok =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key.as_bytes()).is_ok_and(|k| k.len() == 16);
    if *method != Method::GET || version != Version::HTTP_11 || !connection_upgrade || !version_13 || !key_ok {
        return None;
    }
    let protocols = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().cloned().collect();
    Some(Handshake { key: key.clone(), protocols })
}

impl Handshake {
    /// The `101` for the browser, with the subprotocol the upstream chose.
    pub fn accept(&self, protocol: Option<HeaderValue>) -> Response<()> {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(p) = protocol {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        r
    }

    fn offered(&self, chosen: &HeaderValue) -> bool {
        let chosen = chosen.to_str().unwrap_or_default().trim();
        self.protocols
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| !chosen.is_empty() && p.trim() == chosen)
    }
}

/// Why the upstream's handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    #[error("handshake: {0}")]
    Http(#[from] hyper::Error),
    #[error("the upstream answered {0}, not 101")]
    Status(StatusCode, Box<HeaderMap>),
    #[error("the upstream's 101 is not a valid WebSocket handshake ({0})")]
    Invalid(&'static str),
}

/// The upstream's connection: a new one per socket, HTTP/1.1 only.
pub type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// Open `uri` (http or https) and make the WebSocket handshake with `headers` (the proxied
/// request's, rewritten: the route's token, no BFF cookies). Returns the upgraded connection
/// and the subprotocol the upstream chose. Not bounded here: the caller's timeout is.
pub async fn connect(
    connector: &Connector,
    uri: Uri,
    mut headers: HeaderMap,
    browser: &Handshake,
) -> Result<(Upgraded, Option<HeaderValue>), ConnectError> {
    let io = tower::Service::call(&mut connector.clone(), uri.clone()).await.map_err(ConnectError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream WebSocket connection ended with an error");
        }
    });
    let key = generate_key();
    if let Some(authority) = uri.authority() {
        let host = match (uri.scheme_str(), authority.port_u16()) {
            (Some("http"), Some(80)) | (Some("https"), Some(443)) => authority.host().to_owned(),
            _ => authority.as_str().to_owned(),
        };
        if let Ok(v) = HeaderValue::from_str(&host) {
            headers.insert(header::HOST, v);
        }
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    // The upgrade's GET has no body, whatever the browser's request said.
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    if let Ok(k) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_KEY, k);
    }
    let mut req = Request::new(http_body_util::Empty::<bytes::Bytes>::new());
    *req.uri_mut() = uri.path_and_query().map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()));
    *req.headers_mut() = headers;
    let mut resp = sender.send_request(req).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(ConnectError::Status(resp.status(), Box::new(resp.headers().clone())));
    }
    let h = resp.headers();
    if upgrade_of(h) != Upgrade::WebSocket {
        return Err(ConnectError::Invalid("Upgrade"));
    }
    if !connection_upgrade(h) {
        return Err(ConnectError::Invalid("Connection"));
    }
    if h.get(header::SEC_WEBSOCKET_ACCEPT).is_none_or(|a| a.as_bytes() != derive_accept_key(key.as_bytes()).as_bytes())
    {
        return Err(ConnectError::Invalid("Sec-WebSocket-Accept"));
    }
    if h.contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
        return Err(ConnectError::Invalid("an extension that was not offered"));
    }
    let protocol = h.get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
    if protocol.as_ref().is_some_and(|p| !browser.offered(p)) {
        return Err(ConnectError::Invalid("a subprotocol that was not offered"));
    }
    let upgraded = hyper::upgrade::on(&mut resp).await?;
    Ok((upgraded, protocol))
}

fn config() -> WebSocketConfig {
    // tungstenite's buffers are 128 KiB each by default: four per socket. Small ones suffice
    // for a relay that writes each message as soon as it has it.
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_MESSAGE + 64 * 1024)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// How one direction of the relay ended.
enum Ended {
    /// That side sent a close frame.
    Closed(Option<CloseFrame>),
    /// That side sent a message over [`MAX_MESSAGE`].
    TooBig,
    /// That side's connection failed, or a write to the other side timed out.
    Broken,
}

/// Relay `from` → `to` until `from` closes or fails.
async fn pump(
    from: &mut futures_util::stream::SplitStream<Socket>,
    to: &mut futures_util::stream::SplitSink<Socket, Message>,
) -> Ended {
    while let Some(msg) = from.next().await {
        let msg = match msg {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => m,
            // tungstenite answers pings itself; pongs and raw frames are not relayed.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(Message::Close(frame)) => return Ended::Closed(frame),
            Err(WsError::Capacity(_)) => return Ended::TooBig,
            Err(_) => return Ended::Broken,
        };
        match tokio::time::timeout(SEND_TIMEOUT, to.send(msg)).await {
            Ok(Ok(())) => {}
            _ => return Ended::Broken,
        }
    }
    Ended::Broken
}

/// Wait for the session to end (or the process to stop): the only updates a socket acts on.
async fn session_over(live: &mut Live, sessions: &Sessions) -> Update {
    loop {
        match live.next(sessions).await {
            u @ (Update::Ended(_) | Update::Close) => return u,
            Update::Refreshed(_) | Update::Expiring(_) => {}
        }
    }
}

fn close_frame(code: u16, reason: &'static str) -> Option<CloseFrame> {
    Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })
}

/// A close frame received on one side, as it may be sent on the other (codes that must not
/// be sent, like 1005 or 1006, become no code).
fn passed_on(frame: Option<CloseFrame>) -> Option<CloseFrame> {
    frame.filter(|f| f.code.is_allowed() && !matches!(u16::from(f.code), 1005 | 1006 | 1015))
}

/// Send a close frame (best effort, bounded) and end the connection.
async fn close(sink: &mut futures_util::stream::SplitSink<Socket, Message>, frame: Option<CloseFrame>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = sink.send(Message::Close(frame)).await;
        let _ = sink.close().await;
    })
    .await;
}

/// Relay between the browser (once its `101` has been sent) and the upstream until either side
/// closes, the session ends (4401 to the browser, 1001 upstream) or the process stops (1001 to
/// both). `hold` is kept until the end: the connection's place under `max_connections`.
pub async fn relay(
    browser: OnUpgrade,
    upstream: Upgraded,
    mut live: Live,
    sessions: Arc<Sessions>,
    hold: impl Send + 'static,
) {
    let browser = match browser.await {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(error = %e, "the browser's WebSocket upgrade did not complete");
            return;
        }
    };
    let b = WebSocketStream::from_raw_socket(TokioIo::new(browser), Role::Server, Some(config())).await;
    let u = WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, Some(config())).await;
    let (mut b_tx, mut b_rx) = b.split();
    let (mut u_tx, mut u_rx) = u.split();
    enum Why {
        Browser(Ended),
        Upstream(Ended),
        Session(Update),
    }
    let why = tokio::select! {
        e = pump(&mut b_rx, &mut u_tx) => Why::Browser(e),
        e = pump(&mut u_rx, &mut b_tx) => Why::Upstream(e),
        u = session_over(&mut live, &sessions) => Why::Session(u),
    };
    let (to_browser, to_upstream) = match why {
        Why::Session(Update::Ended(reason)) => {
            tracing::info!(reason = reason.as_str(), "session ended: WebSocket closed");
            (close_frame(SESSION_ENDED, "session ended"), close_frame(1001, "session ended"))
        }
        Why::Session(_) => (close_frame(1001, "going away"), close_frame(1001, "going away")),
        Why::Browser(Ended::Closed(f)) => (None, passed_on(f)),
        // 4401 is the BFF's own word for "your session ended" (SPEC §6.3): an upstream's close
        // with that code reaches the browser without it.
        Why::Upstream(Ended::Closed(f)) => (passed_on(f).filter(|f| u16::from(f.code) != SESSION_ENDED), None),
        Why::Browser(Ended::TooBig) | Why::Upstream(Ended::TooBig) => {
            tracing::info!("WebSocket message over 1 MiB: closed");
            (close_frame(1009, "message too big"), close_frame(1009, "message too big"))
        }
        Why::Browser(Ended::Broken) => (None, close_frame(1001, "going away")),
        Why::Upstream(Ended::Broken) => (close_frame(1011, "upstream failed"), None),
    };
    // A side that closed first gets its close answered (tungstenite queues the reply; `close`
    // flushes it); the other side gets the frame chosen above.
    tokio::join!(close(&mut b_tx, to_browser), close(&mut u_tx, to_upstream));
    drop(hold);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn the_browser_handshake_is_checked_and_answered() {
        let good = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "chat, superchat"),
        ]);
        let h = handshake(&Method::GET, Version::HTTP_11, &good).unwrap_or_else(|| panic!("refused"));
        // RFC 6455 §1.3's example.
        let r = h.accept(Some(HeaderValue::from_static("chat")));
        assert_eq!(r.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(h.offered(&HeaderValue::from_static("superchat")) && !h.offered(&HeaderValue::from_static("x")));
        assert!(handshake(&Method::POST, Version::HTTP_11, &good).is_none());
        assert!(handshake(&Method::GET, Version::HTTP_2, &good).is_none());
        for drop in ["connection", "sec-websocket-version", "sec-websocket-key"] {
            let mut bad = good.clone();
            bad.remove(drop);
            assert!(handshake(&Method::GET, Version::HTTP_11, &bad).is_none(), "without {drop}");
        }
        let mut short = good.clone();
        short.insert("sec-websocket-key", HeaderValue::from_static("c2hvcnQ="));
        assert!(handshake(&Method::GET, Version::HTTP_11, &short).is_none());
        assert_eq!(upgrade_of(&good), Upgrade::WebSocket);
        assert_eq!(upgrade_of(&headers(&[("upgrade", "h2c")])), Upgrade::Other);
        assert_eq!(upgrade_of(&HeaderMap::new()), Upgrade::None);
    }
}
