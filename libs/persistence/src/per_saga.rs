//! Participants that keep one record per saga (a payment, a delivery): the in-memory state,
//! the locked load inside a command's transaction, and the lookups by saga and by order,
//! written once for every such table.

use std::{collections::HashMap, marker::PhantomData};

use contracts::SagaRef;
use messaging::{BusError, Envelope};
use sqlx::{PgConnection, postgres::PgRow};
use uuid::Uuid;

use crate::{Decision, Records, Storage, StoreError};

/// A record kept one per saga, in a table with `saga_id` and `order_id` columns.
pub trait SagaRecord: Clone + Send + Sync + 'static {
    /// `SELECT <columns> FROM <table>`: the query [`SagaRecord::decode`] reads rows of.
    const SELECT: &'static str;
    /// The saga the record belongs to, and its order.
    fn saga(&self) -> SagaRef;
    /// Reads a row of [`SagaRecord::SELECT`].
    fn decode(row: &PgRow) -> Result<Self, StoreError>;
    /// Inserts or updates the record inside the caller's transaction.
    fn save(conn: &mut PgConnection, record: &Self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Records by saga, for the in-memory store.
#[derive(Debug)]
pub struct PerSagaState<R> {
    by_saga: HashMap<Uuid, R>,
}

impl<R> Default for PerSagaState<R> {
    fn default() -> Self {
        Self { by_saga: HashMap::new() }
    }
}

/// [`Records`] of a [`SagaRecord`] table, keyed by saga.
struct PerSaga<R>(PhantomData<fn() -> R>);

impl<R: SagaRecord> Records for PerSaga<R> {
    type Key = Uuid;
    type Record = R;
    type State = PerSagaState<R>;

    fn get(state: &PerSagaState<R>, saga_id: &Uuid) -> Option<R> {
        state.by_saga.get(saga_id).cloned()
    }

    fn put(state: &mut PerSagaState<R>, record: R) {
        state.by_saga.insert(record.saga().saga_id, record);
    }

    async fn load(conn: &mut PgConnection, saga_id: &Uuid) -> Result<Option<R>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{} WHERE saga_id = $1 FOR UPDATE", R::SELECT)))
            .bind(saga_id)
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(R::decode).transpose()
    }

    async fn save(conn: &mut PgConnection, record: &R) -> Result<(), StoreError> {
        R::save(conn, record).await
    }
}

/// Where a participant keeps its one record per saga.
pub struct PerSagaStore<R>(Storage<PerSagaState<R>>);

impl<R> Clone for PerSagaStore<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R: SagaRecord> PerSagaStore<R> {
    /// Wraps the configured storage.
    pub fn new(storage: Storage<PerSagaState<R>>) -> Self {
        Self(storage)
    }

    /// Handles `message` once for `consumer`: `decide` gets the saga's record, if any, and
    /// returns the record to save (if it changed) and the reply; both are kept atomically
    /// with the inbox entry (see [`Storage::decide_once`]; `decide` may be called again, so
    /// it must not have effects).
    pub async fn decide_once(
        &self,
        consumer: &'static str,
        message: &Envelope,
        saga_id: Uuid,
        decide: impl Fn(Option<R>) -> Result<Decision<R>, BusError> + Send + Sync + 'static,
    ) -> Result<(), StoreError> {
        self.0.decide_once::<PerSaga<R>>(consumer, message, &saga_id, decide).await.map(drop)
    }

    /// The record of a saga, if it has one.
    pub async fn for_saga(&self, saga_id: Uuid) -> Result<Option<R>, StoreError> {
        self.find("saga_id", saga_id, |r| r.saga().saga_id == saga_id).await
    }

    /// The record of an order's saga, if it has one.
    pub async fn for_order(&self, order_id: Uuid) -> Result<Option<R>, StoreError> {
        self.find("order_id", order_id, |r| r.saga().order_id == order_id).await
    }

    /// The record whose `column` is `id` (`matches` says the same in memory).
    async fn find(&self, column: &str, id: Uuid, matches: impl Fn(&R) -> bool) -> Result<Option<R>, StoreError> {
        match &self.0 {
            Storage::Memory(memory) => Ok(memory.read(|s| s.by_saga.values().find(|r| matches(r)).cloned())),
            Storage::Postgres { pool, .. } => {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!("{} WHERE {column} = $1", R::SELECT)))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
                row.as_ref().map(R::decode).transpose()
            }
        }
    }
}
