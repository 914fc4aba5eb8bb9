//! Consuming an SQS FIFO queue: long polls, acknowledgement by deletion, release on close.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use aws_sdk_sqs::{Client, types::ChangeMessageVisibilityBatchRequestEntry, types::Message};
use tokio::{task::JoinHandle, time::Instant};
use tracing::{debug, warn};

use super::{NAME, config::MAX_WAIT_TIME_SECS, publisher, service_error};
use crate::{BusError, Consumer, Delivery, backend::Receipt};

/// The most messages one ReceiveMessage returns.
const MAX_MESSAGES: usize = 10;
/// Pause between short polls while gathering a batch for less than a second.
const SHORT_POLL_PAUSE: Duration = Duration::from_millis(50);
/// How long past the gathering deadline a poll may take to answer (one round trip).
const ROUND_TRIP_GRACE: Duration = Duration::from_millis(500);

/// Stands in for a `max_wait` too long to add to an instant.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The messages of one ReceiveMessage, with how many it asked for.
type Polled = Result<(usize, Vec<Message>), BusError>;

/// Where a consumer reads, and how.
pub(super) struct Queue {
    /// Client for deletions and visibility changes.
    pub(super) sqs: Client,
    /// Client for long polls (its operation timeout leaves room for the wait).
    pub(super) poll: Client,
    pub(super) url: Arc<str>,
    /// The bus channel, for errors and logs.
    pub(super) channel: String,
    pub(super) wait_time_secs: i32,
    pub(super) visibility_timeout_secs: i32,
}

/// The temporary queue of a private subscription and its SNS subscription: removed on close.
pub(super) struct PrivateQueue {
    pub(super) sns: aws_sdk_sns::Client,
    pub(super) subscription_arn: String,
}

impl PrivateQueue {
    /// Unsubscribes the queue from its topic and deletes it (and whatever it still holds).
    pub(super) async fn remove(self, sqs: &Client, url: &str) {
        if let Err(e) = self.sns.unsubscribe().subscription_arn(&self.subscription_arn).send().await {
            warn!(error = %service_error("unsubscribe a private queue", &e), "private subscription left behind");
        }
        if let Err(e) = sqs.delete_queue().queue_url(url).send().await {
            warn!(error = %service_error(format!("delete private queue {url}"), &e), "private queue left behind");
        }
    }
}

/// A consumer of one SQS FIFO queue: a consumer group's durable queue, or a private queue.
pub(super) struct SqsConsumer {
    queue: Queue,
    /// Received but not handed out yet (a cancelled `receive` leaves them here).
    ready: VecDeque<Delivery>,
    /// Receipt handles handed out and not acknowledged: released on close.
    unacked: HashSet<Arc<str>>,
    /// A poll that outlived the `receive` that started it (dropped, or past its deadline):
    /// the messages it returns belong to this consumer, so the next call takes them.
    pending: Option<JoinHandle<Polled>>,
    /// Whether the last poll came back full: more messages may be ready right away.
    last_full: bool,
    private: Option<PrivateQueue>,
    closed: bool,
}

impl SqsConsumer {
    pub(super) fn new(queue: Queue, private: Option<PrivateQueue>) -> Self {
        Self {
            queue,
            ready: VecDeque::new(),
            unacked: HashSet::new(),
            pending: None,
            last_full: false,
            private,
            closed: false,
        }
    }

    /// Takes the messages of the running poll, or of a new one asking for `want` messages
    /// for up to `wait` seconds. `Ok(None)`: `until` came first; the poll keeps running and
    /// the next call takes its messages.
    async fn poll(&mut self, want: usize, wait: i32, until: Option<Instant>) -> Result<Option<usize>, BusError> {
        let queue = &self.queue;
        let handle = match &mut self.pending {
            Some(handle) => handle,
            slot @ None => slot.insert(tokio::spawn(receive_messages(
                queue.poll.clone(),
                queue.url.clone(),
                queue.channel.clone(),
                want,
                wait,
                queue.visibility_timeout_secs,
            ))),
        };
        let joined = match until {
            None => handle.await,
            Some(until) => match tokio::time::timeout_at(until, handle).await {
                Ok(joined) => joined,
                Err(_) => return Ok(None),
            },
        };
        self.pending = None;
        let (asked, messages) = joined.map_err(|e| {
            BusError::transient(NAME, format!("receive from `{}`: poll task: {e}", self.queue.channel))
        })??;
        self.last_full = messages.len() >= asked;
        let received = messages.len();
        self.accept(messages);
        Ok(Some(received))
    }

    /// Queues the received messages; deletes those that are not envelopes (left in place,
    /// each would come back forever and block its message group).
    fn accept(&mut self, messages: Vec<Message>) {
        let mut malformed = Vec::new();
        for message in messages {
            let Some(receipt) = message.receipt_handle else { continue };
            let receipt: Arc<str> = receipt.into();
            match publisher::decode(message.body.as_deref().unwrap_or_default()) {
                Ok(envelope) => self.ready.push_back(Delivery { envelope, receipt: Receipt::Handle(receipt) }),
                Err(error) => {
                    warn!(channel = %self.queue.channel, message = ?message.message_id, %error, "deleting a malformed message");
                    metrics::counter!("petstore_messages_malformed_total", "backend" => NAME, "topic" => self.queue.channel.clone())
                        .increment(1);
                    malformed.push(receipt);
                }
            }
        }
        if !malformed.is_empty() {
            let (sqs, url) = (self.queue.sqs.clone(), self.queue.url.clone());
            tokio::spawn(async move {
                for receipt in malformed {
                    if let Err(e) = sqs.delete_message().queue_url(&*url).receipt_handle(&*receipt).send().await {
                        warn!(error = %service_error("delete a malformed message", &e), "malformed message kept");
                    }
                }
            });
        }
    }

