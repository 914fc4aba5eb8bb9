//! In-memory counterparts for the all-in-one mode. A service's memory store keeps these
//! inside the one lock that guards its state, so a state change, its outbox messages and its
//! inbox entry are applied together or not at all, as in a database transaction.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use messaging::Envelope;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{DomainEvent, OutboxSink, OutboxStore, Outgoing, Recorded, StoreError};

/// An in-memory outbox drained by [`crate::run_relay`].
#[derive(Default)]
pub struct MemoryOutbox {
    queue: Mutex<VecDeque<(String, Envelope)>>,
    notify: Notify,
}

impl MemoryOutbox {
    /// Queues a message for the relay.
    pub fn enqueue(&self, channel: &str, envelope: Envelope) {
        self.lock().push_back((channel.to_owned(), envelope));
        self.notify.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Envelope)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl OutboxStore for MemoryOutbox {
    async fn relay(&self, max: usize, sink: &dyn OutboxSink) -> Result<usize, StoreError> {
        let mut delivered = 0;
        while delivered < max {
            let Some((channel, envelope)) = self.lock().front().cloned() else { break };
            sink.deliver(&channel, &envelope).await.map_err(|e| StoreError::Codec(e.to_string()))?;
            self.lock().pop_front();
            delivered += 1;
        }
        Ok(delivered)
    }

    async fn wait_for_messages(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }

    async fn backlog(&self) -> Result<i64, StoreError> {
        Ok(i64::try_from(self.lock().len()).unwrap_or(i64::MAX))
    }
}

/// Ids of the messages each consumer has processed. Grows for the life of the process.
#[derive(Debug, Default)]
pub struct MemoryInbox {
    seen: HashSet<(String, Uuid)>,
}

impl MemoryInbox {
    /// Records the message; false when `consumer` had already processed it.
    pub fn record(&mut self, consumer: &str, message: &Envelope) -> bool {
        self.seen.insert((consumer.to_owned(), message.id))
    }
}

/// An in-memory event store for one aggregate type.
#[derive(Debug)]
pub struct MemoryEventLog<E> {
    streams: HashMap<Uuid, Vec<Recorded<E>>>,
    order: Vec<(Uuid, usize)>,
}

impl<E> Default for MemoryEventLog<E> {
    fn default() -> Self {
        Self { streams: HashMap::new(), order: Vec::new() }
    }
}

impl<E: DomainEvent> MemoryEventLog<E> {
    /// Appends after `expected_version`, recorded at `at`; conflicts like the PostgreSQL store.
    pub fn append(
        &mut self,
        aggregate_id: Uuid,
        expected_version: i64,
        events: &[E],
        at: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let stream = self.streams.entry(aggregate_id).or_default();
        if i64::try_from(stream.len()).unwrap_or(i64::MAX) != expected_version {
            return Err(StoreError::Conflict { aggregate: aggregate_id, expected: expected_version });
        }
        for event in events {
            let version = i64::try_from(stream.len()).unwrap_or(i64::MAX) + 1;
            self.order.push((aggregate_id, stream.len()));
            stream.push(Recorded { aggregate_id, version, recorded_at: at, event: event.clone() });
        }
        Ok(expected_version + i64::try_from(events.len()).unwrap_or(i64::MAX))
    }

    /// The aggregate's history, oldest first.
    pub fn load(&self, aggregate_id: Uuid) -> Vec<Recorded<E>> {
        self.streams.get(&aggregate_id).cloned().unwrap_or_default()
    }

    /// Every event in append order.
    pub fn load_all(&self) -> Vec<Recorded<E>> {
        self.order.iter().filter_map(|(id, i)| self.streams.get(id).and_then(|s| s.get(*i)).cloned()).collect()
    }
}

/// A service's whole state in memory, with its inbox and outbox, behind one lock: the
/// in-memory twin of a PostgreSQL schema and its transactions.
pub struct MemoryStore<S> {
    state: Mutex<(S, MemoryInbox)>,
    outbox: Arc<MemoryOutbox>,
}

impl<S: Default> Default for MemoryStore<S> {
    fn default() -> Self {
        Self { state: Mutex::new((S::default(), MemoryInbox::default())), outbox: Arc::default() }
    }
}

impl<S> MemoryStore<S> {
    /// A store starting from `state`.
    pub fn new(state: S) -> Self {
        Self { state: Mutex::new((state, MemoryInbox::default())), outbox: Arc::default() }
    }

    /// The outbox, for the relay.
    pub fn outbox(&self) -> Arc<MemoryOutbox> {
        self.outbox.clone()
    }

    fn lock(&self) -> MutexGuard<'_, (S, MemoryInbox)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles `message` once for `consumer` (see [`crate::pg::handle_once`]). `work` must
    /// not leave `state` half-changed when it returns an error.
    pub fn handle_once<T, E>(
        &self,
        consumer: &str,
        message: &Envelope,
        work: impl FnOnce(&mut S) -> Result<(T, Vec<Outgoing>), E>,
    ) -> Result<Option<T>, E> {
        let mut guard = self.lock();
        let (state, inbox) = &mut *guard;
        if inbox.seen.contains(&(consumer.to_owned(), message.id)) {
            return Ok(None);
        }
        let (value, outgoing) = work(state)?;
        inbox.record(consumer, message);
        self.enqueue(outgoing);
        Ok(Some(value))
    }

    /// Changes state and queues messages together (a request handler's transaction).
    pub fn write<T, E>(&self, work: impl FnOnce(&mut S) -> Result<(T, Vec<Outgoing>), E>) -> Result<T, E> {
        let mut guard = self.lock();
        let (value, outgoing) = work(&mut guard.0)?;
        self.enqueue(outgoing);
        Ok(value)
    }

    /// Reads state.
    pub fn read<T>(&self, f: impl FnOnce(&S) -> T) -> T {
        f(&self.lock().0)
    }

    fn enqueue(&self, outgoing: Vec<Outgoing>) {
        for o in outgoing {
            self.outbox.enqueue(&o.channel, o.envelope);
        }
    }
}
