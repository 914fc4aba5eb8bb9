//! AWS backend: SNS FIFO topics for channels, SQS FIFO queues for consumer groups.
//!
//! | bus | SNS / SQS |
//! |---|---|
//! | channel | an SNS FIFO topic |
//! | consumer group | an SQS FIFO queue subscribed to the channel's topic (raw message delivery, a queue policy letting the topic send); created by [`Backend::ensure_group`] or the group's first `subscribe`, and kept |
//! | private subscription (`group: None`) | a temporary SQS FIFO queue subscribed the same way (5-minute retention, tagged `petstore:private`), unsubscribed and deleted on close |
//! | partition key | the FIFO `MessageGroupId` (`names::message_group`): one key is delivered in order, one batch at a time per group; unkeyed messages use their id (no order promised, full parallelism) |
//! | envelope id | the FIFO `MessageDeduplicationId` (`Envelope::publication_id`: qualified for dead letters and replays): a second publish of one envelope within SNS's 5-minute window is dropped |
//! | receive | `ReceiveMessage`, long polling `wait_time_secs` (≤ 20 s) for the first message, then gathering within `max_wait` (long polls of whole seconds, short polls below one) |
//! | ack | `DeleteMessage` with the receipt handle (`Receipt::Handle`) |
//! | close | `ChangeMessageVisibility` to 0 for every unacknowledged message: the group's other consumers get them at once |
//! | crash | unacknowledged messages come back after `visibility_timeout_secs` (default 30 s) |
//!
//! **Message format.** An SNS message carries at most 10 message attributes, too few for the
//! CloudEvents binary mode, so the envelope travels in structured mode: the message body is
//! the CloudEvents JSON format (every attribute and extension, `data` embedded verbatim for
//! JSON, `data_base64` otherwise), lossless (`publisher::body`). Bodies that are not a
//! CloudEvent are logged, counted and deleted.
//!
//! **Names** (`names`). SNS and SQS names allow `A-Z a-z 0-9 _ -`, end in `.fifo` for FIFO,
//! and are limited to 256 (topics) and 80 (queues) characters. Bus names (`t0199….events`,
//! `….events.dlq`, `….replies.svc.0199…`) map deterministically to
//! - topic: `<channel, dots as _>-<hash>.fifo`,
//! - group queue: `<last 28 of channel>--<last 28 of group>-<hash>.fifo`,
//! - private queue: `<last 42 of channel>-<random v7 uuid>.fifo`,
//!
//! where `<hash>` is the 64-bit FNV-1a of the exact original name(s), in hex: the readable
//! part may be cut or lossy, the hash keeps names apart (two names collide only if their
//! 64-bit hashes do).
//!
//! **Delivery guarantees.** Every group gets every message published after its queue exists
//! (SNS fan-out); the consumers of one group share its queue, each message going to one of
//! them; a group's queue keeps messages up to `retention_secs` (default 14 days, the SQS
//! maximum) while no consumer runs. SQS FIFO hands out a message group's messages only when
//! none of that group is in flight, which gives per-key order across competing consumers.
//!
//! **No replay.** SNS keeps nothing for queues that do not exist yet: a group that joins
//! late starts with the messages published after its queue was created, whatever its
//! [`crate::StartFrom`] (`Earliest` = everything the group's queue holds, which is everything
//! since the group first existed). Deployments create groups before producers start (that
//! is what `ensure_group` is for); the bus does it for the dead-letter group. (SNS FIFO
//! topics can archive and replay messages on AWS, but moto does not emulate it, so this
//! backend does not use it.)
//!
//! **Emulator (moto 5.1).** FIFO topics and queues, raw delivery from SNS to SQS,
//! deduplication and the one-group-in-flight rule all work in moto; queue policies are
//! accepted but not enforced. Subscription filter policies work too but are not needed: a
//! channel is a topic of its own. No deviation from the design was needed. One moto quirk:
//! a long poll that starts while a message group is in flight skips that group for its
//! whole wait, even after the messages are released, so on moto another consumer may take
//! over released messages only after up to `wait_time_secs`.
//!
//! **Limits to know.** A handler (with its retries) must finish within the visibility
//! timeout or its message is delivered again. Reply channels are topics of their own that
//! nobody deletes (the backend cannot tell that a channel is private to a process), and AWS
//! allows 1,000 FIFO topics per account by default: clean them up by name
//! (`…replies…`), or give the bus a way to drop its reply channel when it closes.

mod config;
mod names;
mod publisher;
mod subscriber;

