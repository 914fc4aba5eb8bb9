//! Dead-lettering, the outermost layer of every subscription: a message still failing after
//! its retries is stored on its channel's dead-letter channel, so that its delivery can be
//! acknowledged without losing it.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Route;
use crate::{
    Backend, Envelope, HandlerError, RetryPolicy,
    middleware::{Delivered, Middleware, Next},
};

/// The physical dead-letter channel of a physical channel.
pub(super) fn dead_letter_channel(physical: &str) -> String {
    format!("{physical}.dlq")
}

/// Stores what keeps failing on `<channel>.dlq` (same backend) with the error, the attempts,
/// the origin (`channel/group`) and the time. Only a shutdown while the message is still
/// being retried, or before its letter is stored, leaves it unacknowledged (it comes back).
pub(super) struct DeadLetters {
    backend: Arc<dyn Backend>,
    /// Physical name of the dead-letter channel.
    physical: String,
    partitions: u32,
    /// Physical name of the group that keeps the letters.
    keeper: String,
    origin: String,
    retry: RetryPolicy,
    stored: metrics::Counter,
}

impl DeadLetters {
    /// The layer of a subscription of `route` in `group`; `keeper` is the physical name of
    /// the group that keeps the letters, created before the first one is published so that
    /// backends without retention keep it.
    pub(super) fn new(route: &Route, group: &str, keeper: String, retry: RetryPolicy) -> Self {
        let labels = [
            ("channel", route.channel.clone()),
            ("backend", route.backend.name().to_owned()),
            ("group", group.to_owned()),
        ];
        Self {
            backend: route.backend.clone(),
            physical: dead_letter_channel(&route.physical),
            partitions: route.partitions.max(1),
            keeper,
            origin: format!("{}/{group}", route.channel),
            retry,
            stored: metrics::counter!("petstore_messages_dead_lettered_total", &labels),
        }
    }

    /// Publishes `message` as a dead letter; keeps trying until it is stored, because
    /// acknowledging a message that is neither processed nor dead-lettered loses it. Returns
    /// false when `cancel` fires first.
    pub(super) async fn store(
        &self,
        message: &Envelope,
        reason: &str,
        attempts: u32,
        cancel: &CancellationToken,
    ) -> bool {
        let mut letter = message.clone();
        letter.extensions.insert(crate::DLQ_ERROR.into(), reason.to_owned());
        letter.extensions.insert(crate::DLQ_ATTEMPTS.into(), attempts.to_string());
        letter.extensions.insert(crate::DLQ_ORIGIN.into(), self.origin.clone());
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        letter.extensions.insert(crate::DLQ_TIME.into(), now);
        error!(message = %message.id, r#type = %message.event_type, attempts, error = reason, "dead-lettering message");
        let mut n = 1;
        loop {
            match self.publish(&letter).await {
                Ok(()) => {
                    self.stored.increment(1);
                    return true;
                }
                Err(e) => {
                    warn!(error = %e, "dead-letter publish failed; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return false,
                        () = tokio::time::sleep(self.retry.backoff(n)) => {}
                    }
                    n += 1;
                }
            }
        }
    }

    async fn publish(&self, letter: &Envelope) -> Result<(), crate::BusError> {
        self.backend.declare(&self.physical, self.partitions).await?;
        self.backend.ensure_group(&self.physical, &self.keeper).await?;
        self.backend.publish(&self.physical, letter).await
    }
}

#[async_trait]
impl Middleware for DeadLetters {
    async fn call(&self, message: Envelope, d: &Delivered<'_>, next: Next<'_>) -> Result<(), HandlerError> {
        match next.run(message, d).await {
            Ok(()) => Ok(()),
            // Shutdown mid-retry: left unacknowledged, it comes back.
            Err(HandlerError::Retriable(e)) if d.is_cancelled() => Err(HandlerError::Retriable(e)),
            Err(HandlerError::Retriable(reason) | HandlerError::Fatal(reason)) => {
                if self.store(d.original(), &reason, d.attempts(), d.cancel_token()).await {
                    Ok(())
                } else {
                    Err(HandlerError::Retriable(format!("shutdown before the dead letter was stored: {reason}")))
                }
            }
        }
    }
}
