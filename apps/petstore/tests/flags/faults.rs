//! Fault-injection flags change what the system does, live, through the real paths: with
//! `fault_payment_failure_rate` at 1.0 every charge fails inside the simulated provider, the
//! guard's retries give up, the `payment_provider` breaker opens and every saga compensates;
//! back at 0.0, sagas complete again — without a restart. `fault_inventory_latency_ms` makes
//! orders wait out their inventory lookup; `fault_handler_failure_rate` aimed at one channel
//! dead-letters its messages there and nowhere else; `fault_cache_outage` opens the cache's
//! breaker while the catalog keeps answering from storage.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{FlagFile, flags_with, project_flags, support::stack::Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_failures_injected_by_flag_compensate_every_saga_and_none_once_the_flag_is_off() {
    let file = FlagFile::new(&flags_with("fault_payment_failure_rate", "total"));
    let overrides = format!(
        "{}\n\
         services: {{ payment: {{ provider: {{ max_attempts: 2, timeout_ms: 500 }} }} }}\n\
         resilience: {{ circuit_breaker: {{ failure_threshold: 2, open_for_ms: 300, half_open_probes: 1 }} }}",
        file.setting()
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

    file.write(&flags_with("fault_payment_failure_rate", "off"));
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_inventory_injected_by_flag_makes_orders_wait_out_their_lookup_and_get_a_503() {
    let file = FlagFile::new(&flags_with("fault_inventory_latency_ms", "slow"));
    let overrides = format!("{}\nservices: {{ order: {{ pet_lookup_timeout_ms: 200 }} }}", file.setting());
    let stack = Stack::start(&overrides).await;
    let alice = stack.customer("alice");

    let started = Instant::now();
    let (status, headers, body) = stack.place(&alice, "beagle-008").await;
    assert_eq!(status, 503, "the 500 ms answer comes after the 200 ms lookup timeout: {body}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert!(started.elapsed() >= Duration::from_millis(200), "the order waited for the inventory");

    file.write(&flags_with("fault_inventory_latency_ms", "off"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = stack.place(&alice, "beagle-008").await;
        if status == 202 {
            break;
        }
        assert!(Instant::now() < deadline, "orders still fail with the fault flag off: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_failures_drilled_on_one_channel_dead_letter_there_and_nowhere_else() {
    let mut doc = project_flags();
    doc["flags"]["fault_handler_failure_rate"]["targeting"] =
        json!({ "if": [{ "in": [{ "var": "channel" }, ["payment-commands"]] }, "total", null] });
    let file = FlagFile::new(&doc);
    let overrides = format!(
        "{}\nmessaging: {{ retry: {{ max_attempts: 3, initial_backoff_ms: 10, max_backoff_ms: 50 }} }}",
        file.setting()
    );
    let stack = Stack::start(&overrides).await;
    let alice = stack.customer("alice");
    let (status, _, placed) = stack.place(&alice, "beagle-008").await;
    assert_eq!(status, 202, "{placed}");

    // The payment command fails every attempt, is retried, then dead-lettered on its channel.
    let deadline = Instant::now() + Duration::from_secs(30);
    let letters = loop {
        let letters: Vec<(String, i64)> =
            sqlx::query_as("SELECT channel, attempts FROM orchestrator.dead_letters ORDER BY channel")
                .fetch_all(&stack.db)
                .await
                .expect("dead letters");
        if !letters.is_empty() {
            break letters;
        }
        assert!(Instant::now() < deadline, "nothing was dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(letters, vec![("payment-commands".to_owned(), 3)], "after 3 attempts, on payment-commands only");
    // Everything before the payment step went through: the pet was reserved for the order.
    let reserved =
        stack.count("SELECT count(*) FROM inventory.pets WHERE pet_id = 'beagle-008' AND status = 'reserved'");
    assert_eq!(reserved.await, 1);
    let handled = "SELECT count(*) FROM orchestrator.dead_letters WHERE channel <> 'payment-commands'";
    assert_eq!(stack.count(handled).await, 0, "no other channel lost a message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drilled_cache_outage_opens_the_cache_breaker_and_the_catalog_answers_from_storage() {
    let file = FlagFile::new(&flags_with("fault_cache_outage", "on"));
    let redis = crate::support::env_or("REDIS_URL", "redis://127.0.0.1:6379");
    let overrides = format!(
        "{}\ncache: {{ backend: redis, redis_url: \"{redis}\", key_prefix: \"drill{}:\" }}\n\
         resilience: {{ circuit_breaker: {{ failure_threshold: 2, open_for_ms: 300, half_open_probes: 1 }} }}",
        file.setting(),
        uuid::Uuid::now_v7().simple()
    );
    let stack = Stack::start(&overrides).await;
    let catalog = || async {
        let (status, headers, body) = stack.send(stack.http.get(stack.url("inventory", "/pets?limit=3"))).await;
        assert_eq!(status, 200, "the catalog answers from storage: {body}");
        headers.get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    let breaker = || async {
        let (_, _, ready) = stack.send(stack.http.get(stack.url("inventory", "/ready"))).await;
        ready["checks"]["catalog_cache"]["status"].as_str().unwrap_or_default().to_owned()
    };
    for _ in 0..3 {
        assert_eq!(catalog().await, "MISS", "no cache during the drill");
    }
    assert_eq!(breaker().await, "degraded", "the breaker opened");

    file.write(&flags_with("fault_cache_outage", "off"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while catalog().await != "HIT" {
        assert!(Instant::now() < deadline, "the cache did not come back after the drill");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(breaker().await, "up", "the breaker closed again");
}
