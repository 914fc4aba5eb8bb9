//! Where orders live: the event log (`order_events`) and its projection (`orders`), written
//! in one transaction with the outbox and the order's `Idempotency-Key` (`idempotency_keys`);
//! or the same in memory.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use contracts::{order::OrderDetails, pricing::PricingArm};
use kit::audit::{AuditEntry, AuditLog};
use messaging::{Envelope, MessageContext};
use persistence::{Outgoing, Recorded, Storage, StoreError, memory::MemoryEventLog, pg, pg::EventTable};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::{
    SERVICE,
    domain::{Order, OrderEvent, OrderStatus},
    idempotency::{KEY_RETENTION, KeyClaim, Receipt, RememberedKey},
};

const EVENTS: EventTable = EventTable::new("order_events");

/// The primary key of `idempotency_keys`: violated when another request took the key first.
const KEYS_PRIMARY_KEY: &str = "idempotency_keys_pkey";

/// The order log, its projection and the remembered idempotency keys, for the in-memory store.
#[derive(Debug, Default)]
pub struct OrderState {
    log: MemoryEventLog<OrderEvent>,
    orders: HashMap<Uuid, Order>,
    keys: HashMap<(String, String), RememberedKey>,
}

/// The order store.
#[derive(Clone)]
pub struct OrderStore {
    storage: Storage<OrderState>,
    source: String,
    key_retention: TimeDelta,
    audit: Arc<dyn AuditLog>,
}

/// What [`OrderStore::place`] did.
// A return value consumed at once; boxing the order would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// It placed the order.
    Placed(Order),
    /// It placed nothing: the request's key was used before (by a concurrent request, say),
    /// for this.
    Remembered(RememberedKey),
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn codec(e: impl std::fmt::Display) -> StoreError {
    StoreError::Codec(e.to_string())
}

impl OrderStore {
    /// Wraps the configured storage; `source` names this service in the messages it emits.
    pub fn new(storage: Storage<OrderState>, source: &str) -> Self {
        let audit = storage.audit_log();
        Self { storage, source: source.to_owned(), key_retention: KEY_RETENTION, audit }
    }

    /// The service's audit trail: the order's audit entry is written with the order.
    pub fn audit_log(&self) -> Arc<dyn AuditLog> {
        self.audit.clone()
    }

    /// The same store remembering idempotency keys for `retention` instead of
    /// [`KEY_RETENTION`] (tests shorten it to see keys expire).
    #[must_use]
    pub fn with_key_retention(mut self, retention: TimeDelta) -> Self {
        self.key_retention = retention;
        self
    }

    /// Records a new order and queues `OrderCreated`, atomically. With a `key`, also records
    /// what the key answered — unless the key is already taken: then nothing is written and
    /// the earlier answer comes back. Two concurrent requests with one key place one order.
    pub async fn place(
        &self,
        placed: OrderEvent,
        ctx: &MessageContext,
        key: Option<&KeyClaim>,
        audit: Option<&AuditEntry>,
    ) -> Result<Placement, StoreError> {
        let at = now();
        let order = Order::placed(&placed, at).ok_or_else(|| codec("place() takes a Placed event"))?;
        let outgoing = vec![order.announce(&placed, &self.source, ctx).map_err(codec)?];
        let remembered = key.map(|claim| {
            let receipt = Receipt::new(&order, ctx.correlation_id.as_deref().unwrap_or_default());
            (claim, RememberedKey { fingerprint: claim.fingerprint.clone(), receipt, created_at: at })
        });
        let fresh_after = at - self.key_retention;
        match &self.storage {
            Storage::Memory(memory) => {
                let placement = memory.write(|state| {
                    if let Some((claim, _)) = &remembered
                        && let Some(earlier) = state.fresh_key(claim, fresh_after)
                    {
                        return Ok::<_, StoreError>((Placement::Remembered(earlier), Vec::new()));
                    }
                    state.log.append(order.details.order_id, 0, std::slice::from_ref(&placed), at)?;
                    state.orders.insert(order.details.order_id, order.clone());
                    if let Some((claim, record)) = remembered {
                        state.keys.insert(key_id(claim), record);
                    }
                    Ok((Placement::Placed(order), outgoing))
                })?;
                // Memory has no transaction to share: the entry follows the write at once.
                if let (Placement::Placed(_), Some(entry)) = (&placement, audit)
                    && let Err(e) = self.audit.record(entry).await
                {
                    tracing::error!(error = %e, "could not write the audit entry of a placed order");
                }
                Ok(placement)
            }
            Storage::Postgres { pool, .. } => {
                let mut tx = pool.begin().await?;
                // The key first: a concurrent request with the same key waits here for this
                // transaction and then fails on the primary key, before writing anything.
                if let Some((claim, record)) = &remembered
                    && !remember_key(&mut tx, claim, record, fresh_after).await?
                {
                    tx.rollback().await?;
                    let earlier = find_key(pool, claim, None)
                        .await?
                        .ok_or_else(|| codec(format!("idempotency key `{}` taken and then gone", claim.key)))?;
                    return Ok(Placement::Remembered(earlier));
                }
                EVENTS.append(&mut tx, order.details.order_id, 0, std::slice::from_ref(&placed), at).await?;
                project(&mut tx, &order).await?;
                pg::enqueue_all(&mut tx, &outgoing).await?;
                if let Some(entry) = audit {
                    persistence::audit::record(&mut tx, entry).await?;
                }
                pg::commit(tx).await?;
                Ok(Placement::Placed(order))
            }
        }
    }

