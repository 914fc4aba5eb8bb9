//! NATS message → envelope, and the [`Consumer`] over a JetStream pull consumer.
//!
//! The consumer issues its own pull requests on one inbox subscription (`<inbox>.*`, each
//! request answered on `<inbox>.<n>`), so that everything the server sends it lands in one
//! place that outlives a cancelled `receive`, and so that it never asks for more than it is
//! about to hand out: what is ready now (up to `max`), one message at a time while nothing
//! is, and with a `max_wait` what arrives within it. When a `receive` hands out a batch it
//! asks at once for the next one's worth of what is ready (no waiting on the server, so a
//! busy member takes nothing published later), so that the answer travels while the batch is
//! processed. At most one request is outstanding; it ends when filled, when the server
//! answers it with a status (408 expired, 404 nothing to give), or when its deadline passes
//! (a request lost with a reconnection).
//!
//! Acknowledgements are confirmed by the server (double ack, each answered on
//! `<inbox>.k<tag>`) but pipelined: `ack` returns once the ack is sent, with up to
//! [`ACK_WINDOW`] confirmations outstanding; a confirmation that fails or does not come
//! within the request timeout is reported by a later `ack`, and `close` waits for the
//! outstanding ones.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use async_nats::{
    Client, StatusCode, Subject, Subscriber,
    jetstream::{
        self, ErrorCode,
        consumer::{AckPolicy, DeliverPolicy, pull},
        stream::ConsumerErrorKind,
    },
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{
    NAME,
    publisher::{CE_PREFIX, CONTENT_TYPE},
};
use crate::{BusError, Consumer, Delivery, Envelope, backend::Receipt};

/// How long an idle consumer's pull request waits for a message before it is renewed.
const LONG_POLL: Duration = Duration::from_secs(5);
/// How long after its expiry a request's end may take to arrive before it is given up.
const GRACE: Duration = Duration::from_secs(2);
/// Shorter waits are asked for as "what is ready now".
const MIN_EXPIRES: Duration = Duration::from_millis(1);
/// How long the server keeps a private subscription's consumer once nobody pulls from it.
const PRIVATE_INACTIVE: Duration = Duration::from_secs(120);
/// Acknowledgements sent and not yet confirmed by the server, at most.
const ACK_WINDOW: usize = 256;
/// Confirmations of acknowledgements are answered on `<inbox>.<ACK_TOKEN><tag>`.
const ACK_TOKEN: &str = "k";

/// Reverses percent-encoding of a header value (see `publisher::encode_value`); a `%` not
/// followed by two hex digits is kept as it is.
pub(super) fn decode_value(value: &str) -> Result<String, BusError> {
    if !value.contains('%') {
        return Ok(value.to_owned());
    }
    let hex = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            (b'%', Some(high), Some(low)) => Some(high << 4 | low),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|e| BusError::Codec(format!("header value `{value}` is not UTF-8: {e}")))
}

/// Rebuilds the envelope of a binary-mode message: `ce_*` headers are the attributes,
/// `content-type` the data content type, the payload the data.
pub(super) fn decode(message: &async_nats::Message) -> Result<Envelope, BusError> {
    let mut attributes = Vec::new();
    let mut content_type = None;
    if let Some(headers) = &message.headers {
        for (name, values) in headers.iter() {
            let Some(value) = values.last() else { continue };
            let name = name.to_string();
            if let Some(attribute) = name.strip_prefix(CE_PREFIX) {
                attributes.push((attribute.to_owned(), decode_value(value.as_str())?));
            } else if name.eq_ignore_ascii_case(CONTENT_TYPE) {
                content_type = Some(decode_value(value.as_str())?);
            }
        }
    }
    Envelope::from_attributes(
        attributes.iter().map(|(name, value)| (name.as_str(), value.clone())),
        content_type,
        message.payload.clone(),
    )
}

/// What a consumer is attached to.
pub(super) struct Settings {
    /// The channel (the stream's subject).
    pub(super) channel: String,
    /// The channel's stream.
    pub(super) stream: String,
    /// The durable consumer of the group; `None` for a private subscription.
    pub(super) group: Option<String>,
    /// Where a new consumer starts.
    pub(super) start: DeliverPolicy,
    /// Redelivery timeout of a group's messages.
    pub(super) ack_wait: Duration,
    /// Unacknowledged messages a group may hold.
    pub(super) max_ack_pending: i64,
    /// Timeout of API calls and confirmations.
    pub(super) request_timeout: Duration,
}

