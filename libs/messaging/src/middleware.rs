//! Middleware: layers around a message handler, composed like tower layers. Each layer sees
//! the message and the rest of the chain ([`Next`]) and may act before and after it, run it
//! again (retry) or not at all (deduplication).
//!
//! Every subscription runs `dead letters → Observe → Deduplicate → Retry → (layers added
//! with [`crate::Bus::add_middleware`]) → handler`: what is still failing after the retries
//! is stored as a dead letter by the outermost layer, and the bus acknowledges the delivery.

use std::{
    collections::{HashSet, VecDeque},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Instant,
};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;

use crate::{Envelope, Handler, HandlerError, Pattern, RetryPolicy};

/// Where a message was delivered, for layers that log, measure or retry.
pub struct Delivered<'a> {
    /// Logical channel.
    pub channel: &'a str,
    /// Consumer group.
    pub group: &'a str,
    /// Backend name.
    pub backend: &'static str,
    /// The channel's pattern.
    pub pattern: Pattern,
    original: &'a Envelope,
    cancel: &'a CancellationToken,
    attempts: AtomicU32,
}

impl<'a> Delivered<'a> {
    pub(crate) fn new(
        channel: &'a str,
        group: &'a str,
        backend: &'static str,
        pattern: Pattern,
        original: &'a Envelope,
        cancel: &'a CancellationToken,
    ) -> Self {
        Self { channel, group, backend, pattern, original, cancel, attempts: AtomicU32::new(0) }
    }

    /// The message as the backend delivered it (what a retry starts again from).
    pub fn original(&self) -> &Envelope {
        self.original
    }

    /// Attempts made so far: runs of what [`Retry`] retries (the layers added with
    /// [`crate::Bus::add_middleware`] and the handler), counted whichever of them failed.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Whether the consumer is shutting down (a layer should stop waiting).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The consumer's shutdown signal, for a layer that waits.
    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        self.cancel
    }
}

/// One layer around message handling.
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// Handles `message`, calling `next.run` to pass it on (zero, one or several times).
    async fn call(&self, message: Envelope, delivered: &Delivered<'_>, next: Next<'_>) -> Result<(), HandlerError>;
}

/// The rest of the chain after a layer. `Copy`, so a layer can run it more than once.
#[derive(Clone, Copy)]
pub struct Next<'a> {
    layers: &'a [Arc<dyn Middleware>],
    handler: &'a dyn Handler,
}

impl<'a> Next<'a> {
    pub(crate) fn new(layers: &'a [Arc<dyn Middleware>], handler: &'a dyn Handler) -> Self {
        Self { layers, handler }
    }

    /// Runs the remaining layers and then the handler.
    pub async fn run(self, message: Envelope, delivered: &Delivered<'_>) -> Result<(), HandlerError> {
        match self.layers.split_first() {
            Some((layer, rest)) => layer.call(message, delivered, Next { layers: rest, handler: self.handler }).await,
            None => self.handler.handle(message).await,
        }
    }
}

/// Metrics per channel, backend, pattern and group, and a tracing span per message that
/// carries its id, type, correlation id and W3C trace context. Metric handles are resolved
/// once per subscription, not per message.
pub struct Observe {
    ok: (metrics::Counter, metrics::Histogram),
    retriable: (metrics::Counter, metrics::Histogram),
    fatal: (metrics::Counter, metrics::Histogram),
}

impl Observe {
    /// The layer for one subscription.
    pub fn new(channel: &str, backend: &'static str, pattern: Pattern, group: &str) -> Self {
        let handles = |outcome: &'static str| {
            let labels = [
                ("channel", channel.to_owned()),
                ("backend", backend.to_owned()),
                ("pattern", pattern.as_str().to_owned()),
                ("group", group.to_owned()),
                ("outcome", outcome.to_owned()),
            ];
            (
                metrics::counter!("petstore_messages_consumed_total", &labels),
                metrics::histogram!("petstore_message_handler_duration_seconds", &labels),
            )
        };
        Self { ok: handles("ok"), retriable: handles("retriable_error"), fatal: handles("fatal_error") }
    }
}

