//! The bus conformance suite: every scenario is written once and runs against every backend
//! compiled in, as `<backend>::<scenario>`: `memory` (a default feature), `kafka`
//! (`KAFKA_BROKERS`, default `127.0.0.1:9092`), `nats` (`NATS_URL`), `rabbitmq`
//! (`RABBITMQ_URL`), `redis` (`REDIS_URL`) and `sns` (`SNS_ENDPOINT`, the moto emulator).
//!
//! Each test gets its own random topic prefix, so tests never share a topic or a consumer
//! group, and waits for user-visible outcomes with a deadline instead of sleeping.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use contracts::inventory::{GetPetStatus, PetStatus};
use messaging::{
    Backend, BackendKind, Backends, Bus, BusError, Capabilities, ChannelConfig, Consumer, DLQ_ATTEMPTS, DLQ_ERROR,
    DLQ_ORIGIN, DeadLetter, Envelope, HandlerError, MessageContext, MessagingConfig, Pattern, StartFrom, StreamOptions,
    SubscribeOptions,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// Connected backends and a configuration with a fresh topic prefix.
struct Fixture {
    backends: Backends,
    config: MessagingConfig,
    kind: BackendKind,
    /// How long an outcome may take to show (a Kafka group join takes seconds).
    patience: Duration,
    shutdown: CancellationToken,
    buses: Mutex<Vec<Bus>>,
}

fn base_config(kind: BackendKind) -> serde_json::Value {
    serde_json::json!({
        "default_backend": kind.as_str(),
        "topic_prefix": format!("t{}.", Uuid::now_v7().simple()),
        "retry": { "max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 50 },
        "channels": {
            "events": { "pattern": "pub_sub", "partitions": 3 },
            "commands": { "pattern": "point_to_point", "partitions": 3 },
            "queries": { "pattern": "request_response", "partitions": 1 },
            "unserved": { "pattern": "request_response", "partitions": 1 },
            "stream": { "pattern": "streaming", "partitions": 3 },
            "parallel": { "pattern": "pub_sub", "partitions": 3, "concurrency": 8 },
        },
    })
}

impl Fixture {
    async fn new(kind: BackendKind, config: serde_json::Value, patience: Duration) -> Self {
        let config: MessagingConfig = serde_json::from_value(config).expect("test configuration");
        Self::connect(kind, config, patience).await
    }

    async fn connect(kind: BackendKind, config: MessagingConfig, patience: Duration) -> Self {
        let backends = Backends::connect(&config).await.expect("connect the backends");
        Self { backends, config, kind, patience, shutdown: CancellationToken::new(), buses: Mutex::new(Vec::new()) }
    }

    /// The same fixture with the backends' redelivery timeouts (NATS ack wait, SQS
    /// visibility timeout, Redis claim idle time) cut to two seconds, for scenarios in which
    /// a consumer dies holding messages that must then come back.
    async fn with_quick_redelivery(self) -> Self {
        #[allow(unused_mut)] // only some backends have a redelivery timeout
        let mut config = self.config.clone();
        #[cfg(feature = "nats")]
        if let Some(nats) = config.nats.as_mut() {
            nats.ack_wait_secs = 2;
        }
        #[cfg(feature = "sns")]
        if let Some(sns) = config.sns.as_mut() {
            sns.visibility_timeout_secs = 2;
        }
        #[cfg(feature = "redis")]
        if let Some(redis) = config.redis.as_mut() {
            redis.claim_idle_ms = 2_000;
        }
        let (kind, patience) = (self.kind, self.patience);
        self.finish().await;
        Self::connect(kind, config, patience).await
    }

    /// A bus for `service`, closed by [`Fixture::finish`].
    async fn bus(&self, service: &str) -> Bus {
        let bus = Bus::new(&self.backends, &self.config, service, self.shutdown.clone()).await.expect("build the bus");
        self.buses.lock().expect("buses").push(bus.clone());
        bus
    }

    fn backend(&self) -> Arc<dyn Backend> {
        self.backends.get(self.kind).expect("the fixture's backend is connected")
    }

    /// The physical name of a logical channel.
    fn physical(&self, channel: &str) -> String {
        format!("{}{channel}", self.config.topic_prefix)
    }

    /// A consumer of the dead-letter channel of `channel` in the durable group the bus keeps
    /// dead letters in (the group an operator's tools read).
    async fn dead_letters(&self, channel: &str) -> Box<dyn Consumer> {
        let dlq = format!("{}.dlq", self.physical(channel));
        let group = format!("{}{}", self.config.topic_prefix, messaging::DLQ_GROUP);
        let backend = self.backend();
        backend.declare(&dlq, 1).await.expect("declare the dead-letter channel");
        backend
            .subscribe(&dlq, SubscribeOptions { group: Some(group), start: StartFrom::Earliest })
            .await
            .expect("subscribe")
    }

    /// Stops every consumer of every bus of the test (leaving consumer groups cleanly).
    async fn finish(self) {
        let buses = std::mem::take(&mut *self.buses.lock().expect("buses"));
        for bus in buses {
            bus.close().await;
        }
    }
}

#[cfg(feature = "memory")]
async fn memory() -> Fixture {
    Fixture::new(BackendKind::Memory, base_config(BackendKind::Memory), Duration::from_secs(5)).await
}

#[cfg(feature = "kafka")]
async fn kafka() -> Fixture {
    let brokers = env_or("KAFKA_BROKERS", "127.0.0.1:9092");
    let mut config = base_config(BackendKind::Kafka);
    config["kafka"] = serde_json::json!({
        "brokers": brokers,
        "client": {
            "fetch.wait.max.ms": "10",
            "session.timeout.ms": "6000",
            "heartbeat.interval.ms": "1000",
        },
    });
    Fixture::new(BackendKind::Kafka, config, Duration::from_secs(30)).await
}

#[allow(dead_code)] // only the server backends' fixtures read the environment
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

#[cfg(feature = "nats")]
async fn nats() -> Fixture {
    let mut config = base_config(BackendKind::Nats);
    config["nats"] = serde_json::json!({ "url": env_or("NATS_URL", "nats://127.0.0.1:4222") });
    Fixture::new(BackendKind::Nats, config, Duration::from_secs(15)).await
}

#[cfg(feature = "rabbitmq")]
async fn rabbitmq() -> Fixture {
    let mut config = base_config(BackendKind::Rabbitmq);
    config["rabbitmq"] = serde_json::json!({ "url": env_or("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f") });
    Fixture::new(BackendKind::Rabbitmq, config, Duration::from_secs(15)).await
}

#[cfg(feature = "redis")]
async fn redis() -> Fixture {
    let mut config = base_config(BackendKind::Redis);
    config["redis"] = serde_json::json!({ "url": env_or("REDIS_URL", "redis://127.0.0.1:6379") });
    Fixture::new(BackendKind::Redis, config, Duration::from_secs(15)).await
}

#[cfg(feature = "sns")]
async fn sns() -> Fixture {
    let mut config = base_config(BackendKind::Sns);
    config["sns"] = serde_json::json!({
        "region": "us-east-1",
        "endpoint_url": env_or("SNS_ENDPOINT", "http://127.0.0.1:5055"),
        "access_key_id": "test",
        "secret_access_key": "test",
        // The emulator (moto) decides at the start of a long poll which FIFO message groups
        // are busy and does not look again while the poll waits: a poll that starts while
        // every key has a message in hand returns nothing for its whole wait, even after
        // those messages are deleted (SQS itself hands out the next message of a group as
        // soon as the previous one is deleted). One-second polls keep the emulator's stale
        // view short; the product's default stays SQS's longest wait, 20 s.
        "wait_time_secs": 1,
    });
    Fixture::new(BackendKind::Sns, config, Duration::from_secs(30)).await
}

/// Every scenario, as tests of the backend whose fixture function has the module's name.
macro_rules! scenarios {
    ($backend:ident) => {
        scenarios!(@each $backend;
    pub_sub_delivers_to_every_group,
    a_broadcast_reaches_every_instance_of_a_service,
    point_to_point_hands_each_message_to_one_consumer,
    request_gets_the_typed_reply_or_times_out,
    messages_of_one_key_are_handled_in_publication_order,
    a_failing_message_is_retried_until_it_succeeds,
    a_message_that_keeps_failing_is_dead_lettered,
    a_dead_letter_is_read_back_and_replayed_to_its_channel,
    nothing_is_lost_across_a_consumer_restart,
    a_stream_is_processed_in_ordered_batches,
    a_call_that_does_not_fit_the_channel_pattern_is_a_config_error,
    a_pattern_the_backend_lacks_fails_bus_new,
    a_message_delivered_twice_is_handled_once,
    a_new_group_can_start_from_a_point_in_time,
    the_backlog_counts_what_a_group_has_not_acknowledged,
    a_receive_dropped_before_it_returns_loses_nothing,
    under_concurrency_keys_run_side_by_side_and_each_keeps_its_order,
    a_consumer_killed_mid_batch_loses_nothing_and_repeats_no_effect);
    };
    (@each $backend:ident; $($scenario:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario(super::$backend().await).await;
            }
        )+
    };
}

#[cfg(feature = "memory")]
mod memory {
    scenarios!(memory);
}
#[cfg(feature = "kafka")]
mod kafka {
    scenarios!(kafka);
}
#[cfg(feature = "nats")]
mod nats {
    scenarios!(nats);
}
#[cfg(feature = "rabbitmq")]
mod rabbitmq {
    scenarios!(rabbitmq);
}
#[cfg(feature = "redis")]
mod redis {
    scenarios!(redis);
}
#[cfg(feature = "sns")]
mod sns {
    scenarios!(sns);
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A test message labelled `<key>-<n>` with partition key `key`.
fn message(key: &str, n: usize) -> Envelope {
    let mut env = Envelope::from_message(
        "/petstore/conformance",
        &GetPetStatus { pet_id: format!("{key}-{n}") },
        &MessageContext::default(),
    )
    .expect("encode");
    env.partition_key = Some(key.to_owned());
    env
}

fn label(env: &Envelope) -> String {
    env.decode::<GetPetStatus>().expect("a test message").pet_id
}

/// Envelopes a handler saw, in the order it saw them.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Envelope>>>);

impl Seen {
    fn push(&self, env: Envelope) {
        self.0.lock().expect("seen").push(env);
    }

    fn all(&self) -> Vec<Envelope> {
        self.0.lock().expect("seen").clone()
    }

    fn ids(&self) -> HashSet<Uuid> {
        self.all().iter().map(|e| e.id).collect()
    }

    fn len(&self) -> usize {
        self.0.lock().expect("seen").len()
    }

    /// A handler that records every message and succeeds.
    fn handler(&self) -> impl Fn(Envelope) -> futures::future::Ready<Result<(), HandlerError>> + Send + Sync + 'static {
        let seen = self.clone();
        move |env| {
            seen.push(env);
            futures::future::ready(Ok(()))
        }
    }
}

/// Polls `check` until it passes; fails the test with its last complaint after `patience`.
async fn eventually(patience: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + patience;
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => panic!("not within {patience:?}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn missing(expected: &HashSet<Uuid>, seen: &HashSet<Uuid>) -> Result<(), String> {
    let missing = expected.difference(seen).count();
    if missing == 0 { Ok(()) } else { Err(format!("{missing} of {} messages not seen", expected.len())) }
}

async fn publish_all(bus: &Bus, channel: &str, messages: &[Envelope]) -> HashSet<Uuid> {
    for m in messages {
        bus.publish(channel, m).await.expect("publish");
    }
    messages.iter().map(|m| m.id).collect()
}

/// Per key, the message numbers in the order they were handled.
fn order_per_key(handled: &[Envelope]) -> BTreeMap<String, Vec<usize>> {
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for env in handled {
        let label = label(env);
        let (key, n) = label.rsplit_once('-').expect("label is <key>-<n>");
        per_key.entry(key.to_owned()).or_default().push(n.parse().expect("number"));
    }
    per_key
}

/// Receives (and acknowledges) from `consumer` until every message of `wanted` is there.
async fn receive_ids(consumer: &mut Box<dyn Consumer>, patience: Duration, wanted: &[Uuid]) -> HashMap<Uuid, Envelope> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut got = HashMap::new();
    while !wanted.iter().all(|id| got.contains_key(id)) {
        let batch = tokio::time::timeout_at(deadline, consumer.receive(16, Duration::ZERO))
            .await
            .unwrap_or_else(|_| panic!("not all of {wanted:?} within {patience:?}; got {:?}", got.keys()))
            .expect("receive");
        for d in batch {
            consumer.ack(&d).await.expect("ack");
            got.insert(d.envelope.id, d.envelope);
        }
    }
    got
}

/// Polls the backlog of `group` on `channel` until it is `expected` (counts may lag behind,
/// and SQS's are approximate); fails the test with the last answer after `patience`.
async fn backlog_reaches(backend: &dyn Backend, channel: &str, group: &str, expected: u64, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        let backlog = backend.backlog(channel, group).await;
        if matches!(backlog, Ok(Some(n)) if n == expected) {
            return;
        }
        assert!(Instant::now() < deadline, "backlog {expected} not reached within {patience:?}: last {backlog:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

async fn the_backlog_counts_what_a_group_has_not_acknowledged(f: Fixture) {
    let _declares_the_channels = f.bus("lagging").await;
    let backend = f.backend();
    let channel = f.physical("events");
    let group = format!("{}lagging", f.config.topic_prefix);
    if !backend.capabilities().backlog {
        let told = backend.backlog(&channel, &group).await.expect("backlog");
        assert_eq!(told, None, "a backend without the backlog capability says it cannot tell");
        f.finish().await;
        return;
    }
    let nowhere = backend.backlog(&f.physical("nowhere"), &group).await.expect("backlog of a missing channel");
    assert_eq!(nowhere, Some(0), "a channel that does not exist holds nothing");
    backend.ensure_group(&channel, &group).await.expect("ensure the group");
    assert_eq!(backend.backlog(&channel, &group).await.expect("backlog"), Some(0), "a new group of a new channel");

    let sent: Vec<Envelope> = (0..5).map(|n| message(&format!("k{n}"), n)).collect();
    for m in &sent {
        backend.publish(&channel, m).await.expect("publish");
    }
    backlog_reaches(&*backend, &channel, &group, 5, f.patience).await;

    let options = SubscribeOptions { group: Some(group.clone()), start: StartFrom::Earliest };
    let mut consumer = backend.subscribe(&channel, options).await.expect("subscribe");
    let ids: Vec<Uuid> = sent.iter().map(|m| m.id).collect();
    receive_ids(&mut consumer, f.patience, &ids).await;
    backlog_reaches(&*backend, &channel, &group, 0, f.patience).await;
    consumer.close().await;
    f.finish().await;
}

/// The bus's consume loop drops a `receive` whenever a handler finishes first, then
/// acknowledges and calls `receive` again: what the dropped call had already taken from the
/// backend must come out of a later call, once, in order per key, and nothing may be left.
async fn a_receive_dropped_before_it_returns_loses_nothing(f: Fixture) {
    let _declares_the_channels = f.bus("impatient").await;
    let backend = f.backend();
    let channel = f.physical("stream");
    let group = format!("{}impatient", f.config.topic_prefix);
    backend.ensure_group(&channel, &group).await.expect("ensure the group");
    let options = SubscribeOptions { group: Some(group.clone()), start: StartFrom::Earliest };
    let mut consumer = backend.subscribe(&channel, options).await.expect("subscribe");
    // Once a first message is through, the consumer is up (a Kafka group has settled).
    let warm_up = message("warmup", 0);
    backend.publish(&channel, &warm_up).await.expect("publish");
    receive_ids(&mut consumer, f.patience, &[warm_up.id]).await;

    // Published while the consumer receives, in bursts, so that many receives take a few
    // messages and are dropped while they wait for more.
    let messages: Vec<Envelope> = (0..12).flat_map(|n| (0..5).map(move |k| message(&format!("key{k}"), n))).collect();
    let expected: HashSet<Uuid> = messages.iter().map(|m| m.id).collect();
    let publishing = tokio::spawn({
        let (backend, channel, messages) = (backend.clone(), channel.clone(), messages.clone());
        async move {
            for burst in messages.chunks(5) {
                for m in burst {
                    backend.publish(&channel, m).await.expect("publish");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    // Every delivery is acknowledged at once, and the patience is shorter than every
    // backend's redelivery timeout (ack wait, visibility timeout, claim idle time: 30 s), so
    // a message a dropped receive took can only come back by being handed out again by this
    // consumer; and a message that comes twice was handed out twice.
    let patience = f.patience.min(Duration::from_secs(20));
    let deadline = tokio::time::Instant::now() + patience;
    let (mut first, mut times, mut dropped) = (Vec::new(), HashMap::<Uuid, usize>::new(), 0);
    for attempt in 0u64.. {
        if expected.iter().all(|id| times.contains_key(id)) || tokio::time::Instant::now() >= deadline {
            break;
        }
        // Mostly cut after 1..15 ms, well within the 50 ms a receive may gather for; every
        // fourth call may take its time.
        let cut = if attempt % 4 == 3 {
            deadline
        } else {
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(1 + attempt % 15))
        };
        let Ok(batch) = tokio::time::timeout_at(cut, consumer.receive(7, Duration::from_millis(50))).await else {
            dropped += 1;
            continue;
        };
        for d in batch.expect("receive") {
            consumer.ack(&d).await.expect("ack");
            let n = times.entry(d.envelope.id).or_default();
            *n += 1;
            if *n == 1 {
                first.push(d.envelope);
            }
        }
    }
    publishing.await.expect("publisher task");

    let missing: Vec<String> = messages.iter().filter(|m| !times.contains_key(&m.id)).map(label).collect();
    assert!(missing.is_empty(), "not received within {patience:?} ({dropped} receives dropped): {missing:?}");
    let twice: Vec<String> = first.iter().filter(|e| times[&e.id] > 1).map(label).collect();
    assert!(twice.is_empty(), "received more than once: {twice:?}");
    let unexpected: Vec<String> = first.iter().filter(|e| !expected.contains(&e.id)).map(label).collect();
    assert!(unexpected.is_empty(), "received what was not published then: {unexpected:?}");
    assert!(dropped > 0, "no receive was dropped: the scenario tested nothing");
    let per_key = order_per_key(&first);
    assert_eq!(per_key.len(), 5);
    for (key, order) in per_key {
        assert_eq!(order, (0..12).collect::<Vec<_>>(), "order of {key}");
    }

    // Nothing is left over: not in the consumer, not in the group.
    if let Ok(more) = tokio::time::timeout(Duration::from_millis(300), consumer.receive(16, Duration::ZERO)).await {
        let more: Vec<String> = more.expect("receive").iter().map(|d| label(&d.envelope)).collect();
        assert!(more.is_empty(), "left over: {more:?}");
    }
    if backend.capabilities().backlog {
        backlog_reaches(&*backend, &channel, &group, 0, f.patience).await;
    }
    consumer.close().await;
    f.finish().await;
}

async fn pub_sub_delivers_to_every_group(f: Fixture) {
    let bus = f.bus("publisher").await;
    let (a, b) = (Seen::default(), Seen::default());
    bus.subscribe("events", "group-a", a.handler()).await.expect("subscribe a");
    bus.subscribe("events", "group-b", b.handler()).await.expect("subscribe b");

    let sent: Vec<Envelope> = (0..10).map(|n| message(&format!("k{}", n % 3), n)).collect();
    let sent = publish_all(&bus, "events", &sent).await;

    eventually(f.patience, || {
        missing(&sent, &a.ids()).map_err(|e| format!("group a: {e}"))?;
        missing(&sent, &b.ids()).map_err(|e| format!("group b: {e}"))
    })
    .await;
    assert_eq!(a.ids(), sent, "group a got only the published messages");
    assert_eq!(b.ids(), sent, "group b got only the published messages");
    f.finish().await;
}

/// Two instances of one service each get every broadcast (where one group would share them)
/// published once `subscribe_broadcast` has returned — also at once, before the consumer has
/// fetched anything — and neither gets what was published before it subscribed.
async fn a_broadcast_reaches_every_instance_of_a_service(f: Fixture) {
    let (one, two) = (f.bus("flags").await, f.bus("flags").await);
    let before = publish_all(&one, "events", &[message("early", 0)]).await;
    let (a, b) = (Seen::default(), Seen::default());
    one.subscribe_broadcast("events", a.handler()).await.expect("subscribe one");
    two.subscribe_broadcast("events", b.handler()).await.expect("subscribe two");
    let later: Vec<Envelope> = (0..5).map(|n| message("k", n)).collect();
    let later = publish_all(&two, "events", &later).await;
    eventually(f.patience, || {
        missing(&later, &a.ids()).map_err(|e| format!("instance one: {e}"))?;
        missing(&later, &b.ids()).map_err(|e| format!("instance two: {e}"))
    })
    .await;
    for seen in [&a, &b] {
        assert!(seen.ids().is_disjoint(&before), "a broadcast subscriber starts at the end of the channel");
    }
    f.finish().await;
}

async fn a_new_group_can_start_from_a_point_in_time(f: Fixture) {
    let bus = f.bus("replayer").await;
    let before: Vec<Envelope> = (0..3).map(|n| message("before", n)).collect();
    // Publish where no group reads yet (backends without replay keep nothing there).
    publish_all(&bus, "stream", &before).await;
    // A gap on either side of the start time, so that no timestamp straddles it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after: Vec<Envelope> = (0..3).map(|n| message("after", n)).collect();
    let after_ids = publish_all(&bus, "stream", &after).await;

    let seen = Seen::default();
    let sink = seen.clone();
    let options = StreamOptions { start: StartFrom::Time(start), ..StreamOptions::default() };
    let started = bus
        .process_stream("stream", "from-a-time", options, move |batch: Vec<Envelope>| {
            for m in batch {
                sink.push(m);
            }
            futures::future::ready(Ok(()))
        })
        .await;
    if !f.backend().capabilities().replay {
        let err = started.err().expect("a backend without replay refuses a start time");
        assert!(matches!(err, BusError::Unsupported { .. }), "{err}");
        f.finish().await;
        return;
    }
    started.expect("start from a time");
    eventually(f.patience, || missing(&after_ids, &seen.ids())).await;
    let labels: Vec<String> = seen.all().iter().map(label).collect();
    assert_eq!(labels, ["after-0", "after-1", "after-2"], "only what was published after the start time, in order");
    f.finish().await;
}

async fn a_message_delivered_twice_is_handled_once(f: Fixture) {
    // A producer that retries after a lost acknowledgement sends the same message (same id)
    // again; the subscription's deduplication layer hands it to the handler once.
    let bus = f.bus("publisher").await;
    let seen = Seen::default();
    bus.subscribe("events", "dedup", seen.handler()).await.expect("subscribe");
    let once = message("k", 1);
    let after = message("k", 2);
    for env in [&once, &once, &after] {
        bus.publish("events", env).await.expect("publish");
    }
    eventually(f.patience, || if seen.ids().contains(&after.id) { Ok(()) } else { Err("the last message".into()) })
        .await;
    let handled: Vec<String> = seen.all().iter().map(label).collect();
    assert_eq!(handled, ["k-1", "k-2"], "the repeated id was handled once, in order");
    f.finish().await;
}

async fn point_to_point_hands_each_message_to_one_consumer(f: Fixture) {
    // Two instances of one service: one consumer each, in one group. Warm-up commands take a
    // while to handle, so that a consumer busy with one leaves the next to the other.
    let (first, second) = (f.bus("worker").await, f.bus("worker").await);
    let (a, b) = (Seen::default(), Seen::default());
    let worker = |seen: &Seen| {
        let seen = seen.clone();
        move |env: Envelope| {
            let seen = seen.clone();
            async move {
                let warm_up = label(&env).starts_with("warmup");
                seen.push(env);
                if warm_up {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok::<(), HandlerError>(())
            }
        }
    };
    first.subscribe("commands", "workers", worker(&a)).await.expect("subscribe a");
    second.subscribe("commands", "workers", worker(&b)).await.expect("subscribe b");

    // Wait until both consumers take part (on Kafka: until the group has settled with both
    // members) by sending warm-up commands, each once the one before is being handled,
    // until each consumer has started one.
    let deadline = Instant::now() + f.patience;
    for n in 0.. {
        if a.len() > 0 && b.len() > 0 {
            break;
        }
        let warm_up = message(&format!("warmup{n}"), n);
        first.send("commands", &warm_up).await.expect("send a warm-up");
        let started = || a.ids().contains(&warm_up.id) || b.ids().contains(&warm_up.id);
        while !started() {
            assert!(
                Instant::now() < deadline,
                "both consumers active within {:?}: a={}, b={}",
                f.patience,
                a.len(),
                b.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let commands: Vec<Envelope> = (0..20).map(|n| message(&format!("order{n}"), n)).collect();
    for c in &commands {
        first.send("commands", c).await.expect("send");
    }
    let sent: HashSet<Uuid> = commands.iter().map(|c| c.id).collect();
    let both = || a.all().into_iter().chain(b.all()).filter(|e| sent.contains(&e.id)).collect::<Vec<_>>();
    eventually(f.patience, || missing(&sent, &both().iter().map(|e| e.id).collect())).await;

    let handled = both();
    let mut counts: HashMap<Uuid, usize> = HashMap::new();
    for e in &handled {
        *counts.entry(e.id).or_default() += 1;
    }
    let repeated: Vec<String> = handled.iter().filter(|e| counts[&e.id] > 1).map(label).collect();
    assert!(repeated.is_empty(), "handled more than once: {repeated:?}");
    assert_eq!(handled.len(), 20);
    f.finish().await;
}

async fn request_gets_the_typed_reply_or_times_out(f: Fixture) {
    let server = f.bus("inventory").await;
    let client = f.bus("order").await;
    server
        .serve("queries", "inventory", |request: Envelope| async move {
            let query: GetPetStatus = request.decode().map_err(HandlerError::fatal)?;
            let reply = PetStatus { pet_id: query.pet_id, pet: None };
            Envelope::from_message("/petstore/inventory", &reply, &MessageContext::caused_by(&request))
                .map_err(HandlerError::fatal)
        })
        .await
        .expect("serve");

    // Concurrent requests each get their own reply.
    let requests: Vec<Envelope> = (0..3).map(|n| message("cat", n)).collect();
    let replies =
        futures::future::join_all(requests.iter().map(|r| client.request("queries", r.clone(), f.patience))).await;
    for (request, reply) in requests.iter().zip(replies) {
        let reply = reply.expect("a reply");
        assert_eq!(reply.causation_id, Some(request.id.to_string()));
        let status: PetStatus = reply.decode().expect("a PetStatus");
        assert_eq!(status.pet_id, label(request));
        assert_eq!(status.pet, None);
    }

    // Nobody serves `unserved`: the caller gets a timeout, in time.
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = client.request("unserved", message("dog", 1), timeout).await.expect_err("no reply");
    let elapsed = started.elapsed();
    assert!(
        matches!(&err, BusError::Timeout { channel, timeout: t } if channel == "unserved" && *t == timeout),
        "{err}"
    );
    assert!(elapsed >= timeout && elapsed < timeout + Duration::from_secs(2), "timed out after {elapsed:?}");
    f.finish().await;
}

async fn messages_of_one_key_are_handled_in_publication_order(f: Fixture) {
    let bus = f.bus("ordering").await;
    let seen = Seen::default();
    bus.subscribe("stream", "ordered", seen.handler()).await.expect("subscribe");

    let messages: Vec<Envelope> = (0..10).flat_map(|n| (0..5).map(move |k| message(&format!("key{k}"), n))).collect();
    let sent = publish_all(&bus, "stream", &messages).await;
    eventually(f.patience, || missing(&sent, &seen.ids())).await;

    let per_key = order_per_key(&seen.all());
    assert_eq!(per_key.len(), 5);
    for (key, order) in per_key {
        assert_eq!(order, (0..10).collect::<Vec<_>>(), "order of {key}");
    }
    f.finish().await;
}

async fn a_failing_message_is_retried_until_it_succeeds(f: Fixture) {
    let bus = f.bus("flaky").await;
    let attempts: Arc<Mutex<HashMap<Uuid, u32>>> = Arc::default();
    let done = Seen::default();
    let handler = {
        let (attempts, done) = (attempts.clone(), done.clone());
        move |env: Envelope| {
            let attempt = {
                let mut attempts = attempts.lock().expect("attempts");
                let n = attempts.entry(env.id).or_default();
                *n += 1;
                *n
            };
            let result = if label(&env).starts_with("flaky") && attempt <= 2 {
                Err(HandlerError::retriable(format!("attempt {attempt} failed")))
            } else {
                done.push(env);
                Ok(())
            };
            futures::future::ready(result)
        }
    };
    bus.subscribe("events", "retrying", handler).await.expect("subscribe");
    let messages = [message("flaky", 1), message("flaky", 2), message("steady", 1)];
    let sent = publish_all(&bus, "events", &messages).await;
    eventually(f.patience, || missing(&sent, &done.ids())).await;

    let attempts = attempts.lock().expect("attempts").clone();
    assert_eq!(attempts[&messages[0].id], 3, "failed twice, succeeded on the third attempt");
    assert_eq!(attempts[&messages[1].id], 3);
    assert_eq!(attempts[&messages[2].id], 1);
    // Not dead-lettered: the dead-letter channel stays empty.
    let mut dlq = f.dead_letters("events").await;
    let nothing = tokio::time::timeout(Duration::from_secs(1), dlq.receive(1, Duration::ZERO)).await;
    assert!(nothing.is_err(), "unexpected dead letter: {:?}", nothing.map(|r| r.map(|d| d.len())));
    dlq.close().await;
    f.finish().await;
}

async fn a_message_that_keeps_failing_is_dead_lettered(f: Fixture) {
    let bus = f.bus("audit").await;
    let done = Seen::default();
    let handler = {
        let done = done.clone();
        move |env: Envelope| {
            let result = match label(&env).split('-').next() {
                Some("poison") => Err(HandlerError::retriable("database unavailable")),
                Some("garbage") => Err(HandlerError::fatal("cannot parse")),
                _ => {
                    done.push(env);
                    Ok(())
                }
            };
            futures::future::ready(result)
        }
    };
    bus.subscribe("events", "auditor", handler).await.expect("subscribe");
    // The next message of the same key must still get through.
    let messages = [message("poison", 1), message("garbage", 1), message("poison", 2)];
    for m in &messages {
        bus.publish("events", m).await.expect("publish");
    }
    let mut next = message("after", 1);
    next.partition_key = Some("poison".into());
    bus.publish("events", &next).await.expect("publish");

    eventually(
        f.patience,
        || {
            if done.ids().contains(&next.id) { Ok(()) } else { Err("next message not handled".into()) }
        },
    )
    .await;

    let mut dlq = f.dead_letters("events").await;
    let letters = receive_ids(&mut dlq, f.patience, &[messages[0].id, messages[1].id, messages[2].id]).await;
    let letter = &letters[&messages[0].id];
    let dlq_attribute = |letter: &Envelope, name: &str| letter.extensions.get(name).cloned();
    assert_eq!(dlq_attribute(letter, DLQ_ERROR).as_deref(), Some("database unavailable"));
    assert_eq!(dlq_attribute(letter, DLQ_ATTEMPTS).as_deref(), Some("3"));
    assert_eq!(dlq_attribute(letter, DLQ_ORIGIN).as_deref(), Some("events/auditor"));
    assert_eq!(letter.data, messages[0].data, "the dead letter carries the original payload");
    assert_eq!(dlq_attribute(&letters[&messages[2].id], DLQ_ATTEMPTS).as_deref(), Some("3"));
    // A fatal error is dead-lettered without retries.
    let letter = &letters[&messages[1].id];
    assert_eq!(dlq_attribute(letter, DLQ_ATTEMPTS).as_deref(), Some("1"));
    assert_eq!(dlq_attribute(letter, DLQ_ERROR).as_deref(), Some("cannot parse"));
    assert!(!letters.contains_key(&next.id), "the message after the poison was handled, not dead-lettered");
    dlq.close().await;
    f.finish().await;
}

async fn a_dead_letter_is_read_back_and_replayed_to_its_channel(f: Fixture) {
    let bus = f.bus("billing").await;
    let broken = Arc::new(AtomicBool::new(true));
    let done = Seen::default();
    let handler = {
        let (broken, done) = (broken.clone(), done.clone());
        move |env: Envelope| {
            let result = if broken.load(Ordering::SeqCst) {
                Err(HandlerError::fatal("no such account"))
            } else {
                done.push(env);
                Ok(())
            };
            futures::future::ready(result)
        }
    };
    bus.subscribe("commands", "billing", handler).await.expect("subscribe");
    let letters = Seen::default();
    bus.subscribe_dead_letters("commands", letters.handler()).await.expect("subscribe to the dead letters");
    let poison = message("account", 1);
    bus.publish("commands", &poison).await.expect("publish");

    eventually(f.patience, || missing(&HashSet::from([poison.id]), &letters.ids())).await;
    let letter = letters.all().into_iter().find(|l| l.id == poison.id).expect("the dead letter");
    let read = DeadLetter::parse(&letter).expect("a dead letter");
    assert_eq!((read.error.as_str(), read.attempts), ("no such account", 1));
    assert_eq!((read.channel.as_str(), read.group.as_str()), ("commands", "billing"));
    assert!(read.dead_lettered_at.is_some(), "the bus records when it gave up");
    assert_eq!((read.message.id, &read.message.data), (poison.id, &poison.data));

    // Replayed before the cause is fixed, it is dead-lettered again: a second letter, which
    // neither the transport nor the dead-letter consumer takes for a duplicate.
    bus.replay(&letter).await.expect("replay");
    let copies = || letters.all().into_iter().filter(|l| l.id == poison.id).collect::<Vec<_>>();
    eventually(f.patience, || if copies().len() == 2 { Ok(()) } else { Err(format!("{} letters", copies().len())) })
        .await;
    let again = DeadLetter::parse(&copies()[1]).expect("a dead letter");
    assert!(again.dead_lettered_at > read.dead_lettered_at, "{again:?}");

    // The cause is fixed: the replay reaches the origin's handler, with the original id and
    // without the dead-letter attributes.
    broken.store(false, Ordering::SeqCst);
    bus.replay(&letter).await.expect("replay");
    eventually(f.patience, || missing(&HashSet::from([poison.id]), &done.ids())).await;
    let replayed = done.all().into_iter().find(|e| e.id == poison.id).expect("replayed");
    assert!(replayed.extensions.keys().all(|k| !k.starts_with("dlq")), "{:?}", replayed.extensions);
    assert_eq!(label(&replayed), label(&poison));

    // A letter can only go back to a channel of the bus that carries publications.
    let mut stray = letter.clone();
    stray.extensions.insert(DLQ_ORIGIN.into(), "nowhere/billing".into());
    assert!(matches!(bus.replay(&stray).await, Err(BusError::UnknownChannel(c)) if c == "nowhere"));
    stray.extensions.insert(DLQ_ORIGIN.into(), "queries/billing".into());
    assert!(matches!(bus.replay(&stray).await, Err(BusError::Config(_))));
    f.finish().await;
}

async fn nothing_is_lost_across_a_consumer_restart(f: Fixture) {
    let bus = f.bus("durable").await;
    let seen = Seen::default();
    let before: Vec<Envelope> = (0..5).map(|n| message(&format!("a{n}"), n)).collect();
    let after: Vec<Envelope> = (5..10).map(|n| message(&format!("a{n}"), n)).collect();

    let subscription = bus.subscribe("commands", "workers", seen.handler()).await.expect("subscribe");
    let first = publish_all(&bus, "commands", &before).await;
    eventually(f.patience, || missing(&first, &seen.ids())).await;
    subscription.stop().await;

    // Published while nobody consumes.
    let second = publish_all(&bus, "commands", &after).await;
    bus.subscribe("commands", "workers", seen.handler()).await.expect("subscribe again");
    let all: HashSet<Uuid> = first.union(&second).copied().collect();
    eventually(f.patience, || missing(&all, &seen.ids())).await;
    f.finish().await;
}

async fn a_stream_is_processed_in_ordered_batches(f: Fixture) {
    let bus = f.bus("analytics").await;
    // Backends without replay keep messages only for groups that exist: create the group
    // first, as a deployment does before its producers start.
    if !f.backend().capabilities().replay {
        let group = format!("{}analytics", f.config.topic_prefix);
        f.backend().ensure_group(&f.physical("stream"), &group).await.expect("ensure the group");
    }
    let messages: Vec<Envelope> = (0..10).flat_map(|n| (0..5).map(move |k| message(&format!("pet{k}"), n))).collect();
    // Published before the group starts, so that batches can fill.
    let sent = publish_all(&bus, "stream", &messages).await;

    let batches: Arc<Mutex<Vec<Vec<Envelope>>>> = Arc::default();
    let processor = {
        let batches = batches.clone();
        move |batch: Vec<Envelope>| {
            batches.lock().expect("batches").push(batch);
            futures::future::ready(Ok::<(), HandlerError>(()))
        }
    };
    let options = StreamOptions { batch_size: 10, max_wait: Duration::from_millis(200), start: StartFrom::Earliest };
    bus.process_stream("stream", "analytics", options, processor).await.expect("process_stream");
    let handled = || batches.lock().expect("batches").iter().flatten().cloned().collect::<Vec<_>>();
    eventually(f.patience, || missing(&sent, &handled().iter().map(|e| e.id).collect())).await;

    let sizes: Vec<usize> = batches.lock().expect("batches").iter().map(Vec::len).collect();
    assert!(sizes.iter().all(|&n| (1..=10).contains(&n)), "batch sizes {sizes:?}");
    assert!(sizes.iter().any(|&n| n > 1), "no batch had more than one message: {sizes:?}");
    for (key, order) in order_per_key(&handled()) {
        assert_eq!(order, (0..10).collect::<Vec<_>>(), "order of {key}");
    }
    f.finish().await;
}

async fn a_call_that_does_not_fit_the_channel_pattern_is_a_config_error(f: Fixture) {
    let bus = f.bus("confused").await;
    let err = bus.send("events", &message("x", 1)).await.expect_err("send on a pub/sub channel");
    assert!(matches!(&err, BusError::Config(m) if m.contains("messaging.channels.events")), "{err}");
    let err = bus.request("events", message("x", 2), Duration::from_secs(1)).await.expect_err("request on pub/sub");
    assert!(matches!(&err, BusError::Config(m) if m.contains("messaging.channels.events")), "{err}");
    let err = bus
        .serve("events", "g", |r: Envelope| async move { Ok::<_, HandlerError>(r) })
        .await
        .err()
        .expect("serve on pub/sub");
    assert!(matches!(&err, BusError::Config(m) if m.contains("messaging.channels.events")), "{err}");
    let err = bus.publish("nowhere", &message("x", 3)).await.expect_err("undeclared channel");
    assert!(matches!(&err, BusError::UnknownChannel(c) if c == "nowhere"), "{err}");

    let mut config = f.config.clone();
    let broken = ChannelConfig {
        pattern: Pattern::PubSub,
        backend: None,
        partitions: 0,
        start: StartFrom::Earliest,
        concurrency: None,
    };
    config.channels.insert("broken".into(), broken);
    let err = Bus::new(&f.backends, &config, "broken", CancellationToken::new()).await.err().expect("0 partitions");
    assert!(matches!(&err, BusError::Config(m) if m.contains("messaging.channels.broken.partitions")), "{err}");
    f.finish().await;
}

/// The fixture's backend with fewer patterns: stands in for a backend that lacks one.
struct PubSubOnly(Arc<dyn Backend>);

#[async_trait]
impl Backend for PubSubOnly {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities { patterns: &[Pattern::PubSub], ..self.0.capabilities() }
    }
    async fn declare(&self, channel: &str, partitions: u32) -> Result<(), BusError> {
        self.0.declare(channel, partitions).await
    }
    async fn publish(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
        self.0.publish(channel, envelope).await
    }
    async fn subscribe(&self, channel: &str, options: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError> {
        self.0.subscribe(channel, options).await
    }
    async fn health(&self) -> Result<(), BusError> {
        self.0.health().await
    }
    async fn backlog(&self, channel: &str, group: &str) -> Result<Option<u64>, BusError> {
        self.0.backlog(channel, group).await
    }
}

async fn a_pattern_the_backend_lacks_fails_bus_new(f: Fixture) {
    let limited = f.backends.clone().with(f.kind, Arc::new(PubSubOnly(f.backend())));
    let err = Bus::new(&limited, &f.config, "limited", CancellationToken::new()).await.err().expect("must fail");
    // `commands` is the first channel (alphabetically) that is not pub/sub.
    assert!(matches!(&err, BusError::Config(m) if m.contains("messaging.channels.commands.pattern")), "{err}");
    assert!(err.to_string().contains("point_to_point"), "{err}");
    f.finish().await;
}

/// Messages in hand at once, overall and per key, as a handler sees them.
#[derive(Clone, Default)]
struct InHand(Arc<Mutex<InHandCounts>>);

#[derive(Default)]
struct InHandCounts {
    per_key: HashMap<String, usize>,
    now: usize,
    most: usize,
    most_of_one_key: usize,
}

impl InHand {
    fn enter(&self, key: &str) {
        let mut c = self.0.lock().expect("in hand");
        let of_key = c.per_key.entry(key.to_owned()).or_default();
        *of_key += 1;
        let of_key = *of_key;
        c.now += 1;
        c.most = c.most.max(c.now);
        c.most_of_one_key = c.most_of_one_key.max(of_key);
    }

    fn leave(&self, key: &str) {
        let mut c = self.0.lock().expect("in hand");
        if let Some(n) = c.per_key.get_mut(key) {
            *n -= 1;
        }
        c.now -= 1;
    }

    fn most(&self) -> (usize, usize) {
        let c = self.0.lock().expect("in hand");
        (c.most, c.most_of_one_key)
    }
}

async fn under_concurrency_keys_run_side_by_side_and_each_keeps_its_order(f: Fixture) {
    let bus = f.bus("parallel").await;
    let (seen, in_hand) = (Seen::default(), InHand::default());
    let handler = {
        let (seen, in_hand) = (seen.clone(), in_hand.clone());
        move |env: Envelope| {
            let (seen, in_hand) = (seen.clone(), in_hand.clone());
            async move {
                let key = env.partition_key.clone().unwrap_or_default();
                in_hand.enter(&key);
                tokio::time::sleep(Duration::from_millis(10)).await;
                seen.push(env);
                in_hand.leave(&key);
                Ok::<(), HandlerError>(())
            }
        }
    };
    bus.subscribe("parallel", "workers", handler).await.expect("subscribe");

    let messages: Vec<Envelope> = (0..12).flat_map(|n| (0..6).map(move |k| message(&format!("key{k}"), n))).collect();
    let sent = publish_all(&bus, "parallel", &messages).await;
    eventually(f.patience, || missing(&sent, &seen.ids())).await;

    let (most, most_of_one_key) = in_hand.most();
    assert!(most > 1, "the channel's concurrency is 8, yet messages were handled one at a time");
    assert!(most <= 8, "{most} messages in hand at once; the channel's concurrency is 8");
    assert_eq!(most_of_one_key, 1, "two messages of one key were in hand at once");
    let per_key = order_per_key(&seen.all());
    assert_eq!(per_key.len(), 6);
    for (key, order) in per_key {
        assert_eq!(order, (0..12).collect::<Vec<_>>(), "order of {key}");
    }
    f.finish().await;
}

/// What handling a message did, as a service records it: the message id in an inbox and
/// the effect, in one step (a service does both in one transaction), so that a redelivery
/// finds its id and changes nothing. Also counts deliveries, repeats included.
#[derive(Clone, Default)]
struct Effects(Arc<Mutex<EffectLog>>);

#[derive(Default)]
struct EffectLog {
    inbox: HashSet<Uuid>,
    applied: Vec<Envelope>,
    deliveries: usize,
}

impl Effects {
    /// Applies `env`'s effect unless the inbox has it; counts deliveries either way.
    fn apply(&self, env: Envelope) {
        let mut log = self.0.lock().expect("effects");
        log.deliveries += 1;
        if log.inbox.insert(env.id) {
            log.applied.push(env);
        }
    }

    fn ids(&self) -> HashSet<Uuid> {
        self.0.lock().expect("effects").inbox.clone()
    }

    fn applied(&self) -> usize {
        self.0.lock().expect("effects").applied.len()
    }

    fn deliveries(&self) -> usize {
        self.0.lock().expect("effects").deliveries
    }

    /// A handler that takes a few milliseconds per message, then applies it.
    fn handler(
        &self,
    ) -> impl Fn(Envelope) -> futures::future::BoxFuture<'static, Result<(), HandlerError>> + Send + Sync + use<> {
        let effects = self.clone();
        move |env| {
            let effects = effects.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                effects.apply(env);
                Ok(())
            })
        }
    }
}

async fn a_consumer_killed_mid_batch_loses_nothing_and_repeats_no_effect(f: Fixture) {
    let f = f.with_quick_redelivery().await;
    let messages: Vec<Envelope> = (0..10).flat_map(|n| (0..8).map(move |k| message(&format!("key{k}"), n))).collect();
    let effects = Effects::default();

    // The instance that dies runs on a runtime of its own: shutting that down drops its
    // tasks where they stand, as a killed process would — messages in hand, acknowledgements
    // not sent, the consumer not closed.
    let doomed = f.bus("crashing").await;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let (subscribed, ready) = tokio::sync::oneshot::channel();
    let handler = effects.handler();
    runtime.spawn(async move {
        let subscription = doomed.subscribe("parallel", "workers", handler).await.expect("subscribe");
        let _ = subscribed.send(());
        // Runs until the runtime is shut down.
        std::future::pending::<()>().await;
        drop(subscription);
    });
    ready.await.expect("the doomed instance subscribed");
    let bus = f.bus("crashing").await;
    let sent = publish_all(&bus, "parallel", &messages).await;
    eventually(f.patience, || {
        let n = effects.ids().len();
        if n >= messages.len() / 3 { Ok(()) } else { Err(format!("{n} handled before the kill")) }
    })
    .await;
    runtime.shutdown_background();
    let at_kill = effects.ids().len();

    bus.subscribe("parallel", "workers", effects.handler()).await.expect("subscribe the new instance");
    eventually(f.patience, || missing(&sent, &effects.ids())).await;
    assert!(at_kill < messages.len(), "the instance must die with messages left to handle");
    // Each message's effect once: what the dead instance had in hand comes again (some
    // backends only after their redelivery timeout, and then after later messages of its
    // key) and the inbox drops what was done already.
    assert_eq!(effects.applied(), messages.len());
    eprintln!("killed after {at_kill} effects; {} deliveries for {} messages", effects.deliveries(), messages.len());
    f.finish().await;
}