/// The outstanding pull request.
struct Pull {
    id: u64,
    /// Messages it may still bring.
    remaining: usize,
    /// When to stop waiting for its end.
    deadline: Instant,
    /// Asks only for what is ready now: it ends within a round trip.
    no_wait: bool,
}

/// Why handling a server message stopped the current `receive`.
enum Interrupt {
    /// The server-side consumer is gone (deleted, expired): recreate it.
    Gone,
    /// A pull request ended without an answer (a reconnection, or a consumer that no longer
    /// exists, to which pulls go unanswered): check the consumer, then pull again.
    Lost,
    /// Anything else.
    Failed(BusError),
}

/// A member of a consumer group (durable pull consumer, explicit acks), or a private
/// subscription (ephemeral pull consumer, no acks).
pub(super) struct NatsConsumer {
    client: Client,
    jetstream: jetstream::Context,
    settings: Settings,
    /// The server-side consumer's name.
    consumer: String,
    /// Pull requests are answered on `<inbox>.<n>`.
    inbox: String,
    /// `None` only once closed.
    subscriber: Option<Subscriber>,
    pulls: u64,
    inflight: Option<Pull>,
    /// Received but not handed out yet (a cancelled `receive` leaves them here).
    ready: VecDeque<Delivery>,
    /// Group members: ack subject of every delivery received and not acknowledged, by tag
    /// (tags grow in delivery order, the order they are given back in).
    unacked: BTreeMap<u64, Subject>,
    /// Group members: ack subjects of malformed messages, to be terminated.
    rejected: Vec<Subject>,
    next_tag: u64,
    /// Private subscriptions: stream sequence of the last message received, to resume after.
    last_sequence: Option<u64>,
    /// The server-side consumer was found gone while a batch was being handed out.
    gone: bool,
    /// The last "what is ready now" request found nothing: wait for one message next.
    drained: bool,
    /// Group members: acknowledgements awaiting the server's confirmation, by tag: the
    /// message id and when to give up waiting.
    confirming: BTreeMap<u64, (uuid::Uuid, Instant)>,
    /// An acknowledgement that was not confirmed, to report.
    unconfirmed: Option<BusError>,
}

