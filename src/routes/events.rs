//! `GET /session/events` (SPEC §5): the session's live events as server-sent events, so the SPA
//! learns at once that its session was refreshed, is about to end, or ended — on any replica.
//!
//! The stream reads the session once and never saves it: it does not slide the idle expiry.
//! Each event is `event: <type>` and one `data:` line of JSON; a `: keep-alive` comment every
//! [`KEEP_ALIVE`] keeps proxies from closing an idle connection.

use crate::clock::now;
use crate::error::ErrorCode;
use crate::events::{Kind, Reason};
use crate::session::live::{Live, Update};
use crate::session::model::Loaded;
use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use std::time::Duration;

const KEEP_ALIVE: Duration = Duration::from_secs(25);

pub fn router() -> Router<AppState> {
    Router::new().route("/session/events", get(session_events))
}

async fn session_events(State(state): State<AppState>, req: Request) -> Response {
    let t = now();
    let session = match state.sessions.load(req.headers(), t).await {
        Ok(Loaded::Live(s)) => s,
        Ok(Loaded::Anonymous { stale_cookie }) => {
            let expire = if stale_cookie { state.sessions.cookies().clear_session() } else { Vec::new() };
            return super::session::anonymous(expire, None, state.provider_names.as_deref());
        }
        Err(e) => return e.into_response(),
    };
    // What `/session` would find over without a refresh (a removed provider, SPEC §3.7; an
    // expired access token with no refresh token, §4) is ended here too: never a stream for it.
    let removed = state.sessions.provider_removed(&session);
    if removed || (session.refresh_token.is_none() && session.access_expires_at <= t) {
        let reason = if removed { Reason::Revoked } else { Reason::Expired };
        // As `/session`: refused even when the store could not delete it.
        if let Err(e) = state.sessions.end(&session, reason).await {
            tracing::warn!(error = %e.code.as_str(), "an ended session was not deleted from the store");
        }
        let code = Some(ErrorCode::SessionExpired.as_str());
        return super::session::anonymous(
            state.sessions.cookies().clear_session(),
            code,
            state.provider_names.as_deref(),
        );
    }
    let live = match state.sessions.live(&session, Kind::Stream, t) {
        Ok(live) => live,
        Err(e) => return e.into_response(),
    };
    let first = event("session", &super::session_body(&state, &session, t, None));
    drop(session);
    let start = tokio::time::Instant::now() + KEEP_ALIVE;
    let mut keep_alive = tokio::time::interval_at(start, KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = Stream { state, live, keep_alive, first: Some(first), done: false };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), s))
    });
    let mut r = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx buffers proxied responses unless told not to.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

struct Stream {
    state: AppState,
    live: Live,
    keep_alive: tokio::time::Interval,
    first: Option<Bytes>,
    done: bool,
}

impl Stream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.done {
            return None;
        }
        tokio::select! {
            _ = self.keep_alive.tick() => Some(Bytes::from_static(b": keep-alive\n\n")),
            update = self.live.next(&self.state.sessions) => match update {
                Update::Refreshed(at) => Some(event("refreshed", format!("{{\"expires_at\":{at}}}").as_bytes())),
                Update::Expiring(at) => {
                    Some(event("expiring", format!("{{\"session_expires_at\":{at}}}").as_bytes()))
                }
                Update::Ended(reason) => {
                    self.done = true;
                    tracing::info!(reason = reason.as_str(), "session ended: event stream closed");
                    Some(event("ended", format!("{{\"reason\":\"{}\"}}", reason.as_str()).as_bytes()))
                }
                Update::Close => None,
            },
        }
    }
}

/// One event. `data` is JSON: a line break in it can only be whitespace (JSON strings escape
/// them), and it would end the `data:` line, so it becomes a space.
fn event(kind: &str, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(kind.len() + data.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend(data.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_event_is_one_data_line_whatever_the_json_holds() {
        let e = super::event("session", b"{\"claims\":{\n\"a\":\"x\"\r\n}}");
        assert_eq!(&e[..], b"event: session\ndata: {\"claims\":{ \"a\":\"x\"  }}\n\n");
    }
}
