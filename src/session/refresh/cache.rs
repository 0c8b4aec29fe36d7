//! The refresh-result cache: in memory (`session::memory_cache`, bounded by bytes together with
//! the exchange cache), or in the store when
//! `[session] url` is set so every replica sees it. Each entry is keyed by a labelled SHA-256 of
//! the *old* refresh token and sealed under a key derived from it (`seal::shared_id`, SPEC §4:
//! never from a session key, so replicas mid key rotation share it).

use super::grant::Fresh;
pub(super) use crate::session::memory_cache::lock;
use crate::session::memory_cache::{self, Value};
use crate::session::model::Session;
use crate::session::seal::{SharedLabel, open_shared, seal_shared, shared_id};
use crate::store::{CacheRow, Store, StoreError};

pub(super) enum CacheHit {
    Fresh(Fresh),
    Refused,
}

pub(super) struct RefreshCache {
    /// Used only without a store, which then holds the cache instead.
    memory: memory_cache::Shared,
    store: Option<Store>,
    grace_secs: u64,
}

impl RefreshCache {
    pub fn new(store: Option<Store>, grace_secs: u64, memory: memory_cache::Shared) -> Self {
        Self { memory, store, grace_secs }
    }

    /// Drop expired in-memory entries (the periodic sweep: without it, the last entries of a
    /// burst would stay until the next refresh). The bytes given back, and those still held.
    pub fn sweep(&self, now: i64) -> (usize, usize) {
        let mut cache = lock(&self.memory);
        let freed = cache.expire(now);
        metrics::gauge!("bff_refresh_cache_bytes").set(cache.bytes() as f64);
        (freed, cache.bytes())
    }

    /// The cached answer for `rt`, if it is still useful to a session whose current access
    /// token was issued at `issued_at`.
    pub async fn cached(
        &self,
        id: &[u8; 32],
        rt: &str,
        issued_at: i64,
        now: i64,
    ) -> Result<Option<CacheHit>, StoreError> {
        let sealed = match &self.store {
            Some(store) => match store.cache_get(id, now).await? {
                None => return Ok(None),
                Some(CacheRow::Refused) => return Ok(Some(CacheHit::Refused)),
                Some(CacheRow::Sealed(s)) => s,
            },
            None => {
                let cache = lock(&self.memory);
                let Some(entry) = cache.get(id, now) else {
                    return Ok(None);
                };
                match &entry.value {
                    Value::Refresh(Some(s)) => s.clone(),
                    Value::Refresh(None) => return Ok(Some(CacheHit::Refused)),
                    _ => return Ok(None),
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

    /// Cache a result (`None`: the IdP refused the token); false when it could not be shared
    /// through the store.
    pub async fn put(&self, id: [u8; 32], rt: &str, fresh: Option<&Fresh>, now: i64) -> bool {
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
        let expires_at = now + self.grace_secs as i64;
        if let Some(store) = &self.store {
            if let Err(e) = store.cache_put(&id, sealed.as_deref(), expires_at).await {
                tracing::warn!(error = %e, "refresh result not shared through the store");
                return false;
            }
            return true;
        }
        let evicted = lock(&self.memory).insert(id, Value::Refresh(sealed), expires_at, now);
        if evicted > 0 {
            metrics::counter!("bff_refresh_cache_evictions_total").increment(evicted as u64);
        }
        true
    }

    /// Drop the entries a session's tokens came from or led to (logout).
    pub async fn forget(&self, session: &Session) {
        let ids = session
            .refresh_token
            .as_ref()
            .map(|rt| shared_id(SharedLabel::RefreshCache, &cache_key(session.provider_name(), rt)))
            .into_iter()
            .chain(session.refreshed_from);
        match &self.store {
            Some(store) => {
                for id in ids {
                    if let Err(e) = store.cache_delete(&id).await {
                        tracing::warn!(error = %e, "refresh-cache entry not deleted");
                    }
                }
            }
            None => {
                let mut cache = lock(&self.memory);
                for id in ids {
                    cache.remove(&id);
                }
            }
        }
    }

    /// (entries, bytes) held in memory.
    #[cfg(test)]
    pub fn memory_usage(&self) -> (usize, usize) {
        let cache = lock(&self.memory);
        (cache.len(), cache.bytes())
    }
}

/// What the refresh cache names and seals an entry by: the refresh token, scoped by its
/// provider (`session::scope`; "default"'s is the token itself, so entries survive an upgrade).
pub(super) fn cache_key<'a>(provider: &str, rt: &'a crate::secret::Secret) -> std::borrow::Cow<'a, str> {
    crate::session::scope::scoped(provider, rt.expose())
}
