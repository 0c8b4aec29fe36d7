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
        let client = SentinelClient::build(nodes.to_vec(), master, Some(primary), SentinelServerType::Master)?;
        Ok(Self::Sentinel(Arc::new(SentinelLink {
            sentinels: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
        })))
    }

    /// Run `cmd` (keys in one slot). In the modes that promise replicas (cluster, sentinel),
    /// `WAIT 1` follows on the same connection, so the answer comes once a replica holds the
    /// write: a failover then neither revives an ended session nor loses a rotated refresh
    /// token (SPEC §9). A write no replica acknowledged in time is counted and logged, not
    /// failed: the primary has it.
    pub(super) async fn durable<T: FromRedisValue>(&self, cmd: Cmd) -> RedisResult<T> {
        let mut c = self.clone();
        if matches!(self, Self::Single(_)) {
            return cmd.query_async(&mut c).await;
        }
        let mut p = redis::pipe();
        p.add_command(cmd).cmd("WAIT").arg(1).arg(WAIT_MS);
        let (v, acked): (T, i64) = p.query_async(&mut c).await?;
        if acked < 1 {
            metrics::counter!("bff_store_unreplicated_writes_total").increment(1);
            let now = crate::clock::now();
            let last = UNREPLICATED_LOGGED.load(Ordering::Relaxed);
            if now - last >= 60
                && UNREPLICATED_LOGGED.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                tracing::warn!(
                    wait_ms = WAIT_MS,
                    "redis: a write reached no replica in time (a failover now could lose it); \
                     see bff_store_unreplicated_writes_total"
                );
            }
        }
        Ok(v)
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

    fn check<T>(&self, generation: u64, r: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &r
            && must_reresolve(e)
        {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
                drop(current);
                tracing::warn!(error = %e, "redis primary lost: asking the sentinels again");
            }
        }
        r
    }
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
                let (generation, mut c) = link.get().await?;
                let r = c.req_packed_command(cmd).await;
                link.check(generation, r)
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
                let (generation, mut c) = link.get().await?;
                let r = c.req_packed_commands(pipeline, offset, count).await;
                link.check(generation, r)
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
