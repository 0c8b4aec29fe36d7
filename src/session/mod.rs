//! Sessions (SPEC §4), as one service: [`Sessions`] loads, saves, creates and ends them, keeps
//! their tokens fresh, and applies back-channel logouts. Two implementations behind it: the
//! stateless cookie (`store = "cookie"`) and the server-side stores (`server`), so callers
//! never ask which one is configured. [`Sessions::current`] is the one "load → fresh → save"
//! sequence every session-using endpoint goes through; [`Sessions::exchanger`] gives a route
//! its own token (SPEC §6.2).

pub mod backchannel;
pub mod cookie;
pub mod exchange;
pub mod live;
mod memo;
mod memory_cache;
pub mod model;
pub mod refresh;
pub mod revocations;
pub mod scope;
pub mod seal;
pub mod server;

use crate::error::{AppError, ErrorCode};
use crate::events::{Event, Events, Reason};
use crate::oidc::logout_token::ValidLogoutToken;
use crate::oidc::providers::Providers;
use crate::settings::routes::Route;
use crate::settings::{SessionSettings, StoreKind};
use crate::store::Store;
use cookie::{CookieNames, SessionCookie};
use exchange::Exchanger;
use http::HeaderMap;
use model::{Loaded, Session};
use refresh::{RefreshFailure, Refresher, When};
use revocations::Revocations;
use seal::Keyring;
use server::Rows;
use std::sync::Arc;

/// The outcome of [`Sessions::current`].
pub enum Current {
    /// No session. `expire`: the Set-Cookie lines that expire a session cookie that was sent
    /// but is stale (empty when there is none to expire).
    Anonymous { expire: Vec<String> },
    /// The session is over (the IdP refused its refresh token, it has none left, or it was
    /// ended while being refreshed): the error says why, `expire` ends its cookies.
    Ended { error: AppError, expire: Vec<String> },
    /// A store or the IdP could not be asked (503/502/504): keep the cookies.
    Failed(AppError),
    /// A live session, fresh as asked, and the Set-Cookie lines that carry its changes.
    Live { session: Arc<Session>, set_cookies: Vec<String> },
}

pub struct Sessions {
    keys: Keyring,
    cookies: CookieNames,
    /// `[session] url`: the server-side store, or in cookie mode the shared refresh cache,
    /// refresh locks and revocation list.
    store: Option<Store>,
    server_side: bool,
    /// Cookie mode with a store: the revocation list, mirrored in memory.
    revocations: Option<Revocations>,
    refresher: Refresher,
    exchanger: Exchanger,
    /// A session of a provider no longer configured is over (removing a compromised IdP ends
    /// its sessions at their next request, not when their tokens expire).
    providers: Arc<Providers>,
    idle_timeout_secs: u64,
    absolute_timeout_secs: u64,
    /// What happens to sessions, told to the listeners on every instance (SPEC §5).
    events: Events,
    events_warning_secs: u64,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("store", &self.store).field("server_side", &self.server_side).finish()
    }
}

impl Sessions {
    /// `store`: the client for `[session] url`, when one is set. Refreshes and the token
    /// exchanges of `routes` go to each session's provider.
    pub fn new(
        settings: &SessionSettings,
        store: Option<Store>,
        providers: Arc<Providers>,
        routes: &[Route],
        events: Events,
    ) -> Self {
        let server_side = store.is_some() && settings.store != StoreKind::Cookie;
        let revocations = (store.is_some() && !server_side).then(Revocations::default);
        let memory = memory_cache::shared(settings.cache_max_bytes);
        Self {
            keys: Keyring::new(&settings.keys),
            cookies: CookieNames::new(settings),
            refresher: Refresher::new(providers.clone(), store.clone(), memory.clone()),
            exchanger: Exchanger::new(providers.clone(), store.clone(), memory, routes),
            providers,
            store,
            server_side,
            revocations,
            idle_timeout_secs: settings.idle_timeout_secs,
            absolute_timeout_secs: settings.absolute_timeout_secs,
            events,
            events_warning_secs: settings.events_warning_secs,
        }
    }

    /// Was `s` created at a provider that is no longer configured (SPEC §3.7: it is over)?
    pub fn provider_removed(&self, s: &Session) -> bool {
        s.provider.is_some() && self.providers.of(s.provider.as_deref()).is_none()
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Tell every instance's listeners that `s` ended. Whatever copy of the cookie ended it:
    /// a refused refresh expires the browser's cookie, so its listeners end too.
    fn publish_end(&self, s: &Session, reason: Reason) {
        self.events.publish(Event::Ended { session: live::session_route(s), reason });
    }

    /// Back-channel logout rules this instance learnt from the revocation list's poll (another
    /// instance recorded them): its own listeners of those sessions are told.
    pub fn revoked_elsewhere(&self, rules: &[crate::store::Revocation]) {
        if !rules.is_empty() {
            self.events.deliver(&Arc::new(live::backchannel_event(rules, None)));
        }
    }

    pub fn cookies(&self) -> &CookieNames {
        &self.cookies
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// `[session] url`'s store, whatever it holds.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    pub fn revocations(&self) -> Option<&Revocations> {
        self.revocations.as_ref()
    }

    pub fn refresher(&self) -> &Refresher {
        &self.refresher
    }

    pub fn exchanger(&self) -> &Exchanger {
        &self.exchanger
    }

    pub fn idle_timeout_secs(&self) -> u64 {
        self.idle_timeout_secs
    }

    /// The server-side rows, when sessions are kept in the store.
    fn rows(&self) -> Option<Rows<'_>> {
        let store = self.store.as_ref().filter(|_| self.server_side)?;
        Some(Rows { keys: &self.keys, cookies: &self.cookies, store, idle_timeout_secs: self.idle_timeout_secs })
    }

