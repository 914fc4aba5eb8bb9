//! The payment provider behind its circuit breaker, on PostgreSQL: while the provider is down
//! charges are declined at once as "payment provider unavailable" (nothing taken), the breaker
//! opens after the configured failures and then refuses without calling the provider; after
//! its pause one probe goes through — a failing probe opens it again, a succeeding one closes
//! it — and a saga declined during the outage is never charged later.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use common::{Orchestrator, PATIENCE, failure_reason};
use contracts::{
    SagaRef,
    payment::{PaymentProcessed, ProcessPayment},
};
use kit::Readiness;
use messaging::Envelope;
use payment::{PaymentProvider, UNAVAILABLE, Unavailable, Verdict};
use rust_decimal::Decimal;
/// How long the breaker stays open in this test.
const OPEN_FOR: Duration = Duration::from_millis(800);

/// A provider the test takes down and brings back, counting the calls that reach it.
#[derive(Default)]
struct Switchable {
    down: AtomicBool,
    calls: AtomicUsize,
}

#[async_trait]
impl PaymentProvider for Switchable {
    async fn authorize(&self, _charge: &ProcessPayment) -> Result<Verdict, Unavailable> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(Unavailable("connection refused".into()))
        } else {
            Ok(Verdict::Approved)
        }
    }
}

struct Harness {
    provider: Arc<Switchable>,
    breaker: Arc<dyn Readiness>,
    orchestrator: Orchestrator,
    db: sqlx::PgPool,
    _ctx: kit::ServiceContext,
}

impl Harness {
    async fn start() -> Self {
        let overrides = format!(
            "resilience: {{ circuit_breaker: {{ failure_threshold: 3, open_for_ms: {} }} }}\n\
             services: {{ payment: {{ provider: {{ max_attempts: 1, timeout_ms: 1000 }} }} }}",
            OPEN_FOR.as_millis()
        );
        let (ctx, url) = kit::testing::postgres_context(&overrides).await;
        let provider = Arc::new(Switchable::default());
        let service = payment::start_with_provider(&ctx, provider.clone()).await.expect("the payment service starts");
        let breaker = common::breaker(&service);
        let orchestrator = Orchestrator::join(&ctx).await;
        let db = sqlx::PgPool::connect(&url).await.expect("connect to the test database");
        Self { provider, breaker, orchestrator, db, _ctx: ctx }
    }

    /// Sends `ProcessPayment` for `saga` and returns the payment service's reply.
    async fn charge(&mut self, saga: SagaRef) -> Envelope {
        self.orchestrator.charge(saga).await
    }

    /// Charges a new saga and returns its reply.
    async fn charge_new(&mut self) -> (SagaRef, Envelope) {
        self.orchestrator.charge_new().await
    }

    fn calls(&self) -> usize {
        self.provider.calls.load(Ordering::SeqCst)
    }

    fn set_down(&self, down: bool) {
        self.provider.down.store(down, Ordering::SeqCst);
    }

    /// The breaker's `/ready` entry: `Ok` when closed, else `circuit breaker <state>`.
    async fn breaker_check(&self) -> Result<(), String> {
        self.breaker.check().await
    }

    /// Waits until the open breaker's pause is over (it then reads half-open).
    async fn wait_half_open(&self) {
        let deadline = Instant::now() + PATIENCE;
        while self.breaker_check().await != Err("circuit breaker half_open".into()) {
            assert!(Instant::now() < deadline, "the breaker never half-opened: {:?}", self.breaker_check().await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The recorded `(status, amount charged)` of a saga's payment.
    async fn recorded(&self, saga: SagaRef) -> (String, Decimal) {
        sqlx::query_as("SELECT status, amount FROM payment.payments WHERE saga_id = $1")
            .bind(saga.saga_id)
            .fetch_one(&self.db)
            .await
            .expect("the payment is recorded")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_an_outage_refuses_fast_and_closes_after_a_good_probe() {
    let mut h = Harness::start().await;

    // Up: charged.
    let (_, reply) = h.charge_new().await;
    assert!(reply.is::<PaymentProcessed>(), "{}", reply.event_type);
    assert_eq!((h.calls(), h.breaker_check().await), (1, Ok(())));

    // Down: three charges fail at the provider and are declined; the third opens the breaker.
    h.set_down(true);
    let mut declined = Vec::new();
    for _ in 0..3 {
        let (saga, reply) = h.charge_new().await;
        let reason = failure_reason(&reply);
        assert!(reason.starts_with(UNAVAILABLE) && reason.contains("connection refused"), "{reason}");
        declined.push(saga);
    }
    assert_eq!(h.calls(), 4);
    assert_eq!(h.breaker_check().await, Err("circuit breaker open".into()));

    // Open: declined at once without calling the provider.
    let (saga, reply) = h.charge_new().await;
    assert!(failure_reason(&reply).contains("circuit breaker open"), "{}", failure_reason(&reply));
    assert_eq!(h.calls(), 4, "an open breaker does not call the provider");
    declined.push(saga);

    // Half-open while still down: the probe fails and the breaker opens again.
    h.wait_half_open().await;
    let (saga, reply) = h.charge_new().await;
    assert!(failure_reason(&reply).contains("connection refused"), "{}", failure_reason(&reply));
    assert_eq!(h.calls(), 5, "one probe went through");
    assert_eq!(h.breaker_check().await, Err("circuit breaker open".into()));
    declined.push(saga);

    // Back up: after the pause the probe succeeds and the breaker closes.
    h.set_down(false);
    h.wait_half_open().await;
    let (_, reply) = h.charge_new().await;
    assert!(reply.is::<PaymentProcessed>(), "{}", reply.event_type);
    assert_eq!((h.calls(), h.breaker_check().await), (6, Ok(())));

    // Every saga declined during the outage stays declined, charging nothing, even when its
    // command comes again now that the provider answers: no second authorization is asked.
    for saga in &declined {
        assert_eq!(h.recorded(*saga).await, ("declined".to_owned(), Decimal::new(2_500, 2)));
        let again = h.charge(*saga).await;
        assert!(failure_reason(&again).starts_with(UNAVAILABLE));
    }
    assert_eq!(h.calls(), 6);
}
