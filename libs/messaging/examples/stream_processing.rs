//! Streaming: events processed in batches, in order per key, by a consumer group.
//!
//! ```text
//! cargo run -p messaging --example stream_processing [-- memory|kafka|nats|rabbitmq|redis|sns]
//! ```

mod common;

use std::{sync::Arc, time::Duration};

use messaging::{Envelope, MessageContext, StreamOptions};
use tokio::sync::Mutex;

#[tokio::main]
async fn main() {
    let backend = common::backend_from_args();
    let Some((bus, _shutdown)) = common::bus(&backend, "stream-example").await else { std::process::exit(1) };
    let batches: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let sink = batches.clone();
    let options = StreamOptions { batch_size: 8, max_wait: Duration::from_millis(100), ..StreamOptions::default() };
    bus.process_stream("pet-stream", "stock-levels", options, move |batch: Vec<Envelope>| {
        let sink = sink.clone();
        async move {
            let labels = batch
                .iter()
                .map(|m| m.decode::<contracts::inventory::GetPetStatus>().map(|p| p.pet_id))
                .collect::<Result<Vec<_>, _>>()?;
            sink.lock().await.push(labels);
            Ok(())
        }
    })
    .await
    .expect("process_stream");
    for n in 0..24 {
        let mut event = Envelope::from_message(
            bus.source(),
            &common::pet_message(&format!("store-{}#{n:02}", n % 3)),
            &MessageContext::default(),
        )
        .expect("encode");
        event.partition_key = Some(format!("store-{}", n % 3));
        bus.publish("pet-stream", &event).await.expect("publish");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while batches.lock().await.iter().map(Vec::len).sum::<usize>() < 24 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, batch) in batches.lock().await.iter().enumerate() {
        println!("batch {i}: {}", batch.join(" "));
    }
    bus.close().await;
}
