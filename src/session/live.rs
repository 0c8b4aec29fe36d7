//! A session watched while a `/session/events` stream or a WebSocket is open (SPEC §5, §6.3):
//! what happens to it on any instance (`events`), and when it will end.
//!
//! - Routing ids: a session is found by a labelled hash of its `logout_token` (every copy of
//!   the session, on every replica, has the same; the value never leaves the process), and by
//!   hashes of its provider-scoped `sid` and `sub` for back-channel logouts, which name only
//!   those.
//! - Expiry: the absolute expiry always; the idle expiry only with a server-side store, whose
//!   row says when any tab last used the session (in cookie mode another tab may have slid it).
//!   A server-side session is also re-read every [`CHECK_EVERY`], so that one deleted by an
//!   operator, or by an instance whose message was lost, is seen to end (`revoked`).
//! - Watching never touches the session: it does not slide the idle expiry.

use super::Sessions;
use super::model::Session;
use super::seal::{SharedLabel, shared_id_of};
use crate::error::{AppError, ErrorCode};
use crate::events::{Event, Full, Kind, Match, Next, Reason, RouteId, Signal, Subscription};
use crate::store::{Revocation, RevocationKind};
use std::time::Duration;

/// How often a server-side session is re-read while watched.
const CHECK_EVERY: i64 = 60;
/// After a failed re-read, the next one.
const RETRY_CHECK: i64 = 5;

fn route(kind: &[u8], id: &[u8]) -> RouteId {
    shared_id_of(SharedLabel::Events, &[kind, id])
}

/// The routing id of a session's own events.
pub fn session_route(s: &Session) -> RouteId {
    route(b"session", s.logout_token.as_bytes())
}

fn sid_route(scoped_sid: &str) -> RouteId {
    route(b"sid", scoped_sid.as_bytes())
}

fn sub_route(scoped_sub: &str) -> RouteId {
    route(b"sub", scoped_sub.as_bytes())
}

/// The event a back-channel logout's rules (as recorded for the revocation list, or applied
/// to server-side rows) make: the same rules, with hashed ids. `sid_with_sub`: the token's
/// scoped `sub` when the rules were applied to server-side rows, which end a `sid`'s sessions
/// only when they are that user's too.
pub fn backchannel_event(rules: &[Revocation], sid_with_sub: Option<&str>) -> Event {
    let matches = rules
        .iter()
        .map(|r| Match {
            kind: r.kind,
            id: match r.kind {
                RevocationKind::Sid => sid_route(&r.value),
                RevocationKind::Sub | RevocationKind::SubWithoutSid => sub_route(&r.value),
            },
            by: r.iat,
            sub: sid_with_sub.filter(|_| r.kind == RevocationKind::Sid).map(sub_route),
        })
        .collect();
    Event::Backchannel { matches }
}

/// A listener refused at a cap: counted, and logged at most once every 10 s (a client retrying
/// past the cap must not flood the log).
fn refused(full: Full) {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
    static LAST_LOGGED: AtomicI64 = AtomicI64::new(0);
    static SINCE: AtomicU64 = AtomicU64::new(0);
    let which = match full {
        Full::Process => "process",
        Full::Session => "session",
        Full::Anonymous => "anonymous",
    };
    metrics::counter!("bff_event_streams_refused_total", "cap" => which).increment(1);
    let n = SINCE.fetch_add(1, Ordering::Relaxed) + 1;
    let now = crate::clock::now();
    let last = LAST_LOGGED.load(Ordering::Relaxed);
    if now - last >= 10 && LAST_LOGGED.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        SINCE.store(0, Ordering::Relaxed);
        tracing::warn!(cap = which, refused = n, "event stream or WebSocket refused: cap reached (503)");
    }
}

/// What a watched session's listener is told.
#[derive(Debug, PartialEq, Eq)]
pub enum Update {
    Refreshed(i64),
    /// The session ends at this time.
    Expiring(i64),
    Ended(Reason),
    /// Stop listening without an event: the process is stopping, or the listener fell behind.
    Close,
}

