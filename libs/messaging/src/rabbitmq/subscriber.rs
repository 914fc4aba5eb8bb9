//! AMQP message → envelope, and the consumer of one queue.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use lapin::{
    BasicProperties, Channel,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};
use tracing::warn;

use super::{NAME, Shared, amqp_error, publisher::CE_PREFIX};
use crate::{BusError, Consumer, Delivery, Envelope, backend::Receipt};

/// Rebuilds an envelope from a message's `ce_*` headers, `content-type` property and body.
pub(super) fn decode(properties: &BasicProperties, data: Vec<u8>) -> Result<Envelope, BusError> {
    let mut attributes = Vec::new();
    if let Some(headers) = properties.headers() {
        for (key, value) in headers.inner() {
            let Some(name) = key.as_str().strip_prefix(CE_PREFIX) else { continue };
            let value = match value {
                AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes())
                    .map_err(|e| BusError::Codec(format!("header `{key}` is not UTF-8: {e}")))?
                    .to_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                other => {
                    return Err(BusError::Codec(format!("header `{key}` is not a string: {:?}", other.get_type())));
                }
            };
            attributes.push((name, value));
        }
    }
    let content_type = properties.content_type().as_ref().map(|c| c.as_str().to_owned());
    Envelope::from_attributes(attributes, content_type, Bytes::from(data))
}

/// An open AMQP channel consuming one queue.
struct Live {
    channel: Channel,
    consumer: lapin::Consumer,
    queue: ShortString,
}

/// A consumer of a group's durable queue, or of a private server-named queue. Its AMQP
/// channel is reopened on the next `receive` after it broke.
pub(super) struct RabbitMqConsumer {
    shared: Arc<Shared>,
    exchange: ShortString,
    /// The group's queue; `None` for a private subscription, which gets a new server-named
    /// queue whenever its channel is opened.
    group_queue: Option<ShortString>,
    /// `None` once the channel broke (or the consumer closed).
    live: Option<Live>,
    /// Received but not handed out yet (a cancelled `receive` leaves them here).
    ready: VecDeque<Delivery>,
    /// Receipt → delivery tag on the live channel, for deliveries not acknowledged yet.
    /// Receipts outlive channels, delivery tags do not: a receipt from a broken channel is
    /// simply not found (the server redelivers its message).
    unacked: HashMap<u64, u64>,
    next_receipt: u64,
}

impl RabbitMqConsumer {
    /// Declares what the subscription needs and starts consuming.
    pub(super) async fn open(
        shared: Arc<Shared>,
        exchange: ShortString,
        group_queue: Option<ShortString>,
    ) -> Result<Self, BusError> {
        let mut consumer = Self {
            shared,
            exchange,
            group_queue,
            live: None,
            ready: VecDeque::new(),
            unacked: HashMap::new(),
            next_receipt: 0,
        };
        consumer.live = Some(consumer.start().await?);
        Ok(consumer)
    }

