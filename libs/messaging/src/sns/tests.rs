//! Tests against the SNS/SQS emulator of `SNS_ENDPOINT` (default moto on 127.0.0.1:5055).

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::*;
use crate::{Delivery, MessageContext, StartFrom, backend::Receipt};

const PATIENCE: Duration = Duration::from_secs(20);

fn emulator() -> SnsConfig {
    let endpoint = std::env::var("SNS_ENDPOINT").ok().filter(|e| !e.is_empty());
    SnsConfig {
        endpoint_url: Some(endpoint.unwrap_or_else(|| "http://127.0.0.1:5055".into())),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test-secret-never-shown".into()),
        ..SnsConfig::new("us-east-1")
    }
}

/// A fresh channel and group name, so that tests never share a topic or a queue.
fn names() -> (String, String) {
    let prefix = format!("t{}.", Uuid::now_v7().simple());
    (format!("{prefix}events"), format!("{prefix}group"))
}

fn message(key: &str, n: usize) -> Envelope {
    let mut env = Envelope::from_message(
        "/petstore/test",
        &contracts::inventory::GetPetStatus { pet_id: format!("{key}-{n}") },
        &MessageContext::default(),
    )
    .expect("encode");
    env.partition_key = Some(key.to_owned());
    env
}

fn group(name: &str) -> SubscribeOptions {
    SubscribeOptions { group: Some(name.to_owned()), start: StartFrom::Earliest }
}

/// Receives until `wanted` messages are in hand (acknowledging none).
#[track_caller]
fn receive_n(consumer: &mut Box<dyn Consumer>, wanted: usize) -> impl Future<Output = Vec<Delivery>> + '_ {
    let caller = std::panic::Location::caller();
    receive_n_at(consumer, wanted, caller)
}

async fn receive_n_at(
    consumer: &mut Box<dyn Consumer>,
    wanted: usize,
    caller: &'static std::panic::Location<'static>,
) -> Vec<Delivery> {
    let mut got = Vec::new();
    while got.len() < wanted {
        let batch = tokio::time::timeout(PATIENCE, consumer.receive(10, Duration::ZERO))
            .await
            .unwrap_or_else(|_| panic!("{caller}: {wanted} messages within {PATIENCE:?}, got {}", got.len()))
            .expect("receive");
        got.extend(batch);
    }
    got
}

/// (visible, in flight) messages of the queue at `url`.
async fn queue_counts(backend: &SnsBackend, url: &str) -> (u32, u32) {
    let (waiting, in_flight) =
        backend.queue_counts(url, url).await.expect("queue attributes").expect("the queue exists");
    (u32::try_from(waiting).expect("count"), u32::try_from(in_flight).expect("count"))
}

/// Polls the queue at `url` until it holds `expected` (visible, in flight) messages.
async fn until_counts(backend: &SnsBackend, url: &str, expected: (u32, u32), within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let counts = queue_counts(backend, url).await;
        if counts == expected {
            return;
        }
        assert!(Instant::now() < deadline, "queue holds {counts:?}, not {expected:?}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn queue_exists(backend: &SnsBackend, url: &str) -> bool {
    backend.sqs.get_queue_attributes().queue_url(url).send().await.is_ok()
}

#[tokio::test]
async fn connect_fails_fast_and_names_the_endpoint_without_secrets() {
    let config = SnsConfig {
        endpoint_url: Some("http://key:password@127.0.0.1:1".into()),
        operation_timeout_ms: 2_000,
        ..emulator()
    };
    let started = Instant::now();
    let err = SnsBackend::connect(&config).await.err().expect("nothing listens on port 1");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "failed after {elapsed:?}");
    let text = err.to_string();
    assert!(text.starts_with("sns backend:") && text.contains("http://127.0.0.1:1"), "{text}");
    for secret in ["password", "test-secret-never-shown"] {
        assert!(!text.contains(secret) && !format!("{err:?}").contains(secret), "{text}");
    }
    assert!(err.is_retriable(), "an unreachable server may come back: {err}");
}

