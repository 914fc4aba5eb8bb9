//! Resilience end to end: sagas end, and money and pets add up, when participants stop
//! answering.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::Cluster;

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
    let (_, order) = cluster.get_json("order", &format!("/orders/{order_id}"), "erin").await;
    assert_eq!(order["status"], "cancelled", "{order}");
    let metrics = cluster.http.get(cluster.url("orchestrator", "/metrics")).send().await.expect("metrics");
    let metrics = metrics.text().await.expect("text");
    assert!(
        metrics.contains("petstore_saga_timeouts_total{step=\"process_payment\",action=\"execute\"} 3"),
        "three timeouts counted:\n{metrics}"
    );
}
