//! Keeping a session's access token usable (SPEC §4, §6).
//!
//! - An access token is refreshed when it has expired, or (for the proxy) when it is within
//!   `refresh_margin_secs` of expiry — a token whose whole lifetime fits in the margin only at
//!   expiry.
//! - Concurrent requests of one session on this instance share one refresh: the refresh runs
//!   in its own task (a browser aborting the request that started it cannot cancel it and
//!   leave a rotated token half-spent), and every waiter receives its outcome.
//! - The result is cached for `refresh_grace_secs`, keyed by a labelled SHA-256 of the *old*
//!   refresh token and sealed under a key derived from it (`seal::shared_id`, SPEC §4: never
//!   from a session key, so replicas mid key rotation share it), so requests that still carry
//!   the pre-refresh cookie reuse the new tokens instead of spending a rotated token (which
//!   rotating IdPs answer by revoking the whole grant). An old cookie follows the chain of
//!   cached answers to the newest.
//! - A refreshed ID token must keep `iss`, `sub` and `aud` (OIDC Core §12.2).
//! - With a store (`[session] url`), the cache lives there, and a short lock in the store makes
//!   one replica spend the refresh token while the others wait for its cached result: the IdP
//!   sees one grant however many replicas a session's requests reach.

use super::model::{Session, Token};
use super::seal::{SharedLabel, open_shared, seal_shared, shared_id};
use crate::error::{AppError, ErrorCode};
use crate::oidc::id_token::{self, Expectations};
use crate::oidc::token::{self, TokenError};
use crate::secret::Secret;
use crate::state::{AppState, now};
use crate::store::{CacheRow, StoreError};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use memory_cache::MemoryCache;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Why a session could not be brought up to date.
#[derive(Debug)]
pub enum RefreshFailure {
    /// The session is over: no refresh token, or the IdP refused it. Expire the cookies.
    Ended(AppError),
    /// The IdP could not be asked (down, slow) and the access token has expired. Keep the
    /// session.
    Temporary(AppError),
}

/// When to refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Expired or within the margin (before forwarding to an API).
    Due,
    /// Only once expired (`/session`).
    Expired,
}

/// Tokens a refresh produced: what a cache entry holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fresh {
    access_token: Secret,
    expires_at: i64,
    issued_at: i64,
    refresh_token: Option<Secret>,
    id_token: Option<Secret>,
    scope: Option<String>,
}

#[derive(Clone)]
enum Outcome {
    Refreshed(Arc<Fresh>),
    Refused,
    Temporary(ErrorCode),
}

enum CacheHit {
    Fresh(Fresh),
    Refused,
}

/// Cached answers followed for one request (each link is one rotation within the grace period).
const MAX_CHAIN_LINKS: usize = 8;

/// Refresh grants in flight at once on one instance; more wait their turn.
const MAX_CONCURRENT_GRANTS: usize = 64;

/// Refresh coordination: single-flight on this instance; the cache in memory, or in the store
/// when one is configured.
pub struct Refresher {
    inflight: Mutex<HashMap<[u8; 32], Shared<BoxFuture<'static, Outcome>>>>,
    /// Used only without a store (`[session] url`), which then holds the cache instead.
    cache: Mutex<MemoryCache>,
    grants: tokio::sync::Semaphore,
}

impl Refresher {
    /// `cache_max_bytes`: the bound of the in-memory cache (`[session] cache_max_bytes`).
    pub fn new(cache_max_bytes: usize) -> Self {
        Self {
            inflight: Mutex::default(),
            cache: Mutex::new(MemoryCache::new(cache_max_bytes)),
            grants: tokio::sync::Semaphore::new(MAX_CONCURRENT_GRANTS),
        }
    }

    /// Drop expired in-memory entries (the periodic sweep: without it, the last entries of a
    /// burst would stay until the next refresh). The bytes given back, and those still held.
    pub fn sweep(&self, now: i64) -> (usize, usize) {
        let mut cache = lock(&self.cache);
        let freed = cache.expire(now);
        metrics::gauge!("bff_refresh_cache_bytes").set(cache.bytes() as f64);
        (freed, cache.bytes())
    }
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refresher")
    }
}

/// A poisoned lock only means another request panicked mid-update of a plain map; the map is
/// still usable, and refusing every refresh afterwards would be worse.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn due(session: &Session, now: i64, margin_secs: u64) -> bool {
    let remaining = session.access_expires_at - now;
    if remaining <= 0 {
        return true;
    }
    let lifetime = session.access_expires_at - session.access_issued_at;
    let margin = margin_secs as i64;
    lifetime > margin && remaining <= margin
}

