//! Order service: takes orders (`POST /orders`), records them as events, announces them on
//! `order-events` (which starts the saga) and confirms or cancels them when the orchestrator
//! says how their saga ended. Placing an order evaluates the customer's feature flags: their
//! `pricing_experiment` arm prices it, `express_order_processing` makes it an express order.

mod api;
mod decisions;
mod domain;
mod idempotency;
mod store;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use contracts::{
    channels,
    order::{ApproveOrder, RejectOrder},
};
use kit::{Service, ServiceContext, StartError, resilience::CircuitBreaker};
use messaging::{Envelope, Handler, HandlerError};
use persistence::open_service;

pub use api::{AppState, router};
pub use decisions::{EXPRESS_FLAG, FlagDecisions};
pub use domain::{Order, OrderEvent, OrderStatus};
pub use idempotency::{
    IDEMPOTENCY_KEY_HEADER, IdempotencyKey, KEY_RETENTION, KEY_REUSED_TYPE, KeyClaim, REPLAYED_HEADER, Receipt,
    RememberedKey,
};
pub use store::{OrderState, OrderStore, Placement};

/// The service's name: its consumer group and CloudEvents source.
pub const SERVICE: &str = "order";

/// Its PostgreSQL schema (`order` is a reserved word in SQL).
pub const SCHEMA: &str = "orders";

/// How often expired idempotency keys are purged. Expired keys are ignored before that; the
/// purge only keeps the table small.
const KEY_PURGE_INTERVAL: Duration = Duration::from_secs(60 * 60);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../db/order");

/// Opens storage, starts the outbox relay and the command consumer, and builds the routes.
pub async fn start(ctx: &ServiceContext) -> Result<Service, StartError> {
    let (service, _) = start_with_store(ctx).await?;
    Ok(service)
}

/// Like [`start`], also returning the store (for tests and maintenance commands).
pub async fn start_with_store(ctx: &ServiceContext) -> Result<(Service, OrderStore), StartError> {
    let (storage, bus) = open_service(ctx, SERVICE, SCHEMA, &MIGRATOR, OrderState::default).await?;
    let store = OrderStore::new(storage.clone(), bus.source());
    bus.subscribe(channels::ORDER_COMMANDS, SERVICE, CommandHandler { store: store.clone() })
        .await
        .map_err(StartError::at(SERVICE, "subscribing to commands"))?;
    ctx.tasks.spawn(purge_expired_keys(store.clone(), ctx.shutdown.clone().cancelled_owned()));
    let state = AppState {
        store: store.clone(),
        bus,
        pet_lookup_timeout: Duration::from_millis(ctx.settings.services.order.pet_lookup_timeout_ms),
        inventory_breaker: CircuitBreaker::live("inventory_queries", ctx.breaker_settings()),
        flags: ctx.flags.clone(),
    };
    let state_breaker = state.inventory_breaker.clone();
    let (router, openapi) = api::api(state);
    let service = Service {
        name: SERVICE,
        router,
        openapi,
        readiness: vec![storage.readiness(), Arc::new(ctx.backends.clone()), Arc::new(state_breaker)],
        audit: store.audit_log(),
    };
    Ok((service, store))
}

/// Purges expired idempotency keys every [`KEY_PURGE_INTERVAL`] (first at start-up) until
/// `shutdown` completes. Every replica may run it: deleting twice is harmless.
async fn purge_expired_keys(store: OrderStore, shutdown: impl Future<Output = ()>) {
    let mut every = tokio::time::interval(KEY_PURGE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = every.tick() => {}
        }
        match store.purge_expired_keys().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency keys purged"),
            Err(e) => tracing::warn!(error = %e, "purging expired idempotency keys failed; trying again later"),
        }
    }
}

/// Confirms or cancels orders as the orchestrator says.
struct CommandHandler {
    store: OrderStore,
}

#[async_trait]
impl Handler for CommandHandler {
    async fn handle(&self, message: Envelope) -> Result<(), HandlerError> {
        let store = &self.store;
        if message.is::<ApproveOrder>() {
            let cmd = message.decode::<ApproveOrder>()?;
            store.handle(&message, cmd.saga.order_id, Order::approve).await.map_err(HandlerError::retriable)
        } else if message.is::<RejectOrder>() {
            let cmd = message.decode::<RejectOrder>()?;
            store.handle(&message, cmd.saga.order_id, |o| o.reject(&cmd.reason)).await.map_err(HandlerError::retriable)
        } else {
            Err(HandlerError::fatal(format!("order does not handle {}", message.event_type)))
        }
    }
}
