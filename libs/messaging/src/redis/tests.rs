//! Unit tests of the codec, the reply parsing and the URL redaction, and tests against the
//! server of `REDIS_URL` (default `redis://127.0.0.1:6379`) of what the conformance suite
//! does not reach: handing messages back on close or drop, taking over a crashed consumer's
//! messages, cancelled reads, malformed entries, trimming, replay, lost groups.

use std::time::{Duration, Instant};

use ::redis::Value;
use bytes::Bytes;

use super::{
    publisher::{DATA, text_fields},
    subscriber::{RELEASED, decode, read_reply},
    *,
};
use crate::{Bus, Delivery, HandlerError, MessageContext, MessagingConfig, test_support::receive_n};

fn envelope(label: &str) -> Envelope {
    let message = contracts::inventory::GetPetStatus { pet_id: label.to_owned() };
    Envelope::from_message("/petstore/test", &message, &MessageContext::correlated("corr-1")).expect("encode")
}

fn label(envelope: &Envelope) -> String {
    envelope.decode::<contracts::inventory::GetPetStatus>().expect("a test message").pet_id
}

fn labels(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| label(&d.envelope)).collect()
}

fn url() -> String {
    std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// Settings for the test server that keep redelivery waits short.
fn settings() -> RedisConfig {
    RedisConfig { block_ms: 100, ..RedisConfig::new(url()) }
}

async fn backend(config: RedisConfig) -> RedisBackend {
    RedisBackend::connect(&config).await.expect("connect to Redis")
}

/// A fresh channel name, so that tests never share a stream.
fn fresh(what: &str) -> String {
    format!("t{}.{what}", uuid::Uuid::now_v7().simple())
}

fn group(name: &str) -> SubscribeOptions {
    SubscribeOptions { group: Some(name.to_owned()), start: StartFrom::Earliest }
}

/// Runs a command on the backend's shared connection.
async fn run(backend: &RedisBackend, cmd: &mut ::redis::Cmd) -> Value {
    backend.shared.run(cmd, || "test command".to_owned()).await.expect("test command")
}

/// Asserts that nothing arrives for a while.
async fn assert_nothing_more(consumer: &mut Box<dyn Consumer>) {
    let more = tokio::time::timeout(Duration::from_millis(400), consumer.receive(10, Duration::ZERO)).await;
    let labels = more.map(|r| r.map(|d| labels(&d)));
    assert!(labels.is_err(), "unexpected deliveries: {labels:?}");
}

async fn publish_all(backend: &RedisBackend, channel: &str, labels: &[&str]) {
    for l in labels {
        backend.publish(channel, &envelope(l)).await.expect("publish");
    }
}

/// How many entries of the group are pending, per consumer.
async fn pending(backend: &RedisBackend, channel: &str, group: &str) -> Vec<(String, i64)> {
    let reply = run(backend, ::redis::cmd("XPENDING").arg(stream_key(channel)).arg(group)).await;
    let Value::Array(parts) = reply else { panic!("XPENDING reply {reply:?}") };
    match parts.into_iter().nth(3) {
        Some(Value::Array(consumers)) => consumers
            .into_iter()
            .map(|c| ::redis::from_redis_value::<(String, i64)>(c).expect("consumer and count"))
            .collect(),
        _ => Vec::new(),
    }
}

async fn consumer_names(backend: &RedisBackend, channel: &str, group: &str) -> Vec<String> {
    let reply = run(backend, ::redis::cmd("XINFO").arg("CONSUMERS").arg(stream_key(channel)).arg(group)).await;
    let consumers: Vec<std::collections::HashMap<String, Value>> =
        ::redis::from_redis_value(reply).expect("XINFO CONSUMERS");
    consumers.iter().map(|c| ::redis::from_redis_value_ref::<String>(&c["name"]).expect("name")).collect()
}

// ---------------------------------------------------------------------------------------
// Without a server
// ---------------------------------------------------------------------------------------

fn entry_fields(env: &Envelope) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> =
        text_fields(env).into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect();
    fields.push((DATA.as_bytes().to_vec(), env.data.to_vec()));
    fields
}

#[test]
fn an_envelope_survives_the_entry_fields_round_trip() {
    let mut env = envelope("cat-1");
    env.reply_to = Some("replies.x".into());
    env.causation_id = Some("cause".into());
    env.extensions.insert(crate::DLQ_ATTEMPTS.into(), "3".into());
    env.data_content_type = "application/octet-stream".into();
    env.data = Bytes::from_static(&[0xff, 0x00, 0xfe]);
    assert_eq!(decode(entry_fields(&env)).expect("decode"), env);
}

