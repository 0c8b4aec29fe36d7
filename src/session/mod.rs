//! Sessions (SPEC §4): the model, its sealing, the cookie form, and the per-request steps every
//! session-using endpoint shares (load, save, create, end). Two implementations behind these
//! four functions: the stateless cookie (`store = "cookie"`) and the server-side stores
//! (`server`), so handlers never ask which one is configured.

pub mod cookie;
mod memo;
pub mod model;
pub mod refresh;
pub mod seal;
pub mod server;

use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use cookie::SessionCookie;
use http::HeaderMap;
use model::Session;
use std::sync::Arc;

/// The session a request carries, if any.
pub enum Loaded {
    /// No session. `stale_cookie` is true when a session cookie was sent but did not open, has
    /// expired or was revoked: the response should expire it.
    Anonymous { stale_cookie: bool },
    /// Shared with the per-thread memo in cookie mode: `Arc::make_mut` copies it only when a
    /// request changes it (refresh, re-seal).
    Live(Arc<Session>),
}

/// The request's session. `Err` only when the store needed to answer is unavailable (503).
pub async fn load(state: &AppState, headers: &HeaderMap, now: i64) -> Result<Loaded, AppError> {
    let found = SessionCookie::from_headers(&state.cookies, headers);
    if !found.is_present() {
        return Ok(Loaded::Anonymous { stale_cookie: false });
    }
    if let Some(store) = state.server_store() {
        // Boxed: the store's futures are large, and inline they would make every request's
        // future (cookie mode included) as large as the largest of them.
        return Box::pin(server::load(state, store, &found, now)).await;
    }
    let session = match found.open(&state.cookies, &state.keys) {
        Ok(s) if s.is_live(now, state.settings.session.idle_timeout_secs) => s,
        Ok(s) => {
            tracing::debug!("session cookie expired");
            memo::forget(&s);
            return Ok(Loaded::Anonymous { stale_cookie: true });
        }
        Err(why) => return Ok(unopened(why)),
    };
    if let Some(revocations) = &state.revocations
        && revocations.is_revoked(&session)?
    {
        tracing::info!("session cookie revoked by a back-channel logout");
        memo::forget(&session);
        metrics::counter!("bff_sessions_ended_total", "reason" => "backchannel").increment(1);
        return Ok(Loaded::Anonymous { stale_cookie: true });
    }
    Ok(Loaded::Live(session))
}

/// The anonymous outcome of a session cookie that gave no session, logged once here.
fn unopened(why: cookie::Unopened) -> Loaded {
    match why {
        cookie::Unopened::Ambiguous => tracing::warn!(
            "a session cookie name was sent more than once, or in both forms; treating the request as anonymous"
        ),
        cookie::Unopened::UnknownKey => {
            tracing::info!("session cookie sealed under a key this instance does not have; not expiring it")
        }
        cookie::Unopened::Invalid => {
            tracing::info!("session cookie did not open (tampered, truncated or mixed)")
        }
        cookie::Unopened::Absent => {}
    }
    Loaded::Anonymous { stale_cookie: why.expire() }
}

/// Persist what changed: new tokens (`changed`), or just the sliding idle expiry when it is due
/// (SPEC §4: at most every min(60 s, idle/4)). Returns the Set-Cookie lines to send.
pub async fn save(state: &AppState, s: &mut Arc<Session>, now: i64, changed: bool) -> Result<Vec<String>, AppError> {
    if let (Some(_), Some(store)) = (&s.stored, state.server_store()) {
        Box::pin(server::save(state, store, Arc::make_mut(s), now, changed)).await?;
        return Ok(Vec::new());
    }
    if changed || s.needs_reseal(now, state.settings.session.idle_timeout_secs) {
        let sealed = seal_cookie(state, Arc::make_mut(s), now);
        return Ok(state.cookies.write_session(&sealed, s.absolute_expires_at - now));
    }
    Ok(Vec::new())
}

/// Store a session that a login just produced; the Set-Cookie lines. `headers` are the
/// completing request's and `replaces` the session seen when the login started: server-side
/// sessions they name are deleted (a new id at every login).
pub async fn create(
    state: &AppState,
    session: &mut Session,
    now: i64,
    headers: &HeaderMap,
    replaces: Option<[u8; 32]>,
) -> Result<Vec<String>, AppError> {
    if let Some(store) = state.server_store() {
        return server::create(state, store, session, now, headers, replaces).await;
    }
    let sealed = seal_cookie(state, session, now);
    if sealed.len() > cookie::MAX_SEALED_BYTES {
        tracing::warn!(bytes = sealed.len(), "sealed session above 8 cookie chunks");
        return Err(ErrorCode::SessionTooLarge.into());
    }
    Ok(state.cookies.write_session(&sealed, session.absolute_expires_at - now))
}

/// The server-side session a request carries (its row key), to be replaced by a login.
pub fn current_key(state: &AppState, headers: &HeaderMap) -> Option<[u8; 32]> {
    state.server_store()?;
    server::cookie_key(state, &SessionCookie::from_headers(&state.cookies, headers)).ok()
}

/// End a session where it is kept (server-side row, refresh-cache entries). Cookies are the
/// caller's to expire.
pub async fn end(state: &AppState, s: &Session) -> Result<(), AppError> {
    memo::forget(s);
    if let Some(stored) = &s.stored
        && let Some(store) = state.server_store()
    {
        store.delete_session(&stored.key).await?;
    }
    state.refresher.forget(state, s).await;
    Ok(())
}

/// `session` (cookie mode) sealed at `now`, as the cookie value.
fn seal_cookie(state: &AppState, session: &mut Session, now: i64) -> String {
    session.sealed_at = now;
    let sealed = cookie::seal_session(&state.cookies, &state.keys, session);
    metrics::histogram!("bff_session_cookie_bytes").record(sealed.len() as f64);
    sealed
}
