//! The connection to Redis in each `redis_mode` (SPEC §9), behind the driver's own
//! `ConnectionLike` so that every command is written once:
//!
//! - `single`: one node, through the driver's reconnecting `ConnectionManager`;
//! - `cluster`: the driver's cluster client, which follows MOVED/ASK and re-reads the slot
//!   map after failures;
//! - `sentinel`: the primary the sentinels name. The driver resolves it once per client and
//!   does not follow a failover, so the resolved connection is dropped after every connection
//!   error or READONLY answer (a demoted primary) and the next command asks the sentinels again.
//!
//! All three connect lazily: building a store dials nothing, and a store that is down at
//! start-up is a 503 until it answers, never a failed start.

use super::super::model::OP_TIMEOUT;
use redis::FromRedisValue;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How long a write waits for a replica's acknowledgement: far above a healthy replica's lag,
/// well within the store timeout.
const WAIT_MS: u64 = 500;
/// When an unacknowledged write was last logged (unix seconds): at most one line a minute.
static UNREPLICATED_LOGGED: AtomicI64 = AtomicI64::new(0);
/// Until when (unix seconds) writes do not wait, after one that no replica acknowledged.
static WAIT_SKIPPED_UNTIL: AtomicI64 = AtomicI64::new(0);

/// A write no replica acknowledged: counted, logged at most once a minute, and writes stop
/// waiting for 10 s.
fn unreplicated() {
    metrics::counter!("bff_store_unreplicated_writes_total").increment(1);
    let now = crate::clock::now();
    WAIT_SKIPPED_UNTIL.store(now + 10, Ordering::Relaxed);
    let last = UNREPLICATED_LOGGED.load(Ordering::Relaxed);
    if now - last >= 60 && UNREPLICATED_LOGGED.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::warn!(
            wait_ms = WAIT_MS,
            "redis: a write reached no replica in time (a failover now could lose it); writes do not wait \
             for replicas for 10 s; see bff_store_unreplicated_writes_total"
        );
    }
}

#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<ClusterLink>),
    Sentinel(Arc<SentinelLink>),
}

impl Conn {
    pub(super) fn single(url: &str) -> RedisResult<(Self, redis::Client)> {
        let client = redis::Client::open(url)?;
        // Fail fast and let the caller answer 503; the manager reconnects in the background.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(std::time::Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok((Self::Single(conn), client))
    }

    pub(super) fn cluster(nodes: &[String]) -> RedisResult<Self> {
        Ok(Self::Cluster(Arc::new(ClusterLink { client: cluster_builder(nodes).build()?, conn: Default::default() })))
    }

    /// `nodes`: the sentinels. Their URLs' credentials, database and TLS also serve the primary.
    pub(super) fn sentinel(nodes: &[String], master: &str) -> RedisResult<Self> {
        let first = nodes.first().map(String::as_str).unwrap_or_default().into_connection_info()?;
        let mut primary =
            SentinelNodeConnectionInfo::default().set_redis_connection_info(first.redis_settings().clone());
        if nodes.iter().any(|u| u.starts_with("rediss://")) {
            primary = primary.set_tls_mode(redis::TlsMode::Secure);
        }
        // The database is the primary's: sentinels have none, and refuse SELECT.
        let sentinels: Vec<String> = nodes
            .iter()
            .map(|n| match url::Url::parse(n) {
                Ok(mut u) => {
                    u.set_path("");
                    u.into()
                }
                Err(_) => n.clone(),
            })
            .collect();
        let client = SentinelClient::build(sentinels, master, Some(primary), SentinelServerType::Master)?;
        Ok(Self::Sentinel(Arc::new(SentinelLink {
            sentinels: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
        })))
    }

    /// Run `p` (keys in one slot) and answer its results. In the modes that promise replicas
    /// (cluster, sentinel), `WAIT 1` follows on the same connection, so the answer comes once
    /// a replica holds the writes: a failover then neither revives an ended session nor loses
    /// a rotated refresh token (SPEC §9). `WAIT` blocks its connection: call this on a
    /// connection kept for such writes, never the one reads share. A write no replica
    /// acknowledged in time is counted and logged, not failed (the primary has it), and for
    /// the next 10 s writes do not wait (no replica is keeping up: waiting would only hold
    /// every write for 500 ms); they are counted too.
    pub(super) async fn durable_pipe(&self, mut p: Pipeline) -> RedisResult<Vec<Value>> {
        let mut c = self.clone();
        let replicated = !matches!(self, Self::Single(_));
        let wait = replicated && crate::clock::now() >= WAIT_SKIPPED_UNTIL.load(Ordering::Relaxed);
        if wait {
            p.cmd("WAIT").arg(1).arg(WAIT_MS);
        }
        let mut values: Vec<Value> = p.query_async(&mut c).await?;
        if !wait {
            if replicated {
                metrics::counter!("bff_store_unreplicated_writes_total").increment(1);
            }
            return Ok(values);
        }
        if values.pop().map_or(0, |v| i64::from_redis_value(v).unwrap_or(0)) < 1 {
            unreplicated();
        }
        Ok(values)
    }

