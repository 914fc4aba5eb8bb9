//! Kafka record → envelope, and the [`Consumer`] over an rdkafka `StreamConsumer`.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt as _;
use rdkafka::{
    consumer::{CommitMode, Consumer as _, StreamConsumer},
    error::KafkaError,
    message::Headers as _,
    types::RDKafkaErrorCode,
};
use tracing::{debug, warn};

use super::{
    NAME,
    publisher::{CE_PREFIX, CONTENT_TYPE},
};
use crate::{BusError, Consumer, Delivery, Envelope, backend::Receipt};

/// Rebuilds the envelope of a binary-mode record: `ce_*` headers are the attributes,
/// `content-type` the data content type, the value the data.
pub(super) fn decode<M: rdkafka::Message>(record: &M) -> Result<Envelope, BusError> {
    let mut attributes = Vec::new();
    let mut content_type = None;
    if let Some(headers) = record.headers() {
        for header in headers.iter() {
            let Some(value) = header.value else { continue };
            let value = std::str::from_utf8(value)
                .map_err(|e| BusError::Codec(format!("header `{}` is not UTF-8: {e}", header.key)))?;
            if let Some(name) = header.key.strip_prefix(CE_PREFIX) {
                attributes.push((name, value.to_owned()));
            } else if header.key.eq_ignore_ascii_case(CONTENT_TYPE) {
                content_type = Some(value.to_owned());
            }
        }
    }
    let data = Bytes::copy_from_slice(record.payload().unwrap_or_default());
    Envelope::from_attributes(attributes, content_type, data)
}

/// A record that is not a valid envelope.
/// A record that is not handed out: malformed (with the error), or older than the start
/// time of a group that was created to start at a time (no error).
struct Malformed {
    partition: i32,
    offset: i64,
    error: Option<BusError>,
}

/// One received record: a delivery, or a malformed record.
fn received<M: rdkafka::Message>(record: &M, skip_before_ms: Option<i64>) -> Result<Delivery, Malformed> {
    let (partition, offset) = (record.partition(), record.offset());
    if let (Some(start), Some(at)) = (skip_before_ms, record.timestamp().to_millis())
        && at < start
    {
        return Err(Malformed { partition, offset, error: None });
    }
    match decode(record) {
        Ok(envelope) => Ok(Delivery { envelope, receipt: Receipt::Kafka { partition, offset } }),
        Err(error) => Err(Malformed { partition, offset, error: Some(error) }),
    }
}

/// A consumer of one topic: in a consumer group (offsets stored on acknowledgement and
/// committed by auto-commit and on close), or private (partitions assigned directly,
/// nothing committed).
pub(super) struct KafkaConsumer {
    /// `None` only once closed.
    consumer: Option<StreamConsumer>,
    topic: String,
    grouped: bool,
    /// Received but not handed out yet (a cancelled `receive` leaves them here).
    ready: VecDeque<Delivery>,
    /// Per partition, deliveries received and not yet acknowledged.
    unacked: HashMap<i32, usize>,
    /// Per partition, the offset of a malformed record to store once the deliveries before
    /// it are acknowledged (storing it earlier would commit past them).
    skipped: HashMap<i32, i64>,
    /// For a group created to start at a time: records older than this (ms) are skipped, so
    /// the start holds even on brokers that do not look offsets up by timestamp.
    skip_before_ms: Option<i64>,
}

impl KafkaConsumer {
    pub(super) fn new(consumer: StreamConsumer, topic: &str, grouped: bool) -> Self {
        Self {
            consumer: Some(consumer),
            topic: topic.to_owned(),
            grouped,
            ready: VecDeque::new(),
            unacked: HashMap::new(),
            skipped: HashMap::new(),
            skip_before_ms: None,
        }
    }

    /// Skips records published before `start` (a new group started at a time).
    pub(super) fn starting_at(mut self, start: chrono::DateTime<chrono::Utc>) -> Self {
        self.skip_before_ms = Some(start.timestamp_millis());
        self
    }

    fn consumer(&self) -> Result<&StreamConsumer, BusError> {
        self.consumer.as_ref().ok_or(BusError::Closed)
    }

    /// Marks `offset` of `partition` processed: the group resumes after it.
    fn store(&self, partition: i32, offset: i64) -> Result<(), BusError> {
        if !self.grouped {
            return Ok(());
        }
        self.consumer()?.store_offset(&self.topic, partition, offset).map_err(|e| {
            BusError::transient(NAME, format!("store offset {offset} of `{}` [{partition}]: {e}", self.topic))
        })
    }

    fn accept(&mut self, received: Result<Delivery, Malformed>) {
        match received {
            Ok(delivery) => {
                if let &Receipt::Kafka { partition, .. } = &delivery.receipt {
                    *self.unacked.entry(partition).or_default() += 1;
                }
                self.ready.push_back(delivery);
            }
            Err(Malformed { partition, offset, error }) => {
                if let Some(error) = error {
                    warn!(topic = %self.topic, partition, offset, %error, "skipping a malformed record");
                    metrics::counter!("petstore_messages_malformed_total", "backend" => NAME, "topic" => self.topic.clone())
                        .increment(1);
                }
                if self.unacked.get(&partition).copied().unwrap_or(0) == 0 {
                    if let Err(e) = self.store(partition, offset) {
                        warn!(error = %e, "could not store the offset of a malformed record");
                    }
                } else {
                    self.skipped.insert(partition, offset);
                }
            }
        }
    }

