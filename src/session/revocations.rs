//! The cookie-mode revocation list (SPEC §5), mirrored in memory so that the per-request check
//! is two hash lookups under a read lock, never a store round trip.
//!
//! A background task polls the store every [`POLL`] for entries stamped (by the store's clock)
//! since the newest stamp seen, minus an overlap so rows committed late are not missed
//! (applying an entry twice is harmless). No replica's clock takes part. If the mirror has not been refreshed for [`MAX_STALENESS_MS`], session checks
//! fail closed with 503 `session_store_unavailable`: a revoked cookie must not open just because
//! the store is down.

use super::model::Session;
use crate::clock::now_ms;
use crate::store::{Revocation, RevocationKind, Store, StoreError};
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub const POLL: Duration = Duration::from_secs(1);
pub const MAX_STALENESS_MS: i64 = 10_000;
/// Re-read this far back on every poll.
const OVERLAP_MS: i64 = 30_000;

#[derive(Debug, Default)]
pub struct Revocations {
    sid: RwLock<HashMap<String, i64>>,
    sub: RwLock<HashMap<String, i64>>,
    sub_without_sid: RwLock<HashMap<String, i64>>,
    /// When the last successful poll started (local unix ms); 0 = never.
    synced_ms: AtomicI64,
    /// The newest store stamp seen; 0 = nothing yet.
    cursor_ms: AtomicI64,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Revocations {
    /// Is `s` revoked? `Err` when the mirror is too stale to say.
    pub fn is_revoked(&self, s: &Session) -> Result<bool, StoreError> {
        if now_ms() - self.synced_ms.load(Ordering::Relaxed) > MAX_STALENESS_MS {
            return Err(StoreError::Backend("revocation list not refreshed recently".into()));
        }
        // Entries hold provider-scoped ids (`super::scope`); "default"'s are the ids themselves,
        // so its sessions are checked without an allocation.
        let provider = s.provider_name();
        let sub = super::scope::scoped(provider, &s.sub);
        let by_sub = read(&self.sub).get(sub.as_ref()).is_some_and(|iat| s.created_at <= *iat);
        let by_sid = match &s.sid {
            Some(sid) => read(&self.sid)
                .get(super::scope::scoped(provider, sid).as_ref())
                .is_some_and(|received| s.created_at <= *received),
            None => read(&self.sub_without_sid).get(sub.as_ref()).is_some_and(|iat| s.created_at <= *iat),
        };
        Ok(by_sub || by_sid)
    }

    pub fn is_fresh(&self) -> bool {
        now_ms() - self.synced_ms.load(Ordering::Relaxed) <= MAX_STALENESS_MS
    }

    /// Apply an entry (from the store, or just recorded by this instance). True when it
    /// revokes more than before.
    pub fn apply(&self, r: &Revocation) -> bool {
        let map = match r.kind {
            RevocationKind::Sid => &self.sid,
            RevocationKind::Sub => &self.sub,
            RevocationKind::SubWithoutSid => &self.sub_without_sid,
        };
        let mut m = write(map);
        match m.get_mut(r.value.as_str()) {
            Some(iat) if *iat >= r.iat => false,
            Some(iat) => {
                *iat = r.iat;
                true
            }
            None => {
                m.insert(r.value.clone(), r.iat);
                true
            }
        }
    }

    /// One poll. The first reads everything still in force. Returns the entries that revoke
    /// more than before (another instance's back-channel logouts, SPEC §5).
    pub async fn sync(&self, store: &Store) -> Result<Vec<Revocation>, StoreError> {
        let started = now_ms();
        let cursor = self.cursor_ms.load(Ordering::Relaxed);
        let since = if cursor == 0 { 0 } else { cursor - OVERLAP_MS };
        let entries = store.revocations_since(since, crate::clock::now()).await?;
        let mut newest = cursor;
        let mut new = Vec::new();
        for (r, stamp) in entries {
            newest = newest.max(stamp);
            if self.apply(&r) {
                new.push(r);
            }
        }
        self.cursor_ms.store(newest, Ordering::Relaxed);
        self.synced_ms.store(started, Ordering::Relaxed);
        Ok(new)
    }

    /// Forget entries that can no longer match a live session (older than the longest session).
    pub fn prune(&self, oldest_live_created_at: i64) {
        for map in [&self.sid, &self.sub, &self.sub_without_sid] {
            write(map).retain(|_, iat| *iat >= oldest_live_created_at);
        }
    }
}
