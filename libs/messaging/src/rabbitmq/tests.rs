//! Unit tests of the name mapping, the codec and the error mapping, and tests against the
//! server of `RABBITMQ_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`) of what the
//! conformance suite does not reach: redelivery of a group's unacknowledged messages,
//! reconnecting after a connection loss, malformed messages, single active consumer.

use std::{
    collections::HashSet,
    io,
    net::{Shutdown, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use lapin::{
    BasicProperties,
    options::BasicPublishOptions,
    protocol::AMQPError,
    types::{FieldTable, LongString},
};

use super::*;
use crate::{
    Bus, BusError, Consumer, Delivery, MessageContext, MessagingConfig, StartFrom, StreamOptions,
    rabbitmq::publisher::properties, rabbitmq::subscriber::decode, test_support::receive_n,
};

fn envelope(label: &str) -> Envelope {
    let message = contracts::inventory::GetPetStatus { pet_id: label.to_owned() };
    Envelope::from_message("/petstore/test", &message, &MessageContext::correlated("corr-1")).expect("encode")
}

fn label(envelope: &Envelope) -> String {
    envelope.decode::<contracts::inventory::GetPetStatus>().expect("a test message").pet_id
}

fn url() -> String {
    std::env::var("RABBITMQ_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A fresh channel name, so that tests never share an exchange or a queue.
fn fresh(what: &str) -> String {
    format!("t{}.{what}", uuid::Uuid::now_v7().simple())
}

async fn backend(config: RabbitMqConfig) -> RabbitMqBackend {
    RabbitMqBackend::connect(&config).await.expect("connect to RabbitMQ")
}

fn group(name: &str) -> SubscribeOptions {
    SubscribeOptions { group: Some(name.to_owned()), start: StartFrom::Earliest }
}

/// Asserts that nothing arrives for a while.
async fn assert_nothing_more(consumer: &mut Box<dyn Consumer>) {
    let more = tokio::time::timeout(Duration::from_millis(300), consumer.receive(10, Duration::ZERO)).await;
    let labels = more.map(|r| r.map(|d| d.iter().map(|d| label(&d.envelope)).collect::<Vec<_>>()));
    assert!(labels.is_err(), "unexpected deliveries: {labels:?}");
}

/// Deletes a test's exchange and group queues from the server.
async fn remove(rabbit: &RabbitMqBackend, channel: &str, groups: &[&str]) {
    let raw = rabbit.shared.channel().await.expect("a channel");
    for g in groups {
        let queue = group_queue_name(channel, g).expect("name");
        raw.queue_delete(queue, Default::default()).await.expect("delete the queue");
    }
    raw.exchange_delete(exchange_name(channel).expect("name"), Default::default()).await.expect("delete the exchange");
}

fn labels(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| label(&d.envelope)).collect()
}

// ---------------------------------------------------------------------------------------
// Without a server
// ---------------------------------------------------------------------------------------

#[test]
fn queue_names_keep_distinct_channel_group_pairs_apart() {
    let names = [
        group_queue_name("a/b", "c"),
        group_queue_name("a", "b/c"),
        group_queue_name("a%2Fb", "c"),
        group_queue_name("a", "b%2Fc"),
        group_queue_name("t1.events", "t1.group-a"),
    ];
    let names: Vec<String> = names.into_iter().map(|n| n.expect("a valid name").to_string()).collect();
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len(), "{names:?}");
    assert_eq!(names[4], "t1.events/t1.group-a", "plain bus names stay readable");
    assert_eq!(exchange_name("t1.events").expect("valid").as_str(), "t1.events");
}

#[test]
fn names_the_server_refuses_are_config_errors() {
    for (name, why) in [("", "empty"), ("amq.events", "reserved"), (&"x".repeat(256)[..], "too long")] {
        let err = exchange_name(name).expect_err(why);
        assert!(matches!(err, BusError::Config(_)), "{why}: {err}");
    }
    assert!(exchange_name(&"x".repeat(255)).is_ok(), "255 bytes is the limit, inclusive");
    let err = group_queue_name(&"c".repeat(200), &"g".repeat(60)).expect_err("the joined name is too long");
    assert!(err.to_string().contains("too long"), "{err}");
}

#[test]
fn credentials_never_show_in_the_url_of_a_message() {
    for (url, shown) in [
        ("amqp://guest:secret@rabbit:5672/%2f", "amqp://rabbit:5672/%2f"),
        ("amqp://user@rabbit", "amqp://rabbit"),
        ("amqp://u:p@ss@rabbit:5672/vh?heartbeat=5", "amqp://rabbit:5672/vh"),
        ("amqp://rabbit:5672/%2f", "amqp://rabbit:5672/%2f"),
        ("not a url", "not a url"),
    ] {
        assert_eq!(crate::redact::url(url), shown, "{url}");
    }
}

#[test]
fn an_envelope_survives_the_amqp_round_trip() {
    let mut env = envelope("cat-1");
    env.reply_to = Some("t1.replies.order.0199".into());
    env.causation_id = Some(uuid::Uuid::now_v7().to_string());
    env.extensions.insert(crate::DLQ_ATTEMPTS.into(), "3".into());
    env.data_content_type = "application/cloudevents-test".into();
    let props = properties(&env).expect("properties");
    assert_eq!(props.delivery_mode(), &Some(2), "persistent");
    assert_eq!(props.message_id().as_ref().map(|m| m.to_string()), Some(env.id.to_string()));
    let headers = props.headers().as_ref().expect("headers");
    assert!(headers.contains_key("ce_id") && headers.contains_key("ce_dlqattempts"), "{headers:?}");
    let back = decode(&props, env.data.to_vec()).expect("decode");
    assert_eq!(back, env);
}

#[test]
fn a_message_without_the_required_attributes_is_malformed() {
    let err = decode(&BasicProperties::default(), b"{}".to_vec()).expect_err("no headers");
    assert!(err.to_string().contains("`id`"), "{err}");
    let mut headers = FieldTable::default();
    headers.insert("ce_id".into(), AMQPValue::LongLongInt(7));
    let err = decode(&BasicProperties::default().with_headers(headers), Vec::new()).expect_err("a number");
    assert!(matches!(&err, BusError::Codec(m) if m.contains("ce_id")), "{err}");
    let mut headers = FieldTable::default();
    headers.insert("ce_source".into(), AMQPValue::LongString(LongString::from(vec![0xff_u8, 0xfe])));
    let err = decode(&BasicProperties::default().with_headers(headers), Vec::new()).expect_err("not UTF-8");
    assert!(err.to_string().contains("ce_source"), "{err}");
}

#[test]
fn refusals_are_permanent_and_the_rest_transient() {
    let protocol = |kind: AMQPErrorKind| -> lapin::Error {
        lapin::ErrorKind::ProtocolError(AMQPError::new(kind, "server says no".into())).into()
    };
    let permanent = protocol(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED));
    assert!(!amqp_error("declare queue `q`", &permanent).is_retriable());
    let refused = protocol(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED));
    assert!(!amqp_error("declare", &refused).is_retriable());
    let missing = protocol(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND));
    assert!(amqp_error("publish", &missing).is_retriable());
    assert!(is_not_found(&missing) && !is_not_found(&permanent));
    let reset: lapin::Error = io::Error::from(io::ErrorKind::ConnectionReset).into();
    let err = amqp_error("publish to `x`", &reset);
    assert!(err.is_retriable());
    assert!(err.to_string().starts_with("rabbitmq backend: publish to `x`"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Against the server
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn connect_fails_fast_naming_the_backend_and_the_url_without_credentials() {
    let started = Instant::now();
    let mut config = RabbitMqConfig::new("amqp://guest:hunter2@127.0.0.1:1/%2f");
    config.connect_timeout_ms = 2_000;
    let err = RabbitMqBackend::connect(&config).await.err().expect("nothing listens on port 1");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    let message = err.to_string();
    assert!(message.starts_with("rabbitmq backend:"), "{message}");
    assert!(message.contains("amqp://127.0.0.1:1/%2f"), "{message}");
    assert!(!message.contains("hunter2") && !message.contains("guest"), "{message}");

    let err = RabbitMqBackend::connect(&RabbitMqConfig::new("http://x:y@host")).await.err().expect("not AMQP");
    assert!(matches!(&err, BusError::Config(m) if m.contains("messaging.rabbitmq.url") && !m.contains(":y@")), "{err}");
    let mut config = RabbitMqConfig::new(url());
    config.prefetch = 0;
    let err = RabbitMqBackend::connect(&config).await.err().expect("prefetch 0");
    assert!(matches!(&err, BusError::Config(m) if m.contains("prefetch")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_go_back_to_the_group_when_its_consumer_closes() {
    let rabbit = backend(RabbitMqConfig::new(url())).await;
    rabbit.health().await.expect("healthy");
    let channel = fresh("commands");
    rabbit.declare(&channel, 3).await.expect("declare");
    rabbit.ensure_group(&channel, "workers").await.expect("ensure the group");
    for n in 0..3 {
        rabbit.publish(&channel, &envelope(&format!("m{n}"))).await.expect("publish");
    }

    let mut first = rabbit.subscribe(&channel, group("workers")).await.expect("subscribe");
    let got = receive_n(&mut first, 3).await;
    assert_eq!(labels(&got), ["m0", "m1", "m2"], "one queue is FIFO");
    first.ack(&got[0]).await.expect("ack");
    first.ack(&got[0]).await.expect("a second ack of one delivery is harmless");
    first.close().await;

    let mut second = rabbit.subscribe(&channel, group("workers")).await.expect("subscribe again");
    let again = receive_n(&mut second, 2).await;
    assert_eq!(labels(&again), ["m1", "m2"], "the unacknowledged ones, in order");
    assert_eq!(again[0].envelope, got[1].envelope);
    for d in &again {
        second.ack(d).await.expect("ack");
    }
    assert_nothing_more(&mut second).await;
    second.close().await;
    remove(&rabbit, &channel, &["workers"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_starts_from_its_creation_even_when_asked_for_the_earliest() {
    let rabbit = backend(RabbitMqConfig::new(url())).await;
    assert!(!rabbit.capabilities().replay);
    let channel = fresh("events");
    rabbit.declare(&channel, 1).await.expect("declare");
    rabbit.publish(&channel, &envelope("before")).await.expect("publish with no group");

    let mut late = rabbit.subscribe(&channel, group("late")).await.expect("subscribe");
    let mut private = rabbit
        .subscribe(&channel, SubscribeOptions { group: None, start: StartFrom::Earliest })
        .await
        .expect("private subscription");
    rabbit.publish(&channel, &envelope("after")).await.expect("publish");
    for consumer in [&mut late, &mut private] {
        let got = receive_n(consumer, 1).await;
        assert_eq!(labels(&got), ["after"]);
        consumer.ack(&got[0]).await.expect("ack");
        assert_nothing_more(consumer).await;
    }
    late.close().await;
    private.close().await;
    remove(&rabbit, &channel, &["late"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_ensured_before_publishing_gets_the_earlier_messages_in_ordered_batches() {
    // What a deployment (and the conformance stream scenario, on backends without replay)
    // does: create the group, publish, then start processing.
    let prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
    let config: MessagingConfig = serde_json::from_value(serde_json::json!({
        "default_backend": "rabbitmq",
        "topic_prefix": prefix,
        "channels": { "stream": { "pattern": "streaming", "partitions": 3 } },
    }))
    .expect("configuration");
    let rabbit = std::sync::Arc::new(backend(RabbitMqConfig::new(url())).await);
    let backends = crate::Backends::default().with(crate::BackendKind::Rabbitmq, rabbit.clone());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let bus = Bus::new(&backends, &config, "analytics", shutdown.clone()).await.expect("bus");
    let (channel, group) = (format!("{prefix}stream"), format!("{prefix}analytics"));
    rabbit.ensure_group(&channel, &group).await.expect("ensure the group");

    let messages: Vec<Envelope> = (0..10).flat_map(|n| (0..5).map(move |k| envelope(&format!("pet{k}-{n}")))).collect();
    for m in &messages {
        bus.publish("stream", m).await.expect("publish");
    }
    let batches: std::sync::Arc<std::sync::Mutex<Vec<Vec<Envelope>>>> = Default::default();
    let processor = {
        let batches = batches.clone();
        move |batch: Vec<Envelope>| {
            batches.lock().expect("batches").push(batch);
            futures::future::ready(Ok::<(), crate::HandlerError>(()))
        }
    };
    let options = StreamOptions { batch_size: 10, max_wait: Duration::from_millis(200), start: StartFrom::Earliest };
    bus.process_stream("stream", "analytics", options, processor).await.expect("process_stream");
    let deadline = Instant::now() + Duration::from_secs(10);
    while batches.lock().expect("batches").iter().map(Vec::len).sum::<usize>() < messages.len() {
        assert!(Instant::now() < deadline, "all 50 messages within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let batches = batches.lock().expect("batches").clone();
    assert!(batches.iter().all(|b| (1..=10).contains(&b.len())));
    assert!(batches.iter().any(|b| b.len() > 1), "batches fill up to the prefetch");
    let handled: Vec<uuid::Uuid> = batches.iter().flatten().map(|e| e.id).collect();
    assert_eq!(handled, messages.iter().map(|m| m.id).collect::<Vec<_>>(), "in publication order");
    bus.close().await;
    remove(&rabbit, &channel, &[&group]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_rejected_without_blocking_the_queue() {
    let rabbit = backend(RabbitMqConfig::new(url())).await;
    let channel = fresh("events");
    rabbit.declare(&channel, 1).await.expect("declare");
    let mut consumer = rabbit.subscribe(&channel, group("auditor")).await.expect("subscribe");

    let raw = rabbit.shared.channel().await.expect("a raw channel");
    let exchange = exchange_name(&channel).expect("name");
    raw.basic_publish(exchange, "".into(), BasicPublishOptions::default(), b"not a CloudEvent", Default::default())
        .await
        .expect("publish garbage");
    rabbit.publish(&channel, &envelope("valid")).await.expect("publish");

    let got = receive_n(&mut consumer, 1).await;
    assert_eq!(labels(&got), ["valid"]);
    consumer.ack(&got[0]).await.expect("ack");
    consumer.close().await;
    let mut again = rabbit.subscribe(&channel, group("auditor")).await.expect("subscribe again");
    assert_nothing_more(&mut again).await;
    again.close().await;
    remove(&rabbit, &channel, &["auditor"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_active_consumer_group_keeps_every_key_with_one_consumer() {
    let mut config = RabbitMqConfig::new(url());
    config.single_active_consumer = true;
    let rabbit = backend(config).await;
    assert!(rabbit.capabilities().ordering_per_key);
    let channel = fresh("stream");
    rabbit.declare(&channel, 1).await.expect("declare");
    let mut active = rabbit.subscribe(&channel, group("ordered")).await.expect("subscribe");
    let mut standby = rabbit.subscribe(&channel, group("ordered")).await.expect("subscribe a second");
    for n in 0..6 {
        rabbit.publish(&channel, &envelope(&format!("k-{n}"))).await.expect("publish");
    }
    let got = receive_n(&mut active, 6).await;
    assert_eq!(labels(&got), ["k-0", "k-1", "k-2", "k-3", "k-4", "k-5"]);
    assert_nothing_more(&mut standby).await;
    for d in &got[..3] {
        active.ack(d).await.expect("ack");
    }
    active.close().await;
    let taken_over = receive_n(&mut standby, 3).await;
    assert_eq!(labels(&taken_over), ["k-3", "k-4", "k-5"], "the stand-by takes over, in order");
    standby.close().await;
    remove(&rabbit, &channel, &["ordered"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_deleted_behind_the_backends_back_fails_one_publish_then_is_declared_again() {
    let rabbit = backend(RabbitMqConfig::new(url())).await;
    let channel = fresh("events");
    rabbit.ensure_group(&channel, "keeper").await.expect("ensure the group");
    rabbit.publish(&channel, &envelope("first")).await.expect("publish");
    let raw = rabbit.shared.channel().await.expect("a raw channel");
    raw.exchange_delete(exchange_name(&channel).expect("name"), Default::default()).await.expect("delete");

    let err = rabbit.publish(&channel, &envelope("lost")).await.expect_err("the exchange is gone");
    assert!(err.is_retriable() && err.to_string().contains("NOT_FOUND"), "{err}");
    // What the bus's dead-letter loop does on every attempt: declare, ensure the group, publish.
    rabbit.declare(&channel, 1).await.expect("declare again");
    rabbit.ensure_group(&channel, "keeper").await.expect("bind the group's queue again");
    rabbit.publish(&channel, &envelope("second")).await.expect("publish on a reopened channel");
    let mut consumer = rabbit.subscribe(&channel, group("keeper")).await.expect("subscribe");
    let got = receive_n(&mut consumer, 2).await;
    assert_eq!(labels(&got), ["first", "second"]);
    assert_nothing_more(&mut consumer).await;
    consumer.close().await;
    remove(&rabbit, &channel, &["keeper"]).await;
}

/// A TCP proxy to the server whose connections a test can cut.
struct Proxy {
    port: u16,
    streams: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let streams = std::sync::Arc::<std::sync::Mutex<Vec<TcpStream>>>::default();
        let accepted = std::sync::Arc::<std::sync::atomic::AtomicUsize>::default();
        let (recorded, counter) = (streams.clone(), accepted.clone());
        // Lives until the test process ends; each connection is two copying threads.
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let (Ok(inbound), Ok(outbound)) = (inbound, TcpStream::connect(&upstream)) else { continue };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let clones = (inbound.try_clone(), outbound.try_clone(), inbound.try_clone(), outbound.try_clone());
                let (Ok(mut in_read), Ok(mut out_write), Ok(in_keep), Ok(out_keep)) = clones else { continue };
                let (mut out_read, mut in_write) = (outbound, inbound);
                recorded.lock().expect("streams").extend([in_keep, out_keep]);
                std::thread::spawn(move || {
                    let _ = io::copy(&mut in_read, &mut out_write);
                    let _ = out_write.shutdown(Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = io::copy(&mut out_read, &mut in_write);
                    let _ = in_write.shutdown(Shutdown::Both);
                });
            }
        });
        Self { port, streams, accepted }
    }

    fn cut(&self) {
        for stream in self.streams.lock().expect("streams").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_connection_loss_publishing_and_consuming_resume_on_a_new_connection() {
    let real: AMQPUri = url().parse().expect("RABBITMQ_URL");
    let proxy = Proxy::start(format!("{}:{}", real.authority.host, real.authority.port));
    let user = &real.authority.userinfo;
    let vhost = real.vhost.replace('/', "%2f");
    let proxied = format!("amqp://{}:{}@127.0.0.1:{}/{vhost}", user.username, user.password, proxy.port);
    let mut config = RabbitMqConfig::new(proxied);
    config.connect_timeout_ms = 2_000;
    config.operation_timeout_ms = 2_000;
    let rabbit = backend(config).await;
    let channel = fresh("events");
    rabbit.declare(&channel, 1).await.expect("declare");
    let mut consumer = rabbit.subscribe(&channel, group("survivor")).await.expect("subscribe");
    rabbit.publish(&channel, &envelope("before")).await.expect("publish");
    let got = receive_n(&mut consumer, 1).await;
    consumer.ack(&got[0]).await.expect("ack");
    assert_eq!(proxy.accepted(), 1);

    proxy.cut();
    // A consumer reports the loss, transiently; it reopens its channel on its next call.
    let err = tokio::time::timeout(Duration::from_secs(10), consumer.receive(1, Duration::ZERO))
        .await
        .expect("the consumer notices the loss within 10 s")
        .expect_err("the consumer's channel is gone");
    assert!(err.is_retriable() && err.to_string().starts_with("rabbitmq backend:"), "{err}");
    // A call that meets the broken connection fails transiently; a later one reconnects.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rabbit.publish(&channel, &envelope("after")).await {
            Ok(()) => break,
            Err(e) => {
                assert!(e.is_retriable(), "a connection loss is transient: {e}");
                assert!(Instant::now() < deadline, "publishing resumed within 10 s: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(proxy.accepted(), 2, "one new connection");
    rabbit.health().await.expect("healthy again");

    // The consumer is back on the new connection; the durable group queue kept the message.
    // `before` may come again: its acknowledgement may have been lost with the connection.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let batch = match tokio::time::timeout_at(deadline, consumer.receive(1, Duration::ZERO)).await {
            Err(_) => panic!("the message published after the loss within 10 s"),
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                assert!(e.is_retriable(), "{e}");
                continue;
            }
        };
        let Some(delivery) = batch.first() else { continue };
        consumer.ack(delivery).await.expect("ack on the new channel");
        match label(&delivery.envelope).as_str() {
            "after" => break,
            "before" => {}
            other => panic!("unexpected message {other}"),
        }
    }
    consumer.close().await;
    remove(&rabbit, &channel, &["survivor"]).await;
}
