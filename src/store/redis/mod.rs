//! Redis (≥ 7.0; standalone or a primary behind a proxy, not Cluster: the logout script
//! touches keys it finds in an index set). Keys, under a prefix (default `bff:`, or the URL's
//! `prefix` query parameter, which is removed before the URL reaches the driver):
//!
//! - `s:{hex key}` hash `sub sid isub isid created seen v data`, expiring with the session
//!   (`isub`/`isid`: the hex hashes naming its index sets);
//! - `hsid:{hex SHA-256(sid)}`, `hsub:{hex SHA-256(sub)}` sets of session keys (back-channel
//!   logout), expiring with the longest-lived member. Key names carry hashes of ids (SPEC §9);
//!   older builds' `sid:{sid}`/`sub:{sub}` sets are still walked until they have expired;
//! - `rev` sorted set of cookie-mode revocations `kind:iat:value`, scored by when recorded;
//! - `used:{hex SHA-256(id)}` (spent logout-token jtis and login states; `used:{id}` of older
//!   builds still counts), `rc:{hex id}`, `lock:{hex name}` with their own expiry.

use super::model::{CacheRow, NewSession, OP_TIMEOUT, Revocation, RevocationKind, SessionRow, StoreError, Subject};
use crate::secret::hex;
use crate::settings::store_url::redis_parts;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use scripts::{DELETE, FIRST_USE, LOGOUT, REVOKE, TOUCH, UNLOCK, UPDATE};
use std::sync::Arc;

mod scripts;

/// An index set larger than this is pruned of dead ids when a session is added to it.
const PRUNE_ABOVE: u64 = 32;

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
    /// For the event channel's own connection (a subscribed connection serves nothing else).
    client: Arc<redis::Client>,
}

/// Hex SHA-256 of an id: what key names carry instead of it (SPEC §9).
fn id_hash(id: &str) -> String {
    hex(&<sha2::Sha256 as sha2::Digest>::digest(id.as_bytes()))
}