    /// The request's session. `Err` only when the store needed to answer is unavailable (503).
    pub async fn load(&self, headers: &HeaderMap, now: i64) -> Result<Loaded, AppError> {
        let found = SessionCookie::from_headers(&self.cookies, headers);
        if !found.is_present() {
            return Ok(Loaded::Anonymous { stale_cookie: false });
        }
        if let Some(rows) = self.rows() {
            // Boxed: the store's futures are large, and inline they would make every request's
            // future (cookie mode included) as large as the largest of them.
            return Box::pin(rows.load(&found, now)).await;
        }
        self.open_cookie(&found, now)
    }

    /// Cookie mode's load, synchronous: the memo, the expiry and the revocation mirror.
    fn open_cookie(&self, found: &SessionCookie<'_>, now: i64) -> Result<Loaded, AppError> {
        let session = match found.open(&self.cookies, &self.keys) {
            Ok(s) if s.is_live(now, self.idle_timeout_secs) => s,
            Ok(s) => {
                tracing::debug!("session cookie expired");
                memo::forget(&s);
                return Ok(Loaded::Anonymous { stale_cookie: true });
            }
            Err(why) => return Ok(why.into_loaded()),
        };
        if let Some(revocations) = &self.revocations
            && revocations.is_revoked(&session)?
        {
            tracing::info!("session cookie revoked by a back-channel logout");
            memo::forget(&session);
            metrics::counter!("bff_sessions_ended_total", "reason" => "backchannel").increment(1);
            return Ok(Loaded::Anonymous { stale_cookie: true });
        }
        Ok(Loaded::Live(session))
    }

    /// Persist what changed: new tokens (`changed`), or just the sliding idle expiry when it is
    /// due (SPEC §4: at most every min(60 s, idle/4)). Returns the Set-Cookie lines to send.
    pub async fn save(&self, s: &mut Arc<Session>, now: i64, changed: bool) -> Result<Vec<String>, AppError> {
        if let (Some(_), Some(rows)) = (&s.stored, self.rows()) {
            Box::pin(rows.save(Arc::make_mut(s), now, changed)).await?;
            return Ok(Vec::new());
        }
        Ok(self.save_cookie(s, now, changed))
    }

    /// Cookie mode's save: re-seal when the tokens changed or the sliding expiry is due.
    fn save_cookie(&self, s: &mut Arc<Session>, now: i64, changed: bool) -> Vec<String> {
        if changed || s.needs_reseal(now, self.idle_timeout_secs) {
            let sealed = self.seal_cookie(Arc::make_mut(s), now);
            return self.cookies.write_session(&sealed, s.absolute_expires_at - now);
        }
        Vec::new()
    }

    /// The session a request carries, loaded, brought up to date (`when`) and saved, with the
    /// cookie lines its outcome needs: the sequence `/session` and the proxy share.
    ///
    /// In cookie mode a request whose access token needs no refresh never awaits: this future
    /// holds no store or IdP future inline (those are boxed, and only built when needed), so
    /// the handler futures that await it stay small.
    pub async fn current(&self, headers: &HeaderMap, when: When, now: i64) -> Current {
        let found = SessionCookie::from_headers(&self.cookies, headers);
        if !found.is_present() {
            return Current::Anonymous { expire: Vec::new() };
        }
        let rows = self.rows();
        let loaded = match &rows {
            None => self.open_cookie(&found, now),
            Some(rows) => Box::pin(rows.load(&found, now)).await,
        };
        let s = match loaded {
            Ok(Loaded::Live(s)) => s,
            Ok(Loaded::Anonymous { stale_cookie }) => {
                let expire = if stale_cookie { self.cookies.clear_session() } else { Vec::new() };
                return Current::Anonymous { expire };
            }
            Err(e) => return Current::Failed(e),
        };
        if self.provider_removed(&s) {
            tracing::warn!("a session of a provider that is no longer configured; ending it");
            metrics::counter!("bff_sessions_ended_total", "reason" => "provider_removed").increment(1);
            // Deleted, not only refused: a provider added back (or its name reused) must not
            // revive it. A store failure here still refuses it.
            if let Err(e) = Box::pin(self.end(&s, Reason::Revoked)).await {
                tracing::warn!(error = %e.code.as_str(), "the removed provider's session was not deleted");
                // Refused all the same: its listeners are told.
                self.publish_end(&s, Reason::Revoked);
            }
            return self.ended(ErrorCode::SessionExpired.into());
        }
        if rows.is_none() && !self.refresher.needed(&s, when, crate::clock::now()) {
            let mut s = s;
            let set_cookies = self.save_cookie(&mut s, now, false);
            return Current::Live { session: s, set_cookies };
        }
        Box::pin(self.refresh_and_save(s, rows, when, now)).await
    }

