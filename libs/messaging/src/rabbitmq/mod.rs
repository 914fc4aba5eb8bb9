//! RabbitMQ backend (AMQP 0-9-1) through lapin.
//!
//! | bus concept | RabbitMQ |
//! |---|---|
//! | channel `c` | durable fanout exchange named `c` |
//! | group `g` of `c` | durable queue `<c>/<g>` bound to the exchange: every group's queue gets a copy (pub/sub), consumers of one queue compete (point-to-point) |
//! | `ensure_group` | declares and binds that queue, so messages are kept before anyone consumes (dead letters) |
//! | private subscription | server-named exclusive auto-delete queue bound at subscribe time |
//! | consumer | its own AMQP channel with `basic.qos(prefetch)` and a manual-ack `basic.consume` |
//! | ack | `basic.ack` of the delivery tag on the consumer's channel |
//! | close / crash | the consumer's channel closes and the server requeues every unacknowledged message |
//!
//! Names: exchanges are the channel names themselves; in a queue name `%` and `/` of both
//! parts are percent-encoded (`%25`, `%2F`) before joining them with `/`, so distinct
//! (channel, group) pairs never share a queue. A name must be non-empty, at most 255 bytes
//! and must not start with `amq.` (reserved by the server); anything else is a
//! configuration error. `partitions` has no RabbitMQ counterpart and is ignored.
//!
//! Envelopes travel in binary content mode: attributes as `ce_*` headers, `datacontenttype`
//! as the `content-type` property, the id as `message-id`, persistent delivery mode, and the
//! data as the body. `publish` waits for the publisher confirm (a message published while no
//! group exists is confirmed and dropped, as on any fanout exchange without bindings).
//!
//! Replay: classic queues keep nothing for a group that does not exist yet, so a new group
//! starts from its creation whatever its [`StartFrom`](crate::StartFrom): `Earliest` is served
//! from what the group's queue holds. Producers that must not lose messages published before
//! the consumers first start create the groups first with [`Backend::ensure_group`].
//!
//! Order: one queue is FIFO, so a group with one consumer gets each key in publication
//! order; competing consumers share a queue message by message, so per-key order holds only
//! with [`RabbitMqConfig::single_active_consumer`].
//!
//! One connection per backend, a channel per consumer, one confirm-mode channel for
//! publishing and short-lived channels for declarations. lapin's automatic recovery stays
//! off; instead a call that finds the connection (or the publishing channel) broken opens a
//! new one, and the call that met the failure returns a transient error. A consumer whose channel broke reopens it on
//! its next `receive` (a private subscription gets a new queue: replies sent in between are
//! lost and their requests time out). A half-open connection is noticed by AMQP heartbeats:
//! the server's default interval, or `?heartbeat=<seconds>` in the URL.

mod config;
mod publisher;
mod subscriber;

use std::{
    collections::HashSet,
    str::FromStr,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError},
    types::{AMQPValue, FieldTable, ShortString},
    uri::AMQPUri,
};

pub use self::config::RabbitMqConfig;
use crate::sync::lock;
use crate::{Backend, BusError, Capabilities, Consumer, Envelope, Pattern, SubscribeOptions};

const NAME: &str = "rabbitmq";

/// The RabbitMQ backend: one connection, re-established on demand.
pub struct RabbitMqBackend {
    shared: Arc<Shared>,
    /// Exchanges declared through this backend.
    exchanges: Mutex<HashSet<String>>,
    /// (channel, group) pairs whose queue this backend declared and bound.
    groups: Mutex<HashSet<(String, String)>>,
}

/// What the backend and its consumers share: settings and the current connection.
pub(super) struct Shared {
    config: RabbitMqConfig,
    uri: AMQPUri,
    /// The URL without credentials, for messages.
    display_url: String,
    link: tokio::sync::Mutex<Option<Link>>,
}

/// A connection and its publishing channel (in confirm mode).
#[derive(Clone)]
pub(super) struct Link {
    connection: Arc<Connection>,
    publisher: Channel,
}

/// Maps a lapin failure: what no retry can fix (refused access, a declaration that conflicts
/// with what exists, an oversized message, a bad vhost) is permanent, anything else transient.
fn amqp_error(what: &str, error: &lapin::Error) -> BusError {
    let message = format!("{what}: {error}");
    let permanent = match error.kind() {
        lapin::ErrorKind::ProtocolError(e) => matches!(
            e.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::ACCESSREFUSED | AMQPSoftError::PRECONDITIONFAILED | AMQPSoftError::CONTENTTOOLARGE
            ) | AMQPErrorKind::Hard(AMQPHardError::INVALIDPATH | AMQPHardError::NOTALLOWED)
        ),
        _ => false,
    };
    if permanent { BusError::permanent(NAME, message) } else { BusError::transient(NAME, message) }
}

/// Whether the server answered NOT_FOUND (an exchange or queue that does not exist).
fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