    /// Everything `close` (or a drop without it) must still do; `None` once done.
    fn take_cleanup(&mut self) -> Option<Cleanup> {
        if std::mem::replace(&mut self.closed, true) {
            return None;
        }
        let mut held: Vec<Arc<str>> = self.unacked.drain().collect();
        held.extend(self.ready.drain(..).filter_map(|d| match d.receipt {
            Receipt::Handle(receipt) => Some(receipt),
            _ => None,
        }));
        Some(Cleanup {
            sqs: self.queue.sqs.clone(),
            url: self.queue.url.clone(),
            held,
            pending: self.pending.take(),
            private: self.private.take(),
        })
    }
}

/// One ReceiveMessage call.
async fn receive_messages(
    poll: Client,
    url: Arc<str>,
    channel: String,
    want: usize,
    wait: i32,
    visibility_timeout: i32,
) -> Polled {
    let want = want.clamp(1, MAX_MESSAGES);
    let output = poll
        .receive_message()
        .queue_url(&*url)
        .max_number_of_messages(i32::try_from(want).unwrap_or(1))
        .wait_time_seconds(wait)
        .visibility_timeout(visibility_timeout)
        .send()
        .await
        .map_err(|e| service_error(format!("receive from `{channel}`"), &e))?;
    Ok((want, output.messages.unwrap_or_default()))
}

/// Makes `receipts` visible again at once, for the group's other consumers.
async fn release(sqs: &Client, url: &str, receipts: &[Arc<str>]) {
    for chunk in receipts.chunks(MAX_MESSAGES) {
        let entries = chunk.iter().enumerate().filter_map(|(n, receipt)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(n.to_string())
                .receipt_handle(&**receipt)
                .visibility_timeout(0)
                .build()
                .ok()
        });
        match sqs.change_message_visibility_batch().queue_url(url).set_entries(Some(entries.collect())).send().await {
            Ok(output) if output.failed.is_empty() => {}
            Ok(output) => {
                debug!(failed = output.failed.len(), "some messages not released (already deleted or expired)")
            }
            Err(e) => warn!(
                error = %service_error("release unacknowledged messages", &e),
                "they come back after the visibility timeout instead"
            ),
        }
    }
}

/// What closing a consumer has to do: release held messages (or remove a private queue),
/// and take care of a poll still running.
struct Cleanup {
    sqs: Client,
    url: Arc<str>,
    held: Vec<Arc<str>>,
    pending: Option<JoinHandle<Polled>>,
    private: Option<PrivateQueue>,
}

impl Cleanup {
    async fn run(self) {
        if let Some(private) = self.private {
            if let Some(pending) = self.pending {
                pending.abort();
            }
            private.remove(&self.sqs, &self.url).await;
            return;
        }
        release(&self.sqs, &self.url, &self.held).await;
        // Dropping a running long poll does not stop it on the server, which would hand the
        // next messages to nobody until their visibility timeout: let it finish instead, and
        // release what it got.
        if let Some(pending) = self.pending {
            let (sqs, url) = (self.sqs, self.url);
            tokio::spawn(async move {
                if let Ok(Ok((_, messages))) = pending.await {
                    let receipts: Vec<Arc<str>> =
                        messages.into_iter().filter_map(|m| m.receipt_handle.map(Arc::from)).collect();
                    release(&sqs, &url, &receipts).await;
                }
            });
        }
    }
}

#[async_trait]
impl Consumer for SqsConsumer {
    async fn receive(&mut self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, BusError> {
        if self.closed {
            return Err(BusError::Closed);
        }
        let max = max.max(1);
        while self.ready.is_empty() {
            self.poll(max, self.queue.wait_time_secs, None).await?;
        }
        let now = Instant::now();
        let deadline = now.checked_add(max_wait).unwrap_or(now + FOREVER);
        while self.ready.len() < max {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() && !self.last_full {
                break;
            }
            // Whole seconds only: a long poll never outlasts the deadline; under a second,
            // short polls.
            let wait = i32::try_from(remaining.as_secs().min(u64::from(MAX_WAIT_TIME_SECS))).unwrap_or(0);
            match self.poll(max - self.ready.len(), wait, Some(deadline + ROUND_TRIP_GRACE)).await {
                Ok(Some(0)) if wait == 0 && !remaining.is_zero() => {
                    tokio::time::sleep(remaining.min(SHORT_POLL_PAUSE)).await;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    // Hand out what is there; a lasting failure shows on the next receive.
                    debug!(error = %e, channel = %self.queue.channel, "poll failed while gathering a batch");
                    break;
                }
            }
        }
        let n = max.min(self.ready.len());
        let deliveries: Vec<Delivery> = self.ready.drain(..n).collect();
        for delivery in &deliveries {
            if let Receipt::Handle(receipt) = &delivery.receipt {
                self.unacked.insert(receipt.clone());
            }
        }
        Ok(deliveries)
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        let Receipt::Handle(receipt) = &delivery.receipt else {
            return Ok(());
        };
        self.queue.sqs.delete_message().queue_url(&*self.queue.url).receipt_handle(&**receipt).send().await.map_err(
            |e| service_error(format!("acknowledge message {} of `{}`", delivery.envelope.id, self.queue.channel), &e),
        )?;
        self.unacked.remove(receipt);
        Ok(())
    }

    async fn close(mut self: Box<Self>) {
        if let Some(cleanup) = self.take_cleanup() {
            cleanup.run().await;
        }
    }
}

impl Drop for SqsConsumer {
    fn drop(&mut self) {
        // Dropped without `close`: clean up in the background if a runtime is still there;
        // otherwise the messages come back after their visibility timeout.
        if let Some(cleanup) = self.take_cleanup()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(cleanup.run());
        }
    }
}