    /// The rest of [`Sessions::current`] once a session is loaded: a refresh if one is due, and
    /// the save (the tokens, or the sliding expiry).
    async fn refresh_and_save(&self, mut s: Arc<Session>, rows: Option<Rows<'_>>, when: When, now: i64) -> Current {
        let changed = match self.refresher.ensure_fresh(&mut s, when).await {
            Ok(changed) => changed,
            Err(RefreshFailure::Ended(error)) => {
                self.publish_end(&s, Reason::RefreshFailed);
                return self.ended(error);
            }
            Err(RefreshFailure::Temporary(e)) => return Current::Failed(e),
        };
        let saved = match (&s.stored, rows) {
            (Some(_), Some(rows)) => rows.save(Arc::make_mut(&mut s), now, changed).await.map(|()| Vec::new()),
            _ => Ok(self.save_cookie(&mut s, now, changed)),
        };
        match saved {
            Ok(set_cookies) => {
                if changed {
                    let (session, expires_at) = (live::session_route(&s), s.access_expires_at);
                    self.events.publish(Event::Refreshed { session, expires_at });
                }
                Current::Live { session: s, set_cookies }
            }
            Err(e) if e.code == ErrorCode::SessionExpired => self.ended(e),
            Err(e) => Current::Failed(e),
        }
    }

    fn ended(&self, error: AppError) -> Current {
        Current::Ended { error, expire: self.cookies.clear_session() }
    }

    /// Store a session that a login just produced; the Set-Cookie lines. `headers` are the
    /// completing request's and `replaces` the session seen when the login started: server-side
    /// sessions they name are deleted (a new id at every login).
    pub async fn create(
        &self,
        session: &mut Session,
        now: i64,
        headers: &HeaderMap,
        replaces: Option<[u8; 32]>,
    ) -> Result<Vec<String>, AppError> {
        if let Some(rows) = self.rows() {
            return rows.create(session, now, headers, replaces).await;
        }
        let sealed = self.seal_cookie(session, now);
        if sealed.len() > cookie::MAX_SEALED_BYTES {
            tracing::warn!(bytes = sealed.len(), "sealed session above 8 cookie chunks");
            return Err(ErrorCode::SessionTooLarge.into());
        }
        Ok(self.cookies.write_session(&sealed, session.absolute_expires_at - now))
    }

    /// The server-side session a request carries (its row key), to be replaced by a login.
    pub fn current_key(&self, headers: &HeaderMap) -> Option<[u8; 32]> {
        self.rows()?.cookie_key(&SessionCookie::from_headers(&self.cookies, headers)).ok()
    }

    /// End a session where it is kept (server-side row, refresh-cache entries), and tell its
    /// listeners why. Cookies are the caller's to expire.
    pub async fn end(&self, s: &Session, reason: Reason) -> Result<(), AppError> {
        memo::forget(s);
        if let Some(stored) = &s.stored
            && let Some(rows) = self.rows()
        {
            rows.store.delete_session(&stored.key).await?;
        }
        // Only once it is over: a failed delete leaves the session, and its listeners, alive.
        self.publish_end(s, reason);
        self.refresher.forget(s).await;
        self.exchanger.forget(s).await;
        Ok(())
    }

    /// Apply a validated back-channel logout token received at `now`. Cookie mode without a
    /// store has nowhere to record it (501 `backchannel_unavailable`): HTTP callers check
    /// [`Sessions::store`] before reading the request body, so that answer costs nothing.
    /// `provider` is the one whose keys and client id validated the token: only its sessions
    /// end (SPEC §3.7).
    pub async fn backchannel_logout(
        &self,
        provider: &crate::settings::OidcSettings,
        token: &ValidLogoutToken,
        now: i64,
    ) -> Result<(), AppError> {
        let Some(store) = &self.store else {
            return Err(ErrorCode::BackchannelUnavailable.into());
        };
        let target = backchannel::Target {
            store,
            events: &self.events,
            server_side: self.server_side,
            revocations: self.revocations.as_ref(),
            provider: &provider.name,
            clock_skew_secs: provider.clock_skew_secs,
            absolute_timeout_secs: self.absolute_timeout_secs,
        };
        backchannel::apply(&target, token, now).await
    }

    /// `session` (cookie mode) sealed at `now`, as the cookie value.
    fn seal_cookie(&self, session: &mut Session, now: i64) -> String {
        session.sealed_at = now;
        let sealed = cookie::seal_session(&self.cookies, &self.keys, session);
        metrics::histogram!("bff_session_cookie_bytes").record(sealed.len() as f64);
        sealed
    }
}