/// Checks a physical name against what the server allows.
fn checked_name(name: String) -> Result<ShortString, BusError> {
    if name.is_empty() || name.starts_with("amq.") {
        return Err(BusError::Config(format!(
            "rabbitmq: `{name}` cannot name an exchange or queue (empty, or in the reserved `amq.` namespace)"
        )));
    }
    ShortString::try_new(name.clone())
        .map_err(|e| BusError::Config(format!("rabbitmq: `{name}` is too long for an exchange or queue name: {e}")))
}

/// The exchange of `channel`: the channel's own name.
fn exchange_name(channel: &str) -> Result<ShortString, BusError> {
    checked_name(channel.to_owned())
}

/// The durable queue of `group` on `channel`: `<channel>/<group>`, `%` and `/` of each part
/// percent-encoded so that the split is unambiguous.
fn group_queue_name(channel: &str, group: &str) -> Result<ShortString, BusError> {
    let escape = |part: &str| part.replace('%', "%25").replace('/', "%2F");
    checked_name(format!("{}/{}", escape(channel), escape(group)))
}

impl Shared {
    /// The current connection, re-established (or its publishing channel reopened) when broken.
    pub(super) async fn link(&self) -> Result<Link, BusError> {
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref() {
            if link.publisher.status().connected() {
                return Ok(link.clone());
            }
            if link.connection.status().connected() {
                let publisher = self.publisher_channel(&link.connection).await?;
                let link = Link { connection: link.connection.clone(), publisher };
                *current = Some(link.clone());
                return Ok(link);
            }
        }
        // Dropping the broken connection releases whatever lapin still holds for it.
        *current = None;
        let link = self.connect().await?;
        *current = Some(link.clone());
        Ok(link)
    }

    async fn connect(&self) -> Result<Link, BusError> {
        let timeout = self.config.connect_timeout();
        let properties = ConnectionProperties::default().with_connection_name("petstore messaging".into());
        let unreachable = |why: String| {
            BusError::transient(NAME, format!("cannot connect to {} within {timeout:?}: {why}", self.display_url))
        };
        let connection = tokio::time::timeout(timeout, Connection::connect_uri(self.uri.clone(), properties))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let connection = Arc::new(connection);
        let publisher = self.publisher_channel(&connection).await?;
        Ok(Link { connection, publisher })
    }

    async fn publisher_channel(&self, connection: &Connection) -> Result<Channel, BusError> {
        let channel = self.op("open the publishing channel", connection.create_channel()).await?;
        self.op("enable publisher confirms", channel.confirm_select(ConfirmSelectOptions::default())).await?;
        Ok(channel)
    }

    /// A new channel on the current connection.
    pub(super) async fn channel(&self) -> Result<Channel, BusError> {
        let link = self.link().await?;
        self.op("open a channel", link.connection.create_channel()).await
    }

