//! Redis (≥ 7.0): one node, a Redis Cluster or a Sentinel-managed primary (`redis_mode`, SPEC
//! §9). Keys, under a prefix (default `bff:`, or the URL's `prefix` query parameter, which is
//! removed before the URL reaches the driver); in a cluster the id part is a `{…}` hash tag,
//! elsewhere it is written bare, as earlier builds did, so an upgrade ends no session:
//!
//! - `s:{hex key}` hash `sub sid isub isid created seen v data ix`, expiring with the session
//!   (`isub`/`isid`: the hex hashes naming its index sets; `ix`: when its entries were added);
//! - `hsid:{hex SHA-256(sid)}`, `hsub:{hex SHA-256(sub)}` sets of `{hex key}:{ix}` (bare
//!   `{hex key}` from older builds), expiring with the longest-lived session; older builds'
//!   `sid:{sid}`/`sub:{sub}` sets are still walked outside a cluster until they have expired;
//! - `rev:` sorted set of cookie-mode revocations `kind:iat:value`, scored by when recorded;
//! - `used:{hex SHA-256(id)}` (spent jtis and login states; older builds' `used:{id}` counts
//!   too), `rc:{hex id}` and `lock:{hex id}` (one slot) with their own expiry.
//!
//! Every script and pipeline touches one key. Index entries are added before a session is
//! written and removed after it is deleted, so a walk checks each entry it finds. In cluster
//! and sentinel mode the writes a failover must not undo wait for a replica (`Conn::durable`).

use super::model::{CacheRow, NewSession, Revocation, RevocationKind, SessionRow, StoreError, Subject};
use crate::secret::hex;
use crate::settings::RedisMode;
use conn::{Conn, Writers};
use redis::{AsyncCommands, Cmd, FromRedisValue};
use scripts::{DELETE, END, FIRST_USE, INSERT, REVOKE, TOUCH, UNLOCK, UPDATE, eval};
use std::sync::Arc;

mod conn;
mod feed;
mod scripts;

pub use feed::RedisFeed;

/// An index set larger than this is pruned of dead ids when a session is added to it.
const PRUNE_ABOVE: u64 = 32;

#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    /// Writes that wait for a replica (`Writers`): connections of their own in cluster and
    /// sentinel mode, so reads never queue behind a `WAIT`.
    writes: Arc<Writers>,
    prefix: Arc<str>,
    /// What the event subscription connects with (a subscribed connection serves nothing else).
    nodes: Arc<[String]>,
    /// Cluster mode: ids in key names are `{…}` hash tags.
    tagged: bool,
}

/// Hex SHA-256 of an id: what key names carry instead of it (SPEC §9).
fn id_hash(id: &str) -> String {
    hex(&<sha2::Sha256 as sha2::Digest>::digest(id.as_bytes()))
}

impl RedisStore {
    pub fn open(url: &str, mode: &RedisMode) -> Result<Self, StoreError> {
        let c = conn::connect(url, mode).map_err(|e| StoreError::Backend(e.to_owned()))?;
        Ok(Self {
            tagged: c.reads.is_cluster(),
            conn: c.reads,
            writes: Arc::new(c.writes),
            prefix: c.prefix.into(),
            nodes: c.nodes.into(),
        })
    }

