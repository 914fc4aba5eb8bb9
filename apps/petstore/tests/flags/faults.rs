//! Fault-injection flags change what the system does, live, through the real paths: with
//! `fault_payment_failure_rate` at 1.0 every charge fails inside the simulated provider, the
//! guard's retries give up, the `payment_provider` breaker opens and every saga compensates;
//! back at 0.0, sagas complete again — without a restart.

mod support;

use std::time::{Duration, Instant};

use support::stack::Stack;

/// The project's flags with `flag` served as `variant`.
fn flags_with(flag: &str, variant: &str) -> String {
    let mut doc: serde_json::Value =
        serde_json::from_str(include_str!("../../../config/flags.json")).expect("config/flags.json");
    doc["flags"][flag]["defaultVariant"] = serde_json::json!(variant);
    doc.to_string()
}

/// A fresh directory for a flag file.
fn flag_file() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("petstore-flags-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("flags.json");
    (dir, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_failures_injected_by_flag_compensate_every_saga_and_none_once_the_flag_is_off() {
    let (dir, file) = flag_file();
    std::fs::write(&file, flags_with("fault_payment_failure_rate", "total")).expect("write flags");
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

    std::fs::write(&file, flags_with("fault_payment_failure_rate", "off")).expect("edit flags");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_inventory_injected_by_flag_makes_orders_wait_out_their_lookup_and_get_a_503() {
    let (dir, file) = flag_file();
    std::fs::write(&file, flags_with("fault_inventory_latency_ms", "slow")).expect("write flags");
    let overrides =
        format!("flags: {{ file: \"{}\" }}\nservices: {{ order: {{ pet_lookup_timeout_ms: 200 }} }}", file.display());
    let stack = Stack::start(&overrides).await;
    let alice = stack.customer("alice");

    let started = Instant::now();
    let (status, headers, body) = stack.place(&alice, "beagle-008").await;
    assert_eq!(status, 503, "the 500 ms answer comes after the 200 ms lookup timeout: {body}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert!(started.elapsed() >= Duration::from_millis(200), "the order waited for the inventory");

    std::fs::write(&file, flags_with("fault_inventory_latency_ms", "off")).expect("edit flags");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = stack.place(&alice, "beagle-008").await;
        if status == 202 {
            break;
        }
        assert!(Instant::now() < deadline, "orders still fail with the fault flag off: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
