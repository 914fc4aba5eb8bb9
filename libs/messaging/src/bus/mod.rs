use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tokio::{sync::oneshot, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

use crate::{
    Backend, BackendKind, BatchProcessor, BusError, ChannelConfig, Consumer, DeadLetter, Delivery, Envelope, Handler,
    HandlerError, MessagingConfig, Pattern, Responder, RetryPolicy, StartFrom, StreamOptions, SubscribeOptions,
    middleware::{Deduplicate, Delivered, Middleware, Next, Observe, Retry},
};

/// The connected backends of a process, shared by every [`Bus`] in it (in the all-in-one
/// binary all six services share one memory backend).
#[derive(Clone, Default)]
pub struct Backends {
    map: HashMap<BackendKind, Arc<dyn Backend>>,
}

impl Backends {
    /// Connects every backend the configuration uses; fails fast when one is unreachable or
    /// not compiled in.
    pub async fn connect(config: &MessagingConfig) -> Result<Self, BusError> {
        let kinds = config.backends_in_use();
        let mut backends = Self::default();
        for kind in kinds {
            backends.map.insert(kind, connect_backend(kind, config).await?);
        }
        Ok(backends)
    }

    /// Adds (or replaces) a backend, for tests and embedding.
    pub fn with(mut self, kind: BackendKind, backend: Arc<dyn Backend>) -> Self {
        self.map.insert(kind, backend);
        self
    }

    /// The backend of `kind`, if connected.
    pub fn get(&self, kind: BackendKind) -> Option<Arc<dyn Backend>> {
        self.map.get(&kind).cloned()
    }

    /// Checks every backend; the first failure names its backend.
    pub async fn health(&self) -> Result<(), BusError> {
        for backend in self.map.values() {
            backend.health().await?;
        }
        Ok(())
    }
}

/// Connects one backend, or explains which cargo feature it needs.
async fn connect_backend(kind: BackendKind, config: &MessagingConfig) -> Result<Arc<dyn Backend>, BusError> {
    match kind {
        #[cfg(feature = "memory")]
        BackendKind::Memory => Ok(Arc::new(crate::memory::MemoryBackend::new(config.memory.retention_messages))),
        #[cfg(feature = "kafka")]
        BackendKind::Kafka => {
            let kafka = config.kafka.as_ref().ok_or_else(|| {
                BusError::Config("messaging.kafka: required because a channel uses the kafka backend".into())
            })?;
            Ok(Arc::new(crate::kafka::KafkaBackend::connect(kafka).await?))
        }
        #[cfg(feature = "nats")]
        BackendKind::Nats => {
            let settings = config.nats.as_ref().ok_or_else(|| {
                BusError::Config("messaging.nats: required because a channel uses the nats backend".into())
            })?;
            Ok(Arc::new(crate::nats::NatsBackend::connect(settings).await?))
        }
        #[cfg(feature = "rabbitmq")]
        BackendKind::Rabbitmq => {
            let settings = config.rabbitmq.as_ref().ok_or_else(|| {
                BusError::Config("messaging.rabbitmq: required because a channel uses the rabbitmq backend".into())
            })?;
            Ok(Arc::new(crate::rabbitmq::RabbitMqBackend::connect(settings).await?))
        }
        #[cfg(feature = "redis")]
        BackendKind::Redis => {
            let settings = config.redis.as_ref().ok_or_else(|| {
                BusError::Config("messaging.redis: required because a channel uses the redis backend".into())
            })?;
            Ok(Arc::new(crate::redis::RedisBackend::connect(settings).await?))
        }
        #[cfg(feature = "sns")]
        BackendKind::Sns => {
            let settings = config.sns.as_ref().ok_or_else(|| {
                BusError::Config("messaging.sns: required because a channel uses the sns backend".into())
            })?;
            Ok(Arc::new(crate::sns::SnsBackend::connect(settings).await?))
        }
        #[allow(unreachable_patterns)]
        other => {
            let _ = config;
            Err(BusError::Config(format!(
                "messaging: backend `{0}` is not compiled into this binary (enable the cargo feature `{0}`)",
                other.as_str()
            )))
        }
    }
}

#[derive(Clone)]
struct Route {
    channel: String,
    physical: String,
    pattern: Pattern,
    partitions: u32,
    start: StartFrom,
    backend: Arc<dyn Backend>,
    kind: BackendKind,
    /// Publish counters, resolved once: labels are not rebuilt on the hot path.
    published: metrics::Counter,
    publish_failed: metrics::Counter,
    /// For a request/response channel, the same channel on the fallback backend
    /// (`messaging.backend_selection.fallback`): served alongside, used by requests when
    /// this backend fails.
    fallback: Option<Arc<Route>>,
}

impl Route {
    fn new(
        name: &str,
        channel: &ChannelConfig,
        physical: String,
        backend: Arc<dyn Backend>,
        kind: BackendKind,
    ) -> Self {
        let counter = |outcome: &'static str| {
            metrics::counter!("petstore_messages_published_total",
                "channel" => name.to_owned(), "backend" => backend.name(), "pattern" => channel.pattern.as_str(), "outcome" => outcome)
        };
        Route {
            published: counter("ok"),
            publish_failed: counter("error"),
            channel: name.to_owned(),
            physical,
            pattern: channel.pattern,
            partitions: channel.partitions,
            start: channel.start,
            backend,
            kind,
            fallback: None,
        }
    }

    /// The route of this channel's dead letters: `<channel>.dlq` on the same backend, read
    /// from the earliest letter by the one group that keeps them.
    fn dead_letters(&self) -> Route {
        Route {
            channel: format!("{}.dlq", self.channel),
            physical: dead_letter_channel(&self.physical),
            pattern: Pattern::PointToPoint,
            start: StartFrom::Earliest,
            fallback: None,
            ..self.clone()
        }
    }
}