    /// What `claim`'s key answered, if the customer used it within the retention.
    pub async fn remembered_key(&self, claim: &KeyClaim) -> Result<Option<RememberedKey>, StoreError> {
        let fresh_after = now() - self.key_retention;
        match &self.storage {
            Storage::Memory(memory) => Ok(memory.read(|state| state.fresh_key(claim, fresh_after))),
            Storage::Postgres { pool, .. } => find_key(pool, claim, Some(fresh_after)).await,
        }
    }

    /// Forgets the keys older than the retention; returns how many.
    pub async fn purge_expired_keys(&self) -> Result<u64, StoreError> {
        let fresh_after = now() - self.key_retention;
        match &self.storage {
            Storage::Memory(memory) => memory.write(|state| {
                let before = state.keys.len();
                state.keys.retain(|_, record| record.created_at > fresh_after);
                Ok::<_, StoreError>((u64::try_from(before - state.keys.len()).unwrap_or(u64::MAX), Vec::new()))
            }),
            Storage::Postgres { pool, .. } => {
                let purged = sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= $1")
                    .bind(fresh_after)
                    .execute(pool)
                    .await?
                    .rows_affected();
                Ok(purged)
            }
        }
    }

    /// Handles a command about `order_id` once: `decide` says which events follow, they are
    /// appended, projected and announced together.
    pub async fn handle(
        &self,
        message: &Envelope,
        order_id: Uuid,
        decide: impl FnOnce(&Order) -> Vec<OrderEvent>,
    ) -> Result<(), StoreError> {
        let ctx = MessageContext::caused_by(message);
        let source = self.source.clone();
        let evolve = move |history: &[Recorded<OrderEvent>]| -> Result<Option<Evolution>, StoreError> {
            let Some(mut order) = Order::replay(history) else {
                return Err(codec(format!("no order {order_id}")));
            };
            let events = decide(&order);
            let at = now();
            let mut outgoing = Vec::new();
            for e in &events {
                order.apply(e, at);
                outgoing.push(order.announce(e, &source, &ctx).map_err(codec)?);
            }
            Ok(Some((order, events, outgoing)).filter(|(_, e, _)| !e.is_empty()))
        };
        match &self.storage {
            Storage::Memory(memory) => memory
                .handle_once(SERVICE, message, |state| {
                    let history = state.log.load(order_id);
                    let Some((order, events, outgoing)) = evolve(&history)? else { return Ok(((), Vec::new())) };
                    state.log.append(
                        order_id,
                        i64::try_from(history.len()).unwrap_or(i64::MAX),
                        &events,
                        order.updated_at,
                    )?;
                    state.orders.insert(order_id, order);
                    Ok::<_, StoreError>(((), outgoing))
                })
                .map(drop),
            Storage::Postgres { pool, .. } => pg::handle_once(pool, SERVICE, message, async |conn| {
                let history = EVENTS.load::<OrderEvent>(conn, order_id).await?;
                let Some((order, events, outgoing)) = evolve(&history)? else { return Ok(((), Vec::new())) };
                EVENTS
                    .append(conn, order_id, i64::try_from(history.len()).unwrap_or(i64::MAX), &events, order.updated_at)
                    .await?;
                project(conn, &order).await?;
                Ok(((), outgoing))
            })
            .await
            .map(drop),
        }
    }

