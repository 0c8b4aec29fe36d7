//! The events channel's subscription (SPEC §5) in each `redis_mode`: plain pub/sub on the one
//! node or on the primary the sentinels name, sharded pub/sub (`SSUBSCRIBE`, RESP3) in a
//! cluster, where the channel lives on the shard owning its slot.
//!
//! Any sign that messages may have been missed (a resubscription, a slot moved away, a full
//! buffer) ends the subscription: the caller subscribes anew and re-checks what it serves.

use super::conn::{Conn, cluster_builder};
use futures_util::StreamExt;
use redis::{PushInfo, PushKind, RedisError, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A subscription is pinged this often: a connection that died silently (no reset) must not
/// leave the instance deaf.
const PING: Duration = Duration::from_secs(15);
/// Messages buffered between the cluster connection and the reader.
const BUFFER: usize = 256;

pub enum RedisFeed {
    Plain {
        sink: redis::aio::PubSubSink,
        stream: redis::aio::PubSubStream,
    },
    Sharded {
        conn: redis::cluster_async::ClusterConnection,
        rx: tokio::sync::mpsc::Receiver<PushInfo>,
        /// Set when a message found the buffer full.
        lost: Arc<AtomicBool>,
        /// The subscription's own confirmation has arrived: any later one is a resubscription.
        confirmed: bool,
    },
}

fn lost(why: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::Io, why))
}

impl RedisFeed {
    pub(super) async fn subscribe(conn: &Conn, nodes: &[String], channel: String) -> Result<Self, RedisError> {
        let client = match conn {
            Conn::Single(_) => redis::Client::open(nodes.first().map(String::as_str).unwrap_or_default())?,
            Conn::Sentinel(link, _) => Conn::sentinel_primary(link).await?,
            Conn::Cluster(_) => return Self::sharded(nodes, channel).await,
        };
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
        Ok(Self::Plain { sink, stream })
    }

    async fn sharded(nodes: &[String], channel: String) -> Result<Self, RedisError> {
        let (tx, rx) = tokio::sync::mpsc::channel(BUFFER);
        let lost = Arc::new(AtomicBool::new(false));
        let overflow = lost.clone();
        let push = move |info: PushInfo| {
            if tx.try_send(info).is_err() {
                overflow.store(true, Ordering::Relaxed);
            }
            Ok::<(), std::convert::Infallible>(())
        };
        let client = cluster_builder(nodes).use_protocol(redis::ProtocolVersion::RESP3).push_sender(push).build()?;
        let mut conn = client.get_async_connection().await?;
        conn.ssubscribe(channel).await?;
        Ok(Self::Sharded { conn, rx, lost, confirmed: false })
    }

    /// The next message's payload. `Err` when the subscription is gone or may have missed
    /// messages: drop this feed and subscribe again.
    pub async fn next(&mut self) -> Result<String, RedisError> {
        match self {
            Self::Plain { sink, stream } => loop {
                match tokio::time::timeout(PING, stream.next()).await {
                    Ok(Some(msg)) => match msg.get_payload::<String>() {
                        Ok(p) => return Ok(p),
                        Err(_) => continue,
                    },
                    Ok(None) => return Err(lost("event subscription closed")),
                    Err(_) => {
                        tokio::time::timeout(super::super::model::OP_TIMEOUT, sink.ping::<String>())
                            .await
                            .map_err(|_| lost("event subscription ping timed out"))??;
                    }
                }
            },
            Self::Sharded { conn, rx, lost: overflowed, confirmed } => loop {
                if overflowed.load(Ordering::Relaxed) {
                    return Err(lost("event subscription fell behind"));
                }
                let info = match tokio::time::timeout(PING, rx.recv()).await {
                    Ok(Some(info)) => info,
                    Ok(None) => return Err(lost("event subscription closed")),
                    Err(_) => {
                        tokio::time::timeout(
                            super::super::model::OP_TIMEOUT,
                            redis::cmd("PING").query_async::<Value>(conn),
                        )
                        .await
                        .map_err(|_| lost("event subscription ping timed out"))??;
                        continue;
                    }
                };
                match info.kind {
                    PushKind::SMessage => {
                        if let Some(Value::BulkString(p)) = info.data.get(1)
                            && let Ok(p) = std::str::from_utf8(p)
                        {
                            return Ok(p.to_owned());
                        }
                    }
                    PushKind::SSubscribe if !*confirmed => *confirmed = true,
                    // The driver resubscribed after a reconnection, or the slot moved away:
                    // either way messages may have been missed.
                    PushKind::SSubscribe | PushKind::SUnsubscribe | PushKind::Disconnection => {
                        return Err(lost("event subscription interrupted"));
                    }
                    _ => {}
                }
            },
        }
    }
}
