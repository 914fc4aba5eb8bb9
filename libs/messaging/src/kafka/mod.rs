//! Kafka backend (any Kafka-protocol broker) through rdkafka.
//!
//! Envelopes travel in the CloudEvents Kafka binding's binary content mode: attributes as
//! `ce_*` headers, `datacontenttype` as `content-type`, the partition key as the record key
//! (so one key stays on one partition, in order) and the data as the value.
//!
//! One idempotent producer (`acks=all`) per backend. A group subscription is a consumer in
//! the Kafka consumer group `<group>.<topic>` with offsets stored on acknowledgement only and
//! committed by auto-commit and on close: at-least-once. A private subscription (reply
//! channels) assigns itself every partition and commits nothing.
//!
//! One Kafka group per bus group *and topic*: a service consumes several channels under one
//! group name, and a Kafka group spanning topics makes every member that joins or leaves —
//! each consumer of each channel, one after another at every restart — stop the whole group
//! for a rebalance, and a member that leaves mid-rebalance can stall it until the rebalance
//! timeout.

mod config;
mod publisher;
mod subscriber;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer as _, StreamConsumer},
    error::KafkaError,
    producer::{FutureProducer, Producer as _},
    types::RDKafkaErrorCode,
};

pub use self::config::KafkaConfig;
use crate::{Backend, BusError, Capabilities, Consumer, Envelope, Pattern, StartFrom, SubscribeOptions};

const NAME: &str = "kafka";

/// The Kafka backend: one producer and one admin client, plus a consumer per subscription.
pub struct KafkaBackend {
    config: KafkaConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Topics this backend created or found existing.
    declared: Mutex<HashSet<String>>,
    /// Per consumer group, a client that reads the group's committed offsets for
    /// [`Backend::backlog`] (it never joins the group).
    offset_readers: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

fn client_error(what: &str, error: &KafkaError) -> BusError {
    BusError::transient(NAME, format!("{what}: {error}"))
}

impl KafkaBackend {
    /// Creates the clients and checks that the cluster answers within the operation timeout.
    pub async fn connect(config: &KafkaConfig) -> Result<Self, BusError> {
        let mut producer = config.client_config();
        producer.set("enable.idempotence", "true").set("acks", "all");
        let producer: FutureProducer = producer.create().map_err(|e| Self::config_error("producer", &e))?;
        let admin: AdminClient<DefaultClientContext> =
            config.client_config().create().map_err(|e| Self::config_error("admin client", &e))?;
        let backend = Self {
            config: config.clone(),
            producer,
            admin,
            declared: Mutex::new(HashSet::new()),
            offset_readers: Mutex::new(HashMap::new()),
        };
        backend.health().await?;
        Ok(backend)
    }

    fn config_error(client: &str, error: &KafkaError) -> BusError {
        BusError::Config(format!("messaging.kafka: cannot create the {client}: {error}"))
    }

    fn declared(&self) -> MutexGuard<'_, HashSet<String>> {
        // Nothing panics while holding this lock; recover the set if anything ever did.
        self.declared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The partition count of `topic`, waiting (up to the operation timeout) for a topic
    /// created a moment ago to show in the metadata.
    async fn partition_count(&self, topic: &str) -> Result<i32, BusError> {
        let producer = self.producer.clone();
        let topic = topic.to_owned();
        let timeout = self.config.operation_timeout();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let problem = match producer.client().fetch_metadata(Some(&topic), remaining) {
                    Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
                        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                            return i32::try_from(t.partitions().len())
                                .map_err(|e| BusError::permanent(NAME, format!("partitions of `{topic}`: {e}")));
                        }
                        Some(t) => format!("topic error {:?}", t.error()),
                        None => "topic not in the metadata".to_owned(),
                    },
                    Err(e) => e.to_string(),
                };
                if Instant::now() >= deadline {
                    return Err(BusError::transient(NAME, format!("metadata of `{topic}`: {problem}")));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
        .await
        .map_err(|e| BusError::transient(NAME, format!("metadata task: {e}")))?
    }