pub struct Live {
    subscription: Subscription,
    session: RouteId,
    sid: Option<RouteId>,
    sub: RouteId,
    created_at: i64,
    absolute_expires_at: i64,
    /// A session without a refresh token ends with its access token (SPEC §4).
    access_cap: i64,
    /// The server-side row, when there is one.
    stored: Option<[u8; 32]>,
    /// When the session ends, as last known.
    end_at: i64,
    warn_secs: i64,
    warned: bool,
    /// When a server-side session is next re-read.
    check_at: i64,
    recheck_seen: u64,
}

impl Sessions {
    /// Start watching `s` for a listener of `kind`. 503 `event_streams_exhausted` at the caps.
    pub fn live(&self, s: &Session, kind: Kind, now: i64) -> Result<Live, AppError> {
        let provider = s.provider_name();
        let session = session_route(s);
        let sub = sub_route(&super::scope::scoped(provider, &s.sub));
        let sid = s.sid.as_deref().map(|sid| sid_route(&super::scope::scoped(provider, sid)));
        let ids: Vec<RouteId> = [Some(session), Some(sub), sid].into_iter().flatten().collect();
        let subscription = self.events.subscribe(kind, &ids).map_err(|full| {
            refused(full);
            AppError::from(ErrorCode::EventStreamsExhausted)
        })?;
        let stored = s.stored.as_ref().map(|r| r.key);
        // Nothing can renew the access token of a session without a refresh token: the session
        // ends with it (SPEC §4).
        let access_cap = if s.refresh_token.is_none() { s.access_expires_at } else { i64::MAX };
        let end_at = if stored.is_some() { s.expires_at(self.idle_timeout_secs) } else { s.absolute_expires_at };
        let end_at = end_at.min(access_cap);
        let recheck_seen = subscription.current_signal().recheck;
        Ok(Live {
            subscription,
            session,
            sid,
            sub,
            created_at: s.created_at,
            absolute_expires_at: s.absolute_expires_at,
            access_cap,
            stored,
            end_at,
            warn_secs: self.events_warning_secs as i64,
            warned: false,
            // The row was just read: the next read at the first deadline, or a minute from now.
            check_at: (now + CHECK_EVERY).min(end_at - self.events_warning_secs as i64),
            recheck_seen,
        })
    }

    /// A listener without a session (a WebSocket on an `auth = "optional"` or `"none"` route):
    /// it counts toward `max_event_streams` and hears only the process's signals.
    pub fn live_without_session(&self, kind: Kind) -> Result<Live, AppError> {
        let subscription = self.events.subscribe(kind, &[]).map_err(|full| {
            refused(full);
            AppError::from(ErrorCode::EventStreamsExhausted)
        })?;
        let recheck_seen = subscription.current_signal().recheck;
        Ok(Live {
            subscription,
            session: [0; 32],
            sid: None,
            sub: [0; 32],
            created_at: i64::MAX,
            absolute_expires_at: i64::MAX,
            access_cap: i64::MAX,
            stored: None,
            end_at: i64::MAX,
            warn_secs: 0,
            warned: true,
            check_at: i64::MAX,
            recheck_seen,
        })
    }

    /// When the server-side session `key` ends now, as its row says; `None` when it is gone.
    async fn stored_end(&self, key: &[u8; 32], absolute: i64, now: i64) -> Result<Option<i64>, AppError> {
        let Some(rows) = self.rows() else { return Ok(None) };
        let row = rows.store.get_session(key, now).await?;
        Ok(row.map(|r| r.last_seen.saturating_add(self.idle_timeout_secs as i64).min(absolute)))
    }
}

impl Live {
    pub fn kind(&self) -> Kind {
        self.subscription.kind()
    }

    fn closes(&self, s: Signal) -> bool {
        match self.kind() {
            Kind::Stream => s.close_streams,
            Kind::WebSocket => s.close_sockets,
        }
    }

