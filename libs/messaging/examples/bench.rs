//! The bus against the raw client: publish and consume throughput, and one-message-at-a-time
//! latency (publish → handler), for each backend compiled in and reachable, with the ratio
//! bus/raw.
//!
//! ```text
//! cargo run --release -p messaging --all-features --example bench [-- <messages>]
//! ```
//!
//! "Raw" is the backend's own client driven directly: rdkafka for Kafka, async-nats for
//! NATS; for memory, which has no client library, it is the memory backend's `Backend` and
//! `Consumer` calls without the bus (routing, metrics, middleware, dead-lettering).
//! Publishing keeps a window of messages in flight (each acknowledged by the server);
//! consuming reads a backlog published beforehand; latency is measured one message at a time.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use messaging::{Backend, BackendKind, Backends, Bus, Envelope, MessageContext, StartFrom, SubscribeOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WINDOW: usize = 1024;
const LATENCY_ROUNDS: usize = 1000;

#[derive(Default)]
struct Figures {
    publish_per_s: f64,
    consume_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn message(n: usize) -> Envelope {
    let mut m = Envelope::from_message("/bench", &common::pet_message(&format!("pet-{n}")), &MessageContext::default())
        .expect("encode");
    m.partition_key = Some(format!("key-{}", n % 64));
    m
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    (at(0.50), at(0.99))
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn report(backend: &str, n: usize, raw: &Figures, bus: &Figures) {
    let ratio = |b: f64, r: f64| if r > 0.0 { b / r } else { f64::NAN };
    println!("{backend} ({n} messages)");
    println!("  {:<24} {:>14} {:>14} {:>8}", "", "raw", "bus", "bus/raw");
    println!(
        "  {:<24} {:>12.0}/s {:>12.0}/s {:>7.2}x",
        "publish",
        raw.publish_per_s,
        bus.publish_per_s,
        ratio(bus.publish_per_s, raw.publish_per_s)
    );
    println!(
        "  {:<24} {:>12.0}/s {:>12.0}/s {:>7.2}x",
        "consume",
        raw.consume_per_s,
        bus.consume_per_s,
        ratio(bus.consume_per_s, raw.consume_per_s)
    );
    println!("  {:<24} {:>11.3} ms {:>11.3} ms", "latency p50", raw.p50_ms, bus.p50_ms);
    println!("  {:<24} {:>11.3} ms {:>11.3} ms", "latency p99", raw.p99_ms, bus.p99_ms);
}

/// Publishes `n` messages through the bus with `WINDOW` in flight.
async fn bus_publish(bus: &Bus, channel: &str, n: usize) -> f64 {
    let messages: Vec<Envelope> = (0..n).map(message).collect();
    let started = Instant::now();
    let failures = stream::iter(messages.iter())
        .map(|m| bus.publish(channel, m))
        .buffer_unordered(WINDOW)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    assert_eq!(failures, 0, "bus publish failed");
    rate(n, started.elapsed())
}

/// Consumes `n` messages already on `channel` through a bus subscription (the whole handler
/// path: middleware, acknowledgement).
async fn bus_consume(bus: &Bus, channel: &str, n: usize) -> f64 {
    let count = Arc::new(AtomicUsize::new(0));
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let counter = count.clone();
    let started = Instant::now();
    bus.subscribe(channel, "bench-consume", move |_m: Envelope| {
        let counter = counter.clone();
        let done = done_tx.clone();
        async move {
            if counter.fetch_add(1, Ordering::Relaxed) + 1 == n {
                let _ = done.try_send(());
            }
            Ok(())
        }
    })
    .await
    .expect("subscribe");
    let _ = tokio::time::timeout(Duration::from_secs(300), done_rx.recv()).await;
    rate(count.load(Ordering::Relaxed), started.elapsed())
}

/// One message at a time: publish, wait for the handler.
async fn bus_latency(bus: &Bus, channel: &str) -> (f64, f64) {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    bus.subscribe(channel, "bench-latency", move |_m: Envelope| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(());
            Ok(())
        }
    })
    .await
    .expect("subscribe");
    let mut samples = Vec::with_capacity(LATENCY_ROUNDS);
    for i in 0..=LATENCY_ROUNDS {
        let m = message(i);
        let started = Instant::now();
        bus.publish(channel, &m).await.expect("publish");
        tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("delivered");
        if i > 0 {
            samples.push(started.elapsed()); // the first includes joining the group
        }
    }
    percentiles(samples)
}

