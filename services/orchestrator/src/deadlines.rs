//! Step deadlines: a saga that waits too long for a reply is moved on by the clock. Every
//! `deadline_check_ms` the orchestrator looks for sagas whose last change is older than
//! `step_timeout_ms` and applies [`saga::Saga::on_deadline`]: the command goes out again (a
//! bounded number of times), then the saga compensates — or, for a compensation that never
//! answers, fails. The check reads the saga log, so it resumes after a crash exactly where
//! the log says; several orchestrators may run it, optimistic concurrency lets one win.

use std::time::Duration;

use chrono::Utc;
use persistence::StoreError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Outcomes, SagaStore};

/// Sagas looked at per check (the oldest first); more wait for the next check.
const BATCH: i64 = 100;

/// Runs the deadline check until `shutdown`.
pub(crate) async fn watch(
    store: SagaStore,
    outcomes: Outcomes,
    step_timeout: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    let timeout = chrono::Duration::from_std(step_timeout).unwrap_or(chrono::Duration::MAX);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        let overdue_before = Utc::now() - timeout;
        let due = match store.overdue(overdue_before, BATCH).await {
            Ok(due) => due,
            Err(e) => {
                warn!(error = %e, "deadline check: could not list waiting sagas");
                continue;
            }
        };
        for saga_id in due {
            match store.advance_overdue(saga_id, overdue_before).await {
                Ok(Some(advanced)) => {
                    let step = advanced.saga.awaiting();
                    info!(%saga_id, order_id = %advanced.saga.order.order_id, correlation_id = advanced.saga.correlation_id.as_deref(), waiting_for = ?step, "saga deadline passed");
                    for event in &advanced.events {
                        if let Some((step, action)) = timed_out(event) {
                            metrics::counter!("petstore_saga_timeouts_total", "step" => step, "action" => action)
                                .increment(1);
                        }
                    }
                    outcomes.observe(&advanced.saga, &advanced.events, advanced.saga.correlation_id.as_deref()).await;
                }
                Ok(None) => {}
                // A reply or another orchestrator moved the saga meanwhile: nothing is due.
                Err(StoreError::Conflict { .. }) => debug!(%saga_id, "deadline raced with another change"),
                Err(e) => warn!(%saga_id, error = %e, "deadline check: could not move the saga on"),
            }
        }
    }
}

/// The step and action (`execute`, `compensate`, `notify`) a timeout event is about.
fn timed_out(event: &saga::SagaEvent) -> Option<(&'static str, &'static str)> {
    match event {
        saga::SagaEvent::StepTimedOut { step } => Some((step.as_str(), "execute")),
        saga::SagaEvent::CompensationTimedOut { step } => Some((step.as_str(), "compensate")),
        saga::SagaEvent::NoticeTimedOut => Some(("send_cancellation_notice", "notify")),
        _ => None,
    }
}
