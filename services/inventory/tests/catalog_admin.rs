//! Catalog administration through the real gate: administrators list pets (`POST /pets`) and
//! revise them (`PUT /pets/{pet_id}`); each change is published on `inventory-events` and
//! invalidates the catalog cache; the price of a pet a saga holds is frozen. Written once and
//! run twice: `memory::<test>` and `postgres_redis::<test>` (a fresh PostgreSQL database,
//! Redis under a random key prefix).

#[macro_use]
mod common;

use axum::http::{Method, StatusCode};
use common::{Harness, Reply, eventually};
use contracts::inventory::{MarkPetSold, PetDetails, PetListed, PetReserved, PetSold, PetUpdated};
use rust_decimal::Decimal;
use serde_json::{Value, json};

on_both_backends!(
    a_listed_pet_is_readable_listed_and_announced,
    a_new_price_shows_at_once_despite_the_cache_and_is_announced,
    a_catalog_event_from_another_instance_invalidates_the_cache,
    listing_an_existing_id_is_a_conflict_that_changes_and_announces_nothing,
    revising_a_missing_pet_is_a_404,
    a_pet_held_by_a_saga_keeps_its_price_but_takes_other_changes,
    each_invalid_field_is_a_422_naming_it,
    an_unknown_field_is_a_400_naming_it,
    only_administrators_may_change_the_catalog,
);

/// Every catalog field of a valid body, at `price`.
fn fields(price: &str) -> Value {
    json!({
        "name": "Rex",
        "category": "dog",
        "breed": "Beagle",
        "age_months": 7,
        "price": price,
        "currency": "USD",
        "description": "Loves long walks.",
    })
}

/// A valid `POST /pets` body for `pet_id`.
fn new_pet(pet_id: &str) -> Value {
    let mut body = fields("199.99");
    body["pet_id"] = json!(pet_id);
    body
}

/// `body` with `field` set to `value` (or removed, for `Value::Null`).
fn with(mut body: Value, field: &str, value: Value) -> Value {
    match (body.as_object_mut(), value) {
        (Some(object), Value::Null) => {
            object.remove(field);
        }
        (Some(object), value) => {
            object.insert(field.to_owned(), value);
        }
        (None, _) => panic!("not an object: {body}"),
    }
    body
}

fn assert_problem(reply: &Reply, status: StatusCode, detail: &str, case: &str) {
    assert_eq!(reply.status, status, "{case}: {}", reply.body);
    assert_eq!(reply.content_type, "application/problem+json", "{case}");
    let got = reply.body["detail"].as_str().unwrap_or_default();
    assert!(got.contains(detail), "{case}: detail `{got}` does not say `{detail}`");
}

/// Waits until `uri` is served from the cache, and checks that it serves `body`. (The change's
/// event invalidates the pet once more when the cache consumer gets it, so the first read
/// after a MISS may be a MISS again.)
async fn served_from_the_cache(h: &Harness, uri: &str, body: &Value) {
    let hit = eventually(&format!("{uri} to be served from the cache"), async || {
        let reply = h.get(uri).await;
        (reply.x_cache.as_deref() == Some("HIT")).then_some(reply)
    })
    .await;
    assert_eq!(&hit.body, body, "{uri}: the cached body");
}