impl Refresher {
    /// The cached answer for `rt`, if it is still useful to a session whose current access
    /// token was issued at `issued_at`.
    async fn cached(
        &self,
        state: &AppState,
        id: &[u8; 32],
        rt: &str,
        issued_at: i64,
        now: i64,
    ) -> Result<Option<CacheHit>, StoreError> {
        let sealed = match &state.store {
            Some(store) => match store.cache_get(id, now).await? {
                None => return Ok(None),
                Some(CacheRow::Refused) => return Ok(Some(CacheHit::Refused)),
                Some(CacheRow::Sealed(s)) => s,
            },
            None => {
                let cache = lock(&self.cache);
                let Some(entry) = cache.get(id, now) else {
                    return Ok(None);
                };
                match &entry.sealed {
                    Some(s) => s.clone(),
                    None => return Ok(Some(CacheHit::Refused)),
                }
            }
        };
        let Some(plain) = open_shared(SharedLabel::RefreshCache, rt, id, &sealed) else {
            return Ok(None);
        };
        let Ok(fresh) = serde_json::from_slice::<Fresh>(&plain) else {
            return Ok(None);
        };
        // An IdP that does not rotate refresh tokens maps every refresh to the same entry: only
        // an answer newer than what the session has is of use. One whose access token has
        // expired is still the newest link: its refresh token is the one to spend next, never
        // the session's own, which it rotated away.
        Ok((fresh.issued_at > issued_at).then_some(CacheHit::Fresh(fresh)))
    }

    /// Cache a result; false when it could not be shared through the store.
    async fn store(&self, state: &AppState, id: [u8; 32], rt: &str, fresh: Option<&Fresh>, now: i64) -> bool {
        let sealed = match fresh {
            Some(f) => {
                let Some(sealed) =
                    serde_json::to_vec(f).ok().and_then(|p| seal_shared(SharedLabel::RefreshCache, rt, &id, &p))
                else {
                    return false;
                };
                Some(sealed)
            }
            None => None,
        };
        let expires_at = now + state.settings.oidc.refresh_grace_secs as i64;
        if let Some(store) = &state.store {
            if let Err(e) = store.cache_put(&id, sealed.as_deref(), expires_at).await {
                tracing::warn!(error = %e, "refresh result not shared through the store");
                return false;
            }
            return true;
        }
        let evicted = lock(&self.cache).insert(id, sealed, expires_at, now);
        if evicted > 0 {
            metrics::counter!("bff_refresh_cache_evictions_total").increment(evicted as u64);
        }
        true
    }

    /// Drop the cache entries a session's tokens came from or led to (logout).
    pub async fn forget(&self, state: &AppState, session: &Session) {
        let ids = session
            .refresh_token
            .as_ref()
            .map(|rt| shared_id(SharedLabel::RefreshCache, rt.expose()))
            .into_iter()
            .chain(session.refreshed_from);
        match &state.store {
            Some(store) => {
                for id in ids {
                    if let Err(e) = store.cache_delete(&id).await {
                        tracing::warn!(error = %e, "refresh-cache entry not deleted");
                    }
                }
            }
            None => {
                let mut cache = lock(&self.cache);
                for id in ids {
                    cache.remove(&id);
                }
            }
        }
    }
}

fn apply(session: &mut Session, fresh: &Fresh, from: &[u8; 32]) {
    session.access_token = Token::new(fresh.access_token.expose());
    session.access_expires_at = fresh.expires_at;
    session.access_issued_at = fresh.issued_at;
    if let Some(rt) = &fresh.refresh_token {
        session.refresh_token = Some(rt.clone());
    }
    if let Some(id) = &fresh.id_token {
        session.id_token = Token::new(id.expose());
    }
    if fresh.scope.is_some() {
        session.scope = fresh.scope.clone();
    }
    session.refreshed_from = Some(*from);
}

fn needed(state: &AppState, session: &Session, when: When, t: i64) -> bool {
    match when {
        When::Due => due(session, t, state.settings.oidc.refresh_margin_secs),
        When::Expired => t >= session.access_expires_at,
    }
}

