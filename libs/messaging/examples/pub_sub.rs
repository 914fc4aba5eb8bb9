//! Pub/sub: every subscribing group gets every event.
//!
//! ```text
//! cargo run -p messaging --example pub_sub [-- memory|kafka|nats|rabbitmq|redis|sns]
//! ```

mod common;

use std::{sync::Arc, time::Duration};

use messaging::{Envelope, MessageContext};
use tokio::sync::Mutex;

#[tokio::main]
async fn main() {
    let backend = common::backend_from_args();
    let Some((bus, _shutdown)) = common::bus(&backend, "pub-sub-example").await else { std::process::exit(1) };
    let received = Arc::new(Mutex::new(Vec::new()));
    for group in ["catalog-cache", "analytics"] {
        let received = received.clone();
        bus.subscribe("pet-events", group, move |msg: Envelope| {
            let received = received.clone();
            async move {
                let pet = msg.decode::<contracts::inventory::GetPetStatus>()?.pet_id;
                received.lock().await.push(format!("{group} got {pet}"));
                Ok(())
            }
        })
        .await
        .expect("subscribe");
    }
    for pet in ["goldfish-004", "persian-cat-002", "cockatiel-003"] {
        let event = Envelope::from_message(bus.source(), &common::pet_message(pet), &MessageContext::default())
            .expect("encode");
        bus.publish("pet-events", &event).await.expect("publish");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.lock().await.len() < 6 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for line in received.lock().await.iter() {
        println!("{line}");
    }
    bus.close().await;
}
