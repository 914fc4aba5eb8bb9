//! Storage building blocks shared by the services: the transactional outbox and its relay,
//! the inbox that makes handlers effectively-once, and an append-only event store with
//! optimistic concurrency — each on PostgreSQL ([`pg`]) and in memory ([`memory`], for the
//! all-in-one mode).

pub mod audit;
pub mod flags;
pub mod group_commit;
pub mod memory;
mod per_saga;
pub mod pg;
mod relay;
mod storage;

pub use per_saga::{PerSagaState, PerSagaStore, SagaRecord};
pub use relay::{OutboxSink, OutboxStore, run_relay};
pub use storage::{Decision, Records, Storage, open_service};

use messaging::{BusError, Envelope, MessageContext};

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// Errors of the stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the aggregate first; reload and decide again.
    #[error("concurrent update of {aggregate}: expected version {expected}")]
    Conflict {
        /// The aggregate.
        aggregate: Uuid,
        /// The version the writer expected.
        expected: i64,
    },
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be (de)serialized.
    #[error("codec: {0}")]
    Codec(String),
    /// The store's committers have stopped (the service is shutting down).
    #[error("the store has stopped")]
    Stopped,
    /// A service's batch work broke its contract (a bug, not bad data).
    #[error("broken invariant: {0}")]
    Invariant(String),
}

impl StoreError {
    /// The violated constraint's name, when this is a unique/foreign-key/check violation.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Self::Database(sqlx::Error::Database(db)) => db.constraint(),
            _ => None,
        }
    }
}

/// A message to put in the outbox: where it goes and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The channel.
    pub channel: String,
    /// The message.
    pub envelope: Envelope,
}

impl Outgoing {
    /// A typed message on its default channel.
    pub fn message<M: contracts::Message>(source: &str, message: &M, ctx: &MessageContext) -> Result<Self, BusError> {
        Ok(Self { channel: M::CHANNEL.to_owned(), envelope: Envelope::from_message(source, message, ctx)? })
    }
}

/// An event of an event-sourced aggregate.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The event's name, stored beside its payload for querying.
    fn event_type(&self) -> &'static str;
}

/// An event as stored: its place in the aggregate's history and when it was recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recorded<E> {
    /// The aggregate.
    pub aggregate_id: Uuid,
    /// 1 for the first event of the aggregate, then +1 per event.
    pub version: i64,
    /// When it was appended.
    pub recorded_at: DateTime<Utc>,
    /// The event.
    pub event: E,
}
