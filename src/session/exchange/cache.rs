//! Where exchanged tokens are kept (SPEC §6.2): the instance's in-memory cache (shared with the
//! refresh cache, `session::memory_cache`), or the store when `[session] url` is set. A store
//! entry is sealed under a key derived from the session's `logout_token`; an entry of either
//! kind serves only a session that still holds the access token it came from.

use crate::error::{AppError, IdpErrorCode};
use crate::session::memory_cache::{self, Value, lock};
use crate::session::seal::{SharedLabel, open_shared_bytes, seal_shared_bytes, shared_id_of};
use crate::settings::routes::ExchangeSpec;
use crate::store::{CacheRow, Store, StoreError};
use http::HeaderValue;
use serde::{Deserialize, Serialize};

/// What an exchange came to: cached (a token, a refusal) or not (a failure).
#[derive(Clone)]
pub(super) enum Outcome {
    Token { bearer: HeaderValue, expires_at: i64 },
    Refused(IdpErrorCode),
    Failed(AppError),
}

/// A store entry, sealed: the same facts as the in-memory [`Value`]s.
#[derive(Serialize, Deserialize)]
struct Stored {
    subject: [u8; 32],
    token: Option<String>,
    idp_error: Option<String>,
    expires_at: i64,
}

/// What identifies one cache entry and the access token it must have come from.
pub(super) struct Key<'a> {
    pub id: [u8; 32],
    pub subject: [u8; 32],
    pub logout_token: &'a [u8],
}

impl<'a> Key<'a> {
    /// The entry of (`logout_token`, `prefix`), for the session bearer value `subject` and what
    /// the route asks for (`spec`): a route whose resource, audience or scopes change (a
    /// rolling deploy) never gets a token cached for what it asked before.
    pub fn new(logout_token: &'a [u8], prefix: &str, subject: &HeaderValue, spec: &ExchangeSpec) -> Self {
        fn part(v: &Option<String>) -> &[u8] {
            v.as_deref().map_or(b"\0", str::as_bytes)
        }
        let parts = [subject.as_bytes(), part(&spec.resource), part(&spec.audience), part(&spec.scope)];
        Self {
            id: entry_id(logout_token, prefix),
            subject: shared_id_of(SharedLabel::ExchangeSubject, &parts),
            logout_token,
        }
    }
}

/// The id of a session's entry for one route (labelled SHA-256 of its `logout_token` and the
/// route): what logout deletes.
pub(super) fn entry_id(logout_token: &[u8], prefix: &str) -> [u8; 32] {
    shared_id_of(SharedLabel::ExchangeCache, &[logout_token, prefix.as_bytes()])
}

pub(super) struct ExchangeCache {
    pub store: Option<Store>,
    pub memory: memory_cache::Shared,
}

impl ExchangeCache {
    /// The cached outcome for `key`, if one is still usable at `now`.
    pub async fn get(&self, key: &Key<'_>, now: i64) -> Result<Option<Outcome>, StoreError> {
        let stored = match &self.store {
            None => {
                let memory = lock(&self.memory);
                let Some(entry) = memory.get(&key.id, now) else {
                    return Ok(None);
                };
                return Ok(match &entry.value {
                    Value::Exchanged { subject, bearer, expires_at } if *subject == key.subject => {
                        Some(Outcome::Token { bearer: bearer.clone(), expires_at: *expires_at })
                    }
                    Value::ExchangeRefused { subject, idp_error } if *subject == key.subject => {
                        Some(Outcome::Refused(idp_error.clone()))
                    }
                    _ => None,
                });
            }
            Some(store) => match store.cache_get(&key.id, now).await? {
                Some(CacheRow::Sealed(sealed)) => sealed,
                Some(CacheRow::Refused) | None => return Ok(None),
            },
        };
        let Some(plain) = open_shared_bytes(SharedLabel::ExchangeCache, key.logout_token, &key.id, &stored) else {
            return Ok(None);
        };
        let Ok(entry) = postcard::from_bytes::<Stored>(&plain) else {
            return Ok(None);
        };
        if entry.subject != key.subject {
            return Ok(None);
        }
        Ok(match (entry.token, entry.idp_error) {
            (Some(token), _) => {
                bearer_value(&token).map(|bearer| Outcome::Token { bearer, expires_at: entry.expires_at })
            }
            (None, Some(code)) => Some(Outcome::Refused(IdpErrorCode::filter(&code))),
            (None, None) => None,
        })
    }

