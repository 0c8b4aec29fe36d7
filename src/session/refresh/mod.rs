//! Keeping a session's access token usable (SPEC §4, §6).
//!
//! - An access token is refreshed when it has expired, or (for the proxy) when it is within
//!   `refresh_margin_secs` of expiry — a token whose whole lifetime fits in the margin only at
//!   expiry.
//! - Concurrent requests of one session on this instance share one refresh: the refresh runs
//!   in its own task (a browser aborting the request that started it cannot cancel it and
//!   leave a rotated token half-spent), and every waiter receives its outcome.
//! - The result is cached for `refresh_grace_secs` (`cache`), so requests that still carry the
//!   pre-refresh cookie reuse the new tokens instead of spending a rotated token (which
//!   rotating IdPs answer by revoking the whole grant). An old cookie follows the chain of
//!   cached answers to the newest.
//! - A refreshed ID token must keep `iss`, `sub` and `aud` (`grant`, OIDC Core §12.2).
//! - With a store (`[session] url`), the cache lives there, and a short lock in the store makes
//!   one replica spend the refresh token while the others wait for its cached result: the IdP
//!   sees one grant however many replicas a session's requests reach.

mod cache;
mod grant;
#[cfg(test)]
mod tests;

use super::memo;
use super::model::Session;
use super::seal::{SharedLabel, shared_id};
use crate::clock::now;
use crate::error::{AppError, ErrorCode};
use crate::oidc::providers::Providers;
use crate::secret::Secret;
use crate::store::Store;
use cache::{CacheHit, RefreshCache, cache_key, lock};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use grant::{Original, Outcome, apply, refresh_grant};
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

/// Cached answers followed for one request (each link is one rotation within the grace period).
const MAX_CHAIN_LINKS: usize = 8;

/// Refresh coordination: single-flight on this instance, the result cache, and the
/// cross-replica lock when a store is configured. Cheap to clone (one `Arc`): a refresh runs in
/// its own task, which holds a clone.
#[derive(Clone)]
pub struct Refresher(Arc<Inner>);

struct Inner {
    providers: Arc<Providers>,
    /// `[session] url`: the shared cache and the refresh locks live there.
    store: Option<Store>,
    cache: RefreshCache,
    inflight: Mutex<HashMap<[u8; 32], Shared<BoxFuture<'static, Outcome>>>>,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refresher")
    }
}

impl Refresher {
    /// `memory`: the instance's in-memory cache (used when there is no store).
    /// The shared cache serves every provider's sessions with the `[oidc]` (default)
    /// provider's `refresh_grace_secs`; margins and timeouts are each session's provider's.
    pub fn new(providers: Arc<Providers>, store: Option<Store>, memory: crate::session::memory_cache::Shared) -> Self {
        let grace = providers.default_provider().settings().refresh_grace_secs;
        let cache = RefreshCache::new(store.clone(), grace, memory);
        Self(Arc::new(Inner { providers, store, cache, inflight: Mutex::default() }))
    }

    /// Drop expired in-memory cache entries: the bytes given back, and those still held.
    pub fn sweep(&self, now: i64) -> (usize, usize) {
        self.0.cache.sweep(now)
    }

    /// Drop the cache entries a session's tokens came from or led to (logout).
    pub async fn forget(&self, session: &Session) {
        self.0.cache.forget(session).await;
    }

    /// Does `session` need a refresh at `t`?
    pub(super) fn needed(&self, session: &Session, when: When, t: i64) -> bool {
        match when {
            When::Due => {
                let margin =
                    self.0.providers.of(session.provider.as_deref()).map_or(0, |p| p.settings().refresh_margin_secs);
                due(session, t, margin)
            }
            When::Expired => t >= session.access_expires_at,
        }
    }