async fn bus_figures(backend: &str, n: usize) -> Option<Figures> {
    let mut config = common::config(backend);
    config.memory.retention_messages = n + LATENCY_ROUNDS + 1;
    let backends = Backends::connect(&config).await.ok()?;
    let bus = Bus::new(&backends, &config, "bench", CancellationToken::new()).await.ok()?;
    let publish_per_s = bus_publish(&bus, "pet-stream", n).await;
    let consume_per_s = bus_consume(&bus, "pet-stream", n).await;
    let (p50_ms, p99_ms) = bus_latency(&bus, "pet-events").await;
    bus.close().await;
    Some(Figures { publish_per_s, consume_per_s, p50_ms, p99_ms })
}

/// Raw figures through a `Backend` directly (no bus): used for memory.
async fn backend_figures(backend: Arc<dyn Backend>, n: usize) -> Figures {
    let topic = format!("raw{}", uuid::Uuid::now_v7().simple());
    backend.declare(&topic, 3).await.expect("declare");
    let messages: Vec<Envelope> = (0..n).map(message).collect();
    let started = Instant::now();
    let failures = stream::iter(messages.iter())
        .map(|m| backend.publish(&topic, m))
        .buffer_unordered(WINDOW)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    assert_eq!(failures, 0, "raw publish failed");
    let publish_per_s = rate(n, started.elapsed());
    let mut consumer = backend
        .subscribe(&topic, SubscribeOptions { group: Some("raw".into()), start: StartFrom::Earliest })
        .await
        .expect("subscribe");
    let started = Instant::now();
    let mut got = 0;
    while got < n {
        let batch = consumer.receive(1024, Duration::ZERO).await.expect("receive");
        for d in &batch {
            consumer.ack(d).await.expect("ack");
        }
        got += batch.len();
    }
    let consume_per_s = rate(n, started.elapsed());
    let latency_topic = format!("{topic}-latency");
    let mut consumer = backend
        .subscribe(&latency_topic, SubscribeOptions { group: Some("raw".into()), start: StartFrom::Latest })
        .await
        .expect("subscribe");
    let mut samples = Vec::new();
    for (i, m) in messages.iter().take(LATENCY_ROUNDS).enumerate() {
        let started = Instant::now();
        backend.publish(&latency_topic, m).await.expect("publish");
        let d = consumer.receive(1, Duration::ZERO).await.expect("receive");
        consumer.ack(&d[0]).await.expect("ack");
        if i > 0 {
            samples.push(started.elapsed());
        }
    }
    let (p50_ms, p99_ms) = percentiles(samples);
    Figures { publish_per_s, consume_per_s, p50_ms, p99_ms }
}

#[cfg(feature = "kafka")]
mod kafka_raw {
    use std::time::{Duration, Instant};

    use futures::StreamExt;
    use rdkafka::{
        ClientConfig, Message,
        consumer::{Consumer, StreamConsumer},
        producer::{FutureProducer, FutureRecord},
    };

    use super::{Figures, LATENCY_ROUNDS, WINDOW, message, percentiles, rate};