    /// The order, from the projection.
    pub async fn get(&self, order_id: Uuid) -> Result<Option<Order>, StoreError> {
        match &self.storage {
            Storage::Memory(memory) => Ok(memory.read(|s| s.orders.get(&order_id).cloned())),
            Storage::Postgres { pool, .. } => {
                let row = sqlx::query(
                    "SELECT order_id, saga_id, customer_id, pet_id, amount, currency, shipping_address, payment_method, \
                     special_instructions, pricing_arm, express, status, cancel_reason, created_at, updated_at, version \
                     FROM orders WHERE order_id = $1",
                )
                .bind(order_id)
                .fetch_optional(pool)
                .await?;
                row.as_ref().map(decode).transpose()
            }
        }
    }

    /// The order's history, oldest first.
    pub async fn history(&self, order_id: Uuid) -> Result<Vec<Recorded<OrderEvent>>, StoreError> {
        match &self.storage {
            Storage::Memory(memory) => Ok(memory.read(|s| s.log.load(order_id))),
            Storage::Postgres { pool, .. } => {
                let mut conn = pool.acquire().await?;
                EVENTS.load(&mut conn, order_id).await
            }
        }
    }

    /// Throws the projection away and rebuilds it from the event log; returns how many
    /// orders it holds. Safe to run while the service works: it runs in one transaction
    /// that locks the projection.
    pub async fn rebuild_projection(&self) -> Result<usize, StoreError> {
        match &self.storage {
            Storage::Memory(memory) => memory.write(|state| {
                state.orders = fold_all(&state.log.load_all());
                Ok::<_, StoreError>((state.orders.len(), Vec::new()))
            }),
            Storage::Postgres { pool, .. } => {
                let mut tx = pool.begin().await?;
                sqlx::query("LOCK TABLE orders IN EXCLUSIVE MODE").execute(&mut *tx).await?;
                let orders = fold_all(&EVENTS.load_all::<OrderEvent>(&mut tx).await?);
                sqlx::query("DELETE FROM orders").execute(&mut *tx).await?;
                for order in orders.values() {
                    project(&mut tx, order).await?;
                }
                tx.commit().await?;
                Ok(orders.len())
            }
        }
    }
}

impl OrderState {
    /// The record of `claim`'s key, if it was made after `fresh_after`.
    fn fresh_key(&self, claim: &KeyClaim, fresh_after: DateTime<Utc>) -> Option<RememberedKey> {
        self.keys.get(&key_id(claim)).filter(|record| record.created_at > fresh_after).cloned()
    }
}

fn key_id(claim: &KeyClaim) -> (String, String) {
    (claim.customer_id.clone(), claim.key.clone())
}

/// Records `claim`'s key inside the placing transaction, replacing an expired record of it;
/// false when another request holds it.
async fn remember_key(
    conn: &mut PgConnection,
    claim: &KeyClaim,
    record: &RememberedKey,
    fresh_after: DateTime<Utc>,
) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM idempotency_keys WHERE customer_id = $1 AND key = $2 AND created_at <= $3")
        .bind(&claim.customer_id)
        .bind(&claim.key)
        .bind(fresh_after)
        .execute(&mut *conn)
        .await?;
    let r = &record.receipt;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (customer_id, key, fingerprint, order_id, saga_id, status, correlation_id, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&claim.customer_id)
    .bind(&claim.key)
    .bind(&record.fingerprint)
    .bind(r.order_id)
    .bind(r.saga_id)
    .bind(r.status.as_str())
    .bind(&r.correlation_id)
    .bind(record.created_at)
    .execute(conn)
    .await
    .map_err(StoreError::from);
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if e.constraint() == Some(KEYS_PRIMARY_KEY) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The record of `claim`'s key; with `fresh_after`, only if it was made after it.
async fn find_key(
    pool: &sqlx::PgPool,
    claim: &KeyClaim,
    fresh_after: Option<DateTime<Utc>>,
) -> Result<Option<RememberedKey>, StoreError> {
    let row = sqlx::query(
        "SELECT fingerprint, order_id, saga_id, status, correlation_id, created_at FROM idempotency_keys \
         WHERE customer_id = $1 AND key = $2 AND ($3::timestamptz IS NULL OR created_at > $3)",
    )
    .bind(&claim.customer_id)
    .bind(&claim.key)
    .bind(fresh_after)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.try_get("status")?;
    Ok(Some(RememberedKey {
        fingerprint: row.try_get("fingerprint")?,
        receipt: Receipt {
            order_id: row.try_get("order_id")?,
            saga_id: row.try_get("saga_id")?,
            status: parse_status(status)?,
            correlation_id: row.try_get("correlation_id")?,
        },
        created_at: row.try_get("created_at")?,
    }))
}