    /// Remember `outcome` for `key` until the cache deadline `until` (failures are not kept);
    /// false when the store could not take it.
    pub async fn put(&self, key: &Key<'_>, outcome: &Outcome, until: i64, now: i64) -> bool {
        let Some(store) = &self.store else {
            let value = match outcome {
                Outcome::Token { bearer, expires_at } => {
                    Value::Exchanged { subject: key.subject, bearer: bearer.clone(), expires_at: *expires_at }
                }
                Outcome::Refused(code) => Value::ExchangeRefused { subject: key.subject, idp_error: code.clone() },
                Outcome::Failed(_) => return true,
            };
            let mut memory = lock(&self.memory);
            if memory.get(&key.id, now).is_some_and(|e| matches!(e.value, Value::Buried)) {
                return true;
            }
            let evicted = memory.insert(key.id, value, until, now);
            drop(memory);
            if evicted > 0 {
                metrics::counter!("bff_refresh_cache_evictions_total").increment(evicted as u64);
            }
            return true;
        };
        let entry = match outcome {
            Outcome::Token { bearer, expires_at } => Stored {
                subject: key.subject,
                token: bearer.to_str().ok().and_then(|b| b.strip_prefix("Bearer ")).map(str::to_owned),
                idp_error: None,
                expires_at: *expires_at,
            },
            Outcome::Refused(code) => Stored {
                subject: key.subject,
                token: None,
                idp_error: Some(code.as_str().to_owned()),
                expires_at: until,
            },
            Outcome::Failed(_) => return true,
        };
        let sealed = postcard::to_allocvec(&entry)
            .ok()
            .and_then(|p| seal_shared_bytes(SharedLabel::ExchangeCache, key.logout_token, &key.id, &p));
        let Some(sealed) = sealed else { return false };
        // A logout's tombstone (a refused row) stays: checked just before the write, so only an
        // exchange finishing within that instant could still replace it (docs/security.md).
        if let Ok(Some(CacheRow::Refused)) = store.cache_get(&key.id, now).await {
            return true;
        }
        match store.cache_put(&key.id, Some(&sealed), until).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "exchanged token not shared through the store");
                false
            }
        }
    }

    /// Replace the entry `id` by a tombstone until `until` (logout): nothing is served from it,
    /// and an exchange that was under way does not cache its result there afterwards.
    pub async fn bury(&self, id: &[u8; 32], until: i64) {
        let t = crate::clock::now();
        match &self.store {
            Some(store) => {
                // A tombstone that cannot be written is at least a deletion.
                let buried = match store.cache_put(id, None, until).await {
                    Err(_) => store.cache_delete(id).await,
                    ok => ok,
                };
                if let Err(e) = buried {
                    tracing::warn!(error = %e, "exchanged token not deleted from the store");
                }
            }
            None => {
                lock(&self.memory).insert(*id, Value::Buried, until, t);
            }
        }
    }
}

/// An exchanged token is at most this long (a JWT with many claims is a few KiB): a hostile or
/// broken IdP cannot make every request carry, or the cache hold, a 256 KiB header.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// `Bearer <token>`, marked sensitive; `None` when the token is not RFC 6750's `b64token`
/// (`[A-Za-z0-9-._~+/]+=*`) or is longer than `MAX_TOKEN_BYTES`.
pub(super) fn bearer_value(token: &str) -> Option<HeaderValue> {
    let body = token.trim_end_matches('=');
    let b64token = !body.is_empty()
        && token.len() <= MAX_TOKEN_BYTES
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !b64token {
        return None;
    }
    let mut h = HeaderValue::try_from(format!("Bearer {token}")).ok()?;
    h.set_sensitive(true);
    Some(h)
}
