//! Orchestrator: runs the order-processing saga. It starts a saga for every `OrderCreated`,
//! sends each step's command, moves the saga on every participant reply, and records every
//! transition in the saga log before the commands it implies leave through the outbox.
//! `GET /sagas/{id}` and `GET /orders/{id}/status` show where a saga is.

mod api;
mod commands;
mod dead_letters;
mod deadlines;
mod store;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use contracts::{channels, order::OrderCreated};
use kit::{Service, ServiceContext, StartError};
use messaging::{Envelope, Handler, HandlerError};
use persistence::open_service;
use saga::{Saga, SagaEvent};
use tracing::{info, warn};

pub use api::router;
pub use store::{SagaState, SagaStore};

use dead_letters::DeadLetterStore;

/// The service's name: its schema, consumer group and CloudEvents source.
pub const SERVICE: &str = "orchestrator";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../db/orchestrator");

/// The channels the orchestrator consumes: new orders and every participant's replies.
const INPUTS: [&str; 5] = [
    channels::ORDER_EVENTS,
    channels::INVENTORY_EVENTS,
    channels::PAYMENT_EVENTS,
    channels::DELIVERY_EVENTS,
    channels::NOTIFICATION_EVENTS,
];

/// Opens storage, starts the outbox relay and the consumers, and builds the routes.
pub async fn start(ctx: &ServiceContext) -> Result<Service, StartError> {
    let (storage, bus) = open_service(ctx, SERVICE, SERVICE, &MIGRATOR, SagaState::default).await?;
    let store = SagaStore::new(storage.clone(), bus.source());
    let letters = DeadLetterStore::new(&storage, bus.clone());
    let outcomes = Outcomes { dead_letters: letters.clone(), source: bus.source().to_owned() };
    for channel in INPUTS {
        bus.subscribe(channel, SERVICE, SagaHandler { store: store.clone(), outcomes: outcomes.clone() })
            .await
            .map_err(StartError::at(SERVICE, "subscribing"))?;
    }
    ctx.tasks.spawn(store.clone().follow_ends(ctx.shutdown.clone()));
    let deadlines = &ctx.settings.services.orchestrator;
    ctx.tasks.spawn(deadlines::watch(
        store.clone(),
        outcomes,
        Duration::from_millis(deadlines.step_timeout_ms),
        Duration::from_millis(deadlines.deadline_check_ms),
        ctx.shutdown.clone(),
    ));
    let (dead_letter_routes, dead_letter_api) = dead_letters::start(ctx, &letters, &bus).await?;
    let (saga_routes, mut openapi) = api::api(store);
    openapi.merge(dead_letter_api);
    Ok(Service {
        name: SERVICE,
        router: saga_routes.merge(dead_letter_routes),
        openapi,
        readiness: vec![storage.readiness(), Arc::new(ctx.backends.clone())],
        audit: storage.audit_log(),
    })
}

/// What follows a saga transition besides its log: metrics and logs, and a dead letter when
/// the saga failed.
#[derive(Clone)]
struct Outcomes {
    dead_letters: DeadLetterStore,
    source: String,
}

impl Outcomes {
    async fn observe(&self, saga: &Saga, events: &[SagaEvent], correlation_id: Option<&str>) {
        record(saga, events, correlation_id);
        if events.iter().any(|e| matches!(e, SagaEvent::Failed { .. })) {
            dead_letters::saga_failed(&self.dead_letters, saga, &self.source).await;
        }
    }
}

/// Moves sagas on new orders and participants' replies.
struct SagaHandler {
    store: SagaStore,
    outcomes: Outcomes,
}

#[async_trait]
impl Handler for SagaHandler {
    async fn handle(&self, message: Envelope) -> Result<(), HandlerError> {
        handle(&self.store, &self.outcomes, message).await
    }
}

async fn handle(store: &SagaStore, outcomes: &Outcomes, message: Envelope) -> Result<(), HandlerError> {
    let advanced = if message.is::<OrderCreated>() {
        let order = message.decode::<OrderCreated>()?;
        let (saga_id, details, correlation_id) = (order.saga_id, order.order, message.correlation_id.clone());
        store
            .advance(&message, saga_id, move |current| match current {
                None => Saga::start(saga_id, details.clone(), correlation_id.clone()),
                Some(_) => Vec::new(),
            })
            .await
    } else if let Some((saga_id, reply)) = commands::reply_of(&message)? {
        let kind = message.event_type.clone();
        store
            .advance(&message, saga_id, move |current| match current {
                Some(saga) => saga.on_reply(&reply),
                None => {
                    warn!(%saga_id, r#type = %kind, "reply for an unknown saga; ignored");
                    Vec::new()
                }
            })
            .await
    } else {
        // Other events on these channels (OrderConfirmed, …) need nothing from the saga.
        return Ok(());
    };
    let Some(advanced) = advanced.map_err(HandlerError::retriable)? else { return Ok(()) };
    outcomes.observe(&advanced.saga, &advanced.events, message.correlation_id.as_deref()).await;
    Ok(())
}

/// Logs the transition and counts saga outcomes.
fn record(saga: &Saga, events: &[SagaEvent], correlation_id: Option<&str>) {
    for event in events {
        info!(saga_id = %saga.saga_id, order_id = %saga.order.order_id, correlation_id, event = event.name(), status = saga.status.as_str(), "saga advanced");
        match event {
            SagaEvent::Started { .. } => metrics::counter!("petstore_sagas_started_total").increment(1),
            SagaEvent::Completed | SagaEvent::Compensated { .. } | SagaEvent::Failed { .. } => {
                let outcome = saga.status.as_str();
                metrics::counter!("petstore_sagas_ended_total", "outcome" => outcome).increment(1);
                let secs = store::duration_secs(saga, saga.updated_at);
                metrics::histogram!("petstore_saga_duration_seconds", "outcome" => outcome).record(secs);
                if saga.status == saga::SagaStatus::Failed {
                    tracing::error!(saga_id = %saga.saga_id, reason = saga.reason.as_deref(), "saga FAILED: a compensation could not be completed");
                }
            }
            SagaEvent::StepSucceeded { step } => record_step(saga, *step, "execute", "succeeded"),
            SagaEvent::StepFailed { step, .. } => record_step(saga, *step, "execute", "failed"),
            SagaEvent::StepCompensated { step } => record_step(saga, *step, "compensate", "succeeded"),
            SagaEvent::CompensationFailed { step, .. } => record_step(saga, *step, "compensate", "failed"),
            _ => {}
        }
    }
}

/// Observes how long a step (or its compensation) took, from its command to the reply.
fn record_step(saga: &Saga, step: saga::Step, action: &'static str, outcome: &'static str) {
    let Some(state) = saga.steps.iter().find(|s| s.step == step) else { return };
    let (from, to) = match action {
        "execute" => (state.started_at, state.finished_at),
        _ => (state.compensation_started_at, state.compensated_at.or(Some(saga.updated_at))),
    };
    let (Some(from), Some(to)) = (from, to) else { return };
    let secs = (to - from).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
    metrics::histogram!(
        "petstore_saga_step_duration_seconds",
        "step" => step.as_str(), "action" => action, "outcome" => outcome
    )
    .record(secs);
}
