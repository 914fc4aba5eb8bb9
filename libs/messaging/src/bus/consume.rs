//! The consume loop of a subscription: receive, run each message through the middleware
//! chain — up to `concurrency` at once, never two of one partition key at the same time —
//! and acknowledge in the order received, so that a backend that remembers a position (a
//! Kafka offset) never moves past a message still being handled. Stream processors take
//! batches instead.

use std::{
    collections::{HashSet, VecDeque},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use futures::{StreamExt, stream::FuturesUnordered};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use super::{Bus, DEDUP_CAPACITY, Route, Subscription, dead_letters::DeadLetters};
use crate::{
    BatchProcessor, BusError, Consumer, Delivery, Envelope, Handler, HandlerError, Pattern, RetryPolicy,
    SubscribeOptions,
    middleware::{Deduplicate, Delivered, Middleware, Next, Observe, Retry},
};

/// What a subscription does with what it receives.
pub(super) enum Work {
    /// Message by message through the middleware chain, up to `concurrency` at once.
    Each { handler: Arc<dyn Handler>, concurrency: usize },
    /// Batches of up to `size` messages gathered for at most `max_wait`, for a stream
    /// processor; a failing batch is retried whole, then its messages are dead-lettered.
    Batch { processor: Arc<dyn BatchProcessor>, size: usize, max_wait: Duration },
}

/// A subscription to start: where, as whom, and what to do with each message.
pub(super) struct Plan {
    pub(super) route: Route,
    /// The logical group (metrics, dead letters); `options.group` is its physical name, or
    /// none for a private subscription.
    pub(super) group: String,
    pub(super) options: SubscribeOptions,
    pub(super) work: Work,
    pub(super) retry: RetryPolicy,
}

/// A running subscription's loop and what it needs.
struct Consumption {
    bus: Bus,
    route: Route,
    group: String,
    retry: RetryPolicy,
    cancel: CancellationToken,
    dead_letters: Arc<DeadLetters>,
}

impl Bus {
    /// Attaches a consumer as `plan` says and runs it on the bus's tasks. A durable group's
    /// backlog is sampled into the lag gauges; a private subscription has none to sample.
    pub(super) async fn spawn(&self, plan: Plan) -> Result<Subscription, BusError> {
        let Plan { route, group, options, work, retry } = plan;
        let watching = options.group.is_some().then(|| self.watch(&route, &group));
        let consumer = route.backend.subscribe(&route.physical, options).await?;
        let cancel = self.inner.shutdown.child_token();
        let span = info_span!("consumer", channel = %route.channel, %group, backend = route.backend.name());
        let dead_letters =
            Arc::new(DeadLetters::new(&route, &group, self.inner.physical_group(crate::DLQ_GROUP), retry));
        let run = Consumption { bus: self.clone(), route, group, retry, cancel: cancel.clone(), dead_letters };
        let done = self.inner.tasks.spawn(
            async move {
                let _watching = watching;
                match work {
                    Work::Each { handler, concurrency } => run.each(consumer, handler.as_ref(), concurrency).await,
                    Work::Batch { processor, size, max_wait } => {
                        run.batches(consumer, processor.as_ref(), size, max_wait).await;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Subscription { consumers: vec![(cancel, done)] })
    }
}

impl Consumption {
    /// The middleware of every message: dead letters outermost (what still fails after the
    /// retries is stored there, so the delivery can be acknowledged), then metrics and the
    /// span, deduplication, retries, and the layers the service added.
    fn chain(&self) -> Vec<Arc<dyn Middleware>> {
        let route = &self.route;
        let mut chain: Vec<Arc<dyn Middleware>> = vec![
            self.dead_letters.clone(),
            Arc::new(Observe::new(&route.channel, route.backend.name(), route.pattern, &self.group)),
            Arc::new(Deduplicate::new(DEDUP_CAPACITY)),
            Arc::new(Retry(self.retry)),
        ];
        chain.extend(self.bus.inner.middleware.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        chain
    }

    /// How many unacknowledged messages the subscription holds: a few per handler slot, so
    /// the next messages are at hand when one finishes; only as many as it can handle at once
    /// where consumers compete for one queue (point-to-point, request/response), so that a
    /// busy instance does not hoard what a free one could take.
    fn window(&self, concurrency: usize) -> usize {
        match self.route.pattern {
            Pattern::PointToPoint | Pattern::RequestResponse => concurrency,
            Pattern::PubSub | Pattern::Streaming => concurrency.saturating_mul(4),
        }
    }

    /// Handles messages one by one, up to `concurrency` at a time and never two of one key at
    /// once, acknowledging in the order received. On shutdown it stops receiving and starting
    /// messages, lets those in hand finish, acknowledges what is done and closes.
    async fn each(self, mut consumer: Box<dyn Consumer>, handler: &dyn Handler, concurrency: usize) {
        let chain = self.chain();
        let limit = self.window(concurrency);
        let route = &self.route;
        let group = self.group.as_str();
        let cancel = &self.cancel;
        let handle = |seq: u64, envelope: Envelope| {
            let chain = &chain;
            async move {
                let delivered =
                    Delivered::new(&route.channel, group, route.backend.name(), route.pattern, &envelope, cancel);
                let result = Next::new(chain, handler).run(envelope.clone(), &delivered).await;
                (seq, result.is_ok())
            }
        };
        let mut window = Window::default();
        let mut running = FuturesUnordered::new();
        let mut stopping = false;
        loop {
            while !stopping && running.len() < concurrency {
                let Some((seq, envelope)) = window.start_next() else { break };
                running.push(handle(seq, envelope));
            }
            if stopping && running.is_empty() {
                break;
            }
            let room = limit.saturating_sub(window.len());
            tokio::select! {
                biased;
                () = cancel.cancelled(), if !stopping => stopping = true,
                Some((seq, handled)) = running.next() => {
                    window.finish(seq, handled);
                    for delivery in window.take_settled() {
                        if let Err(e) = consumer.ack(&delivery).await {
                            // Not fatal: the message comes back and the handler's inbox drops
                            // the repeat.
                            warn!(error = %e, message = %delivery.envelope.id, "acknowledgement failed");
                        }
                    }
                }
                // Cancel-safe (see `Consumer::receive`): dropped when a handler finishes first,
                // it loses nothing.
                received = consumer.receive(room, Duration::ZERO), if room > 0 && !stopping => match received {
                    Ok(deliveries) => deliveries.into_iter().for_each(|d| window.push(d)),
                    Err(e) => {
                        warn!(error = %e, "receive failed; retrying");
                        tokio::select! {
                            () = cancel.cancelled() => stopping = true,
                            () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                    }
                },
                else => break,
            }
        }
        consumer.close().await;
    }

    /// Receives batches of up to `size` messages (gathered for at most `max_wait`) and hands
    /// each to the processor whole, retrying it whole; what keeps failing is dead-lettered
    /// message by message.
    async fn batches(
        self,
        mut consumer: Box<dyn Consumer>,
        processor: &dyn BatchProcessor,
        size: usize,
        max_wait: Duration,
    ) {
        let retried = metrics::counter!("petstore_messages_retried_total", "channel" => self.route.channel.clone());
        loop {
            let received = tokio::select! {
                () = self.cancel.cancelled() => break,
                received = consumer.receive(size.max(1), max_wait) => received,
            };
            let deliveries = match received {
                Ok(d) => d,
                Err(e) => {
                    warn!(error = %e, "receive failed; retrying");
                    tokio::select! {
                        () = self.cancel.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            let envelopes: Vec<Envelope> = deliveries.iter().map(|d| d.envelope.clone()).collect();
            match self.with_retry(&retried, || processor.process(envelopes.clone())).await {
                Batch::Done => {}
                // The batch stays unacknowledged and comes back.
                Batch::Cancelled => break,
                Batch::Failed { error, attempts } => {
                    for d in &deliveries {
                        if !self.dead_letters.store(&d.envelope, &error, attempts, &self.cancel).await {
                            consumer.close().await;
                            return;
                        }
                    }
                }
            }
            for d in &deliveries {
                if let Err(e) = consumer.ack(d).await {
                    warn!(error = %e, message = %d.envelope.id, "acknowledgement failed");
                }
            }
        }
        consumer.close().await;
    }

    /// Runs a batch `attempt` until it succeeds, fails fatally, exhausts the retry policy or
    /// the consumer shuts down while it waits to retry. Each retry counts in `retried`.
    async fn with_retry<F, Fut>(&self, retried: &metrics::Counter, mut attempt: F) -> Batch
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        let policy = self.retry;
        let mut n = 1;
        loop {
            match attempt().await {
                Ok(()) => return Batch::Done,
                Err(HandlerError::Fatal(error)) => return Batch::Failed { error, attempts: n },
                Err(HandlerError::Retriable(error)) if n >= policy.max_attempts => {
                    return Batch::Failed { error, attempts: n };
                }
                Err(HandlerError::Retriable(error)) => {
                    retried.increment(1);
                    warn!(attempt = n, %error, "batch failed; retrying");
                    tokio::select! {
                        () = self.cancel.cancelled() => return Batch::Cancelled,
                        () = tokio::time::sleep(policy.backoff(n)) => {}
                    }
                    n += 1;
                }
            }
        }
    }
}

/// How a batch ended.
enum Batch {
    Done,
    /// Failed fatally or on every attempt: its messages go to the dead letters.
    Failed {
        error: String,
        attempts: u32,
    },
    /// Shutdown while waiting to retry.
    Cancelled,
}

/// What a subscription has received and not yet acknowledged, in the order received.
#[derive(Default)]
struct Window {
    slots: VecDeque<Slot>,
    /// Sequence number of the next message received.
    next: u64,
    /// Hashes of the partition keys being handled now. Two keys with one hash are merely
    /// handled one after the other.
    busy: HashSet<u64>,
    /// Messages waiting to start: none, and there is nothing to look for.
    waiting: usize,
    /// Scratch set of [`Window::start_next`], kept to spare an allocation per message.
    blocked: HashSet<u64>,
}

struct Slot {
    seq: u64,
    key: Option<u64>,
    state: State,
    delivery: Delivery,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    /// Handled (or dead-lettered): may be acknowledged once everything before it is.
    Settled,
    /// Left unfinished by a shutdown: neither it nor anything after it is acknowledged.
    Held,
}

impl Window {
    fn len(&self) -> usize {
        self.slots.len()
    }

    fn push(&mut self, delivery: Delivery) {
        let key = delivery.envelope.partition_key.as_deref().map(|key| {
            let mut hasher = DefaultHasher::new();
            key.hash(&mut hasher);
            hasher.finish()
        });
        self.slots.push_back(Slot { seq: self.next, key, state: State::Waiting, delivery });
        self.next += 1;
        self.waiting += 1;
    }

    /// The first waiting message whose key is neither being handled nor held up by an
    /// earlier waiting message of the same key, marked running.
    fn start_next(&mut self) -> Option<(u64, Envelope)> {
        if self.waiting == 0 {
            return None;
        }
        self.blocked.clear();
        for slot in self.slots.iter_mut().filter(|s| s.state == State::Waiting) {
            if let Some(key) = slot.key {
                if self.busy.contains(&key) || !self.blocked.insert(key) {
                    continue;
                }
                self.busy.insert(key);
            }
            slot.state = State::Running;
            self.waiting -= 1;
            return Some((slot.seq, slot.delivery.envelope.clone()));
        }
        None
    }

    /// Records that message `seq` finished: handled (or dead-lettered), or held by a
    /// shutdown.
    fn finish(&mut self, seq: u64, handled: bool) {
        let Some(front) = self.slots.front().map(|s| s.seq) else { return };
        let Some(slot) =
            seq.checked_sub(front).and_then(|i| usize::try_from(i).ok()).and_then(|i| self.slots.get_mut(i))
        else {
            return;
        };
        slot.state = if handled { State::Settled } else { State::Held };
        if let Some(key) = slot.key {
            self.busy.remove(&key);
        }
    }

    /// Takes the settled messages at the front, in order: those that may be acknowledged.
    fn take_settled(&mut self) -> Vec<Delivery> {
        let mut settled = Vec::new();
        while self.slots.front().is_some_and(|s| s.state == State::Settled) {
            if let Some(slot) = self.slots.pop_front() {
                settled.push(slot.delivery);
            }
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Receipt;

    fn delivery(key: Option<&str>) -> Delivery {
        let status = contracts::inventory::GetPetStatus { pet_id: "p".into() };
        let mut envelope = Envelope::from_message("/test", &status, &crate::MessageContext::default()).expect("encode");
        envelope.partition_key = key.map(str::to_owned);
        Delivery { envelope, receipt: Receipt::None }
    }

    #[test]
    fn one_key_waits_for_its_message_in_hand_while_other_keys_start() {
        let mut w = Window::default();
        for key in ["a", "a", "b", "a"] {
            w.push(delivery(Some(key)));
        }
        assert_eq!(w.start_next().map(|s| s.0), Some(0));
        assert_eq!(w.start_next().map(|s| s.0), Some(2), "b goes ahead; the second a waits");
        assert_eq!(w.start_next(), None);
        w.finish(0, true);
        assert_eq!(w.start_next().map(|s| s.0), Some(1), "then the second a, before the third");
        assert_eq!(w.start_next(), None);
    }

    #[test]
    fn messages_are_acknowledged_in_the_order_received() {
        let mut w = Window::default();
        for key in ["a", "b", "c"] {
            w.push(delivery(Some(key)));
        }
        while w.start_next().is_some() {}
        w.finish(2, true);
        w.finish(1, true);
        assert!(w.take_settled().is_empty(), "the first is still in hand");
        w.finish(0, true);
        assert_eq!(w.take_settled().len(), 3);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn nothing_after_a_held_message_is_acknowledged() {
        let mut w = Window::default();
        for key in [None, None, None] {
            w.push(delivery(key));
        }
        while w.start_next().is_some() {}
        w.finish(0, true);
        w.finish(1, false);
        w.finish(2, true);
        assert_eq!(w.take_settled().len(), 1);
        assert!(w.take_settled().is_empty());
    }

    #[test]
    fn messages_without_a_key_start_at_once() {
        let mut w = Window::default();
        for _ in 0..3 {
            w.push(delivery(None));
        }
        assert_eq!((0..3).filter_map(|_| w.start_next()).count(), 3);
    }
}