    fn client(brokers: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers)
            .set("fetch.wait.max.ms", "10")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000");
        c
    }

    fn consumer(brokers: &str, topic: &str, group: &str) -> StreamConsumer {
        let c: StreamConsumer = client(brokers)
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .create()
            .expect("consumer");
        c.subscribe(&[topic]).expect("subscribe");
        c
    }

    /// The same producer settings the bus uses: idempotent, acks=all.
    pub async fn figures(brokers: &str, n: usize) -> Figures {
        let producer: FutureProducer =
            client(brokers).set("enable.idempotence", "true").set("acks", "all").create().expect("producer");
        let topic = format!("raw{}", uuid::Uuid::now_v7().simple());
        let messages: Vec<_> = (0..n).map(message).collect();
        let started = Instant::now();
        let failures = futures::stream::iter(messages.iter())
            .map(|m| {
                let key = m.partition_key.clone().unwrap_or_default();
                let producer = &producer;
                let topic = &topic;
                async move {
                    let record = FutureRecord::to(topic).key(&key).payload(&m.data[..]);
                    producer.send(record, Duration::from_secs(30)).await
                }
            })
            .buffer_unordered(WINDOW)
            .filter(|r| futures::future::ready(r.is_err()))
            .count()
            .await;
        assert_eq!(failures, 0, "raw publish failed");
        let publish_per_s = rate(n, started.elapsed());

        let c = consumer(brokers, &topic, &format!("{topic}-g"));
        let started = Instant::now();
        for _ in 0..n {
            let m = tokio::time::timeout(Duration::from_secs(60), c.recv()).await.expect("within 60 s").expect("recv");
            let _ = m.payload();
        }
        let consume_per_s = rate(n, started.elapsed());
        tokio::task::spawn_blocking(move || drop(c)).await.ok();

        let latency_topic = format!("{topic}-latency");
        let c = consumer(brokers, &latency_topic, &format!("{topic}-l"));
        let mut samples = Vec::new();
        for (i, m) in messages.iter().take(LATENCY_ROUNDS + 1).enumerate() {
            let started = Instant::now();
            producer
                .send(FutureRecord::to(&latency_topic).key("k").payload(&m.data[..]), Duration::from_secs(30))
                .await
                .expect("send");
            tokio::time::timeout(Duration::from_secs(60), c.recv()).await.expect("within 60 s").expect("recv");
            if i > 0 {
                samples.push(started.elapsed());
            }
        }
        tokio::task::spawn_blocking(move || drop(c)).await.ok();
        let (p50_ms, p99_ms) = percentiles(samples);
        Figures { publish_per_s, consume_per_s, p50_ms, p99_ms }
    }
}

#[cfg(feature = "nats")]
mod nats_raw {
    use std::time::{Duration, Instant};

    use async_nats::jetstream::{self, consumer::pull, stream};
    use futures::StreamExt;

    use super::{Figures, LATENCY_ROUNDS, WINDOW, message, percentiles, rate};

