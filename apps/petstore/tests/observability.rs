//! Observability end to end (`docs/architecture.md`, "Observability"): one order is one trace across every service
//! and more than one backend, the logs of one order can be followed by its correlation id,
//! and `/metrics` counts what happened.

mod support;

use std::{collections::HashSet, time::Duration};

use serde_json::Value;
use support::{
    Cluster, SERVICES,
    otlp::{OtlpReceiver, ReceivedSpan},
};

const SAGA_LIMIT: Duration = Duration::from_secs(60);
const EXPORT_LIMIT: Duration = Duration::from_secs(30);

/// Places an order with a chosen correlation id; returns the order id and the trace id the
/// response names.
async fn place(
    cluster: &Cluster,
    customer: &str,
    pet_id: &str,
    method: &str,
    correlation: &str,
) -> (String, Option<String>) {
    let response = cluster.post_order(customer, pet_id, method, Some(correlation)).await;
    assert_eq!(response.status(), 202);
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header("x-correlation-id").as_deref(), Some(correlation));
    // Only when spans are exported (tracing.otlp_endpoint set) is there a trace to name.
    let trace_id = header("x-trace-id");
    let placed: Value = response.json().await.expect("json");
    (placed["order_id"].as_str().expect("order_id").to_owned(), trace_id)
}

