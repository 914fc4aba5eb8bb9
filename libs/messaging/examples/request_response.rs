//! Request/response: a typed query answered by a responder, or a timeout.
//!
//! ```text
//! cargo run -p messaging --example request_response [-- memory|kafka|nats|rabbitmq|redis|sns]
//! ```

mod common;

use std::time::{Duration, Instant};

use contracts::inventory::{Availability, GetPetStatus, PetStatus, PetSummary};
use messaging::{Envelope, MessageContext};
use rust_decimal::Decimal;

#[tokio::main]
async fn main() {
    let backend = common::backend_from_args();
    let Some((bus, _shutdown)) = common::bus(&backend, "request-response-example").await else { std::process::exit(1) };
    let source = bus.source().to_owned();
    bus.serve("pet-queries", "inventory", move |request: Envelope| {
        let source = source.clone();
        async move {
            let query = request.decode::<GetPetStatus>()?;
            let pet = (query.pet_id == "goldfish-004").then(|| PetSummary {
                name: "Bubbles".into(),
                price: Decimal::new(2500, 2),
                currency: "USD".into(),
                availability: Availability::Available,
            });
            let reply = PetStatus { pet_id: query.pet_id, pet };
            Ok(Envelope::from_message(&source, &reply, &MessageContext::caused_by(&request))?)
        }
    })
    .await
    .expect("serve");
    for pet in ["goldfish-004", "unicorn-999"] {
        let started = Instant::now();
        let query =
            Envelope::from_message(bus.source(), &GetPetStatus { pet_id: pet.into() }, &MessageContext::default())
                .expect("encode");
        match bus.request("pet-queries", query, Duration::from_secs(30)).await {
            Ok(reply) => {
                let status = reply.decode::<PetStatus>().expect("a PetStatus");
                let answer = status.pet.map_or("not in the catalog".to_owned(), |p| {
                    format!("{} costs {} {}", p.name, p.price, p.currency)
                });
                println!("{pet}: {answer} ({:?})", started.elapsed());
            }
            Err(e) => println!("{pet}: {e}"),
        }
    }
    bus.close().await;
}
