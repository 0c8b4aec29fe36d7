//! Live session events (SPEC §5, §6.3): who is listening in this process, and how what happens
//! to a session reaches them on every instance.
//!
//! - [`Events::subscribe`] registers a listener (a `/session/events` stream or a WebSocket)
//!   under up to three routing ids, within `max_event_streams` for the process and 8 streams
//!   per session. The returned [`Subscription`] unregisters itself when dropped.
//! - [`Events::publish`] delivers at once to this process's listeners and sends the event to
//!   the store's channel (`store::Feed`) for the other instances; [`Events::run_feed`] is the
//!   one subscription per instance that delivers theirs here.
//! - [`Signal`]s reach every listener at once: close (SIGTERM) and re-check (the channel was
//!   down, messages may have been missed).
//!
//! Nothing here knows what a session is: the session code makes the routing ids and reads
//! the events (`session::live`). A lock is held only to look up or change the registry, never
//! across an await; delivery is `try_send` into a small queue per listener.

pub mod message;

pub use message::{Event, Match, Reason, RouteId};

use crate::store::{Received, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Streams and WebSockets one session may hold open (SPEC §5; `bff.js` opens one stream per
/// browser).
pub const STREAMS_PER_SESSION: usize = 8;
/// Events queued for one listener; a listener that falls this far behind is closed (its
/// client reconnects and starts again from the `session` event).
const QUEUE: usize = 8;

/// What kind of listener a subscription is: they share `max_event_streams`, and are counted and
/// closed apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stream,
    WebSocket,
}

/// Broadcast to every listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signal {
    /// Incremented when events may have been missed: re-check the session.
    pub recheck: u64,
    /// Streams end now (SIGTERM: clients reconnect elsewhere).
    pub close_streams: bool,
    /// WebSockets close with 1001 (at the end of the drain).
    pub close_sockets: bool,
}

struct Slot {
    tx: mpsc::Sender<Arc<Event>>,
    kind: Kind,
    /// Its queue overflowed: the listener must end.
    lagged: AtomicBool,
}

struct Inner {
    registry: Mutex<HashMap<RouteId, Vec<Arc<Slot>>>>,
    open: AtomicUsize,
    /// Listeners without a session (WebSockets on `auth = "none"`/`"optional"` routes): at
    /// most half of `max`, so that they cannot starve the sessions' streams.
    anonymous: AtomicUsize,
    max: usize,
    store: Option<Store>,
    /// This process, in the messages it publishes.
    origin: u64,
    signal: watch::Sender<Signal>,
}