    /// The same position on every partition of `channel`.
    fn positions(&self, channel: &str, partitions: i32, offset: Offset) -> Result<TopicPartitionList, BusError> {
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions {
            list.add_partition_offset(channel, partition, offset)
                .map_err(|e| client_error(&format!("positions of `{channel}`"), &e))?;
        }
        Ok(list)
    }

    /// Per partition, the offset of the first message at or after `t` (the end where none is).
    async fn offsets_at(
        &self,
        channel: &str,
        partitions: i32,
        t: DateTime<Utc>,
    ) -> Result<TopicPartitionList, BusError> {
        let query = self.positions(channel, partitions, Offset::Offset(t.timestamp_millis()))?;
        let config = self.config.client_config();
        let timeout = self.config.operation_timeout();
        let channel = channel.to_owned();
        tokio::task::spawn_blocking(move || {
            let probe: BaseConsumer = config.create().map_err(|e| Self::config_error("consumer", &e))?;
            let found = probe
                .offsets_for_times(query, timeout)
                .map_err(|e| client_error(&format!("find the offsets of `{channel}` at a time"), &e))?;
            for mut element in found.elements() {
                if !matches!(element.offset(), Offset::Offset(_)) {
                    let (_, high) = probe
                        .fetch_watermarks(&channel, element.partition(), timeout)
                        .map_err(|e| client_error(&format!("watermarks of `{channel}`"), &e))?;
                    let _ = element.set_offset(Offset::Offset(high));
                }
            }
            Ok(found)
        })
        .await
        .map_err(|e| BusError::transient(NAME, format!("offset lookup task: {e}")))?
    }

    /// Per partition, the offset the next message will get (the high watermark).
    async fn end_offsets(&self, channel: &str, partitions: i32) -> Result<TopicPartitionList, BusError> {
        let config = self.config.client_config();
        let timeout = self.config.operation_timeout();
        let channel = channel.to_owned();
        tokio::task::spawn_blocking(move || {
            let probe: BaseConsumer = config.create().map_err(|e| Self::config_error("consumer", &e))?;
            let mut list = TopicPartitionList::new();
            for partition in 0..partitions {
                let (_, high) = probe
                    .fetch_watermarks(&channel, partition, timeout)
                    .map_err(|e| client_error(&format!("watermarks of `{channel}`"), &e))?;
                list.add_partition_offset(&channel, partition, Offset::Offset(high))
                    .map_err(|e| client_error(&format!("positions of `{channel}`"), &e))?;
            }
            Ok(list)
        })
        .await
        .map_err(|e| BusError::transient(NAME, format!("offset lookup task: {e}")))?
    }

    /// Commits the offsets at `t` for `group` if the group has committed nothing yet, so that
    /// a new group starts there; an existing group keeps its position. Returns whether the
    /// group was new.
    async fn start_new_group_at(
        &self,
        channel: &str,
        group: &str,
        partitions: i32,
        t: DateTime<Utc>,
    ) -> Result<bool, BusError> {
        let positions = self.offsets_at(channel, partitions, t).await?;
        let all = self.positions(channel, partitions, Offset::Invalid)?;
        let mut config = self.config.client_config();
        config.set("group.id", group_id(channel, group)).set("enable.auto.commit", "false");
        let timeout = self.config.operation_timeout();
        let channel = channel.to_owned();
        tokio::task::spawn_blocking(move || {
            let probe: BaseConsumer = config.create().map_err(|e| Self::config_error("consumer", &e))?;
            let committed = probe
                .committed_offsets(all, timeout)
                .map_err(|e| client_error(&format!("committed offsets of `{channel}`"), &e))?;
            if committed.elements().iter().any(|e| matches!(e.offset(), Offset::Offset(_))) {
                return Ok(false);
            }
            probe
                .commit(&positions, rdkafka::consumer::CommitMode::Sync)
                .map_err(|e| client_error(&format!("start `{channel}` at a time"), &e))?;
            Ok(true)
        })
        .await
        .map_err(|e| BusError::transient(NAME, format!("offset commit task: {e}")))?
    }

