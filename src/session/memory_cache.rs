//! The refresh cache in memory (no `[session] url`): bounded by bytes, expired in order.
//!
//! Every entry lives the same `refresh_grace_secs`, so insertion order is expiry order: a queue
//! of `(id, sequence, expiry)` records finds the expired entries at its front, on every insert
//! and on a periodic sweep, without scanning the map. When the bytes held (sealed tokens and
//! the bookkeeping of each entry) would pass `[session] cache_max_bytes`, the oldest entries are
//! evicted first (counted in `bff_refresh_cache_evictions_total`): an evicted entry only means a
//! pre-refresh cookie arriving later refreshes again, which a rotating IdP may refuse — a rare
//! re-login under a flood, never unbounded memory (issue: ~60 MB of PingOne-sized tokens against
//! a 64 Mi container limit before this bound).

use std::collections::{HashMap, VecDeque};

/// Bookkeeping per entry beyond its sealed bytes: the map slot (id, entry, hash control), the
/// queue record and the allocator's header of the sealed buffer. Counted so that the bound is
/// on memory, not only on payload.
const ENTRY_OVERHEAD: usize = 160;
/// A queue record whose entry was replaced (same id inserted again) until it is popped.
const RECORD_BYTES: usize = 48;

/// A cached refresh result: the sealed new tokens, or `None` when the IdP refused the token
/// (so replaying a dead cookie does not call the token endpoint again and again).
pub struct Entry {
    pub sealed: Option<Vec<u8>>,
    pub expires_at: i64,
    seq: u64,
}

pub struct MemoryCache {
    entries: HashMap<[u8; 32], Entry>,
    order: VecDeque<([u8; 32], u64, i64)>,
    next_seq: u64,
    bytes: usize,
    max_bytes: usize,
}

fn cost(sealed: &Option<Vec<u8>>) -> usize {
    ENTRY_OVERHEAD + sealed.as_ref().map_or(0, Vec::capacity)
}

impl MemoryCache {
    pub fn new(max_bytes: usize) -> Self {
        Self { entries: HashMap::new(), order: VecDeque::new(), next_seq: 0, bytes: 0, max_bytes }
    }

    pub fn get(&self, id: &[u8; 32], now: i64) -> Option<&Entry> {
        self.entries.get(id).filter(|e| e.expires_at > now)
    }

    /// Cache `sealed` under `id` until `expires_at`, after dropping what has expired and, if the
    /// bound requires it, the oldest live entries. Evictions are returned (for the metric).
    pub fn insert(&mut self, id: [u8; 32], sealed: Option<Vec<u8>>, expires_at: i64, now: i64) -> usize {
        self.expire(now);
        let needed = cost(&sealed) + RECORD_BYTES;
        if needed > self.max_bytes {
            return 0;
        }
        if let Some(old) = self.entries.remove(&id) {
            // Its queue record stays until popped; only the entry's own bytes are given back.
            self.bytes -= cost(&old.sealed);
        }
        let mut evicted = 0;
        while self.bytes + needed > self.max_bytes {
            match self.pop_front() {
                Some(true) => evicted += 1,
                Some(false) => {}
                None => break,
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += needed;
        self.order.push_back((id, seq, expires_at));
        self.entries.insert(id, Entry { sealed, expires_at, seq });
        evicted
    }

    pub fn remove(&mut self, id: &[u8; 32]) {
        if let Some(old) = self.entries.remove(id) {
            self.bytes -= cost(&old.sealed);
        }
    }

    /// Drop every entry that has expired at `now`; the bytes given back.
    pub fn expire(&mut self, now: i64) -> usize {
        let before = self.bytes;
        while self.order.front().is_some_and(|(_, _, expires_at)| *expires_at <= now) {
            self.pop_front();
        }
        if self.order.is_empty() {
            // Give the queue's and map's buffers back after a burst.
            self.order.shrink_to(64);
            self.entries.shrink_to(64);
        }
        before - self.bytes
    }

    /// Pop the oldest record; `Some(true)` if it removed a live entry, `Some(false)` if its
    /// entry had been replaced or removed, `None` when empty.
    fn pop_front(&mut self) -> Option<bool> {
        let (id, seq, _) = self.order.pop_front()?;
        self.bytes -= RECORD_BYTES;
        match self.entries.get(&id) {
            Some(e) if e.seq == seq => {
                self.remove(&id);
                Some(true)
            }
            _ => Some(false),
        }
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

    #[test]
    fn bytes_stay_within_the_bound_and_the_oldest_go_first() {
        let mut c = MemoryCache::new(100_000);
        let mut evicted = 0;
        for i in 0..100 {
            evicted += c.insert(id(i), Some(vec![0; 5_000]), 1_000, 0);
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
            c.insert(id(i), Some(vec![0; 100]), 100 + i64::from(i), 0);
        }
        c.insert(id(3), None, 200, 0);
        assert_eq!(c.len(), 10);
        c.expire(105);
        assert_eq!(c.len(), 5, "0..=5 expired except the replaced 3");
        assert!(c.get(&id(3), 150).is_some());
        c.expire(1_000);
        assert_eq!((c.len(), c.bytes()), (0, 0), "everything given back");
        assert_eq!(c.insert(id(1), Some(vec![0; 2 << 20]), 5, 0), 0, "larger than the bound: not cached");
        assert_eq!(c.len(), 0);
    }
}
