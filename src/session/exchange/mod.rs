//! A token per route (SPEC §6.2): the session's access token exchanged (RFC 8693) for one
//! minted for a route's `resource`, `audience` and `scopes`, so that no upstream sees the
//! login's token or another API's.
//!
//! - Cached per (session, route) until `refresh_margin_secs` before it expires (a token whose
//!   whole lifetime fits in the margin: until it expires), never in the cookie: in memory
//!   (`memory_cache`, within `cache_max_bytes`), or in the store when `[session] url` is set, so
//!   one exchange serves every replica.
//! - An entry's id is a labelled SHA-256 of the session's `logout_token` and the route; a store
//!   entry is sealed under a key derived from the `logout_token`, which no upstream ever sees.
//!   The entry also names the access token it came from (a labelled hash of it) and serves only
//!   a session that still holds that token: a refresh re-exchanges. Keeping the access token out
//!   of the id is what lets logout delete every entry of the session, whatever access tokens
//!   its copies hold (docs/security.md).
//! - Concurrent requests of one session and route share one exchange (single-flight, in its own
//!   task, like a refresh); across replicas, a short lock in the store does the same.
//! - A refusal is remembered for 10 s per (session, route, access token) and answered from the
//!   cache; it never ends the session.

mod cache;

use super::memory_cache::{self, lock};
use super::model::Session;
use super::refresh::{lock_ttl, renew_at};
use super::seal::{SharedLabel, shared_id_of};
use crate::clock::now;
use crate::error::{AppError, ErrorCode, route_exchange_error};
use crate::oidc::Oidc;
use crate::oidc::dpop::Signer;
use crate::oidc::providers::Providers;
use crate::oidc::token::TokenError;
use crate::settings::routes::{ExchangeSpec, Route, RouteToken};
use crate::store::Store;
use cache::{ExchangeCache, Key, Outcome, bearer_value, entry_id};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use http::HeaderValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How long a refusal is answered from the cache before the IdP is asked again (SPEC §6.2).
const REFUSAL_SECS: i64 = 10;

/// Route token exchanges: the cache, single-flight and the cross-replica lock. Cheap to clone.
#[derive(Clone)]
pub struct Exchanger(Arc<Inner>);

struct Inner {
    /// An exchange goes to the session's provider (SPEC §3.7).
    providers: Arc<Providers>,
    cache: ExchangeCache,
    /// The `token = "exchange"` routes (prefix, what is asked for): what logout deletes.
    routes: Vec<(String, ExchangeSpec)>,
    inflight: Mutex<HashMap<[u8; 32], Shared<BoxFuture<'static, Outcome>>>>,
}

impl std::fmt::Debug for Exchanger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exchanger")
    }
}

impl Exchanger {
    pub fn new(
        providers: Arc<Providers>,
        store: Option<Store>,
        memory: memory_cache::Shared,
        routes: &[Route],
    ) -> Self {
        let routes = routes
            .iter()
            .filter_map(|r| match &r.token {
                RouteToken::Exchange(spec) => Some((r.prefix.clone(), spec.clone())),
                _ => None,
            })
            .collect();
        let cache = ExchangeCache { store, memory };
        Self(Arc::new(Inner { providers, cache, routes, inflight: Mutex::default() }))
    }

    /// Are there exchange routes at all? (`/session` lists their tokens' expiry only then.)
    pub fn any_routes(&self) -> bool {
        !self.0.routes.is_empty()
    }

    /// The `Authorization` value for `prefix`'s upstream: its exchanged token, from the cache or
    /// a new exchange of `subject` (the session's own `Bearer …` value).
    pub async fn bearer(
        &self,
        session: &Session,
        subject: &HeaderValue,
        prefix: &str,
        spec: &ExchangeSpec,
    ) -> Result<HeaderValue, AppError> {
        let key = Key::new(session.logout_token.as_bytes(), prefix, subject, spec);
        match self.0.cache.get(&key, now()).await {
            Ok(Some(outcome)) => {
                metrics::counter!("bff_exchange_cache_hits_total").increment(1);
                return finish(outcome);
            }
            Ok(None) => {}
            Err(e) => return Err(e.into()),
        }
        // An entry lives no longer than the session's access token (a refresh replaces it, and
        // the entry could never be used again) nor the session.
        let usable_until = session.access_expires_at.min(session.absolute_expires_at);
        // Boxed: rarely taken, and large (the IdP call, the store and its lock).
        let dpop = session.dpop.as_ref().and_then(|k| k.signer().cloned());
        let Some(oidc) = self.0.providers.of(session.provider.as_deref()).cloned() else {
            return Err(ErrorCode::SessionExpired.into());
        };
        Box::pin(self.exchange_once(key, subject, spec, usable_until, dpop, oidc)).await
    }