    /// The offset reader of `group`, created on first use. It asks for metadata without
    /// auto-creating topics, so measuring a topic never creates it.
    fn offset_reader(&self, group: &str) -> Result<Arc<BaseConsumer>, BusError> {
        let mut readers = self.offset_readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reader) = readers.get(group) {
            return Ok(reader.clone());
        }
        let mut config = self.config.client_config();
        config.set("group.id", group).set("enable.auto.commit", "false").set("allow.auto.create.topics", "false");
        let reader: Arc<BaseConsumer> = Arc::new(config.create().map_err(|e| Self::config_error("offset reader", &e))?);
        readers.insert(group.to_owned(), reader.clone());
        Ok(reader)
    }

    /// High watermark minus the group's committed offset (the low watermark where it has
    /// committed nothing, or committed below what is retained), summed over the partitions.
    fn lag(reader: &BaseConsumer, topic: &str, timeout: std::time::Duration) -> Result<u64, BusError> {
        // The reader is never polled otherwise: drain the errors and logs queued for it.
        while reader.poll(std::time::Duration::ZERO).is_some() {}
        let metadata = reader
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| client_error(&format!("metadata of `{topic}`"), &e))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(0);
        };
        match found.error().map(RDKafkaErrorCode::from) {
            None => {}
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Ok(0),
            Some(code) => return Err(BusError::transient(NAME, format!("metadata of `{topic}`: {code}"))),
        }
        let mut partitions = TopicPartitionList::new();
        for p in found.partitions() {
            partitions.add_partition(topic, p.id());
        }
        let committed = reader
            .committed_offsets(partitions, timeout)
            .map_err(|e| client_error(&format!("committed offsets of `{topic}`"), &e))?;
        let mut lag = 0;
        for p in found.partitions() {
            let (low, high) = reader
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(|e| client_error(&format!("watermarks of `{topic}` [{}]", p.id()), &e))?;
            let from = match committed.find_partition(topic, p.id()).map(|e| e.offset()) {
                Some(Offset::Offset(committed)) => committed.max(low),
                _ => low,
            };
            lag += u64::try_from(high - from).unwrap_or(0);
        }
        Ok(lag)
    }

    fn consumer_config(&self, start: StartFrom) -> ClientConfig {
        let mut config = self.config.client_config();
        let reset = match start {
            StartFrom::Earliest | StartFrom::Time(_) => "earliest",
            StartFrom::Latest => "latest",
        };
        config.set("auto.offset.reset", reset).set("enable.auto.offset.store", "false");
        config
    }
}

