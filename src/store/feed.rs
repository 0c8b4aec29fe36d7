//! The store as a message channel between instances (SPEC §5): one fixed channel per store —
//! Redis pub/sub (`{prefix}events`, sharded in a cluster), PostgreSQL LISTEN/NOTIFY
//! (`bff_events`) — with one subscription per instance. SQLite has none: its instances share nothing but the file.
//!
//! Delivery is at most once: a message published while an instance is not subscribed is lost
//! to it. [`Feed::next`] therefore reports every (re)subscription, and the caller re-checks
//! what it may have missed.

use super::model::{StoreError, timed};
use super::redis::{RedisFeed, RedisStore};
use sqlx::PgPool;

/// The PostgreSQL channel. NOTIFY payloads are limited to 8000 bytes; ours are under 1 KiB.
const PG_CHANNEL: &str = "bff_events";

/// A store that carries messages.
#[derive(Clone)]
pub enum Channel {
    Redis(RedisStore),
    Postgres(PgPool),
}

impl Channel {
    pub async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        match self {
            Self::Redis(r) => timed(r.publish_event(payload)).await,
            Self::Postgres(pool) => {
                timed(sqlx::query("SELECT pg_notify($1, $2)").bind(PG_CHANNEL).bind(payload).execute(pool))
                    .await
                    .map(|_| ())
            }
        }
    }
}

/// What [`Feed::next`] yields.
#[derive(Debug)]
pub enum Received {
    /// Subscribed (again): messages published before may have been missed.
    Subscribed,
    Message(String),
}

enum Conn {
    Redis(Box<RedisFeed>),
    Postgres(Box<sqlx::postgres::PgListener>),
}

pub struct Feed {
    channel: Channel,
    conn: Option<Conn>,
}

impl Feed {
    pub fn new(channel: Channel) -> Self {
        Self { channel, conn: None }
    }

    /// The next message, subscribing first when not subscribed. `Err` when the store cannot
    /// be reached (the caller waits and calls again: the next success is `Subscribed`).
    pub async fn next(&mut self) -> Result<Received, StoreError> {
        let Some(conn) = &mut self.conn else {
            self.conn = Some(self.subscribe().await?);
            return Ok(Received::Subscribed);
        };
        let got = match conn {
            Conn::Redis(feed) => feed.next().await.map_err(|e| StoreError::Backend(e.to_string())),
            // `try_recv` reports a lost connection (`None`) instead of hiding it: what was
            // published meanwhile must be made up for.
            Conn::Postgres(listener) => match listener.try_recv().await {
                Ok(Some(n)) => Ok(n.payload().to_owned()),
                Ok(None) => Err(StoreError::Backend("event subscription closed".into())),
                Err(e) => Err(StoreError::Backend(e.to_string())),
            },
        };
        match got {
            Ok(p) => Ok(Received::Message(p)),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    async fn subscribe(&self) -> Result<Conn, StoreError> {
        match &self.channel {
            Channel::Redis(r) => Ok(Conn::Redis(Box::new(timed(r.subscribe()).await?))),
            Channel::Postgres(pool) => {
                let mut l = timed(sqlx::postgres::PgListener::connect_with(pool)).await?;
                timed(l.listen(PG_CHANNEL)).await?;
                // No pool connection is kept waiting for a reconnect that `try_recv` reports.
                l.ignore_pool_close_event(true);
                Ok(Conn::Postgres(Box::new(l)))
            }
        }
    }
}
