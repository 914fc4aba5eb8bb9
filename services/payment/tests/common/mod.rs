//! What the payment service's tests share: the orchestrator's side of the bus, which sends
//! `ProcessPayment` and waits for the service's reply.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use contracts::{
    Message, PaymentMethod, SagaRef, channels,
    payment::{PaymentFailed, ProcessPayment},
};
use messaging::{Bus, Envelope, MessageContext};
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use uuid::Uuid;

/// How long a reply may take before a test gives up.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The orchestrator, as far as payments go: it sends charges and reads the replies.
pub struct Orchestrator {
    bus: Bus,
    replies: mpsc::UnboundedReceiver<Envelope>,
}

impl Orchestrator {
    /// Joins `ctx`'s bus as the orchestrator and listens to `payment-events`.
    pub async fn join(ctx: &kit::ServiceContext) -> Self {
        let bus = Bus::new(&ctx.backends, &ctx.settings.messaging, "orchestrator", ctx.shutdown.clone())
            .await
            .expect("the orchestrator's bus");
        let (tx, replies) = mpsc::unbounded_channel();
        bus.subscribe(channels::PAYMENT_EVENTS, "test-observer", move |env: Envelope| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(env);
                Ok(())
            }
        })
        .await
        .expect("observe payment events");
        Self { bus, replies }
    }

    /// Sends `ProcessPayment` for `saga` (a new message each time, as the orchestrator's
    /// re-sends are) and returns the payment service's reply.
    pub async fn charge(&mut self, saga: SagaRef) -> Envelope {
        let command = ProcessPayment {
            saga,
            customer_id: "customer-1".into(),
            amount: Decimal::new(2_500, 2),
            currency: "USD".into(),
            payment_method: PaymentMethod::CreditCard,
        };
        let envelope = Envelope::from_message("/petstore/orchestrator", &command, &MessageContext::correlated("test"))
            .expect("encode");
        self.bus.send(channels::PAYMENT_COMMANDS, &envelope).await.expect("send");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = tokio::time::timeout(left, self.replies.recv())
                .await
                .unwrap_or_else(|_| panic!("no reply for saga {} within {PATIENCE:?}", saga.saga_id))
                .expect("observer running");
            let data: serde_json::Value = serde_json::from_slice(&reply.data).expect("json");
            if data["saga_id"] == saga.saga_id.to_string() {
                return reply;
            }
        }
    }

    /// Charges a new saga and returns its reply.
    pub async fn charge_new(&mut self) -> (SagaRef, Envelope) {
        let saga = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
        (saga, self.charge(saga).await)
    }
}

/// The reason of a `PaymentFailed` reply.
pub fn failure_reason(reply: &Envelope) -> String {
    assert!(reply.is::<PaymentFailed>(), "expected {}, got {}", PaymentFailed::TYPE, reply.event_type);
    reply.decode::<PaymentFailed>().expect("decode").reason
}

/// The `payment_provider` breaker among `service`'s readiness checks.
pub fn breaker(service: &kit::Service) -> Arc<dyn kit::Readiness> {
    let check = service.readiness.iter().find(|check| check.name() == "payment_provider");
    check.expect("the breaker is a readiness check").clone()
}