/// Message ids each subscription remembers for deduplication.
const DEDUP_CAPACITY: usize = 10_000;

/// The group name broadcast subscriptions carry in metrics and dead letters.
const BROADCAST_GROUP: &str = "instance";

/// How often a backlog that keeps failing to sample is logged at `warn` (in between, `debug`).
const SAMPLE_FAILURE_WARN_EVERY: Duration = Duration::from_secs(300);

/// What the backlog sampler measures: the groups this bus consumes and the dead-letter
/// groups of their channels, with the gauges resolved once.
#[derive(Default)]
struct Watches {
    /// (logical channel, logical group) of live subscriptions.
    groups: BTreeMap<(String, String), GroupWatch>,
    /// Logical channel → its dead-letter depth gauge, kept once resolved.
    dead_letters: HashMap<String, metrics::Gauge>,
    /// Whether the sampler task runs (it starts with the first subscription).
    sampling: bool,
}

struct GroupWatch {
    /// Live subscriptions of this bus in the group (competing consumers of one process).
    subscriptions: usize,
    lag: metrics::Gauge,
}

/// Keeps a group in the sampler's list while its subscription runs.
struct Watching {
    inner: Weak<Inner>,
    key: (String, String),
}

impl Drop for Watching {
    fn drop(&mut self) {
        let Some(inner) = self.inner.upgrade() else { return };
        let mut watches = inner.watches();
        if let Some(watch) = watches.groups.get_mut(&self.key) {
            watch.subscriptions -= 1;
            if watch.subscriptions == 0 {
                watches.groups.remove(&self.key);
            }
        }
    }
}

/// One backlog to measure: where to ask, and the gauge that shows it.
struct Sample {
    /// `<channel>/<group>` or `<channel>.dlq`, for logs.
    name: String,
    backend: Arc<dyn Backend>,
    physical: String,
    group: String,
    gauge: metrics::Gauge,
}

impl Sample {
    /// Sets the gauge to the backlog, or keeps its last value when the backend fails;
    /// `failing` holds, per failing sample, when its failure was last logged at `warn`.
    async fn take(&self, failing: &mut HashMap<String, Instant>) {
        match self.backend.backlog(&self.physical, &self.group).await {
            Ok(Some(n)) => self.gauge.set(n as f64),
            Ok(None) => debug!(backlog = %self.name, "the backend cannot tell this backlog now"),
            Err(error) => {
                let now = Instant::now();
                match failing.get(&self.name) {
                    Some(warned) if now.duration_since(*warned) < SAMPLE_FAILURE_WARN_EVERY => {
                        debug!(backlog = %self.name, %error, "backlog sample failed again");
                    }
                    _ => {
                        warn!(backlog = %self.name, %error, "backlog sample failed; the gauge keeps its last value");
                        failing.insert(self.name.clone(), now);
                    }
                }
                return;
            }
        }
        if failing.remove(&self.name).is_some() {
            info!(backlog = %self.name, "backlog sampling recovered");
        }
    }
}

/// Samples, every `every`, the backlog of each group the bus consumes and of each of their
/// channels' dead-letter group, until `shutdown` fires or the bus is gone. A failing sample
/// keeps the gauge's last value and is logged at `warn` when it starts failing and every
/// [`SAMPLE_FAILURE_WARN_EVERY`] while it goes on.
async fn sample_backlogs(inner: Weak<Inner>, every: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(samples) = inner.upgrade().map(|inner| inner.samples()) else { return };
        let pass = async {
            for sample in &samples {
                sample.take(&mut failing).await;
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = pass => {}
        }
    }
}

