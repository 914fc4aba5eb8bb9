use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use messaging::{Bus, BusError, Envelope, RetryPolicy};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::StoreError;

/// Where the relay hands outbox messages: the bus in production.
#[async_trait]
pub trait OutboxSink: Send + Sync + 'static {
    /// Publishes one message; `Ok` means the transport accepted it.
    async fn deliver(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError>;
}

#[async_trait]
impl OutboxSink for Bus {
    async fn deliver(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
        self.publish(channel, envelope).await
    }
}

/// An outbox the relay can drain.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Delivers up to `max` pending messages, oldest first, removing each once delivered;
    /// returns how many were delivered, or the first failure (the failed messages stay and
    /// are delivered again, so a consumer may see one twice: the inbox drops the repeat).
    async fn relay(&self, max: usize, sink: &dyn OutboxSink) -> Result<usize, StoreError>;
    /// Returns when new messages may be pending, or after `timeout`.
    async fn wait_for_messages(&self, timeout: Duration);
    /// Messages waiting to be published.
    async fn backlog(&self) -> Result<i64, StoreError>;
}

/// Observes relay latency — from a message's creation, in the transaction that stored it, to
/// the transport's acknowledgement — as `petstore_outbox_relay_latency_seconds`.
struct Measured {
    sink: Arc<dyn OutboxSink>,
    latency: metrics::Histogram,
}

#[async_trait]
impl OutboxSink for Measured {
    async fn deliver(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
        self.sink.deliver(channel, envelope).await?;
        let waited = chrono::Utc::now() - envelope.time;
        self.latency.record(waited.num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
        Ok(())
    }
}

const BATCH: usize = 200;
const POLL: Duration = Duration::from_millis(500);
/// How often the backlog gauge is refreshed: counting the outbox on every round would cost
/// a statement per round under load.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

/// Backoff after a failed relay round: exponential from 100 ms with jitter, capped at five
/// seconds, so that replicas whose broker went away do not retry in lockstep. The relay never
/// gives up (`max_attempts` is not consulted): the messages wait in the outbox.
const RELAY_BACKOFF: RetryPolicy =
    RetryPolicy { max_attempts: u32::MAX, initial_backoff_ms: 100, max_backoff_ms: 5_000 };

/// Publishes outbox messages until `shutdown` fires, then flushes what is left (for at most
/// five seconds). A failing transport is retried with backoff; nothing is dropped.
pub async fn run_relay(
    store: Arc<dyn OutboxStore>,
    sink: Arc<dyn OutboxSink>,
    service: &'static str,
    shutdown: CancellationToken,
) {
    let sink: Arc<dyn OutboxSink> = Arc::new(Measured {
        sink,
        latency: metrics::histogram!("petstore_outbox_relay_latency_seconds", "service" => service),
    });
    let backlog_gauge = metrics::gauge!("petstore_outbox_backlog_messages", "service" => service);
    let relayed = metrics::counter!("petstore_outbox_relayed_total", "service" => service);
    let mut failures = 0u32;
    let mut counted: Option<tokio::time::Instant> = None;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let result = store.relay(BATCH, sink.as_ref()).await;
        if counted.is_none_or(|at| at.elapsed() >= BACKLOG_EVERY) {
            counted = Some(tokio::time::Instant::now());
            if let Ok(backlog) = store.backlog().await {
                backlog_gauge.set(backlog as f64);
            }
        }
        match result {
            Ok(n) => {
                failures = 0;
                relayed.increment(n as u64);
                if n == BATCH {
                    continue;
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = store.wait_for_messages(POLL) => {}
                }
            }
            Err(e) => {
                failures += 1;
                let backoff = RELAY_BACKOFF.backoff(failures);
                warn!(error = %e, ?backoff, "outbox relay failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
    let flush = async {
        loop {
            match store.relay(BATCH, sink.as_ref()).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => break,
                Err(e) => {
                    warn!(error = %e, "outbox flush on shutdown failed; messages stay for the next start");
                    break;
                }
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), flush).await.is_err() {
        warn!("outbox flush on shutdown timed out; messages stay for the next start");
    }
    debug!("outbox relay stopped");
}
