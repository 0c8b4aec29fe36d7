//! Accepting and serving connections under SPEC §7's limits, for the public listener and the
//! admin listener alike: our own accept loop on hyper's HTTP/1.1 and HTTP/2 connections
//! (axum::serve exposes no header-size, header-read-timeout or connection-cap settings, and
//! hyper-util's auto-detecting builder no strict head size), an idle limit for every
//! connection, and a graceful drain. HTTP/2 is recognised by its preface (peeked, not read).
//!
//! - Request heads: at most `max_header_bytes` (request line and fields, however the bytes
//!   arrive) and `max_headers` fields (431 beyond), received within `header_read_timeout`
//!   (slow-loris); HTTP/2 header lists at most `max_header_bytes`.
//! - Connections: at most `max_connections` at once; one more is closed as soon as it is
//!   accepted (the admin listener has its own cap of [`ADMIN_MAX_CONNECTIONS`]).
//! - Idle connections are closed after `header_read_timeout` without a request in progress,
//!   HTTP/1.1 keep-alive and HTTP/2 alike: hyper closes an idle HTTP/1.1 connection by itself,
//!   but an HTTP/2 client that answers every ping would otherwise hold its slot forever. A
//!   request counts as in progress until its handler has produced the response head; a response
//!   body still streaming when the limit passes is finished first (graceful shutdown of the
//!   connection: HTTP/1.1 stops keep-alive, HTTP/2 sends GOAWAY and lets open streams end).
//! - On stop: no new connections; every open one is shut down gracefully; the drain waits at
//!   most `drain` for them to finish.

use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

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

/// Requests in progress on one connection, and when the last one began or ended.
struct Activity {
    opened: Instant,
    active: AtomicUsize,
    /// Milliseconds since `opened`.
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once no request has been in progress for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let seen = self.last_ms.load(Ordering::Relaxed);
            tokio::time::sleep_until(self.opened + Duration::from_millis(seen) + limit).await;
            if self.last_ms.load(Ordering::Relaxed) == seen {
                if self.active.load(Ordering::Relaxed) == 0 {
                    return;
                }
                // Busy with one long request: look again one limit later.
                tokio::time::sleep(limit).await;
            }
        }
    }
}

/// Marks a request in progress until dropped (also when the handler's future is dropped).
struct InProgress(Arc<Activity>);

impl InProgress {
    fn begin(a: &Arc<Activity>) -> Self {
        a.active.fetch_add(1, Ordering::Relaxed);
        a.touch();
        Self(a.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The first bytes of an HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Does the client open with the HTTP/2 preface? Peeks, never consumes: what follows is read by
/// the protocol's own parser. Waits for more only while what arrived is a proper prefix of it.
async fn opens_with_h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

/// Run one connection to its end: shut it down gracefully once it has been idle for `idle`, or
/// when the listener stops.
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
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            () = activity.idle_for(idle), if !closing => {
                closing = true;
                shutdown(conn.as_mut());
            }
            _ = stopping.changed(), if !closing => {
                closing = true;
                shutdown(conn.as_mut());
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
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(limit = limits.max_connections, "connection cap reached; closing a new connection");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let activity = Arc::new(Activity { opened: Instant::now(), active: AtomicUsize::new(0), last_ms: AtomicU64::new(0) });
                let (handle, seen) = (handle.clone(), activity.clone());
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let in_progress = InProgress::begin(&seen);
                    let response = handle(req.map(Body::new), peer);
                    async move {
                        let response = response.await;
                        drop(in_progress);
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let (builders, mut stopping) = (builders.clone(), stopping.clone());
                let (idle, offer_h2) = (limits.header_read_timeout, limits.http2);
                tokio::spawn(async move {
                    let h2_preface = match tokio::time::timeout(idle, opens_with_h2_preface(&stream)).await {
                        Ok(Ok(h2)) => h2,
                        // Nothing (or an error) within the header timeout: close.
                        _ => return drop(permit),
                    };
                    let result = if h2_preface && offer_h2 {
                        let conn = builders.1.serve_connection(TokioIo::new(stream), svc);
                        tokio::pin!(conn);
                        drive(conn.as_mut(), |c| c.graceful_shutdown(), &activity, idle, &mut stopping).await
                    } else if h2_preface {
                        tracing::debug!("HTTP/2 is not offered on this listener; closing");
                        Ok(())
                    } else {
                        let conn = builders.0.serve_connection(TokioIo::new(stream), svc);
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
