//! `Idempotency-Key` on `POST /orders`: a retry with the same key and body gets the first
//! answer and places nothing; the same key with another body is refused; concurrent
//! duplicates place one order. Every case runs on PostgreSQL and in memory.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode},
};
use chrono::TimeDelta;
use contracts::{
    channels,
    inventory::{Availability, GetPetStatus, PetStatus, PetSummary},
    pricing::PricingArm,
};
use http_body_util::BodyExt;
use kit::ServiceContext;
use messaging::{Bus, Envelope, HandlerError, MessageContext, Subscription};
use order::{AppState, IDEMPOTENCY_KEY_HEADER, KEY_REUSED_TYPE, OrderStore, REPLAYED_HEADER};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tower::ServiceExt;

const PATIENCE: Duration = Duration::from_secs(10);

/// A `POST /orders` body for `pet_id`, shipped to `street`.
fn order_body(pet_id: &str, street: &str) -> String {
    json!({
        "pet_id": pet_id,
        "shipping_address": { "street": street, "city": "Springfield", "postal_code": "49007", "country": "US" },
        "payment_method": "credit_card",
    })
    .to_string()
}

/// A response, read whole.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn order_id(&self) -> &str {
        self.body["order_id"].as_str().unwrap_or_else(|| panic!("no order_id in {self:?}"))
    }
}

/// The order service on one storage, with a stand-in inventory that knows every pet.
struct Harness {
    ctx: ServiceContext,
    router: Router,
    store: OrderStore,
    database_url: Option<String>,
    inventory: Option<Subscription>,
    lookups: Arc<AtomicUsize>,
}

impl Harness {
    async fn memory() -> Self {
        Self::start(kit::testing::context("").await, None).await
    }

    async fn postgres() -> Self {
        let (ctx, url) = kit::testing::postgres_context("").await;
        Self::start(ctx, Some(url)).await
    }

    async fn start(ctx: ServiceContext, database_url: Option<String>) -> Self {
        let (service, store) = order::start_with_store(&ctx).await.expect("the order service starts");
        let bus = Bus::new(&ctx.backends, &ctx.settings.messaging, "inventory", ctx.shutdown.clone())
            .await
            .expect("inventory bus");
        let lookups = Arc::new(AtomicUsize::new(0));
        let counted = lookups.clone();
        let inventory = bus
            .serve(channels::INVENTORY_QUERIES, "inventory", move |request: Envelope| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move { pet_status(request) }
            })
            .await
            .expect("serve pet-status queries");
        let router = kit::http::layers(service.router, &ctx.gate);
        Self { ctx, router, store, database_url, inventory: Some(inventory), lookups }
    }

    /// The same service, but its store forgets keys as soon as it records them.
    async fn forgetful(&self) -> Router {
        let ctx = &self.ctx;
        let bus = Bus::new(&ctx.backends, &ctx.settings.messaging, "order", ctx.shutdown.clone()).await.expect("bus");
        let store = self.store.clone().with_key_retention(TimeDelta::zero());
        let app = order::router(AppState {
            store,
            bus,
            pet_lookup_timeout: PATIENCE,
            inventory_breaker: kit::resilience::CircuitBreaker::new("inventory_queries", Default::default()),
            flags: ctx.flags.clone(),
        });
        kit::http::layers(app, &ctx.gate)
    }

    async fn post(&self, customer: &str, key: Option<&str>, body: &str) -> Reply {
        post_to(&self.router, customer, key.map(str::as_bytes), body).await
    }

    /// How many orders the event log holds (rebuilding the projection from it), checked
    /// against the PostgreSQL tables when there are some.
    async fn orders_placed(&self) -> usize {
        let orders = self.store.rebuild_projection().await.expect("rebuild");
        if let Some(url) = &self.database_url {
            let pool = sqlx::PgPool::connect(url).await.expect("connect");
            let placed: i64 =
                sqlx::query_scalar("SELECT count(*) FROM orders.order_events WHERE event_type = 'placed'")
                    .fetch_one(&pool)
                    .await
                    .expect("count events");
            assert_eq!(usize::try_from(placed).ok(), Some(orders), "placed events against orders");
            pool.close().await;
        }
        orders
    }

    /// Stops the stand-in inventory: pet lookups time out from now on.
    async fn stop_inventory(&mut self) {
        if let Some(inventory) = self.inventory.take() {
            inventory.stop().await;
        }
    }

    async fn finish(self) {
        self.ctx.shutdown.cancel();
        self.ctx.tasks.close();
        let _ = tokio::time::timeout(PATIENCE, self.ctx.tasks.wait()).await;
        if let Some(url) = self.database_url {
            let (_, database) = url.rsplit_once('/').expect("a database in the URL");
            let mut admin =
                <sqlx::PgConnection as sqlx::Connection>::connect(&kit::testing::server_url()).await.expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")))
                .execute(&mut admin)
                .await
                .expect("drop the test database");
        }
    }
}

