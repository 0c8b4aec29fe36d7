//! Shared state outside the process (SPEC §4–§6): server-side sessions, the cookie-mode
//! revocation list, seen logout-token ids, the refresh cache and refresh locks, in SQLite,
//! PostgreSQL or Redis (`[session] url`), and spent single-use values (logout-token `jti`s,
//! completed login states) so that a replay is refused by every replica.
//!
//! Why not tower-sessions' session layer and stores: the layer answers a bare 500 when a store
//! fails (SPEC §4 wants 503 `session_store_unavailable`), the stores cannot find sessions by
//! `sid`/`sub` (back-channel logout), offer no compare-and-swap or lock (refresh-token rotation
//! across replicas), and create their own tables outside `migrations/`. So this module talks
//! to sqlx and redis directly, behind one small API.
//!
//! Every operation is bounded by [`OP_TIMEOUT`]: a store that hangs is a 503 within seconds,
//! never a hung request. Connections are made lazily and re-made after failures, so a store
//! that comes back needs no restart.

pub mod redis;
pub mod revocations;
pub mod sql;

use crate::error::{AppError, ErrorCode};
use crate::settings::{StoreKind, StoreUrl};
use std::future::Future;
use std::time::Duration;

/// The longest any one store operation may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// A back-channel logout may walk many sessions (in batches); the IdP waits for its answer.
pub const LOGOUT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the session store did not answer in time")]
    Timeout,
    /// The driver's message: sqlx and redis do not put passwords or row data in errors.
    #[error("session store error: {0}")]
    Backend(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "session store unavailable");
        ErrorCode::SessionStoreUnavailable.into()
    }
}

/// A server-side session as stored.
pub struct SessionRow {
    pub version: i64,
    pub last_seen: i64,
    /// The session, sealed (see `session::server`).
    pub data: String,
}

/// What is written when a session is created.
pub struct NewSession<'a> {
    /// SHA-256 of the id the cookie carries.
    pub key: &'a [u8; 32],
    pub sub: &'a str,
    pub sid: Option<&'a str>,
    pub created_at: i64,
    pub last_seen: i64,
    /// The earlier of idle and absolute expiry: when the store may forget it.
    pub expires_at: i64,
    /// The latest the session can live (its lookup entries must last that long).
    pub absolute_expires_at: i64,
    pub data: &'a str,
}

/// Whose sessions a back-channel logout ends, and up to when they were created.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// The sessions of this IdP session created before we received the logout (`received`,
    /// our own clock plus a few seconds: no comparison with the IdP's clock, so its skew cannot
    /// spare a session, while an IdP that reuses a `sid` does not lock a later login out) —
    /// and, when the token names the user, that user's sessions that carry no `sid` and were
    /// created by the token's `iat` plus the clock skew, at the latest by our receipt (we cannot
    /// tell which IdP session those belong to).
    Sid { sid: &'a str, sub: Option<&'a str>, received: i64 },
    /// Every session of this user created by the token's `iat` plus the clock skew, at the
    /// latest by our receipt (a later login is not affected).
    Sub(&'a str),
}

/// How much later than our receipt of a `sid` logout a session may have been created (by a
/// replica whose clock is slightly ahead) and still end.
pub const SID_RECEIPT_MARGIN_SECS: i64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationKind {
    /// Sessions with this `sid` created at or before the entry's time (our receipt).
    Sid,
    /// Sessions of this `sub` created at or before the entry's time (`iat` plus the clock
    /// skew, at most our receipt).
    Sub,
    /// Sessions of this `sub` without a `sid`, created at or before the entry's time.
    SubWithoutSid,
}

impl RevocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sid => "sid",
            Self::Sub => "sub",
            Self::SubWithoutSid => "sub-nosid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sid" => Some(Self::Sid),
            "sub" => Some(Self::Sub),
            "sub-nosid" => Some(Self::SubWithoutSid),
            _ => None,
        }
    }
}

/// A cookie-mode back-channel logout, as recorded in the revocation list: sessions matching
/// `kind`/`value` created at or before `iat` (for `Sid`: our receipt time) are over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub kind: RevocationKind,
    pub value: String,
    pub iat: i64,
}

impl Revocation {
    /// The entries a validated logout token records.
    pub fn for_subject(who: Subject<'_>, iat: i64) -> Vec<Self> {
        let r = |kind, value: &str| Self { kind, value: value.to_owned(), iat };
        let by_sid = |sid: &str, received| Self { kind: RevocationKind::Sid, value: sid.to_owned(), iat: received };
        match who {
            Subject::Sid { sid, sub: Some(sub), received } => {
                vec![by_sid(sid, received), r(RevocationKind::SubWithoutSid, sub)]
            }
            Subject::Sid { sid, sub: None, received } => vec![by_sid(sid, received)],
            Subject::Sub(sub) => vec![r(RevocationKind::Sub, sub)],
        }
    }
}

/// A refresh-cache entry: the sealed new tokens, or the IdP's refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheRow {
    Sealed(Vec<u8>),
    Refused,
}

#[derive(Clone)]
pub enum Store {
    Sql(sql::SqlStore),
    Redis(redis::RedisStore),
}

impl std::fmt::Debug for Store {
    // The URL may hold a password: name the backend only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sql(s) => write!(f, "Store({})", s.backend_name()),
            Self::Redis(_) => f.write_str("Store(redis)"),
        }
    }
}

/// Syntax check for check-config (no connection is made).
pub fn check_url(backend: StoreKind, url: &str) -> Result<(), &'static str> {
    match backend {
        StoreKind::Redis => redis::RedisStore::parse(url).map(|_| ()),
        StoreKind::Sqlite | StoreKind::Postgres => sql::SqlStore::check(backend, url),
        StoreKind::Cookie => Err("not a store"),
    }
}

