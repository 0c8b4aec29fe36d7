//! Accepting and serving connections under SPEC §7's limits, for the public listener and the
//! admin listener alike: our own accept loop on hyper's HTTP/1.1 and HTTP/2 connections
//! (axum::serve exposes no header-size, header-read-timeout or connection-cap settings, and
//! hyper-util's auto-detecting builder no strict head size), an idle limit and a send timeout
//! for every connection, and a graceful drain.
//!
//! - The protocol: the first bytes are read (within `header_read_timeout`) until they differ
//!   from the HTTP/2 preface or all of it has arrived, then replayed to the protocol's parser
//!   (`conn::ConnIo`). HTTP/2 only where offered; the admin listener closes such a connection.
//! - Request heads: at most `max_header_bytes` (request line and fields, however the bytes
//!   arrive) and `max_headers` fields (431 beyond), received within `header_read_timeout`
//!   (slow-loris); HTTP/2 header lists at most `max_header_bytes`.
//! - Connections: at most `max_connections` at once; one more is closed as soon as it is
//!   accepted (the admin listener has its own cap of [`ADMIN_MAX_CONNECTIONS`]).
//! - Idle connections are closed after `header_read_timeout` without a request in progress —
//!   HTTP/1.1 keep-alive and HTTP/2 alike: an HTTP/2 client that answers every ping would
//!   otherwise hold its slot forever. A request is in progress from its head until its response
//!   body has been produced. The shutdown is graceful (HTTP/1.1 stops keep-alive, HTTP/2 sends
//!   GOAWAY); a connection still not finished `CLOSING_GRACE` later (data the client will not
//!   take, an HTTP/2 stream it never opens its flow-control window for) is dropped.
//! - A write to the client that has waited 6 × `header_read_timeout` (60 s by default: the
//!   client stopped reading) drops the connection.
//! - On stop: no new connections; every open one is shut down gracefully; the drain waits at
//!   most `drain` for them to finish.
//!
//! Known limit: an HTTP/2 client can keep a stream's flow-control window at zero while the
//! response body is still being produced (a long download); the request then stays in
//! progress and the connection open until the upstream's own timeouts end the body.

use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

mod conn;
use conn::{Activity, ConnIo, InProgress, Tracked, Watch};

/// A connection's place under `max_connections`, handed (in the request's extensions) to a
/// request that asks to upgrade: an upgraded socket outlives the HTTP connection that carried
/// it, and must still count, and still be waited for by the drain, until it closes.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

/// Connections the admin listener (`/metrics`) serves at once (SPEC §7).
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// What one listener accepts.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    /// Offer HTTP/2 (h2c, prior knowledge, behind a load balancer) beside HTTP/1.1.
    pub http2: bool,
}

/// HTTP/1.1 as hyper serves it, with a strict head size (`max_header_size`: the whole request
/// line and fields, 431 beyond, however the bytes arrive).
fn http1(limits: &Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192) + 8192)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    b
}

/// HTTP/2 (h2c behind a load balancer): ping idle connections and drop those that do not
/// answer within the header timeout.
fn http2(limits: &Limits) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(limits.header_read_timeout);
    b
}

/// How long a write to the client may wait (the client not reading) before the connection is
/// dropped, in `header_read_timeout`s — nginx's `send_timeout`: 60 s by default.
const SEND_TIMEOUT_FACTOR: u32 = 6;
/// How long an idle connection may take to finish once told to close (what is still buffered
/// for a slow client) before it is dropped.
const CLOSING_GRACE: Duration = Duration::from_secs(10);