    /// Runs one round trip to the server, bounded by the operation timeout.
    pub(super) async fn op<T>(&self, what: &str, call: impl Future<Output = lapin::Result<T>>) -> Result<T, BusError> {
        let timeout = self.config.operation_timeout();
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(amqp_error(what, &e)),
            Err(_) => Err(BusError::transient(NAME, format!("{what}: no answer within {timeout:?}"))),
        }
    }

    /// Declares the durable fanout exchange of a channel.
    pub(super) async fn declare_exchange(&self, channel: &Channel, exchange: &ShortString) -> Result<(), BusError> {
        let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        let declare = channel.exchange_declare(exchange.clone(), ExchangeKind::Fanout, options, FieldTable::default());
        self.op(&format!("declare exchange `{exchange}`"), declare).await
    }

    /// Declares a group's durable queue and binds it to the channel's exchange.
    pub(super) async fn declare_group_queue(
        &self,
        channel: &Channel,
        exchange: &ShortString,
        queue: &ShortString,
    ) -> Result<(), BusError> {
        let mut arguments = FieldTable::default();
        if self.config.single_active_consumer {
            arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        self.op(&format!("declare queue `{queue}`"), channel.queue_declare(queue.clone(), options, arguments)).await?;
        self.bind(channel, exchange, queue).await
    }

    /// Binds `queue` to `exchange` (fanout: the routing key is ignored).
    pub(super) async fn bind(
        &self,
        channel: &Channel,
        exchange: &ShortString,
        queue: &ShortString,
    ) -> Result<(), BusError> {
        let bind = channel.queue_bind(
            queue.clone(),
            exchange.clone(),
            ShortString::default(),
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        self.op(&format!("bind queue `{queue}` to `{exchange}`"), bind).await
    }
}

impl RabbitMqBackend {
    /// Connects, failing within the connect timeout when the server is unreachable.
    pub async fn connect(config: &RabbitMqConfig) -> Result<Self, BusError> {
        let display_url = crate::redact::url(&config.url);
        let uri = AMQPUri::from_str(&config.url).map_err(|e| {
            BusError::Config(format!("messaging.rabbitmq.url: `{display_url}` is not an AMQP URL: {e}"))
        })?;
        if config.prefetch == 0 {
            return Err(BusError::Config("messaging.rabbitmq.prefetch: must be at least 1".into()));
        }
        let shared = Shared { config: config.clone(), uri, display_url, link: tokio::sync::Mutex::new(None) };
        shared.link().await?;
        Ok(Self { shared: Arc::new(shared), exchanges: Mutex::new(HashSet::new()), groups: Mutex::new(HashSet::new()) })
    }
}

#[async_trait]
impl Backend for RabbitMqBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            patterns: Pattern::ALL,
            ordering_per_key: self.shared.config.single_active_consumer,
            durable: true,
            replay: false,
            backlog: true,
        }
    }

    async fn remove(&self, channel: &str) -> Result<(), BusError> {
        let exchange = exchange_name(channel)?;
        let amqp = self.shared.channel().await?;
        let delete = amqp.exchange_delete(exchange.clone(), lapin::options::ExchangeDeleteOptions::default());
        self.shared.op(&format!("delete exchange `{exchange}`"), delete).await?;
        lock(&self.exchanges).remove(channel);
        lock(&self.groups).retain(|(c, _)| c != channel);
        Ok(())
    }

    async fn declare(&self, channel: &str, _partitions: u32) -> Result<(), BusError> {
        if lock(&self.exchanges).contains(channel) {
            return Ok(());
        }
        let exchange = exchange_name(channel)?;
        let amqp = self.shared.channel().await?;
        self.shared.declare_exchange(&amqp, &exchange).await?;
        lock(&self.exchanges).insert(channel.to_owned());
        Ok(())
    }

    async fn publish(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
        let exchange = exchange_name(channel)?;
        self.declare(channel, 1).await?;
        publisher::publish(&self.shared, &exchange, envelope)
            .await
            .inspect_err(|e| {
                if e.exchange_missing {
                    // Deleted behind our back, with its bindings: declare them again when asked.
                    lock(&self.exchanges).remove(channel);
                    lock(&self.groups).retain(|(c, _)| c != channel);
                }
            })
            .map_err(|e| e.error)
    }

    async fn ensure_group(&self, channel: &str, group: &str) -> Result<(), BusError> {
        let key = (channel.to_owned(), group.to_owned());
        if lock(&self.groups).contains(&key) {
            return Ok(());
        }
        let queue = group_queue_name(channel, group)?;
        let exchange = exchange_name(channel)?;
        let amqp = self.shared.channel().await?;
        self.shared.declare_exchange(&amqp, &exchange).await?;
        self.shared.declare_group_queue(&amqp, &exchange, &queue).await?;
        lock(&self.exchanges).insert(channel.to_owned());
        lock(&self.groups).insert(key);
        Ok(())
    }

    async fn subscribe(&self, channel: &str, options: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError> {
        crate::backend::refuse_time_start(NAME, channel, options.start)?;
        let exchange = exchange_name(channel)?;
        let queue = options.group.as_deref().map(|group| group_queue_name(channel, group)).transpose()?;
        let consumer = subscriber::RabbitMqConsumer::open(self.shared.clone(), exchange, queue).await?;
        Ok(Box::new(consumer))
    }

    /// The `message-count` of a passive declaration of the group's queue, on a short-lived
    /// channel (a missing queue closes it). RabbitMQ counts the messages *ready* for
    /// delivery only: those delivered to a consumer and not acknowledged yet (up to
    /// `prefetch` per consumer) are not in it, and AMQP reports them nowhere (the management
    /// HTTP API does). A group whose queue does not exist holds nothing: 0.
    async fn backlog(&self, channel: &str, group: &str) -> Result<Option<u64>, BusError> {
        let queue = group_queue_name(channel, group)?;
        let amqp = self.shared.channel().await?;
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let timeout = self.shared.config.operation_timeout();
        let what = || format!("passive declaration of queue `{queue}`");
        match tokio::time::timeout(timeout, amqp.queue_declare(queue.clone(), options, FieldTable::default())).await {
            Ok(Ok(declared)) => Ok(Some(u64::from(declared.message_count()))),
            Ok(Err(e)) if is_not_found(&e) => Ok(Some(0)),
            Ok(Err(e)) => Err(amqp_error(&what(), &e)),
            Err(_) => Err(BusError::transient(NAME, format!("{}: no answer within {timeout:?}", what()))),
        }
    }

    async fn health(&self) -> Result<(), BusError> {
        let link = self.shared.link().await?;
        // A passive declaration of an exchange every server has: one round trip, no effect.
        let options = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
        let probe =
            link.publisher.exchange_declare("amq.fanout".into(), ExchangeKind::Fanout, options, FieldTable::default());
        self.shared.op(&format!("health check of {}", self.shared.display_url), probe).await
    }
}

#[cfg(test)]
mod tests;