    /// Opens a channel, declares the exchange and the queue (idempotent) and consumes it.
    async fn start(&self) -> Result<Live, BusError> {
        let shared = &self.shared;
        let channel = shared.channel().await?;
        let qos = channel.basic_qos(shared.config.prefetch, BasicQosOptions::default());
        shared.op("set the prefetch count", qos).await?;
        shared.declare_exchange(&channel, &self.exchange).await?;
        let queue = match &self.group_queue {
            Some(queue) => {
                shared.declare_group_queue(&channel, &self.exchange, queue).await?;
                queue.clone()
            }
            None => {
                let options =
                    QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
                let declare = channel.queue_declare(ShortString::default(), options, FieldTable::default());
                let queue = shared.op("declare a private queue", declare).await?.name().clone();
                shared.bind(&channel, &self.exchange, &queue).await?;
                queue
            }
        };
        let consume = channel.basic_consume(
            queue.clone(),
            ShortString::default(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        let consumer = shared.op(&format!("consume `{queue}`"), consume).await?;
        Ok(Live { channel, consumer, queue })
    }

    /// The live channel, reopened if it broke. Dropped while reopening, the half-open channel
    /// (and a consumer started on it) closes as it is dropped, and the server requeues what it
    /// sent there.
    async fn live(&mut self) -> Result<&mut Live, BusError> {
        if self.live.is_none() {
            self.live = Some(self.start().await?);
        }
        self.live.as_mut().ok_or(BusError::Closed)
    }

    fn queue(&self) -> &str {
        self.live.as_ref().map_or_else(|| self.group_queue.as_ref().map_or("", |q| q.as_str()), |l| l.queue.as_str())
    }

    /// Forgets the broken channel and what came through it: the server requeues all of it.
    fn reset(&mut self) {
        self.live = None;
        self.ready.clear();
        self.unacked.clear();
    }

    /// Takes the next item of the AMQP consumer: a delivery to hand out, a malformed message
    /// to reject, or the end of the channel. A delivery is in `ready` before anything is
    /// awaited, and a rejection is sent on the first poll (only its answer is awaited), so a
    /// `receive` dropped here loses nothing.
    async fn take(&mut self, next: Option<lapin::Result<lapin::message::Delivery>>) -> Result<(), BusError> {
        let error = match next {
            Some(Ok(delivery)) => {
                self.accept(delivery).await;
                return Ok(());
            }
            Some(Err(e)) => amqp_error(&format!("consume `{}`", self.queue()), &e),
            None => BusError::transient(NAME, format!("consume `{}`: the server cancelled the consumer", self.queue())),
        };
        self.reset();
        Err(error)
    }

    async fn accept(&mut self, delivery: lapin::message::Delivery) {
        let tag = delivery.delivery_tag;
        match decode(&delivery.properties, delivery.data) {
            Ok(envelope) => {
                self.next_receipt += 1;
                self.unacked.insert(self.next_receipt, tag);
                self.ready.push_back(Delivery { envelope, receipt: Receipt::Tag(self.next_receipt) });
            }
            Err(error) => {
                let queue = self.queue().to_owned();
                warn!(%queue, %error, "rejecting a malformed message");
                metrics::counter!("petstore_messages_malformed_total", "backend" => NAME, "topic" => queue)
                    .increment(1);
                if let Some(live) = &self.live {
                    let reject = live.channel.basic_reject(tag, BasicRejectOptions { requeue: false });
                    if let Err(e) = self.shared.op("reject a malformed message", reject).await {
                        warn!(error = %e, "could not reject a malformed message; it comes back after a reconnect");
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Consumer for RabbitMqConsumer {
    async fn receive(&mut self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let max = max.max(1);
        while self.ready.is_empty() {
            let next = self.live().await?.consumer.next().await;
            self.take(next).await?;
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        while self.ready.len() < max {
            let Some(live) = self.live.as_mut() else { break };
            let next = if max_wait.is_zero() {
                live.consumer.next().now_or_never()
            } else {
                tokio::time::timeout_at(deadline, live.consumer.next()).await.ok()
            };
            let Some(next) = next else { break };
            self.take(next).await?;
        }
        let n = max.min(self.ready.len());
        Ok(self.ready.drain(..n).collect())
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        let Receipt::Tag(receipt) = delivery.receipt else {
            return Ok(());
        };
        // Not found: acknowledged already, or received on a channel that has since broken.
        let Some(tag) = self.unacked.remove(&receipt) else {
            return Ok(());
        };
        let Some(live) = &self.live else {
            return Ok(());
        };
        let ack = live.channel.basic_ack(tag, BasicAckOptions::default());
        let result = self.shared.op(&format!("acknowledge on `{}`", live.queue), ack).await;
        if result.is_err() {
            self.reset();
        }
        result
    }

    async fn close(mut self: Box<Self>) {
        self.ready.clear();
        self.unacked.clear();
        let Some(live) = self.live.take() else {
            return;
        };
        // Closing the channel cancels the consumer; the server requeues what it has not had
        // acknowledged (and deletes a private queue).
        let close = live.channel.close(200, "consumer closed".into());
        if let Err(e) = self.shared.op(&format!("close the consumer of `{}`", live.queue), close).await {
            warn!(error = %e, "closing a RabbitMQ consumer failed; the server requeues its messages when the connection goes");
        }
    }
}
