//! States this instance has already completed, remembered for the transaction lifetime so a
//! replayed transaction cookie (from another browser, or a copy) is refused without calling
//! the IdP (SPEC §3.2). Keyed by SHA-256 of the state; bounded in size.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Default)]
pub struct CompletedStates {
    inner: Mutex<HashMap<[u8; 32], i64>>,
}

impl CompletedStates {
    fn key(state: &str) -> [u8; 32] {
        Sha256::digest(state.as_bytes()).into()
    }

    /// Record `state` as used until `expires_at`; false if it was already recorded.
    pub fn insert(&self, state: &str, now: i64, expires_at: i64) -> bool {
        let Ok(mut map) = self.inner.lock() else {
            return false;
        };
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, exp| *exp > now);
        }
        if map.len() >= MAX_ENTRIES {
            // Still full of live entries: refusing logins is safer than forgetting states.
            return false;
        }
        match map.get(&Self::key(state)) {
            Some(exp) if *exp > now => false,
            _ => {
                map.insert(Self::key(state), expires_at);
                true
            }
        }
    }

    pub fn contains(&self, state: &str, now: i64) -> bool {
        self.inner
            .lock()
            .map(|m| m.get(&Self::key(state)).is_some_and(|exp| *exp > now))
            .unwrap_or(true)
    }
}