    /// Bring `session`'s access token up to date. Ok(true) when it changed and must be
    /// re-sealed. The session is copied out of the memo (`Arc::make_mut`) only when a refresh
    /// is needed.
    pub async fn ensure_fresh(&self, session: &mut Arc<Session>, when: When) -> Result<bool, RefreshFailure> {
        if !self.needed(session, when, now()) {
            return Ok(false);
        }
        // `make_mut` copies a session the memo shares; the memo's copy is known by its address
        // (an integer, so that no raw pointer is held across the await).
        let memoised = Arc::as_ptr(session) as usize;
        // Boxed: rarely taken, and large (the IdP call, the shared cache and lock).
        let result = Box::pin(self.refresh_session(Arc::make_mut(session), when)).await;
        if let Err(RefreshFailure::Ended(_)) = &result {
            // Over: its tokens leave the memo now, not when the slot happens to be reused.
            memo::forget_address(memoised);
        }
        result
    }

    async fn refresh_session(&self, session: &mut Session, when: When) -> Result<bool, RefreshFailure> {
        // Only the session's own provider refreshes it (SPEC §3.7).
        let Some(oidc) = self.0.providers.of(session.provider.as_deref()).cloned() else {
            tracing::warn!("the session's provider is no longer configured; ending it");
            return Err(RefreshFailure::Ended(ErrorCode::SessionExpired.into()));
        };
        let mut changed = false;
        // A cached answer may itself have been refreshed since (several rotations within the grace
        // period): follow the chain to its newest link, so that an old cookie is never answered with
        // a refresh token that was rotated away — the browser would store it and spend it later.
        for _ in 0..MAX_CHAIN_LINKS {
            let t = now();
            if !changed && !self.needed(session, when, t) {
                return Ok(false);
            }
            let Some(rt) = session.refresh_token.clone() else {
                if changed || t < session.access_expires_at {
                    return Ok(changed);
                }
                tracing::info!("access token expired and the session has no refresh token; ending it");
                return Err(RefreshFailure::Ended(ErrorCode::SessionExpired.into()));
            };
            // Named and sealed by the token *and* its provider: a refresh token string two IdPs
            // both issued never shares an entry.
            let key = cache_key(oidc.name(), &rt);
            let id = shared_id(SharedLabel::RefreshCache, &key);
            let hit = match self.0.cache.cached(&id, &key, session.access_issued_at, t).await {
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
                    tracing::info!(
                        "refresh token recently refused by the IdP; ending the session without asking again"
                    );
                    return Err(RefreshFailure::Ended(ErrorCode::SessionExpired.into()));
                }
                // The newest link: served from the cache, it triggers no further refresh while its
                // access token is unexpired (SPEC §6.1); an expired one is refreshed below.
                None if changed && (t < session.access_expires_at || !self.needed(session, when, t)) => {
                    return Ok(true);
                }
                None => {}
            }
            #[cfg(test)]
            tests::after_cache_miss().await;
            let shared = {
                let mut inflight = lock(&self.0.inflight);
                inflight
                    .entry(id)
                    .or_insert_with(|| {
                        let original = Original {
                            oidc: oidc.clone(),
                            sub: session.sub.clone(),
                            aud: session.audience(),
                            issued_at: session.access_issued_at,
                            dpop: session.dpop.as_ref().and_then(|k| k.signer().cloned()),
                        };
                        let task = tokio::spawn(run_refresh(self.clone(), id, rt.clone(), original));
                        async move { task.await.unwrap_or(Outcome::Temporary(ErrorCode::IdpUnavailable)) }
                            .boxed()
                            .shared()
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
}

pub fn due(session: &Session, now: i64, margin_secs: u64) -> bool {
    now >= renew_at(session.access_issued_at, session.access_expires_at, margin_secs as i64)
}

/// When a token issued at `issued_at` and expiring at `expires_at` is due for renewal (SPEC
/// §6.1): `margin` before it expires, or at its expiry when its whole lifetime fits in the
/// margin. The session's token is refreshed then; a route's exchanged token (§6.2) is served
/// from the cache until then.
pub fn renew_at(issued_at: i64, expires_at: i64, margin: i64) -> i64 {
    if expires_at - issued_at > margin { expires_at - margin } else { expires_at }
}

/// One refresh-token grant; always completes (it runs in its own task), caches its result and
/// leaves the in-flight map.
/// Removes a refresh from the in-flight map when it ends, however it ends (even by a panic),
/// so a session is never stuck waiting on a refresh that will not finish.
struct InFlight {
    refresher: Refresher,
    id: [u8; 32],
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.refresher.0.inflight).remove(&self.id);
    }
}

/// How long a replica's refresh lock lives: the token call and a possible JWKS refetch (each
/// bounded by `http_timeout_secs`), plus the cache read and write (each bounded by the store's
/// timeout), plus 5 s of margin — 3 × `http_timeout_secs` + 9 s. docs/operations.md says so.
pub fn lock_ttl(http_timeout: std::time::Duration) -> std::time::Duration {
    http_timeout * 3 + crate::store::OP_TIMEOUT * 2 + std::time::Duration::from_secs(5)
}

async fn run_refresh(refresher: Refresher, id: [u8; 32], rt: Secret, original: Original) -> Outcome {
    let _in_flight = InFlight { refresher: refresher.clone(), id };
    let r = &refresher.0;
    let key = cache_key(original.oidc.name(), &rt);
    let from_cache = |hit: CacheHit| match hit {
        CacheHit::Fresh(f) => Outcome::Refreshed(Arc::new(f)),
        CacheHit::Refused => Outcome::Refused,
    };
    let Some(store) = r.store.clone() else {
        // The caller's cache check and this in-flight slot are not one atomic step: a refresh
        // of the same token may have finished (cached, then left the map) in between. Its
        // result is in the cache now, since it is cached before the slot is freed.
        if let Ok(Some(hit)) = r.cache.cached(&id, &key, original.issued_at, now()).await {
            return from_cache(hit);
        }
        return grant_and_cache(r, id, &rt, &original, None).await.0;
    };
    // Across replicas: whoever takes the lock spends the token; the others wait for its answer
    // in the shared cache. A holder that dies lets the lock expire; then someone else takes it.
    let owner: [u8; 16] = crate::secret::random_bytes();
    // The lock must outlive everything done under it: the token call and a possible JWKS
    // refetch (each bounded by http_timeout), the cache read and write (each bounded by the
    // store's timeout), plus margin. The grant slot is taken before the lock, so waiting for
    // one never eats into it. Expiry is on the store's clock.
    let http_timeout = original.oidc.settings().http_timeout;
    let lock_ttl = lock_ttl(http_timeout);
    let lock_ttl_ms = lock_ttl.as_millis() as i64;
    // The grant slot first: the lock's lifetime must not be spent queueing for one.
    // Grants in flight are bounded per provider (`oidc::Slots`).
    let Some(permit) = original.oidc.refresh_slot().await else {
        return Outcome::Temporary(ErrorCode::IdpTimeout);
    };
    match store.try_lock(&id, &owner, lock_ttl_ms).await {
        Ok(true) => {
            // Another replica may have finished between our cache check and the lock.
            let (outcome, shared) = match r.cache.cached(&id, &key, original.issued_at, now()).await {
                Ok(Some(hit)) => (from_cache(hit), true),
                Ok(None) => grant_and_cache(r, id, &rt, &original, Some(permit)).await,
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
                match r.cache.cached(&id, &key, original.issued_at, now()).await {
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
    r: &Inner,
    id: [u8; 32],
    rt: &Secret,
    original: &Original,
    permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> (Outcome, bool) {
    let permit = match permit {
        Some(p) => p,
        None => match original.oidc.refresh_slot().await {
            Some(p) => p,
            None => return (Outcome::Temporary(ErrorCode::IdpTimeout), true),
        },
    };
    let outcome = refresh_grant(rt, original).await;
    drop(permit);
    let t = now();
    let key = cache_key(original.oidc.name(), rt);
    let shared = match &outcome {
        Outcome::Refreshed(fresh) => r.cache.put(id, &key, Some(fresh), t).await,
        Outcome::Refused => r.cache.put(id, &key, None, t).await,
        Outcome::Temporary(_) => true,
    };
    (outcome, shared)
}