struct Inner {
    source: String,
    service: String,
    prefix: String,
    routes: HashMap<String, Route>,
    retry: RetryPolicy,
    pending: Mutex<HashMap<Uuid, oneshot::Sender<Envelope>>>,
    reply_channels: tokio::sync::Mutex<HashMap<BackendKind, String>>,
    middleware: Mutex<Vec<Arc<dyn Middleware>>>,
    lag_interval: Duration,
    watches: Mutex<Watches>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Inner {
    fn watches(&self) -> std::sync::MutexGuard<'_, Watches> {
        // Single inserts and removals: the map stays consistent even after a panic.
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The physical name of consumer group `group`.
    fn physical_group(&self, group: &str) -> String {
        format!("{}{group}", self.prefix)
    }

    /// What to sample now: every watched group, and the dead-letter group of its channel.
    fn samples(&self) -> Vec<Sample> {
        let watches = self.watches();
        let mut samples = Vec::new();
        let mut last_channel = None;
        for ((channel, group), watch) in &watches.groups {
            let Some(route) = self.routes.get(channel) else { continue };
            samples.push(Sample {
                name: format!("{channel}/{group}"),
                backend: route.backend.clone(),
                physical: route.physical.clone(),
                group: self.physical_group(group),
                gauge: watch.lag.clone(),
            });
            // The map is sorted by channel: one dead-letter sample per channel.
            if last_channel != Some(channel)
                && let Some(depth) = watches.dead_letters.get(channel)
            {
                samples.push(Sample {
                    name: format!("{channel}.dlq"),
                    backend: route.backend.clone(),
                    physical: dead_letter_channel(&route.physical),
                    group: self.physical_group(crate::DLQ_GROUP),
                    gauge: depth.clone(),
                });
            }
            last_channel = Some(channel);
        }
        samples
    }
}

/// The physical dead-letter channel of a physical channel.
fn dead_letter_channel(physical: &str) -> String {
    format!("{physical}.dlq")
}

/// One service's handle on the bus: routes logical channels to backends and adds retries,
/// dead-lettering, request/reply correlation and metrics around them. While it consumes, it
/// samples every `messaging.lag_interval` the backlog of its groups
/// (`petstore_consumer_lag_messages`) and of their channels' dead letters
/// (`petstore_dlq_depth_messages`). Dead letters are read with
/// [`Bus::subscribe_dead_letters`] and published again with [`Bus::replay`].
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

/// A running consumer started by [`Bus::subscribe`], [`Bus::serve`] or
/// [`Bus::process_stream`].
pub struct Subscription {
    /// One consumer, or two for a request/response channel served on its fallback backend
    /// too.
    consumers: Vec<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Subscription {
    /// Stops consuming after the message in hand and leaves the group.
    pub async fn stop(self) {
        for (cancel, _) in &self.consumers {
            cancel.cancel();
        }
        for (_, done) in self.consumers {
            let _ = done.await;
        }
    }
}

enum Work {
    Each(Arc<dyn Handler>),
    Batch(Arc<dyn BatchProcessor>),
}

/// Answers a request through a responder and sends the reply where the request asks: the
/// handler at the end of a `serve` subscription's middleware chain.
struct Answer {
    backend: Arc<dyn Backend>,
    channel: String,
    responder: Arc<dyn Responder>,
}

#[async_trait::async_trait]
impl Handler for Answer {
    async fn handle(&self, request: Envelope) -> Result<(), HandlerError> {
        let reply_to =
            request.reply_to.as_deref().ok_or_else(|| HandlerError::fatal("request without a `replyto` attribute"))?;
        let expired = request
            .extensions
            .get(crate::REQUEST_DEADLINE)
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
            .is_some_and(|d| d < chrono::Utc::now());
        if expired {
            debug!(request = %request.id, "request expired before it was answered; skipped");
            metrics::counter!("petstore_requests_expired_total", "channel" => self.channel.clone()).increment(1);
            return Ok(());
        }
        let mut reply = self.responder.respond(request.clone()).await?;
        reply.causation_id = Some(request.id.to_string());
        reply.correlation_id.clone_from(&request.correlation_id);
        self.backend.publish(reply_to, &reply).await.map_err(HandlerError::from)
    }
}

enum Outcome {
    Done,
    DeadLetter { error: String, attempts: u32 },
    Cancelled,
}

impl Bus {
    /// Builds the bus of `service`: validates every channel against its backend's
    /// capabilities and declares the physical channels. Consumers stop when `shutdown` fires.
    pub async fn new(
        backends: &Backends,
        config: &MessagingConfig,
        service: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, BusError> {
        config.validate_lag_interval()?;
        let mut routes = HashMap::new();
        for (name, channel) in &config.channels {
            let (kind, key) = config.backend_of(name, channel);
            let backend = backends
                .get(kind)
                .ok_or_else(|| BusError::Config(format!("{key}: backend `{}` is not connected", kind.as_str())))?;
            if !backend.capabilities().supports(channel.pattern) {
                return Err(BusError::Config(format!(
                    "messaging.channels.{name}.pattern: backend `{}` (chosen by {key}) does not support {}",
                    backend.name(),
                    channel.pattern.as_str()
                )));
            }
            if channel.partitions == 0 {
                return Err(BusError::Config(format!("messaging.channels.{name}.partitions: must be at least 1")));
            }
            let physical = format!("{}{}", config.topic_prefix, name);
            backend.declare(&physical, channel.partitions).await?;
            let mut route = Route::new(name, channel, physical.clone(), backend.clone(), kind);
            if let Some(fallback) = config.backend_selection.fallback
                && fallback != kind
                && channel.pattern == Pattern::RequestResponse
            {
                let key = "messaging.backend_selection.fallback";
                let standby = backends.get(fallback).ok_or_else(|| {
                    BusError::Config(format!("{key}: backend `{}` is not connected", fallback.as_str()))
                })?;
                if !standby.capabilities().supports(channel.pattern) {
                    return Err(BusError::Config(format!(
                        "{key}: backend `{}` cannot carry {} channel `{name}`",
                        fallback.as_str(),
                        channel.pattern.as_str()
                    )));
                }
                standby.declare(&physical, channel.partitions).await?;
                route.fallback = Some(Arc::new(Route::new(name, channel, physical, standby, fallback)));
            }
            routes.insert(name.clone(), route);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                source: format!("/petstore/{service}"),
                service: service.to_owned(),
                prefix: config.topic_prefix.clone(),
                routes,
                retry: config.retry,
                pending: Mutex::new(HashMap::new()),
                reply_channels: tokio::sync::Mutex::new(HashMap::new()),
                middleware: Mutex::new(Vec::new()),
                lag_interval: config.lag_interval,
                watches: Mutex::new(Watches::default()),
                shutdown: shutdown.child_token(),
                tasks: TaskTracker::new(),
            }),
        })
    }

