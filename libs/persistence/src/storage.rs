use std::{marker::PhantomData, sync::Arc};

use async_trait::async_trait;
use kit::{Readiness, ServiceContext, StartError, StorageKind};
use messaging::{Bus, BusError, Envelope};
use sqlx::{PgConnection, PgPool, migrate::Migrator};

use crate::{
    OutboxStore, Outgoing, StoreError,
    group_commit::{AnyOutput, Committers, Done, GroupCommit, Transactions, TxJob},
    memory::MemoryStore,
    pg, run_relay,
};

/// How one kind of record is found and kept — in a service's memory state and in its
/// schema — so that [`Storage::decide_once`] can run a decision on it.
pub trait Records: Send + Sync + 'static {
    /// What identifies a record (a saga id, a pet id, …).
    type Key: Clone + Send + Sync + 'static;
    /// The record.
    type Record: Clone + Send + Sync + 'static;
    /// The service's in-memory state.
    type State: Send + 'static;
    /// The record in memory.
    fn get(state: &Self::State, key: &Self::Key) -> Option<Self::Record>;
    /// Stores the record in memory.
    fn put(state: &mut Self::State, record: Self::Record);
    /// Loads the record inside a transaction, locking it until the transaction ends.
    fn load(
        conn: &mut PgConnection,
        key: &Self::Key,
    ) -> impl Future<Output = Result<Option<Self::Record>, StoreError>> + Send;
    /// Saves the record inside a transaction.
    fn save(conn: &mut PgConnection, record: &Self::Record) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A participant's decision about one record: the record to save, if it changed, and the
/// reply to send.
pub type Decision<R> = (Option<R>, Outgoing);

fn codec(e: BusError) -> StoreError {
    StoreError::Codec(e.to_string())
}

/// [`Storage::decide_once`]'s work in a shared transaction: load the record (locked), decide,
/// save — in the span of the handler that asked for it, so that the reply's trace context
/// (taken from the current span) continues the message's trace.
struct DecideJob<R: Records, F> {
    key: R::Key,
    decide: F,
    span: tracing::Span,
    records: PhantomData<fn() -> R>,
}

impl<R, F> TxJob for DecideJob<R, F>
where
    R: Records,
    F: Fn(Option<R::Record>) -> Result<Decision<R::Record>, BusError> + Send + Sync + 'static,
{
    fn run<'a>(
        &'a self,
        conn: &'a mut PgConnection,
    ) -> futures::future::BoxFuture<'a, Result<Done<AnyOutput>, StoreError>> {
        let work = async move {
            let (saved, reply) = (self.decide)(R::load(conn, &self.key).await?).map_err(codec)?;
            if let Some(record) = &saved {
                R::save(conn, record).await?;
            }
            Ok((Box::new(saved) as AnyOutput, vec![reply]))
        };
        Box::pin(tracing::Instrument::instrument(work, self.span.clone()))
    }
}

/// Opens a service's storage and its handle on the bus (with the handler-failure drill of
/// the flags in its middleware), starts its outbox relay and closes the bus on shutdown: what
/// every service does before it subscribes and serves.
pub async fn open_service<S: Send + 'static>(
    ctx: &ServiceContext,
    service: &'static str,
    schema: &'static str,
    migrator: &Migrator,
    initial: impl FnOnce() -> S,
) -> Result<(Storage<S>, Bus), StartError> {
    let storage =
        Storage::open(ctx, schema, migrator, initial).await.map_err(StartError::at(service, "opening storage"))?;
    let bus = Bus::new(&ctx.backends, &ctx.settings.messaging, service, ctx.shutdown.clone())
        .await
        .map_err(StartError::at(service, "joining the bus"))?;
    // Drills of `fault_handler_failure_rate` fail this service's handlers where they run.
    bus.add_middleware(kit::flags::faults::HandlerFaults::new(ctx.flags.clone()));
    storage.start_relay(&bus, service, ctx);
    ctx.close_on_shutdown(&bus);
    Ok((storage, bus))
}

/// Where a service keeps its state, as configured: its own PostgreSQL schema, or memory.
pub enum Storage<S> {
    /// In memory (the all-in-one mode).
    Memory(Arc<MemoryStore<S>>),
    /// The service's PostgreSQL schema.
    Postgres {
        /// Pool whose connections work in the schema.
        pool: PgPool,
        /// The schema.
        schema: &'static str,
        /// The committers that handle the messages of the moment in one transaction (see
        /// [`crate::group_commit`]).
        commits: GroupCommit<Transactions>,
    },
}

