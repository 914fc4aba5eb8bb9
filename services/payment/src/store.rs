//! Where payments live: the `payment` schema, or memory. Each command runs in one
//! transaction with its inbox entry and its reply.

use contracts::{
    PaymentMethod, SagaRef,
    payment::{ProcessPayment, RefundPayment},
};
use messaging::{Envelope, MessageContext};
use persistence::{PerSagaState, PerSagaStore, SagaRecord, Storage, StoreError};
use sqlx::{PgConnection, Row, postgres::PgRow};
use uuid::Uuid;

use crate::{
    SERVICE,
    domain::{self, Payment, PaymentStatus},
    provider::Verdict,
};

/// Payments by saga, for the in-memory store.
pub type PaymentState = PerSagaState<Payment>;

/// The payment store: one payment per saga.
#[derive(Clone)]
pub struct PaymentStore(PerSagaStore<Payment>);

impl SagaRecord for Payment {
    const SELECT: &'static str = SELECT;

    fn saga(&self) -> SagaRef {
        SagaRef { saga_id: self.saga_id, order_id: self.order_id }
    }

    fn decode(row: &PgRow) -> Result<Self, StoreError> {
        let status: String = row.try_get("status")?;
        let method: Option<String> = row.try_get("payment_method")?;
        Ok(Payment {
            payment_id: row.try_get("payment_id")?,
            saga_id: row.try_get("saga_id")?,
            order_id: row.try_get("order_id")?,
            customer_id: row.try_get("customer_id")?,
            amount: row.try_get("amount")?,
            currency: row.try_get("currency")?,
            payment_method: method
                .map(|m| {
                    serde_json::from_value(serde_json::Value::String(m.clone()))
                        .map_err(|_| StoreError::Codec(format!("unknown payment method {m}")))
                })
                .transpose()?,
            status: PaymentStatus::parse(&status)
                .ok_or_else(|| StoreError::Codec(format!("unknown payment status {status}")))?,
            decline_reason: row.try_get("decline_reason")?,
            created_at: row.try_get("created_at")?,
            refunded_at: row.try_get("refunded_at")?,
        })
    }

    async fn save(conn: &mut PgConnection, p: &Self) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO payments (payment_id, saga_id, order_id, customer_id, amount, currency, payment_method, status, \
             decline_reason, created_at, refunded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (payment_id) DO UPDATE SET status = EXCLUDED.status, refunded_at = EXCLUDED.refunded_at",
        )
        .bind(p.payment_id)
        .bind(p.saga_id)
        .bind(p.order_id)
        .bind(&p.customer_id)
        .bind(p.amount)
        .bind(&p.currency)
        .bind(p.payment_method.map(method_name))
        .bind(p.status.as_str())
        .bind(&p.decline_reason)
        .bind(p.created_at)
        .bind(p.refunded_at)
        .execute(conn)
        .await?;
        Ok(())
    }
}

impl PaymentStore {
    /// Wraps the configured storage.
    pub fn new(storage: Storage<PaymentState>) -> Self {
        Self(PerSagaStore::new(storage))
    }

    /// Handles `ProcessPayment` once, recording the provider's `verdict` unless the saga's
    /// payment is already recorded (`verdict` is `None` when the caller saw it was).
    pub async fn process(
        &self,
        message: &Envelope,
        cmd: &ProcessPayment,
        verdict: Option<&Verdict>,
        source: &str,
        ctx: &MessageContext,
    ) -> Result<(), StoreError> {
        let saga_id = cmd.saga.saga_id;
        let (cmd, verdict, source, ctx) = (cmd.clone(), verdict.cloned(), source.to_owned(), ctx.clone());
        let decide = move |existing| domain::process(existing, &cmd, verdict.as_ref(), &source, &ctx);
        self.0.decide_once(SERVICE, message, saga_id, decide).await
    }

    /// Handles `RefundPayment` once.
    pub async fn refund(
        &self,
        message: &Envelope,
        cmd: &RefundPayment,
        source: &str,
        ctx: &MessageContext,
    ) -> Result<(), StoreError> {
        let saga_id = cmd.saga.saga_id;
        let (cmd, source, ctx) = (cmd.clone(), source.to_owned(), ctx.clone());
        let decide = move |existing| domain::refund(existing, &cmd, &source, &ctx);
        self.0.decide_once(SERVICE, message, saga_id, decide).await
    }

    /// The payment of an order's saga, if one was attempted.
    pub async fn for_order(&self, order_id: Uuid) -> Result<Option<Payment>, StoreError> {
        self.0.for_order(order_id).await
    }