async fn timed<T, E: std::fmt::Display>(f: impl Future<Output = Result<T, E>>) -> Result<T, StoreError> {
    timed_for(OP_TIMEOUT, f).await
}

async fn timed_for<T, E: std::fmt::Display>(
    limit: Duration,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            metrics::counter!("bff_store_errors_total").increment(1);
            Err(StoreError::Backend(e.to_string()))
        }
        Err(_) => {
            metrics::counter!("bff_store_errors_total").increment(1);
            Err(StoreError::Timeout)
        }
    }
}

/// Call the same method on whichever backend this is, bounded by `OP_TIMEOUT`.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sql(s) => timed(s.$method($($arg),*)).await,
            Store::Redis(r) => timed(r.$method($($arg),*)).await,
        }
    };
}

impl Store {
    /// Build the client for `url`. Connects lazily: nothing is dialled here.
    pub fn open(url: &StoreUrl) -> Result<Self, StoreError> {
        match url.backend {
            StoreKind::Redis => Ok(Self::Redis(redis::RedisStore::open(url.url.expose())?)),
            kind => Ok(Self::Sql(sql::SqlStore::open(kind, url.url.expose())?)),
        }
    }

    /// Apply `migrations/` (SQL backends; Redis has no schema). Idempotent.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            // Migrations may wait on another replica's migration lock: not bounded by OP_TIMEOUT.
            Self::Sql(s) => s.migrate().await.map_err(|e| StoreError::Backend(e.to_string())),
            Self::Redis(_) => Ok(()),
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self.ping())
    }

    pub async fn insert_session(&self, s: &NewSession<'_>) -> Result<(), StoreError> {
        dispatch!(self.insert_session(s))
    }

    pub async fn get_session(&self, key: &[u8; 32], now: i64) -> Result<Option<SessionRow>, StoreError> {
        dispatch!(self.get_session(key, now))
    }

    /// Replace the session's data if it is still at `version`. `Ok(false)`: another request
    /// changed (or deleted) it first.
    pub async fn update_session(
        &self,
        key: &[u8; 32],
        version: i64,
        data: &str,
        last_seen: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self.update_session(key, version, data, last_seen, expires_at))
    }

    /// Slide the idle expiry.
    pub async fn touch_session(&self, key: &[u8; 32], last_seen: i64, expires_at: i64) -> Result<(), StoreError> {
        dispatch!(self.touch_session(key, last_seen, expires_at))
    }

    pub async fn delete_session(&self, key: &[u8; 32]) -> Result<(), StoreError> {
        dispatch!(self.delete_session(key))
    }

    /// Delete the sessions `who` names (see [`Subject`]); how many were deleted. Bounded by
    /// [`LOGOUT_TIMEOUT`]: a user with very many sessions is walked in batches.
    pub async fn delete_sessions_of(&self, who: Subject<'_>, iat: i64) -> Result<u64, StoreError> {
        match self {
            Store::Sql(s) => timed_for(LOGOUT_TIMEOUT, s.delete_sessions_of(who, iat)).await,
            Store::Redis(r) => timed_for(LOGOUT_TIMEOUT, r.delete_sessions_of(who, iat)).await,
        }
    }

    /// Record a revocation, stamped with the store's own clock (replicas poll by that stamp, so
    /// their clocks never need to agree).
    pub async fn add_revocation(&self, r: &Revocation, expires_at: i64) -> Result<(), StoreError> {
        dispatch!(self.add_revocation(r, expires_at))
    }

    /// Revocations stamped at or after `since_ms` (store clock) and not yet expired, each with
    /// its stamp.
    pub async fn revocations_since(&self, since_ms: i64, now: i64) -> Result<Vec<(Revocation, i64)>, StoreError> {
        dispatch!(self.revocations_since(since_ms, now))
    }

    /// Has this single-use value been recorded (and not yet expired)?
    pub async fn is_used(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        dispatch!(self.is_used(id, now))
    }

    /// Record a single-use value (`jti:…`, `state:…`) until `expires_at`; `Ok(false)` if it
    /// was already recorded (a replay).
    pub async fn first_use(&self, id: &str, expires_at: i64) -> Result<bool, StoreError> {
        dispatch!(self.first_use(id, expires_at))
    }

    pub async fn cache_put(&self, id: &[u8; 32], sealed: Option<&[u8]>, expires_at: i64) -> Result<(), StoreError> {
        dispatch!(self.cache_put(id, sealed, expires_at))
    }

    pub async fn cache_get(&self, id: &[u8; 32], now: i64) -> Result<Option<CacheRow>, StoreError> {
        dispatch!(self.cache_get(id, now))
    }

    pub async fn cache_delete(&self, id: &[u8; 32]) -> Result<(), StoreError> {
        dispatch!(self.cache_delete(id))
    }

    /// Take the lock `name` for `ttl_ms` unless someone else holds it.
    pub async fn try_lock(&self, name: &[u8; 32], owner: &[u8; 16], ttl_ms: i64) -> Result<bool, StoreError> {
        dispatch!(self.try_lock(name, owner, ttl_ms))
    }

    /// Release the lock if `owner` still holds it.
    pub async fn unlock(&self, name: &[u8; 32], owner: &[u8; 16]) -> Result<(), StoreError> {
        dispatch!(self.unlock(name, owner))
    }

    /// Delete expired rows (SQL; Redis expires keys itself).
    pub async fn cleanup(&self, now: i64, revocations_before_ms: i64) -> Result<u64, StoreError> {
        dispatch!(self.cleanup(now, revocations_before_ms))
    }
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
