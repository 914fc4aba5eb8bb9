//! Dead letters through the orchestrator's API, on PostgreSQL and in memory: a message a
//! consumer gives up on is stored with its error, attempts and origin, listed newest first,
//! replayed through the outbox back to its channel once (again only when forced), and
//! counted by the dead-letter gauges.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use contracts::{channels, inventory::GetPetStatus};
use http_body_util::BodyExt;
use kit::ServiceContext;
use messaging::{BackendKind, Bus, Consumer, Envelope, HandlerError, MessageContext, SubscribeOptions};
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(15);

/// The channel the test's consumer gives up on: pub/sub, so a raw observer group sees every
/// publication of it (the orchestrator's own group ignores these messages).
const CHANNEL: &str = channels::ORDER_EVENTS;

async fn call(router: &Router, method: Method, uri: &str) -> (StatusCode, String, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", kit::testing::bearer("ops", &["admin"]))
        .body(Body::empty())
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, content_type, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Polls `check` until it gives a value; fails with `what` after [`PATIENCE`].
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message nobody on `CHANNEL` handles, keyed alike so the letters keep their order.
fn message(n: usize) -> Envelope {
    let mut env = Envelope::from_message(
        "/test",
        &GetPetStatus { pet_id: format!("pet-{n}") },
        &MessageContext::correlated("dlq"),
    )
    .expect("encode");
    env.partition_key = Some("dlq".into());
    env
}

/// The value of a gauge with one `channel` label in the process's Prometheus text.
fn gauge(name: &str, channel: &str) -> Option<f64> {
    let text = kit::telemetry::metrics_handle().expect("the test's recorder").render();
    let prefix = format!("{name}{{channel=\"{channel}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok())
}

/// Receives from a raw consumer until nothing more comes for `quiet`; counts each id.
async fn drain(observer: &mut Box<dyn Consumer>, seen: &mut HashMap<Uuid, Vec<Envelope>>, quiet: Duration) {
    while let Ok(batch) = tokio::time::timeout(quiet, observer.receive(16, Duration::ZERO)).await {
        for d in batch.expect("receive") {
            observer.ack(&d).await.expect("ack");
            seen.entry(d.envelope.id).or_default().push(d.envelope);
        }
    }
}

async fn a_dead_letter_is_listed_then_replayed_once_unless_forced(ctx: ServiceContext) {
    let service = orchestrator::start(&ctx).await.expect("start the orchestrator");
    // Through the gate, as served: the dead-letter routes are the admin's.
    let router = kit::http::layers(service.router, &ctx.gate);
    assert_eq!(gauge("petstore_dead_letters", channels::PAYMENT_COMMANDS), Some(0.0), "exported from the start");

    // Every publication on the channel, as the transport delivers it (no deduplication).
    let backend = ctx.backends.get(BackendKind::Memory).expect("the memory bus");
    let physical = format!("{}{CHANNEL}", ctx.settings.messaging.topic_prefix);
    let group = SubscribeOptions { group: Some("observer".into()), start: messaging::StartFrom::Earliest };
    let mut observer = backend.subscribe(&physical, group).await.expect("observe");

    // A consumer that fails the first delivery of each message, and every delivery of the
    // second one, fatally.
    let bus = Bus::new(&ctx.backends, &ctx.settings.messaging, "auditor", ctx.shutdown.clone()).await.expect("bus");
    let messages = [message(1), message(2), message(3)];
    let always_failing = messages[1].id;
    let attempts: Arc<Mutex<HashMap<Uuid, u32>>> = Arc::default();
    let handler = {
        let attempts = attempts.clone();
        move |env: Envelope| {
            let mut attempts = attempts.lock().expect("attempts");
            let n = attempts.entry(env.id).or_default();
            *n += 1;
            let result = if *n == 1 || env.id == always_failing {
                Err(HandlerError::fatal(format!("no handler for {}", env.event_type)))
            } else {
                Ok(())
            };
            std::future::ready(result)
        }
    };
    bus.subscribe(CHANNEL, "auditor", handler).await.expect("subscribe");
    for m in &messages {
        bus.publish(CHANNEL, m).await.expect("publish");
    }

    // Listed newest first, with why and where from, in pages.
    let page = eventually("three dead letters listed", async || {
        let (_, _, page) = call(&router, Method::GET, "/admin/dlq?limit=2").await;
        (page["items"].as_array().map(Vec::len) == Some(2) && page["next_cursor"].is_string()).then_some(page)
    })
    .await;
    let ids = |page: &Value| -> Vec<String> {
        page["items"].as_array().into_iter().flatten().map(|l| l["id"].as_str().unwrap_or("").to_owned()).collect()
    };
    assert_eq!(ids(&page), [messages[2].id.to_string(), messages[1].id.to_string()], "{page}");
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let (status, _, rest) = call(&router, Method::GET, &format!("/admin/dlq?limit=2&cursor={cursor}")).await;
    assert_eq!((status, ids(&rest)), (StatusCode::OK, vec![messages[0].id.to_string()]), "{rest}");
    assert!(rest["next_cursor"].is_null(), "{rest}");

    let id = messages[0].id;
    let (status, _, letter) = call(&router, Method::GET, &format!("/admin/dlq/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{letter}");
    assert_eq!(letter["channel"], CHANNEL);
    assert_eq!(letter["group"], "auditor");
    assert_eq!(letter["error"], "no handler for petstore.inventory.get-pet-status.v1");
    assert_eq!(letter["attempts"], 1);
    assert_eq!(letter["message_type"], "petstore.inventory.get-pet-status.v1");
    assert_eq!(letter["message"]["id"], id.to_string());
    assert_eq!(letter["message"]["data"]["pet_id"], "pet-1");
    assert!(letter["message"].get("dlqerror").is_none(), "the original message: {letter}");
    assert!(letter["dead_lettered_at"].is_string() && letter["replayed_at"].is_null(), "{letter}");
    assert_eq!(letter["replay_count"], 0);
    let waiting = gauge("petstore_dead_letters", CHANNEL);
    assert_eq!(waiting, Some(3.0));
    assert!(gauge("petstore_dead_letter_oldest_age_seconds", CHANNEL).is_some_and(|age| age >= 0.0));

    // Replayed: back on its channel with its id; its consumer now handles it.
    let (status, _, replay) = call(&router, Method::POST, &format!("/admin/dlq/{id}/replay")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replay}");
    assert_eq!((replay["id"].as_str(), &replay["replay_count"]), (Some(id.to_string().as_str()), &Value::from(1)));
    let replayed_at = replay["replayed_at"].clone();
    assert!(replayed_at.is_string(), "{replay}");
    let mut seen = HashMap::new();
    eventually("the replay on its channel", async || {
        drain(&mut observer, &mut seen, Duration::from_millis(50)).await;
        (seen.get(&id).map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    let again = &seen[&id][1];
    assert!(again.extensions.keys().all(|k| !k.starts_with("dlq")), "{:?}", again.extensions);
    assert_eq!(again.data, messages[0].data);
    eventually("handled on replay", async || (attempts.lock().expect("attempts")[&id] == 2).then_some(())).await;
    let (_, _, letter) = call(&router, Method::GET, &format!("/admin/dlq/{id}")).await;
    assert_eq!((&letter["replayed_at"], &letter["replay_count"]), (&replayed_at, &Value::from(1)), "{letter}");
    assert_eq!(gauge("petstore_dead_letters", CHANNEL), Some(2.0));

    // A second replay publishes nothing and answers with the first; forced, it publishes.
    let (status, _, second) = call(&router, Method::POST, &format!("/admin/dlq/{id}/replay")).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!((&second["replayed_at"], &second["replay_count"]), (&replayed_at, &Value::from(1)));
    let (status, _, forced) = call(&router, Method::POST, &format!("/admin/dlq/{id}/replay?force=true")).await;
    assert_eq!((status, &forced["replay_count"]), (StatusCode::ACCEPTED, &Value::from(2)), "{forced}");
    // The outbox keeps order: had the second replay published, it would come before this one.
    eventually("the forced replay", async || {
        drain(&mut observer, &mut seen, Duration::from_millis(50)).await;
        (seen.get(&id).map(Vec::len) >= Some(3)).then_some(())
    })
    .await;
    drain(&mut observer, &mut seen, Duration::from_millis(500)).await;
    assert_eq!(seen[&id].len(), 3, "published, replayed, force-replayed; the second replay published nothing");

    // Filters: replayed or waiting, by channel.
    let (_, _, replayed) = call(&router, Method::GET, "/admin/dlq?replayed=true").await;
    assert_eq!(ids(&replayed), [id.to_string()], "{replayed}");
    let (_, _, waiting) = call(&router, Method::GET, &format!("/admin/dlq?replayed=false&channel={CHANNEL}")).await;
    assert_eq!(ids(&waiting), [messages[2].id.to_string(), messages[1].id.to_string()], "{waiting}");
    let (_, _, elsewhere) = call(&router, Method::GET, "/admin/dlq?channel=payment-events").await;
    assert_eq!(ids(&elsewhere), Vec::<String>::new());

    // A message that fails again after its replay is stored again and waits again.
    let failing = messages[1].id;
    let (status, _, _) = call(&router, Method::POST, &format!("/admin/dlq/{failing}/replay")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let letter = eventually("dead-lettered again", async || {
        let (_, _, letter) = call(&router, Method::GET, &format!("/admin/dlq/{failing}")).await;
        letter["replayed_at"].is_null().then_some(letter).filter(|l| l["replay_count"] == 1)
    })
    .await;
    assert_eq!(attempts.lock().expect("attempts")[&failing], 2, "{letter}");

    // Unknown letters, bad parameters.
    for (method, uri) in [
        (Method::GET, format!("/admin/dlq/{}", Uuid::now_v7())),
        (Method::GET, "/admin/dlq/not-a-uuid".to_owned()),
        (Method::POST, format!("/admin/dlq/{}/replay", Uuid::now_v7())),
    ] {
        let (status, content_type, problem) = call(&router, method.clone(), &uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{method} {uri}");
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains("no dead letter")), "{problem}");
    }
    for (uri, expected) in [
        ("/admin/dlq?limit=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("/admin/dlq?channel=nowhere", StatusCode::UNPROCESSABLE_ENTITY),
        ("/admin/dlq?replayed=maybe", StatusCode::BAD_REQUEST),
        ("/admin/dlq?cursor=garbage", StatusCode::BAD_REQUEST),
    ] {
        let (status, _, problem) = call(&router, Method::GET, uri).await;
        assert_eq!(status, expected, "{uri}: {problem}");
    }
    let (status, _, problem) = call(&router, Method::POST, &format!("/admin/dlq/{id}/replay?force=yes")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");

    observer.close().await;
    ctx.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dead_letter_is_listed_then_replayed_once_unless_forced() {
    let (ctx, _) = kit::testing::postgres_context("").await;
    a_dead_letter_is_listed_then_replayed_once_unless_forced(ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_dead_letter_is_listed_then_replayed_once_unless_forced() {
    let ctx = kit::testing::context("").await;
    a_dead_letter_is_listed_then_replayed_once_unless_forced(ctx).await;
}
