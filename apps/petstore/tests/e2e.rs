//! End-to-end: the six services as separate processes over real PostgreSQL, Redis and a
//! Kafka-protocol broker, driven through their HTTP APIs like a user with curl would.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::Cluster;
use uuid::Uuid;

const SAGA_LIMIT: Duration = Duration::from_secs(90);

fn step<'a>(saga: &'a Value, name: &str) -> &'a Value {
    saga["steps"].as_array().and_then(|s| s.iter().find(|s| s["step"] == name)).unwrap_or(&Value::Null)
}

fn order_id(body: &Value) -> Uuid {
    body["order_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).unwrap_or_else(|| panic!("no order_id in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_runs_all_five_steps_and_completes() {
    let cluster = Cluster::start().await;
    let customer = "alice";

    // The catalog is cached: the second identical listing is served from Redis.
    let first = cluster.http.get(cluster.url("inventory", "/pets?category=dog")).send().await.expect("GET /pets");
    assert_eq!(first.headers()["x-cache"], "MISS");
    let second = cluster.http.get(cluster.url("inventory", "/pets?category=dog")).send().await.expect("GET /pets");
    assert_eq!(second.headers()["x-cache"], "HIT");

    let (status, placed) = cluster.place_order(customer, "golden-retriever-001", "credit_card").await;
    assert_eq!(status, 202, "{placed}");
    assert_eq!(placed["status"], "pending");
    let id = order_id(&placed);

    let saga = cluster.wait_for_saga_end(&id.to_string(), customer, SAGA_LIMIT).await;
    assert_eq!(saga["status"], "completed", "{saga}");
    for name in ["reserve_pet", "process_payment", "schedule_delivery", "mark_pet_sold", "send_confirmation"] {
        let s = step(&saga, name);
        assert_eq!(s["status"], "succeeded", "{name}: {s}");
        assert!(s["started_at"].is_string() && s["finished_at"].is_string(), "{name} has timestamps: {s}");
    }
    assert_eq!(saga["saga_id"], placed["saga_id"]);

    let order = cluster
        .eventually("order confirmed", Duration::from_secs(30), || async {
            let (_, o) = cluster.get_json("order", &format!("/orders/{id}"), customer).await;
            (o["status"] == "confirmed").then_some(o)
        })
        .await;
    assert_eq!(order["amount"], "1200.00");
    let (_, history) = cluster.get_json("order", &format!("/orders/{id}/events"), customer).await;
    let kinds: Vec<&str> =
        history["events"].as_array().expect("events").iter().filter_map(|e| e["event"]["type"].as_str()).collect();
    assert_eq!(kinds, ["placed", "confirmed"]);

    // The listing reflects the sale (the cache was invalidated).
    let (_, pet) = cluster.get_json("inventory", "/pets/golden-retriever-001", customer).await;
    assert_eq!(pet["status"], "sold", "{pet}");
    let (_, dogs) = cluster.get_json("inventory", "/pets?category=dog", customer).await;
    let listed =
        dogs["items"].as_array().expect("items").iter().find(|p| p["pet_id"] == "golden-retriever-001").cloned();
    assert_eq!(listed.expect("listed")["status"], "sold");

    assert_eq!(
        cluster.count("SELECT count(*) FROM payment.payments WHERE order_id = $1 AND status = 'charged'", id).await,
        1
    );
    assert_eq!(
        cluster
            .count("SELECT count(*) FROM delivery.deliveries WHERE order_id = $1 AND status = 'scheduled'", id)
            .await,
        1
    );
    assert_eq!(
        cluster
            .count("SELECT count(*) FROM notification.notifications WHERE order_id = $1 AND kind = 'confirmation'", id)
            .await,
        1
    );
    // Triggers wrote the audit trail: the order row inserted, then updated to confirmed.
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT operation FROM orders.audit_log WHERE table_name = 'orders' AND row_data->>'order_id' = $1 ORDER BY id",
    )
    .bind(id.to_string())
    .fetch_all(&cluster.db)
    .await
    .expect("audit rows");
    assert_eq!(audited, ["INSERT", "UPDATE"]);
    cluster.wait_for_metric("orchestrator", "petstore_sagas_ended_total{outcome=\"completed\"} 1", SAGA_LIMIT).await;
    // Someone else cannot read the order.
    let (status, problem) = cluster.get_json("order", &format!("/orders/{id}"), "mallory").await;
    assert_eq!(status, 404, "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_compensates_releases_the_pet_and_charges_nothing() {
    let cluster = Cluster::start().await;
    let customer = "bob";
    let (status, placed) = cluster.place_order(customer, "cockatiel-003", "declined_card").await;
    assert_eq!(status, 202, "{placed}");
    let id = order_id(&placed);

    let saga = cluster.wait_for_saga_end(&id.to_string(), customer, SAGA_LIMIT).await;
    assert_eq!(saga["status"], "compensated", "{saga}");
    assert!(saga["reason"].as_str().is_some_and(|r| r.contains("declined")), "{saga}");
    assert_eq!(step(&saga, "reserve_pet")["status"], "compensated");
    assert_eq!(step(&saga, "process_payment")["status"], "failed");
    assert_eq!(step(&saga, "schedule_delivery")["status"], "pending");
    assert!(saga["notice"]["sent_at"].is_string(), "cancellation notice sent: {saga}");

    let (_, pet) = cluster.get_json("inventory", "/pets/cockatiel-003", customer).await;
    assert_eq!(pet["status"], "available", "reservation released: {pet}");
    assert_eq!(
        cluster.count("SELECT count(*) FROM payment.payments WHERE order_id = $1 AND status <> 'declined'", id).await,
        0
    );
    assert_eq!(cluster.count("SELECT count(*) FROM delivery.deliveries WHERE order_id = $1", id).await, 0);
    assert_eq!(
        cluster
            .count(
                "SELECT count(*) FROM notification.notifications WHERE order_id = $1 AND kind = 'cancellation_notice'",
                id
            )
            .await,
        1
    );
    cluster
        .eventually("order cancelled", Duration::from_secs(30), || async {
            let (_, o) = cluster.get_json("order", &format!("/orders/{id}"), customer).await;
            (o["status"] == "cancelled").then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_orders_for_one_pet_sell_it_once() {
    let cluster = Cluster::start().await;
    let (a, b) = tokio::join!(
        cluster.place_order("carol", "persian-cat-002", "credit_card"),
        cluster.place_order("dave", "persian-cat-002", "credit_card"),
    );
    assert_eq!((a.0, b.0), (202, 202), "{} {}", a.1, b.1);
    let (id_a, id_b) = (order_id(&a.1).to_string(), order_id(&b.1).to_string());
    let (saga_a, saga_b) = tokio::join!(
        cluster.wait_for_saga_end(&id_a, "carol", SAGA_LIMIT),
        cluster.wait_for_saga_end(&id_b, "dave", SAGA_LIMIT),
    );
    let mut outcomes = [saga_a["status"].as_str().unwrap_or(""), saga_b["status"].as_str().unwrap_or("")];
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["compensated", "completed"], "{saga_a}\n{saga_b}");
    let loser = if saga_a["status"] == "compensated" { &saga_a } else { &saga_b };
    assert_eq!(step(loser, "reserve_pet")["status"], "failed", "the loser fails at the reservation: {loser}");
    assert_eq!(step(loser, "process_payment")["status"], "pending", "and is never charged: {loser}");
    let sold: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inventory.pets WHERE pet_id = 'persian-cat-002' AND status = 'sold'")
            .fetch_one(&cluster.db)
            .await
            .expect("query");
    assert_eq!(sold, 1);
    let charged: i64 = sqlx::query_scalar("SELECT count(*) FROM payment.payments WHERE status = 'charged'")
        .fetch_one(&cluster.db)
        .await
        .expect("query");
    assert_eq!(charged, 1, "exactly one customer paid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_orders_get_problem_details_and_write_nothing() {
    let cluster = Cluster::start().await;
    let url = cluster.url("order", "/orders");
    let address =
        serde_json::json!({ "street": "1 Main St", "city": "Springfield", "postal_code": "1", "country": "US" });
    struct Case {
        name: &'static str,
        body: String,
        content_type: &'static str,
        status: u16,
        detail: &'static str,
    }
    let json = |v: Value| v.to_string();
    let cases = [
        Case {
            name: "unknown pet",
            body: json(
                serde_json::json!({"pet_id": "unicorn-999", "shipping_address": address, "payment_method": "credit_card"}),
            ),
            content_type: "application/json",
            status: 422,
            detail: "unicorn-999",
        },
        Case {
            name: "malformed JSON",
            body: "{\"pet_id\": ".into(),
            content_type: "application/json",
            status: 400,
            detail: "malformed JSON",
        },
        Case {
            name: "missing field",
            body: json(serde_json::json!({"pet_id": "goldfish-004", "payment_method": "credit_card"})),
            content_type: "application/json",
            status: 422,
            detail: "shipping_address",
        },
        Case {
            name: "unknown payment method",
            body: json(
                serde_json::json!({"pet_id": "goldfish-004", "shipping_address": address, "payment_method": "iou"}),
            ),
            content_type: "application/json",
            status: 422,
            detail: "payment_method",
        },
        Case {
            name: "blank address field",
            body: json(
                serde_json::json!({"pet_id": "goldfish-004", "shipping_address": {"street": " ", "city": "x", "postal_code": "1", "country": "US"}, "payment_method": "credit_card"}),
            ),
            content_type: "application/json",
            status: 422,
            detail: "shipping_address.street",
        },
        Case {
            name: "not JSON",
            body: "pet_id=goldfish-004".into(),
            content_type: "application/x-www-form-urlencoded",
            status: 415,
            detail: "application/json",
        },
    ];
    for case in cases {
        let r = cluster
            .http
            .post(&url)
            .bearer_auth(cluster.token("erin", &["customer"]))
            .header("content-type", case.content_type)
            .header("x-correlation-id", format!("case-{}", case.name.replace(' ', "-")))
            .body(case.body)
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status().as_u16(), case.status, "{}", case.name);
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{}", case.name);
        assert_eq!(
            r.headers()["x-correlation-id"],
            format!("case-{}", case.name.replace(' ', "-")).as_str(),
            "{}",
            case.name
        );
        let problem: Value = r.json().await.expect("problem body");
        assert_eq!(problem["status"], case.status, "{}: {problem}", case.name);
        assert!(problem["type"].as_str().is_some_and(|t| t.starts_with("https://")), "{}: {problem}", case.name);
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains(case.detail)), "{}: {problem}", case.name);
        assert_eq!(
            problem["correlation_id"],
            format!("case-{}", case.name.replace(' ', "-")).as_str(),
            "{}",
            case.name
        );
    }
    let r = cluster.http.post(&url).json(&serde_json::json!({})).send().await.expect("POST");
    assert_eq!(r.status(), 401, "no customer id");
    let (status, _) = cluster.get_json("inventory", "/pets/unicorn-999", "erin").await;
    assert_eq!(status, 404);

    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders.order_events").fetch_one(&cluster.db).await.expect("query");
    let outbox: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders.orders").fetch_one(&cluster.db).await.expect("query");
    assert_eq!((orders, outbox), (0, 0), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_participants_mid_run_loses_and_duplicates_no_step() {
    let mut cluster = Cluster::start().await;
    // Payment is down: orders are accepted and wait at the payment step.
    cluster.kill("payment").await;
    let pets = ["goldfish-004", "bearded-dragon-005", "golden-retriever-001"];
    let mut orders = Vec::new();
    for (i, pet) in pets.iter().enumerate() {
        let customer = format!("frank-{i}");
        let (status, body) = cluster.place_order(&customer, pet, "credit_card").await;
        assert_eq!(status, 202, "{body}");
        orders.push((order_id(&body), customer));
    }
    for (id, customer) in &orders {
        cluster
            .eventually("saga waits at the payment step", Duration::from_secs(60), || async {
                let (_, saga) = cluster.get_json("orchestrator", &format!("/orders/{id}/status"), customer).await;
                (step(&saga, "process_payment")["status"] == "running").then_some(())
            })
            .await;
    }
    // The orchestrator dies too, with replies in flight; then both come back.
    cluster.kill("orchestrator").await;
    cluster.restart("payment").await;
    cluster.restart("orchestrator").await;
    for (id, customer) in &orders {
        let saga = cluster.wait_for_saga_end(&id.to_string(), customer, SAGA_LIMIT).await;
        assert_eq!(saga["status"], "completed", "{saga}");
        for s in saga["steps"].as_array().expect("steps") {
            assert_eq!(s["attempts"], 1, "each step ran once: {s}");
        }
        assert_eq!(
            cluster.count("SELECT count(*) FROM payment.payments WHERE order_id = $1", *id).await,
            1,
            "charged once"
        );
        assert_eq!(cluster.count("SELECT count(*) FROM notification.notifications WHERE order_id = $1", *id).await, 1);
        assert_eq!(cluster.count("SELECT count(*) FROM delivery.deliveries WHERE order_id = $1", *id).await, 1);
        let events: i64 = cluster.count("SELECT count(*) FROM orchestrator.saga_events WHERE aggregate_id = (SELECT saga_id FROM orchestrator.sagas WHERE order_id = $1)", *id).await;
        assert_eq!(events, 12, "started + 5×(started, succeeded) + completed, nothing twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_runs_unchanged_with_inventory_on_nats_and_notifications_on_rabbitmq() {
    // The saga's commands stay on Kafka; the inventory's events and status query move to NATS
    // and the notification channels to RabbitMQ. No service knows or cares.
    let cluster = Cluster::start_with(&support::mixed_backends()).await;
    let (status, placed) = cluster.place_order("grace", "bearded-dragon-005", "credit_card").await;
    assert_eq!(status, 202, "the pet lookup went over NATS: {placed}");
    let saga = cluster.wait_for_saga_end(&order_id(&placed).to_string(), "grace", SAGA_LIMIT).await;
    assert_eq!(saga["status"], "completed", "{saga}");
    let (_, declined) = cluster.place_order("heidi", "goldfish-004", "declined_card").await;
    let saga = cluster.wait_for_saga_end(&order_id(&declined).to_string(), "heidi", SAGA_LIMIT).await;
    assert_eq!(saga["status"], "compensated", "{saga}");
    assert!(saga["notice"]["sent_at"].is_string(), "the notice went through RabbitMQ: {saga}");
    let (_, pet) = cluster.get_json("inventory", "/pets/bearded-dragon-005", "grace").await;
    assert_eq!(pet["status"], "sold", "the cache was invalidated by an event over NATS: {pet}");
    let metrics = cluster.http.get(cluster.url("notification", "/metrics")).send().await.expect("metrics");
    let metrics = metrics.text().await.expect("text");
    assert!(metrics.contains("backend=\"rabbitmq\""), "notification consumed from RabbitMQ:\n{metrics}");
}
