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
use crate::settings::RedisMode;
use crate::settings::store_url::{redis_nodes, redis_parts};
use redis::FromRedisValue;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How long a write waits for a replica's acknowledgement: far above a healthy replica's lag,
/// well within the store timeout.
const WAIT_MS: u64 = 500;
/// Connections for writes that wait for a replica: each `WAIT` holds one (a replica's
/// acknowledgement takes a round trip), so several let that many wait at once.
const WRITERS: usize = 4;

/// The connections for `[session] url` in `mode`: the one reads share, those for writes that
/// wait for a replica, the nodes (for the event subscription) and the key prefix. Dials
/// nothing. Errors are our own words: the driver's may quote the URL.
pub(super) fn connect(url: &str, mode: &RedisMode) -> Result<Connected, &'static str> {
    const BAD: &str = "not a valid store URL";
    let (reads, writes, nodes, prefix) = match mode {
        RedisMode::Single => {
            let (url, prefix) = redis_parts(url)?;
            let conn = Conn::single(&url).map_err(|_| BAD)?;
            (conn.clone(), vec![conn], vec![url], prefix)
        }
        RedisMode::Sentinel { master } => {
            let (nodes, prefix) = redis_nodes(url)?;
            let (conn, writes) = Conn::sentinel(&nodes, master, WRITERS).map_err(|_| BAD)?;
            (conn, writes, nodes, prefix)
        }
        RedisMode::Cluster => {
            let (nodes, prefix) = redis_nodes(url)?;
            let writes = (0..WRITERS).map(|_| Conn::cluster(&nodes)).collect::<Result<_, _>>().map_err(|_| BAD)?;
            (Conn::cluster(&nodes).map_err(|_| BAD)?, writes, nodes, prefix)
        }
    };
    Ok(Connected { reads, writes: Writers::new(writes), nodes, prefix })
}

pub(super) struct Connected {
    pub(super) reads: Conn,
    pub(super) writes: Writers,
    pub(super) nodes: Vec<String>,
    pub(super) prefix: String,
}

#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<ClusterLink>),
    /// The link, and which of its connections (0: reads; 1..: writes).
    Sentinel(Arc<SentinelLink>, usize),
}

impl Conn {
    pub(super) fn single(url: &str) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        // Fail fast and let the caller answer 503; the manager reconnects in the background.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(std::time::Duration::from_millis(500));
        Ok(Self::Single(ConnectionManager::new_lazy_with_config(client, config)?))
    }

    pub(super) fn cluster(nodes: &[String]) -> RedisResult<Self> {
        Ok(Self::Cluster(Arc::new(ClusterLink { client: cluster_builder(nodes).build()?, conn: Default::default() })))
    }

    /// `nodes`: the sentinels. Their URLs' credentials, database and TLS also serve the primary.
    /// One link for the connection reads share and the `writers` that wait for replicas: one
    /// resolution of the primary serves them all, and any of them failing drops them all, so
    /// reads and writes never go to different primaries.
    pub(super) fn sentinel(nodes: &[String], master: &str, writers: usize) -> RedisResult<(Self, Vec<Self>)> {
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
        let link = Arc::new(SentinelLink {
            sentinels: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            connections: writers + 1,
        });
        Ok((Self::Sentinel(link.clone(), 0), (1..=writers).map(|i| Self::Sentinel(link.clone(), i)).collect()))
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
    /// The primary's connections and a generation, so that a failure seen on an older
    /// connection does not drop newer ones.
    current: Mutex<Option<(u64, Vec<MultiplexedConnection>)>>,
    generation: AtomicU64,
    connections: usize,
}

impl SentinelLink {
    fn cached(&self, slot: usize) -> Option<(u64, MultiplexedConnection)> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().and_then(|(g, conns)| Some((*g, conns.get(slot)?.clone())))
    }

    async fn get(&self, slot: usize) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.cached(slot) {
            return Ok(c);
        }
        // One resolution at a time; those who waited use its result.
        let mut sentinels = self.sentinels.lock().await;
        if let Some(c) = self.cached(slot) {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT));
        let client = sentinels.async_get_client().await?;
        let mut conns = Vec::with_capacity(self.connections);
        for _ in 0..self.connections {
            conns.push(client.get_multiplexed_async_connection_with_config(&config).await?);
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let conn = conns
            .get(slot)
            .cloned()
            .ok_or_else(|| RedisError::from((redis::ErrorKind::Client, "no such connection")))?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, conns));
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

/// The command surely never reached a server (a refused connection), so it may be
/// sent once more, to the primary the sentinels name now. A connection that broke while the
/// command was in flight is not retried: the command may have run (the caller answers 503).
fn never_ran(e: &RedisError) -> bool {
    e.is_connection_refusal()
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
            Self::Sentinel(link, slot) => Box::pin(async move {
                let mut tries = 0;
                loop {
                    let (generation, mut c) = link.get(*slot).await?;
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
            Self::Sentinel(link, slot) => Box::pin(async move {
                let mut tries = 0;
                loop {
                    let (generation, mut c) = link.get(*slot).await?;
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
            Self::Cluster(_) | Self::Sentinel(..) => 0,
        }
    }
}

/// The connections that writes a failover must not undo go through (SPEC §9). In the modes
/// that promise replicas (cluster, sentinel), `WAIT 1` follows each on the same connection, so
/// the answer comes once a replica holds the write: a failover then neither revives an ended
/// session nor loses a rotated refresh token. `WAIT` blocks its connection, so these are not
/// the connection reads share, and there are several, taken in turn. A write no replica
/// acknowledged in time is counted and logged, not failed (the primary has it); for the next
/// 10 s writes then do not wait (no replica is keeping up: waiting would hold every write for
/// 500 ms), and are counted too.
pub(super) struct Writers {
    conns: Vec<Conn>,
    next: AtomicUsize,
    /// Until when (unix seconds) writes do not wait.
    skipped_until: AtomicI64,
    /// When an unacknowledged write was last logged (unix seconds): one line a minute at most.
    logged: AtomicI64,
}

impl Writers {
    pub(super) fn new(conns: Vec<Conn>) -> Self {
        Self { conns, next: AtomicUsize::new(0), skipped_until: AtomicI64::new(0), logged: AtomicI64::new(0) }
    }

    fn conn(&self) -> Conn {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns[i % self.conns.len()].clone()
    }

    /// Run `p` (keys in one slot) and answer its results, `WAIT`'s taken off.
    pub(super) async fn durable_pipe(&self, mut p: Pipeline) -> RedisResult<Vec<Value>> {
        let mut c = self.conn();
        let replicated = !matches!(c, Conn::Single(_));
        let wait = replicated && crate::clock::now() >= self.skipped_until.load(Ordering::Relaxed);
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
            self.unreplicated();
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

    fn unreplicated(&self) {
        metrics::counter!("bff_store_unreplicated_writes_total").increment(1);
        let now = crate::clock::now();
        self.skipped_until.store(now + 10, Ordering::Relaxed);
        let last = self.logged.load(Ordering::Relaxed);
        if now - last >= 60 && self.logged.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!(
                wait_ms = WAIT_MS,
                "redis: a write reached no replica in time (a failover now could lose it); writes do not \
                 wait for replicas for 10 s; see bff_store_unreplicated_writes_total"
            );
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