/// Bring `session`'s access token up to date. Ok(true) when it changed and must be re-sealed.
/// The session is copied out of the memo (`Arc::make_mut`) only when a refresh is needed.
pub async fn ensure_fresh(state: &AppState, session: &mut Arc<Session>, when: When) -> Result<bool, RefreshFailure> {
    if !needed(state, session, when, now()) {
        return Ok(false);
    }
    // `make_mut` copies a session the memo shares; the memo's copy is known by its address
    // (an integer, so that no raw pointer is held across the await).
    let memoised = Arc::as_ptr(session) as usize;
    // Boxed: rarely taken, and large (the IdP call, the shared cache and lock).
    let result = Box::pin(refresh_session(state, Arc::make_mut(session), when)).await;
    if let Err(RefreshFailure::Ended(_)) = &result {
        // Over: its tokens leave the memo now, not when the slot happens to be reused.
        super::memo::forget_address(memoised);
    }
    result
}

async fn refresh_session(state: &AppState, session: &mut Session, when: When) -> Result<bool, RefreshFailure> {
    let mut changed = false;
    // A cached answer may itself have been refreshed since (several rotations within the grace
    // period): follow the chain to its newest link, so that an old cookie is never answered with
    // a refresh token that was rotated away — the browser would store it and spend it later.
    for _ in 0..MAX_CHAIN_LINKS {
        let t = now();
        if !changed && !needed(state, session, when, t) {
            return Ok(false);
        }
        let Some(rt) = session.refresh_token.clone() else {
            if changed || t < session.access_expires_at {
                return Ok(changed);
            }
            tracing::info!("access token expired and the session has no refresh token; ending it");
            return Err(RefreshFailure::Ended(ErrorCode::SessionExpired.into()));
        };
        let refresher = &state.refresher;
        let id = shared_id(SharedLabel::RefreshCache, rt.expose());
        let hit = match refresher.cached(state, &id, rt.expose(), session.access_issued_at, t).await {
            Ok(hit) => hit,
            Err(e) if changed || t < session.access_expires_at => {
                tracing::warn!(error = %e, "refresh cache unavailable; continuing with the current access token");
                return Ok(changed);
            }
            Err(e) => return Err(RefreshFailure::Temporary(e.into())),
        };
        match hit {
            Some(CacheHit::Fresh(fresh)) => {
                tracing::debug!("refreshed tokens reused from the refresh cache");
                metrics::counter!("bff_refresh_cache_hits_total").increment(1);
                apply(session, &fresh, &id);
                changed = true;
                continue;
            }
            Some(CacheHit::Refused) => {
                tracing::info!("refresh token recently refused by the IdP; ending the session without asking again");
                return Err(RefreshFailure::Ended(ErrorCode::SessionExpired.into()));
            }
            // The newest link: served from the cache, it triggers no further refresh while its
            // access token is unexpired (SPEC §6.1); an expired one is refreshed below.
            None if changed && (t < session.access_expires_at || !needed(state, session, when, t)) => {
                return Ok(true);
            }
            None => {}
        }
        #[cfg(test)]
        tests::after_cache_miss().await;
        let shared = {
            let mut inflight = lock(&refresher.inflight);
            inflight
                .entry(id)
                .or_insert_with(|| {
                    let original = Original {
                        sub: session.sub.clone(),
                        aud: session.audience(),
                        issued_at: session.access_issued_at,
                    };
                    let task = tokio::spawn(run_refresh(state.clone(), id, rt.clone(), original));
                    async move { task.await.unwrap_or(Outcome::Temporary(ErrorCode::IdpUnavailable)) }.boxed().shared()
                })
                .clone()
        };
        match shared.await {
            Outcome::Refreshed(fresh) => {
                apply(session, &fresh, &id);
                changed = true;
                // Shared from another request (or replica) whose answer has already expired:
                // follow on with its refresh token.
                if now() < session.access_expires_at {
                    return Ok(true);
                }
            }
            Outcome::Refused => {
                metrics::counter!("bff_sessions_ended_total", "reason" => "refresh_refused").increment(1);
                return Err(RefreshFailure::Ended(ErrorCode::SessionExpired.into()));
            }
            Outcome::Temporary(code) if now() < session.access_expires_at => {
                tracing::warn!(
                    error = code.as_str(),
                    "refresh failed; the access token is still valid, continuing with it"
                );
                return Ok(changed);
            }
            Outcome::Temporary(code) => return Err(RefreshFailure::Temporary(code.into())),
        }
    }
    Ok(changed)
}

