//! States this instance has already completed, remembered for at least the transaction
//! lifetime so a replayed transaction cookie (from another browser, or a copy) is refused
//! without calling the IdP (SPEC §3.2). Keyed by SHA-256 of the state.
//!
//! Two generations, swapped every `TX_LIFETIME_SECS` (or early when the current one is full):
//! memory is bounded, nothing is ever scanned under the lock, and a flood of junk callbacks
//! can never make the map refuse genuine logins — at worst it ages entries out early, and the
//! IdP's single-use codes still stop a second exchange.

use super::tx::TX_LIFETIME_SECS;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Mutex;

const MAX_PER_GENERATION: usize = 100_000;

#[derive(Debug, Default)]
struct Generations {
    started: i64,
    current: HashSet<[u8; 32]>,
    previous: HashSet<[u8; 32]>,
}

#[derive(Debug, Default)]
pub struct CompletedStates {
    inner: Mutex<Generations>,
}

impl CompletedStates {
    fn key(state: &str) -> [u8; 32] {
        Sha256::digest(state.as_bytes()).into()
    }

    fn rotate_if_due(g: &mut Generations, now: i64) {
        if now - g.started >= TX_LIFETIME_SECS || g.current.len() >= MAX_PER_GENERATION {
            g.previous = std::mem::take(&mut g.current);
            g.started = now;
        }
    }

    /// Record `state` as used; false if it already was.
    pub fn insert(&self, state: &str, now: i64) -> bool {
        let key = Self::key(state);
        let Ok(mut g) = self.inner.lock() else { return false };
        Self::rotate_if_due(&mut g, now);
        if g.previous.contains(&key) {
            return false;
        }
        g.current.insert(key)
    }

    pub fn contains(&self, state: &str, now: i64) -> bool {
        let key = Self::key(state);
        let Ok(mut g) = self.inner.lock() else { return true };
        Self::rotate_if_due(&mut g, now);
        g.current.contains(&key) || g.previous.contains(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_for_at_least_the_transaction_lifetime_and_never_refuses_new_states() {
        let c = CompletedStates::default();
        assert!(c.insert("a", 1000));
        assert!(!c.insert("a", 1001));
        assert!(c.contains("a", 1000 + TX_LIFETIME_SECS));
        assert!(!c.contains("a", 1000 + 3 * TX_LIFETIME_SECS));
        for i in 0..(MAX_PER_GENERATION + 10) {
            assert!(c.insert(&i.to_string(), 5000));
        }
        assert!(c.insert("fresh", 5000));
    }
}