use std::{
    collections::HashMap,
    fmt::Display,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_sns::{
    config::Credentials,
    error::{ProvideErrorMetadata, SdkError},
};
use aws_sdk_sqs::types::QueueAttributeName;

pub use self::config::SnsConfig;
use self::subscriber::{PrivateQueue, Queue, SqsConsumer};
use crate::sync::lock;
use crate::{Backend, BusError, Capabilities, Consumer, Envelope, Pattern, SubscribeOptions};

const NAME: &str = "sns";
/// How long a private queue keeps a message (its owner reads continuously).
const PRIVATE_RETENTION_SECS: u32 = 300;
/// Longest wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The SNS/SQS backend: an SNS client for topics, SQS clients for queues, and the names
/// already created.
pub struct SnsBackend {
    sns: aws_sdk_sns::Client,
    sqs: aws_sdk_sqs::Client,
    /// SQS client for long polls: its operation timeout leaves room for the wait.
    poll: aws_sdk_sqs::Client,
    config: SnsConfig,
    /// Channel → topic ARN.
    topics: Mutex<HashMap<String, Arc<str>>>,
    /// (channel, group) → queue URL of groups whose queue is created and subscribed.
    groups: Mutex<HashMap<(String, String), Arc<str>>>,
}

/// Maps an SDK failure: a refused request (bad parameter, missing permission, no such
/// topic) is permanent; throttling, server and network trouble are transient.
pub(super) fn service_error<E, R>(what: impl Display, error: &SdkError<E, R>) -> BusError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut message = format!("{what}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    let permanent = match error {
        SdkError::ConstructionFailure(_) => true,
        SdkError::ServiceError(e) => e.err().code().is_some_and(|code| !is_transient(code)),
        _ => false,
    };
    if permanent { BusError::permanent(NAME, message) } else { BusError::transient(NAME, message) }
}

fn is_transient(code: &str) -> bool {
    code.contains("Throttl")
        || matches!(
            code,
            "InternalError"
                | "InternalFailure"
                | "ServiceUnavailable"
                | "RequestTimeout"
                | "OverLimit"
                | "RequestLimitExceeded"
        )
}

/// Whether SQS answered that the queue does not exist.
fn is_missing_queue<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    matches!(error.code(), Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist"))
}

/// A queue this backend created (or found), with its ARN for the subscription.
struct CreatedQueue {
    url: Arc<str>,
    arn: String,
}