    /// The CloudEvents `source` of messages this bus produces, e.g. `/petstore/order`.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Whether `channel` is declared.
    pub fn has_channel(&self, channel: &str) -> bool {
        self.inner.routes.contains_key(channel)
    }

    fn route(&self, channel: &str, allowed: &[Pattern], call: &str) -> Result<&Route, BusError> {
        let route = self.inner.routes.get(channel).ok_or_else(|| BusError::UnknownChannel(channel.to_owned()))?;
        if !allowed.contains(&route.pattern) {
            return Err(BusError::Config(format!(
                "messaging.channels.{channel}.pattern is {}; `{call}` needs one of {:?}",
                route.pattern.as_str(),
                allowed.iter().map(|p| p.as_str()).collect::<Vec<_>>()
            )));
        }
        Ok(route)
    }

    /// Publishes an event (pub/sub or streaming channel) or a command (point-to-point
    /// channel): the channel's declared pattern decides who gets it.
    pub async fn publish(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
        let route = self.route(channel, &[Pattern::PubSub, Pattern::Streaming, Pattern::PointToPoint], "publish")?;
        Self::publish_on(route, &route.physical, envelope).await
    }

    /// Sends a command to the single consumer group of a point-to-point channel.
    pub async fn send(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
        let route = self.route(channel, &[Pattern::PointToPoint], "send")?;
        Self::publish_on(route, &route.physical, envelope).await
    }

    async fn publish_on(route: &Route, physical: &str, envelope: &Envelope) -> Result<(), BusError> {
        let result = route.backend.publish(physical, envelope).await;
        if result.is_ok() { &route.published } else { &route.publish_failed }.increment(1);
        result
    }

    /// Sends a request and waits up to `timeout` for its reply. When the channel's backend
    /// fails (the request cannot be sent, or not within half of `timeout`) and a fallback
    /// backend is configured, the request goes there with the time that is left; a request
    /// that was sent but got no reply is not sent again.
    pub async fn request(&self, channel: &str, envelope: Envelope, timeout: Duration) -> Result<Envelope, BusError> {
        let route = self.route(channel, &[Pattern::RequestResponse], "request")?;
        let Some(fallback) = route.fallback.as_deref() else {
            return self.request_on(route, envelope, timeout, timeout).await;
        };
        let started = Instant::now();
        match self.request_on(route, envelope.clone(), timeout, timeout / 2).await {
            Err(error @ BusError::Backend { .. }) => {
                let left = timeout.saturating_sub(started.elapsed());
                warn!(channel, from = route.backend.name(), to = fallback.backend.name(), %error,
                    "request failed on its backend; sending it through the fallback");
                metrics::counter!("petstore_requests_fallback_total",
                    "channel" => channel.to_owned(), "from" => route.backend.name(), "to" => fallback.backend.name())
                .increment(1);
                self.request_on(fallback, envelope, left, left).await
            }
            other => other,
        }
    }