/// One refresh-token grant; always completes (it runs in its own task), caches its result and
/// leaves the in-flight map.
/// What a refreshed ID token must keep (OIDC Core §12.2; `iss` is fixed by configuration and
/// checked exactly by validation).
struct Original {
    sub: String,
    aud: Vec<String>,
    /// When the session's current access token was issued (to judge a cached answer).
    issued_at: i64,
}

/// Removes a refresh from the in-flight map when it ends, however it ends (even by a panic),
/// so a session is never stuck waiting on a refresh that will not finish.
struct InFlight {
    state: AppState,
    id: [u8; 32],
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.state.refresher.inflight).remove(&self.id);
    }
}

/// How long a replica's refresh lock lives: the token call and a possible JWKS refetch (each
/// bounded by `http_timeout_secs`), plus the cache read and write (each bounded by the store's
/// timeout), plus 5 s of margin — 3 × `http_timeout_secs` + 9 s. docs/operations.md says so.
pub fn lock_ttl(http_timeout: std::time::Duration) -> std::time::Duration {
    http_timeout * 3 + crate::store::OP_TIMEOUT * 2 + std::time::Duration::from_secs(5)
}

async fn run_refresh(state: AppState, id: [u8; 32], rt: Secret, original: Original) -> Outcome {
    let _in_flight = InFlight { state: state.clone(), id };
    let from_cache = |hit: CacheHit| match hit {
        CacheHit::Fresh(f) => Outcome::Refreshed(Arc::new(f)),
        CacheHit::Refused => Outcome::Refused,
    };
    let Some(store) = state.store.clone() else {
        // The caller's cache check and this in-flight slot are not one atomic step: a refresh
        // of the same token may have finished (cached, then left the map) in between. Its
        // result is in the cache now, since it is cached before the slot is freed.
        if let Ok(Some(hit)) = state.refresher.cached(&state, &id, rt.expose(), original.issued_at, now()).await {
            return from_cache(hit);
        }
        return grant_and_cache(&state, id, &rt, &original, None).await.0;
    };
    // Across replicas: whoever takes the lock spends the token; the others wait for its answer
    // in the shared cache. A holder that dies lets the lock expire; then someone else takes it.
    let owner: [u8; 16] = crate::secret::random_bytes();
    // The lock must outlive everything done under it: the token call and a possible JWKS
    // refetch (each bounded by http_timeout), the cache read and write (each bounded by the
    // store's timeout), plus margin. The grant slot is taken before the lock, so waiting for
    // one never eats into it. Expiry is on the store's clock.
    let http_timeout = state.settings.oidc.http_timeout;
    let lock_ttl = lock_ttl(http_timeout);
    let lock_ttl_ms = lock_ttl.as_millis() as i64;
    // The grant slot first: the lock's lifetime must not be spent queueing for one.
    let Ok(permit) = state.refresher.grants.acquire().await else {
        return Outcome::Temporary(ErrorCode::IdpUnavailable);
    };
    match store.try_lock(&id, &owner, lock_ttl_ms).await {
        Ok(true) => {
            // Another replica may have finished between our cache check and the lock.
            let (outcome, shared) =
                match state.refresher.cached(&state, &id, rt.expose(), original.issued_at, now()).await {
                    Ok(Some(hit)) => (from_cache(hit), true),
                    Ok(None) => grant_and_cache(&state, id, &rt, &original, Some(permit)).await,
                    Err(_) => (Outcome::Temporary(ErrorCode::SessionStoreUnavailable), true),
                };
            // A result the other replicas cannot see: keep the lock until it expires. Waiters
            // never take over a lock they saw held (below), so none of them spends the token
            // again; they give up with a temporary error.
            if shared && let Err(e) = store.unlock(&id, &owner).await {
                tracing::warn!(error = %e, "refresh lock not released; it expires by itself");
            }
            outcome
        }
        Ok(false) => {
            drop(permit);
            tracing::debug!("another replica is refreshing this session; waiting for its result");
            // Wait at most one lock lifetime from now, which covers the holder's whole
            // refresh; then give up rather than take the lock over and spend the token again.
            let deadline = tokio::time::Instant::now() + lock_ttl;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                match state.refresher.cached(&state, &id, rt.expose(), original.issued_at, now()).await {
                    Ok(Some(hit)) => {
                        metrics::counter!("bff_refresh_cache_hits_total").increment(1);
                        return from_cache(hit);
                    }
                    Ok(None) => {}
                    Err(_) => return Outcome::Temporary(ErrorCode::SessionStoreUnavailable),
                }
            }
            tracing::warn!("timed out waiting for another replica's refresh");
            Outcome::Temporary(ErrorCode::IdpTimeout)
        }
        Err(e) => {
            tracing::warn!(error = %e, "refresh lock unavailable; not refreshing");
            Outcome::Temporary(ErrorCode::SessionStoreUnavailable)
        }
    }
}

