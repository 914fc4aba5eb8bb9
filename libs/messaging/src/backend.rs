use std::time::Duration;

use async_trait::async_trait;

use crate::{BusError, Envelope};

/// A messaging pattern (`docs/architecture.md`, "The event bus"): how a channel is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Every subscribing group gets each message.
    PubSub,
    /// Exactly one consumer of the target gets each message.
    PointToPoint,
    /// A typed reply, or a timeout.
    RequestResponse,
    /// Ordered per key, consumer groups, batches, replay.
    Streaming,
}

impl Pattern {
    /// Every pattern, for backends that serve them all.
    pub const ALL: &'static [Pattern] = &[Self::PubSub, Self::PointToPoint, Self::RequestResponse, Self::Streaming];

    /// The name used in configuration and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PubSub => "pub_sub",
            Self::PointToPoint => "point_to_point",
            Self::RequestResponse => "request_response",
            Self::Streaming => "streaming",
        }
    }
}

/// What a backend can do; checked against the channel configuration at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The patterns it can serve.
    pub patterns: &'static [Pattern],
    /// Messages with one partition key reach a group in the order they were published.
    pub ordering_per_key: bool,
    /// Messages survive a restart of the consuming process.
    pub durable: bool,
    /// A new group can start from the earliest retained message.
    pub replay: bool,
    /// [`Backend::backlog`] counts a group's backlog; `false`: it always answers `Ok(None)`,
    /// and no consumer-lag or dead-letter-depth gauge can show anything.
    pub backlog: bool,
}

impl Capabilities {
    /// Whether the backend serves `pattern`.
    pub fn supports(&self, pattern: Pattern) -> bool {
        self.patterns.contains(&pattern)
    }
}

/// Where a new consumer group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// From the oldest retained message (a durable service group must not miss anything
    /// published before it first joined).
    #[default]
    Earliest,
    /// Only messages published after the group joins.
    Latest,
    /// From the first retained message published at or after this time: replaying a stream
    /// from a point (`{ time: 2026-11-24T10:00:00Z }` in configuration). Only backends with
    /// `replay` serve it; the others refuse it with [`crate::BusError::Unsupported`].
    Time(chrono::DateTime<chrono::Utc>),
}

/// How to attach a consumer to a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// The consumer group. `None` makes a private, non-durable subscription of this process
    /// (used for reply channels), which needs no group coordination.
    pub group: Option<String>,
    /// Where a group with no committed position starts.
    pub start: StartFrom,
}

/// One transport. Backends only move envelopes; retries, dead letters, request/reply
/// correlation and batching are the [`crate::Bus`]'s job.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The backend's name in configuration, logs and metrics.
    fn name(&self) -> &'static str;
    /// What it supports.
    fn capabilities(&self) -> Capabilities;
    /// Creates the physical channel if it does not exist yet.
    async fn declare(&self, channel: &str, partitions: u32) -> Result<(), BusError>;
    /// Publishes one envelope; returns once the backend has accepted it durably (as durable
    /// as the backend is).
    async fn publish(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError>;
    /// Makes sure the durable consumer group `group` of `channel` exists, so that messages
    /// published from now on are kept for it even before anyone consumes. A no-op for
    /// backends that retain messages on the channel itself (Kafka, JetStream, Redis streams,
    /// memory); backends that route to per-group queues (RabbitMQ, SNS/SQS) create the
    /// group's queue here.
    async fn ensure_group(&self, channel: &str, group: &str) -> Result<(), BusError> {
        let _ = (channel, group);
        Ok(())
    }
    /// Deletes a channel and what it holds. The bus calls it for its private reply channel
    /// when it closes, so that short-lived processes leave nothing behind; a no-op where a
    /// channel costs nothing when unused.
    async fn remove(&self, channel: &str) -> Result<(), BusError> {
        let _ = channel;
        Ok(())
    }
    /// Attaches a consumer.
    async fn subscribe(&self, channel: &str, options: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError>;
    /// Checks that the backend is reachable.
    async fn health(&self) -> Result<(), BusError>;
    /// Messages on the physical `channel` that consumer group `group` has not acknowledged
    /// yet (delivered but unacknowledged ones included): the consumer lag operators watch,
    /// read from the backend's own bookkeeping, so no consumer is needed. `Ok(None)` when
    /// the backend cannot tell: always without [`Capabilities::backlog`], now and then where
    /// the backend's own count is unavailable (Redis, see its module).
    ///
    /// It never creates anything. A channel that does not exist holds nothing: `Some(0)`. A
    /// group that does not exist yet counts what it would get if it joined now from the
    /// earliest message: everything the channel retains on backends that keep messages on
    /// the channel itself (Kafka, JetStream, Redis streams, memory), nothing on those that
    /// keep them in per-group queues (RabbitMQ, SQS), which hold nothing for it.
    async fn backlog(&self, channel: &str, group: &str) -> Result<Option<u64>, BusError>;
}

/// A message handed to a consumer, to be acknowledged once processed.
#[derive(Debug)]
pub struct Delivery {
    /// The message.
    pub envelope: Envelope,
    /// Backend-specific position, used to acknowledge.
    #[allow(dead_code)] // read only by the backends compiled in
    pub(crate) receipt: Receipt,
}

#[derive(Debug, Clone)]
pub(crate) enum Receipt {
    #[cfg(feature = "memory")]
    Memory { seq: u64 },
    #[cfg(feature = "kafka")]
    Kafka { partition: i32, offset: i64 },
    /// A number the backend assigned (a RabbitMQ delivery tag, a JetStream sequence): the
    /// consumer keeps whatever else it needs to acknowledge, keyed by it.
    #[allow(dead_code)]
    Tag(u64),
    /// A string the backend assigned (a Redis stream entry id, an SQS receipt handle).
    #[allow(dead_code)]
    Handle(std::sync::Arc<str>),
    /// Keeps the enum inhabited when no backend feature is on.
    #[allow(dead_code)]
    None,
}

/// A pull consumer of one channel in one group.
#[async_trait]
pub trait Consumer: Send + 'static {
    /// Waits for at least one message, then gathers up to `max` that arrive within
    /// `max_wait`. Messages of one key come in publication order.
    ///
    /// Cancel-safe: the future may be dropped at any await point (the bus `select!`s it
    /// against handler completions, acknowledges, then calls `receive` again) without losing
    /// a message. What it has already taken from the broker stays with the consumer and is
    /// handed out, in order, by the next `receive` (or given back to the group by `close`);
    /// nothing is skipped, acknowledged or committed past. The one exception is left to the
    /// broker: RabbitMQ, dropped while reopening a broken channel, closes the half-open
    /// channel, and the server requeues what it had sent there.
    async fn receive(&mut self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, BusError>;
    /// Marks a delivery processed: the group will not get it again.
    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError>;
    /// Leaves the group. Unacknowledged deliveries go to another consumer of the group.
    async fn close(self: Box<Self>);
}

/// Refuses [`StartFrom::Time`] on a backend that keeps nothing published before a group
/// existed, so there is nothing to seek in.
#[cfg(any(feature = "rabbitmq", feature = "sns"))]
pub(crate) fn refuse_time_start(backend: &'static str, channel: &str, start: StartFrom) -> Result<(), BusError> {
    match start {
        StartFrom::Time(_) => Err(BusError::Unsupported {
            backend,
            pattern: "starting from a point in time",
            channel: channel.to_owned(),
        }),
        StartFrom::Earliest | StartFrom::Latest => Ok(()),
    }
}
