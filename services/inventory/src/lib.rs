//! Inventory service: the pet catalog and the stock state of each pet (available, reserved
//! by a running saga, sold). It handles the saga's commands (`ReservePet`, `ReleasePet`,
//! `MarkPetSold`, `RestorePet`) with replies on `inventory-events`, answers `GetPetStatus`
//! queries, and serves the catalog over HTTP through a cache (Redis or memory) that inventory
//! events invalidate. Administrators list and revise pets (`POST /pets`, `PUT /pets/{pet_id}`),
//! each change published as an inventory event. Reservations expire: a sweeper releases those
//! past their time.

mod admin;
mod cache;
mod catalog;
mod consumers;
mod domain;
mod expiry;
mod http;
mod seed;
mod store;

use std::{sync::Arc, time::Duration};

use axum::Router;
use contracts::channels;
use kit::{Service, ServiceContext, StartError, resilience::CircuitBreaker};
use persistence::open_service;
use utoipa::openapi::OpenApi;

pub use cache::{CacheError, CacheReadiness, CatalogCache, Keyspace, Lookup, MemoryCache, Slot};
pub use domain::{InventoryCommand, Pet, PetFilter, availability_name, parse_availability};
pub use http::{AppState, DEFAULT_LIMIT, MAX_LIMIT, X_CACHE};
pub use seed::{SeedError, catalog as seed_catalog};
pub use store::{CatalogState, InventoryStore};

/// The service's name: its schema, command consumer group and CloudEvents source.
pub const SERVICE: &str = "inventory";

/// The consumer group that invalidates the catalog cache from `inventory-events`.
pub const CACHE_GROUP: &str = "inventory-cache";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../db/inventory");

/// Opens storage (seeding an empty catalog), connects the cache, starts the outbox relay, the
/// command consumer, the cache-invalidation consumer, the pet-status responder and the
/// sweeper that releases expired reservations.
pub async fn start(ctx: &ServiceContext) -> Result<Service, StartError> {
    let seed = seed::catalog().map_err(StartError::at(SERVICE, "loading the seed catalog"))?;
    let initial = seed.clone();
    let (storage, bus) = open_service(ctx, SERVICE, SERVICE, &MIGRATOR, move || CatalogState::new(initial)).await?;
    let settings = &ctx.settings.services.inventory;
    let store = InventoryStore::new(storage.clone(), Duration::from_millis(settings.reservation_ttl_ms));
    let seeded = store.seed_if_empty(&seed).await.map_err(StartError::at(SERVICE, "seeding the catalog"))?;
    if seeded > 0 {
        tracing::info!(pets = seeded, "seeded the empty catalog");
    }
    // The breaker follows `resilience.circuit_breaker` as the configuration reloads.
    let breaker = CircuitBreaker::live("catalog_cache", ctx.breaker_settings());
    let cache = CatalogCache::connect(&ctx.settings.cache, breaker)
        .await
        .map_err(StartError::at(SERVICE, "configuring the cache"))?
        .with_outage_drill(ctx.flags.clone());

    let commands = consumers::Commands { store: store.clone(), cache: cache.clone(), source: bus.source().to_owned() };
    bus.subscribe(channels::INVENTORY_COMMANDS, SERVICE, commands)
        .await
        .map_err(StartError::at(SERVICE, "subscribing to commands"))?;

    let invalidating = cache.clone();
    bus.subscribe(channels::INVENTORY_EVENTS, CACHE_GROUP, move |msg| {
        let cache = invalidating.clone();
        async move { consumers::invalidate_on_event(&cache, msg).await }
    })
    .await
    .map_err(StartError::at(SERVICE, "subscribing to inventory events"))?;

    let (querying, source, flags) = (store.clone(), bus.source().to_owned(), ctx.flags.clone());
    bus.serve(channels::INVENTORY_QUERIES, SERVICE, move |req| {
        let (store, source, flags) = (querying.clone(), source.clone(), flags.clone());
        async move { consumers::pet_status(&store, &flags, &source, req).await }
    })
    .await
    .map_err(StartError::at(SERVICE, "serving pet-status queries"))?;

    let sweeping = expiry::run(
        store.clone(),
        cache.clone(),
        bus.source().to_owned(),
        Duration::from_millis(settings.reservation_sweep_ms),
        ctx.shutdown.clone().cancelled_owned(),
    );
    ctx.tasks.spawn(sweeping);

    let mut readiness = vec![storage.readiness(), Arc::new(ctx.backends.clone()), cache.readiness()];
    if let Some(breaker) = cache.breaker() {
        readiness.push(Arc::new(breaker));
    }
    let (router, openapi) = api(AppState { store, cache, source: bus.source().to_owned(), flags: ctx.flags.clone() });
    Ok(Service { name: SERVICE, router, openapi, readiness, audit: storage.audit_log() })
}

/// The service's HTTP API: the public catalog (`GET /pets`, `GET /pets/{pet_id}`) and its
/// administration (`POST /pets`, `PUT /pets/{pet_id}`, `admin` role only).
pub fn router(state: AppState) -> Router {
    api(state).0
}

/// The service's routes and their OpenAPI description, both from the handlers' annotations.
pub fn api(state: AppState) -> (Router, OpenApi) {
    http::routes().merge(admin::routes()).with_state(state).split_for_parts()
}