impl RedisStore {
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let (url, prefix) = redis_parts(url).map_err(|e| StoreError::Backend(e.to_owned()))?;
        // The driver's error may quote the URL: keep our own message.
        let client = redis::Client::open(url).map_err(|_| StoreError::Backend("not a valid store URL".to_owned()))?;
        // Fail fast and let the caller answer 503; the manager reconnects in the background.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(std::time::Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Self { conn, prefix: prefix.into(), client: Arc::new(client) })
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + kind.len() + rest.len() + 1);
        k.push_str(&self.prefix);
        k.push_str(kind);
        k.push(':');
        k.push_str(rest);
        k
    }

    fn session_key(&self, key: &[u8; 32]) -> String {
        self.key("s", &hex(key))
    }

    /// The one channel every instance's events go through (SPEC §5).
    pub fn events_channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub async fn publish_event(&self, payload: &str) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        c.publish::<_, _, ()>(self.events_channel(), payload).await
    }

    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ())
    }

    pub async fn insert_session(&self, s: &NewSession<'_>) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        let id = hex(s.key);
        let k = self.key("s", &id);
        let (isub, isid) = (id_hash(s.sub), s.sid.map(id_hash));
        let mut p = redis::pipe();
        p.atomic()
            .hset_multiple(
                &k,
                &[
                    ("sub", s.sub.to_owned()),
                    ("sid", s.sid.unwrap_or_default().to_owned()),
                    ("isub", isub.clone()),
                    ("isid", isid.clone().unwrap_or_default()),
                    ("created", s.created_at.to_string()),
                    ("seen", s.last_seen.to_string()),
                    ("v", "1".to_owned()),
                    ("data", s.data.to_owned()),
                ],
            )
            .ignore()
            .expire_at(&k, s.expires_at)
            .ignore();
        let mut index = vec![self.key("hsub", &isub)];
        if let Some(isid) = &isid {
            index.push(self.key("hsid", isid));
        }
        // An index set lives as long as its longest-lived session can (NX then GT: a set
        // without expiry counts as infinite for GT). The absolute expiry, not the idle one:
        // activity slides the session's own key, never the sets.
        for set in &index {
            p.sadd(set, &id).ignore();
            p.cmd("EXPIREAT").arg(set).arg(s.absolute_expires_at).arg("NX").ignore();
            p.cmd("EXPIREAT").arg(set).arg(s.absolute_expires_at).arg("GT").ignore();
            p.scard(set);
        }
        let sizes: Vec<u64> = p.query_async(&mut c).await?;
        // Sessions that ended by expiry leave their ids behind: prune a set that has grown, so
        // index sets stay about as large as the user's live sessions.
        for (set, size) in index.into_iter().zip(sizes) {
            if size > PRUNE_ABOVE {
                self.logout_set(set, "prune", 0, "").await?;
            }
        }
        Ok(())
    }

    pub async fn get_session(&self, key: &[u8; 32], _now: i64) -> Result<Option<SessionRow>, redis::RedisError> {
        let mut c = self.conn.clone();
        let (v, seen, data): (Option<i64>, Option<i64>, Option<String>) =
            redis::cmd("HMGET").arg(self.session_key(key)).arg("v").arg("seen").arg("data").query_async(&mut c).await?;
        Ok(match (v, seen, data) {
            (Some(version), Some(last_seen), Some(data)) => Some(SessionRow { version, last_seen, data }),
            _ => None,
        })
    }

    pub async fn update_session(
        &self,
        key: &[u8; 32],
        version: i64,
        data: &str,
        last_seen: i64,
        expires_at: i64,
    ) -> Result<bool, redis::RedisError> {
        let mut c = self.conn.clone();
        let n: i64 = UPDATE
            .key(self.session_key(key))
            .arg(version)
            .arg(version + 1)
            .arg(data)
            .arg(last_seen)
            .arg(expires_at)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    pub async fn touch_session(
        &self,
        key: &[u8; 32],
        last_seen: i64,
        expires_at: i64,
    ) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        TOUCH.key(self.session_key(key)).arg(last_seen).arg(expires_at).invoke_async::<i64>(&mut c).await.map(|_| ())
    }

    pub async fn delete_session(&self, key: &[u8; 32]) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        DELETE.key(self.session_key(key)).arg(&*self.prefix).arg(hex(key)).invoke_async::<i64>(&mut c).await.map(|_| ())
    }

    /// Walk one index set in SSCAN batches, ending the sessions `mode` selects.
    async fn logout_set(&self, set: String, mode: &str, iat: i64, sub: &str) -> Result<u64, redis::RedisError> {
        let mut c = self.conn.clone();
        let session_prefix = self.key("s", "");
        let mut cursor: u64 = 0;
        let mut n = 0;
        loop {
            let (next, ids): (u64, Vec<String>) =
                redis::cmd("SSCAN").arg(&set).arg(cursor).arg("COUNT").arg(200).query_async(&mut c).await?;
            if !ids.is_empty() {
                let mut inv = LOGOUT.key(&set);
                inv.arg(mode).arg(iat).arg(&session_prefix).arg(sub);
                for id in &ids {
                    inv.arg(id);
                }
                n += inv.invoke_async::<u64>(&mut c).await?;
            }
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }

    /// Each index is walked under its hashed name and under the raw name older builds used
    /// (empty, and answered at once, once their sessions have expired).
    pub async fn delete_sessions_of(&self, who: Subject<'_>, iat: i64) -> Result<u64, redis::RedisError> {
        let sets = |kind: &str, id: &str| [self.key(&format!("h{kind}"), &id_hash(id)), self.key(kind, id)];
        let mut n = 0;
        match who {
            Subject::Sid { sid, sub, received } => {
                for set in sets("sid", sid) {
                    n += self.logout_set(set, "any", received, sub.unwrap_or("")).await?;
                }
                if let Some(sub) = sub {
                    for set in sets("sub", sub) {
                        n += self.logout_set(set, "nosid", iat, sub).await?;
                    }
                }
            }
            Subject::Sub(sub) => {
                for set in sets("sub", sub) {
                    n += self.logout_set(set, "any", iat, "").await?;
                }
            }
        }
        Ok(n)
    }

    pub async fn add_revocation(&self, r: &Revocation, _expires_at: i64) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        let member = format!("{}:{}:{}", r.kind.as_str(), r.iat, r.value);
        REVOKE.key(self.key("rev", "")).arg(member).invoke_async::<i64>(&mut c).await.map(|_| ())
    }

    pub async fn revocations_since(
        &self,
        since_ms: i64,
        _now: i64,
    ) -> Result<Vec<(Revocation, i64)>, redis::RedisError> {
        let mut c = self.conn.clone();
        let members: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key("rev", ""))
            .arg(since_ms)
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(&mut c)
            .await?;
        Ok(members
            .iter()
            .filter_map(|(m, score)| {
                let mut parts = m.splitn(3, ':');
                let kind = RevocationKind::parse(parts.next()?)?;
                let iat = parts.next()?.parse().ok()?;
                Some((Revocation { kind, iat, value: parts.next()?.to_owned() }, *score as i64))
            })
            .collect())
    }

    pub async fn is_used(&self, id: &str, _now: i64) -> Result<bool, redis::RedisError> {
        let mut c = self.conn.clone();
        // The raw name too: spent by an older build within the value's lifetime.
        let keys = [self.key("used", &id_hash(id)), self.key("used", id)];
        Ok(c.exists::<_, u64>(&keys[..]).await? > 0)
    }

    pub async fn first_use(&self, id: &str, expires_at: i64) -> Result<bool, redis::RedisError> {
        let mut c = self.conn.clone();
        let (hashed, legacy) = (self.key("used", &id_hash(id)), self.key("used", id));
        let n: i64 = FIRST_USE.key(hashed).key(legacy).arg(expires_at).invoke_async(&mut c).await?;
        Ok(n == 1)
    }

    pub async fn cache_put(
        &self,
        id: &[u8; 32],
        sealed: Option<&[u8]>,
        expires_at: i64,
    ) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        // A sealed entry is never empty (nonce + tag): empty means "refused".
        redis::cmd("SET")
            .arg(self.key("rc", &hex(id)))
            .arg(sealed.unwrap_or_default())
            .arg("EXAT")
            .arg(expires_at)
            .query_async::<()>(&mut c)
            .await
    }

    pub async fn cache_get(&self, id: &[u8; 32], _now: i64) -> Result<Option<CacheRow>, redis::RedisError> {
        let mut c = self.conn.clone();
        let v: Option<Vec<u8>> = c.get(self.key("rc", &hex(id))).await?;
        Ok(v.map(|v| if v.is_empty() { CacheRow::Refused } else { CacheRow::Sealed(v) }))
    }

    pub async fn cache_delete(&self, id: &[u8; 32]) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        c.del::<_, i64>(self.key("rc", &hex(id))).await.map(|_| ())
    }

    pub async fn try_lock(&self, name: &[u8; 32], owner: &[u8; 16], ttl_ms: i64) -> Result<bool, redis::RedisError> {
        let mut c = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key("lock", &hex(name)))
            .arg(&owner[..])
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut c)
            .await?;
        Ok(set.is_some())
    }

    pub async fn unlock(&self, name: &[u8; 32], owner: &[u8; 16]) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        UNLOCK.key(self.key("lock", &hex(name))).arg(&owner[..]).invoke_async::<i64>(&mut c).await.map(|_| ())
    }

    /// `revocations_before_ms` is on the local clock: entries are kept the longest session
    /// lifetime plus a minute, so clock skew of seconds does not matter here.
    pub async fn cleanup(&self, _now: i64, revocations_before_ms: i64) -> Result<u64, redis::RedisError> {
        let mut c = self.conn.clone();
        c.zrembyscore(self.key("rev", ""), "-inf", revocations_before_ms).await
    }
}
