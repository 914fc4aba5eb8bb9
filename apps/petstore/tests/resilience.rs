//! Resilience end to end: sagas end, and money and pets add up, when participants stop
//! answering, services are stopped, or the request/response backend goes away.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{
    Cluster, env_or,
    proxy::{TcpProxy, host_port},
};

const SAGA_LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_never_answers_is_sent_again_then_compensated_and_nothing_stays_charged() {
    // Short deadlines: 3 s per reply, checked every 200 ms.
    let mut cluster = Cluster::start_with_env(&[
        ("PETSTORE__SERVICES__ORCHESTRATOR__STEP_TIMEOUT_MS", "3000"),
        ("PETSTORE__SERVICES__ORCHESTRATOR__DEADLINE_CHECK_MS", "200"),
    ])
    .await;
    cluster.kill("payment").await;

    let (status, placed) = cluster.place_order("erin", "siamese-cat-012", "credit_card").await;
    assert_eq!(status, 202, "{placed}");
    let order_id = placed["order_id"].as_str().expect("order_id").to_owned();

    // The payment command goes out three times, then the saga gives up on it and starts
    // undoing it (the charge may have happened without a reply).
    let saga: Value = cluster
        .eventually("the payment step to time out three times", SAGA_LIMIT, || async {
            let (_, saga) = cluster.get_json("orchestrator", &format!("/orders/{order_id}/status"), "erin").await;
            let payment = saga["steps"].as_array()?.iter().find(|s| s["step"] == "process_payment")?.clone();
            (saga["status"] == "compensating" && payment["attempts"] == 3).then_some(saga)
        })
        .await;
    let payment = &saga["steps"].as_array().expect("steps")[1];
    assert_eq!(payment["status"], "compensating", "its own compensation runs first: {saga}");

    // The payment service comes back: it takes the (repeated) charge once, refunds it, and
    // the saga finishes compensating.
    cluster.restart("payment").await;
    let saga = cluster.wait_for_saga_end(&order_id, "erin", SAGA_LIMIT).await;
    assert_eq!(saga["status"], "compensated", "{saga}");
    assert!(saga["reason"].as_str().is_some_and(|r| r.contains("no reply to process_payment")), "{saga}");

    let order_uuid = uuid::Uuid::parse_str(&order_id).expect("uuid");
    let payments = cluster.count("SELECT count(*) FROM payment.payments WHERE order_id = $1", order_uuid).await;
    let charged = cluster
        .count("SELECT count(*) FROM payment.payments WHERE order_id = $1 AND status = 'charged'", order_uuid)
        .await;
    assert!(payments <= 1 && charged == 0, "at most one payment and nothing left charged");
    let (_, pet) = cluster.get_json("inventory", "/pets/siamese-cat-012", "erin").await;
    assert_eq!(pet["status"], "available", "the reservation was released: {pet}");
    // The order hears of the end through the saga's RejectOrder, just after.
    cluster
        .eventually("the order to be cancelled", SAGA_LIMIT, || async {
            let (_, order) = cluster.get_json("order", &format!("/orders/{order_id}"), "erin").await;
            (order["status"] == "cancelled").then_some(())
        })
        .await;
    let timeouts = "petstore_saga_timeouts_total{step=\"process_payment\",action=\"execute\"} 3";
    cluster.wait_for_metric("orchestrator", timeouts, SAGA_LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_stopped_with_sigterm_finishes_its_work_exits_cleanly_and_loses_nothing() {
    let mut cluster = Cluster::start().await;
    // One saga first, so every consumer has joined its group before the stop (a member that
    // leaves while its first join is still in progress leaves the broker we test against —
    // tansu — waiting for it until the rebalance timeout).
    let (_, first) = cluster.place_order("term-first", "beagle-008", "credit_card").await;
    let first = first["order_id"].as_str().expect("order_id").to_owned();
    assert_eq!(cluster.wait_for_saga_end(&first, "term-first", SAGA_LIMIT).await["status"], "completed");
    let pets = ["labrador-retriever-006", "german-shepherd-007", "maine-coon-013", "canary-019", "koi-022"];
    let mut orders = Vec::new();
    for (i, pet) in pets.iter().enumerate() {
        let (status, placed) = cluster.place_order(&format!("term-{i}"), pet, "credit_card").await;
        assert_eq!(status, 202, "{placed}");
        orders.push((format!("term-{i}"), placed["order_id"].as_str().expect("order_id").to_owned()));
    }
    // Orders are in flight: stop the payment service and the orchestrator the way an
    // orchestrator platform does.
    for service in ["payment", "orchestrator"] {
        assert!(cluster.terminate(service, Duration::from_secs(40)).await, "{service} exits 0 on SIGTERM");
        assert!(
            cluster.full_log(service).contains("shutdown complete"),
            "{service} drained before exiting:\n{}",
            cluster.log(service)
        );
    }
    cluster.restart("orchestrator").await;
    cluster.restart("payment").await;
    for (customer, order_id) in &orders {
        let saga = cluster.wait_for_saga_end(order_id, customer, SAGA_LIMIT).await;
        assert_eq!(saga["status"], "completed", "{saga}");
        let id = uuid::Uuid::parse_str(order_id).expect("uuid");
        assert_eq!(cluster.count("SELECT count(*) FROM payment.payments WHERE order_id = $1", id).await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_that_never_answers_fails_the_saga_and_is_dead_lettered_for_replay() {
    let mut cluster = Cluster::start_with_env(&[
        ("PETSTORE__SERVICES__ORCHESTRATOR__STEP_TIMEOUT_MS", "1500"),
        ("PETSTORE__SERVICES__ORCHESTRATOR__DEADLINE_CHECK_MS", "200"),
    ])
    .await;
    cluster.kill("payment").await;
    let (status, placed) = cluster.place_order("frank", "ragdoll-015", "credit_card").await;
    assert_eq!(status, 202, "{placed}");
    let order_id = placed["order_id"].as_str().expect("order_id").to_owned();

    // The charge goes unanswered three times, then its refund five times: the saga fails.
    let saga = cluster.wait_for_saga_end(&order_id, "frank", SAGA_LIMIT).await;
    assert_eq!(saga["status"], "failed", "{saga}");
    assert!(saga["reason"].as_str().is_some_and(|r| r.contains("could not refund")), "{saga}");
    cluster.wait_for_metric("orchestrator", "petstore_sagas_ended_total{outcome=\"failed\"} 1", SAGA_LIMIT).await;

    // The refund that could not be done waits in the dead letters, with why and how often.
    let letter: Value = cluster
        .eventually("the failed refund in GET /admin/dlq", SAGA_LIMIT, || async {
            let (status, listed) = cluster.get_admin_json("orchestrator", "/admin/dlq?channel=payment-commands").await;
            (status == 200).then_some(())?;
            listed["items"].as_array()?.first().cloned()
        })
        .await;
    assert_eq!(letter["group"], "payment", "{letter}");
    assert_eq!(letter["attempts"], 5, "{letter}");
    assert!(letter["error"].as_str().is_some_and(|e| e.contains("could not refund")), "{letter}");

    // The payment service comes back and works through its backlog (one charge, one refund);
    // replaying the letter sends the refund once more, which gives back nothing more.
    cluster.restart("payment").await;
    let id = letter["id"].as_str().expect("id");
    let admin = cluster.token("e2e-admin", &["admin"]);
    let replay = cluster
        .http
        .post(cluster.url("orchestrator", &format!("/admin/dlq/{id}/replay")))
        .bearer_auth(admin)
        .send()
        .await;
    assert_eq!(replay.expect("replay").status(), 202);
    let order_uuid = uuid::Uuid::parse_str(&order_id).expect("uuid");
    cluster
        .eventually("the charge to be taken and refunded", SAGA_LIMIT, || async {
            let refunded = cluster
                .count("SELECT count(*) FROM payment.payments WHERE order_id = $1 AND status = 'refunded'", order_uuid)
                .await;
            (refunded == 1).then_some(())
        })
        .await;
    assert_eq!(cluster.count("SELECT count(*) FROM payment.payments WHERE order_id = $1", order_uuid).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_query_backend_cut_orders_go_through_the_fallback_and_with_both_cut_get_a_503() {
    let rabbitmq = TcpProxy::start(&host_port(&env_or("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))).await;
    let nats = TcpProxy::start(&host_port(&env_or("NATS_URL", "nats://127.0.0.1:4222"))).await;
    // The inventory query rides RabbitMQ, with NATS as the fallback; both through proxies.
    let messaging = format!(
        r#"  backend_selection: {{ fallback: nats }}
  rabbitmq: {{ url: "amqp://guest:guest@{}/%2f", operation_timeout_ms: 2000, connect_timeout_ms: 1000 }}
  nats: {{ url: "nats://{}", request_timeout_ms: 2000, connect_timeout_ms: 1000 }}
  channels:
    inventory-queries: {{ pattern: request_response, partitions: 1, backend: rabbitmq }}"#,
        rabbitmq.address, nats.address
    );
    let cluster = Cluster::start_with(&messaging).await;
    let mut placed = Vec::new();
    let (status, order) = cluster.place_order("fb-1", "beagle-008", "credit_card").await;
    assert_eq!(status, 202, "{order}");
    placed.push(("fb-1", order));

    // RabbitMQ gone: the order service asks the inventory over NATS.
    rabbitmq.cut();
    let (status, order) = cluster.place_order("fb-2", "maine-coon-013", "credit_card").await;
    assert_eq!(status, 202, "the fallback answers: {order}\n{}", cluster.log("order"));
    assert!(cluster.log("order").contains("sending it through the fallback"), "{}", cluster.log("order"));
    placed.push(("fb-2", order));

    // NATS gone too: a clear 503 with Retry-After, nothing stored.
    nats.cut();
    let response = cluster.post_order("fb-3", "canary-019", "credit_card", None).await;
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"), "{:?}", response.headers());
    let content_type = response.headers()["content-type"].to_str().unwrap_or_default().to_owned();
    assert_eq!(content_type, "application/problem+json");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders.orders WHERE customer_id = 'fb-3'")
        .fetch_one(&cluster.db)
        .await
        .expect("count");
    assert_eq!(orders, 0, "a refused order stores nothing");

    // Both back: orders flow again, and every accepted saga completes.
    rabbitmq.restore();
    nats.restore();
    let order = cluster
        .eventually("an order to be accepted again", SAGA_LIMIT, || async {
            let (status, order) = cluster.place_order("fb-4", "koi-022", "credit_card").await;
            (status == 202).then_some(order)
        })
        .await;
    placed.push(("fb-4", order));
    for (customer, order) in placed {
        let order_id = order["order_id"].as_str().expect("order_id");
        assert_eq!(cluster.wait_for_saga_end(order_id, customer, SAGA_LIMIT).await["status"], "completed");
    }
}