#[test]
fn an_entry_without_the_required_attributes_is_malformed() {
    let err = decode(vec![(b"ce_id".to_vec(), b"not-a-uuid".to_vec())]).expect_err("must fail");
    assert!(matches!(err, BusError::Codec(_)), "{err}");
    let err = decode(vec![(b"something".to_vec(), b"else".to_vec())]).expect_err("must fail");
    assert!(err.to_string().contains("`id`"), "{err}");
    let err = decode(vec![(b"ce_source".to_vec(), vec![0xff, 0xfe])]).expect_err("must fail");
    assert!(err.to_string().contains("ce_source"), "{err}");
}

#[test]
fn read_replies_are_parsed_in_both_protocols_and_trimmed_entries_have_no_fields() {
    let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
    let live = Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("f"), bulk("v")])]);
    let trimmed = Value::Array(vec![bulk("2-0"), Value::Nil]);
    let resp2 =
        Value::Array(vec![Value::Array(vec![bulk("bus:c"), Value::Array(vec![live.clone(), trimmed.clone()])])]);
    let resp3 = Value::Map(vec![(bulk("bus:c"), Value::Array(vec![live, trimmed]))]);
    for reply in [resp2, resp3] {
        let entries = read_reply(reply, "test").expect("parse");
        assert_eq!(entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["1-0", "2-0"]);
        assert_eq!(entries[0].fields, Some(vec![(b"f".to_vec(), b"v".to_vec())]));
        assert_eq!(entries[1].fields, None);
    }
    assert!(read_reply(Value::Nil, "test").expect("a wait that ended empty").is_empty());
    assert!(read_reply(Value::Int(3), "test").is_err());
}

#[test]
fn credentials_never_show_in_the_url_of_a_message() {
    assert_eq!(crate::redact::url("redis://user:secret@redis:6379/2"), "redis://redis:6379/2");
    assert_eq!(crate::redact::url("redis://:secret@redis"), "redis://redis");
    assert_eq!(crate::redact::url("redis://redis:6379/0?password=secret"), "redis://redis:6379/0");
    assert_eq!(crate::redact::url("redis+unix:///run/redis.sock?pass=secret"), "redis+unix:///run/redis.sock");
}

#[test]
fn a_lost_connection_is_transient() {
    let lost = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    assert!(redis_error("publish", &lost).is_retriable());
}