/// Waits (at most [`EXPORT_LIMIT`]) until the receiver holds a span named `last` in
/// `trace_id`, spans of every one of `services`, and the parent of every span (a parent
/// ends, and is exported, after its children); returns what it has by then, for the
/// assertions to judge.
async fn exported_trace(receiver: &OtlpReceiver, trace_id: &str, last: &str, services: &[&str]) -> Vec<ReceivedSpan> {
    let deadline = std::time::Instant::now() + EXPORT_LIMIT;
    loop {
        let spans = receiver.trace(trace_id);
        let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        let seen: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        let complete = spans.iter().any(|s| s.name == last)
            && services.iter().all(|s| seen.contains(s))
            && spans.iter().all(|s| s.parent_span_id.is_empty() || ids.contains(s.parent_span_id.as_str()));
        if complete || std::time::Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tree(spans: &[ReceivedSpan]) -> String {
    spans
        .iter()
        .map(|s| format!("{} {} <- {} [{}]", s.span_id, s.name, s.parent_span_id, s.service))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One root (the `POST /orders` request), every other span's parent in the same trace.
fn assert_connected(spans: &[ReceivedSpan]) {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<_> = spans.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root span:\n{}", tree(spans));
    assert_eq!((roots[0].name.as_str(), roots[0].service.as_str()), ("POST /orders", "order"), "{}", tree(spans));
    for span in spans.iter().filter(|s| !s.parent_span_id.is_empty()) {
        assert!(
            ids.contains(span.parent_span_id.as_str()),
            "{} has a parent outside the trace:\n{}",
            span.name,
            tree(spans)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_and_one_log_thread_across_every_service_and_backend() {
    let receiver = OtlpReceiver::start().await;
    let tracing =
        format!("tracing: {{ otlp_endpoint: \"{}\", sample_ratio: 1.0, export_interval_ms: 100 }}", receiver.endpoint);
    let cluster = Cluster::start_custom(&support::mixed_backends(), &tracing).await;

    // A completed saga: every step, every service.
    let correlation = format!("trace-test-{}", uuid::Uuid::now_v7().simple());
    let (order_id, first_trace) = place(&cluster, "ada", "bearded-dragon-005", "credit_card", &correlation).await;
    let first_trace = first_trace.expect("X-Trace-Id on the response");
    let saga = cluster.wait_for_saga_end(&order_id, "ada", SAGA_LIMIT).await;
    assert_eq!(saga["status"], "completed", "{saga}");
    let spans = exported_trace(&receiver, &first_trace, "saga end approve_order", &SERVICES).await;
    println!("trace of the completed order:\n{}", tree(&spans));
    assert_connected(&spans);
    let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert!(SERVICES.iter().all(|s| services.contains(s)), "every service in the trace: {services:?}");
    let names: HashSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for step in ["reserve_pet", "process_payment", "schedule_delivery", "mark_pet_sold", "send_confirmation"] {
        assert!(names.contains(format!("saga step {step}").as_str()), "no span for step {step}:\n{}", tree(&spans));
    }
    // Each participant's work is a child of the step that commanded it.
    let by_id: std::collections::HashMap<&str, &ReceivedSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let payment = spans
        .iter()
        .find(|s| s.service == "payment" && s.name == "payment-commands process")
        .unwrap_or_else(|| panic!("payment consumed its command:\n{}", tree(&spans)));
    assert_eq!(by_id[payment.parent_span_id.as_str()].name, "saga step process_payment");
    // The messages crossed three backends, and the trace survived each.
    let systems: HashSet<&str> =
        spans.iter().filter_map(|s| s.attributes.get("messaging.system")).map(String::as_str).collect();
    for backend in ["kafka", "nats", "rabbitmq"] {
        assert!(systems.contains(backend), "a consumer span on {backend}: {systems:?}\n{}", tree(&spans));
    }

    // A compensated saga: a span per compensation.
    let declined = format!("trace-test-{}", uuid::Uuid::now_v7().simple());
    let (order_id, trace_id) = place(&cluster, "bob", "goldfish-004", "declined_card", &declined).await;
    let trace_id = trace_id.expect("X-Trace-Id on the response");
    let saga = cluster.wait_for_saga_end(&order_id, "bob", SAGA_LIMIT).await;
    assert_eq!(saga["status"], "compensated", "{saga}");
    // No delivery is scheduled when the payment fails.
    let involved = ["order", "orchestrator", "inventory", "payment", "notification"];
    let spans = exported_trace(&receiver, &trace_id, "saga end reject_order", &involved).await;
    assert_connected(&spans);
    assert!(spans.iter().any(|s| s.name == "saga compensation reserve_pet"), "{}", tree(&spans));
    assert!(
        spans.iter().any(|s| s.service == "inventory"
            && s.name == "inventory-commands process"
            && s.attributes.get("message_type").is_some_and(|t| t.contains("release"))),
        "{}",
        tree(&spans)
    );

    // The logs of the first order, filtered by its correlation id, follow it everywhere, and
    // each line names the trace.
    for service in SERVICES {
        let lines: Vec<Value> = cluster
            .full_log(service)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["correlation_id"] == correlation.as_str())
            .collect();
        assert!(!lines.is_empty(), "{service} logged nothing for {correlation}:\n{}", cluster.log(service));
        for line in &lines {
            assert_eq!(line["service"], service, "{line}");
            assert_eq!(line["trace_id"], first_trace.as_str(), "{line}");
            assert!(line["span_id"].as_str().is_some_and(|s| s.len() == 16), "{line}");
        }
    }
}

/// The sum of every series of `name` whose labels include `labels`, in Prometheus text.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let wanted = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (metric == name && wanted).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

async fn scrape(cluster: &Cluster, service: &str) -> String {
    let response = cluster.http.get(cluster.url(service, "/metrics")).send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_completed_and_a_compensated_saga() {
    let cluster = Cluster::start().await;
    let (placed, trace) = place(&cluster, "carol", "beagle-008", "credit_card", "metrics-completed").await;
    assert_eq!(trace, None, "no trace id when spans are not exported");
    assert_eq!(cluster.wait_for_saga_end(&placed, "carol", SAGA_LIMIT).await["status"], "completed");
    let (declined, _) = place(&cluster, "dave", "goldfish-004", "declined_card", "metrics-compensated").await;
    assert_eq!(cluster.wait_for_saga_end(&declined, "dave", SAGA_LIMIT).await["status"], "compensated");
    for _ in 0..2 {
        let r = cluster.http.get(cluster.url("inventory", "/pets?category=fish")).send().await.expect("GET /pets");
        assert_eq!(r.status(), 200);
    }

    // Sagas: two started, one of each outcome, a duration each, and the steps they ran.
    // The last commands (ApproveOrder, RejectOrder) may still be on their way out of the
    // outbox: scrape once the relay has counted everything the bus published.
    let orchestrator = cluster
        .eventually("the orchestrator's outbox to drain", SAGA_LIMIT, || async {
            let text = scrape(&cluster, "orchestrator").await;
            let published = sample(&text, "petstore_messages_published_total", &[("outcome", "ok")]);
            let relayed = sample(&text, "petstore_outbox_relayed_total", &[("service", "orchestrator")]);
            let backlog = sample(&text, "petstore_outbox_backlog_messages", &[("service", "orchestrator")]);
            (published == relayed && backlog == 0.0).then_some(text)
        })
        .await;
    let o = |name: &str, labels: &[(&str, &str)]| sample(&orchestrator, name, labels);
    assert_eq!(o("petstore_sagas_started_total", &[]), 2.0, "{orchestrator}");
    assert_eq!(o("petstore_sagas_ended_total", &[("outcome", "completed")]), 1.0);
    assert_eq!(o("petstore_sagas_ended_total", &[("outcome", "compensated")]), 1.0);
    assert_eq!(o("petstore_sagas_ended_total", &[("outcome", "failed")]), 0.0);
    assert_eq!(o("petstore_saga_duration_seconds_count", &[("outcome", "completed")]), 1.0);
    assert_eq!(o("petstore_saga_duration_seconds_count", &[("outcome", "compensated")]), 1.0);
    let step = |step: &str, action: &str, outcome: &str| {
        o("petstore_saga_step_duration_seconds_count", &[("step", step), ("action", action), ("outcome", outcome)])
    };
    assert_eq!(step("reserve_pet", "execute", "succeeded"), 2.0);
    assert_eq!(step("process_payment", "execute", "succeeded"), 1.0);
    assert_eq!(step("process_payment", "execute", "failed"), 1.0);
    assert_eq!(step("send_confirmation", "execute", "succeeded"), 1.0);
    assert_eq!(step("reserve_pet", "compensate", "succeeded"), 1.0);
    // Replies consumed: 5 + 3 for the sagas, plus the two OrderCreated events.
    let consumed = o("petstore_messages_consumed_total", &[("backend", "kafka"), ("outcome", "ok")]);
    assert!(consumed >= 10.0, "orchestrator consumed {consumed}:\n{orchestrator}");
    assert_eq!(o("petstore_messages_published_total", &[("channel", "payment-commands"), ("outcome", "ok")]), 2.0);
    assert_eq!(
        o("petstore_outbox_relayed_total", &[("service", "orchestrator")]),
        o("petstore_messages_published_total", &[("outcome", "ok")])
    );
    assert!(o("petstore_outbox_relay_latency_seconds_count", &[("service", "orchestrator")]) >= 10.0);

    // Orders and HTTP: two accepted POSTs.
    let order = scrape(&cluster, "order").await;
    assert_eq!(sample(&order, "petstore_orders_created_total", &[]), 2.0, "{order}");
    let posts = [("method", "POST"), ("route", "/orders"), ("status", "202")];
    assert_eq!(sample(&order, "petstore_http_requests_total", &posts), 2.0);
    assert_eq!(sample(&order, "petstore_http_request_duration_seconds_count", &posts), 2.0);

    // The bus on a participant: two payment commands handled, with their latency.
    let payment = scrape(&cluster, "payment").await;
    let handled =
        [("channel", "payment-commands"), ("backend", "kafka"), ("pattern", "point_to_point"), ("outcome", "ok")];
    assert_eq!(sample(&payment, "petstore_messages_consumed_total", &handled), 2.0, "{payment}");
    assert_eq!(sample(&payment, "petstore_message_handler_duration_seconds_count", &handled), 2.0);

    // The catalog cache: the same listing twice is a miss, then a hit.
    let inventory = scrape(&cluster, "inventory").await;
    let listing = |result: &str| sample(&inventory, "petstore_cache_requests_total", &[("result", result)]);
    assert!(listing("miss") >= 1.0 && listing("hit") >= 1.0, "{inventory}");
    assert_eq!(sample(&inventory, "petstore_cache_up", &[]), 1.0);
}