impl NatsConsumer {
    /// Creates (or finds) the server-side consumer and subscribes to the replies of its pulls.
    pub(super) async fn start(
        client: Client,
        jetstream: jetstream::Context,
        settings: Settings,
    ) -> Result<Self, BusError> {
        let inbox = client.new_inbox();
        let subscriber = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|e| BusError::transient(NAME, format!("subscribe to pull replies: {e}")))?;
        let mut consumer = Self {
            client,
            jetstream,
            settings,
            consumer: String::new(),
            inbox,
            subscriber: Some(subscriber),
            pulls: 0,
            inflight: None,
            ready: VecDeque::new(),
            unacked: BTreeMap::new(),
            rejected: Vec::new(),
            next_tag: 0,
            last_sequence: None,
            gone: false,
            drained: false,
            confirming: BTreeMap::new(),
            unconfirmed: None,
        };
        consumer.create().await?;
        Ok(consumer)
    }

    fn grouped(&self) -> bool {
        self.settings.group.is_some()
    }

    fn consumer_error(&self, what: &str, error: &impl std::fmt::Display) -> BusError {
        BusError::transient(NAME, format!("{what} on channel `{}`: {error}", self.settings.channel))
    }

    /// Finds the group's durable consumer or creates it; creates a new ephemeral consumer for
    /// a private subscription, resuming after the last message received.
    async fn create(&mut self) -> Result<(), BusError> {
        self.inflight = None;
        let stream = self.settings.stream.clone();
        let config = match &self.settings.group {
            Some(durable) => {
                match self.jetstream.get_consumer_from_stream::<pull::Config, _, _>(durable, &stream).await {
                    Ok(_) => {
                        self.consumer.clone_from(durable);
                        return Ok(());
                    }
                    Err(e) if is_not_found(e.kind(), ErrorCode::CONSUMER_NOT_FOUND) => {}
                    Err(e) => return Err(self.create_error(&e)),
                }
                pull::Config {
                    durable_name: Some(durable.clone()),
                    description: Some(format!("petstore bus group on {}", self.settings.channel)),
                    deliver_policy: self.settings.start,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.settings.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: self.settings.max_ack_pending,
                    ..Default::default()
                }
            }
            None => pull::Config {
                deliver_policy: match self.last_sequence {
                    Some(seq) => DeliverPolicy::ByStartSequence { start_sequence: seq + 1 },
                    None => self.settings.start,
                },
                ack_policy: AckPolicy::None,
                inactive_threshold: PRIVATE_INACTIVE,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            },
        };
        let created =
            self.jetstream.create_consumer_on_stream(config, &stream).await.map_err(|e| self.create_error(&e))?;
        self.consumer.clone_from(&created.cached_info().name);
        Ok(())
    }

    fn create_error(&self, error: &jetstream::stream::ConsumerError) -> BusError {
        if is_not_found(error.kind(), ErrorCode::STREAM_NOT_FOUND) {
            BusError::permanent(
                NAME,
                format!("no stream for channel `{}`: declare the channel first", self.settings.channel),
            )
        } else {
            self.consumer_error("create consumer", error)
        }
    }

    /// Asks the server for up to `batch` messages: waiting up to `wait`, or only what is
    /// ready when `wait` is `None`.
    async fn pull(&mut self, batch: usize, wait: Option<Duration>) -> Result<(), BusError> {
        self.pulls += 1;
        let id = self.pulls;
        let (request, deadline) = match wait {
            Some(expires) => (
                serde_json::json!({ "batch": batch, "expires": u64::try_from(expires.as_nanos()).unwrap_or(u64::MAX) }),
                Instant::now() + expires + GRACE,
            ),
            None => {
                (serde_json::json!({ "batch": batch, "no_wait": true }), Instant::now() + self.settings.request_timeout)
            }
        };
        let subject = format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", self.settings.stream, self.consumer);
        // Only queues the request for the connection (a channel send: dropped, it is not
        // sent), and the request is recorded as soon as it is: cancel-safe. What it brings
        // lands on the inbox subscription either way.
        self.client
            .publish_with_reply(subject, format!("{}.{id}", self.inbox), Bytes::from(request.to_string()))
            .await
            .map_err(|e| self.consumer_error("pull request", &e))?;
        self.inflight = Some(Pull { id, remaining: batch, deadline, no_wait: wait.is_none() });
        Ok(())
    }

    /// Waits until `until` for the next server message and handles it; false if none came.
    async fn step(&mut self, until: Instant) -> Result<bool, Interrupt> {
        let subscriber = self.subscriber.as_mut().ok_or(Interrupt::Failed(BusError::Closed))?;
        let next = tokio::time::timeout_at(until, subscriber.next()).await;
        match next {
            Ok(Some(message)) => self.handle(message).map(|()| true),
            Ok(None) => Err(Interrupt::Failed(BusError::transient(
                NAME,
                format!("pull replies on channel `{}`: subscription ended", self.settings.channel),
            ))),
            Err(_) if self.inflight.as_ref().is_some_and(|p| Instant::now() >= p.deadline) => {
                debug!(channel = %self.settings.channel, "pull request ended without an answer");
                self.inflight = None;
                Err(Interrupt::Lost)
            }
            Err(_) => Ok(false),
        }
    }

    /// Handles what has already arrived, without waiting.
    fn absorb(&mut self) -> Result<(), Interrupt> {
        while let Some(subscriber) = self.subscriber.as_mut()
            && let Some(Some(message)) = subscriber.next().now_or_never()
        {
            self.handle(message)?;
        }
        Ok(())
    }

    /// Takes the server's answer to an acknowledgement, if `message` is one.
    fn confirmation(&mut self, message: &async_nats::Message) -> bool {
        if message.reply.is_some() {
            return false;
        }
        let token = message.subject.strip_prefix(self.inbox.as_str()).and_then(|s| s.strip_prefix('.'));
        let Some(tag) = token.and_then(|t| t.strip_prefix(ACK_TOKEN)).and_then(|t| t.parse::<u64>().ok()) else {
            return false;
        };
        if let Some((id, _)) = self.confirming.remove(&tag)
            && !matches!(message.status, None | Some(StatusCode::OK))
        {
            let status = message.status.map(|s| s.to_string()).unwrap_or_default();
            let description = message.description.clone().unwrap_or_default();
            self.unconfirmed = Some(BusError::transient(
                NAME,
                format!("acknowledge message {id}: {status} {description}; it may be delivered again"),
            ));
        }
        true
    }

    /// Gives up on confirmations overdue by now.
    fn reap_confirmations(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.confirming.first_entry()
            && entry.get().1 <= now
        {
            let (id, _) = entry.remove();
            self.unconfirmed = Some(BusError::transient(
                NAME,
                format!(
                    "acknowledge message {id}: no confirmation within {:?}; it may be delivered again",
                    self.settings.request_timeout
                ),
            ));
        }
    }

    /// Waits until at most `limit` acknowledgements await confirmation (handling whatever
    /// else arrives meanwhile), or until `until`.
    async fn confirm(&mut self, limit: usize, until: Instant) {
        loop {
            if let Err(Interrupt::Gone) = self.absorb() {
                self.gone = true;
            }
            self.reap_confirmations();
            let Some((_, oldest)) = self.confirming.first_key_value().map(|(_, v)| *v) else { return };
            if self.confirming.len() <= limit || Instant::now() >= until {
                return;
            }
            match self.step(oldest.min(until)).await {
                Ok(_) | Err(Interrupt::Lost) => {}
                Err(Interrupt::Gone) => self.gone = true,
                Err(Interrupt::Failed(e)) => {
                    debug!(error = %e, "waiting for acknowledgement confirmations");
                    return;
                }
            }
        }
    }

    /// Takes a message of the stream, the status that ends a pull request, or the
    /// confirmation of an acknowledgement.
    fn handle(&mut self, message: async_nats::Message) -> Result<(), Interrupt> {
        if self.confirmation(&message) {
            return Ok(());
        }
        match message.status {
            None | Some(StatusCode::OK) => {
                self.drained = false;
                if let Some(pull) = &mut self.inflight {
                    pull.remaining = pull.remaining.saturating_sub(1);
                    if pull.remaining == 0 {
                        self.inflight = None;
                    }
                }
                self.accept(message);
                Ok(())
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Ok(()),
            Some(status) => {
                let answered = message.subject.strip_prefix(self.inbox.as_str()).and_then(|s| s.strip_prefix('.'));
                if let (Some(pull), Some(answered)) = (&self.inflight, answered)
                    && answered == pull.id.to_string()
                {
                    self.drained |= pull.no_wait;
                    self.inflight = None;
                }
                let description = message.description.unwrap_or_default();
                match status {
                    StatusCode::TIMEOUT | StatusCode::NOT_FOUND => Ok(()),
                    StatusCode::NO_RESPONDERS => Err(Interrupt::Gone),
                    StatusCode::REQUEST_TERMINATED if description.contains("Consumer Deleted") => Err(Interrupt::Gone),
                    StatusCode::REQUEST_TERMINATED if description.contains("Leadership Change") => Ok(()),
                    _ => Err(Interrupt::Failed(BusError::transient(
                        NAME,
                        format!("pull from channel `{}`: {status} {description}", self.settings.channel),
                    ))),
                }
            }
        }
    }

    /// Queues a delivered message, or sets a malformed one aside.
    fn accept(&mut self, message: async_nats::Message) {
        let Some(reply) = message.reply.clone() else {
            warn!(channel = %self.settings.channel, "a delivered message without an ack subject; skipped");
            return;
        };
        let decoded = decode(&message);
        if !self.grouped() {
            let message = jetstream::Message { message, context: self.jetstream.clone() };
            if let Ok(info) = message.info() {
                self.last_sequence = Some(info.stream_sequence);
            }
        }
        match decoded {
            Ok(envelope) => {
                let tag = self.next_tag;
                self.next_tag += 1;
                if self.grouped() {
                    self.unacked.insert(tag, reply);
                }
                self.ready.push_back(Delivery { envelope, receipt: Receipt::Tag(tag) });
            }
            Err(error) => {
                warn!(channel = %self.settings.channel, %error, "skipping a malformed message");
                metrics::counter!("petstore_messages_malformed_total", "backend" => NAME, "topic" => self.settings.channel.clone())
                    .increment(1);
                if self.grouped() {
                    self.rejected.push(reply);
                }
            }
        }
    }

    /// Tells the server never to deliver the malformed messages set aside again. Each stays
    /// in `rejected` until it is sent, so that a `receive` dropped meanwhile leaves the rest
    /// to the next call.
    async fn terminate_rejected(&mut self) {
        while let Some(reply) = self.rejected.last().cloned() {
            if let Err(e) = self.client.publish(reply, Bytes::from_static(b"+TERM")).await {
                debug!(error = %e, "could not terminate a malformed message; it will come back");
            }
            self.rejected.pop();
        }
    }

    /// Recovers from the loss of the server-side consumer.
    async fn recreate(&mut self) -> Result<(), BusError> {
        warn!(channel = %self.settings.channel, consumer = %self.consumer, "the JetStream consumer is gone; recreating it");
        self.create().await?;
        self.gone = false;
        Ok(())
    }

    /// Recreates the server-side consumer if it no longer exists.
    async fn verify(&mut self) -> Result<(), BusError> {
        let found =
            self.jetstream.get_consumer_from_stream::<pull::Config, _, _>(&self.consumer, &self.settings.stream).await;
        match found {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(e.kind(), ErrorCode::CONSUMER_NOT_FOUND) => self.recreate().await,
            Err(e) => Err(self.create_error(&e)),
        }
    }
}

