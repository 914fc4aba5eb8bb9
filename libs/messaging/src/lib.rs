//! The unified event bus of the petstore.
//!
//! One API for four messaging patterns, whatever backend carries a channel:
//!
//! | pattern | publish side | consume side |
//! |---|---|---|
//! | pub/sub | [`Bus::publish`] | [`Bus::subscribe`]: every group gets every message |
//! | point-to-point | [`Bus::send`] | [`Bus::subscribe`] with the target's group: one consumer gets it |
//! | request/response | [`Bus::request`] | [`Bus::serve`] |
//! | streaming | [`Bus::publish`] with a key | [`Bus::process_stream`]: ordered batches per key |
//!
//! Backends implement the small [`Backend`] and [`Consumer`] traits (publish raw envelopes,
//! pull deliveries, acknowledge). Everything above that — retries with backoff and jitter,
//! dead-lettering, request/reply correlation, batching, metrics — is written once in [`Bus`],
//! so a backend is one module behind one cargo feature. Dead letters are read back with
//! [`Bus::subscribe_dead_letters`] and [`DeadLetter`], and published again with
//! [`Bus::replay`]. Delivery is at-least-once everywhere; handlers make it effectively-once
//! with an inbox.

mod backend;
mod bus;
mod config;
mod dead_letter;
mod envelope;
mod error;
mod handler;
pub mod middleware;
#[cfg(any(feature = "rabbitmq", feature = "redis", feature = "sns"))]
mod redact;
#[cfg(any(feature = "memory", feature = "rabbitmq", feature = "redis", feature = "sns"))]
mod sync;
#[cfg(all(test, any(feature = "rabbitmq", feature = "redis")))]
mod test_support;
pub mod trace;

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sns")]
pub mod sns;

pub use backend::{Backend, Capabilities, Consumer, Delivery, Pattern, StartFrom, SubscribeOptions};
pub use bus::{Backends, Bus, Subscription};
pub use config::{BackendKind, BackendSelection, ChannelConfig, MessagingConfig, RetryPolicy};
pub use dead_letter::DeadLetter;
pub use envelope::{Envelope, MessageContext};
pub use error::{BusError, HandlerError};
pub use handler::{BatchProcessor, Handler, Responder, StreamOptions};
pub use middleware::{Delivered, Middleware, Next};

/// Extension attribute carrying the error of a dead-lettered message.
pub const DLQ_ERROR: &str = "dlqerror";
/// Extension attribute carrying how many attempts were made before dead-lettering.
pub const DLQ_ATTEMPTS: &str = "dlqattempts";
/// The consumer group that keeps a channel's dead letters (`<channel>.dlq`) until an operator
/// reads or replays them; created before the first dead letter is published, so that backends
/// without retention (RabbitMQ, SQS) do not drop it.
pub const DLQ_GROUP: &str = "dead-letters";
/// Extension attribute with the RFC 3339 time after which nobody waits for a request's reply.
pub const REQUEST_DEADLINE: &str = "deadline";
/// Extension attribute naming the channel and group a dead letter came from.
pub const DLQ_ORIGIN: &str = "dlqorigin";
/// Extension attribute with the RFC 3339 time the message was dead-lettered: how long a dead
/// letter has waited, and which dead-lettering of a replayed message is the latest.
pub const DLQ_TIME: &str = "dlqtime";
/// Extension attribute with the RFC 3339 time a dead letter's message was replayed. Consumers
/// see the original id (their inbox drops what they handled meanwhile); transports that
/// deduplicate publishes by id see a new publication ([`Envelope::publication_id`]).
pub const REPLAYED_AT: &str = "replayedat";
