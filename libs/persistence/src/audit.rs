//! The audit trail in the service's own schema (`audit_trail`), and the entry written inside
//! a caller's transaction.

use std::sync::Arc;

use async_trait::async_trait;
use kit::audit::{AuditEntry, AuditLog, AuditQuery, MemoryAuditLog};
use sqlx::{PgConnection, PgPool, Row};

use crate::{Storage, StoreError};

/// The `audit_trail` table of one schema.
pub struct PgAuditLog {
    pool: PgPool,
}

impl PgAuditLog {
    /// The trail of the schema `pool` works in.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Writes `entry` with the caller's connection: inside its transaction, the entry commits or
/// rolls back with the change it describes.
pub async fn record(conn: &mut PgConnection, entry: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_trail (id, at, service, actor, roles, action, target, correlation_id, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(entry.id)
    .bind(entry.at)
    .bind(&entry.service)
    .bind(&entry.actor)
    .bind(&entry.roles)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(&entry.correlation_id)
    .bind(i16::try_from(entry.status).unwrap_or(i16::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl AuditLog for PgAuditLog {
    async fn record(&self, entry: &AuditEntry) -> Result<(), String> {
        let mut conn = self.pool.acquire().await.map_err(|e| e.to_string())?;
        record(&mut conn, entry).await.map_err(|e| e.to_string())
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, String> {
        let (before_at, before_id) = query.before.map_or((None, None), |(at, id)| (Some(at), Some(id)));
        let rows = sqlx::query(
            "SELECT id, at, service, actor, roles, action, target, correlation_id, status FROM audit_trail \
             WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action = $2) \
               AND ($3::timestamptz IS NULL OR at >= $3) \
               AND ($4::timestamptz IS NULL OR (at, id) < ($4, $5::uuid)) \
             ORDER BY at DESC, id DESC LIMIT $6",
        )
        .bind(&query.actor)
        .bind(&query.action)
        .bind(query.since)
        .bind(before_at)
        .bind(before_id)
        .bind(i64::try_from(query.limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    service: r.try_get("service")?,
                    actor: r.try_get("actor")?,
                    roles: r.try_get("roles")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    correlation_id: r.try_get("correlation_id")?,
                    status: u16::try_from(r.try_get::<i16, _>("status")?).unwrap_or_default(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| e.to_string())
    }
}

impl<S: Send + 'static> Storage<S> {
    /// The service's audit trail: its schema's `audit_trail`, or a fresh one in memory.
    pub fn audit_log(&self) -> Arc<dyn AuditLog> {
        match self {
            Self::Memory(_) => Arc::new(MemoryAuditLog::default()),
            Self::Postgres { pool, .. } => Arc::new(PgAuditLog { pool: pool.clone() }),
        }
    }
}
