//! Where deliveries live: the `delivery` schema, or memory. Each command runs in one
//! transaction with its inbox entry and its reply.

use contracts::{
    Address, SagaRef,
    delivery::{CancelDelivery, ScheduleDelivery},
};
use messaging::{Envelope, MessageContext};
use persistence::{PerSagaState, PerSagaStore, SagaRecord, Storage, StoreError};
use sqlx::{PgConnection, Row, postgres::PgRow};
use uuid::Uuid;

use crate::{
    SERVICE,
    domain::{self, Booking, Delivery, DeliveryStatus},
};

/// Deliveries by saga, for the in-memory store.
pub type DeliveryState = PerSagaState<Delivery>;

/// The delivery store: one delivery per saga.
#[derive(Clone)]
pub struct DeliveryStore(PerSagaStore<Delivery>);

impl SagaRecord for Delivery {
    const SELECT: &'static str = SELECT;

    fn saga(&self) -> SagaRef {
        SagaRef { saga_id: self.saga_id, order_id: self.order_id }
    }

    fn decode(row: &PgRow) -> Result<Self, StoreError> {
        let status: String = row.try_get("status")?;
        // A tombstone has no booking: every booking column is NULL (a CHECK keeps them together).
        let customer_id: Option<String> = row.try_get("customer_id")?;
        let booking = match customer_id {
            None => None,
            Some(customer_id) => Some(Booking {
                customer_id,
                pet_id: row.try_get("pet_id")?,
                shipping_address: Address {
                    street: row.try_get("street")?,
                    city: row.try_get("city")?,
                    postal_code: row.try_get("postal_code")?,
                    country: row.try_get("country")?,
                },
                estimated_delivery: row.try_get("estimated_delivery")?,
                express: row.try_get("express")?,
            }),
        };
        Ok(Delivery {
            delivery_id: row.try_get("delivery_id")?,
            saga_id: row.try_get("saga_id")?,
            order_id: row.try_get("order_id")?,
            booking,
            status: DeliveryStatus::parse(&status)
                .ok_or_else(|| StoreError::Codec(format!("unknown delivery status {status}")))?,
            created_at: row.try_get("created_at")?,
            cancelled_at: row.try_get("cancelled_at")?,
        })
    }

    async fn save(conn: &mut PgConnection, d: &Self) -> Result<(), StoreError> {
        let b = d.booking.as_ref();
        let address = b.map(|b| &b.shipping_address);
        sqlx::query(
            "INSERT INTO deliveries (delivery_id, saga_id, order_id, customer_id, pet_id, street, city, postal_code, country, \
             status, estimated_delivery, created_at, cancelled_at, express) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (delivery_id) DO UPDATE SET status = EXCLUDED.status, cancelled_at = EXCLUDED.cancelled_at",
        )
        .bind(d.delivery_id)
        .bind(d.saga_id)
        .bind(d.order_id)
        .bind(b.map(|b| &b.customer_id))
        .bind(b.map(|b| &b.pet_id))
        .bind(address.map(|a| &a.street))
        .bind(address.map(|a| &a.city))
        .bind(address.map(|a| &a.postal_code))
        .bind(address.map(|a| &a.country))
        .bind(d.status.as_str())
        .bind(b.map(|b| b.estimated_delivery))
        .bind(d.created_at)
        .bind(d.cancelled_at)
        .bind(b.is_some_and(|b| b.express))
        .execute(conn)
        .await?;
        Ok(())
    }
}

impl DeliveryStore {
    /// Wraps the configured storage.
    pub fn new(storage: Storage<DeliveryState>) -> Self {
        Self(PerSagaStore::new(storage))
    }

    /// Handles `ScheduleDelivery` once; a new delivery is expected `delivery_days` after today,
    /// an express one the next day.
    pub async fn schedule(
        &self,
        message: &Envelope,
        cmd: &ScheduleDelivery,
        delivery_days: u32,
        source: &str,
        ctx: &MessageContext,
    ) -> Result<(), StoreError> {
        let saga_id = cmd.saga.saga_id;
        let (cmd, source, ctx) = (cmd.clone(), source.to_owned(), ctx.clone());
        let decide = move |existing| domain::schedule(existing, &cmd, delivery_days, &source, &ctx);
        self.0.decide_once(SERVICE, message, saga_id, decide).await
    }

    /// Handles `CancelDelivery` once.
    pub async fn cancel(
        &self,
        message: &Envelope,
        cmd: &CancelDelivery,
        source: &str,
        ctx: &MessageContext,
    ) -> Result<(), StoreError> {
        let saga_id = cmd.saga.saga_id;
        let (cmd, source, ctx) = (cmd.clone(), source.to_owned(), ctx.clone());
        let decide = move |existing| domain::cancel(existing, &cmd, &source, &ctx);
        self.0.decide_once(SERVICE, message, saga_id, decide).await
    }

    /// The delivery of an order's saga, if one was scheduled.
    pub async fn for_order(&self, order_id: Uuid) -> Result<Option<Delivery>, StoreError> {
        self.0.for_order(order_id).await
    }
}