    async fn exchange_once(
        &self,
        key: Key<'_>,
        subject: &HeaderValue,
        spec: &ExchangeSpec,
        usable_until: i64,
        dpop: Option<Arc<Signer>>,
        oidc: Arc<Oidc>,
    ) -> Result<HeaderValue, AppError> {
        let Some(token) = subject.to_str().ok().and_then(|b| b.strip_prefix("Bearer ")) else {
            return Err(ErrorCode::IdpUnavailable.into());
        };
        // One flight per entry and access token: two access tokens of one session never share.
        let flight = shared_id_of(SharedLabel::ExchangeCache, &[&key.id, &key.subject]);
        let shared = {
            let mut inflight = lock(&self.0.inflight);
            inflight
                .entry(flight)
                .or_insert_with(|| {
                    let job = Job {
                        exchanger: self.clone(),
                        flight,
                        id: key.id,
                        subject: key.subject,
                        logout_token: key.logout_token.to_vec(),
                        token: token.to_owned(),
                        spec: spec.clone(),
                        usable_until,
                        dpop,
                        oidc,
                    };
                    let task = tokio::spawn(job.run());
                    async move { task.await.unwrap_or(Outcome::Failed(ErrorCode::IdpUnavailable.into())) }
                        .boxed()
                        .shared()
                })
                .clone()
        };
        finish(shared.await)
    }

    /// Delete every exchanged token of `session` (logout): the entries of all its routes,
    /// whichever access token they came from. A tombstone takes each place for as long as an
    /// exchange already under way could still try to cache its result there.
    pub async fn forget(&self, session: &Session) {
        let timeout = self.0.providers.of(session.provider.as_deref()).map(|p| p.settings().http_timeout);
        let until = now() + lock_ttl(timeout.unwrap_or(std::time::Duration::from_secs(120))).as_secs() as i64;
        for (prefix, _) in &self.0.routes {
            self.0.cache.bury(&entry_id(session.logout_token.as_bytes(), prefix), until).await;
        }
    }

    /// `(route prefix, token expiry)` of every exchange route with a cached token for this
    /// session's current access token (`/session`: never the token itself).
    pub async fn cached_expiries(&self, session: &Session) -> Vec<(&str, i64)> {
        let Some(subject) = session.access_token.bearer() else {
            return Vec::new();
        };
        let t = now();
        let mut out = Vec::new();
        for (prefix, spec) in &self.0.routes {
            let key = Key::new(session.logout_token.as_bytes(), prefix, &subject, spec);
            if let Ok(Some(Outcome::Token { expires_at, .. })) = self.0.cache.get(&key, t).await {
                out.push((prefix.as_str(), expires_at));
            }
        }
        out
    }
}

fn finish(outcome: Outcome) -> Result<HeaderValue, AppError> {
    match outcome {
        Outcome::Token { bearer, .. } => Ok(bearer),
        Outcome::Refused(code) => Err(route_exchange_error(TokenError::Refused(code))),
        Outcome::Failed(e) => Err(e),
    }
}

/// One exchange, run in its own task so that a browser aborting the request cannot cancel it
/// half-way; its result is cached before it leaves the in-flight map.
struct Job {
    exchanger: Exchanger,
    flight: [u8; 32],
    id: [u8; 32],
    subject: [u8; 32],
    logout_token: Vec<u8>,
    token: String,
    spec: ExchangeSpec,
    /// The entry is not kept past this (the session's access-token and absolute expiry).
    usable_until: i64,
    /// The session's DPoP signer: the exchange carries a proof, and its token is bound too.
    dpop: Option<Arc<Signer>>,
    /// The session's provider.
    oidc: Arc<Oidc>,
}

/// Leaves the in-flight map however the job ends (even by a panic).
struct InFlight<'a>(&'a Exchanger, [u8; 32]);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.0.0.inflight).remove(&self.1);
    }
}

