//! The catalog API and the saga-facing bus API of the inventory, written once and run twice:
//! `memory::<test>` (memory storage, memory cache, memory bus) and `postgres_redis::<test>`
//! (a fresh PostgreSQL database, Redis under a random key prefix, memory bus).

#[macro_use]
mod common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::{Harness, eventually};
use contracts::inventory::{
    Availability, MarkPetSold, PetReservationFailed, PetReserved, PetRestored, PetSold, RestorePet,
};
use rust_decimal::Decimal;

on_both_backends!(
    paging_visits_every_seeded_pet_exactly_once_in_id_order,
    filters_select_by_category_price_and_availability,
    a_repeated_read_is_served_from_the_cache,
    reserving_a_pet_shows_in_the_listing_at_once_despite_the_cache,
    an_inventory_event_from_another_instance_invalidates_the_cache,
    an_unknown_pet_is_a_404_problem,
    each_invalid_parameter_is_a_problem_naming_it,
    pet_status_over_the_bus_reports_price_and_availability,
    a_pet_goes_through_reserved_sold_and_back_to_available,
);

fn seeded_ids() -> BTreeSet<String> {
    inventory::seed_catalog().expect("seed").into_iter().map(|p| p.pet_id).collect()
}

async fn paging_visits_every_seeded_pet_exactly_once_in_id_order(h: &Harness) {
    let mut seen = Vec::new();
    let mut uri = "/pets?limit=7".to_owned();
    let mut pages = 0;
    loop {
        let page = h.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}: {}", page.body);
        let ids = page.pet_ids();
        assert!(ids.len() <= 7, "{uri}: {} items", ids.len());
        seen.extend(ids);
        pages += 1;
        assert!(pages <= 10, "paging does not end");
        match page.body["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/pets?limit=7&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = seeded_ids().into_iter().collect();
    assert_eq!(seen, expected, "every seeded pet once, in id order");
    assert_eq!(pages, expected.len().div_ceil(7));

    let default = h.get("/pets").await;
    assert_eq!(default.pet_ids().len(), inventory::DEFAULT_LIMIT, "default page size");
    assert!(default.body["next_cursor"].is_string());
    let all = h.get("/pets?limit=100").await;
    assert_eq!(all.pet_ids().len(), expected.len());
    assert!(all.body["next_cursor"].is_null(), "the last page has no next cursor");
}

async fn filters_select_by_category_price_and_availability(h: &Harness) {
    let mut catalog = inventory::seed_catalog().expect("seed");
    catalog.sort_by(|a, b| a.pet_id.cmp(&b.pet_id));
    let ids = |keep: &dyn Fn(&inventory::Pet) -> bool| {
        catalog.iter().filter(|p| keep(p)).map(|p| p.pet_id.clone()).collect::<Vec<_>>()
    };
    let hundred = Decimal::new(100, 0);
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("/pets?category=dog&limit=100", ids(&|p| p.category == "dog")),
        ("/pets?max_price=100&limit=100", ids(&|p| p.price <= hundred)),
        ("/pets?max_price=100.00&limit=100", ids(&|p| p.price <= hundred)),
        (
            "/pets?category=cat&max_price=800&limit=100",
            ids(&|p| p.category == "cat" && p.price <= Decimal::new(800, 0)),
        ),
        ("/pets?available=true&limit=100", ids(&|_| true)),
        ("/pets?available=false&limit=100", vec![]),
        ("/pets?category=dragon", vec![]),
        ("/pets?category=", ids(&|_| true).into_iter().take(inventory::DEFAULT_LIMIT).collect()),
    ];
    for (uri, expected) in cases {
        let page = h.get(uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}: {}", page.body);
        assert_eq!(page.pet_ids(), expected, "{uri}");
    }
    let cats = h.get("/pets?category=cat&max_price=800").await;
    assert!(cats.pet_ids().contains(&"persian-cat-002".to_owned()), "max_price is inclusive");

    let pet = &h.get("/pets/golden-retriever-001").await.body;
    assert_eq!(pet["pet_id"], "golden-retriever-001");
    assert_eq!(pet["name"], "Buddy");
    assert_eq!(pet["breed"], "Golden Retriever");
    assert_eq!(pet["age_months"], 24);
    assert_eq!(pet["price"], "1200.00");
    assert_eq!(pet["currency"], "USD");
    assert_eq!(pet["status"], "available");
    assert!(pet["description"].is_string());
    assert!(pet.get("held_by_saga").is_none(), "the holding saga is internal");
}

async fn a_repeated_read_is_served_from_the_cache(h: &Harness) {
    for uri in ["/pets?category=fish", "/pets/goldfish-004"] {
        let first = h.get(uri).await;
        assert_eq!((first.status, first.x_cache.as_deref()), (StatusCode::OK, Some("MISS")), "{uri}: first read");
        let second = h.get(uri).await;
        assert_eq!((second.status, second.x_cache.as_deref()), (StatusCode::OK, Some("HIT")), "{uri}: second read");
        assert_eq!(second.body, first.body, "{uri}: the cached body is the same");
        assert_eq!(second.content_type, "application/json");
    }
    let other_query = h.get("/pets?category=fish&limit=5").await;
    assert_eq!(other_query.x_cache.as_deref(), Some("MISS"), "another page is another entry");
    let same_query = h.get("/pets?limit=20&category=fish&utm=x").await;
    assert_eq!(same_query.x_cache.as_deref(), Some("HIT"), "an equivalent query shares the entry");
}