async fn a_listed_pet_is_readable_listed_and_announced(h: &Harness) {
    let listing = "/pets?category=dog&limit=100";
    h.get(listing).await;
    assert_eq!(h.get(listing).await.x_cache.as_deref(), Some("HIT"), "the listing is cached before the change");

    let created = h.as_admin(Method::POST, "/pets", &new_pet("beagle-100")).await;

    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.location.as_deref(), Some("/pets/beagle-100"));
    let expected = json!({
        "pet_id": "beagle-100", "name": "Rex", "category": "dog", "breed": "Beagle", "age_months": 7,
        "price": "199.99", "currency": "USD", "description": "Loves long walks.", "status": "available",
    });
    assert_eq!(created.body, expected, "the pet as the catalog shows it");
    let first = h.get("/pets/beagle-100").await;
    assert_eq!((first.status, first.x_cache.as_deref()), (StatusCode::OK, Some("MISS")));
    assert_eq!(first.body, created.body, "GET shows what POST answered");
    served_from_the_cache(h, "/pets/beagle-100", &created.body).await;
    let page = h.get(listing).await;
    assert_eq!(page.x_cache.as_deref(), Some("MISS"), "every cached listing is stale after the change");
    assert_eq!(page.status_of("beagle-100").as_deref(), Some("available"));

    let listed = h.pet_event::<PetListed>("beagle-100").await;
    assert_eq!((listed.details.name.as_str(), listed.details.price), ("Rex", Decimal::new(19999, 2)));
    assert_eq!(listed.changed_by, "ops", "the event names the administrator");
}

async fn a_new_price_shows_at_once_despite_the_cache_and_is_announced(h: &Harness) {
    let uri = "/pets/goldfish-004";
    assert_eq!(h.get(uri).await.x_cache.as_deref(), Some("MISS"));
    let cached = h.get(uri).await;
    assert_eq!((cached.x_cache.as_deref(), &cached.body["price"]), (Some("HIT"), &json!("25.00")));

    let body = json!({
        "name": "Bubbles II", "category": "fish", "breed": "Goldfish", "age_months": 6,
        "price": "27.5", "currency": "USD", "description": "Now with a bigger bowl.",
    });
    let revised = h.as_admin(Method::PUT, uri, &body).await;

    assert_eq!(revised.status, StatusCode::OK, "{}", revised.body);
    assert_eq!((&revised.body["price"], &revised.body["name"]), (&json!("27.50"), &json!("Bubbles II")));
    assert_eq!(revised.body["status"], "available");
    let fresh = h.get(uri).await;
    assert_eq!(fresh.x_cache.as_deref(), Some("MISS"), "the change invalidated the cached pet");
    assert_eq!(fresh.body, revised.body, "GET shows what PUT answered");
    served_from_the_cache(h, uri, &revised.body).await;
    assert_eq!(h.pet_status("goldfish-004").await.pet.expect("exists").price, Decimal::new(2750, 2), "orders see it");

    let updated = h.pet_event::<PetUpdated>("goldfish-004").await;
    assert_eq!((updated.details.price, updated.changed_by.as_str()), (Decimal::new(2750, 2), "ops"));
}

async fn a_catalog_event_from_another_instance_invalidates_the_cache(h: &Harness) {
    let uri = "/pets/cockatiel-003";
    let cached = async |when: &str| {
        h.get(uri).await;
        assert_eq!(h.get(uri).await.x_cache.as_deref(), Some("HIT"), "cached before {when}");
    };
    let invalidated = async |by: &str| {
        eventually(&format!("{by} to invalidate the cached pet"), async || {
            (h.get(uri).await.x_cache.as_deref() == Some("MISS")).then_some(())
        })
        .await;
    };
    let details = PetDetails {
        name: "Sunny".into(),
        category: "bird".into(),
        breed: "Cockatiel".into(),
        age_months: 12,
        price: Decimal::new(30000, 2),
        currency: "USD".into(),
        description: String::new(),
    };
    let (pet_id, changed_by) = ("cockatiel-003".to_owned(), "ops".to_owned());

    cached("PetUpdated").await;
    h.publish_event(&PetUpdated { pet_id: pet_id.clone(), details: details.clone(), changed_by: changed_by.clone() })
        .await;
    invalidated("PetUpdated").await;

    cached("PetListed").await;
    h.publish_event(&PetListed { pet_id, details, changed_by }).await;
    invalidated("PetListed").await;
}