impl Job {
    async fn run(self) -> Outcome {
        let _in_flight = InFlight(&self.exchanger, self.flight);
        let x = &self.exchanger;
        let key = Key { id: self.id, subject: self.subject, logout_token: &self.logout_token };
        // The caller's cache check and this flight are not one atomic step: an exchange may have
        // finished (cached, then left the map) in between.
        if let Ok(Some(hit)) = x.0.cache.get(&key, now()).await {
            return hit;
        }
        let Some(store) = x.0.cache.store.clone() else {
            return self.exchange_and_cache(&key).await;
        };
        // Across replicas: whoever holds the lock exchanges, the others wait for its entry. The
        // lock is per access token too (a request still holding an older one never waits for an
        // entry it could not use), always released (an exchange spends nothing single-use, so a
        // holder that failed must not make the others wait out the lock), and retried by the
        // waiters, so one of them takes over from a holder that failed or died.
        let owner: [u8; 16] = crate::secret::random_bytes();
        let ttl = lock_ttl(self.oidc.settings().http_timeout);
        let deadline = tokio::time::Instant::now() + ttl;
        loop {
            match store.try_lock(&self.flight, &owner, ttl.as_millis() as i64).await {
                Ok(true) => {
                    let outcome = match x.0.cache.get(&key, now()).await {
                        Ok(Some(hit)) => hit,
                        Ok(None) => self.exchange_and_cache(&key).await,
                        Err(e) => Outcome::Failed(e.into()),
                    };
                    if let Err(e) = store.unlock(&self.flight, &owner).await {
                        tracing::warn!(error = %e, "exchange lock not released; it expires by itself");
                    }
                    return outcome;
                }
                Ok(false) => {}
                Err(e) => return Outcome::Failed(e.into()),
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("timed out waiting for another replica's token exchange");
                return Outcome::Failed(ErrorCode::IdpTimeout.into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            match x.0.cache.get(&key, now()).await {
                Ok(Some(hit)) => return hit,
                Ok(None) => {}
                Err(e) => return Outcome::Failed(e.into()),
            }
        }
    }

    /// The exchange at the IdP (in one of the provider's `oidc::Slots::exchange`: an IdP outage
    /// must not open one call per session and route) and its caching.
    async fn exchange_and_cache(&self, key: &Key<'_>) -> Outcome {
        let x = &self.exchanger.0;
        let provider = match self.oidc.provider() {
            Ok(p) => p,
            Err(e) => return Outcome::Failed(e.into()),
        };
        let Some(permit) = self.oidc.exchange_slot().await else {
            return Outcome::Failed(ErrorCode::IdpTimeout.into());
        };
        let issued_at = now();
        let answer = self.oidc.exchange_token(&provider, &self.token, &self.spec, self.dpop.as_deref()).await;
        drop(permit);
        let outcome = match answer {
            Ok(set) => match bearer_value(set.access_token.expose()) {
                Some(bearer) => Outcome::Token { bearer, expires_at: issued_at + set.expires_in },
                None => {
                    tracing::warn!("token exchange answered a token that is not an RFC 6750 bearer token");
                    Outcome::Failed(ErrorCode::IdpUnavailable.into())
                }
            },
            Err(TokenError::Refused(code)) => {
                tracing::info!(idp_error = code.as_str(), "the IdP refused a route's token exchange");
                Outcome::Refused(code)
            }
            Err(e) => {
                tracing::warn!(error = %e, "route token exchange failed");
                Outcome::Failed(route_exchange_error(e))
            }
        };
        let kind = match &outcome {
            Outcome::Token { .. } => "exchanged",
            Outcome::Refused(_) => "refused",
            Outcome::Failed(_) => "failed",
        };
        metrics::counter!("bff_token_exchanges_total", "outcome" => kind).increment(1);
        let until = match &outcome {
            Outcome::Token { expires_at, .. } => {
                renew_at(issued_at, *expires_at, self.oidc.settings().refresh_margin_secs as i64)
            }
            _ => issued_at + REFUSAL_SECS,
        };
        x.cache.put(key, &outcome, until.min(self.usable_until), now()).await;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::cache::bearer_value;
    use super::renew_at;

    #[test]
    fn only_rfc_6750_tokens_of_a_sane_size_are_sent() {
        assert!(bearer_value("eyJhbGc.eyJzdWIi.c2ln").is_some_and(|h| h.is_sensitive()));
        assert!(bearer_value("abc-._~+/==").is_some());
        for bad in ["", "==", "a b", "a,b", "a\"b", "tok\u{e9}n", "a=b"] {
            assert!(bearer_value(bad).is_none(), "{bad:?}");
        }
        assert!(bearer_value(&"a".repeat(16 * 1024)).is_some());
        assert!(bearer_value(&"a".repeat(16 * 1024 + 1)).is_none());
    }

    #[test]
    fn tokens_are_served_until_the_margin_or_their_expiry_when_shorter() {
        assert_eq!(renew_at(0, 600, 30), 570);
        assert_eq!(renew_at(0, 20, 30), 20);
        assert_eq!(renew_at(0, 30, 30), 30);
    }
}