/// Whether `kind` is the JetStream "not found" error `code`.
fn is_not_found(kind: ConsumerErrorKind, code: ErrorCode) -> bool {
    matches!(kind, ConsumerErrorKind::JetStream(e) if e.error_code() == code)
}

#[async_trait]
impl Consumer for NatsConsumer {
    async fn receive(&mut self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let max = max.max(1);
        self.terminate_rejected().await;
        if self.gone {
            self.recreate().await?;
        }
        // What has arrived already: the answer to the last call's request, confirmations.
        match self.absorb() {
            Ok(()) | Err(Interrupt::Lost) => {}
            Err(Interrupt::Gone) => self.recreate().await?,
            Err(Interrupt::Failed(e)) => return Err(e),
        }
        // At least one: what is ready now, else one message at a time, so that an idle
        // member holds nothing back.
        while self.ready.is_empty() {
            if self.inflight.is_none() {
                if self.drained { self.pull(1, Some(LONG_POLL)).await? } else { self.pull(max, None).await? }
            }
            let until = self.inflight.as_ref().map_or_else(Instant::now, |p| p.deadline);
            match self.step(until).await {
                Ok(_) => {}
                Err(Interrupt::Gone) => self.recreate().await?,
                Err(Interrupt::Lost) => self.verify().await?,
                Err(Interrupt::Failed(e)) => return Err(e),
            }
        }
        // Then the rest of a "ready now" answer (already on its way), and what arrives within
        // `max_wait`.
        let until = Instant::now() + max_wait;
        while self.ready.len() < max {
            let Some(pull) = &self.inflight else {
                let left = until.saturating_duration_since(Instant::now());
                if left < MIN_EXPIRES {
                    break;
                }
                if let Err(e) = self.pull(max - self.ready.len(), Some(left)).await {
                    debug!(error = %e, "could not pull more; handing out what is there");
                    break;
                }
                continue;
            };
            let limit = if pull.no_wait { pull.deadline } else { until.min(pull.deadline) };
            match self.step(limit).await {
                Ok(true) => {}
                // Hand out what is there; a problem shows again on the next call.
                Ok(false) | Err(Interrupt::Lost) => break,
                Err(Interrupt::Gone) => {
                    self.gone = true;
                    break;
                }
                Err(Interrupt::Failed(e)) => {
                    debug!(error = %e, "pull failed while gathering a batch");
                    break;
                }
            }
        }
        let n = max.min(self.ready.len());
        // The next batch's worth of what is ready, to arrive while this one is processed.
        // Asked for before the batch leaves `ready`: a call dropped at this await loses
        // nothing.
        let wanted = max.saturating_sub(self.ready.len() - n);
        if self.inflight.is_none()
            && !self.gone
            && wanted > 0
            && let Err(e) = self.pull(wanted, None).await
        {
            debug!(error = %e, "could not ask for the next batch");
        }
        Ok(self.ready.drain(..n).collect())
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        let Receipt::Tag(tag) = &delivery.receipt else {
            return Ok(());
        };
        let Some(reply) = self.unacked.remove(tag) else {
            return Ok(());
        };
        // A request, so that the server confirms it recorded the acknowledgement; the
        // confirmation is awaited later, keeping up to `ACK_WINDOW` in flight.
        self.confirm(ACK_WINDOW - 1, Instant::now() + self.settings.request_timeout).await;
        let confirmation = format!("{}.{ACK_TOKEN}{tag}", self.inbox);
        self.client
            .publish_with_reply(reply, confirmation, Bytes::from_static(b"+ACK"))
            .await
            .map_err(|e| self.consumer_error(&format!("acknowledge message {}", delivery.envelope.id), &e))?;
        self.confirming.insert(*tag, (delivery.envelope.id, Instant::now() + self.settings.request_timeout));
        self.unconfirmed.take().map_or(Ok(()), Err)
    }

