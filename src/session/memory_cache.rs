//! The in-memory caches of this instance (no `[session] url`): refresh results (`refresh`) and
//! exchanged tokens (`exchange`) in one map under one bound, `[session] cache_max_bytes` (SPEC
//! §2: "both together").
//!
//! Entries are kept in two orders: by expiry, so expired ones leave from the front, on every
//! insert and on the periodic sweep, without scanning the map (refresh results all live
//! `refresh_grace_secs`, exchanged tokens as long as the IdP and the session allow); and by
//! insertion, so that when the bytes held (values and the bookkeeping of each entry) would pass
//! the bound, the oldest entries are evicted first (SPEC §2), counted by the caller — whatever
//! their kind, so long-lived exchanged tokens never push out refresh results seconds old. An
//! evicted refresh result only means a pre-refresh cookie arriving later refreshes again, an
//! evicted exchanged token one more exchange: a rare extra IdP call under a flood, never
//! unbounded memory.

use crate::oidc::token::IdpErrorCode;
use http::HeaderValue;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The one in-memory cache of an instance, shared by the refresh and exchange caches.
pub type Shared = Arc<Mutex<MemoryCache>>;

pub fn shared(max_bytes: usize) -> Shared {
    Arc::new(Mutex::new(MemoryCache::new(max_bytes)))
}

/// A poisoned lock only means another request panicked mid-update of a plain map; the map is
/// still usable, and refusing every refresh afterwards would be worse.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bookkeeping per entry beyond its value's bytes: the map slot (id, entry, hash control), the
/// two ordered-set nodes and the allocator's header of the value's buffer. Counted so that the
/// bound is on memory, not only on payload.
const ENTRY_OVERHEAD: usize = 272;

/// What an entry holds. Ids of the two kinds never meet: each is a SHA-256 under its own label.
pub enum Value {
    /// A refresh result, sealed under a key derived from the old refresh token; `None` when the
    /// IdP refused it (so replaying a dead cookie does not call the token endpoint again).
    Refresh(Option<Vec<u8>>),
    /// A route's exchanged token, usable while the session holds the access token `subject`
    /// names (a labelled hash of it). Kept as the header it is sent as: a hit costs no copy.
    Exchanged { subject: [u8; 32], bearer: HeaderValue, expires_at: i64 },
    /// The IdP refused the exchange for that access token (remembered briefly, SPEC §6.2).
    ExchangeRefused { subject: [u8; 32], idp_error: IdpErrorCode },
    /// Logged out: no exchanged token may be cached here until the entry expires.
    Buried,
}

impl Value {
    fn bytes(&self) -> usize {
        match self {
            Self::Refresh(sealed) => sealed.as_ref().map_or(0, Vec::capacity),
            Self::Exchanged { bearer, .. } => bearer.len(),
            Self::ExchangeRefused { idp_error, .. } => idp_error.as_str().len(),
            Self::Buried => 0,
        }
    }
}

pub struct Entry {
    pub value: Value,
    pub expires_at: i64,
    seq: u64,
}

pub struct MemoryCache {
    entries: HashMap<[u8; 32], Entry>,
    /// (expiry, insertion sequence, id) of every entry: the front expires first.
    by_expiry: BTreeSet<(i64, u64, [u8; 32])>,
    /// (insertion sequence, id) of every entry: the front is evicted first.
    by_age: BTreeSet<(u64, [u8; 32])>,
    next_seq: u64,
    bytes: usize,
    max_bytes: usize,
}

fn cost(value: &Value) -> usize {
    ENTRY_OVERHEAD + value.bytes()
}

