//! A body wrapper that fails a streamed body when no frame arrives for a while, so a stalled
//! upstream or a trickling client cannot hold a proxied connection open forever.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub struct IdleTimeout<B> {
    inner: B,
    timeout: Duration,
    /// Armed only when the body first has to wait: most small bodies never do, and pay
    /// neither the allocation nor the timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self { inner, timeout, sleep: None }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no body data for the route timeout")]
pub struct BodyIdle;

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                // Data arrived: the next wait starts its own idle period.
                this.sleep = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + this.timeout)))
                .as_mut()
                .poll(cx)
            {
                Poll::Ready(()) => {
                    tracing::warn!("proxied body idle for the route timeout; aborting it");
                    Poll::Ready(Some(Err(Box::new(BodyIdle))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
