//! Kept-alive HTTP/1.1 connections to one plain-http upstream, on hyper's `client::conn`.
//!
//! hyper-util's pooled client spends, on every HTTP/1.1 request, a pool lookup keyed by scheme
//! and authority, a race between checkout and a lazily started connect, a URI rewrite and — as
//! the response body still streams when the head arrives — a task spawned to put the connection
//! back once it is free. Here each upstream origin has its own small stack of idle connections,
//! known when the settings are read: a checkout is a pop under a lock held for no await, and a
//! connection goes back from the response body itself when the body ends.
//!
//! What is kept of the pooled client's behaviour: the most recently used connection first; an
//! idle connection is used only while its dispatcher says it is ready (closed ones are dropped);
//! at most `MAX_IDLE` idle connections, none kept past `IDLE_TIMEOUT` (a sweep every
//! `SWEEP_EVERY` lets go of them when no request comes); a request that a reused connection
//! refused before sending a byte (it closed meanwhile) is sent again once on a new connection;
//! `Host` from the upstream's host and port. HTTPS upstreams keep hyper-util's client (ALPN,
//! HTTP/2 multiplexing). Like it, no cap on connections per upstream: one per request in flight.

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Idle connections kept per upstream origin (as hyper-util's client was configured).
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often idle connections are swept (closed and expired ones let go) when no request comes.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

type Sender = http1::SendRequest<UpstreamBody>;

/// A request body on its way upstream: the browser's body, streamed, behind its idle timeout.
pub type UpstreamBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Why a request got no response head from its upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
    #[error("request: {0}")]
    Request(hyper::Error),
    #[error("{0}")]
    Client(hyper_util::client::legacy::Error),
}

impl SendError {
    /// No connection could be made (as opposed to one that failed during the exchange).
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Handshake(_) => true,
            Self::Request(_) => false,
            Self::Client(e) => e.is_connect(),
        }
    }
}

struct Idle {
    tx: Sender,
    since: Instant,
}

/// One plain-http upstream origin.
pub struct Pool {
    authority: Authority,
    /// `http://{authority}/`: what the connector is asked to connect to.
    dst: Uri,
    /// `Host` for every request: the authority, without a default port.
    host: HeaderValue,
    connector: HttpConnector,
    idle: Arc<Mutex<VecDeque<Idle>>>,
    /// Set once the sweeper runs (started with the first connection, inside the runtime).
    sweeping: AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("authority", &self.authority).finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool for `upstream` when it is a plain-http URL, else `None`.
    pub fn for_upstream(upstream: &str, connector: &HttpConnector) -> Option<Self> {
        let uri: Uri = upstream.parse().ok()?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return None;
        }
        let authority = uri.authority()?.clone();
        let dst = Uri::builder().scheme(Scheme::HTTP).authority(authority.clone()).path_and_query("/").build().ok()?;
        // From host and port only (never userinfo, which the settings refuse anyway).
        let host = match authority.port_u16() {
            None | Some(80) => HeaderValue::from_str(authority.host()),
            Some(port) => HeaderValue::from_str(&format!("{}:{port}", authority.host())),
        }
        .ok()?;
        Some(Self {
            authority,
            dst,
            host,
            connector: connector.clone(),
            idle: Arc::new(Mutex::new(VecDeque::new())),
            sweeping: AtomicBool::new(false),
        })
    }

    pub fn same_origin(&self, other: &Pool) -> bool {
        self.authority == other.authority
    }

    /// Does `uri` (absolute) point at this pool's origin?
    pub fn serves(&self, uri: &Uri) -> bool {
        uri.scheme() == Some(&Scheme::HTTP) && uri.authority() == Some(&self.authority)
    }

    /// Send `req` (absolute URI of this origin) on an idle connection, or a new one.
    pub async fn send(&self, mut req: Request<UpstreamBody>) -> Result<Response<PooledBody>, SendError> {
        // HTTP/1.1 requests carry the origin form; the authority goes in `Host`.
        let origin_form = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(origin_form);
        req.headers_mut().insert(header::HOST, self.host.clone());
        let req = match checkout(&self.idle) {
            Some(mut tx) => match tx.try_send_request(req).await {
                Ok(resp) => return Ok(self.give_back_at_end(resp, tx)),
                Err(mut e) => match e.take_message() {
                    // Refused before a byte was written (the connection closed while idle):
                    // safe to send again, once, on a new connection.
                    Some(req) => {
                        tracing::debug!(error = %e.error(), "pooled upstream connection gone; reconnecting");
                        req
                    }
                    None => return Err(SendError::Request(e.into_error())),
                },
            },
            None => req,
        };
        // Boxed: connecting (resolver, TCP, handshake) is a large future, and inline it would
        // size every request's future, most of which never connect.
        let mut tx = Box::pin(self.connect()).await?;
        let resp = tx.send_request(req).await.map_err(SendError::Request)?;
        Ok(self.give_back_at_end(resp, tx))
    }

    async fn connect(&self) -> Result<Sender, SendError> {
        let io = tower::ServiceExt::oneshot(self.connector.clone(), self.dst.clone())
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        let (tx, conn) = http1::handshake(io).await.map_err(SendError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(&self.idle)));
        }
        Ok(tx)
    }

    fn give_back_at_end(&self, resp: Response<Incoming>, tx: Sender) -> Response<PooledBody> {
        resp.map(|body| PooledBody { inner: body, home: Some((tx, Arc::clone(&self.idle))) })
    }
}