async fn listing_an_existing_id_is_a_conflict_that_changes_and_announces_nothing(h: &Harness) {
    let again = h.as_admin(Method::POST, "/pets", &new_pet("golden-retriever-001")).await;
    assert_problem(&again, StatusCode::CONFLICT, "pet golden-retriever-001 already exists", "duplicate POST");
    assert_eq!(h.get("/pets/golden-retriever-001").await.body["name"], "Buddy", "the pet is unchanged");

    // Events leave in commit order: a PetListed for the refused POST would come first.
    let revised = h.as_admin(Method::PUT, "/pets/golden-retriever-001", &fields("1100")).await;
    assert_eq!(revised.status, StatusCode::OK, "{}", revised.body);
    let events = h.pet_events_until::<PetUpdated>("golden-retriever-001").await;
    assert_eq!(events, ["petstore.inventory.pet-updated.v1"], "the refused POST published nothing");
}

async fn revising_a_missing_pet_is_a_404(h: &Harness) {
    for uri in ["/pets/no-such-pet-999", "/pets/Not%20An%20Id"] {
        let reply = h.as_admin(Method::PUT, uri, &fields("10")).await;
        assert_problem(&reply, StatusCode::NOT_FOUND, "no", uri);
    }
    assert_eq!(h.get("/pets/no-such-pet-999").await.status, StatusCode::NOT_FOUND, "PUT does not create");
}

async fn a_pet_held_by_a_saga_keeps_its_price_but_takes_other_changes(h: &Harness) {
    let pet = "persian-cat-002";
    let uri = format!("/pets/{pet}");
    let body = |price: &str| with(with(fields(price), "category", json!("cat")), "name", json!("Princess"));
    let saga = h.reserve(pet).await;
    h.reply::<PetReserved>(saga.saga_id).await;

    let repriced = h.as_admin(Method::PUT, &uri, &body("700")).await;
    assert_problem(&repriced, StatusCode::CONFLICT, "pet persian-cat-002 is reserved by a running saga", "reserved");
    let in_euros = h.as_admin(Method::PUT, &uri, &with(body("800"), "currency", json!("EUR"))).await;
    assert_problem(&in_euros, StatusCode::CONFLICT, "is reserved by a running saga", "another currency");
    let renamed = h.as_admin(Method::PUT, &uri, &with(body("800.00"), "name", json!("Duchess"))).await;
    assert_eq!(renamed.status, StatusCode::OK, "same price, new name: {}", renamed.body);
    assert_eq!((&renamed.body["name"], &renamed.body["status"]), (&json!("Duchess"), &json!("reserved")));
    let status = h.pet_status(pet).await.pet.expect("exists");
    assert_eq!((status.price, status.name.as_str()), (Decimal::new(80000, 2), "Duchess"));

    h.send(&MarkPetSold { saga, pet_id: pet.to_owned() }).await;
    h.reply::<PetSold>(saga.saga_id).await;
    let sold = h.as_admin(Method::PUT, &uri, &body("700")).await;
    assert_problem(&sold, StatusCode::CONFLICT, "pet persian-cat-002 is sold", "sold");
    assert_eq!(h.get(&uri).await.body["price"], "800.00");
}