    /// `{prefix}{kind}:{id}`, the id a hash tag in a cluster.
    fn key(&self, kind: &str, id: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + kind.len() + id.len() + 3);
        k.push_str(&self.prefix);
        k.push_str(kind);
        k.push(':');
        if self.tagged {
            k.push('{');
            k.push_str(id);
            k.push('}');
        } else {
            k.push_str(id);
        }
        k
    }

    fn session_key(&self, key: &[u8; 32]) -> String {
        self.key("s", &hex(key))
    }

    fn revocations_key(&self) -> String {
        format!("{}rev:", self.prefix)
    }

    /// The one channel every instance's events go through (SPEC §5); sharded in a cluster.
    fn events_channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    pub async fn publish_event(&self, payload: &str) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        let publish = if self.tagged { "SPUBLISH" } else { "PUBLISH" };
        redis::cmd(publish).arg(self.events_channel()).arg(payload).query_async::<()>(&mut c).await
    }

    /// A subscription to the events channel, on its own connection.
    pub async fn subscribe(&self) -> Result<RedisFeed, redis::RedisError> {
        RedisFeed::subscribe(&self.conn, &self.nodes, self.events_channel()).await
    }

    /// Run `cmd` (one key); with replicas, then `WAIT 1` on the same connection (SPEC §9).
    async fn durable<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, redis::RedisError> {
        self.writes.durable(cmd).await
    }

    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ())
    }

    /// The index sets first, then the session (SPEC §9): a walk may meet an id whose session
    /// is not written yet, never a session missing from its index.
    pub async fn insert_session(&self, s: &NewSession<'_>) -> Result<(), redis::RedisError> {
        let id = hex(s.key);
        let (isub, isid) = (id_hash(s.sub), s.sid.map(id_hash));
        let mut index = vec![self.key("hsub", &isub)];
        if let Some(isid) = &isid {
            index.push(self.key("hsid", isid));
        }
        // The member carries when it was added: a walk leaves a member whose session it does
        // not find alone while that session may still be on its way (see `logout_set`).
        let added = crate::clock::now();
        let member = format!("{id}:{added}");
        let mut sizes = Vec::with_capacity(index.len());
        for set in &index {
            // A set lives as long as its longest-lived session can (NX then GT: a set without
            // expiry counts as infinite for GT). The absolute expiry, not the idle one:
            // activity slides the session's own key, never the sets.
            let mut p = redis::pipe();
            p.sadd(set, &member)
                .ignore()
                .cmd("EXPIREAT")
                .arg(set)
                .arg(s.absolute_expires_at)
                .arg("NX")
                .ignore()
                .cmd("EXPIREAT")
                .arg(set)
                .arg(s.absolute_expires_at)
                .arg("GT")
                .ignore()
                .scard(set);
            let size = self.writes.durable_pipe(p).await?.pop().map(u64::from_redis_value);
            sizes.push(size.and_then(Result::ok).unwrap_or(0));
        }
        let mut write = eval(INSERT, &self.key("s", &id));
        write
            .arg(s.sub)
            .arg(s.sid.unwrap_or_default())
            .arg(&isub)
            .arg(isid.as_deref().unwrap_or_default())
            .arg(s.created_at)
            .arg(s.last_seen)
            .arg(s.data)
            .arg(s.expires_at)
            .arg(added);
        self.durable::<i64>(write).await?;
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
        let mut write = eval(UPDATE, &self.session_key(key));
        write.arg(version).arg(version + 1).arg(data).arg(last_seen).arg(expires_at);
        Ok(self.durable::<i64>(write).await? == 1)
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

    /// The session, then its index entries (SPEC §9).
    pub async fn delete_session(&self, key: &[u8; 32]) -> Result<(), redis::RedisError> {
        let id = hex(key);
        let f: Vec<Option<String>> = self.durable(eval(DELETE, &self.key("s", &id))).await?;
        let field = |i: usize| f.get(i).cloned().flatten().filter(|v| !v.is_empty());
        let sets = match (field(2), field(0)) {
            (Some(isub), _) => [Some(self.key("hsub", &isub)), field(3).map(|isid| self.key("hsid", &isid))],
            // Written by an older build: its sets are named by the raw ids.
            (None, Some(sub)) if !self.tagged => {
                [Some(self.key("sub", &sub)), field(1).map(|sid| self.key("sid", &sid))]
            }
            _ => [None, None],
        };
        // This build's member, and an older build's (the bare id).
        let members = [Some(id.clone()), field(4).map(|added| format!("{id}:{added}"))];
        let mut c = self.conn.clone();
        for set in sets.into_iter().flatten() {
            c.srem::<_, _, i64>(set, members.iter().flatten().collect::<Vec<_>>()).await?;
        }
        Ok(())
    }

    /// Walk one index set in SSCAN batches, ending the sessions `mode` selects, each with a
    /// script of its own key; members whose session ended, or is gone and was added over a
    /// minute ago, then leave the set. A younger member whose session is not found stays: its
    /// session may be being written now (index entries come first), and removing its entry
    /// would hide it from later logouts. Expiry removes it soon enough.
    async fn logout_set(&self, set: String, mode: &str, iat: i64, sub: &str) -> Result<u64, redis::RedisError> {
        const YOUNG_SECS: i64 = 60;
        let mut c = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut n = 0;
        loop {
            let (next, members): (u64, Vec<String>) =
                redis::cmd("SSCAN").arg(&set).arg(cursor).arg("COUNT").arg(200).query_async(&mut c).await?;
            let now = crate::clock::now();
            let ends = members.iter().map(|member| {
                // Older builds' members are bare ids.
                let (id, added) =
                    member.split_once(':').map_or((member.as_str(), None), |(id, t)| (id, t.parse().ok()));
                let mut end = eval(END, &self.key("s", id));
                end.arg(mode).arg(iat).arg(sub);
                async move {
                    let outcome = if mode == "prune" {
                        end.query_async::<i64>(&mut self.conn.clone()).await?
                    } else {
                        self.durable::<i64>(end).await?
                    };
                    let young = added.is_some_and(|t: i64| now - t < YOUNG_SECS);
                    Ok::<_, redis::RedisError>((outcome, outcome == 1 || (outcome == -1 && !young)))
                }
            });
            let outcomes = futures_util::future::try_join_all(ends).await?;
            let done: Vec<&String> = members.iter().zip(&outcomes).filter(|(_, o)| o.1).map(|(m, _)| m).collect();
            n += outcomes.iter().filter(|o| o.0 == 1).count() as u64;
            if !done.is_empty() {
                c.srem::<_, _, i64>(&set, done).await?;
            }
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }

    /// Each index is walked under its hashed name and, outside a cluster, under the raw name
    /// older builds used (empty, and answered at once, once their sessions have expired).
    pub async fn delete_sessions_of(&self, who: Subject<'_>, iat: i64) -> Result<u64, redis::RedisError> {
        let sets = |kind: &str, id: &str| {
            let hashed = self.key(&format!("h{kind}"), &id_hash(id));
            [Some(hashed), (!self.tagged).then(|| self.key(kind, id))].into_iter().flatten()
        };
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
        let mut write = eval(REVOKE, &self.revocations_key());
        write.arg(format!("{}:{}:{}", r.kind.as_str(), r.iat, r.value));
        self.durable::<i64>(write).await.map(|_| ())
    }

    pub async fn revocations_since(
        &self,
        since_ms: i64,
        _now: i64,
    ) -> Result<Vec<(Revocation, i64)>, redis::RedisError> {
        let mut c = self.conn.clone();
        let members: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.revocations_key())
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
        let hashed: bool = c.exists(self.key("used", &id_hash(id))).await?;
        // The raw name too: spent by an older build within the value's lifetime.
        Ok(hashed || (!self.tagged && c.exists::<_, bool>(self.key("used", id)).await?))
    }

    pub async fn first_use(&self, id: &str, expires_at: i64) -> Result<bool, redis::RedisError> {
        let mut spend = redis::cmd("EVAL");
        spend.arg(FIRST_USE);
        if self.tagged {
            spend.arg(1).arg(self.key("used", &id_hash(id)));
        } else {
            spend.arg(2).arg(self.key("used", &id_hash(id))).arg(self.key("used", id));
        }
        spend.arg(expires_at);
        Ok(self.durable::<i64>(spend).await? == 1)
    }

    pub async fn cache_put(
        &self,
        id: &[u8; 32],
        sealed: Option<&[u8]>,
        expires_at: i64,
    ) -> Result<(), redis::RedisError> {
        // A sealed entry is never empty (nonce + tag): empty means "refused".
        let mut set = redis::cmd("SET");
        set.arg(self.key("rc", &hex(id))).arg(sealed.unwrap_or_default()).arg("EXAT").arg(expires_at);
        self.durable::<()>(set).await
    }

    pub async fn cache_get(&self, id: &[u8; 32], _now: i64) -> Result<Option<CacheRow>, redis::RedisError> {
        let mut c = self.conn.clone();
        let v: Option<Vec<u8>> = c.get(self.key("rc", &hex(id))).await?;
        Ok(v.map(|v| if v.is_empty() { CacheRow::Refused } else { CacheRow::Sealed(v) }))
    }

    pub async fn cache_delete(&self, id: &[u8; 32]) -> Result<(), redis::RedisError> {
        let mut del = redis::cmd("DEL");
        del.arg(self.key("rc", &hex(id)));
        self.durable::<i64>(del).await.map(|_| ())
    }

    /// Waited for like the writes it guards: a lock lost in a failover would let a second
    /// instance spend the same refresh token.
    pub async fn try_lock(&self, name: &[u8; 32], owner: &[u8; 16], ttl_ms: i64) -> Result<bool, redis::RedisError> {
        let mut set = redis::cmd("SET");
        set.arg(self.key("lock", &hex(name))).arg(&owner[..]).arg("NX").arg("PX").arg(ttl_ms);
        Ok(self.durable::<Option<String>>(set).await?.is_some())
    }

    pub async fn unlock(&self, name: &[u8; 32], owner: &[u8; 16]) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        UNLOCK.key(self.key("lock", &hex(name))).arg(&owner[..]).invoke_async::<i64>(&mut c).await.map(|_| ())
    }

    /// `revocations_before_ms` is on the local clock: entries are kept the longest session
    /// lifetime plus a minute, so clock skew of seconds does not matter here.
    pub async fn cleanup(&self, _now: i64, revocations_before_ms: i64) -> Result<u64, redis::RedisError> {
        let mut c = self.conn.clone();
        c.zrembyscore(self.revocations_key(), "-inf", revocations_before_ms).await
    }
}