    async fn close(mut self: Box<Self>) {
        // The confirmations of acknowledgements sent, and the answer to a "ready now"
        // request (messages it brings are given back below).
        let deadline = Instant::now() + self.settings.request_timeout;
        self.confirm(0, deadline).await;
        while self.inflight.as_ref().is_some_and(|p| p.no_wait) {
            match self.step(deadline).await {
                Ok(true) => {}
                _ => break,
            }
        }
        if let Some(error) = self.unconfirmed.take() {
            warn!(%error, "an acknowledgement was not confirmed");
        }
        if !self.confirming.is_empty() {
            warn!(
                count = self.confirming.len(),
                "acknowledgements not confirmed; those messages may be delivered again"
            );
        }
        if let Some(mut subscriber) = self.subscriber.take() {
            if let Err(e) = subscriber.unsubscribe().await {
                debug!(error = %e, "unsubscribing the pull replies failed");
            }
            // Whatever arrived before the unsubscription took effect is ours to give back.
            while let Some(Some(message)) = subscriber.next().now_or_never() {
                if !self.confirmation(&message) && matches!(message.status, None | Some(StatusCode::OK)) {
                    self.accept(message);
                }
            }
        }
        let timeout = self.settings.request_timeout;
        if self.grouped() {
            // Back to the group at once rather than after the ack wait.
            for (_, reply) in std::mem::take(&mut self.unacked) {
                if let Err(e) = self.client.publish(reply, Bytes::from_static(b"-NAK")).await {
                    debug!(error = %e, "could not give back a message; it returns after the ack wait");
                }
            }
            self.terminate_rejected().await;
            if tokio::time::timeout(timeout, self.client.flush()).await.is_err() {
                debug!("flushing the consumer's last acknowledgements timed out");
            }
        } else {
            let deleting = self.jetstream.delete_consumer_from_stream(&self.consumer, &self.settings.stream);
            match tokio::time::timeout(timeout, deleting).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => debug!(error = %e, "deleting a private consumer failed; the server expires it"),
                Err(_) => debug!("deleting a private consumer timed out; the server expires it"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use async_nats::HeaderMap;

    use super::*;
    use crate::{
        Backend, MessageContext, StartFrom, SubscribeOptions,
        nats::{NatsBackend, NatsConfig, physical_name, publisher},
    };

    /// The server of `NATS_URL` (default `nats://127.0.0.1:4222`).
    async fn backend() -> NatsBackend {
        let url = std::env::var("NATS_URL").ok().filter(|u| !u.is_empty());
        let config = NatsConfig::new(url.unwrap_or_else(|| "nats://127.0.0.1:4222".into()));
        NatsBackend::connect(&config).await.expect("connect")
    }

    /// A fresh declared channel.
    async fn channel(backend: &NatsBackend) -> String {
        let channel = format!("t{}.unit", uuid::Uuid::now_v7().simple());
        backend.declare(&channel, 1).await.expect("declare");
        channel
    }

    /// Deletes the stream of a test's channel.
    async fn remove(backend: &NatsBackend, channel: &str) {
        backend.jetstream.delete_stream(physical_name(channel)).await.expect("delete the stream");
    }

    fn envelope(n: u32) -> Envelope {
        let message = contracts::inventory::GetPetStatus { pet_id: format!("pet-{n}") };
        Envelope::from_message("/petstore/test", &message, &MessageContext::default()).expect("encode")
    }

    fn group(name: &str) -> SubscribeOptions {
        SubscribeOptions { group: Some(name.to_owned()), start: StartFrom::Earliest }
    }

    /// Receives (without acknowledging) until `n` deliveries are in hand, within `patience`.
    async fn receive_n(consumer: &mut Box<dyn Consumer>, n: usize, patience: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + patience;
        let mut got = Vec::new();
        while got.len() < n {
            let batch = tokio::time::timeout_at(deadline, consumer.receive(n - got.len(), Duration::ZERO))
                .await
                .unwrap_or_else(|_| panic!("{n} deliveries within {patience:?}, got {}", got.len()))
                .expect("receive");
            got.extend(batch);
        }
        got
    }

    /// Fails if anything arrives within `quiet`.
    async fn nothing_within(consumer: &mut Box<dyn Consumer>, quiet: Duration) {
        let got = tokio::time::timeout(quiet, consumer.receive(16, Duration::ZERO)).await;
        let labels = got.map(|r| r.map(|d| d.iter().map(|d| d.envelope.id).collect::<Vec<_>>()));
        assert!(labels.is_err(), "unexpected deliveries: {labels:?}");
    }

    fn ids(deliveries: &[Delivery]) -> Vec<uuid::Uuid> {
        deliveries.iter().map(|d| d.envelope.id).collect()
    }

    fn ids_of(envelopes: &[Envelope]) -> Vec<uuid::Uuid> {
        envelopes.iter().map(|e| e.id).collect()
    }

    #[tokio::test]
    async fn an_undeclared_channel_is_a_permanent_error_naming_it() {
        let backend = backend().await;
        let channel = format!("t{}.undeclared", uuid::Uuid::now_v7().simple());
        let err = backend.publish(&channel, &envelope(1)).await.expect_err("publish must fail");
        assert!(!err.is_retriable() && err.to_string().contains(&channel), "{err}");
        let err = backend.subscribe(&channel, group("g")).await.err().expect("subscribe must fail");
        assert!(!err.is_retriable() && err.to_string().contains(&channel), "{err}");
    }

    #[tokio::test]
    async fn closing_gives_unacknowledged_messages_back_at_once() {
        let backend = backend().await;
        let channel = channel(&backend).await;
        let sent: Vec<Envelope> = (0..3).map(envelope).collect();
        for env in &sent {
            backend.publish(&channel, env).await.expect("publish");
        }
        let mut first = backend.subscribe(&channel, group("g")).await.expect("subscribe");
        let got = receive_n(&mut first, 3, Duration::from_secs(5)).await;
        assert_eq!(ids(&got), ids_of(&sent), "in publication order");
        first.ack(&got[0]).await.expect("ack");
        first.close().await;

        // Far sooner than the 30 s ack wait: given back by `close`.
        let mut second = backend.subscribe(&channel, group("g")).await.expect("subscribe again");
        let again = receive_n(&mut second, 2, Duration::from_secs(5)).await;
        assert_eq!(ids(&again), ids_of(&sent[1..]), "the unacknowledged ones, in order");
        for d in &again {
            second.ack(d).await.expect("ack");
        }
        nothing_within(&mut second, Duration::from_millis(500)).await;
        second.close().await;
        remove(&backend, &channel).await;
    }

    #[tokio::test]
    async fn members_of_a_group_share_and_a_cancelled_receive_loses_nothing() {
        let backend = backend().await;
        let channel = channel(&backend).await;
        let mut a = backend.subscribe(&channel, group("g")).await.expect("subscribe a");
        let mut b = backend.subscribe(&channel, group("g")).await.expect("subscribe b");
        // Both wait with a pull outstanding; `a`'s wait is cancelled, its pull stays.
        let cancelled = tokio::time::timeout(Duration::from_millis(100), a.receive(1, Duration::ZERO)).await;
        assert!(cancelled.is_err(), "nothing to receive yet");
        let waiting_b = tokio::spawn(async move {
            let got = b.receive(1, Duration::ZERO).await.expect("receive b");
            (b, got)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent: Vec<Envelope> = (0..2).map(envelope).collect();
        for env in &sent {
            backend.publish(&channel, env).await.expect("publish");
        }
        let from_a = receive_n(&mut a, 1, Duration::from_secs(5)).await;
        let (mut b, from_b) = waiting_b.await.expect("b");
        let mut all = ids(&from_a);
        all.extend(ids(&from_b));
        all.sort();
        assert_eq!(all, ids_of(&sent), "each message to exactly one member");
        for d in &from_a {
            a.ack(d).await.expect("ack");
        }
        for d in &from_b {
            b.ack(d).await.expect("ack");
        }
        nothing_within(&mut a, Duration::from_millis(300)).await;
        a.close().await;
        b.close().await;
        remove(&backend, &channel).await;
    }

    #[tokio::test]
    async fn a_receive_gathers_what_is_ready_and_waits_no_longer_than_max_wait() {
        let backend = backend().await;
        let channel = channel(&backend).await;
        let mut consumer = backend.subscribe(&channel, group("g")).await.expect("subscribe");
        for n in 0..3 {
            backend.publish(&channel, &envelope(n)).await.expect("publish");
        }
        let started = Instant::now();
        let got = consumer.receive(16, Duration::ZERO).await.expect("receive");
        assert_eq!(got.len(), 3, "everything ready, in one batch");
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());

        backend.publish(&channel, &envelope(3)).await.expect("publish");
        let started = Instant::now();
        let got = consumer.receive(16, Duration::from_millis(300)).await.expect("receive");
        let elapsed = started.elapsed();
        assert_eq!(got.len(), 1);
        assert!(elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1500), "took {elapsed:?}");
        consumer.close().await;
        remove(&backend, &channel).await;
    }

    #[tokio::test]
    async fn a_private_subscription_survives_the_loss_of_its_consumer() {
        let backend = backend().await;
        let channel = channel(&backend).await;
        let options = SubscribeOptions { group: None, start: StartFrom::Earliest };
        let mut consumer = backend.subscribe(&channel, options).await.expect("subscribe");
        let first = envelope(1);
        backend.publish(&channel, &first).await.expect("publish");
        assert_eq!(ids(&receive_n(&mut consumer, 1, Duration::from_secs(5)).await), [first.id]);

        let stream = physical_name(&channel);
        let info = backend.jetstream.get_stream(&stream).await.expect("stream").info().await.expect("info").clone();
        assert_eq!(info.state.consumer_count, 1);
        let mut names = backend.jetstream.get_stream(&stream).await.expect("stream").consumer_names();
        let name = names.next().await.expect("a consumer").expect("name");
        backend.jetstream.delete_consumer_from_stream(&name, &stream).await.expect("delete");

        let second = envelope(2);
        backend.publish(&channel, &second).await.expect("publish");
        let got = receive_n(&mut consumer, 1, Duration::from_secs(10)).await;
        assert_eq!(ids(&got), [second.id], "resumed after the last message received");
        consumer.close().await;
        let left = backend.jetstream.get_stream(&stream).await.expect("stream").info().await.expect("info").clone();
        assert_eq!(left.state.consumer_count, 0, "close removes the private consumer");
        remove(&backend, &channel).await;
    }

    #[tokio::test]
    async fn a_malformed_message_is_skipped_and_never_redelivered() {
        let backend = backend().await;
        let channel = channel(&backend).await;
        let ack = backend.jetstream.publish(channel.clone(), Bytes::from_static(b"not a CloudEvent")).await;
        ack.expect("publish garbage").await.expect("stored");
        let valid = envelope(1);
        backend.publish(&channel, &valid).await.expect("publish");

        let mut consumer = backend.subscribe(&channel, group("g")).await.expect("subscribe");
        let got = receive_n(&mut consumer, 1, Duration::from_secs(5)).await;
        assert_eq!(ids(&got), [valid.id]);
        consumer.ack(&got[0]).await.expect("ack");
        // The next receive terminates the malformed message on the server.
        nothing_within(&mut consumer, Duration::from_millis(300)).await;
        consumer.close().await;

        let stream = backend.jetstream.get_stream(physical_name(&channel)).await.expect("stream");
        let mut group = stream.get_consumer::<pull::Config>("g").await.expect("consumer");
        let info = group.info().await.expect("info");
        assert_eq!((info.num_ack_pending, info.num_pending), (0, 0), "nothing left for the group");
        remove(&backend, &channel).await;
    }

    fn message(headers: HeaderMap, payload: &'static [u8]) -> async_nats::Message {
        async_nats::Message {
            subject: "t.events".into(),
            reply: Some("$JS.ACK.t_events.g.1.7.7.0.0".into()),
            payload: Bytes::from_static(payload),
            headers: Some(headers),
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn an_envelope_survives_the_header_round_trip() {
        let mut env = envelope(1);
        env.correlation_id = Some("corr 100%".into());
        env.reply_to = Some("t.replies.svc.0199".into());
        env.extensions.insert(crate::DLQ_ERROR.into(), " line 1\r\nline 2 ".into());
        env.extensions.insert(crate::DLQ_ATTEMPTS.into(), "3".into());
        env.data_content_type = "application/cloudevents-test".into();
        let mut sent = message(publisher::headers(&env).expect("headers"), b"");
        sent.payload = env.data.clone();
        assert_eq!(decode(&sent).expect("decode"), env);
    }

    #[test]
    fn percent_decoding_reverses_encoding_and_tolerates_stray_percents() {
        for value in ["", "plain", "50%", "%25", " a\tb\r\n ", "é\u{a0}", "%zz"] {
            assert_eq!(decode_value(&publisher::encode_value(value)).expect("decode"), value, "{value:?}");
        }
        assert_eq!(decode_value("100%").expect("lenient"), "100%");
        assert_eq!(decode_value("%4").expect("lenient"), "%4");
        assert!(matches!(decode_value("%FF"), Err(BusError::Codec(_))));
    }

    #[test]
    fn a_message_without_the_required_attributes_is_malformed() {
        let mut headers = HeaderMap::new();
        headers.insert("ce_id", "not-a-uuid");
        assert!(matches!(decode(&message(headers, b"{}")), Err(BusError::Codec(_))));
        let err = decode(&message(HeaderMap::new(), b"{}")).expect_err("must fail");
        assert!(err.to_string().contains("`id`"), "{err}");
    }
}
