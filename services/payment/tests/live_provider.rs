//! The provider's settings follow the configuration file in force: a failure rate raised in
//! the watched file makes the simulated provider fail — the charge declined after its retries,
//! the breaker opened by them and refusing the next charge — without a restart.

mod common;

use std::time::{Duration, Instant};

use common::{Orchestrator, PATIENCE, failure_reason};
use contracts::payment::PaymentProcessed;
use payment::UNAVAILABLE;

/// Two attempts per charge and a breaker that opens after two failures: one charge the
/// provider fails opens it.
fn config(failure_rate: f64) -> String {
    format!(
        "resilience: {{ circuit_breaker: {{ failure_threshold: 2, open_for_ms: 600000, half_open_probes: 1 }} }}\n\
         services: {{ payment: {{ provider: {{ timeout_ms: 1000, max_attempts: 2, latency_ms: 0, failure_rate: {failure_rate:.1} }} }} }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_rate_raised_in_the_file_makes_the_simulated_provider_fail_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("petstore-payment-live-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("petstore.yaml");
    std::fs::write(&file, config(0.0)).expect("write the configuration");
    let ctx = kit::testing::file_context(&file).await;
    let service = payment::start(&ctx).await.expect("the payment service starts");
    let breaker = common::breaker(&service);
    let mut orchestrator = Orchestrator::join(&ctx).await;
    let (_, reply) = orchestrator.charge_new().await;
    assert!(reply.is::<PaymentProcessed>(), "{}", reply.event_type);

    std::fs::write(&file, config(1.0)).expect("rewrite the configuration");
    // Charges are approved until the reload applies; the first one after it fails.
    let deadline = Instant::now() + PATIENCE;
    let reason = loop {
        let (_, reply) = orchestrator.charge_new().await;
        if !reply.is::<PaymentProcessed>() {
            break failure_reason(&reply);
        }
        assert!(Instant::now() < deadline, "the failure rate never applied");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(reason.starts_with(UNAVAILABLE) && reason.contains("simulated provider outage"), "{reason}");
    // Its two failed attempts opened the breaker, which refuses the next charge.
    assert_eq!(breaker.check().await, Err("circuit breaker open".into()));
    let (_, reply) = orchestrator.charge_new().await;
    assert!(failure_reason(&reply).contains("circuit breaker open"), "{}", failure_reason(&reply));

    assert_eq!(ctx.live.current().services.payment.provider.failure_rate, 1.0);
    assert_eq!(ctx.settings.services.payment.provider.failure_rate, 0.0, "the start-up snapshot stays");
    ctx.shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