// ---------------------------------------------------------------------------------------
// Against the server
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_fast_naming_the_url_without_credentials() {
    let config = RedisConfig { operation_timeout_ms: 2_000, ..RedisConfig::new("redis://user:secret@127.0.0.1:1/0") };
    let started = Instant::now();
    let err = RedisBackend::connect(&config).await.err().expect("nothing listens on port 1").to_string();
    assert!(started.elapsed() < Duration::from_secs(5), "gave up after {:?}", started.elapsed());
    assert!(err.contains("redis") && err.contains("redis://127.0.0.1:1/0"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_the_connection_is_reported_at_once_with_its_reason() {
    let config = RedisConfig { operation_timeout_ms: 3_000, ..settings() };
    let wrong_db = format!("{}/99", config.url.trim_end_matches('/'));
    let started = Instant::now();
    let err = RedisBackend::connect(&RedisConfig { url: wrong_db, ..config }).await.err().expect("no database 99");
    assert!(started.elapsed() < Duration::from_secs(1), "reported after {:?}", started.elapsed());
    assert!(err.to_string().contains("/99") && err.to_string().contains("DB index"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_survives_the_round_trip_through_a_stream() {
    let redis = backend(settings()).await;
    let channel = fresh("roundtrip");
    redis.declare(&channel, 3).await.expect("declare");
    let mut env = envelope("cat-1");
    env.reply_to = Some("replies.x".into());
    env.extensions.insert("custom".into(), "x".into());
    env.data_content_type = "application/octet-stream".into();
    env.data = Bytes::from_static(&[0, 159, 146, 150]);
    redis.publish(&channel, &env).await.expect("publish");
    let options = SubscribeOptions { group: None, start: StartFrom::Earliest };
    let mut consumer = redis.subscribe(&channel, options).await.expect("subscribe");
    let got = receive_n(&mut consumer, 1).await;
    assert_eq!(got[0].envelope, env);
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_a_stream_is_a_configuration_error() {
    let redis = backend(settings()).await;
    let channel = fresh("string");
    run(&redis, ::redis::cmd("SET").arg(stream_key(&channel)).arg("v").arg("EX").arg(60)).await;
    let err = redis.declare(&channel, 1).await.expect_err("a string key");
    assert!(matches!(&err, BusError::Config(m) if m.contains("holds a string")), "{err}");
    let err = redis.publish(&channel, &envelope("x")).await.expect_err("WRONGTYPE");
    assert!(!err.is_retriable(), "no retry can fix a key of another type: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_replays_the_retained_stream_and_a_latest_one_starts_at_the_end() {
    let redis = backend(settings()).await;
    let channel = fresh("replay");
    publish_all(&redis, &channel, &["old-1", "old-2"]).await;

    let mut earliest = redis.subscribe(&channel, group("earliest")).await.expect("subscribe");
    let latest = SubscribeOptions { group: Some("latest".into()), start: StartFrom::Latest };
    let mut latest = redis.subscribe(&channel, latest).await.expect("subscribe");
    let private = SubscribeOptions { group: None, start: StartFrom::Latest };
    let mut private = redis.subscribe(&channel, private).await.expect("subscribe");
    publish_all(&redis, &channel, &["new-1"]).await;

    assert_eq!(labels(&receive_n(&mut earliest, 3).await), ["old-1", "old-2", "new-1"]);
    assert_eq!(labels(&receive_n(&mut latest, 1).await), ["new-1"]);
    assert_eq!(labels(&receive_n(&mut private, 1).await), ["new-1"]);
    assert_nothing_more(&mut latest).await;
    for consumer in [earliest, latest, private] {
        consumer.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_consumer_hands_its_unacknowledged_messages_to_the_group_at_once() {
    // Far longer than the test: what comes back comes back because it was handed back.
    let redis = backend(RedisConfig { claim_idle_ms: 600_000, ..settings() }).await;
    let channel = fresh("handback");
    let mut first = redis.subscribe(&channel, group("workers")).await.expect("subscribe");
    publish_all(&redis, &channel, &["a", "b", "c"]).await;
    let got = receive_n(&mut first, 3).await;
    first.ack(&got[0]).await.expect("ack a");
    first.close().await;
    assert_eq!(pending(&redis, &channel, "workers").await, [(RELEASED.to_owned(), 2)]);

    let mut second = redis.subscribe(&channel, group("workers")).await.expect("subscribe");
    let started = Instant::now();
    let again = receive_n(&mut second, 2).await;
    assert_eq!(labels(&again), ["b", "c"]);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    for d in &again {
        second.ack(d).await.expect("ack");
    }
    assert_nothing_more(&mut second).await;
    assert!(pending(&redis, &channel, "workers").await.is_empty());
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_dropped_without_close_hands_back_too() {
    let redis = backend(RedisConfig { claim_idle_ms: 600_000, ..settings() }).await;
    let channel = fresh("dropped");
    let mut waiting = redis.subscribe(&channel, group("workers")).await.expect("subscribe");
    let mut first = redis.subscribe(&channel, group("workers")).await.expect("subscribe");
    publish_all(&redis, &channel, &["a"]).await;
    // Whichever consumer got it: drop the first; if it held "a", the other gets it.
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::select! {
            got = first.receive(1, Duration::ZERO) => (true, got),
            got = waiting.receive(1, Duration::ZERO) => (false, got),
        }
    })
    .await
    .expect("a delivery");
    let (by_first, got) = (got.0, got.1.expect("receive"));
    assert_eq!(labels(&got), ["a"]);
    if by_first {
        drop(first);
        assert_eq!(labels(&receive_n(&mut waiting, 1).await), ["a"]);
    } else {
        drop(waiting);
        assert_eq!(labels(&receive_n(&mut first, 1).await), ["a"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_consumers_messages_are_taken_over_after_claim_idle_ms() {
    let claim_idle = Duration::from_millis(500);
    let redis = backend(RedisConfig { claim_idle_ms: 500, ..settings() }).await;
    let channel = fresh("crash");
    redis.ensure_group(&channel, "workers").await.expect("group");
    publish_all(&redis, &channel, &["a", "b"]).await;
    // A consumer that reads and dies without a word.
    let crashed = ::redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("crashed")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(stream_key(&channel))
        .arg(">")
        .clone();
    run(&redis, &mut crashed.clone()).await;
    let taken = Instant::now();

    let mut survivor = redis.subscribe(&channel, group("workers")).await.expect("subscribe");
    let got = receive_n(&mut survivor, 2).await;
    assert_eq!(labels(&got), ["a", "b"]);
    assert!(taken.elapsed() >= claim_idle, "taken over after only {:?}", taken.elapsed());
    for d in &got {
        survivor.ack(d).await.expect("ack");
    }
    assert!(pending(&redis, &channel, "workers").await.is_empty());

    // Once it holds nothing, the dead consumer is removed from the group.
    let deadline = Instant::now() + Duration::from_secs(5);
    while consumer_names(&redis, &channel, "workers").await.contains(&"crashed".to_owned()) {
        assert!(Instant::now() < deadline, "the crashed consumer is still in the group");
        let _ = tokio::time::timeout(Duration::from_millis(200), survivor.receive(1, Duration::ZERO)).await;
    }
    survivor.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_receive_loses_nothing() {
    let redis = backend(RedisConfig { block_ms: 2_000, claim_idle_ms: 600_000, ..settings() }).await;
    let channel = fresh("cancelled");
    let mut consumer = redis.subscribe(&channel, group("workers")).await.expect("subscribe");
    // Cancelled while its blocking read waits on the server; the read is then served.
    let nothing = tokio::time::timeout(Duration::from_millis(200), consumer.receive(10, Duration::ZERO)).await;
    assert!(nothing.is_err(), "nothing was published yet");
    publish_all(&redis, &channel, &["a"]).await;
    let got = receive_n(&mut consumer, 1).await;
    assert_eq!(labels(&got), ["a"]);
    consumer.ack(&got[0]).await.expect("ack");
    assert_nothing_more(&mut consumer).await;
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_are_acknowledged_and_skipped() {
    let redis = backend(settings()).await;
    let channel = fresh("malformed");
    let mut consumer = redis.subscribe(&channel, group("workers")).await.expect("subscribe");
    run(&redis, ::redis::cmd("XADD").arg(stream_key(&channel)).arg("*").arg("garbage").arg("1")).await;
    publish_all(&redis, &channel, &["valid"]).await;
    let got = receive_n(&mut consumer, 1).await;
    assert_eq!(labels(&got), ["valid"]);
    consumer.ack(&got[0]).await.expect("ack");
    assert!(pending(&redis, &channel, "workers").await.is_empty(), "the malformed entry was acknowledged");
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_trimmed_to_about_max_len() {
    let redis = backend(RedisConfig { max_len: 10, ..settings() }).await;
    let channel = fresh("trimmed");
    for n in 0..300 {
        redis.publish(&channel, &envelope(&format!("m{n}"))).await.expect("publish");
    }
    let Value::Int(len) = run(&redis, ::redis::cmd("XLEN").arg(stream_key(&channel))).await else {
        panic!("XLEN is an integer")
    };
    // `~` trims whole nodes of the stream (100 entries by default).
    assert!((10..=110).contains(&len), "{len} entries kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_deleted_on_the_server_is_created_again() {
    let redis = backend(settings()).await;
    let channel = fresh("lostgroup");
    let mut consumer = redis.subscribe(&channel, group("workers")).await.expect("subscribe");
    run(&redis, ::redis::cmd("XGROUP").arg("DESTROY").arg(stream_key(&channel)).arg("workers")).await;
    publish_all(&redis, &channel, &["after"]).await;
    let got = receive_n(&mut consumer, 1).await;
    assert_eq!(labels(&got), ["after"]);
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_bus_leaves_no_reply_stream_behind() {
    let prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
    let config: MessagingConfig = serde_json::from_value(serde_json::json!({
        "default_backend": "redis",
        "topic_prefix": prefix,
        "redis": { "url": url(), "block_ms": 100 },
        "channels": { "queries": { "pattern": "request_response", "partitions": 1 } },
    }))
    .expect("config");
    let backends = crate::Backends::connect(&config).await.expect("connect");
    let bus = Bus::new(&backends, &config, "client", tokio_util::sync::CancellationToken::new()).await.expect("bus");
    bus.serve("queries", "server", |request: Envelope| async move {
        Envelope::from_message(
            "/petstore/test",
            &request.decode::<contracts::inventory::GetPetStatus>()?,
            &MessageContext::caused_by(&request),
        )
        .map_err(HandlerError::fatal)
    })
    .await
    .expect("serve");
    bus.request("queries", envelope("cat"), Duration::from_secs(10)).await.expect("a reply");
    let redis = backend(settings()).await;
    let mut keys = ::redis::cmd("KEYS");
    keys.arg(format!("{KEY_PREFIX}{prefix}replies.*"));
    let scan = || async { redis.shared.run::<Vec<String>>(&keys, || "KEYS".into()).await.expect("KEYS") };
    assert_eq!(scan().await.len(), 1, "the reply stream exists while the bus runs");
    bus.close().await;
    assert!(scan().await.is_empty(), "the reply stream is deleted on close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_channel_deletes_its_stream_and_removing_it_again_is_harmless() {
    let redis = backend(settings()).await;
    let channel = fresh("removed");
    redis.ensure_group(&channel, "g").await.expect("group");
    publish_all(&redis, &channel, &["a"]).await;
    redis.remove(&channel).await.expect("remove");
    let exists = run(&redis, ::redis::cmd("EXISTS").arg(stream_key(&channel))).await;
    assert_eq!(exists, Value::Int(0));
    redis.remove(&channel).await.expect("remove again");
    // Declared anew, the group is created anew.
    redis.ensure_group(&channel, "g").await.expect("group again");
    assert!(pending(&redis, &channel, "g").await.is_empty());
}