impl MemoryCache {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
            by_age: BTreeSet::new(),
            next_seq: 0,
            bytes: 0,
            max_bytes,
        }
    }

    pub fn get(&self, id: &[u8; 32], now: i64) -> Option<&Entry> {
        self.entries.get(id).filter(|e| e.expires_at > now)
    }

    /// Cache `value` under `id` until `expires_at`, after dropping what has expired and, if the
    /// bound requires it, the oldest entries. Evictions are returned (for the metric).
    pub fn insert(&mut self, id: [u8; 32], value: Value, expires_at: i64, now: i64) -> usize {
        self.expire(now);
        self.remove(&id);
        let needed = cost(&value);
        if needed > self.max_bytes {
            return 0;
        }
        let mut evicted = 0;
        while self.bytes + needed > self.max_bytes {
            let Some((_, first)) = self.by_age.first().copied() else { break };
            self.remove(&first);
            evicted += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += needed;
        self.by_expiry.insert((expires_at, seq, id));
        self.by_age.insert((seq, id));
        self.entries.insert(id, Entry { value, expires_at, seq });
        evicted
    }

    pub fn remove(&mut self, id: &[u8; 32]) {
        if let Some(old) = self.entries.remove(id) {
            self.by_expiry.remove(&(old.expires_at, old.seq, *id));
            self.by_age.remove(&(old.seq, *id));
            self.bytes -= cost(&old.value);
        }
    }

    /// Drop every entry that has expired at `now`; the bytes given back.
    pub fn expire(&mut self, now: i64) -> usize {
        let before = self.bytes;
        while let Some((expires_at, _, id)) = self.by_expiry.first().copied()
            && expires_at <= now
        {
            self.remove(&id);
        }
        if self.entries.is_empty() {
            // Give the map's buffer back after a burst.
            self.entries.shrink_to(64);
        }
        before - self.bytes
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes held, as counted against the bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> [u8; 32] {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_be_bytes());
        id
    }

    fn sealed(n: usize) -> Value {
        Value::Refresh(Some(vec![0; n]))
    }

    #[test]
    fn bytes_stay_within_the_bound_and_the_oldest_go_first() {
        let mut c = MemoryCache::new(100_000);
        let mut evicted = 0;
        for i in 0..100 {
            evicted += c.insert(id(i), sealed(5_000), 1_000, 0);
            assert!(c.bytes() <= 100_000);
        }
        assert!(evicted > 0 && c.len() < 100);
        assert!(c.get(&id(99), 0).is_some(), "the newest is kept");
        assert!(c.get(&id(0), 0).is_none(), "the oldest went first");
    }

    #[test]
    fn expired_entries_leave_in_order_and_replaced_ids_are_counted_once() {
        let mut c = MemoryCache::new(1 << 20);
        for i in 0..10 {
            c.insert(id(i), sealed(100), 100 + i64::from(i), 0);
        }
        c.insert(id(3), Value::Refresh(None), 200, 0);
        assert_eq!(c.len(), 10);
        c.expire(105);
        assert_eq!(c.len(), 5, "0..=5 expired except the replaced 3");
        assert!(c.get(&id(3), 150).is_some());
        c.expire(1_000);
        assert_eq!((c.len(), c.bytes()), (0, 0), "everything given back");
        assert_eq!(c.insert(id(1), sealed(2 << 20), 5, 0), 0, "larger than the bound: not cached");
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn eviction_takes_the_oldest_whatever_its_expiry() {
        let mut c = MemoryCache::new(3 * (ENTRY_OVERHEAD + 1_000));
        let bearer = HeaderValue::from_static("Bearer x");
        c.insert(id(1), Value::Exchanged { subject: [0; 32], bearer, expires_at: 3_600 }, 3_600, 0);
        c.insert(id(2), sealed(1_000), 60, 1);
        c.insert(id(3), sealed(1_000), 61, 2);
        assert_eq!(c.insert(id(4), sealed(1_000), 62, 3), 1);
        assert!(c.get(&id(1), 3).is_none(), "the oldest went, long-lived as it was");
        assert!(c.get(&id(2), 3).is_some() && c.get(&id(3), 3).is_some() && c.get(&id(4), 3).is_some());
    }

    #[test]
    fn a_long_lived_entry_does_not_hold_back_the_expiry_of_later_short_ones() {
        let mut c = MemoryCache::new(1 << 20);
        let bearer = HeaderValue::from_static("Bearer x");
        c.insert(id(1), Value::Exchanged { subject: [0; 32], bearer, expires_at: 3_600 }, 3_600, 0);
        c.insert(id(2), sealed(1_000), 60, 0);
        c.expire(61);
        assert_eq!(c.len(), 1);
        assert!(c.get(&id(1), 61).is_some());
        assert_eq!(c.bytes(), ENTRY_OVERHEAD + 8);
    }
}