fn parse_status(status: String) -> Result<OrderStatus, StoreError> {
    serde_json::from_value(serde_json::Value::String(status)).map_err(codec)
}

/// An order after a command: its new state, the events that got it there and the messages
/// announcing them.
type Evolution = (Order, Vec<OrderEvent>, Vec<Outgoing>);

fn fold_all(events: &[Recorded<OrderEvent>]) -> HashMap<Uuid, Order> {
    let mut orders: HashMap<Uuid, Order> = HashMap::new();
    for r in events {
        match orders.get_mut(&r.aggregate_id) {
            Some(order) => order.apply(&r.event, r.recorded_at),
            None => {
                if let Some(order) = Order::placed(&r.event, r.recorded_at) {
                    orders.insert(r.aggregate_id, order);
                }
            }
        }
    }
    orders
}

async fn project(conn: &mut PgConnection, order: &Order) -> Result<(), StoreError> {
    let o = &order.details;
    let address = serde_json::to_value(&o.shipping_address).map_err(codec)?;
    let method = serde_json::to_value(o.payment_method).map_err(codec)?;
    sqlx::query(
        "INSERT INTO orders (order_id, saga_id, customer_id, pet_id, amount, currency, shipping_address, payment_method, \
         special_instructions, status, cancel_reason, created_at, updated_at, version, pricing_arm, express) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, cancel_reason = EXCLUDED.cancel_reason, \
         updated_at = EXCLUDED.updated_at, version = EXCLUDED.version",
    )
    .bind(o.order_id)
    .bind(order.saga_id)
    .bind(&o.customer_id)
    .bind(&o.pet_id)
    .bind(o.amount)
    .bind(&o.currency)
    .bind(address)
    .bind(method.as_str().unwrap_or_default())
    .bind(&o.special_instructions)
    .bind(order.status.as_str())
    .bind(&order.cancel_reason)
    .bind(order.created_at)
    .bind(order.updated_at)
    .bind(order.version)
    .bind(o.pricing_arm.as_str())
    .bind(o.express)
    .execute(conn)
    .await?;
    Ok(())
}

fn decode(row: &sqlx::postgres::PgRow) -> Result<Order, StoreError> {
    let status: String = row.try_get("status")?;
    let method: String = row.try_get("payment_method")?;
    let address: serde_json::Value = row.try_get("shipping_address")?;
    let arm: String = row.try_get("pricing_arm")?;
    Ok(Order {
        details: OrderDetails {
            order_id: row.try_get("order_id")?,
            customer_id: row.try_get("customer_id")?,
            pet_id: row.try_get("pet_id")?,
            amount: row.try_get("amount")?,
            currency: row.try_get("currency")?,
            shipping_address: serde_json::from_value(address).map_err(codec)?,
            payment_method: serde_json::from_value(serde_json::Value::String(method)).map_err(codec)?,
            special_instructions: row.try_get("special_instructions")?,
            pricing_arm: PricingArm::from_variant(&arm).ok_or_else(|| codec(format!("unknown pricing arm `{arm}`")))?,
            express: row.try_get("express")?,
        },
        saga_id: row.try_get("saga_id")?,
        status: parse_status(status)?,
        cancel_reason: row.try_get("cancel_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}
