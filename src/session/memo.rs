//! A small per-thread memo of session cookies already opened (cookie mode only).
//!
//! A browser sends the same sealed cookie on every request until it is re-sealed (at most every
//! min(60 s, idle/4), or after a refresh), and opening it — base64, XChaCha20-Poly1305, postcard —
//! was the largest share of the BFF's own CPU per proxied request (docs/benchmarks.md). The memo
//! remembers one fact: "this exact sealed value, under this keyring and cookie name, opens to this
//! session". That fact never changes, so nothing is ever invalidated; every rule that depends on
//! time or on other state (idle and absolute expiry, the revocation list, refresh, re-sealing) is
//! still applied by the caller on every request, to the memoised session as to a freshly opened
//! one. Server-side sessions are never memoised: their cookie is only an id, and the store is the
//! authority on whether the session still exists.
//!
//! Per thread (no lock on the request path), direct-mapped and bounded: `SLOTS` entries of one
//! sealed value and one session each, about 5 KiB per PingOne-sized session, replaced on collision.
//!
//! Lookups cannot be turned into an oracle on someone else's cookie: the slot and a 64-bit check
//! come from SipHash under a random per-thread key over the keyring id, the cookie name and the
//! value's nonce and tag (both random or key-dependent and unguessable), and the full value is
//! compared only when that check matches — which, short of a 2^-64 accident, needs the exact nonce
//! and tag of the cookie in the slot, that is, a copy of the cookie itself.

use super::model::Session;
use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;

const SLOTS: usize = 64;
/// Enough of the value's start to cover version, key id and nonce (29 bytes → 39 base64 chars),
/// and of its end to cover the tag (16 bytes → 22 chars).
const HEAD: usize = 40;
const TAIL: usize = 24;

struct Slot {
    keyring: u64,
    check: u64,
    sealed: Box<str>,
    session: Arc<Session>,
}

struct Memo {
    hasher: RandomState,
    slots: Vec<Option<Slot>>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo {
        hasher: RandomState::new(),
        slots: std::iter::repeat_with(|| None).take(SLOTS).collect(),
    });
}

impl Memo {
    fn check(&self, keyring: u64, name: &str, sealed: &str) -> u64 {
        let b = sealed.as_bytes();
        let mut h = self.hasher.build_hasher();
        h.write_u64(keyring);
        h.write(name.as_bytes());
        h.write_usize(b.len());
        if b.len() <= HEAD + TAIL {
            h.write(b);
        } else {
            h.write(&b[..HEAD]);
            h.write(&b[b.len() - TAIL..]);
        }
        h.finish()
    }
}

/// The session `sealed` opened to earlier on this thread, under keyring `keyring` and cookie
/// name `name`.
pub fn get(keyring: u64, name: &str, sealed: &str) -> Option<Arc<Session>> {
    MEMO.with(|m| {
        let m = m.borrow();
        let check = m.check(keyring, name, sealed);
        match &m.slots[check as usize % SLOTS] {
            Some(slot) if slot.check == check && slot.keyring == keyring && *slot.sealed == *sealed => {
                Some(slot.session.clone())
            }
            _ => None,
        }
    })
}

/// Remember that `sealed` opened to `session`.
pub fn put(keyring: u64, name: &str, sealed: &str, session: &Arc<Session>) {
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let check = m.check(keyring, name, sealed);
        m.slots[check as usize % SLOTS] =
            Some(Slot { keyring, check, sealed: sealed.into(), session: session.clone() });
    });
}

/// Drop this thread's entries for `session` (seen expired or revoked, or logged out), so its
/// tokens are not kept in memory until the slot happens to be reused. Other threads' entries
/// (multi-threaded runtime) are dropped when reused: they only ever answer for the exact
/// cookie, and every request re-checks expiry and revocation.
pub fn forget(session: &Session) {
    forget_address(std::ptr::from_ref(session) as usize);
}

/// [`forget`] by the address of the memoised session (only compared, never dereferenced): what
/// a request that copied the session out of the memo (`Arc::make_mut`) still knows of it.
pub fn forget_address(address: usize) {
    MEMO.with(|m| {
        for slot in m.borrow_mut().slots.iter_mut() {
            if slot.as_ref().is_some_and(|s| Arc::as_ptr(&s.session) as usize == address) {
                *slot = None;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::{LogoutToken, Token};

    fn session(sub: &str) -> Arc<Session> {
        Arc::new(Session {
            sub: sub.to_owned(),
            sid: None,
            id_token: Token::new("a.b.c"),
            access_token: Token::new("at"),
            access_expires_at: 0,
            access_issued_at: 0,
            refresh_token: None,
            scope: None,
            created_at: 0,
            absolute_expires_at: 0,
            sealed_at: 0,
            refreshed_from: None,
            logout_token: LogoutToken::random(),
            stored: None,
            dpop: None,
            provider: None,
        })
    }

    #[test]
    fn only_the_exact_value_under_the_same_keyring_and_name_hits() {
        let sealed = format!("{}{}{}", "n".repeat(HEAD), "ciphertext".repeat(50), "t".repeat(TAIL));
        put(1, "bff", &sealed, &session("alice"));
        assert_eq!(get(1, "bff", &sealed).map(|s| s.sub.clone()).as_deref(), Some("alice"));
        // Same nonce and tag, other ciphertext: the check matches, the full comparison does not.
        let forged = sealed.replacen("ciphertext", "Ciphertext", 1);
        assert!(get(1, "bff", &forged).is_none());
        assert!(get(2, "bff", &sealed).is_none(), "another keyring");
        assert!(get(1, "__Host-bff", &sealed).is_none(), "another cookie name");
        assert!(get(1, "bff", &sealed[..sealed.len() - 1]).is_none(), "truncated");
        assert!(get(1, "bff", "short").is_none());
        // A value in another slot than `sealed` (the check is keyed per thread, so which slot a
        // value takes differs from run to run): otherwise bob's entry would replace alice's.
        let slot = |v: &str| MEMO.with(|m| m.borrow().check(1, "bff", v) as usize % SLOTS);
        let short = (0..).map(|i| format!("short-{i}")).find(|v| slot(v) != slot(&sealed)).unwrap_or_default();
        let bob = session("bob");
        put(1, "bff", &short, &bob);
        assert_eq!(get(1, "bff", &short).map(|s| s.sub.clone()).as_deref(), Some("bob"));
        forget(&bob);
        assert!(get(1, "bff", &short).is_none(), "forgotten");
        assert!(get(1, "bff", &sealed).is_some(), "others kept");
    }

    #[test]
    fn bounded_by_its_slots() {
        for i in 0..10 * SLOTS {
            put(7, "bff", &format!("value-{i}"), &session("x"));
        }
        MEMO.with(|m| assert!(m.borrow().slots.len() == SLOTS));
        let hits = (0..10 * SLOTS).filter(|i| get(7, "bff", &format!("value-{i}")).is_some()).count();
        assert!(hits <= SLOTS, "{hits} hits");
    }
}