async fn reserving_a_pet_shows_in_the_listing_at_once_despite_the_cache(h: &Harness) {
    let pet = "golden-retriever-001";
    let listing = "/pets?category=dog";
    for uri in [listing, &format!("/pets/{pet}")] {
        h.get(uri).await;
        assert_eq!(h.get(uri).await.x_cache.as_deref(), Some("HIT"), "{uri} is cached before the reservation");
    }

    let saga = h.reserve(pet).await;
    assert_eq!(h.reply::<PetReserved>(saga.saga_id).await.pet_id, pet);

    let fresh = eventually("the pet to show as reserved", async || {
        let reply = h.get(&format!("/pets/{pet}")).await;
        (reply.body["status"] == "reserved").then_some(reply)
    })
    .await;
    assert_eq!(fresh.x_cache.as_deref(), Some("MISS"), "the first read after the change comes from storage");
    let page = h.get(listing).await;
    assert_eq!(page.x_cache.as_deref(), Some("MISS"), "every cached listing is stale after the change");
    assert_eq!(page.status_of(pet).as_deref(), Some("reserved"));
    let unavailable = h.get("/pets?available=false").await;
    assert_eq!(unavailable.pet_ids(), vec![pet.to_owned()]);
    let available = h.get("/pets?available=true&limit=100").await;
    assert!(!available.pet_ids().contains(&pet.to_owned()));
}

async fn an_inventory_event_from_another_instance_invalidates_the_cache(h: &Harness) {
    let uri = "/pets/cockatiel-003";
    h.get(uri).await;
    assert_eq!(h.get(uri).await.x_cache.as_deref(), Some("HIT"), "cached before the event");
    let saga = contracts::SagaRef { saga_id: uuid::Uuid::now_v7(), order_id: uuid::Uuid::now_v7() };
    h.publish_event(&PetReserved { saga, pet_id: "cockatiel-003".into() }).await;
    eventually("the event to invalidate the cached pet", async || {
        (h.get(uri).await.x_cache.as_deref() == Some("MISS")).then_some(())
    })
    .await;
}

async fn an_unknown_pet_is_a_404_problem(h: &Harness) {
    let reply = h.get("/pets/no-such-pet-999").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.content_type, "application/problem+json");
    assert_eq!(reply.body["status"], 404);
    assert!(reply.body["type"].as_str().is_some_and(|t| t.ends_with("/not-found")), "{}", reply.body);
    assert!(reply.body["detail"].as_str().is_some_and(|d| d.contains("no-such-pet-999")), "{}", reply.body);
    let again = h.get("/pets/no-such-pet-999").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "a miss is not cached as a pet");
}

async fn each_invalid_parameter_is_a_problem_naming_it(h: &Harness) {
    let cases = [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=2.5", "limit"),
        ("limit=1&limit=2", "limit"),
        ("max_price=-1", "max_price"),
        ("max_price=abc", "max_price"),
        ("max_price=12abc", "max_price"),
        ("max_price=NaN", "max_price"),
        ("available=maybe", "available"),
        ("available=TRUE", "available"),
        ("cursor=!!!", "cursor"),
        ("cursor=%FF%FE", "cursor"),
        ("category=dog&limit=0&cursor=zz", "limit"),
    ];
    for (query, parameter) in cases {
        let reply = h.get(&format!("/pets?{query}")).await;
        assert!(
            matches!(reply.status, StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY),
            "{query}: status {}",
            reply.status
        );
        assert_eq!(reply.content_type, "application/problem+json", "{query}");
        assert_eq!(reply.body["status"], reply.status.as_u16(), "{query}");
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(&format!("`{parameter}`")), "{query}: detail `{detail}` does not name `{parameter}`");
    }
}

async fn pet_status_over_the_bus_reports_price_and_availability(h: &Harness) {
    let status = h.pet_status("golden-retriever-001").await;
    assert_eq!(status.pet_id, "golden-retriever-001");
    let pet = status.pet.expect("the pet exists");
    assert_eq!((pet.name.as_str(), pet.price, pet.currency.as_str()), ("Buddy", Decimal::new(120000, 2), "USD"));
    assert_eq!(pet.availability, Availability::Available);

    let saga = h.reserve("persian-cat-002").await;
    h.reply::<PetReserved>(saga.saga_id).await;
    let reserved = h.pet_status("persian-cat-002").await.pet.expect("exists");
    assert_eq!((reserved.price, reserved.availability), (Decimal::new(80000, 2), Availability::Reserved));

    assert_eq!(h.pet_status("no-such-pet").await.pet, None);
}

async fn a_pet_goes_through_reserved_sold_and_back_to_available(h: &Harness) {
    let pet = "bearded-dragon-005".to_owned();
    let saga = h.reserve(&pet).await;
    h.reply::<PetReserved>(saga.saga_id).await;

    let rival = h.reserve(&pet).await;
    let refused = h.reply::<PetReservationFailed>(rival.saga_id).await;
    assert_eq!(refused.reason, format!("pet {pet} is already reserved"));

    h.send(&MarkPetSold { saga, pet_id: pet.clone() }).await;
    h.reply::<PetSold>(saga.saga_id).await;
    // The reply may be relayed a moment before the handler has invalidated the cache.
    let shows = async |status: &str| {
        eventually(&format!("{pet} to show as {status}"), async || {
            (h.get(&format!("/pets/{pet}")).await.body["status"] == status).then_some(())
        })
        .await;
        eventually(&format!("{pet} to be listed as {status}"), async || {
            (h.get("/pets?category=reptile").await.status_of(&pet).as_deref() == Some(status)).then_some(())
        })
        .await;
    };
    shows("sold").await;

    let late = h.reserve(&pet).await;
    assert_eq!(h.reply::<PetReservationFailed>(late.saga_id).await.reason, format!("pet {pet} is sold"));

    h.send(&RestorePet { saga, pet_id: pet.clone() }).await;
    h.reply::<PetRestored>(saga.saga_id).await;
    shows("available").await;
}
