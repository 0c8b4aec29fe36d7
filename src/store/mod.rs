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

mod feed;
mod model;
pub mod redis;
pub mod sql;

pub use feed::{Feed, Received};
pub use model::*;
use model::{timed, timed_for};

use crate::settings::{StoreKind, StoreUrl};

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

/// Call the same method on whichever backend this is, bounded by `OP_TIMEOUT`, in a span
/// `store <method>` when traces are on and a request is being traced.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        crate::telemetry::trace::store_op(concat!("store ", stringify!($method)), $self.system(), async {
            match $self {
                Store::Sql(s) => timed(s.$method($($arg),*)).await,
                Store::Redis(r) => timed(r.$method($($arg),*)).await,
            }
        })
        .await
    };
}

impl Store {
    /// Build the client for `url`. Connects lazily: nothing is dialled here.
    pub fn open(url: &StoreUrl) -> Result<Self, StoreError> {
        match url.backend {
            StoreKind::Redis => Ok(Self::Redis(redis::RedisStore::open(url.url.expose(), &url.redis_mode)?)),
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
        crate::telemetry::trace::store_op("store delete_sessions_of", self.system(), async {
            match self {
                Store::Sql(s) => timed_for(LOGOUT_TIMEOUT, s.delete_sessions_of(who, iat)).await,
                Store::Redis(r) => timed_for(LOGOUT_TIMEOUT, r.delete_sessions_of(who, iat)).await,
            }
        })
        .await
    }

    /// The backend as traces name it (`db.system.name`).
    fn system(&self) -> &'static str {
        match self {
            Store::Sql(sql::SqlStore::Postgres(_)) => "postgresql",
            Store::Sql(sql::SqlStore::Sqlite(_)) => "sqlite",
            Store::Redis(_) => "redis",
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

    /// Send `payload` to every instance's event channel (this one's included); a store without
    /// a channel (SQLite) accepts it and does nothing.
    pub async fn publish_event(&self, payload: &str) -> Result<(), StoreError> {
        match self.channel() {
            Some(c) => c.publish(payload).await,
            None => Ok(()),
        }
    }

    /// Whether this store carries events between instances (SPEC §5).
    pub fn has_feed(&self) -> bool {
        self.channel().is_some()
    }

    /// This instance's subscription to the event channel, not yet connected.
    pub fn feed(&self) -> Option<Feed> {
        self.channel().map(Feed::new)
    }

    fn channel(&self) -> Option<feed::Channel> {
        match self {
            Store::Redis(r) => Some(feed::Channel::Redis(r.clone())),
            Store::Sql(sql::SqlStore::Postgres(pool)) => Some(feed::Channel::Postgres(pool.clone())),
            Store::Sql(sql::SqlStore::Sqlite(_)) => None,
        }
    }

    /// Delete expired rows (SQL; Redis expires keys itself).
    pub async fn cleanup(&self, now: i64, revocations_before_ms: i64) -> Result<u64, StoreError> {
        dispatch!(self.cleanup(now, revocations_before_ms))
    }
}
