use std::sync::Arc;

use async_trait::async_trait;
use kit::{Readiness, ServiceContext, StorageKind};
use messaging::Bus;
use sqlx::{PgPool, migrate::Migrator};

use crate::{OutboxStore, StoreError, memory::MemoryStore, pg, run_relay};

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
    },
}

impl<S> Clone for Storage<S> {
    fn clone(&self) -> Self {
        match self {
            Self::Memory(m) => Self::Memory(m.clone()),
            Self::Postgres { pool, schema } => Self::Postgres { pool: pool.clone(), schema },
        }
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
                let pool = pg::connect(&db.url, schema, db.max_connections).await?;
                pg::migrate(&pool, schema, migrator).await?;
                Ok(Self::Postgres { pool, schema })
            }
        }
    }

    /// Starts the outbox relay on the context's task tracker; it flushes on shutdown.
    pub fn start_relay(&self, bus: &Bus, service: &'static str, ctx: &ServiceContext) {
        let store: Arc<dyn OutboxStore> = match self {
            Self::Memory(m) => m.outbox(),
            Self::Postgres { pool, schema } => Arc::new(pg::PgOutbox::new(pool.clone(), schema)),
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