#[async_trait]
impl Backend for KafkaBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { patterns: Pattern::ALL, ordering_per_key: true, durable: true, replay: true, backlog: true }
    }

    async fn remove(&self, channel: &str) -> Result<(), BusError> {
        let timeout = self.config.operation_timeout();
        let options = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
        let results = self
            .admin
            .delete_topics(&[channel], &options)
            .await
            .map_err(|e| client_error(&format!("delete topic `{channel}`"), &e))?;
        self.declared().remove(channel);
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((name, code)) => return Err(BusError::transient(NAME, format!("delete topic `{name}`: {code}"))),
            }
        }
        Ok(())
    }

    async fn declare(&self, channel: &str, partitions: u32) -> Result<(), BusError> {
        if self.declared().contains(channel) {
            return Ok(());
        }
        let partitions = i32::try_from(partitions)
            .map_err(|_| BusError::Config(format!("topic `{channel}`: {partitions} partitions is too many")))?;
        let topic = NewTopic::new(channel, partitions, TopicReplication::Fixed(self.config.replication_factor));
        let timeout = self.config.operation_timeout();
        let options = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
        let results = self
            .admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| client_error(&format!("create topic `{channel}`"), &e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    let message = format!("create topic `{name}`: {code}");
                    return Err(match code {
                        RDKafkaErrorCode::InvalidTopic
                        | RDKafkaErrorCode::InvalidPartitions
                        | RDKafkaErrorCode::InvalidReplicationFactor
                        | RDKafkaErrorCode::PolicyViolation
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::ClusterAuthorizationFailed => BusError::permanent(NAME, message),
                        _ => BusError::transient(NAME, message),
                    });
                }
            }
        }
        self.declared().insert(channel.to_owned());
        Ok(())
    }

    async fn publish(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
        publisher::publish(&self.producer, channel, envelope, self.config.operation_timeout()).await
    }

    async fn subscribe(&self, channel: &str, options: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError> {
        let mut config = self.consumer_config(options.start);
        let mut skip_before = match options.start {
            StartFrom::Time(t) if options.group.is_none() => Some(t),
            _ => None,
        };
        let consumer = match &options.group {
            Some(group) => {
                if let StartFrom::Time(t) = options.start {
                    let partitions = self.partition_count(channel).await?;
                    if self.start_new_group_at(channel, group, partitions, t).await? {
                        skip_before = Some(t);
                    }
                }
                config.set("group.id", group_id(channel, group)).set("enable.auto.commit", "true");
                let consumer: StreamConsumer = config.create().map_err(|e| Self::config_error("consumer", &e))?;
                consumer.subscribe(&[channel]).map_err(|e| client_error(&format!("subscribe to `{channel}`"), &e))?;
                consumer
            }
            None => {
                let partitions = self.partition_count(channel).await?;
                // No group coordination: the id only has to be unique, nothing is committed.
                let group = format!("private.{}", uuid::Uuid::now_v7().simple());
                config.set("group.id", group).set("enable.auto.commit", "false");
                let consumer: StreamConsumer = config.create().map_err(|e| Self::config_error("consumer", &e))?;
                let assignment = match options.start {
                    StartFrom::Earliest => self.positions(channel, partitions, Offset::Beginning)?,
                    // Resolved to concrete offsets now: `Offset::End` would be resolved at
                    // the first fetch, and what is published until then would be skipped.
                    StartFrom::Latest => self.end_offsets(channel, partitions).await?,
                    StartFrom::Time(t) => self.offsets_at(channel, partitions, t).await?,
                };
                consumer.assign(&assignment).map_err(|e| client_error(&format!("assign `{channel}`"), &e))?;
                consumer
            }
        };
        let consumer = subscriber::KafkaConsumer::new(consumer, channel, options.group.is_some());
        Ok(Box::new(match skip_before {
            Some(t) => consumer.starting_at(t),
            None => consumer,
        }))
    }

    /// The group's lag from the committed offsets: acknowledged messages leave it once
    /// committed (auto-commit, every `auto.commit.interval.ms`, and on close). A group with no
    /// committed offset counts from the low watermark; a topic that does not exist, 0.
    async fn backlog(&self, channel: &str, group: &str) -> Result<Option<u64>, BusError> {
        let reader = self.offset_reader(&group_id(channel, group))?;
        let timeout = self.config.operation_timeout();
        let topic = channel.to_owned();
        tokio::task::spawn_blocking(move || Self::lag(&reader, &topic, timeout).map(Some))
            .await
            .map_err(|e| BusError::transient(NAME, format!("backlog task: {e}")))?
    }

    async fn health(&self) -> Result<(), BusError> {
        let producer = self.producer.clone();
        let timeout = self.config.operation_timeout();
        let brokers = self.config.brokers.clone();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout))
            .await
            .map_err(|e| BusError::transient(NAME, format!("health task: {e}")))?
            .map(|_| ())
            .map_err(|e| client_error(&format!("metadata from {brokers}"), &e))
    }
}

/// The Kafka consumer group of bus group `group` on `topic` (see the module's doc).
fn group_id(topic: &str, group: &str) -> String {
    format!("{group}.{topic}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn measuring_the_backlog_of_a_missing_topic_does_not_create_it() {
        let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let backend = KafkaBackend::connect(&KafkaConfig::new(brokers)).await.expect("connect");
        let topic = format!("t{}.never-declared", uuid::Uuid::now_v7().simple());
        assert_eq!(backend.backlog(&topic, "g").await.expect("backlog"), Some(0));

        let producer = backend.producer.clone();
        let timeout = backend.config.operation_timeout();
        let names: Vec<String> =
            tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout).expect("metadata"))
                .await
                .expect("metadata task")
                .topics()
                .iter()
                .map(|t| t.name().to_owned())
                .collect();
        assert!(!names.contains(&topic), "`{topic}` was created by measuring it");
    }
}