async fn each_invalid_field_is_a_422_naming_it(h: &Harness) {
    let post = |field: &str, value: Value| (Method::POST, "/pets", with(new_pet("new-pet-1"), field, value));
    let put = |field: &str, value: Value| (Method::PUT, "/pets/goldfish-004", with(fields("10"), field, value));
    let cases = [
        (post("price", json!("0")), "price: must be greater than 0"),
        (put("price", json!("-3")), "price: must be greater than 0"),
        (put("price", json!("9.999")), "price: must have at most 2 decimal places"),
        (put("price", json!("1000000")), "price: must be less than"),
        (put("price", json!("ten")), "price: must be a decimal string"),
        (put("currency", json!("usd")), "currency: must be 3 upper-case letters"),
        (put("currency", json!("EURO")), "currency: must be 3 upper-case letters"),
        (put("name", json!("  ")), "name: must not be blank"),
        (put("breed", json!("b".repeat(101))), "breed: must be at most 100 characters"),
        (put("category", json!("Big Dogs")), "category: must be 1 to 64 characters of a-z, 0-9 and -"),
        (put("age_months", json!(-1)), "age_months: must be from 0 to 1200"),
        (put("description", json!("d".repeat(2001))), "description: must be at most 2000 characters"),
        (post("pet_id", json!("Golden_Retriever")), "pet_id: must be 1 to 128 characters of a-z, 0-9 and -"),
        (post("pet_id", json!("")), "pet_id: must be 1 to 128"),
        (post("pet_id", json!("x".repeat(129))), "pet_id: must be 1 to 128"),
        (post("name", Value::Null), "missing field `name`"),
        (put("price", Value::Null), "missing field `price`"),
        (put("age_months", json!("seven")), "age_months: invalid type"),
        (put("price", json!(12.5)), "price: invalid type"),
    ];
    for ((method, uri, body), detail) in cases {
        let case = format!("{method} {uri} {detail}");
        let reply = h.as_admin(method, uri, &body).await;
        assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, detail, &case);
    }
    assert_eq!(h.get("/pets/new-pet-1").await.status, StatusCode::NOT_FOUND, "nothing was listed");
    assert_eq!(h.get("/pets/goldfish-004").await.body["price"], "25.00", "nothing was changed");
}

async fn an_unknown_field_is_a_400_naming_it(h: &Harness) {
    let cases = [
        (Method::POST, "/pets", with(new_pet("new-pet-2"), "color", json!("brown")), "color"),
        (Method::PUT, "/pets/goldfish-004", with(fields("10"), "status", json!("sold")), "status"),
        (Method::PUT, "/pets/goldfish-004", with(fields("10"), "pet_id", json!("goldfish-004")), "pet_id"),
    ];
    for (method, uri, body, field) in cases {
        let case = format!("{method} {uri} with `{field}`");
        let reply = h.as_admin(method, uri, &body).await;
        assert_problem(&reply, StatusCode::BAD_REQUEST, &format!("unknown field `{field}`"), &case);
    }
    let malformed =
        h.call(Method::PUT, "/pets/goldfish-004", Some(&kit::testing::bearer("ops", &["admin"])), "{").await;
    assert_problem(&malformed, StatusCode::BAD_REQUEST, "malformed JSON", "malformed body");
    assert_eq!(h.get("/pets/goldfish-004").await.body["status"], "available", "nothing was changed");
}

async fn only_administrators_may_change_the_catalog(h: &Harness) {
    let customer = kit::testing::bearer("alice", &["customer"]);
    let requests = [(Method::POST, "/pets", new_pet("new-pet-3")), (Method::PUT, "/pets/goldfish-004", fields("1"))];
    for (method, uri, body) in requests {
        let case = format!("{method} {uri}");
        let forbidden = h.call(method.clone(), uri, Some(&customer), &body.to_string()).await;
        assert_problem(&forbidden, StatusCode::FORBIDDEN, "needs the `admin` role", &case);
        let anonymous = h.call(method.clone(), uri, None, &body.to_string()).await;
        assert_problem(&anonymous, StatusCode::UNAUTHORIZED, "bearer token", &case);
        let forged = h.call(method, uri, Some("Bearer not-a-token"), &body.to_string()).await;
        assert_problem(&forged, StatusCode::UNAUTHORIZED, "malformed", &case);
    }
    assert_eq!(h.get("/pets/new-pet-3").await.status, StatusCode::NOT_FOUND, "nothing was listed");
    assert_eq!(h.get("/pets/goldfish-004").await.body["price"], "25.00", "nothing was changed");
    let public = h.call(Method::GET, "/pets/goldfish-004", None, "").await;
    assert_eq!(public.status, StatusCode::OK, "reading the catalog stays public");
}