impl SnsBackend {
    /// Creates the clients and checks, within the operation timeout, that SNS and SQS answer.
    pub async fn connect(config: &SnsConfig) -> Result<Self, BusError> {
        config.validate()?;
        let operation = config.operation_timeout();
        let timeouts = |operation: Duration| {
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT.min(operation))
                .operation_timeout(operation)
                .build()
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .timeout_config(timeouts(operation));
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(id, secret, None, None, "messaging.sns"));
        }
        let sdk = loader.load().await;
        let long_poll = Duration::from_secs(u64::from(config.wait_time_secs)) + operation;
        let poll = aws_sdk_sqs::config::Builder::from(&sdk).timeout_config(timeouts(long_poll)).build();
        let backend = Self {
            sns: aws_sdk_sns::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            poll: aws_sdk_sqs::Client::from_conf(poll),
            config: config.clone(),
            topics: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
        };
        let target = config.target();
        // One attempt: a refused connection is reported at once, with its cause.
        match tokio::time::timeout(operation, backend.probe(RetryConfig::disabled())).await {
            Ok(Ok(())) => Ok(backend),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                Err(BusError::transient(NAME, format!("no answer from SNS/SQS at {target} within {operation:?}")))
            }
        }
    }

    /// A cheap call to each service (list one page of topics, one queue).
    async fn probe(&self, retry: RetryConfig) -> Result<(), BusError> {
        let target = self.config.target();
        let topics = self
            .sns
            .list_topics()
            .customize()
            .config_override(aws_sdk_sns::config::Builder::default().retry_config(retry.clone()))
            .send();
        let queues = self
            .sqs
            .list_queues()
            .max_results(1)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().retry_config(retry))
            .send();
        let (topics, queues) = tokio::join!(topics, queues);
        topics.map_err(|e| service_error(format!("SNS at {target}: list topics"), &e))?;
        queues.map_err(|e| service_error(format!("SQS at {target}: list queues"), &e))?;
        Ok(())
    }

    /// The ARN of `channel`'s topic, created if needed (CreateTopic is idempotent).
    async fn topic(&self, channel: &str) -> Result<Arc<str>, BusError> {
        if let Some(arn) = lock(&self.topics).get(channel) {
            return Ok(arn.clone());
        }
        let name = names::topic(channel);
        let output = self
            .sns
            .create_topic()
            .name(&name)
            .attributes("FifoTopic", "true")
            .attributes("ContentBasedDeduplication", "false")
            // Deduplicate per message group: FIFO high-throughput mode (ids are unique anyway).
            .attributes("FifoThroughputScope", "MessageGroup")
            .send()
            .await
            .map_err(|e| service_error(format!("create topic {name} for `{channel}`"), &e))?;
        let arn: Arc<str> = output
            .topic_arn
            .ok_or_else(|| BusError::transient(NAME, format!("create topic {name}: no ARN in the answer")))?
            .into();
        lock(&self.topics).insert(channel.to_owned(), arn.clone());
        Ok(arn)
    }

    /// Creates the FIFO queue `name` (or finds it) with a policy letting `topic_arn` send to it.
    async fn create_queue(
        &self,
        name: &str,
        topic_arn: &str,
        retention_secs: u32,
        private: bool,
    ) -> Result<CreatedQueue, BusError> {
        let arn = queue_arn(topic_arn, name)
            .ok_or_else(|| BusError::permanent(NAME, format!("unexpected topic ARN {topic_arn}")))?;
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "topic-sends",
                "Effect": "Allow",
                "Principal": { "Service": "sns.amazonaws.com" },
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": { "ArnEquals": { "aws:SourceArn": topic_arn } },
            }],
        });
        let mut request = self
            .sqs
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::VisibilityTimeout, self.config.visibility_timeout_secs.to_string())
            .attributes(QueueAttributeName::MessageRetentionPeriod, retention_secs.to_string())
            .attributes(QueueAttributeName::Policy, policy.to_string())
            // FIFO high-throughput mode: order and deduplication per message group.
            .attributes(QueueAttributeName::DeduplicationScope, "messageGroup")
            .attributes(QueueAttributeName::FifoThroughputLimit, "perMessageGroupId");
        if private {
            request = request.tags("petstore:private", "true");
        }
        let url = match request.send().await {
            Ok(output) => output.queue_url,
            // Created earlier with other settings (a changed visibility timeout): keep it.
            Err(e) if matches!(e.code(), Some("QueueAlreadyExists" | "QueueNameExists")) => {
                tracing::warn!(queue = name, "queue exists with other attributes; using it as it is");
                self.sqs
                    .get_queue_url()
                    .queue_name(name)
                    .send()
                    .await
                    .map_err(|e| service_error(format!("find queue {name}"), &e))?
                    .queue_url
            }
            Err(e) => return Err(service_error(format!("create queue {name}"), &e)),
        };
        let url = url.ok_or_else(|| BusError::transient(NAME, format!("create queue {name}: no URL in the answer")))?;
        Ok(CreatedQueue { url: url.into(), arn })
    }

    /// Subscribes the queue `queue_arn` to `topic_arn` with raw delivery (the body is the
    /// published message); idempotent. Returns the subscription ARN.
    async fn subscribe_queue(&self, topic_arn: &str, queue_arn: &str) -> Result<String, BusError> {
        let output = self
            .sns
            .subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .attributes("RawMessageDelivery", "true")
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(|e| service_error(format!("subscribe {queue_arn} to {topic_arn}"), &e))?;
        output.subscription_arn.ok_or_else(|| {
            BusError::transient(NAME, format!("subscribe {queue_arn}: no subscription ARN in the answer"))
        })
    }

    /// The URL of `group`'s queue on `channel`, created and subscribed if needed.
    async fn group_queue(&self, channel: &str, group: &str) -> Result<Arc<str>, BusError> {
        let key = (channel.to_owned(), group.to_owned());
        if let Some(url) = lock(&self.groups).get(&key) {
            return Ok(url.clone());
        }
        let topic = self.topic(channel).await?;
        let queue =
            self.create_queue(&names::group_queue(channel, group), &topic, self.config.retention_secs, false).await?;
        self.subscribe_queue(&topic, &queue.arn).await?;
        lock(&self.groups).insert(key, queue.url.clone());
        Ok(queue.url)
    }

    /// (waiting, in flight) messages of queue `name` at `url`, as SQS approximates them;
    /// `None` if the queue does not exist.
    async fn queue_counts(&self, url: &str, name: &str) -> Result<Option<(u64, u64)>, BusError> {
        let attributes = match self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
        {
            Ok(output) => output.attributes.unwrap_or_default(),
            Err(e) if is_missing_queue(&e) => return Ok(None),
            Err(e) => return Err(service_error(format!("attributes of queue {name}"), &e)),
        };
        let count = |attribute: QueueAttributeName| -> Result<u64, BusError> {
            let value = attributes.get(&attribute).map_or("0", String::as_str);
            value.parse().map_err(|e| {
                BusError::transient(NAME, format!("queue {name}: {} is `{value}`: {e}", attribute.as_str()))
            })
        };
        Ok(Some((
            count(QueueAttributeName::ApproximateNumberOfMessages)?,
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
        )))
    }

    /// Where a consumer of `url` reads, with this backend's settings.
    fn queue(&self, channel: &str, url: Arc<str>) -> Queue {
        Queue {
            sqs: self.sqs.clone(),
            poll: self.poll.clone(),
            url,
            channel: channel.to_owned(),
            wait_time_secs: i32::try_from(self.config.wait_time_secs).unwrap_or(1),
            visibility_timeout_secs: i32::try_from(self.config.visibility_timeout_secs).unwrap_or(30),
        }
    }
}