    /// The payment of a saga, if one was attempted (or voided).
    pub async fn for_saga(&self, saga_id: Uuid) -> Result<Option<Payment>, StoreError> {
        self.0.for_saga(saga_id).await
    }
}

const SELECT: &str = "SELECT payment_id, saga_id, order_id, customer_id, amount, currency, payment_method, status, \
                      decline_reason, created_at, refunded_at FROM payments";

fn method_name(m: PaymentMethod) -> String {
    serde_json::to_value(m).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use contracts::{
        SagaRef,
        payment::{PaymentFailed, PaymentRefunded},
    };
    use messaging::BusError;
    use persistence::{OutboxSink, OutboxStore, memory::MemoryStore, pg};
    use rust_decimal::Decimal;

    use super::*;

    /// The messages a store's outbox holds, drained in order.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Envelope>>);

    #[async_trait]
    impl OutboxSink for Recorder {
        async fn deliver(&self, _channel: &str, envelope: &Envelope) -> Result<(), BusError> {
            self.0.lock().expect("recorder").push(envelope.clone());
            Ok(())
        }
    }

    /// A payment store and its outbox, in memory or in a fresh PostgreSQL database.
    async fn store(postgres: bool) -> (PaymentStore, Arc<dyn OutboxStore>) {
        if !postgres {
            let memory = Arc::new(MemoryStore::default());
            let outbox: Arc<dyn OutboxStore> = memory.outbox();
            return (PaymentStore::new(Storage::Memory(memory)), outbox);
        }
        let url = kit::testing::fresh_database().await;
        let pool = pg::connect(&url, SERVICE, 2, std::time::Duration::from_secs(5)).await.expect("connect");
        pg::migrate(&pool, SERVICE, &crate::MIGRATOR).await.expect("migrate");
        let outbox: Arc<dyn OutboxStore> = Arc::new(pg::PgOutbox::new(pool.clone()));
        (PaymentStore::new(Storage::postgres(pool, SERVICE)), outbox)
    }

    async fn replies(outbox: &dyn OutboxStore) -> Vec<Envelope> {
        let recorder = Recorder::default();
        outbox.relay(100, &recorder).await.expect("relay");
        recorder.0.into_inner().expect("recorder")
    }

    async fn a_charge_after_its_refund_is_refused_and_the_void_kept(postgres: bool) {
        let backend = if postgres { "postgres" } else { "memory" };
        let (store, outbox) = store(postgres).await;
        let ctx = MessageContext::default();
        let saga = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
        let refund = RefundPayment { saga };
        let charge = ProcessPayment {
            saga,
            customer_id: "customer-1".into(),
            amount: Decimal::new(120_000, 2),
            currency: "USD".into(),
            payment_method: PaymentMethod::CreditCard,
        };

        let message = Envelope::from_message("/t", &refund, &ctx).expect("envelope");
        store.refund(&message, &refund, "/t", &ctx).await.expect("refund");
        let voided = store.for_order(saga.order_id).await.expect("read").expect("a tombstone");
        assert_eq!((voided.status, voided.amount), (PaymentStatus::Voided, Decimal::ZERO), "{backend}");
        assert_eq!((voided.customer_id.as_deref(), voided.payment_method), (None, None), "{backend}");

        let late = Envelope::from_message("/t", &charge, &ctx).expect("envelope");
        store.process(&late, &charge, Some(&Verdict::Approved), "/t", &ctx).await.expect("process");
        let after = store.for_order(saga.order_id).await.expect("read").expect("the tombstone");
        assert_eq!(after, voided, "{backend}: the late charge wrote nothing");

        let sent = replies(&*outbox).await;
        assert_eq!(sent.len(), 2, "{backend}: {sent:?}");
        assert_eq!(
            sent[0].decode::<PaymentRefunded>().expect("refunded"),
            PaymentRefunded { saga, amount: Decimal::ZERO }
        );
        let failed = sent[1].decode::<PaymentFailed>().expect("the late charge fails");
        assert_eq!(failed, PaymentFailed { saga, reason: domain::VOIDED.to_owned() }, "{backend}");
    }

    #[tokio::test]
    async fn memory_a_charge_after_its_refund_is_refused_and_the_void_kept() {
        a_charge_after_its_refund_is_refused_and_the_void_kept(false).await;
    }

    #[tokio::test]
    async fn postgres_a_charge_after_its_refund_is_refused_and_the_void_kept() {
        a_charge_after_its_refund_is_refused_and_the_void_kept(true).await;
    }
}