#[tokio::test]
async fn a_group_keeps_what_is_published_before_its_first_consumer_and_nothing_older() {
    let backend = SnsBackend::connect(&emulator()).await.expect("connect");
    let (channel, name) = names();
    backend.declare(&channel, 3).await.expect("declare");
    let too_early = message("k", 0);
    backend.publish(&channel, &too_early).await.expect("publish before the group exists");
    backend.ensure_group(&channel, &name).await.expect("ensure_group");
    backend.ensure_group(&channel, &name).await.expect("ensure_group is idempotent");
    let kept = message("k", 1);
    backend.publish(&channel, &kept).await.expect("publish");

    let mut consumer = backend.subscribe(&channel, group(&name)).await.expect("subscribe");
    let got = receive_n(&mut consumer, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope, kept, "the envelope comes back equal");
    consumer.ack(&got[0]).await.expect("ack");
    let nothing = tokio::time::timeout(Duration::from_secs(2), consumer.receive(10, Duration::ZERO)).await;
    assert!(nothing.is_err(), "no replay: the message published before the group exists is not delivered");
    consumer.close().await;
}

#[tokio::test]
async fn closing_releases_unacknowledged_messages_to_the_group_at_once() {
    let backend = SnsBackend::connect(&emulator()).await.expect("connect");
    let (channel, name) = names();
    backend.ensure_group(&channel, &name).await.expect("ensure_group");
    let sent: Vec<Envelope> = (0..4).map(|n| message("order-1", n)).collect();
    for m in &sent {
        backend.publish(&channel, m).await.expect("publish");
    }

    let mut first = backend.subscribe(&channel, group(&name)).await.expect("subscribe");
    let got = receive_n(&mut first, 4).await;
    assert_eq!(got.iter().map(|d| d.envelope.id).collect::<Vec<_>>(), sent.iter().map(|m| m.id).collect::<Vec<_>>());
    first.ack(&got[0]).await.expect("ack the first");
    // Nobody else gets a message of this key while the first consumer holds its messages.
    let url = backend.group_queue(&channel, &name).await.expect("group");
    let peek = backend.sqs.receive_message().queue_url(&*url).max_number_of_messages(10).send().await.expect("peek");
    assert!(peek.messages.unwrap_or_default().is_empty(), "messages of a key in flight stay with their consumer");

    first.close().await;
    let mut second = backend.subscribe(&channel, group(&name)).await.expect("subscribe a second consumer");
    let started = Instant::now();
    let again = receive_n(&mut second, 3).await;
    assert!(started.elapsed() < Duration::from_secs(5), "well before the 30 s visibility timeout");
    let ids: Vec<Uuid> = again.iter().map(|d| d.envelope.id).collect();
    assert_eq!(ids, sent[1..].iter().map(|m| m.id).collect::<Vec<_>>(), "in publication order");
    for d in &again {
        second.ack(d).await.expect("ack");
    }
    second.close().await;
}

#[tokio::test]
async fn a_dropped_receive_loses_nothing() {
    // Short long polls: moto lets a poll that starts while a message group is in flight skip
    // that group for its whole wait (see the module docs), which would only slow this test.
    let backend = SnsBackend::connect(&SnsConfig { wait_time_secs: 2, ..emulator() }).await.expect("connect");
    let (channel, name) = names();
    let mut consumer = backend.subscribe(&channel, group(&name)).await.expect("subscribe");
    // The long poll started here outlives the dropped call.
    let dropped = tokio::time::timeout(Duration::from_millis(300), consumer.receive(10, Duration::ZERO)).await;
    assert!(dropped.is_err(), "nothing published yet");
    let sent = message("k", 1);
    backend.publish(&channel, &sent).await.expect("publish");
    let got = receive_n(&mut consumer, 1).await;
    assert_eq!(got[0].envelope.id, sent.id);
    consumer.ack(&got[0]).await.expect("ack");

    // Closed while a poll is still running: what that poll receives goes back to the group at
    // once, not after the 30 s visibility timeout.
    let dropped = tokio::time::timeout(Duration::from_millis(300), consumer.receive(10, Duration::ZERO)).await;
    assert!(dropped.is_err(), "nothing published since");
    consumer.close().await;
    let after = message("k", 2);
    let published = Instant::now();
    backend.publish(&channel, &after).await.expect("publish");
    let mut next = backend.subscribe(&channel, group(&name)).await.expect("subscribe again");
    let got = receive_n(&mut next, 1).await;
    assert_eq!(got[0].envelope.id, after.id);
    assert!(published.elapsed() < Duration::from_secs(10), "released after {:?}", published.elapsed());
    next.close().await;
}