const SELECT: &str = "SELECT delivery_id, saga_id, order_id, customer_id, pet_id, street, city, postal_code, country, \
                      status, estimated_delivery, created_at, cancelled_at, express FROM deliveries";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use contracts::SagaRef;
    use persistence::memory::MemoryStore;

    use super::*;

    /// A booking of pet-1 for `saga`.
    fn booking(saga: SagaRef) -> ScheduleDelivery {
        let address = Address {
            street: "1 Main St".into(),
            city: "Springfield".into(),
            postal_code: "12345".into(),
            country: "US".into(),
        };
        ScheduleDelivery {
            saga,
            customer_id: "c".into(),
            pet_id: "pet-1".into(),
            shipping_address: address,
            express: false,
        }
    }

    #[tokio::test]
    async fn an_order_shows_its_delivery_scheduled_then_cancelled() {
        let store = store(false).await;
        let ctx = MessageContext::default();
        let saga = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
        let booking = booking(saga);
        let message = Envelope::from_message("/t", &booking, &ctx).expect("envelope");

        store.schedule(&message, &booking, 3, "/t", &ctx).await.expect("scheduled");
        let scheduled = store.for_order(saga.order_id).await.expect("read").expect("a delivery");
        assert_eq!(scheduled.status, DeliveryStatus::Scheduled);

        let cancel = CancelDelivery { saga };
        let message = Envelope::from_message("/t", &cancel, &ctx).expect("envelope");
        store.cancel(&message, &cancel, "/t", &ctx).await.expect("cancelled");
        let cancelled = store.for_order(saga.order_id).await.expect("read").expect("a delivery");
        assert_eq!((cancelled.delivery_id, cancelled.status), (scheduled.delivery_id, DeliveryStatus::Cancelled));
        assert!(store.for_order(Uuid::now_v7()).await.expect("read").is_none(), "another order has none");
    }

    /// A delivery store in memory or in a fresh PostgreSQL database.
    async fn store(postgres: bool) -> DeliveryStore {
        if !postgres {
            return DeliveryStore::new(Storage::Memory(Arc::new(MemoryStore::default())));
        }
        let url = kit::testing::fresh_database().await;
        let pool =
            persistence::pg::connect(&url, SERVICE, 2, std::time::Duration::from_secs(5)).await.expect("connect");
        persistence::pg::migrate(&pool, SERVICE, &crate::MIGRATOR).await.expect("migrate");
        DeliveryStore::new(Storage::postgres(pool, SERVICE))
    }

    async fn a_booking_after_its_cancellation_books_nothing(postgres: bool) {
        let store = store(postgres).await;
        let ctx = MessageContext::default();
        let saga = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
        let cancel = CancelDelivery { saga };
        let message = Envelope::from_message("/t", &cancel, &ctx).expect("envelope");
        store.cancel(&message, &cancel, "/t", &ctx).await.expect("cancelled");
        let tombstone = store.for_order(saga.order_id).await.expect("read").expect("a tombstone");
        assert_eq!((tombstone.status, tombstone.booking.as_ref()), (DeliveryStatus::Cancelled, None), "{postgres}");

        let late = booking(saga);
        let message = Envelope::from_message("/t", &late, &ctx).expect("envelope");
        store.schedule(&message, &late, 3, "/t", &ctx).await.expect("handled");
        let after = store.for_order(saga.order_id).await.expect("read").expect("the tombstone");
        assert_eq!(after, tombstone, "{postgres}: the late booking wrote nothing");
    }

    async fn an_express_booking_is_stored_as_express(postgres: bool) {
        let store = store(postgres).await;
        let ctx = MessageContext::default();
        let saga = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
        let express = ScheduleDelivery { express: true, ..booking(saga) };
        let message = Envelope::from_message("/t", &express, &ctx).expect("envelope");
        store.schedule(&message, &express, 3, "/t", &ctx).await.expect("scheduled");
        let delivery = store.for_order(saga.order_id).await.expect("read").expect("a delivery");
        let booked = delivery.booking.as_ref().expect("a booking");
        assert!(booked.express, "{postgres}");
        let days = (booked.estimated_delivery - delivery.created_at.date_naive()).num_days();
        assert_eq!(days, 1, "{postgres}: tomorrow");
    }

    #[tokio::test]
    async fn memory_an_express_booking_is_stored_as_express() {
        an_express_booking_is_stored_as_express(false).await;
    }

    #[tokio::test]
    async fn postgres_an_express_booking_is_stored_as_express() {
        an_express_booking_is_stored_as_express(true).await;
    }

    #[tokio::test]
    async fn memory_a_booking_after_its_cancellation_books_nothing() {
        a_booking_after_its_cancellation_books_nothing(false).await;
    }

    #[tokio::test]
    async fn postgres_a_booking_after_its_cancellation_books_nothing() {
        a_booking_after_its_cancellation_books_nothing(true).await;
    }
}