/// The process's event bus. Cheap to clone.
#[derive(Clone)]
pub struct Events(Arc<Inner>);

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("open", &self.0.open.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// Why [`Events::subscribe`] refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    Process,
    Session,
    Anonymous,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn gauge(kind: Kind) -> metrics::Gauge {
    match kind {
        Kind::Stream => metrics::gauge!("bff_event_streams"),
        Kind::WebSocket => metrics::gauge!("bff_websockets"),
    }
}

impl Events {
    /// `store`: `[session] url`, whose channel carries events between instances (when it has
    /// one: `Store::has_feed`).
    pub fn new(max: usize, store: Option<Store>) -> Self {
        let origin = u64::from_le_bytes(crate::secret::random_bytes());
        Self(Arc::new(Inner {
            registry: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            anonymous: AtomicUsize::new(0),
            max,
            store,
            origin,
            signal: watch::channel(Signal::default()).0,
        }))
    }

    /// Listeners open in this process.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Relaxed)
    }

    /// Register a listener under `ids` (the first is its session's: the per-session cap counts
    /// there; none for a listener without a session). Refused at `max_event_streams`, at
    /// [`STREAMS_PER_SESSION`] listeners of the session, or, without a session, at half of
    /// `max_event_streams` such listeners.
    pub fn subscribe(&self, kind: Kind, ids: &[RouteId]) -> Result<Subscription, Full> {
        let inner = &self.0;
        if inner.open.fetch_add(1, Ordering::Relaxed) >= inner.max {
            inner.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Full::Process);
        }
        if ids.is_empty() && inner.anonymous.fetch_add(1, Ordering::Relaxed) >= inner.max.div_ceil(2) {
            inner.anonymous.fetch_sub(1, Ordering::Relaxed);
            inner.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Full::Anonymous);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let slot = Arc::new(Slot { tx, kind, lagged: AtomicBool::new(false) });
        {
            let mut registry = lock(&inner.registry);
            if let Some(first) = ids.first()
                && registry.get(first).is_some_and(|v| v.len() >= STREAMS_PER_SESSION)
            {
                drop(registry);
                inner.open.fetch_sub(1, Ordering::Relaxed);
                return Err(Full::Session);
            }
            for id in ids {
                registry.entry(*id).or_default().push(slot.clone());
            }
        }
        gauge(kind).increment(1.0);
        Ok(Subscription { events: self.clone(), ids: ids.to_vec(), slot, rx, signal: inner.signal.subscribe() })
    }

    /// Deliver `event` to this process's listeners, and send it to the other instances through
    /// the store's channel (in the background: the caller never waits for the store).
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        self.deliver(&event);
        if let Some(store) = self.0.store.as_ref().filter(|s| s.has_feed()) {
            let (store, text) = (store.clone(), event.encode(self.0.origin));
            tokio::spawn(async move {
                if let Err(e) = store.publish_event(&text).await {
                    metrics::counter!("bff_events_publish_errors_total").increment(1);
                    tracing::warn!(error = %e, "session event not sent to the other instances");
                }
            });
        }
    }

    /// Deliver to this process's listeners only (an event another instance published, or one
    /// this instance learnt from the revocation list's poll).
    pub fn deliver(&self, event: &Arc<Event>) {
        let registry = lock(&self.0.registry);
        for id in event.routes() {
            for slot in registry.get(id).into_iter().flatten() {
                if slot.tx.try_send(event.clone()).is_err() {
                    slot.lagged.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    fn signal(&self, f: impl FnOnce(&mut Signal)) {
        self.0.signal.send_modify(f);
    }

    /// SIGTERM: every stream ends now.
    pub fn close_streams(&self) {
        self.signal(|s| s.close_streams = true);
    }

    /// The end of the drain: every WebSocket closes with 1001.
    pub fn close_sockets(&self) {
        self.signal(|s| s.close_sockets = true);
    }

    /// Events may have been missed: every listener re-checks its session.
    pub fn recheck(&self) {
        self.signal(|s| s.recheck += 1);
    }

    /// The instance's one subscription to the store's channel, for as long as the process runs:
    /// every message from another instance is delivered here; after every (re)subscription
    /// but the first, listeners re-check what they may have missed. Returns at once for a
    /// store without a channel.
    pub async fn run_feed(self) {
        let Some(mut feed) = self.0.store.as_ref().and_then(Store::feed) else { return };
        // The first subscription has nothing to make up for — unless it follows failures, while
        // which streams may have opened.
        let (mut first, mut delay) = (true, Duration::from_millis(200));
        loop {
            match feed.next().await {
                Ok(Received::Subscribed) => {
                    tracing::info!("subscribed to the session event channel");
                    delay = Duration::from_millis(200);
                    if !std::mem::take(&mut first) {
                        self.recheck();
                    }
                }
                Ok(Received::Message(text)) => match Event::decode(&text) {
                    Some((origin, _)) if origin == self.0.origin => {}
                    Some((_, event)) => self.deliver(&Arc::new(event)),
                    None => tracing::debug!(bytes = text.len(), "malformed session event ignored"),
                },
                Err(e) => {
                    first = false;
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "session event channel unavailable");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// A registered listener: its events and the broadcast signals. Unregisters when dropped.
pub struct Subscription {
    events: Events,
    ids: Vec<RouteId>,
    slot: Arc<Slot>,
    rx: mpsc::Receiver<Arc<Event>>,
    signal: watch::Receiver<Signal>,
}

/// What [`Subscription::next`] returns.
pub enum Next {
    Event(Arc<Event>),
    Signal(Signal),
    /// Too far behind, or the bus is gone: end the listener.
    Lagged,
}

impl Subscription {
    pub fn kind(&self) -> Kind {
        self.slot.kind
    }

    /// The next event or signal. Cancel-safe.
    pub async fn next(&mut self) -> Next {
        if self.slot.lagged.load(Ordering::Relaxed) {
            return Next::Lagged;
        }
        tokio::select! {
            biased;
            changed = self.signal.changed() => match changed {
                Ok(()) => Next::Signal(*self.signal.borrow_and_update()),
                Err(_) => Next::Lagged,
            },
            event = self.rx.recv() => match event {
                Some(e) => Next::Event(e),
                None => Next::Lagged,
            },
        }
    }

    /// The signals as they stand (a listener created after a close must not wait for one).
    pub fn current_signal(&self) -> Signal {
        *self.signal.borrow()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let inner = &self.events.0;
        {
            let mut registry = lock(&inner.registry);
            for id in &self.ids {
                if let Some(v) = registry.get_mut(id) {
                    v.retain(|s| !Arc::ptr_eq(s, &self.slot));
                    if v.is_empty() {
                        registry.remove(id);
                    }
                }
            }
        }
        inner.open.fetch_sub(1, Ordering::Relaxed);
        if self.ids.is_empty() {
            inner.anonymous.fetch_sub(1, Ordering::Relaxed);
        }
        gauge(self.slot.kind).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(id: u8) -> Event {
        Event::Ended { session: [id; 32], reason: Reason::Logout }
    }

    #[tokio::test]
    async fn events_reach_the_listeners_of_their_routing_ids_only() {
        let events = Events::new(10, None);
        let mut a = events.subscribe(Kind::Stream, &[[1; 32], [9; 32]]).unwrap_or_else(|_| panic!("cap"));
        let mut b = events.subscribe(Kind::WebSocket, &[[2; 32]]).unwrap_or_else(|_| panic!("cap"));
        events.publish(ended(1));
        events.publish(Event::Backchannel {
            matches: vec![Match { kind: crate::store::RevocationKind::Sub, id: [9; 32], by: 0, sub: None }],
        });
        assert!(matches!(a.next().await, Next::Event(e) if *e == ended(1)));
        assert!(matches!(a.next().await, Next::Event(e) if matches!(*e, Event::Backchannel { .. })));
        events.publish(ended(2));
        assert!(matches!(b.next().await, Next::Event(e) if *e == ended(2)));
        assert!(a.rx.try_recv().is_err(), "a got b's event");
        assert_eq!(events.open(), 2);
        drop(a);
        assert_eq!(events.open(), 1);
        assert!(lock(&events.0.registry).get(&[1; 32]).is_none(), "a is still registered");
    }

    #[tokio::test]
    async fn the_caps_count_streams_and_sockets_together_per_process_and_per_session() {
        let events = Events::new(12, None);
        let mut held = Vec::new();
        for i in 0..STREAMS_PER_SESSION {
            let kind = if i % 2 == 0 { Kind::Stream } else { Kind::WebSocket };
            held.push(events.subscribe(kind, &[[1; 32]]).unwrap_or_else(|_| panic!("cap")));
        }
        assert_eq!(events.subscribe(Kind::Stream, &[[1; 32]]).err(), Some(Full::Session));
        assert_eq!(events.subscribe(Kind::WebSocket, &[[1; 32]]).err(), Some(Full::Session));
        for _ in 0..4 {
            held.push(events.subscribe(Kind::WebSocket, &[]).unwrap_or_else(|_| panic!("cap")));
        }
        assert_eq!(events.subscribe(Kind::WebSocket, &[]).err(), Some(Full::Process));
        held.pop();
        held.push(events.subscribe(Kind::Stream, &[[2; 32]]).unwrap_or_else(|_| panic!("cap")));
        assert_eq!(events.subscribe(Kind::Stream, &[[3; 32]]).err(), Some(Full::Process));
        assert_eq!(events.open(), 12);
        held.clear();
        // Without a session: at most half of the process's places.
        let events = Events::new(4, None);
        let a = events.subscribe(Kind::WebSocket, &[]).unwrap_or_else(|_| panic!("cap"));
        let b = events.subscribe(Kind::WebSocket, &[]).unwrap_or_else(|_| panic!("cap"));
        assert_eq!(events.subscribe(Kind::WebSocket, &[]).err(), Some(Full::Anonymous));
        let c = events.subscribe(Kind::Stream, &[[1; 32]]).unwrap_or_else(|_| panic!("cap"));
        drop((a, b, c));
        assert_eq!(events.open(), 0);
        assert_eq!(events.0.anonymous.load(Ordering::Relaxed), 0);
        assert!(lock(&events.0.registry).is_empty());
    }

    #[tokio::test]
    async fn a_listener_that_falls_behind_is_told_to_end_and_signals_reach_everyone() {
        let events = Events::new(10, None);
        let mut a = events.subscribe(Kind::Stream, &[[1; 32]]).unwrap_or_else(|_| panic!("cap"));
        for _ in 0..=QUEUE {
            events.publish(ended(1));
        }
        assert!(matches!(a.next().await, Next::Lagged));
        let mut b = events.subscribe(Kind::WebSocket, &[[2; 32]]).unwrap_or_else(|_| panic!("cap"));
        events.close_streams();
        assert!(matches!(b.next().await, Next::Signal(s) if s.close_streams && !s.close_sockets));
        assert!(b.current_signal().close_streams);
    }
}