#[tokio::test]
async fn receive_gathers_a_batch_within_max_wait() {
    let backend = SnsBackend::connect(&emulator()).await.expect("connect");
    let (channel, name) = names();
    let mut consumer = backend.subscribe(&channel, group(&name)).await.expect("subscribe");
    let sent: Vec<Envelope> = (0..15).map(|n| message(&format!("k{n}"), n)).collect();
    for m in &sent {
        backend.publish(&channel, m).await.expect("publish");
    }
    // More than one ReceiveMessage returns: the batch is gathered from several polls.
    let started = Instant::now();
    let batch = consumer.receive(15, Duration::from_millis(1_500)).await.expect("receive");
    assert_eq!(batch.len(), 15, "gathered from two polls");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // Nothing more: the wait ends at max_wait.
    let late = message("late", 0);
    let (publish, next) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            backend.publish(&channel, &late).await
        },
        async {
            let started = Instant::now();
            let batch = consumer.receive(10, Duration::from_millis(700)).await;
            (batch, started.elapsed())
        }
    );
    publish.expect("publish");
    let (batch, elapsed) = next;
    assert_eq!(batch.expect("receive").iter().map(|d| d.envelope.id).collect::<Vec<_>>(), [late.id]);
    assert!(elapsed >= Duration::from_millis(700) && elapsed < Duration::from_secs(2), "{elapsed:?}");
    consumer.close().await;
}

#[tokio::test]
async fn a_private_subscription_gets_everything_and_its_queue_goes_on_close() {
    let backend = SnsBackend::connect(&emulator()).await.expect("connect");
    let (channel, _) = names();
    backend.declare(&channel, 1).await.expect("declare");
    let mut private = backend
        .subscribe(&channel, SubscribeOptions { group: None, start: StartFrom::Earliest })
        .await
        .expect("subscribe");
    let sent = message("k", 1);
    backend.publish(&channel, &sent).await.expect("publish");
    let got = receive_n(&mut private, 1).await;
    assert_eq!(got[0].envelope, sent);
    private.ack(&got[0]).await.expect("ack");

    let prefix = names::private_queue(&channel);
    let prefix = &prefix[..prefix.len() - 38]; // without `<uuid>.fifo`
    let listed = backend.sqs.list_queues().queue_name_prefix(prefix).send().await.expect("list queues");
    let urls = listed.queue_urls.unwrap_or_default();
    assert_eq!(urls.len(), 1, "{urls:?}");
    private.close().await;
    assert!(!queue_exists(&backend, &urls[0]).await, "the private queue is deleted");
}

#[tokio::test]
async fn a_malformed_message_is_skipped_and_deleted() {
    let backend = SnsBackend::connect(&emulator()).await.expect("connect");
    let (channel, name) = names();
    let url = backend.group_queue(&channel, &name).await.expect("group");
    let topic = backend.topic(&channel).await.expect("topic");
    backend
        .sns
        .publish()
        .topic_arn(&*topic)
        .message("not a CloudEvent")
        .message_group_id("k")
        .message_deduplication_id("garbage")
        .send()
        .await
        .expect("publish garbage");
    let valid = message("k", 1);
    backend.publish(&channel, &valid).await.expect("publish");

    let mut consumer = backend.subscribe(&channel, group(&name)).await.expect("subscribe");
    let got = receive_n(&mut consumer, 1).await;
    assert_eq!(got.iter().map(|d| d.envelope.id).collect::<Vec<_>>(), [valid.id]);
    consumer.ack(&got[0]).await.expect("ack");
    consumer.close().await;
    until_counts(&backend, &url, (0, 0), PATIENCE).await;
}

#[tokio::test]
async fn a_refused_call_is_a_permanent_error_that_names_the_call() {
    let backend = SnsBackend::connect(&emulator()).await.expect("connect");
    let (channel, name) = names();
    let mut consumer = backend.subscribe(&channel, group(&name)).await.expect("subscribe");
    let forged = Delivery { envelope: message("k", 1), receipt: Receipt::Handle("not-a-receipt".into()) };
    let err = consumer.ack(&forged).await.expect_err("an unknown receipt handle");
    assert!(!err.is_retriable(), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("sns backend: acknowledge message") && text.contains("ReceiptHandleIsInvalid"), "{text}");
    consumer.close().await;
}
