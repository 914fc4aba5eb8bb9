//! What load tests stand on, in the all-in-one process: `GET /orders/{id}/status?wait=` (one
//! request that answers when the order's saga ends, or the wait runs out, instead of a client
//! polling — each payment slowed by the `fault_payment_latency_ms` flag so that sagas take a
//! while), and `petstore seed-pets` (generated pets listed through the admin API, so that
//! completed sagas can be sustained).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct AllInOne {
    base: String,
    http: reqwest::Client,
    ctx: kit::ServiceContext,
}

impl AllInOne {
    async fn start() -> Self {
        let ctx = kit::testing::context("").await;
        let mut services = Vec::new();
        services.push(inventory::start(&ctx).await.expect("inventory"));
        services.push(order::start(&ctx).await.expect("order"));
        services.push(payment::start(&ctx).await.expect("payment"));
        services.push(delivery::start(&ctx).await.expect("delivery"));
        services.push(notification::start(&ctx).await.expect("notification"));
        services.push(orchestrator::start(&ctx).await.expect("orchestrator"));
        services.push(persistence::flags::start(&ctx).await.expect("flags"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (gate, shutdown) = (ctx.gate.clone(), ctx.shutdown.clone());
        tokio::spawn(async move { kit::serve(listener, services, &gate, shutdown).await });
        Self { base, http: reqwest::Client::new(), ctx }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn order(&self, customer: &str, pet: &str) -> String {
        let body = json!({
            "pet_id": pet,
            "shipping_address": { "street": "1 Main St", "city": "Springfield", "postal_code": "1", "country": "US" },
            "payment_method": "credit_card",
        });
        let request = self.http.post(format!("{}/orders", self.base)).header("authorization", customer).json(&body);
        let (status, placed) = self.send(request).await;
        assert_eq!(status, 202, "{placed}");
        placed["order_id"].as_str().expect("order_id").to_owned()
    }

    async fn status(&self, customer: &str, order: &str, query: &str) -> (u16, Value, Duration) {
        let started = Instant::now();
        let url = format!("{}/orders/{order}/status{query}", self.base);
        let (status, body) = self.send(self.http.get(url).header("authorization", customer)).await;
        (status, body, started.elapsed())
    }
}

impl Drop for AllInOne {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_status_request_answers_when_the_saga_ends_or_the_wait_runs_out() {
    let store = AllInOne::start().await;
    let admin = kit::testing::bearer("ops", &["admin"]);
    let slow = json!({ "state": "ENABLED", "variants": { "off": 0, "slow": 500 }, "defaultVariant": "slow" });
    let request =
        store.http.put(format!("{}/admin/flags/fault_payment_latency_ms", store.base)).header("authorization", &admin);
    let (status, body) = store.send(request.json(&slow)).await;
    assert_eq!(status, 200, "{body}");
    let alice = kit::testing::bearer("alice", &["customer"]);

    // Ended: one request, answered when the saga completes (after the 500 ms payment).
    let order = store.order(&alice, "beagle-008").await;
    let (status, saga, took) = store.status(&alice, &order, "?wait=20s").await;
    assert_eq!(status, 200, "{saga}");
    assert_eq!(saga["status"], "completed", "answered once the saga ended: {saga}");
    assert!(took >= Duration::from_millis(400), "it waited for the slow payment: {took:?}");

    // Not ended within the wait: the saga as it is then.
    let order = store.order(&alice, "koi-022").await;
    let (status, saga, took) = store.status(&alice, &order, "?wait=200ms").await;
    assert_eq!(status, 200, "{saga}");
    assert_eq!(saga["status"], "running", "the wait ran out first: {saga}");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    let (_, saga, _) = store.status(&alice, &order, "?wait=20s").await;
    assert_eq!(saga["status"], "completed", "{saga}");

    // Someone else's order: 404 at once, however long the wait.
    let bob = kit::testing::bearer("bob", &["customer"]);
    let (status, _, took) = store.status(&bob, &order, "?wait=20s").await;
    assert_eq!(status, 404);
    assert!(took < Duration::from_secs(2), "not held: {took:?}");
    // No saga at all: waited for up to 2 s to start, then 404.
    let (status, _, took) = store.status(&alice, &uuid::Uuid::now_v7().to_string(), "?wait=20s").await;
    assert_eq!(status, 404);
    assert!(took < Duration::from_secs(10), "{took:?}");

    for bad in ["?wait=forever", "?wait=31s", "?wait=10s&verbose=1"] {
        let (status, body, _) = store.status(&alice, &order, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_pets_lists_generated_pets_once_and_they_can_be_bought() {
    let store = AllInOne::start().await;
    let seed = |count: &str| {
        let base = store.base.clone();
        let count = count.to_owned();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_petstore"))
                .args(["seed-pets", "--count", &count, "--prefix", "seeded", "--url", &base])
                .env(
                    "PETSTORE_TOKEN",
                    kit::testing::token(&kit::Settings::with_overrides("{}").expect("settings"), "ops", &["admin"]),
                )
                .output()
                .await
                .expect("petstore seed-pets")
        }
    };
    let first = seed("150").await;
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stdout).starts_with("150 pets listed, 0 already there"));
    let again = seed("160").await;
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("10 pets listed, 150 already there"));

    let (status, pet) = store.send(store.http.get(format!("{}/pets/seeded-000159", store.base))).await;
    assert_eq!(status, 200, "{pet}");
    assert_eq!(pet["status"], "available");
    let alice = kit::testing::bearer("alice", &["customer"]);
    let order = store.order(&alice, "seeded-000159").await;
    let (_, saga, _) = store.status(&alice, &order, "?wait=20s").await;
    assert_eq!(saga["status"], "completed", "{saga}");

    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_petstore"))
        .args(["seed-pets", "--count", "1", "--url", &store.base])
        .env_remove("PETSTORE_TOKEN")
        .output()
        .await
        .expect("petstore seed-pets");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"), "{}", String::from_utf8_lossy(&refused.stderr));
}
