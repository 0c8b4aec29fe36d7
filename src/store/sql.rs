//! SQLite and PostgreSQL through sqlx. One set of queries (`$n` placeholders work in both),
//! run on whichever pool this is; the schema is `migrations/{sqlite,postgres}/`, embedded.

use super::model::{CacheRow, NewSession, OP_TIMEOUT, Revocation, RevocationKind, SessionRow, StoreError, Subject};
use crate::settings::StoreKind;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, migrate::MigrateError};
use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

/// (version, description, PostgreSQL, SQLite). Append only: an applied migration's text is
/// checksummed by sqlx and must never change.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[(
    1,
    "sessions",
    include_str!("../../migrations/postgres/0001_sessions.sql"),
    include_str!("../../migrations/sqlite/0001_sessions.sql"),
)];

const MAX_CONNECTIONS: u32 = 16;

#[derive(Clone)]
pub enum SqlStore {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Run the same query-building expression against either pool.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match $self {
            SqlStore::Postgres($pool) => $body,
            SqlStore::Sqlite($pool) => $body,
        }
    };
}

fn bad_url(_: sqlx::Error) -> &'static str {
    // sqlx's message may quote the URL, which may hold a password.
    "not a valid store URL"
}

impl SqlStore {
    pub fn open(kind: StoreKind, url: &str) -> Result<Self, StoreError> {
        let bad = |e| StoreError::Backend(bad_url(e).to_owned());
        Ok(match kind {
            StoreKind::Postgres => {
                let opts = PgConnectOptions::from_str(url).map_err(bad)?.application_name("oidc-bff");
                Self::Postgres(
                    PgPoolOptions::new()
                        .max_connections(MAX_CONNECTIONS)
                        .min_connections(0)
                        .acquire_timeout(OP_TIMEOUT)
                        .idle_timeout(Duration::from_secs(60))
                        .connect_lazy_with(opts),
                )
            }
            _ => {
                // WAL: readers never wait for the writer; busy_timeout: writers queue briefly
                // instead of failing with SQLITE_BUSY.
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(bad)?
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(OP_TIMEOUT);
                Self::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(4)
                        .min_connections(0)
                        .acquire_timeout(OP_TIMEOUT)
                        .connect_lazy_with(opts),
                )
            }
        })
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    fn migrator(&self) -> Migrator {
        let postgres = matches!(self, Self::Postgres(_));
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, pg, lite)| {
                let sql = if postgres { pg } else { lite };
                Migration::new(*version, Cow::Borrowed(description), MigrationType::Simple, Cow::Borrowed(sql), false)
            })
            .collect::<Vec<_>>();
        Migrator { migrations: Cow::Owned(migrations), ..Migrator::DEFAULT }
    }

    /// Apply every migration not yet applied (sqlx records them in `_sqlx_migrations` and
    /// takes an advisory lock on PostgreSQL, so replicas starting together do not race).
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        let m = self.migrator();
        on_pool!(self, pool => m.run(pool).await)
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    pub async fn insert_session(&self, s: &NewSession<'_>) -> Result<(), sqlx::Error> {
        const Q: &str = "INSERT INTO bff_sessions (id, sub, sid, created_at, last_seen, expires_at, version, data) \
                         VALUES ($1, $2, $3, $4, $5, $6, 1, $7)";
        on_pool!(self, pool => sqlx::query(Q)
            .bind(&s.key[..])
            .bind(s.sub)
            .bind(s.sid)
            .bind(s.created_at)
            .bind(s.last_seen)
            .bind(s.expires_at)
            .bind(s.data)
            .execute(pool)
            .await
            .map(|_| ()))
    }

    pub async fn get_session(&self, key: &[u8; 32], now: i64) -> Result<Option<SessionRow>, sqlx::Error> {
        const Q: &str = "SELECT version, last_seen, data FROM bff_sessions WHERE id = $1 AND expires_at > $2";
        let row = on_pool!(self, pool => {
            let row = sqlx::query(Q).bind(&key[..]).bind(now).fetch_optional(pool).await?;
            row.map(|r| -> Result<SessionRow, sqlx::Error> {
                Ok(SessionRow { version: r.try_get(0)?, last_seen: r.try_get(1)?, data: r.try_get(2)? })
            })
        });
        row.transpose()
    }

    pub async fn update_session(
        &self,
        key: &[u8; 32],
        version: i64,
        data: &str,
        last_seen: i64,
        expires_at: i64,
    ) -> Result<bool, sqlx::Error> {
        const Q: &str = "UPDATE bff_sessions SET data = $1, version = version + 1, last_seen = $2, expires_at = $3 \
                         WHERE id = $4 AND version = $5";
        on_pool!(self, pool => sqlx::query(Q)
            .bind(data)
            .bind(last_seen)
            .bind(expires_at)
            .bind(&key[..])
            .bind(version)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
    }

    pub async fn touch_session(&self, key: &[u8; 32], last_seen: i64, expires_at: i64) -> Result<(), sqlx::Error> {
        const Q: &str = "UPDATE bff_sessions SET last_seen = $1, expires_at = $2 WHERE id = $3 AND last_seen < $1";
        on_pool!(self, pool => sqlx::query(Q)
            .bind(last_seen)
            .bind(expires_at)
            .bind(&key[..])
            .execute(pool)
            .await
            .map(|_| ()))
    }

    pub async fn delete_session(&self, key: &[u8; 32]) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => sqlx::query("DELETE FROM bff_sessions WHERE id = $1")
            .bind(&key[..])
            .execute(pool)
            .await
            .map(|_| ()))
    }

    pub async fn delete_sessions_of(&self, who: Subject<'_>, iat: i64) -> Result<u64, sqlx::Error> {
        let done = match who {
            Subject::Sid { sid, sub: Some(sub), received } => on_pool!(self, pool => sqlx::query(
                "DELETE FROM bff_sessions WHERE (sid = $1 AND sub = $2 AND created_at <= $4) \
                 OR (sid IS NULL AND sub = $2 AND created_at <= $3)")
                .bind(sid).bind(sub).bind(iat).bind(received).execute(pool).await?.rows_affected()),
            Subject::Sid { sid, sub: None, received } => on_pool!(self, pool => sqlx::query(
                "DELETE FROM bff_sessions WHERE sid = $1 AND created_at <= $2")
                .bind(sid).bind(received).execute(pool).await?.rows_affected()),
            Subject::Sub(sub) => on_pool!(self, pool => sqlx::query(
                "DELETE FROM bff_sessions WHERE sub = $1 AND created_at <= $2")
                .bind(sub).bind(iat).execute(pool).await?.rows_affected()),
        };
        Ok(done)
    }

    /// The database's clock in unix milliseconds, as SQL (replicas' clocks may disagree).
    fn db_now_ms(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
            Self::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        }
    }

    pub async fn add_revocation(&self, r: &Revocation, expires_at: i64) -> Result<(), sqlx::Error> {
        let q = format!(
            "INSERT INTO bff_revocations (kind, value, iat, recorded_ms, expires_at) \
             VALUES ($1, $2, $3, {}, $4) ON CONFLICT DO NOTHING",
            self.db_now_ms()
        );
        on_pool!(self, pool => sqlx::query(&q)
            .bind(r.kind.as_str())
            .bind(&r.value)
            .bind(r.iat)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ()))
    }

    pub async fn revocations_since(&self, since_ms: i64, now: i64) -> Result<Vec<(Revocation, i64)>, sqlx::Error> {
        const Q: &str =
            "SELECT kind, value, iat, recorded_ms FROM bff_revocations WHERE recorded_ms >= $1 AND expires_at > $2";
        on_pool!(self, pool => {
            let rows = sqlx::query(Q).bind(since_ms).bind(now).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let kind: String = r.try_get(0)?;
                if let Some(kind) = RevocationKind::parse(&kind) {
                    out.push((Revocation { kind, value: r.try_get(1)?, iat: r.try_get(2)? }, r.try_get(3)?));
                }
            }
            Ok(out)
        })
    }

    pub async fn is_used(&self, id: &str, now: i64) -> Result<bool, sqlx::Error> {
        const Q: &str = "SELECT COUNT(*) FROM bff_used_ids WHERE id = $1 AND expires_at > $2";
        on_pool!(self, pool => sqlx::query_scalar::<_, i64>(Q).bind(id).bind(now).fetch_one(pool).await.map(|n| n > 0))
    }

    pub async fn first_use(&self, id: &str, expires_at: i64) -> Result<bool, sqlx::Error> {
        const Q: &str = "INSERT INTO bff_used_ids (id, expires_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";
        on_pool!(self, pool => sqlx::query(Q)
            .bind(id)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
    }

    pub async fn cache_put(&self, id: &[u8; 32], sealed: Option<&[u8]>, expires_at: i64) -> Result<(), sqlx::Error> {
        const Q: &str = "INSERT INTO bff_refresh_cache (id, sealed, expires_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed, expires_at = excluded.expires_at";
        on_pool!(self, pool => sqlx::query(Q)
            .bind(&id[..])
            .bind(sealed)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ()))
    }

    pub async fn cache_get(&self, id: &[u8; 32], now: i64) -> Result<Option<CacheRow>, sqlx::Error> {
        const Q: &str = "SELECT sealed FROM bff_refresh_cache WHERE id = $1 AND expires_at > $2";
        on_pool!(self, pool => {
            let row = sqlx::query(Q).bind(&id[..]).bind(now).fetch_optional(pool).await?;
            match row {
                None => Ok(None),
                Some(r) => Ok(Some(match r.try_get::<Option<Vec<u8>>, _>(0)? {
                    Some(sealed) => CacheRow::Sealed(sealed),
                    None => CacheRow::Refused,
                })),
            }
        })
    }

    pub async fn cache_delete(&self, id: &[u8; 32]) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => sqlx::query("DELETE FROM bff_refresh_cache WHERE id = $1")
            .bind(&id[..])
            .execute(pool)
            .await
            .map(|_| ()))
    }

    pub async fn try_lock(&self, name: &[u8; 32], owner: &[u8; 16], ttl_ms: i64) -> Result<bool, sqlx::Error> {
        // Insert, or take over a lock whose holder let it expire (crashed mid-refresh). Expiry
        // is on the database's clock, so replicas' clocks need not agree.
        let now = self.db_now_ms();
        let q = format!(
            "INSERT INTO bff_locks (name, owner, expires_ms) VALUES ($1, $2, {now} + $3) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms \
             WHERE bff_locks.expires_ms < {now}"
        );
        on_pool!(self, pool => sqlx::query(&q)
            .bind(&name[..])
            .bind(&owner[..])
            .bind(ttl_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
    }

    pub async fn unlock(&self, name: &[u8; 32], owner: &[u8; 16]) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => sqlx::query("DELETE FROM bff_locks WHERE name = $1 AND owner = $2")
            .bind(&name[..])
            .bind(&owner[..])
            .execute(pool)
            .await
            .map(|_| ()))
    }

    pub async fn cleanup(&self, now: i64, revocations_before_ms: i64) -> Result<u64, sqlx::Error> {
        let _ = revocations_before_ms; // SQL rows carry their own expires_at
        let mut n = 0;
        for q in [
            "DELETE FROM bff_sessions WHERE expires_at <= $1",
            "DELETE FROM bff_revocations WHERE expires_at <= $1",
            "DELETE FROM bff_used_ids WHERE expires_at <= $1",
            "DELETE FROM bff_refresh_cache WHERE expires_at <= $1",
        ] {
            n += on_pool!(self, pool => sqlx::query(q).bind(now).execute(pool).await?.rows_affected());
        }
        let q = format!("DELETE FROM bff_locks WHERE expires_ms <= {}", self.db_now_ms());
        n += on_pool!(self, pool => sqlx::query(&q).execute(pool).await?.rows_affected());
        Ok(n)
    }
}