fn pet_status(request: Envelope) -> Result<Envelope, HandlerError> {
    let query: GetPetStatus = request.decode()?;
    let pet = PetSummary {
        name: "Goldie".into(),
        price: Decimal::new(2500, 2),
        currency: "USD".into(),
        availability: Availability::Available,
    };
    let reply = PetStatus { pet_id: query.pet_id, pet: Some(pet) };
    Ok(Envelope::from_message("/petstore/inventory", &reply, &MessageContext::caused_by(&request))?)
}

async fn post_to(router: &Router, customer: &str, key: Option<&[u8]>, body: &str) -> Reply {
    let mut request = Request::post("/orders")
        .header("content-type", "application/json")
        .header("authorization", kit::testing::bearer(customer, &["customer"]));
    if let Some(key) = key {
        request = request.header(IDEMPOTENCY_KEY_HEADER, key);
    }
    let response = router.clone().oneshot(request.body(Body::from(body.to_owned())).expect("request")).await;
    let response = response.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply { status, headers, body }
}

/// `petstore_idempotent_replays_total{outcome}` as the process's recorder has it.
fn replays(outcome: &str) -> u64 {
    let text = kit::telemetry::metrics_handle().expect("a Prometheus recorder").render();
    let series = format!("petstore_idempotent_replays_total{{outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Runs each named scenario on both storages, as `<scenario>::memory` and
/// `<scenario>::postgres`.
macro_rules! on_both_storages {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn memory() {
                super::$scenario(super::Harness::memory().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$scenario(super::Harness::postgres().await).await;
            }
        }
    )*};
}

on_both_storages!(
    a_retry_with_the_same_key_and_body_replays_the_first_order,
    a_replay_does_not_need_the_inventory,
    the_same_key_with_another_body_is_refused_and_writes_nothing,
    concurrent_duplicates_place_one_order,
    customers_use_the_same_key_independently,
    a_malformed_key_is_refused,
    an_expired_key_places_a_new_order,
    a_retry_after_the_flags_changed_replays_the_first_order_as_it_was_placed,
);

async fn a_retry_with_the_same_key_and_body_replays_the_first_order(h: Harness) {
    let replayed_before = replays("replayed");
    let first = h.post("alice", Some("retry-1"), &order_body("goldfish-004", "1 Main St")).await;
    // The same request as the client may re-encode it: other key order, whitespace, blank
    // instructions, padding around the pet id.
    let same = r#"{ "payment_method" : "credit_card", "special_instructions": "  ",
        "shipping_address": {"country":"US","postal_code":"49007","city":"Springfield","street":"1 Main St"},
        "pet_id": " goldfish-004 " }"#;
    let retry = h.post("alice", Some("retry-1"), same).await;

    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    assert_eq!(first.header(REPLAYED_HEADER), None);
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{retry:?}");
    assert_eq!(retry.body, first.body, "the replay answers the same body");
    assert_eq!(retry.header("location"), first.header("location"));
    assert_eq!(retry.header("location"), Some(format!("/orders/{}", first.order_id()).as_str()));
    assert_eq!(retry.header(REPLAYED_HEADER), Some("true"));
    assert_eq!(h.orders_placed().await, 1, "one order, one OrderCreated, one saga");
    assert_eq!(h.lookups.load(Ordering::SeqCst), 1, "the replay did not ask the inventory");
    assert!(replays("replayed") > replayed_before, "a replay is counted");

    // Without a key, the same body is a new order, as before.
    let unkeyed = h.post("alice", None, &order_body("goldfish-004", "1 Main St")).await;
    assert_eq!(unkeyed.status, StatusCode::ACCEPTED);
    assert_ne!(unkeyed.order_id(), first.order_id());
    assert_eq!(h.orders_placed().await, 2);
    h.finish().await;
}