impl<S> Clone for Storage<S> {
    fn clone(&self) -> Self {
        match self {
            Self::Memory(m) => Self::Memory(m.clone()),
            Self::Postgres { pool, schema, commits } => {
                Self::Postgres { pool: pool.clone(), schema, commits: commits.clone() }
            }
        }
    }
}

impl<S> Storage<S> {
    /// The service's schema through `pool` (connected and migrated), with its committers
    /// started on the current runtime.
    pub fn postgres(pool: PgPool, schema: &'static str) -> Self {
        let commits = GroupCommit::start(pool.clone(), Transactions, Committers::default());
        Self::Postgres { pool, schema, commits }
    }
}

impl<S: Send + 'static> Storage<S> {
    /// Opens the configured storage: connects and migrates `schema`, or starts from
    /// `initial` in memory.
    pub async fn open(
        ctx: &ServiceContext,
        schema: &'static str,
        migrator: &Migrator,
        initial: impl FnOnce() -> S,
    ) -> Result<Self, StoreError> {
        match ctx.settings.storage {
            StorageKind::Memory => Ok(Self::Memory(Arc::new(MemoryStore::new(initial())))),
            StorageKind::Postgres => {
                let db = &ctx.settings.database;
                let timeout = std::time::Duration::from_millis(db.statement_timeout_ms);
                let pool = pg::connect(&db.url, schema, db.max_connections, timeout).await?;
                pg::migrate(&pool, schema, migrator).await?;
                Ok(Self::postgres(pool, schema))
            }
        }
    }

    /// Handles `message` once for `consumer`: loads the record at `key`, lets `decide` change
    /// it and produce the reply, and saves both with the inbox entry, atomically (with
    /// PostgreSQL, in the transaction of the messages handled at the same moment; `decide` may
    /// then be called again if that batch fails, so it must not have effects). Returns the
    /// record `decide` saved; `None` when nothing changed or the message was handled before.
    pub async fn decide_once<R: Records<State = S>>(
        &self,
        consumer: &'static str,
        message: &Envelope,
        key: &R::Key,
        decide: impl Fn(Option<R::Record>) -> Result<Decision<R::Record>, BusError> + Send + Sync + 'static,
    ) -> Result<Option<R::Record>, StoreError> {
        match self {
            Self::Memory(memory) => {
                let handled = memory.handle_once(consumer, message, |state| {
                    let (saved, reply) = decide(R::get(state, key)).map_err(codec)?;
                    if let Some(record) = &saved {
                        R::put(state, record.clone());
                    }
                    Ok::<_, StoreError>((saved, vec![reply]))
                })?;
                Ok(handled.flatten())
            }
            Self::Postgres { commits, .. } => {
                let span = tracing::Span::current();
                let job = Box::new(DecideJob::<R, _> { key: key.clone(), decide, span, records: PhantomData });
                let Some(saved) = commits.handle_once(consumer, message.clone(), job).await? else { return Ok(None) };
                let saved = saved.downcast::<Option<R::Record>>().map_err(|_| {
                    StoreError::Invariant("a decision's outcome is not the record it decided on".into())
                })?;
                Ok(*saved)
            }
        }
    }

    /// Starts the outbox relay on the context's task tracker; it flushes on shutdown.
    pub fn start_relay(&self, bus: &Bus, service: &'static str, ctx: &ServiceContext) {
        let store: Arc<dyn OutboxStore> = match self {
            Self::Memory(m) => m.outbox(),
            Self::Postgres { pool, .. } => Arc::new(pg::PgOutbox::new(pool.clone())),
        };
        ctx.tasks.spawn(run_relay(store, Arc::new(bus.clone()), service, ctx.shutdown.clone()));
    }

    /// The readiness check of this storage.
    pub fn readiness(&self) -> Arc<dyn Readiness> {
        match self {
            Self::Memory(_) => Arc::new(MemoryReady),
            Self::Postgres { pool, .. } => Arc::new(PgReady(pool.clone())),
        }
    }
}

struct MemoryReady;

#[async_trait]
impl Readiness for MemoryReady {
    fn name(&self) -> &'static str {
        "storage"
    }
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

struct PgReady(PgPool);

#[async_trait]
impl Readiness for PgReady {
    fn name(&self) -> &'static str {
        "postgres"
    }
    async fn check(&self) -> Result<(), String> {
        sqlx::query("SELECT 1").execute(&self.0).await.map(drop).map_err(|e| e.to_string())
    }
}
