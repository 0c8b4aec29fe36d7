//! What the listener knows about one connection: the bytes it read to tell HTTP/2 from
//! HTTP/1.1 (replayed to the protocol's parser), whether writes to the client are stuck, and
//! whether a request is in progress — from its head until its response body has been produced.

use axum::body::Body;
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The first bytes of an HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Requests in progress on one connection, when the last one began or ended, and since when a
/// write to the client has been waiting.
pub struct Activity {
    opened: Instant,
    active: AtomicUsize,
    /// Milliseconds since `opened`.
    last_ms: AtomicU64,
    /// Milliseconds since `opened`, plus one, when a write began to wait; 0 = none waiting.
    write_waiting_since: AtomicU64,
}

/// Why a connection should end.
pub enum Watch {
    /// No request in progress for the idle limit: shut it down gracefully.
    Idle,
    /// A write to the client has waited for the send timeout: the client stopped reading.
    Stalled,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            active: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            write_waiting_since: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn stalled(&self, send_timeout: Duration) -> bool {
        let since = self.write_waiting_since.load(Ordering::Relaxed);
        since != 0 && self.now_ms().saturating_sub(since - 1) >= send_timeout.as_millis() as u64
    }

    /// Resolves once no request has been in progress for `idle`, or a write has waited
    /// `send_timeout`. Wakes at most once per `idle`.
    pub async fn watch(&self, idle: Duration, send_timeout: Duration) -> Watch {
        loop {
            let seen = self.last_ms.load(Ordering::Relaxed);
            tokio::time::sleep_until(self.opened + Duration::from_millis(seen) + idle).await;
            if self.stalled(send_timeout) {
                return Watch::Stalled;
            }
            if self.last_ms.load(Ordering::Relaxed) == seen {
                if self.active.load(Ordering::Relaxed) == 0 {
                    return Watch::Idle;
                }
                // Busy with one long request: look again one limit later.
                tokio::time::sleep(idle).await;
                if self.stalled(send_timeout) {
                    return Watch::Stalled;
                }
            }
        }
    }
}

/// Marks a request in progress until dropped: when its response body ends, or when the request
/// is abandoned (the handler's future or the body dropped).
pub struct InProgress(Arc<Activity>);

impl InProgress {
    /// No clock is read here: while a request is in progress the connection is not idle
    /// anyway, and its end records the time.
    pub fn begin(a: &Arc<Activity>) -> Self {
        a.active.fetch_add(1, Ordering::Relaxed);
        Self(a.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in progress until it has been produced. Handed to
/// hyper as it is (not boxed into another `Body`): no allocation per response.
pub struct Tracked {
    inner: Body,
    in_progress: Option<InProgress>,
}

impl Tracked {
    pub fn new(inner: Body, in_progress: InProgress) -> Self {
        Self { inner, in_progress: Some(in_progress) }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            self.in_progress = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The client's socket, with the bytes read to recognise the protocol put back in front, and
/// every write that has to wait recorded in the connection's `Activity`.
pub struct ConnIo {
    stream: TcpStream,
    read: [u8; 24],
    start: usize,
    end: usize,
    activity: Arc<Activity>,
}

impl ConnIo {
    /// Read until the bytes differ from the HTTP/2 preface, or all of it has arrived (or the
    /// client closed). True when it is HTTP/2 with prior knowledge. Each read waits for data:
    /// nothing here polls.
    pub async fn recognise(mut stream: TcpStream, activity: Arc<Activity>) -> io::Result<(Self, bool)> {
        let mut read = [0u8; 24];
        let mut end = 0;
        while end < read.len() {
            let n = stream.read(&mut read[end..]).await?;
            if n == 0 {
                break;
            }
            end += n;
            if read[..end] != H2_PREFACE[..end] {
                break;
            }
        }
        let h2 = read == *H2_PREFACE;
        Ok((Self { stream, read, start: 0, end, activity }, h2))
    }

    fn waiting<T>(&self, poll: &Poll<T>) {
        let w = &self.activity.write_waiting_since;
        let since = w.load(Ordering::Relaxed);
        if poll.is_pending() {
            if since == 0 {
                w.store(self.activity.now_ms() + 1, Ordering::Relaxed);
            }
        } else if since != 0 {
            w.store(0, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start < this.end {
            let n = (this.end - this.start).min(buf.remaining());
            buf.put_slice(&this.read[this.start..this.start + n]);
            this.start += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, data);
        this.waiting(&poll);
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.waiting(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connected pair: what the client writes, in `pieces` with pauses, reaches `recognise`.
    async fn recognised(pieces: &[&'static [u8]]) -> (bool, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let pieces = pieces.to_vec();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
            for p in pieces {
                let _ = c.write_all(p).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        });
        let (server, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let (mut io, h2) = ConnIo::recognise(server, Activity::new()).await.unwrap_or_else(|e| panic!("{e}"));
        let _ = client.await;
        let mut all = Vec::new();
        let _ = io.read_to_end(&mut all).await;
        (h2, all)
    }

    #[tokio::test]
    async fn the_bytes_read_to_recognise_http2_are_replayed_whole() {
        let (h2, bytes) = recognised(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]).await;
        assert_eq!((h2, bytes.as_slice()), (false, &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]));
        // The preface in pieces: each read waits for data, then the next piece is compared.
        let (h2, bytes) = recognised(&[b"P", b"RI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n\x00\x00"]).await;
        assert!(h2);
        assert_eq!(bytes, [&H2_PREFACE[..], b"\x00\x00"].concat());
        let (h2, bytes) = recognised(&[b"PRI * HTTP/1.1\r\n\r\n"]).await;
        assert_eq!((h2, bytes.as_slice()), (false, &b"PRI * HTTP/1.1\r\n\r\n"[..]));
        let (h2, bytes) = recognised(&[b"PR"]).await;
        assert_eq!((h2, bytes.as_slice()), (false, &b"PR"[..]), "a client that closes early");
    }
}