/// The most recently used idle connection that is still ready; closed and expired ones are
/// dropped on the way (dropping the sender ends its connection).
fn checkout(idle: &Mutex<VecDeque<Idle>>) -> Option<Sender> {
    let now = Instant::now();
    let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
    while idle.front().is_some_and(|c| now.saturating_duration_since(c.since) > IDLE_TIMEOUT) {
        idle.pop_front();
    }
    while let Some(c) = idle.pop_back() {
        if c.tx.is_ready() {
            return Some(c.tx);
        }
    }
    None
}

/// Put a free connection back (or drop it when the pool is full of live ones).
fn check_in(idle: &Mutex<VecDeque<Idle>>, tx: Sender) {
    let now = Instant::now();
    let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
    if idle.len() >= MAX_IDLE {
        prune(&mut idle, now);
    }
    if idle.len() < MAX_IDLE {
        idle.push_back(Idle { tx, since: now });
    }
}

/// Let go of idle connections that closed or expired (dropping a sender ends its connection).
fn prune(idle: &mut VecDeque<Idle>, now: Instant) {
    idle.retain(|c| !c.tx.is_closed() && now.saturating_duration_since(c.since) <= IDLE_TIMEOUT);
}

/// Sweeps a pool while it exists, so that idle connections do not outlive `IDLE_TIMEOUT` (by
/// more than `SWEEP_EVERY`) when no request comes to take or return one.
async fn sweep(idle: Weak<Mutex<VecDeque<Idle>>>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(idle) = idle.upgrade() else { return };
        prune(&mut idle.lock().unwrap_or_else(PoisonError::into_inner), Instant::now());
    }
}

/// An upstream response body; at its clean end its connection goes back to the pool. A body
/// dropped early, or failed, takes its connection with it (hyper closes a connection whose
/// response was not read to the end).
pub struct PooledBody {
    inner: Incoming,
    home: Option<(Sender, Arc<Mutex<VecDeque<Idle>>>)>,
}

impl PooledBody {
    /// A body from hyper-util's client: nothing to give back.
    pub fn unpooled(inner: Incoming) -> Self {
        Self { inner, home: None }
    }

    fn ended(&mut self) {
        let Some((mut tx, idle)) = self.home.take() else { return };
        if tx.is_ready() {
            check_in(&idle, tx);
        } else if !tx.is_closed()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            // The dispatcher has not yet taken note that the exchange is over (it runs on
            // another thread, or has not run since): wait for that off the request's path.
            // Bounded: an upstream that stopped reading a request body would never free it.
            rt.spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(IDLE_TIMEOUT, tx.ready()).await {
                    check_in(&idle, tx);
                }
            });
        }
    }
}

impl Drop for PooledBody {
    /// A body whose last byte was read but that was not polled to its end (a server stops at
    /// `is_end_stream`; bodiless answers such as 204 are never polled at all) is complete too.
    fn drop(&mut self) {
        if self.home.is_some() && self.inner.is_end_stream() {
            self.ended();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.ended(),
            Poll::Ready(Some(Err(_))) => this.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