    /// One command through [`Self::durable_pipe`].
    pub(super) async fn durable<T: FromRedisValue>(&self, cmd: Cmd) -> RedisResult<T> {
        let mut p = redis::pipe();
        p.add_command(cmd);
        let v = self.durable_pipe(p).await?.into_iter().next().unwrap_or(Value::Nil);
        T::from_redis_value(v).map_err(RedisError::from)
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A client for the current primary (sentinel mode), to open a pub/sub connection on.
    pub(super) async fn sentinel_primary(link: &SentinelLink) -> RedisResult<redis::Client> {
        link.sentinels.lock().await.async_get_client().await
    }
}

/// The cluster client's settings: every request bounded by the store timeout.
pub(super) fn cluster_builder(nodes: &[String]) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(OP_TIMEOUT)
        .response_timeout(OP_TIMEOUT)
        // A request is retried (after MOVED, or a node lost mid-failover) within the store
        // timeout only; the caller answers 503 after that.
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500)
}

pub(super) struct ClusterLink {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl ClusterLink {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        // Once connected, the cluster connection reconnects to nodes and re-reads slots itself.
        self.conn.get_or_try_init(|| self.client.get_async_connection()).await.cloned()
    }
}

pub(super) struct SentinelLink {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The primary's connection and a generation, so that a failure seen on an older
    /// connection does not drop a newer one.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
}

impl SentinelLink {
    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn get(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        // One resolution at a time; those who waited use its result.
        let mut sentinels = self.sentinels.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT));
        let conn = sentinels.async_get_client().await?.get_multiplexed_async_connection_with_config(&config).await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// After a command: drop the connection after a connection error, or a READONLY answer
    /// (`demoted`: the driver hands server errors back as values, not as `Err`).
    fn check<T>(&self, generation: u64, r: RedisResult<T>, demoted: bool) -> RedisResult<T> {
        if demoted || r.as_ref().is_err_and(must_reresolve) {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
                drop(current);
                tracing::warn!("redis primary lost or demoted: asking the sentinels again");
            }
        }
        r
    }
}

/// A primary that has become a replica answers writes with READONLY.
fn is_readonly(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::ReadOnly))
}

/// The connection was already gone, or refused: the command never reached a server, so the
/// first command after a failover is sent again to the new primary instead of failing
/// (a READONLY answer, refused by the server, is retried the same way).
fn never_ran(e: &RedisError) -> bool {
    e.is_connection_dropped() || e.is_connection_refusal()
}

/// A connection error, a timeout, or a primary that has become a replica.
fn must_reresolve(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(link) => Box::pin(async move { link.get().await?.req_packed_command(cmd).await }),
            Self::Sentinel(link) => Box::pin(async move {
                let mut tries = 0;
                loop {
                    let (generation, mut c) = link.get().await?;
                    let r = c.req_packed_command(cmd).await;
                    let demoted = r.as_ref().is_ok_and(is_readonly);
                    if tries == 0 && (demoted || r.as_ref().is_err_and(never_ran)) {
                        link.check(generation, r, demoted).ok();
                        tries += 1;
                        continue;
                    }
                    return link.check(generation, r, demoted);
                }
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(link) => {
                Box::pin(async move { link.get().await?.req_packed_commands(pipeline, offset, count).await })
            }
            Self::Sentinel(link) => Box::pin(async move {
                let mut tries = 0;
                loop {
                    let (generation, mut c) = link.get().await?;
                    let r = c.req_packed_commands(pipeline, offset, count).await;
                    // A pipeline is retried on a dead connection only: READONLY may have
                    // answered one command of it while others ran.
                    let demoted = r.as_ref().is_ok_and(|values| values.iter().any(is_readonly));
                    if tries == 0 && r.as_ref().is_err_and(never_ran) {
                        link.check(generation, r, demoted).ok();
                        tries += 1;
                        continue;
                    }
                    return link.check(generation, r, demoted);
                }
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(_) | Self::Sentinel(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_readonly;

    /// The driver hands a demoted primary's refusal back as a value: it must still be seen.
    #[test]
    fn a_readonly_answer_is_recognised_as_a_value() {
        let parse = |wire: &[u8]| redis::parse_redis_value(wire).unwrap_or_else(|e| panic!("{e}"));
        assert!(is_readonly(&parse(b"-READONLY You can't write against a read only replica.\r\n")));
        assert!(!is_readonly(&parse(b"-ERR something else\r\n")));
        assert!(!is_readonly(&parse(b"+OK\r\n")));
    }
}