/// Run one connection to its end: shut it down gracefully once it has been idle for `idle`
/// (and drop it if it has not finished `CLOSING_GRACE` later), or when the listener stops; drop
/// it at once when a write to the client has waited `SEND_TIMEOUT_FACTOR` × `idle`.
async fn drive<C>(
    mut conn: std::pin::Pin<&mut C>,
    shutdown: fn(std::pin::Pin<&mut C>),
    activity: &Activity,
    idle: Duration,
    stopping: &mut watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut closing = false;
    let mut give_up: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(86_400);
    loop {
        tokio::select! {
            // The connection first, and no random branch order: this runs at every wake-up.
            biased;
            r = conn.as_mut() => return r,
            w = activity.watch(idle, idle * SEND_TIMEOUT_FACTOR), if !closing => match w {
                Watch::Idle => {
                    closing = true;
                    give_up = Some(Instant::now() + idle.max(CLOSING_GRACE));
                    shutdown(conn.as_mut());
                }
                Watch::Stalled => {
                    tracing::debug!("the client stopped reading; connection dropped");
                    return Ok(());
                }
            },
            _ = stopping.changed(), if !closing => {
                closing = true;
                shutdown(conn.as_mut());
            }
            () = tokio::time::sleep_until(give_up.unwrap_or_else(far)), if give_up.is_some() => {
                tracing::debug!("an idle connection did not finish closing in time; dropped");
                return Ok(());
            }
        }
    }
}

/// Serve `handle` (called with each request and the peer's address) on `listener` until `stop`
/// resolves, then drain open connections for at most `drain`.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: Limits,
    handle: H,
    stop: impl Future<Output = ()>,
    drain: Duration,
) where
    H: Fn(http::Request<Body>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let builders = Arc::new((http1(&limits), http2(&limits)));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping_tx, stopping) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned().map(|p| ConnectionSlot(Arc::new(p))) else {
                    tracing::warn!(limit = limits.max_connections, "connection cap reached; closing a new connection");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                // A peer that vanished without closing (a laptop lid, a NAT that forgot it) is
                // found out within about a minute and a half: what ends an idle upgraded socket.
                let keepalive = socket2::TcpKeepalive::new()
                    .with_time(Duration::from_secs(60))
                    .with_interval(Duration::from_secs(10))
                    .with_retries(3);
                let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                let activity = Activity::new();
                let (handle, seen, slot) = (handle.clone(), activity.clone(), permit.clone());
                let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                    let in_progress = InProgress::begin(&seen);
                    if req.headers().contains_key(http::header::UPGRADE) {
                        req.extensions_mut().insert(slot.clone());
                    }
                    let response = handle(req.map(Body::new), peer);
                    async move {
                        // In progress until the body has been produced (or dropped).
                        let response = response.await.map(|b| Tracked::new(b, in_progress));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let (builders, mut stopping) = (builders.clone(), stopping.clone());
                let (idle, offer_h2) = (limits.header_read_timeout, limits.http2);
                tokio::spawn(async move {
                    let (io, h2_preface) = match tokio::time::timeout(idle, ConnIo::recognise(stream, activity.clone())).await {
                        Ok(Ok(read)) => read,
                        // Nothing (or an error) within the header timeout: close.
                        _ => return drop(permit),
                    };
                    let result = if h2_preface && offer_h2 {
                        let conn = builders.1.serve_connection(TokioIo::new(io), svc);
                        tokio::pin!(conn);
                        drive(conn.as_mut(), |c| c.graceful_shutdown(), &activity, idle, &mut stopping).await
                    } else if h2_preface {
                        tracing::debug!("HTTP/2 is not offered on this listener; closing");
                        Ok(())
                    } else {
                        // With upgrades: a WebSocket route takes the connection over (SPEC §6.3).
                        let conn = builders.0.serve_connection(TokioIo::new(io), svc).with_upgrades();
                        tokio::pin!(conn);
                        drive(conn.as_mut(), |c| c.graceful_shutdown(), &activity, idle, &mut stopping).await
                    };
                    if let Err(e) = result {
                        // hyper answers malformed or oversized request heads itself (400,
                        // 431) before our handlers see them: log those here, once.
                        if e.is_parse() || e.is_parse_too_large() {
                            tracing::warn!(error = %e, "request head refused by the HTTP parser");
                        } else {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    }
                    drop(permit);
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(drain, permits.acquire_many(all)).await {
        Ok(_) => tracing::debug!("connections drained"),
        Err(_) => tracing::warn!("drain timeout reached; closing remaining connections"),
    }
}
