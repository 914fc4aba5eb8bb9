//! Payment service: charges the customer for a saga (`ProcessPayment`) and refunds it
//! (`RefundPayment`), one payment per saga. Every charge is authorized by the payment provider
//! (the built-in simulated one declines the `declined_card` test card) through a timeout,
//! bounded retries and the `payment_provider` circuit breaker. Replies go to `payment-events`.

mod domain;
mod provider;
mod store;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use contracts::{
    channels,
    payment::{ProcessPayment, RefundPayment},
};
use kit::{Service, ServiceContext, StartError, resilience::CircuitBreaker};
use messaging::{Envelope, Handler, HandlerError, MessageContext};
use persistence::open_service;

pub use domain::{Payment, PaymentStatus};
pub use provider::{GuardedProvider, PaymentProvider, SimulatedProvider, UNAVAILABLE, Unavailable, Verdict};
pub use store::PaymentStore;

/// The service's name: its schema, consumer group and CloudEvents source.
pub const SERVICE: &str = "payment";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../db/payment");

/// Opens storage, starts the outbox relay and the command consumer, with the simulated
/// provider `services.payment.provider` describes (and the fault flags steer). The provider's
/// settings and the breaker's follow the configuration in force (`ctx.live`).
pub async fn start(ctx: &ServiceContext) -> Result<Service, StartError> {
    let simulated = SimulatedProvider::live(provider_settings(ctx)).with_fault_flags(ctx.flags.clone());
    start_with_provider(ctx, Arc::new(simulated)).await
}

/// `services.payment.provider` in force.
fn provider_settings(ctx: &ServiceContext) -> kit::live::Live<kit::config::ProviderSettings> {
    ctx.live.section(|s| s.services.payment.provider.clone())
}

/// Like [`start`], charging through `provider` (another provider, or a test's).
pub async fn start_with_provider(
    ctx: &ServiceContext,
    provider: Arc<dyn PaymentProvider>,
) -> Result<Service, StartError> {
    let (storage, bus) = open_service(ctx, SERVICE, SERVICE, &MIGRATOR, Default::default).await?;
    let breaker = CircuitBreaker::live("payment_provider", ctx.breaker_settings());
    let provider = GuardedProvider::live(provider, provider_settings(ctx), breaker.clone());
    let handler =
        CommandHandler { store: PaymentStore::new(storage.clone()), provider, source: bus.source().to_owned() };
    bus.subscribe(channels::PAYMENT_COMMANDS, SERVICE, handler)
        .await
        .map_err(StartError::at(SERVICE, "subscribing to commands"))?;
    Ok(Service {
        name: SERVICE,
        router: router(),
        // No routes of its own to describe.
        openapi: Default::default(),
        readiness: vec![storage.readiness(), Arc::new(ctx.backends.clone()), Arc::new(breaker)],
        audit: storage.audit_log(),
    })
}

/// The service's HTTP API: payments are internal to sagas, so only the ops routes (added by
/// the kit) are served.
pub fn router() -> Router {
    Router::new()
}

struct CommandHandler {
    store: PaymentStore,
    provider: GuardedProvider,
    source: String,
}

#[async_trait]
impl Handler for CommandHandler {
    async fn handle(&self, message: Envelope) -> Result<(), HandlerError> {
        let ctx = MessageContext::caused_by(&message);
        let reply = if message.is::<ProcessPayment>() {
            let command = message.decode::<ProcessPayment>()?;
            // Ask the provider only for a saga with no payment yet: a redelivered or repeated
            // command repeats the recorded outcome without a second authorization.
            let recorded = self.store.for_saga(command.saga.saga_id).await.map_err(HandlerError::retriable)?;
            let verdict = match recorded {
                Some(_) => None,
                None => Some(self.provider.authorize(&command).await),
            };
            self.store.process(&message, &command, verdict.as_ref(), &self.source, &ctx).await
        } else if message.is::<RefundPayment>() {
            let command = message.decode::<RefundPayment>()?;
            self.store.refund(&message, &command, &self.source, &ctx).await
        } else {
            return Err(HandlerError::fatal(format!("payment does not handle {}", message.event_type)));
        };
        reply.map(drop).map_err(HandlerError::retriable)
    }
}
