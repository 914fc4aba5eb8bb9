//! Point-to-point: commands to one group, shared by its consumers — each command is handled
//! by exactly one of them.
//!
//! ```text
//! cargo run -p messaging --example point_to_point [-- memory|kafka|nats|rabbitmq|redis|sns]
//! ```

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use messaging::{Envelope, MessageContext};
use tokio::sync::Mutex;

#[tokio::main]
async fn main() {
    let backend = common::backend_from_args();
    let Some((bus, _shutdown)) = common::bus(&backend, "p2p-example").await else { std::process::exit(1) };
    let handled: Arc<Mutex<BTreeMap<String, &'static str>>> = Arc::default();
    for worker in ["worker-1", "worker-2"] {
        let handled = handled.clone();
        bus.subscribe("pet-commands", "inventory", move |msg: Envelope| {
            let handled = handled.clone();
            async move {
                let pet = msg.decode::<contracts::inventory::GetPetStatus>()?.pet_id;
                tokio::time::sleep(Duration::from_millis(20)).await;
                handled.lock().await.insert(pet, worker);
                Ok(())
            }
        })
        .await
        .expect("subscribe");
    }
    let pets: Vec<String> = (1..=10).map(|n| format!("pet-{n:02}")).collect();
    for pet in &pets {
        let command = Envelope::from_message(bus.source(), &common::pet_message(pet), &MessageContext::default())
            .expect("encode");
        bus.send("pet-commands", &command).await.expect("send");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handled.lock().await.len() < pets.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (pet, worker) in handled.lock().await.iter() {
        println!("{pet} handled once, by {worker}");
    }
    bus.close().await;
}
