//! Reservations expire: the inventory's sweeper releases a reservation past its time (the
//! saga holding it died or stalls), tells the saga with `PetReleased`, and the saga can no
//! longer buy the pet. Each test runs on memory storage and on PostgreSQL with Redis, with
//! its own reservation lifetime.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Harness, eventually};
use contracts::{
    SagaRef,
    inventory::{
        MarkPetSold, PetReleased, PetReservationFailed, PetReserved, PetSaleFailed, PetSold, ReleasePet, ReservePet,
    },
};
use serde_json::json;

/// Settings with reservations holding `ttl_ms` and swept every `sweep_ms`.
fn reservations(ttl_ms: u64, sweep_ms: u64) -> serde_json::Value {
    json!({ "services": { "inventory": { "reservation_ttl_ms": ttl_ms, "reservation_sweep_ms": sweep_ms } } })
}

macro_rules! on_both_backends {
    ($($test:ident: $settings:expr),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&super::Harness::memory_with($settings).await).await;
                }
            )*
        }
        mod postgres_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&super::Harness::postgres_redis_with($settings).await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    an_expired_reservation_is_released_and_its_sale_refused: super::reservations(300, 50),
    a_reservation_within_its_time_is_left_alone: super::reservations(600_000, 20),
    a_sale_racing_the_sweeper_either_sells_or_releases_never_both: super::reservations(150, 10),
    late_copies_of_a_sagas_commands_never_reserve_the_pet_again: super::reservations(600_000, 1_000),
);

/// Waits until `GET /pets/{pet}` (through the cache) says `status`.
async fn shows(h: &Harness, pet: &str, status: &str) {
    eventually(&format!("{pet} to show as {status}"), async || {
        let reply = h.get(&format!("/pets/{pet}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{pet}: {}", reply.body);
        (reply.body["status"] == status).then_some(())
    })
    .await;
}

async fn an_expired_reservation_is_released_and_its_sale_refused(h: &Harness) {
    let pet = "bearded-dragon-005".to_owned();
    let saga = h.reserve(&pet).await;
    h.reply::<PetReserved>(saga.saga_id).await;

    let released = h.reply::<PetReleased>(saga.saga_id).await;
    assert_eq!(released, PetReleased { saga, pet_id: pet.clone() }, "the sweeper names the saga and its order");
    shows(h, &pet, "available").await;

    h.send(&MarkPetSold { saga, pet_id: pet.clone() }).await;
    let refused = h.reply::<PetSaleFailed>(saga.saga_id).await;
    assert_eq!(refused.reason, format!("pet {pet} is not reserved"));
    h.send(&ReleasePet { saga, pet_id: pet.clone() }).await;
    h.reply::<PetReleased>(saga.saga_id).await;
    shows(h, &pet, "available").await;

    let next = h.reserve(&pet).await;
    h.reply::<PetReserved>(next.saga_id).await;
}

async fn a_reservation_within_its_time_is_left_alone(h: &Harness) {
    let pet = "bearded-dragon-005".to_owned();
    let saga = h.reserve(&pet).await;
    h.reply::<PetReserved>(saga.saga_id).await;

    // An absence can only be watched for a while: 25 sweeps.
    let watch = Instant::now() + Duration::from_millis(500);
    while Instant::now() < watch {
        assert_eq!(h.get(&format!("/pets/{pet}")).await.body["status"], "reserved", "released within its time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    h.send(&MarkPetSold { saga, pet_id: pet.clone() }).await;
    h.reply::<PetSold>(saga.saga_id).await;
    shows(h, &pet, "sold").await;
}

async fn a_sale_racing_the_sweeper_either_sells_or_releases_never_both(h: &Harness) {
    let pets = ["bearded-dragon-005", "goldfish-004", "golden-retriever-001", "persian-cat-002"];
    let mut sagas = Vec::new();
    for pet in pets {
        let saga = h.reserve(pet).await;
        h.reply::<PetReserved>(saga.saga_id).await;
        sagas.push((pet, saga));
    }
    // The sales go out around the end of the reservations (150 ms), some before, some after.
    for (i, (pet, saga)) in sagas.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(if i == 0 { 100 } else { 25 })).await;
        h.send(&MarkPetSold { saga: *saga, pet_id: (*pet).to_owned() }).await;
    }
    let mut expected = Vec::new();
    for (pet, saga) in sagas {
        let outcome = h.event_for(saga.saga_id, |env| env.is::<PetSold>() || env.is::<PetSaleFailed>()).await;
        if outcome.is::<PetSold>() {
            expected.push((pet, "sold"));
        } else {
            assert!(outcome.is::<PetSaleFailed>(), "{pet}: {}", outcome.event_type);
            // Refused because the sweeper released the pet first, or is about to.
            h.reply::<PetReleased>(saga.saga_id).await;
            expected.push((pet, "available"));
        }
    }
    for (pet, status) in &expected {
        shows(h, pet, status).await;
    }
    // A sold pet stays sold while the sweeper keeps sweeping (an absence, watched for 20 sweeps).
    let watch = Instant::now() + Duration::from_millis(200);
    while Instant::now() < watch {
        for (pet, status) in &expected {
            assert_eq!(h.get(&format!("/pets/{pet}")).await.body["status"], *status, "{pet}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Commands that arrive late — a re-sent `ReservePet` handled after its saga was refused, or
/// a `ReservePet` overtaken by its saga's `ReleasePet` — are answered as their saga was, and
/// the pet freed meanwhile stays free.
async fn late_copies_of_a_sagas_commands_never_reserve_the_pet_again(h: &Harness) {
    let pet = "lovebird-020".to_owned();
    let holder = h.reserve(&pet).await;
    h.reply::<PetReserved>(holder.saga_id).await;
    let refused = h.reserve(&pet).await;
    let first = h.reply::<PetReservationFailed>(refused.saga_id).await;
    h.send(&ReleasePet { saga: holder, pet_id: pet.clone() }).await;
    h.reply::<PetReleased>(holder.saga_id).await;
    shows(h, &pet, "available").await;

    // The refused saga's re-sent copy, handled now that the pet is free.
    h.send(&ReservePet { saga: refused, pet_id: pet.clone() }).await;
    let again = h.reply::<PetReservationFailed>(refused.saga_id).await;
    assert_eq!(again.reason, first.reason, "the first answer stands");

    // A release that overtook its saga's reservation.
    let overtaken = SagaRef { saga_id: uuid::Uuid::now_v7(), order_id: uuid::Uuid::now_v7() };
    h.send(&ReleasePet { saga: overtaken, pet_id: pet.clone() }).await;
    h.reply::<PetReleased>(overtaken.saga_id).await;
    h.send(&ReservePet { saga: overtaken, pet_id: pet.clone() }).await;
    let cancelled = h.reply::<PetReservationFailed>(overtaken.saga_id).await;
    assert!(cancelled.reason.contains("cancelled"), "{}", cancelled.reason);
    assert_eq!(
        h.pet_status(&pet).await.pet.expect("the pet").availability,
        contracts::inventory::Availability::Available
    );
}