/// The ARN of queue `name` in the account and region of `topic_arn`
/// (`arn:<partition>:sns:<region>:<account>:<topic>`).
fn queue_arn(topic_arn: &str, name: &str) -> Option<String> {
    let parts: Vec<&str> = topic_arn.split(':').collect();
    match parts[..] {
        ["arn", partition, "sns", region, account, _] => Some(format!("arn:{partition}:sqs:{region}:{account}:{name}")),
        _ => None,
    }
}

#[async_trait]
impl Backend for SnsBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn remove(&self, channel: &str) -> Result<(), BusError> {
        // CreateTopic is idempotent: it finds the ARN of a topic this process did not create.
        let arn = self.topic(channel).await?;
        self.sns
            .delete_topic()
            .topic_arn(arn.as_ref())
            .send()
            .await
            .map_err(|e| service_error(format!("delete topic of `{channel}`"), &e))?;
        lock(&self.topics).remove(channel);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { patterns: Pattern::ALL, ordering_per_key: true, durable: true, replay: false, backlog: true }
    }

    async fn declare(&self, channel: &str, _partitions: u32) -> Result<(), BusError> {
        // Message groups, not partitions, carry the parallelism: nothing to size.
        self.topic(channel).await.map(|_| ())
    }

    async fn publish(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
        let topic = self.topic(channel).await?;
        let result = publisher::publish(&self.sns, &topic, channel, envelope).await;
        if result.is_err() {
            // The topic may have been deleted behind our back: look it up again next time.
            lock(&self.topics).remove(channel);
        }
        result
    }

    async fn ensure_group(&self, channel: &str, group: &str) -> Result<(), BusError> {
        self.group_queue(channel, group).await.map(|_| ())
    }

    async fn subscribe(&self, channel: &str, options: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError> {
        crate::backend::refuse_time_start(NAME, channel, options.start)?;
        if let Some(group) = &options.group {
            let url = self.group_queue(channel, group).await?;
            return Ok(Box::new(SqsConsumer::new(self.queue(channel, url), None)));
        }
        let topic = self.topic(channel).await?;
        let queue = self.create_queue(&names::private_queue(channel), &topic, PRIVATE_RETENTION_SECS, true).await?;
        match self.subscribe_queue(&topic, &queue.arn).await {
            Ok(subscription_arn) => {
                let private = PrivateQueue { sns: self.sns.clone(), subscription_arn };
                Ok(Box::new(SqsConsumer::new(self.queue(channel, queue.url), Some(private))))
            }
            Err(e) => {
                if let Err(cleanup) = self.sqs.delete_queue().queue_url(&*queue.url).send().await {
                    tracing::warn!(error = %service_error("delete private queue", &cleanup), "private queue left behind");
                }
                Err(e)
            }
        }
    }

    /// `ApproximateNumberOfMessages` (waiting) plus `ApproximateNumberOfMessagesNotVisible`
    /// (received, not deleted yet) of the group's queue: approximate, as SQS says, and
    /// settling within about a minute on AWS. A group whose queue does not exist holds
    /// nothing: 0.
    async fn backlog(&self, channel: &str, group: &str) -> Result<Option<u64>, BusError> {
        let known = lock(&self.groups).get(&(channel.to_owned(), group.to_owned())).cloned();
        let name = names::group_queue(channel, group);
        let url = match known {
            Some(url) => url.to_string(),
            None => match self.sqs.get_queue_url().queue_name(&name).send().await {
                Ok(found) => found
                    .queue_url
                    .ok_or_else(|| BusError::transient(NAME, format!("find queue {name}: no URL in the answer")))?,
                Err(e) if is_missing_queue(&e) => return Ok(Some(0)),
                Err(e) => return Err(service_error(format!("find queue {name}"), &e)),
            },
        };
        let counts = self.queue_counts(&url, &name).await?;
        Ok(Some(counts.map_or(0, |(waiting, in_flight)| waiting + in_flight)))
    }

    async fn health(&self) -> Result<(), BusError> {
        self.probe(RetryConfig::standard()).await
    }
}

#[cfg(test)]
mod tests;