/// One grant (under `permit`, or a grant slot taken here) and its caching. The flag is false
/// when the result could not be cached for other replicas.
async fn grant_and_cache(
    state: &AppState,
    id: [u8; 32],
    rt: &Secret,
    original: &Original,
    permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> (Outcome, bool) {
    let permit = match permit {
        Some(p) => p,
        None => match state.refresher.grants.acquire().await {
            Ok(p) => p,
            Err(_) => return (Outcome::Temporary(ErrorCode::IdpUnavailable), true),
        },
    };
    let outcome = refresh_grant(state, rt, original).await;
    drop(permit);
    let t = now();
    let shared = match &outcome {
        Outcome::Refreshed(fresh) => state.refresher.store(state, id, rt.expose(), Some(fresh), t).await,
        Outcome::Refused => state.refresher.store(state, id, rt.expose(), None, t).await,
        Outcome::Temporary(_) => true,
    };
    (outcome, shared)
}

async fn refresh_grant(state: &AppState, rt: &Secret, original: &Original) -> Outcome {
    let Ok(provider) = state.oidc.provider() else {
        return Outcome::Temporary(ErrorCode::IdpUnavailable);
    };
    let settings = &state.settings.oidc;
    let started = now();
    let tokens = match token::refresh(&state.oidc.http, &provider.metadata.token_endpoint, settings, rt.expose()).await
    {
        Ok(t) => t,
        Err(TokenError::Refused(code)) => {
            tracing::info!(idp_error = code.as_str(), "IdP refused the refresh token; ending the session");
            metrics::counter!("bff_refresh_total", "result" => "refused").increment(1);
            return Outcome::Refused;
        }
        Err(e) => {
            tracing::warn!(error = %e, "refresh failed");
            metrics::counter!("bff_refresh_total", "result" => "error").increment(1);
            let code = if e == TokenError::Timeout { ErrorCode::IdpTimeout } else { ErrorCode::IdpUnavailable };
            return Outcome::Temporary(code);
        }
    };
    let mut id_token_verified = true;
    if let Some(new_id) = &tokens.id_token {
        let expectations = Expectations {
            issuer: &settings.issuer,
            client_id: &settings.client_id,
            client_secret: settings.client_secret.expose(),
            algorithms: &settings.id_token_signing_algs,
            clock_skew_secs: settings.clock_skew_secs,
            // auth_time was checked at login; a refresh does not re-authenticate.
            max_age: None,
            nonce: None,
            sub: Some(&original.sub),
            access_token: Some(tokens.access_token.expose()),
            now: started,
        };
        match id_token::validate(new_id.expose(), &expectations, &provider.jwks, &state.oidc.http).await {
            Ok(valid) if valid.aud == original.aud => {}
            Ok(_) => {
                tracing::warn!("refreshed ID token names other audiences; ending the session");
                metrics::counter!("bff_refresh_total", "result" => "invalid_id_token").increment(1);
                return Outcome::Refused;
            }
            // The IdP's keys could not be fetched. The grant succeeded and may have rotated the
            // refresh token: keep the new tokens (losing them would spend the old refresh token
            // again) and the old ID token.
            Err(id_token::IdTokenError::KeysUnavailable) => {
                tracing::warn!("refreshed ID token not verifiable (JWKS unavailable); keeping the previous ID token");
                id_token_verified = false;
            }
            Err(e) => {
                tracing::warn!(reason = %e, "refreshed ID token refused; ending the session");
                metrics::counter!("bff_refresh_total", "result" => "invalid_id_token").increment(1);
                return Outcome::Refused;
            }
        }
    }
    metrics::counter!("bff_refresh_total", "result" => "ok").increment(1);
    tracing::info!(has_refresh_token = tokens.refresh_token.is_some(), "access token refreshed");
    Outcome::Refreshed(Arc::new(Fresh {
        access_token: tokens.access_token,
        expires_at: started + tokens.expires_in,
        issued_at: started,
        refresh_token: tokens.refresh_token,
        id_token: tokens.id_token.filter(|_| id_token_verified),
        scope: tokens.scope,
    }))
}

mod memory_cache;
#[cfg(test)]
mod tests;
