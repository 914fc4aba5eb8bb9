//! What the bus reports about backlogs: the sampler's consumer-lag and dead-letter-depth
//! gauges, and the retry counter of batch processing, as a Prometheus scrape would see them.
//!
//! The bus reports from its own tasks, so a thread-local recorder would miss it: this test
//! binary installs a global recorder of its own, and each test uses channels of its own.

#![cfg(feature = "memory")]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use contracts::inventory::GetPetStatus;
use messaging::{Backends, Bus, Envelope, HandlerError, MessageContext, MessagingConfig, StreamOptions};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Metric name and sorted labels.
type Series = (String, Vec<(String, String)>);

/// Every counter and gauge the process registered, by series (a gauge holds its `f64` bits).
#[derive(Default)]
struct Recorded(Mutex<HashMap<Series, Arc<AtomicU64>>>);

impl Recorded {
    fn cell(&self, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<(String, String)> =
            key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        labels.sort();
        self.0.lock().expect("recorded").entry((key.name().to_owned(), labels)).or_default().clone()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let mut labels: Vec<(String, String)> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        labels.sort();
        self.0.lock().expect("recorded").get(&(name.to_owned(), labels)).map(|cell| cell.load(Ordering::Relaxed))
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.value(name, labels).map(f64::from_bits)
    }
}

struct Global(&'static Recorded);

impl Recorder for Global {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The process's recorder, installed by the first test that asks.
fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<&'static Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let recorded: &'static Recorded = Box::leak(Box::default());
        metrics::set_global_recorder(Global(recorded)).expect("the only recorder of this test binary");
        recorded
    })
}

/// A bus of the memory backend with `channels`, a topic prefix (so that logical and physical
/// names differ) and a short sampling interval.
async fn bus(channels: serde_json::Value) -> Bus {
    let config: MessagingConfig = serde_json::from_value(serde_json::json!({
        "default_backend": "memory",
        "topic_prefix": "test.",
        "lag_interval": "20ms",
        "retry": { "max_attempts": 3, "initial_backoff_ms": 1, "max_backoff_ms": 5 },
        "channels": channels,
    }))
    .expect("config");
    let backends = Backends::connect(&config).await.expect("memory backend");
    Bus::new(&backends, &config, "auditing", CancellationToken::new()).await.expect("bus")
}

fn message(label: &str) -> Envelope {
    let mut env =
        Envelope::from_message("/test", &GetPetStatus { pet_id: label.to_owned() }, &MessageContext::default())
            .expect("encode");
    env.partition_key = Some(label.to_owned());
    env
}

/// Polls `check` until it passes; fails with its last complaint after five seconds.
async fn eventually(mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => panic!("not within 5 s: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn expect(what: &str, got: Option<f64>, want: f64) -> Result<(), String> {
    if got == Some(want) { Ok(()) } else { Err(format!("{what} is {got:?}, want {want}")) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_reports_consumer_lag_and_dead_letter_depth_by_logical_name() {
    let recorded = recorded();
    let bus = bus(serde_json::json!({ "audit-events": { "pattern": "pub_sub" } })).await;
    // Poison is dead-lettered at once; anything else waits for a permit, so it stays
    // delivered but unacknowledged.
    let gate = Arc::new(Semaphore::new(0));
    let handler = {
        let gate = gate.clone();
        move |env: Envelope| {
            let gate = gate.clone();
            async move {
                let label = env.decode::<GetPetStatus>().map_err(HandlerError::fatal)?.pet_id;
                if label.starts_with("poison") {
                    return Err(HandlerError::fatal("cannot parse"));
                }
                gate.acquire().await.map_err(HandlerError::fatal)?.forget();
                Ok(())
            }
        }
    };
    bus.subscribe("audit-events", "auditor", handler).await.expect("subscribe");
    for label in ["poison-1", "poison-2", "held-1", "held-2", "held-3"] {
        bus.publish("audit-events", &message(label)).await.expect("publish");
    }

    let lag = || {
        recorded.gauge(
            "petstore_consumer_lag_messages",
            &[("channel", "audit-events"), ("group", "auditor"), ("backend", "memory")],
        )
    };
    let depth = || recorded.gauge("petstore_dlq_depth_messages", &[("channel", "audit-events"), ("backend", "memory")]);
    eventually(|| {
        expect("the lag", lag(), 3.0)?;
        expect("the dead-letter depth", depth(), 2.0)
    })
    .await;

    gate.add_permits(3);
    eventually(|| expect("the lag", lag(), 0.0)).await;
    assert_eq!(depth(), Some(2.0), "dead letters stay until an operator takes them");
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_counted_on_its_channel() {
    let recorded = recorded();
    let bus = bus(serde_json::json!({ "retried-stream": { "pattern": "streaming" } })).await;
    let failures = Arc::new(AtomicU64::new(0));
    let processor = {
        let failures = failures.clone();
        move |_batch: Vec<Envelope>| {
            let first = failures.fetch_add(1, Ordering::Relaxed) == 0;
            futures::future::ready(if first { Err(HandlerError::retriable("busy")) } else { Ok(()) })
        }
    };
    bus.process_stream("retried-stream", "batcher", StreamOptions::default(), processor).await.expect("process");
    bus.publish("retried-stream", &message("one")).await.expect("publish");

    let retried = || recorded.value("petstore_messages_retried_total", &[("channel", "retried-stream")]);
    eventually(|| {
        let attempts = failures.load(Ordering::Relaxed);
        if attempts == 2 && retried() == Some(1) {
            Ok(())
        } else {
            Err(format!(
                "{attempts} attempts, counted {:?} retries; want one failure, one retry, then success",
                retried()
            ))
        }
    })
    .await;
    bus.close().await;
}
