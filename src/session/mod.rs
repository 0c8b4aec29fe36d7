//! Sessions (SPEC §4): the model, its sealing, the cookie form, and the per-request steps every
//! session-using endpoint shares (open, expire, refresh, re-seal).

pub mod cookie;
pub mod model;
pub mod refresh;
pub mod seal;

use crate::state::AppState;
use cookie::SessionCookie;
use http::HeaderMap;
use model::Session;

/// The session a request carries, if any.
pub enum Loaded {
    /// No session. `stale_cookie` is true when a session cookie was sent but did not open or
    /// has expired: the response should expire it.
    Anonymous {
        stale_cookie: bool,
    },
    Live(Box<Session>),
}

pub fn load(state: &AppState, headers: &HeaderMap, now: i64) -> Loaded {
    let found = SessionCookie::from_headers(&state.cookies, headers);
    if !found.is_present() {
        return Loaded::Anonymous { stale_cookie: false };
    }
    match found.open(&state.cookies, &state.keys) {
        Some(s) if s.is_live(now, state.settings.session.idle_timeout_secs) => Loaded::Live(Box::new(s)),
        Some(_) => {
            tracing::debug!("session cookie expired");
            Loaded::Anonymous { stale_cookie: true }
        }
        None => {
            tracing::info!("session cookie did not open (tampered, truncated, mixed or unknown key)");
            Loaded::Anonymous { stale_cookie: true }
        }
    }
}

/// Set-Cookie lines that store `session` as sealed at `now`.
pub fn write(state: &AppState, session: &mut Session, now: i64) -> Vec<String> {
    session.sealed_at = now;
    let sealed = cookie::seal_session(&state.cookies, &state.keys, session);
    metrics::histogram!("bff_session_cookie_bytes").record(sealed.len() as f64);
    state.cookies.write_session(&sealed, session.absolute_expires_at - now)
}