    /// The same message on the wire as the bus sends: CloudEvents attributes as `ce_*`
    /// headers and the envelope id as `Nats-Msg-Id` (JetStream de-duplication).
    fn headers(m: &messaging::Envelope) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in m.attributes() {
            headers.insert(format!("ce_{name}").as_str(), value.as_str());
        }
        headers.insert("content-type", m.data_content_type.as_str());
        headers.insert("Nats-Msg-Id", m.id.to_string().as_str());
        headers
    }

    /// Reads the envelope back, as a consumer of the bus's messages must.
    fn decode(m: &jetstream::Message) {
        let attributes: Vec<(String, String)> = m
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .filter_map(|(k, v)| {
                let k: &str = k.as_ref();
                k.strip_prefix("ce_")
                    .map(|n| (n.to_owned(), v.first().map(|x| x.as_str().to_owned()).unwrap_or_default()))
            })
            .collect();
        let attrs = attributes.iter().map(|(k, v)| (k.as_str(), v.clone()));
        messaging::Envelope::from_attributes(attrs, None, m.payload.clone()).expect("a CloudEvent");
    }

    /// JetStream through async-nats with the same work per message as the bus's NATS backend:
    /// a file-backed stream, CloudEvents headers and message id, acknowledged publishes, a
    /// durable pull consumer decoding each envelope and confirming each ack.
    pub async fn figures(url: &str, n: usize) -> Figures {
        let client = async_nats::connect(url).await.expect("connect to NATS");
        let js = jetstream::new(client);
        let name = format!("raw{}", uuid::Uuid::now_v7().simple());
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![name.clone()],
                ..Default::default()
            })
            .await
            .expect("stream");
        let messages: Vec<_> = (0..n).map(message).collect();
        let started = Instant::now();
        let failures = futures::stream::iter(messages.iter())
            .map(|m| {
                let js = &js;
                let subject = name.clone();
                async move { js.publish_with_headers(subject, headers(m), m.data.clone()).await?.await }
            })
            .buffer_unordered(WINDOW)
            .filter(|r| futures::future::ready(r.is_err()))
            .count()
            .await;
        assert_eq!(failures, 0, "raw publish failed");
        let publish_per_s = rate(n, started.elapsed());

        let consumer = stream
            .get_or_create_consumer("raw", pull::Config { durable_name: Some("raw".into()), ..Default::default() })
            .await
            .expect("consumer");
        let mut messages_in = consumer.messages().await.expect("messages");
        let started = Instant::now();
        for _ in 0..n {
            let m = tokio::time::timeout(Duration::from_secs(60), messages_in.next()).await.expect("within 60 s");
            let m = m.expect("a message").expect("no error");
            decode(&m);
            m.double_ack().await.expect("confirmed ack");
        }
        let consume_per_s = rate(n, started.elapsed());
        drop(messages_in);

        let latency = stream
            .get_or_create_consumer(
                "latency",
                pull::Config {
                    durable_name: Some("latency".into()),
                    deliver_policy: jetstream::consumer::DeliverPolicy::New,
                    ..Default::default()
                },
            )
            .await
            .expect("consumer");
        let mut incoming = latency.messages().await.expect("messages");
        let mut samples = Vec::new();
        for i in 0..=LATENCY_ROUNDS {
            // Fresh ids: JetStream drops a repeated Nats-Msg-Id as a duplicate.
            let m = &message(i);
            let started = Instant::now();
            js.publish_with_headers(name.clone(), headers(m), m.data.clone())
                .await
                .expect("publish")
                .await
                .expect("ack");
            let got = tokio::time::timeout(Duration::from_secs(60), incoming.next()).await.expect("within 60 s");
            let got = got.expect("a message").expect("no error");
            decode(&got);
            got.double_ack().await.expect("confirmed ack");
            if i > 0 {
                samples.push(started.elapsed());
            }
        }
        let _ = js.delete_stream(&name).await;
        let (p50_ms, p99_ms) = percentiles(samples);
        Figures { publish_per_s, consume_per_s, p50_ms, p99_ms }
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    // Memory: the backend's own calls versus the bus.
    let memory = Arc::new(messaging::memory::MemoryBackend::new(n + LATENCY_ROUNDS + 1));
    let raw = backend_figures(memory, n).await;
    if let Some(bus) = bus_figures("memory", n).await {
        report("memory", n, &raw, &bus);
    }
    // Servers get a smaller run: a round trip to a broker costs milliseconds, not nanoseconds.
    let server_n = (n / 50).clamp(1_000, 50_000);
    #[cfg(feature = "kafka")]
    {
        let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let raw = kafka_raw::figures(&brokers, server_n).await;
        match bus_figures("kafka", server_n).await {
            Some(bus) => report("kafka", server_n, &raw, &bus),
            None => println!("kafka: not reachable"),
        }
    }
    #[cfg(feature = "nats")]
    {
        let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let raw = nats_raw::figures(&url, server_n).await;
        match bus_figures("nats", server_n).await {
            Some(bus) => report("nats", server_n, &raw, &bus),
            None => println!("nats: not reachable"),
        }
    }
    let _ = (server_n, BackendKind::Memory);
}
