//! Administrators' feature flag overrides in the `flags` schema, shared by every instance of
//! every service, and the `/admin/flags` service that uses them.

use std::sync::Arc;

use async_trait::async_trait;
use kit::{
    Service, ServiceContext, StartError, StorageKind,
    audit::{AuditEntry, AuditLog},
    flags::{FlagOverride, FlagStore, MemoryFlagStore, admin},
};
use sqlx::{PgPool, Row};

use crate::{audit::PgAuditLog, pg};

/// The schema the overrides and their audit trail are kept in.
pub const SCHEMA: &str = "flags";

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../db/flags");

/// The `flag_overrides` table.
pub struct PgFlagStore {
    pool: PgPool,
}

impl PgFlagStore {
    /// Connects to the configured database and migrates the `flags` schema.
    pub async fn open(ctx: &ServiceContext) -> Result<Self, crate::StoreError> {
        let db = &ctx.settings.database;
        let timeout = std::time::Duration::from_millis(db.statement_timeout_ms);
        // Overrides change rarely and are read by one query: two connections are plenty.
        let pool = pg::connect(&db.url, SCHEMA, 2, timeout).await?;
        pg::migrate(&pool, SCHEMA, &MIGRATIONS).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl FlagStore for PgFlagStore {
    async fn overrides(&self) -> Result<Vec<FlagOverride>, String> {
        let rows = sqlx::query("SELECT flag, definition, changed_by, changed_at FROM flag_overrides ORDER BY flag")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        rows.iter()
            .map(|r| {
                Ok(FlagOverride {
                    flag: r.try_get("flag")?,
                    definition: r.try_get("definition")?,
                    changed_by: r.try_get("changed_by")?,
                    changed_at: r.try_get("changed_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| e.to_string())
    }

    async fn put(&self, value: &FlagOverride, audit: Option<&AuditEntry>) -> Result<(), String> {
        let mut tx = self.pool.begin().await.map_err(|e| e.to_string())?;
        sqlx::query(
            "INSERT INTO flag_overrides (flag, definition, changed_by, changed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (flag) DO UPDATE SET definition = $2, changed_by = $3, changed_at = $4",
        )
        .bind(&value.flag)
        .bind(&value.definition)
        .bind(&value.changed_by)
        .bind(value.changed_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
        if let Some(entry) = audit {
            crate::audit::record(&mut tx, entry).await.map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())
    }

    async fn remove(&self, flag: &str, audit: Option<&AuditEntry>) -> Result<bool, String> {
        let mut tx = self.pool.begin().await.map_err(|e| e.to_string())?;
        let removed = sqlx::query("DELETE FROM flag_overrides WHERE flag = $1")
            .bind(flag)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?
            .rows_affected()
            > 0;
        if removed && let Some(entry) = audit {
            crate::audit::record(&mut tx, entry).await.map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(removed)
    }

    fn audit_log(&self) -> Arc<dyn AuditLog> {
        Arc::new(PgAuditLog::new(self.pool.clone()))
    }
}

/// Opens the configured flag store (the `flags` schema, or memory) and starts the
/// `/admin/flags` service on it: once per process, beside the services it runs.
pub async fn start(ctx: &ServiceContext) -> Result<Service, StartError> {
    let store: Arc<dyn FlagStore> = match ctx.settings.storage {
        StorageKind::Memory => Arc::new(MemoryFlagStore::default()),
        StorageKind::Postgres => {
            Arc::new(PgFlagStore::open(ctx).await.map_err(StartError::at(admin::SERVICE, "opening the flag store"))?)
        }
    };
    admin::start(ctx, store).await
}
