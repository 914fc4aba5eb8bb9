//! Dead letters of every channel, kept where operators can see and replay them. The
//! orchestrator — the service that operates the sagas — reads each contract channel's
//! `<channel>.dlq` ([`Bus::subscribe_dead_letters`]), stores every letter once with its error,
//! attempts and origin, serves `GET /admin/dlq` and `POST /admin/dlq/{id}/replay` (the message
//! goes back through the outbox), and keeps two gauges per channel:
//! `petstore_dead_letters` (stored, not replayed) and `petstore_dead_letter_oldest_age_seconds`.

mod api;
mod store;

use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use chrono::Utc;
use contracts::channels;
use kit::{ServiceContext, StartError};
use messaging::{Bus, DeadLetter, Envelope, Handler, HandlerError, MessageContext};
use persistence::StoreError;
use saga::{Command, Saga, StepStatus};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use utoipa::openapi::OpenApi;

use crate::SERVICE;
pub use store::DeadLetterStore;

/// How often the gauges are refreshed besides after each stored letter and replay (several
/// orchestrators share the table, and the oldest letter's age grows on its own).
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Collects the dead letters of every contract channel into the service's storage, keeps
/// the gauges, and returns the `/admin/dlq` routes with their OpenAPI description.
pub async fn start(ctx: &ServiceContext, store: &DeadLetterStore, bus: &Bus) -> Result<(Router, OpenApi), StartError> {
    let store = store.clone();
    // Exported from the start, so that dashboards and alerts see 0 rather than nothing.
    for channel in channels::ALL {
        set_gauges(channel, 0, 0.0);
    }
    for channel in channels::ALL {
        bus.subscribe_dead_letters(channel, Collector { store: store.clone() })
            .await
            .map_err(StartError::at(SERVICE, "subscribing to dead letters"))?;
    }
    ctx.tasks.spawn(refresh_periodically(store.clone(), ctx.shutdown.clone()));
    Ok(api::api(store))
}

/// Dead-letters a saga that ended `failed`: the compensation that could not be done is stored
/// as a letter of its command channel (error: the saga's reason, attempts: the compensation's
/// sends, group: the participant), so an operator sees it in `GET /admin/dlq` and can send it
/// again once the participant is fixed. Written after the saga's transaction; a failure to
/// store it is logged (the saga's `failed` status, metric and log stay the loud signal).
pub async fn saga_failed(store: &DeadLetterStore, saga: &Saga, source: &str) {
    let Some(step) =
        saga.steps.iter().find(|s| matches!(s.status, StepStatus::CompensationFailed | StepStatus::Compensating))
    else {
        return;
    };
    let ctx = MessageContext { correlation_id: saga.correlation_id.clone(), ..MessageContext::default() };
    let command = match crate::commands::message_for(saga, Command::Compensate(step.step), source, &ctx) {
        Ok(Some(command)) => command,
        Ok(None) => return,
        Err(e) => {
            warn!(saga_id = %saga.saga_id, error = %e, "could not build the failed compensation's dead letter");
            return;
        }
    };
    let group = command.channel.strip_suffix("-commands").unwrap_or(&command.channel).to_owned();
    let letter = DeadLetter {
        error: saga.reason.clone().unwrap_or_else(|| "compensation failed".to_owned()),
        attempts: step.compensation_attempts,
        channel: command.channel.clone(),
        group,
        dead_lettered_at: Some(Utc::now()),
        message: command.envelope,
    };
    match store.record(&letter).await {
        Ok(_) => {
            warn!(saga_id = %saga.saga_id, message_id = %letter.message.id, channel = %letter.channel, "failed saga's compensation dead-lettered");
            refresh_after_change(store).await;
        }
        Err(e) => warn!(saga_id = %saga.saga_id, error = %e, "could not store the failed saga's dead letter"),
    }
}

/// Stores each dead letter it is handed.
struct Collector {
    store: DeadLetterStore,
}

#[async_trait]
impl Handler for Collector {
    async fn handle(&self, letter: Envelope) -> Result<(), HandlerError> {
        let letter = DeadLetter::parse(&letter)?;
        let recorded = self.store.record(&letter).await.map_err(|e| match e {
            StoreError::Codec(_) => HandlerError::fatal(e),
            other => HandlerError::retriable(other),
        })?;
        if recorded {
            warn!(
                message_id = %letter.message.id, message_type = %letter.message.event_type,
                channel = %letter.channel, group = %letter.group, attempts = letter.attempts, error = %letter.error,
                "dead letter stored; GET /admin/dlq lists it, POST /admin/dlq/{{id}}/replay sends it again"
            );
            refresh_after_change(&self.store).await;
        }
        Ok(())
    }
}

fn set_gauges(channel: &str, waiting: u64, oldest_age_secs: f64) {
    metrics::gauge!("petstore_dead_letters", "channel" => channel.to_owned()).set(waiting as f64);
    metrics::gauge!("petstore_dead_letter_oldest_age_seconds", "channel" => channel.to_owned()).set(oldest_age_secs);
}

/// Sets every channel's gauges from the store; when it fails the gauges keep their values.
async fn refresh(store: &DeadLetterStore) -> Result<(), StoreError> {
    let waiting = store.waiting().await?;
    let now = Utc::now();
    for channel in channels::ALL.iter().copied().chain(waiting.keys().map(String::as_str)) {
        let (count, age) = match waiting.get(channel) {
            Some((count, oldest)) => (*count, (now - *oldest).num_milliseconds().max(0) as f64 / 1e3),
            None => (0, 0.0),
        };
        set_gauges(channel, count, age);
    }
    Ok(())
}

/// Refreshes the gauges after a change; a failure waits for the next periodic refresh.
async fn refresh_after_change(store: &DeadLetterStore) {
    if let Err(error) = refresh(store).await {
        debug!(%error, "dead-letter gauges not refreshed; the next periodic refresh tries again");
    }
}

/// Refreshes the gauges every [`REFRESH_EVERY`] until `shutdown`; logs when refreshing starts
/// and stops failing.
async fn refresh_periodically(store: DeadLetterStore, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(REFRESH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let result = refresh(&store).await;
        match &result {
            Ok(()) if failing => info!("dead-letter gauges are refreshed again"),
            Err(error) if !failing => warn!(%error, "dead-letter gauges cannot be refreshed; they keep their values"),
            _ => {}
        }
        failing = result.is_err();
    }
}
