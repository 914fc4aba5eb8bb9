//! Payment service: charges the customer for a saga (`ProcessPayment`) and refunds it
//! (`RefundPayment`), one payment per saga, through a simulated payment provider that
//! declines the `declined_card` test card. Replies go to `payment-events`.

mod domain;
mod store;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use contracts::{
    channels,
    payment::{ProcessPayment, RefundPayment},
};
use kit::{Service, ServiceContext, StartError};
use messaging::{Envelope, Handler, HandlerError, MessageContext};
use persistence::open_service;

pub use domain::{Payment, PaymentStatus};
pub use store::PaymentStore;

/// The service's name: its schema, consumer group and CloudEvents source.
pub const SERVICE: &str = "payment";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../db/payment");

/// Opens storage, starts the outbox relay and the command consumer.
pub async fn start(ctx: &ServiceContext) -> Result<Service, StartError> {
    let (storage, bus) = open_service(ctx, SERVICE, SERVICE, &MIGRATOR, Default::default).await?;
    let handler = CommandHandler { store: PaymentStore::new(storage.clone()), source: bus.source().to_owned() };
    bus.subscribe(channels::PAYMENT_COMMANDS, SERVICE, handler)
        .await
        .map_err(StartError::at(SERVICE, "subscribing to commands"))?;
    Ok(Service {
        name: SERVICE,
        router: router(),
        readiness: vec![storage.readiness(), Arc::new(ctx.backends.clone())],
    })
}

/// The service's HTTP API: payments are internal to sagas, so only the ops routes (added by
/// the kit) are served.
pub fn router() -> Router {
    Router::new()
}

struct CommandHandler {
    store: PaymentStore,
    source: String,
}

#[async_trait]
impl Handler for CommandHandler {
    async fn handle(&self, message: Envelope) -> Result<(), HandlerError> {
        let ctx = MessageContext::caused_by(&message);
        let reply = if message.is::<ProcessPayment>() {
            let command = message.decode::<ProcessPayment>()?;
            self.store.process(&message, &command, &self.source, &ctx).await
        } else if message.is::<RefundPayment>() {
            let command = message.decode::<RefundPayment>()?;
            self.store.refund(&message, &command, &self.source, &ctx).await
        } else {
            return Err(HandlerError::fatal(format!("payment does not handle {}", message.event_type)));
        };
        reply.map(drop).map_err(HandlerError::retriable)
    }
}
