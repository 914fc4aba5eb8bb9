//! Where administrators' flag overrides are kept: durably (PostgreSQL, in the persistence
//! crate) so that every instance — and every instance started later — reads the same ones, or
//! in memory in the all-in-one mode.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::audit::{AuditEntry, AuditLog, MemoryAuditLog};

/// An administrator's definition of one flag, in force instead of the file's.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagOverride {
    /// The flag's key.
    pub flag: String,
    /// Its flagd definition (`state`, `variants`, `defaultVariant`, `targeting`, …).
    pub definition: Value,
    /// Who set it (the token subject).
    pub changed_by: String,
    /// When.
    pub changed_at: DateTime<Utc>,
}

/// The overrides, shared by every instance that reads the same store.
#[async_trait]
pub trait FlagStore: Send + Sync + 'static {
    /// Every override.
    async fn overrides(&self) -> Result<Vec<FlagOverride>, String>;
    /// Sets `value` (replacing an earlier override of its flag), with `audit` written in the
    /// same transaction when given.
    async fn put(&self, value: &FlagOverride, audit: Option<&AuditEntry>) -> Result<(), String>;
    /// Removes the override of `flag`, with `audit` written in the same transaction when given;
    /// `false` when it had none.
    async fn remove(&self, flag: &str, audit: Option<&AuditEntry>) -> Result<bool, String>;
    /// Where the changes are audited: the trail `GET /admin/audit?service=flags` reads.
    fn audit_log(&self) -> Arc<dyn AuditLog>;
}

/// Overrides in memory: the all-in-one mode, where one process is every instance.
#[derive(Default)]
pub struct MemoryFlagStore {
    overrides: Mutex<BTreeMap<String, FlagOverride>>,
    audit: Arc<MemoryAuditLog>,
}

impl MemoryFlagStore {
    fn overrides_mut(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, FlagOverride>> {
        // Entries are inserted or removed whole: a poisoned map is still consistent.
        self.overrides.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn audit(&self, entry: Option<&AuditEntry>) -> Result<(), String> {
        match entry {
            Some(entry) => self.audit.record(entry).await,
            None => Ok(()),
        }
    }
}

#[async_trait]
impl FlagStore for MemoryFlagStore {
    async fn overrides(&self) -> Result<Vec<FlagOverride>, String> {
        Ok(self.overrides_mut().values().cloned().collect())
    }

    async fn put(&self, value: &FlagOverride, audit: Option<&AuditEntry>) -> Result<(), String> {
        self.overrides_mut().insert(value.flag.clone(), value.clone());
        self.audit(audit).await
    }

    async fn remove(&self, flag: &str, audit: Option<&AuditEntry>) -> Result<bool, String> {
        let removed = self.overrides_mut().remove(flag).is_some();
        if removed {
            self.audit(audit).await?;
        }
        Ok(removed)
    }

    fn audit_log(&self) -> Arc<dyn AuditLog> {
        self.audit.clone()
    }
}
