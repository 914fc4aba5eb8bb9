//! The bus a service holds: routes logical channels to backends (here), runs subscriptions
//! ([`consume`]) with dead-lettering as their outermost layer ([`dead_letters`]), correlates
//! requests with replies ([`request`]) and samples backlogs into gauges ([`backlog`]).

mod backlog;
mod consume;
mod dead_letters;
mod request;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::oneshot;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::warn;
use uuid::Uuid;

use self::{
    backlog::Watches,
    consume::{Plan, Work},
    dead_letters::dead_letter_channel,
};
use crate::{
    Backend, BackendKind, BatchProcessor, BusError, ChannelConfig, DeadLetter, Envelope, Handler, MessagingConfig,
    Pattern, RetryPolicy, StartFrom, StreamOptions, SubscribeOptions, middleware::Middleware,
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
    /// Messages a subscription handles at once.
    concurrency: usize,
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
        concurrency: usize,
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
            concurrency,
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
    /// The physical name of consumer group `group`.
    fn physical_group(&self, group: &str) -> String {
        format!("{}{group}", self.prefix)
    }
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

impl Bus {
    /// Builds the bus of `service`: validates every channel against its backend's
    /// capabilities and declares the physical channels. Consumers stop when `shutdown` fires.
    pub async fn new(
        backends: &Backends,
        config: &MessagingConfig,
        service: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, BusError> {
        config.validate_settings()?;
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
            let concurrency = config.concurrency_of(channel);
            let mut route = Route::new(name, channel, physical.clone(), backend.clone(), kind, concurrency);
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
                route.fallback = Some(Arc::new(Route::new(name, channel, physical, standby, fallback, concurrency)));
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

    /// Consumes a pub/sub, point-to-point or streaming channel in `group`: up to the
    /// channel's concurrency (`messaging.concurrency`, or the channel's own) messages at once,
    /// never two of one partition key at the same time, retrying failures with backoff and
    /// dead-lettering what keeps failing.
    pub async fn subscribe(&self, channel: &str, group: &str, handler: impl Handler) -> Result<Subscription, BusError> {
        let route = self.route(channel, &[Pattern::PubSub, Pattern::PointToPoint, Pattern::Streaming], "subscribe")?;
        let plan = self.durable(route.clone(), group, None, Arc::new(handler), self.inner.retry);
        self.spawn(plan).await
    }

    /// The plan of a subscription in durable group `group`, handling message by message.
    fn durable(
        &self,
        route: Route,
        group: &str,
        start: Option<StartFrom>,
        handler: Arc<dyn Handler>,
        retry: RetryPolicy,
    ) -> Plan {
        let options =
            SubscribeOptions { group: Some(self.inner.physical_group(group)), start: start.unwrap_or(route.start) };
        let work = Work::Each { handler, concurrency: route.concurrency };
        Plan { route, group: group.to_owned(), options, work, retry }
    }

    /// Consumes a pub/sub channel as this instance alone: every instance that subscribes gets
    /// every message published from then on, whatever the other instances of its service do —
    /// a broadcast, for news every instance must act on (a feature flag changed). Nothing is
    /// kept for an instance while it is not subscribed, so a subscriber loads the current
    /// state itself when it starts. Retries and dead letters work as for [`Bus::subscribe`];
    /// metrics and dead letters name the group `instance`.
    pub async fn subscribe_broadcast(&self, channel: &str, handler: impl Handler) -> Result<Subscription, BusError> {
        let route = self.route(channel, &[Pattern::PubSub], "subscribe_broadcast")?.clone();
        let work = Work::Each { handler: Arc::new(handler), concurrency: route.concurrency };
        let options = SubscribeOptions { group: None, start: StartFrom::Latest };
        let group = BROADCAST_GROUP.to_owned();
        self.spawn(Plan { route, group, options, work, retry: self.inner.retry }).await
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
        self.spawn(self.durable(route, crate::DLQ_GROUP, None, Arc::new(handler), retry)).await
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
        let work =
            Work::Batch { processor: Arc::new(processor), size: options.batch_size.max(1), max_wait: options.max_wait };
        let subscribe = SubscribeOptions { group: Some(self.inner.physical_group(group)), start: options.start };
        self.spawn(Plan { route, group: group.to_owned(), options: subscribe, work, retry: self.inner.retry }).await
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
