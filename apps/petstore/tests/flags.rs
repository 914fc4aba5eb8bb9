//! Fault-injection flags change what the system does, live, through the real paths: with
//! `fault_payment_failure_rate` at 1.0 every charge fails inside the simulated provider, the
//! guard's retries give up, the `payment_provider` breaker opens and every saga compensates;
//! back at 0.0, sagas complete again — without a restart.

mod support;

use std::time::{Duration, Instant};

use support::stack::Stack;

/// The project's flags with `fault_payment_failure_rate` served as `variant`.
fn flags_with_payment_failures(variant: &str) -> String {
    let mut doc: serde_json::Value =
        serde_json::from_str(include_str!("../../../config/flags.json")).expect("config/flags.json");
    doc["flags"]["fault_payment_failure_rate"]["defaultVariant"] = serde_json::json!(variant);
    doc.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_failures_injected_by_flag_compensate_every_saga_and_none_once_the_flag_is_off() {
    let dir = std::env::temp_dir().join(format!("petstore-flags-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("flags.json");
    std::fs::write(&file, flags_with_payment_failures("total")).expect("write flags");
    let overrides = format!(
        "flags: {{ file: \"{}\" }}\n\
         services: {{ payment: {{ provider: {{ max_attempts: 2, timeout_ms: 500 }} }} }}\n\
         resilience: {{ circuit_breaker: {{ failure_threshold: 2, open_for_ms: 300, half_open_probes: 1 }} }}",
        file.display()
    );
    let stack = Stack::start(&overrides).await;

    for (i, pet) in ["beagle-008", "koi-022", "canary-019"].iter().enumerate() {
        let (_, saga) = stack.ended_order(&format!("unlucky-{i}"), pet, "credit_card").await;
        assert_eq!(saga["status"], "compensated", "{saga}");
        assert!(saga["reason"].as_str().is_some_and(|r| r.contains("payment provider unavailable")), "{saga}");
    }
    let ready = || async { stack.send(stack.http.get(stack.url("payment", "/ready"))).await.2 };
    let checks = ready().await;
    assert_eq!(checks["checks"]["payment_provider"]["status"], "degraded", "the breaker opened: {checks}");

    std::fs::write(&file, flags_with_payment_failures("off")).expect("edit flags");
    // The breaker half-opens after its pause and the next charge closes it again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        let pet = ["beagle-008", "koi-022", "canary-019"][n % 3];
        let (_, saga) = stack.ended_order(&format!("lucky-{n}"), pet, "credit_card").await;
        if saga["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "sagas still compensate with the fault flag off: {saga}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let checks = ready().await;
    assert_eq!(checks["checks"]["payment_provider"]["status"], "up", "{checks}");
    let _ = std::fs::remove_dir_all(&dir);
}
