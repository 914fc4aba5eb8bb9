//! Delivery service: books the delivery of a saga's pet (`ScheduleDelivery`) and cancels it
//! (`CancelDelivery`), one delivery per saga. A delivery is expected
//! `services.delivery.delivery_days` after it is booked, an express order's (`express` on the
//! command) the next day. A shipping address with blank fields cannot be delivered to and
//! fails the step. Replies go to `delivery-events`.

mod domain;
mod store;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use contracts::{
    channels,
    delivery::{CancelDelivery, ScheduleDelivery},
};
use kit::{Service, ServiceContext, StartError};
use messaging::{Envelope, Handler, HandlerError, MessageContext};
use persistence::open_service;

pub use domain::{Booking, Delivery, DeliveryStatus};
pub use store::{DeliveryState, DeliveryStore};

/// The service's name: its schema, consumer group and CloudEvents source.
pub const SERVICE: &str = "delivery";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../db/delivery");

/// Opens storage, starts the outbox relay and the command consumer.
pub async fn start(ctx: &ServiceContext) -> Result<Service, StartError> {
    let (storage, bus) = open_service(ctx, SERVICE, SERVICE, &MIGRATOR, Default::default).await?;
    let handler = CommandHandler {
        store: DeliveryStore::new(storage.clone()),
        source: bus.source().to_owned(),
        delivery_days: ctx.settings.services.delivery.delivery_days,
    };
    bus.subscribe(channels::DELIVERY_COMMANDS, SERVICE, handler)
        .await
        .map_err(StartError::at(SERVICE, "subscribing to commands"))?;
    Ok(Service {
        name: SERVICE,
        router: router(),
        // No routes of its own to describe.
        openapi: Default::default(),
        readiness: vec![storage.readiness(), Arc::new(ctx.backends.clone())],
        audit: storage.audit_log(),
    })
}

/// The service's HTTP API: deliveries are internal to sagas, so only the ops routes (added
/// by the kit) are served.
pub fn router() -> Router {
    Router::new()
}

struct CommandHandler {
    store: DeliveryStore,
    source: String,
    delivery_days: u32,
}

#[async_trait]
impl Handler for CommandHandler {
    async fn handle(&self, message: Envelope) -> Result<(), HandlerError> {
        let ctx = MessageContext::caused_by(&message);
        let reply = if message.is::<ScheduleDelivery>() {
            let command = message.decode::<ScheduleDelivery>()?;
            self.store.schedule(&message, &command, self.delivery_days, &self.source, &ctx).await
        } else if message.is::<CancelDelivery>() {
            let command = message.decode::<CancelDelivery>()?;
            self.store.cancel(&message, &command, &self.source, &ctx).await
        } else {
            return Err(HandlerError::fatal(format!("delivery does not handle {}", message.event_type)));
        };
        reply.map(drop).map_err(HandlerError::retriable)
    }
}
