//! Delivery service: books the delivery of a saga's pet (`ScheduleDelivery`) and cancels it
//! (`CancelDelivery`), one delivery per saga. A shipping address with blank fields cannot be
//! delivered to and fails the step. Replies go to `delivery-events`.

mod domain;
mod store;

use std::sync::Arc;

use axum::Router;
use contracts::{
    channels,
    delivery::{CancelDelivery, ScheduleDelivery},
};
use kit::{Service, ServiceContext, StartError};
use messaging::{Bus, Envelope, HandlerError, MessageContext};
use persistence::Storage;

pub use domain::{Delivery, DeliveryStatus};
pub use store::{DeliveryState, DeliveryStore};

/// The service's name: its schema, consumer group and CloudEvents source.
pub const SERVICE: &str = "delivery";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../db/delivery");

/// Opens storage, starts the outbox relay and the command consumer.
pub async fn start(ctx: &ServiceContext) -> Result<Service, StartError> {
    let storage = Storage::open(ctx, SERVICE, &MIGRATOR, Default::default)
        .await
        .map_err(StartError::at(SERVICE, "opening storage"))?;
    let bus = Bus::new(&ctx.backends, &ctx.settings.messaging, SERVICE, ctx.shutdown.clone())
        .await
        .map_err(StartError::at(SERVICE, "joining the bus"))?;
    storage.start_relay(&bus, SERVICE, ctx);
    let handler = CommandHandler {
        store: DeliveryStore::new(storage.clone()),
        source: bus.source().to_owned(),
        delivery_days: ctx.settings.services.delivery.delivery_days,
    };
    let handler = Arc::new(handler);
    bus.subscribe(channels::DELIVERY_COMMANDS, SERVICE, move |msg| {
        let handler = handler.clone();
        async move { handler.handle(msg).await }
    })
    .await
    .map_err(StartError::at(SERVICE, "subscribing to commands"))?;
    ctx.close_on_shutdown(&bus);
    Ok(Service {
        name: SERVICE,
        router: router(),
        readiness: vec![storage.readiness(), Arc::new(ctx.backends.clone())],
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

impl CommandHandler {
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