async fn a_replay_does_not_need_the_inventory(mut h: Harness) {
    let body = order_body("goldfish-004", "1 Main St");
    let first = h.post("alice", Some("while-down"), &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");

    h.stop_inventory().await;
    let retry = h.post("alice", Some("while-down"), &body).await;

    assert_eq!(retry.status, StatusCode::ACCEPTED, "{retry:?}");
    assert_eq!(retry.order_id(), first.order_id());
    h.finish().await;
}

async fn the_same_key_with_another_body_is_refused_and_writes_nothing(h: Harness) {
    let conflicts_before = replays("conflict");
    let first = h.post("alice", Some("reused"), &order_body("goldfish-004", "1 Main St")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");

    for (case, body) in [
        ("another pet", order_body("persian-cat-002", "1 Main St")),
        ("another address", order_body("goldfish-004", "2 Elm St")),
    ] {
        let refused = h.post("alice", Some("reused"), &body).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{case}: {refused:?}");
        assert_eq!(refused.header("content-type"), Some("application/problem+json"), "{case}");
        assert_eq!(refused.body["type"], KEY_REUSED_TYPE, "{case}");
        assert_eq!(refused.body["status"], 422, "{case}");
        assert!(refused.body["detail"].as_str().is_some_and(|d| d.contains("`reused`")), "{case}: {refused:?}");
        assert_eq!(refused.header(REPLAYED_HEADER), None, "{case}");
    }

    assert_eq!(h.orders_placed().await, 1, "nothing placed for the refused requests");
    assert!(replays("conflict") >= conflicts_before + 2, "each refusal is counted");
    // The key still answers its own request.
    let retry = h.post("alice", Some("reused"), &order_body("goldfish-004", "1 Main St")).await;
    assert_eq!((retry.status, retry.order_id()), (StatusCode::ACCEPTED, first.order_id()));
    h.finish().await;
}

async fn concurrent_duplicates_place_one_order(h: Harness) {
    let body = order_body("goldfish-004", "1 Main St");
    let router = h.router.clone();
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let (router, body) = (router.clone(), body.clone());
            tokio::spawn(async move { post_to(&router, "alice", Some(b"double-click"), &body).await })
        })
        .collect();
    let mut replies = Vec::new();
    for request in requests {
        replies.push(request.await.expect("request task"));
    }

    for reply in &replies {
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
        assert_eq!(reply.body, replies[0].body, "every duplicate answers the one order");
    }
    let fresh = replies.iter().filter(|r| r.header(REPLAYED_HEADER).is_none()).count();
    assert_eq!(fresh, 1, "one request placed the order, the others replayed it");
    assert_eq!(h.orders_placed().await, 1);
    h.finish().await;
}

async fn customers_use_the_same_key_independently(h: Harness) {
    let body = order_body("goldfish-004", "1 Main St");
    let alice = h.post("alice", Some("order-1"), &body).await;
    let bob = h.post("bob", Some("order-1"), &body).await;

    assert_eq!(alice.status, StatusCode::ACCEPTED, "{alice:?}");
    assert_eq!(bob.status, StatusCode::ACCEPTED, "{bob:?}");
    assert_eq!(bob.header(REPLAYED_HEADER), None);
    assert_ne!(alice.order_id(), bob.order_id());
    assert_eq!(h.orders_placed().await, 2);
    // And each one's retry finds their own order.
    let bob_again = h.post("bob", Some("order-1"), &body).await;
    assert_eq!(bob_again.order_id(), bob.order_id());
    h.finish().await;
}

