//! Where orders live: the event log (`order_events`) and its projection (`orders`), written
//! in one transaction with the outbox; or the same in memory.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use contracts::order::OrderDetails;
use messaging::{Envelope, MessageContext};
use persistence::{Outgoing, Recorded, Storage, StoreError, memory::MemoryEventLog, pg, pg::EventTable};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::{
    SERVICE,
    domain::{Order, OrderEvent, OrderStatus},
};

const EVENTS: EventTable = EventTable::new("order_events");

/// The order log and its projection, for the in-memory store.
#[derive(Debug, Default)]
pub struct OrderState {
    log: MemoryEventLog<OrderEvent>,
    orders: HashMap<Uuid, Order>,
}

/// The order store.
#[derive(Clone)]
pub struct OrderStore {
    storage: Storage<OrderState>,
    source: String,
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
        Self { storage, source: source.to_owned() }
    }

    /// Records a new order and queues `OrderCreated`, atomically.
    pub async fn place(&self, placed: OrderEvent, ctx: &MessageContext) -> Result<Order, StoreError> {
        let at = now();
        let order = Order::placed(&placed, at).ok_or_else(|| codec("place() takes a Placed event"))?;
        let outgoing = vec![order.announce(&placed, &self.source, ctx).map_err(codec)?];
        match &self.storage {
            Storage::Memory(memory) => memory.write(|state| {
                state.log.append(order.details.order_id, 0, std::slice::from_ref(&placed), at)?;
                state.orders.insert(order.details.order_id, order.clone());
                Ok((order, outgoing))
            }),
            Storage::Postgres { pool, .. } => {
                let mut tx = pool.begin().await?;
                EVENTS.append(&mut tx, order.details.order_id, 0, std::slice::from_ref(&placed), at).await?;
                project(&mut tx, &order).await?;
                pg::enqueue_all(&mut tx, &outgoing).await?;
                tx.commit().await?;
                Ok(order)
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
                     special_instructions, status, cancel_reason, created_at, updated_at, version FROM orders WHERE order_id = $1",
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
         special_instructions, status, cancel_reason, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
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
    .execute(conn)
    .await?;
    Ok(())
}

fn decode(row: &sqlx::postgres::PgRow) -> Result<Order, StoreError> {
    let status: String = row.try_get("status")?;
    let method: String = row.try_get("payment_method")?;
    let address: serde_json::Value = row.try_get("shipping_address")?;
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
        },
        saga_id: row.try_get("saga_id")?,
        status: serde_json::from_value::<OrderStatus>(serde_json::Value::String(status)).map_err(codec)?,
        cancel_reason: row.try_get("cancel_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}