    fn transient(&self, error: &KafkaError) -> BusError {
        BusError::transient(NAME, format!("consume `{}`: {error}", self.topic))
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn receive(&mut self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let max = max.max(1);
        // `recv` is cancel-safe (rdkafka: a record leaves librdkafka's queue only in the poll
        // that returns it), and a record goes to `ready` before the next await.
        while self.ready.is_empty() {
            let record = self.consumer()?.recv().await.map_err(|e| self.transient(&e))?;
            let received = received(&record, self.skip_before_ms);
            drop(record);
            self.accept(received);
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        while self.ready.len() < max {
            let consumer = self.consumer()?;
            let next = if max_wait.is_zero() {
                consumer.recv().now_or_never()
            } else {
                tokio::time::timeout_at(deadline, consumer.recv()).await.ok()
            };
            let received = match next {
                None => break,
                Some(Ok(record)) => received(&record, self.skip_before_ms),
                Some(Err(e)) => {
                    // Hand out what is there; a lasting failure shows on the next receive.
                    debug!(error = %e, topic = %self.topic, "consumer error while gathering a batch");
                    break;
                }
            };
            self.accept(received);
        }
        let n = max.min(self.ready.len());
        Ok(self.ready.drain(..n).collect())
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        let &Receipt::Kafka { partition, offset } = &delivery.receipt else {
            return Ok(());
        };
        let remaining = self.unacked.get_mut(&partition).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        // A malformed record before this one is covered by storing this one's offset.
        let skipped = self.skipped.get(&partition).copied();
        let skipped = match skipped {
            Some(skip) if skip < offset => {
                self.skipped.remove(&partition);
                None
            }
            other => other,
        };
        self.store(partition, offset)?;
        if let (Some(skip), Some(0)) = (skipped, remaining) {
            self.skipped.remove(&partition);
            self.store(partition, skip)?;
        }
        Ok(())
    }

    async fn close(mut self: Box<Self>) {
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        let grouped = self.grouped;
        let topic = self.topic.clone();
        let closing = tokio::task::spawn_blocking(move || {
            if grouped {
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(e) => {
                        warn!(error = %e, %topic, "final offset commit failed; uncommitted messages will be redelivered")
                    }
                }
            }
            // Blocks until the consumer has left its group.
            drop(consumer);
        });
        if let Err(e) = closing.await {
            warn!(error = %e, "closing the Kafka consumer failed");
        }
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // Dropping a consumer blocks until it has left the group: keep that off the runtime's
        // worker threads when dropped without `close`.
        if let Some(consumer) = self.consumer.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn_blocking(move || drop(consumer));
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::{
        Offset, TopicPartitionList,
        message::{Header, OwnedHeaders, OwnedMessage, Timestamp},
        producer::FutureRecord,
        util::Timeout,
    };

    use super::*;
    use crate::{
        Backend, MessageContext, StartFrom, SubscribeOptions,
        kafka::{KafkaBackend, KafkaConfig},
    };

    fn record(headers: OwnedHeaders, payload: &[u8]) -> OwnedMessage {
        let key = Some(b"k".to_vec());
        OwnedMessage::new(Some(payload.to_vec()), key, "t".into(), Timestamp::now(), 0, 7, Some(headers))
    }

    fn envelope(n: u32) -> Envelope {
        let message = contracts::inventory::GetPetStatus { pet_id: format!("pet-{n}") };
        Envelope::from_message("/petstore/test", &message, &MessageContext::default()).expect("encode")
    }

    /// The broker of `KAFKA_BROKERS` (default `127.0.0.1:9092`), tuned for tests.
    fn broker() -> KafkaConfig {
        let mut config = KafkaConfig::new(std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()));
        for (key, value) in
            [("fetch.wait.max.ms", "10"), ("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "1000")]
        {
            config.client.insert(key.into(), value.into());
        }
        config
    }

    /// The offset bus group `group` has committed on partition 0 of `topic`.
    async fn committed(group: &str, topic: &str) -> Offset {
        let mut config = broker().client_config();
        config.set("group.id", super::super::group_id(topic, group));
        let probe: rdkafka::consumer::BaseConsumer = config.create().expect("probe consumer");
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition(topic, 0);
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let committed = probe.committed_offsets(partitions, Duration::from_secs(10)).expect("committed offsets");
            committed.find_partition(&topic, 0).map(|p| p.offset()).expect("partition 0")
        })
        .await
        .expect("probe task")
    }

    /// Receives (without acknowledging) until `last` is in hand.
    async fn receive_through(consumer: &mut Box<dyn Consumer>, last: uuid::Uuid, max: usize) -> Vec<Delivery> {
        let mut got = Vec::new();
        while !got.iter().any(|d: &Delivery| d.envelope.id == last) {
            let batch =
                tokio::time::timeout(Duration::from_secs(30), consumer.receive(max, Duration::from_millis(200)))
                    .await
                    .expect("messages within 30 s")
                    .expect("receive");
            got.extend(batch);
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_records_are_skipped_and_committed_past_in_order() {
        let backend = KafkaBackend::connect(&broker()).await.expect("connect");
        let topic = format!("t{}.malformed", uuid::Uuid::now_v7().simple());
        backend.declare(&topic, 1).await.expect("declare");
        let garbage = || FutureRecord::<[u8], [u8]>::to(&topic).payload(b"not a CloudEvent");
        let produce_garbage = || async { backend.producer.send(garbage(), Timeout::Never).await.map_err(|(e, _)| e) };
        let valid: Vec<Envelope> = (0..4).map(envelope).collect();
        // Offsets: 0 valid0, 1 garbage, 2 valid1, 3 garbage, 4 valid2.
        backend.publish(&topic, &valid[0]).await.expect("publish");
        produce_garbage().await.expect("produce");
        backend.publish(&topic, &valid[1]).await.expect("publish");
        produce_garbage().await.expect("produce");
        backend.publish(&topic, &valid[2]).await.expect("publish");
        let group = format!("{topic}.group");
        let options = SubscribeOptions { group: Some(group.clone()), start: StartFrom::Earliest };

        // One at a time: each malformed record is read when nothing before it is pending, so
        // its offset is stored at once.
        let mut consumer = backend.subscribe(&topic, options.clone()).await.expect("subscribe");
        let mut ids = Vec::new();
        for _ in 0..3 {
            let delivery = receive_through(&mut consumer, valid[ids.len()].id, 1).await;
            let [delivery] = &delivery[..] else { panic!("one delivery at a time, got {}", delivery.len()) };
            ids.push(delivery.envelope.id);
            if ids.len() < 3 {
                consumer.ack(delivery).await.expect("ack");
            }
        }
        assert_eq!(ids, [valid[0].id, valid[1].id, valid[2].id], "the malformed records are skipped");
        consumer.close().await;
        assert_eq!(
            committed(&group, &topic).await,
            Offset::Offset(4),
            "past garbage 3, not past unacknowledged valid2"
        );

        // Offsets: 5 garbage, 6 valid3. Received in batches without acknowledging: the
        // malformed record behind the unacknowledged valid2 must not be committed.
        produce_garbage().await.expect("produce");
        backend.publish(&topic, &valid[3]).await.expect("publish");
        let mut consumer = backend.subscribe(&topic, options.clone()).await.expect("subscribe again");
        let got = receive_through(&mut consumer, valid[3].id, 10).await;
        assert_eq!(got.iter().map(|d| d.envelope.id).collect::<Vec<_>>(), [valid[2].id, valid[3].id]);
        consumer.ack(&got[0]).await.expect("ack valid2");
        consumer.close().await;
        assert_eq!(committed(&group, &topic).await, Offset::Offset(5), "valid3 is still unacknowledged");

        let mut consumer = backend.subscribe(&topic, options).await.expect("subscribe a third time");
        let got = receive_through(&mut consumer, valid[3].id, 10).await;
        assert_eq!(got.iter().map(|d| d.envelope.id).collect::<Vec<_>>(), [valid[3].id]);
        consumer.ack(&got[0]).await.expect("ack valid3");
        consumer.close().await;
        assert_eq!(committed(&group, &topic).await, Offset::Offset(7));
    }

    #[test]
    fn an_envelope_survives_the_record_round_trip() {
        let mut env = Envelope::from_message(
            "/petstore/test",
            &contracts::inventory::GetPetStatus { pet_id: "cat-1".into() },
            &MessageContext::correlated("corr-1"),
        )
        .expect("encode");
        env.reply_to = Some("replies.x".into());
        env.extensions.insert(crate::DLQ_ATTEMPTS.into(), "3".into());
        env.data_content_type = "application/cloudevents-test".into();
        let back = decode(&record(super::super::publisher::headers(&env), &env.data)).expect("decode");
        assert_eq!(back, env);
    }

    #[test]
    fn a_record_without_the_required_attributes_is_malformed() {
        let headers = OwnedHeaders::new().insert(Header { key: "ce_id", value: Some("not-a-uuid") });
        let err = decode(&record(headers, b"{}")).expect_err("must fail");
        assert!(matches!(err, BusError::Codec(_)), "{err}");
        let err = decode(&record(OwnedHeaders::new(), b"{}")).expect_err("must fail");
        assert!(err.to_string().contains("`id`"), "{err}");
    }

    #[test]
    fn a_header_that_is_not_utf8_is_malformed() {
        let headers = OwnedHeaders::new().insert(Header { key: "ce_source", value: Some(&[0xff_u8, 0xfe][..]) });
        let err = decode(&record(headers, b"{}")).expect_err("must fail");
        assert!(err.to_string().contains("ce_source"), "{err}");
    }
}