#[async_trait]
impl Middleware for Observe {
    async fn call(&self, message: Envelope, d: &Delivered<'_>, next: Next<'_>) -> Result<(), HandlerError> {
        // A child of the producer's span (see `crate::trace` for the policy).
        let span = info_span!(
            "message",
            otel.name = %format_args!("{} process", d.channel),
            otel.kind = "consumer",
            messaging.system = d.backend,
            messaging.destination.name = d.channel,
            messaging.consumer.group.name = d.group,
            message_id = %message.id,
            message_type = %message.event_type,
            correlation_id = message.correlation_id.as_deref().unwrap_or(""),
            otel.status_code = tracing::field::Empty,
        );
        crate::trace::set_parent(&span, message.traceparent.as_deref());
        let started = Instant::now();
        let result = next.run(message, d).instrument(span.clone()).await;
        let (count, duration, outcome) = match &result {
            Ok(()) => (&self.ok.0, &self.ok.1, "ok"),
            Err(HandlerError::Retriable(_)) => (&self.retriable.0, &self.retriable.1, "retriable_error"),
            Err(HandlerError::Fatal(_)) => (&self.fatal.0, &self.fatal.1, "fatal_error"),
        };
        let elapsed = started.elapsed();
        count.increment(1);
        duration.record(elapsed.as_secs_f64());
        // One line per handled message: with the span's correlation and trace ids, a
        // service's part in a flow (`RUST_LOG=messaging=warn` silences it).
        span.in_scope(|| {
            info!(channel = d.channel, outcome, elapsed_ms = elapsed.as_secs_f64() * 1e3, "message handled");
        });
        if outcome != "ok" {
            span.record("otel.status_code", "ERROR");
        }
        result
    }
}

/// Skips a message this subscription has already handled successfully (a redelivery after a
/// lost acknowledgement), remembering the last `capacity` publications. A publication is the
/// message id and, for a replayed message or a dead letter, when it was replayed or
/// dead-lettered ([`Envelope::publication_id`]): a replay is no redelivery, and the same
/// message dead-lettered twice is two letters. Handlers stay idempotent on their own (the
/// inbox); this saves them the work.
pub struct Deduplicate {
    seen: Mutex<(HashSet<Publication>, VecDeque<Publication>)>,
    capacity: usize,
}

/// One publication of a message: its id and a hash of what tells its replays and dead
/// letters apart (the set lives in memory only, so the hash need not be stable).
type Publication = (Uuid, u64);

fn publication(message: &Envelope) -> Publication {
    let mut hasher = DefaultHasher::new();
    for name in [crate::REPLAYED_AT, crate::DLQ_TIME] {
        message.extensions.get(name).hash(&mut hasher);
    }
    (message.id, hasher.finish())
}

impl Deduplicate {
    /// Remembers up to `capacity` message ids.
    pub fn new(capacity: usize) -> Self {
        Self { seen: Mutex::new((HashSet::new(), VecDeque::new())), capacity: capacity.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashSet<Publication>, VecDeque<Publication>)> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Middleware for Deduplicate {
    async fn call(&self, message: Envelope, d: &Delivered<'_>, next: Next<'_>) -> Result<(), HandlerError> {
        let id = publication(&message);
        if self.lock().0.contains(&id) {
            debug!(message_id = %message.id, "duplicate delivery skipped");
            metrics::counter!("petstore_messages_deduplicated_total", "channel" => d.channel.to_owned()).increment(1);
            return Ok(());
        }
        next.run(message, d).await?;
        let mut seen = self.lock();
        if seen.0.insert(id) {
            seen.1.push_back(id);
            while seen.1.len() > self.capacity {
                if let Some(old) = seen.1.pop_front() {
                    seen.0.remove(&old);
                }
            }
        }
        Ok(())
    }
}

/// Retries retriable failures with exponential backoff and jitter, up to the policy's
/// attempts; fatal failures are not retried. Stops waiting when the consumer shuts down.
pub struct Retry(pub RetryPolicy);

#[async_trait]
impl Middleware for Retry {
    async fn call(&self, message: Envelope, d: &Delivered<'_>, next: Next<'_>) -> Result<(), HandlerError> {
        // The first attempt takes the message as it is; only a retry copies the original.
        let mut attempt = 1;
        d.attempts.fetch_add(1, Ordering::Relaxed);
        let mut result = next.run(message, d).await;
        loop {
            match result {
                Err(HandlerError::Retriable(error)) if attempt < self.0.max_attempts && !d.is_cancelled() => {
                    metrics::counter!("petstore_messages_retried_total", "channel" => d.channel.to_owned())
                        .increment(1);
                    warn!(attempt, %error, "handler failed; retrying");
                    tokio::select! {
                        () = d.cancel.cancelled() => return Err(HandlerError::Retriable(error)),
                        () = tokio::time::sleep(self.0.backoff(attempt)) => {}
                    }
                    attempt += 1;
                    d.attempts.fetch_add(1, Ordering::Relaxed);
                    result = next.run(d.original().clone(), d).await;
                }
                other => return other,
            }
        }
    }
}