    /// Sends a request on `route` (giving up on sending after `send_limit`) and waits for
    /// its reply until `timeout` has passed since the call.
    async fn request_on(
        &self,
        route: &Route,
        mut envelope: Envelope,
        timeout: Duration,
        send_limit: Duration,
    ) -> Result<Envelope, BusError> {
        let started = Instant::now();
        let unsent =
            |what: &str| BusError::transient(route.backend.name(), format!("{what} not done within {send_limit:?}"));
        envelope.reply_to = Some(
            tokio::time::timeout(send_limit, self.reply_channel(route))
                .await
                .map_err(|_| unsent("opening the reply channel"))??,
        );
        // Responders skip a request whose requester has stopped waiting (one that sat in a
        // queue while the responder was down, say).
        let deadline = chrono::Utc::now() + timeout.saturating_sub(started.elapsed());
        envelope
            .extensions
            .insert(crate::REQUEST_DEADLINE.to_owned(), deadline.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let (tx, rx) = oneshot::channel();
        let id = envelope.id;
        self.pending().insert(id, tx);
        let result = async {
            let send_left = send_limit.saturating_sub(started.elapsed());
            tokio::time::timeout(send_left, Self::publish_on(route, &route.physical, &envelope))
                .await
                .map_err(|_| unsent("publishing the request"))??;
            match tokio::time::timeout(timeout.saturating_sub(started.elapsed()), rx).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) => Err(BusError::Closed),
                Err(_) => Err(BusError::Timeout { channel: route.channel.clone(), timeout }),
            }
        }
        .await;
        self.pending().remove(&id);
        result
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Envelope>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The private reply channel of this bus on the route's backend, started on first use.
    async fn reply_channel(&self, route: &Route) -> Result<String, BusError> {
        let mut channels = self.inner.reply_channels.lock().await;
        if let Some(name) = channels.get(&route.kind) {
            return Ok(name.clone());
        }
        let name = format!("{}replies.{}.{}", self.inner.prefix, self.inner.service, Uuid::now_v7().simple());
        route.backend.declare(&name, 1).await?;
        let mut consumer =
            route.backend.subscribe(&name, SubscribeOptions { group: None, start: StartFrom::Earliest }).await?;
        let bus = self.clone();
        let cancel = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            loop {
                let batch = tokio::select! {
                    () = cancel.cancelled() => break,
                    batch = consumer.receive(64, Duration::ZERO) => batch,
                };
                match batch {
                    Ok(deliveries) => {
                        for d in deliveries {
                            bus.complete_request(&d.envelope);
                            let _ = consumer.ack(&d).await;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "reply consumer failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            consumer.close().await;
        });
        channels.insert(route.kind, name.clone());
        Ok(name)
    }

    fn complete_request(&self, reply: &Envelope) {
        let waiter = reply
            .causation_id
            .as_deref()
            .and_then(|c| Uuid::parse_str(c).ok())
            .and_then(|id| self.pending().remove(&id));
        match waiter {
            Some(tx) => {
                let _ = tx.send(reply.clone());
            }
            None => debug!(reply = %reply.id, "reply to a request nobody waits for any more"),
        }
    }

    /// Consumes a pub/sub, point-to-point or streaming channel in `group`, one message at a
    /// time, retrying failures with backoff and dead-lettering what keeps failing.
    pub async fn subscribe(&self, channel: &str, group: &str, handler: impl Handler) -> Result<Subscription, BusError> {
        let route = self.route(channel, &[Pattern::PubSub, Pattern::PointToPoint, Pattern::Streaming], "subscribe")?;
        let route = route.clone();
        // Competing consumers share a point-to-point group: taking one message at a time
        // leaves the rest to whichever consumer is free, instead of one hoarding a batch.
        let batch = if route.pattern == Pattern::PointToPoint { 1 } else { 64 };
        let work = Work::Each(Arc::new(handler));
        self.spawn_consumer(route, group, work, batch, Duration::ZERO, None, self.inner.retry).await
    }

    /// Consumes a pub/sub channel as this instance alone: every instance that subscribes gets
    /// every message published from then on, whatever the other instances of its service do —
    /// a broadcast, for news every instance must act on (a feature flag changed). Nothing is
    /// kept for an instance while it is not subscribed, so a subscriber loads the current
    /// state itself when it starts. Retries and dead letters work as for [`Bus::subscribe`];
    /// metrics and dead letters name the group `instance`.
    pub async fn subscribe_broadcast(&self, channel: &str, handler: impl Handler) -> Result<Subscription, BusError> {
        let route = self.route(channel, &[Pattern::PubSub], "subscribe_broadcast")?.clone();
        let work = Work::Each(Arc::new(handler));
        let options = SubscribeOptions { group: None, start: StartFrom::Latest };
        self.spawn_with(route, BROADCAST_GROUP, options, work, 64, Duration::ZERO, self.inner.retry).await
    }

    /// Consumes the dead letters of `channel` (`<channel>.dlq` on the channel's backend) in
    /// the durable group that keeps them ([`crate::DLQ_GROUP`]), with the usual middleware;
    /// [`DeadLetter::parse`] reads each one. A letter must not be lost on its way to where it
    /// is kept, so a retriable failure is retried until it succeeds or the consumer stops
    /// (then the letter stays unacknowledged and comes back); only a fatal one is
    /// dead-lettered again, to `<channel>.dlq.dlq`.
    pub async fn subscribe_dead_letters(&self, channel: &str, handler: impl Handler) -> Result<Subscription, BusError> {
        let route = self.inner.routes.get(channel).ok_or_else(|| BusError::UnknownChannel(channel.to_owned()))?;
        let route = route.dead_letters();
        // Declared and the group created as `dead_letter` does, so that backends without
        // retention keep letters published before this consumer first reads.
        route.backend.declare(&route.physical, route.partitions.max(1)).await?;
        route.backend.ensure_group(&route.physical, &self.inner.physical_group(crate::DLQ_GROUP)).await?;
        let retry = RetryPolicy { max_attempts: u32::MAX, ..self.inner.retry };
        let work = Work::Each(Arc::new(handler));
        self.spawn_consumer(route, crate::DLQ_GROUP, work, 16, Duration::ZERO, None, retry).await
    }

    /// Checks that dead letters from `channel` can be replayed there: the channel is declared
    /// and carries publications. A request/response channel does not: its requester has
    /// stopped waiting long ago.
    pub fn check_replayable(&self, channel: &str) -> Result<(), BusError> {
        self.replay_route(channel).map(drop)
    }

    fn replay_route(&self, channel: &str) -> Result<&Route, BusError> {
        self.route(channel, &[Pattern::PubSub, Pattern::Streaming, Pattern::PointToPoint], "replay")
    }

    /// Publishes a dead letter's original message again ([`DeadLetter::to_replay`]: the
    /// `dlq*` attributes removed, the same id) to the channel it was dead-lettered from
    /// (`dlqorigin`), which must be a channel of this bus. Every group of that channel gets
    /// it; one that handled it meanwhile drops it through its inbox. Returns the letter as
    /// read.
    pub async fn replay(&self, letter: &Envelope) -> Result<DeadLetter, BusError> {
        let letter = DeadLetter::parse(letter)?;
        let route = self.replay_route(&letter.channel)?;
        Self::publish_on(route, &route.physical, &letter.to_replay(chrono::Utc::now())).await?;
        Ok(letter)
    }

    /// Answers requests on a request/response channel; the reply goes back to the
    /// requester's reply channel with the request's id as its causation id. With a fallback
    /// backend configured the channel is served on it as well, so that requests that fall
    /// back are answered.
    pub async fn serve(&self, channel: &str, group: &str, responder: impl Responder) -> Result<Subscription, BusError> {
        let route = self.route(channel, &[Pattern::RequestResponse], "serve")?.clone();
        let responder: Arc<dyn Responder> = Arc::new(responder);
        let mut consumers = Vec::new();
        for route in std::iter::once(route.clone()).chain(route.fallback.as_deref().cloned()) {
            let answer =
                Answer { backend: route.backend.clone(), channel: route.channel.clone(), responder: responder.clone() };
            let work = Work::Each(Arc::new(answer));
            let subscription =
                self.spawn_consumer(route, group, work, 16, Duration::ZERO, None, self.inner.retry).await;
            match subscription {
                Ok(s) => consumers.extend(s.consumers),
                Err(e) => {
                    Subscription { consumers }.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(Subscription { consumers })
    }

    /// Processes a stream in batches: up to `batch_size` messages, gathered for at most
    /// `max_wait`, in order per key. A failing batch is retried whole, then its messages are
    /// dead-lettered.
    pub async fn process_stream(
        &self,
        channel: &str,
        group: &str,
        options: StreamOptions,
        processor: impl BatchProcessor,
    ) -> Result<Subscription, BusError> {
        let route = self.route(channel, &[Pattern::Streaming, Pattern::PubSub], "process_stream")?.clone();
        let work = Work::Batch(Arc::new(processor));
        let batch = options.batch_size.max(1);
        self.spawn_consumer(route, group, work, batch, options.max_wait, Some(options.start), self.inner.retry).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn spawn_consumer(
        &self,
        route: Route,
        group: &str,
        work: Work,
        batch: usize,
        max_wait: Duration,
        start: Option<StartFrom>,
        retry: RetryPolicy,
    ) -> Result<Subscription, BusError> {
        let options =
            SubscribeOptions { group: Some(self.inner.physical_group(group)), start: start.unwrap_or(route.start) };
        self.spawn_with(route, group, options, work, batch, max_wait, retry).await
    }

    /// Attaches a consumer with `options` and runs it on the bus's tasks. A durable group's
    /// backlog is sampled into the lag gauges; a private subscription has none to sample.
    #[allow(clippy::too_many_arguments)]
    async fn spawn_with(
        &self,
        route: Route,
        group: &str,
        options: SubscribeOptions,
        work: Work,
        batch: usize,
        max_wait: Duration,
        retry: RetryPolicy,
    ) -> Result<Subscription, BusError> {
        let durable = options.group.is_some();
        let consumer = route.backend.subscribe(&route.physical, options).await?;
        let cancel = self.inner.shutdown.child_token();
        let span = info_span!("consumer", channel = %route.channel, group, backend = route.backend.name());
        let watching = durable.then(|| self.watch(&route, group));
        let bus = self.clone();
        let group = group.to_owned();
        let token = cancel.clone();
        let done = self.inner.tasks.spawn(
            async move {
                let _watching = watching;
                bus.consume(consumer, route, group, work, batch, max_wait, retry, token).await;
            }
            .instrument(span),
        );
        Ok(Subscription { consumers: vec![(cancel, done)] })
    }

    /// Adds a subscription's group (and its channel's dead letters) to what the backlog
    /// sampler measures, resolving their gauges the first time; starts the sampler with the
    /// first subscription. The group leaves the list when the returned guard drops.
    fn watch(&self, route: &Route, group: &str) -> Watching {
        let key = (route.channel.clone(), group.to_owned());
        let backend = route.backend.name();
        let start = {
            let mut watches = self.inner.watches();
            watches
                .groups
                .entry(key.clone())
                .or_insert_with(|| GroupWatch {
                    subscriptions: 0,
                    lag: metrics::gauge!("petstore_consumer_lag_messages",
                        "channel" => route.channel.clone(), "group" => group.to_owned(), "backend" => backend),
                })
                .subscriptions += 1;
            watches.dead_letters.entry(route.channel.clone()).or_insert_with(|| {
                metrics::gauge!("petstore_dlq_depth_messages", "channel" => route.channel.clone(), "backend" => backend)
            });
            !std::mem::replace(&mut watches.sampling, true)
        };
        if start {
            let sampler =
                sample_backlogs(Arc::downgrade(&self.inner), self.inner.lag_interval, self.inner.shutdown.clone());
            self.inner.tasks.spawn(sampler.instrument(info_span!("backlog_sampler", service = %self.inner.service)));
        }
        Watching { inner: Arc::downgrade(&self.inner), key }
    }

    /// Receives up to `batch` messages at a time (gathered for at most `max_wait`) and runs
    /// them through the middleware, retrying single messages with `retry`.
    #[allow(clippy::too_many_arguments)]
    async fn consume(
        &self,
        mut consumer: Box<dyn Consumer>,
        route: Route,
        group: String,
        work: Work,
        batch: usize,
        max_wait: Duration,
        retry: RetryPolicy,
        cancel: CancellationToken,
    ) {
        let retried = metrics::counter!("petstore_messages_retried_total", "channel" => route.channel.clone());
        let mut chain: Vec<Arc<dyn Middleware>> = vec![
            Arc::new(Observe::new(&route.channel, route.backend.name(), route.pattern, &group)),
            Arc::new(Deduplicate::new(DEDUP_CAPACITY)),
            Arc::new(Retry(retry)),
        ];
        chain.extend(self.inner.middleware.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        'receive: loop {
            let received = tokio::select! {
                () = cancel.cancelled() => break,
                received = consumer.receive(batch, max_wait) => received,
            };
            let deliveries = match received {
                Ok(d) => d,
                Err(e) => {
                    warn!(error = %e, "receive failed; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            match &work {
                Work::Batch(processor) => {
                    let envelopes: Vec<Envelope> = deliveries.iter().map(|d| d.envelope.clone()).collect();
                    let outcome = self.with_retry(&cancel, &retried, || processor.process(envelopes.clone())).await;
                    if !self.settle(&mut *consumer, &route, &group, &deliveries, outcome, &cancel).await {
                        break 'receive;
                    }
                }
                Work::Each(handler) => {
                    for d in &deliveries {
                        let delivered = Delivered::new(
                            &route.channel,
                            &group,
                            route.backend.name(),
                            route.pattern,
                            &d.envelope,
                            &cancel,
                        );
                        let result = Next::new(&chain, handler.as_ref()).run(d.envelope.clone(), &delivered).await;
                        let outcome = match result {
                            Ok(()) => Outcome::Done,
                            Err(HandlerError::Retriable(_)) if cancel.is_cancelled() => Outcome::Cancelled,
                            Err(HandlerError::Retriable(error) | HandlerError::Fatal(error)) => {
                                Outcome::DeadLetter { error, attempts: delivered.attempts() }
                            }
                        };
                        if !self.settle(&mut *consumer, &route, &group, std::slice::from_ref(d), outcome, &cancel).await
                        {
                            break 'receive;
                        }
                    }
                }
            }
        }
        consumer.close().await;
    }

    /// Acknowledges the deliveries after their outcome; returns false when the consumer must
    /// stop (shutdown while retrying: the messages stay unacknowledged and come back later).
    async fn settle(
        &self,
        consumer: &mut dyn Consumer,
        route: &Route,
        group: &str,
        deliveries: &[Delivery],
        outcome: Outcome,
        cancel: &CancellationToken,
    ) -> bool {
        match outcome {
            Outcome::Cancelled => return false,
            Outcome::Done => {}
            Outcome::DeadLetter { error, attempts } => {
                for d in deliveries {
                    if !self.dead_letter(route, group, &d.envelope, &error, attempts, cancel).await {
                        return false;
                    }
                }
                let labels = [
                    ("channel", route.channel.clone()),
                    ("backend", route.backend.name().to_owned()),
                    ("group", group.to_owned()),
                ];
                metrics::counter!("petstore_messages_dead_lettered_total", &labels).increment(deliveries.len() as u64);
            }
        }
        for d in deliveries {
            if let Err(e) = consumer.ack(d).await {
                // Not fatal: the message comes back and the handler's inbox drops the repeat.
                warn!(error = %e, message = %d.envelope.id, "acknowledgement failed");
            }
        }
        true
    }

    /// Runs a batch `attempt` until it succeeds, fails fatally, or exhausts the retry policy
    /// (single messages go through the [`Retry`] middleware instead), counting each retry in
    /// the subscription's `retried` counter.
    async fn with_retry<F, Fut>(
        &self,
        cancel: &CancellationToken,
        retried: &metrics::Counter,
        mut attempt: F,
    ) -> Outcome
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        let policy = self.inner.retry;
        let mut n = 1;
        loop {
            match attempt().await {
                Ok(()) => return Outcome::Done,
                Err(HandlerError::Fatal(error)) => return Outcome::DeadLetter { error, attempts: n },
                Err(HandlerError::Retriable(error)) if n >= policy.max_attempts => {
                    return Outcome::DeadLetter { error, attempts: n };
                }
                Err(HandlerError::Retriable(error)) => {
                    retried.increment(1);
                    warn!(attempt = n, %error, "handler failed; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return Outcome::Cancelled,
                        () = tokio::time::sleep(policy.backoff(n)) => {}
                    }
                    n += 1;
                }
            }
        }
    }

    /// Publishes `message` to the channel's dead-letter channel (`<channel>.dlq` on the same
    /// backend) with the error, attempt count, origin and time; keeps trying until it is stored,
    /// because acknowledging a message that is neither processed nor dead-lettered loses it.
    async fn dead_letter(
        &self,
        route: &Route,
        group: &str,
        message: &Envelope,
        error: &str,
        attempts: u32,
        cancel: &CancellationToken,
    ) -> bool {
        let dlq = dead_letter_channel(&route.physical);
        let mut letter = message.clone();
        letter.extensions.insert(crate::DLQ_ERROR.into(), error.to_owned());
        letter.extensions.insert(crate::DLQ_ATTEMPTS.into(), attempts.to_string());
        letter.extensions.insert(crate::DLQ_ORIGIN.into(), format!("{}/{}", route.channel, group));
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        letter.extensions.insert(crate::DLQ_TIME.into(), now);
        error!(message = %message.id, r#type = %message.event_type, attempts, error, "dead-lettering message");
        let mut n = 1;
        loop {
            let dlq_group = self.inner.physical_group(crate::DLQ_GROUP);
            let result = match route.backend.declare(&dlq, route.partitions.max(1)).await {
                Ok(()) => match route.backend.ensure_group(&dlq, &dlq_group).await {
                    Ok(()) => route.backend.publish(&dlq, &letter).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return true,
                Err(e) => {
                    warn!(error = %e, "dead-letter publish failed; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return false,
                        () = tokio::time::sleep(self.inner.retry.backoff(n)) => {}
                    }
                    n += 1;
                }
            }
        }
    }

    /// Adds a middleware layer to the subscriptions this bus starts from now on, inside the
    /// built-in ones (it runs once per attempt, after deduplication).
    pub fn add_middleware(&self, middleware: impl Middleware) {
        self.inner.middleware.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::new(middleware));
    }

    /// Stops every consumer of this bus, waits for in-flight messages to finish, and deletes
    /// the bus's private reply channels.
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let replies: Vec<(BackendKind, String)> = self.inner.reply_channels.lock().await.drain().collect();
        for (kind, channel) in replies {
            let backend = self.inner.routes.values().find(|r| r.kind == kind).map(|r| r.backend.clone());
            if let Some(backend) = backend
                && let Err(e) = backend.remove(&channel).await
            {
                warn!(error = %e, channel, "could not delete the reply channel");
            }
        }
    }
}