    /// The next thing to tell the listener. Cancel-safe: a timer or a store read interrupted
    /// here is simply done again.
    pub async fn next(&mut self, sessions: &Sessions) -> Update {
        if self.closes(self.subscription.current_signal()) {
            return Update::Close;
        }
        loop {
            let now = crate::clock::now();
            // At most a day at a time: far deadlines (or none) never overflow the timer.
            let wait = Duration::from_secs(self.wake_at().saturating_sub(now).clamp(0, 86_400) as u64);
            tokio::select! {
                biased;
                next = self.subscription.next() => match next {
                    Next::Lagged => return Update::Close,
                    Next::Signal(s) if self.closes(s) => return Update::Close,
                    Next::Signal(s) => {
                        if s.recheck != self.recheck_seen {
                            self.recheck_seen = s.recheck;
                            // Something may have been missed: re-read at once.
                            self.check_at = now;
                        }
                    }
                    Next::Event(e) => {
                        if let Some(u) = self.apply(&e) {
                            return u;
                        }
                    }
                },
                () = tokio::time::sleep(wait) => {
                    if let Some(u) = self.on_time(sessions).await {
                        return u;
                    }
                }
            }
        }
    }

    /// When the session's own clock next says something: the warning, then the end.
    fn deadline(&self) -> i64 {
        if !self.warned && self.warn_secs > 0 { self.end_at - self.warn_secs } else { self.end_at }
    }

    /// A server-side session is woken only to re-read its row (at its deadline at the latest:
    /// another tab may have slid it); a cookie session at its deadline.
    fn wake_at(&self) -> i64 {
        if self.stored.is_some() { self.check_at } else { self.deadline() }
    }

    fn apply(&self, e: &Event) -> Option<Update> {
        match e {
            Event::Refreshed { session, expires_at } if *session == self.session => {
                Some(Update::Refreshed(*expires_at))
            }
            Event::Ended { session, reason } if *session == self.session => Some(Update::Ended(*reason)),
            Event::Backchannel { matches } => matches
                .iter()
                .any(|m| self.created_at <= m.by && self.matches(m))
                .then_some(Update::Ended(Reason::Backchannel)),
            _ => None,
        }
    }

    fn matches(&self, m: &Match) -> bool {
        match m.kind {
            RevocationKind::Sid => self.sid == Some(m.id) && m.sub.is_none_or(|sub| sub == self.sub),
            RevocationKind::Sub => self.sub == m.id,
            RevocationKind::SubWithoutSid => self.sid.is_none() && self.sub == m.id,
        }
    }

    async fn on_time(&mut self, sessions: &Sessions) -> Option<Update> {
        let now = crate::clock::now();
        if let Some(key) = self.stored {
            if now < self.check_at {
                return None;
            }
            // Boxed: inline, the store's future would sit in every idle stream's future.
            match Box::pin(sessions.stored_end(&key, self.absolute_expires_at, now)).await {
                Ok(None) => {
                    let reason = if now >= self.end_at { Reason::Expired } else { Reason::Revoked };
                    tracing::info!(reason = reason.as_str(), "watched session is gone from the store");
                    return Some(Update::Ended(reason));
                }
                Ok(Some(end)) => {
                    // Another tab used it: the idle expiry slid, and a new warning is due later.
                    let end = end.min(self.access_cap);
                    if end > self.end_at && end - self.warn_secs > now {
                        self.warned = false;
                    }
                    self.end_at = end;
                }
                Err(e) => {
                    // Only the re-read is retried: the end is not declared on a store outage.
                    tracing::debug!(error = %e.code.as_str(), "watched session not re-read; trying again");
                    self.check_at = now + RETRY_CHECK;
                    return None;
                }
            }
        }
        let update = if now >= self.end_at {
            Some(Update::Ended(Reason::Expired))
        } else if !self.warned && now >= self.end_at - self.warn_secs {
            self.warned = true;
            Some(Update::Expiring(self.end_at))
        } else {
            None
        };
        self.check_at = (now + CHECK_EVERY).min(self.deadline()).max(now + 1);
        update
    }
}
