//! Side by side: the four patterns on every backend that is compiled in and reachable, with
//! what each backend declares it guarantees and the latency measured here.
//!
//! ```text
//! cargo run -p messaging --all-features --example compare_patterns
//! ```

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use contracts::inventory::{GetPetStatus, PetStatus};
use messaging::{BackendKind, Bus, Envelope, MessageContext, StreamOptions};
use tokio::sync::mpsc;

const ROUNDS: usize = 20;
const LIMIT: Duration = Duration::from_secs(30);

fn envelope(bus: &Bus, label: String) -> Envelope {
    Envelope::from_message(bus.source(), &GetPetStatus { pet_id: label }, &MessageContext::default()).expect("encode")
}

fn p50(mut samples: Vec<Duration>) -> String {
    if samples.is_empty() {
        return "—".into();
    }
    samples.sort();
    format!("{:.2} ms", samples[samples.len() / 2].as_secs_f64() * 1e3)
}

/// Publishes one message at a time on `channel` and waits for the handler: the round trip.
async fn one_way(bus: &Bus, channel: &str, point_to_point: bool) -> String {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let handler = move |_msg: Envelope| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(());
            Ok(())
        }
    };
    if bus.subscribe(channel, "compare", handler).await.is_err() {
        return "unsupported".into();
    }
    // The first delivery includes joining the group; measure the rounds after it.
    let mut samples = Vec::new();
    for n in 0..=ROUNDS {
        let started = Instant::now();
        let message = envelope(bus, format!("m{n}"));
        let sent =
            if point_to_point { bus.send(channel, &message).await } else { bus.publish(channel, &message).await };
        if sent.is_err() || tokio::time::timeout(LIMIT, rx.recv()).await.is_err() {
            return "no delivery".into();
        }
        if n > 0 {
            samples.push(started.elapsed());
        }
    }
    p50(samples)
}

async fn request_reply(bus: &Bus) -> String {
    let source = bus.source().to_owned();
    let responder = move |request: Envelope| {
        let source = source.clone();
        async move {
            let q = request.decode::<GetPetStatus>()?;
            Ok(Envelope::from_message(
                &source,
                &PetStatus { pet_id: q.pet_id, pet: None },
                &MessageContext::caused_by(&request),
            )?)
        }
    };
    if bus.serve("pet-queries", "compare", responder).await.is_err() {
        return "unsupported".into();
    }
    let mut samples = Vec::new();
    for n in 0..=ROUNDS {
        let started = Instant::now();
        if bus.request("pet-queries", envelope(bus, format!("q{n}")), LIMIT).await.is_err() {
            return "timeout".into();
        }
        if n > 0 {
            samples.push(started.elapsed());
        }
    }
    p50(samples)
}

async fn stream(bus: &Bus) -> String {
    let (tx, mut rx) = mpsc::unbounded_channel::<usize>();
    let options = StreamOptions { batch_size: 50, max_wait: Duration::from_millis(20), ..StreamOptions::default() };
    let processor = move |batch: Vec<Envelope>| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(batch.len());
            Ok(())
        }
    };
    if bus.process_stream("pet-stream", "compare", options, processor).await.is_err() {
        return "unsupported".into();
    }
    let started = Instant::now();
    for n in 0..200 {
        if bus.publish("pet-stream", &envelope(bus, format!("s{n}"))).await.is_err() {
            return "publish failed".into();
        }
    }
    let (mut got, mut batches) = (0, 0);
    while got < 200 {
        match tokio::time::timeout(LIMIT, rx.recv()).await {
            Ok(Some(n)) => {
                got += n;
                batches += 1;
            }
            _ => return format!("{got}/200 delivered"),
        }
    }
    format!("200 in {batches} batches, {:.0} ms", started.elapsed().as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    println!(
        "{:<9} {:<33} {:>11} {:>15} {:>17} {:>28}",
        "backend", "declares", "pub/sub p50", "point-to-point", "request/reply p50", "stream (200 events)"
    );
    for (name, kind) in [
        ("memory", BackendKind::Memory),
        ("kafka", BackendKind::Kafka),
        ("nats", BackendKind::Nats),
        ("rabbitmq", BackendKind::Rabbitmq),
        ("redis", BackendKind::Redis),
        ("sns", BackendKind::Sns),
    ] {
        let Some((bus, backends, _shutdown)) = common::connect(name, "compare").await else {
            println!("{name:<9} (not compiled in or not reachable)");
            continue;
        };
        let declares = backends.get(kind).map_or_else(String::new, |b| {
            let c = b.capabilities();
            let flag = |on: bool, what: &str| if on { what.to_owned() } else { format!("no-{what}") };
            format!(
                "{} {} {}",
                flag(c.durable, "durable"),
                flag(c.replay, "replay"),
                flag(c.ordering_per_key, "key-order")
            )
        });
        let bus = Arc::new(bus);
        let pub_sub = one_way(&bus, "pet-events", false).await;
        let p2p = one_way(&bus, "pet-commands", true).await;
        let rr = request_reply(&bus).await;
        let st = stream(&bus).await;
        println!("{name:<9} {declares:<33} {pub_sub:>11} {p2p:>15} {rr:>17} {st:>28}");
        bus.close().await;
    }
}