async fn a_malformed_key_is_refused(h: Harness) {
    let body = order_body("goldfish-004", "1 Main St");
    let too_long = "k".repeat(256);
    let cases: [(&str, &[u8]); 5] = [
        ("empty", b""),
        ("256 characters", too_long.as_bytes()),
        ("a space", b"two words"),
        ("a tab", b"tab\there"),
        ("non-ASCII", "clé".as_bytes()),
    ];
    for (case, key) in cases {
        let reply = post_to(&h.router, "alice", Some(key), &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case}: {reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{case}");
        assert!(reply.body["detail"].as_str().is_some_and(|d| d.contains("Idempotency-Key")), "{case}: {reply:?}");
    }
    let request = Request::post("/orders")
        .header("content-type", "application/json")
        .header("authorization", kit::testing::bearer("alice", &["customer"]))
        .header(IDEMPOTENCY_KEY_HEADER, "one")
        .header(IDEMPOTENCY_KEY_HEADER, "two")
        .body(Body::from(body.clone()))
        .expect("request");
    let twice = h.router.clone().oneshot(request).await.expect("infallible");
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST, "two keys");
    assert_eq!(h.orders_placed().await, 0);

    let longest = "~".repeat(255);
    let reply = h.post("alice", Some(&longest), &body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "255 visible characters: {reply:?}");
    h.finish().await;
}

async fn an_expired_key_places_a_new_order(h: Harness) {
    let router = h.forgetful().await;
    let body = order_body("goldfish-004", "1 Main St");
    let first = post_to(&router, "alice", Some(b"old"), &body).await;
    let later = post_to(&router, "alice", Some(b"old"), &body).await;

    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    assert_eq!(later.status, StatusCode::ACCEPTED, "{later:?}");
    assert_eq!(later.header(REPLAYED_HEADER), None);
    assert_ne!(later.order_id(), first.order_id(), "an expired key is free again");
    assert_eq!(h.orders_placed().await, 2);
    // One record is left for the key (the expired one was replaced), and it is purgeable.
    assert_eq!(h.store.clone().with_key_retention(TimeDelta::zero()).purge_expired_keys().await.expect("purge"), 1);
    h.finish().await;
}

/// The project's flags with express orders on and the 10 % discount for everyone.
fn express_and_discount_for_everyone() -> kit::flags::FlagSet {
    let mut doc: Value = serde_json::from_str(include_str!("../../../config/flags.json")).expect("config/flags.json");
    doc["flags"]["express_order_processing"]["defaultVariant"] = json!("on");
    doc["flags"]["pricing_experiment"]["defaultVariant"] = json!("discount_10");
    doc["flags"]["pricing_experiment"].as_object_mut().expect("a flag").remove("targeting");
    kit::flags::FlagSet::parse(&doc.to_string()).expect("valid flags")
}

async fn a_retry_after_the_flags_changed_replays_the_first_order_as_it_was_placed(h: Harness) {
    let body = order_body("goldfish-004", "1 Main St");
    // alice is in the control arm of the shipped rollout, and express orders are off.
    let first = h.post("alice", Some("before-the-edit"), &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");

    h.ctx.flags.replace(express_and_discount_for_everyone());
    let retry = h.post("alice", Some("before-the-edit"), &body).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{retry:?}");
    assert_eq!(retry.header(REPLAYED_HEADER), Some("true"), "the flags are not part of the request");
    assert_eq!(retry.body, first.body);
    assert_eq!(h.orders_placed().await, 1);
    let order_of = |reply: &Reply| uuid::Uuid::parse_str(reply.order_id()).expect("a uuid");
    let placed = h.store.get(order_of(&first)).await.expect("read").expect("the order");
    let decided = (placed.details.amount, placed.details.pricing_arm, placed.details.express);
    assert_eq!(decided, (Decimal::new(2500, 2), PricingArm::Control, false), "the order stays as it was placed");

    // A new request is decided by the flags as they are now.
    let next = h.post("alice", Some("after-the-edit"), &body).await;
    assert_eq!(next.status, StatusCode::ACCEPTED, "{next:?}");
    let placed = h.store.get(order_of(&next)).await.expect("read").expect("the order");
    let decided = (placed.details.amount, placed.details.pricing_arm, placed.details.express);
    assert_eq!(decided, (Decimal::new(2250, 2), PricingArm::Discount10, true));
    h.finish().await;
}
