//! Envelope → Kafka record (CloudEvents Kafka protocol binding, binary content mode) and
//! producing it.

use std::time::Duration;

use rdkafka::{
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    types::RDKafkaErrorCode,
    util::Timeout,
};

use super::NAME;
use crate::{BusError, Envelope};

/// Prefix of the headers that carry CloudEvents attributes.
pub(super) const CE_PREFIX: &str = "ce_";
/// The header that carries `datacontenttype`.
pub(super) const CONTENT_TYPE: &str = "content-type";

/// The record headers of `envelope`: every attribute as `ce_<name>`, the content type as
/// `content-type`.
pub(super) fn headers(envelope: &Envelope) -> OwnedHeaders {
    let attributes = envelope.attributes();
    let mut headers = OwnedHeaders::new_with_capacity(attributes.len() + 1);
    for (name, value) in &attributes {
        let key = format!("{CE_PREFIX}{name}");
        headers = headers.insert(Header { key: &key, value: Some(value.as_bytes()) });
    }
    headers.insert(Header { key: CONTENT_TYPE, value: Some(envelope.data_content_type.as_bytes()) })
}

/// Produces `envelope` to `topic` (key = partition key, value = data) and waits for the
/// broker's acknowledgement.
pub(super) async fn publish(
    producer: &FutureProducer,
    topic: &str,
    envelope: &Envelope,
    queue_timeout: Duration,
) -> Result<(), BusError> {
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(&envelope.data[..]).headers(headers(envelope));
    if let Some(key) = &envelope.partition_key {
        record = record.key(key.as_bytes());
    }
    match producer.send(record, Timeout::After(queue_timeout)).await {
        Ok(_) => Ok(()),
        Err((error, _)) => Err(produce_error(topic, &error)),
    }
}

/// Maps a produce failure: what no retry can fix is permanent, anything else transient.
fn produce_error(topic: &str, error: &KafkaError) -> BusError {
    let message = format!("publish to `{topic}`: {error}");
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRequiredAcks
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed,
        ) => BusError::permanent(NAME, message),
        _ => BusError::transient(NAME, message),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn too_large_is_permanent_and_a_timeout_transient() {
        let large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(!produce_error("t", &large).is_retriable());
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        let err = produce_error("t", &timeout);
        assert!(err.is_retriable());
        assert!(err.to_string().contains("`t`"), "{err}");
    }

    #[test]
    fn every_attribute_becomes_a_ce_header() {
        let mut env = Envelope::from_message(
            "/petstore/test",
            &contracts::inventory::GetPetStatus { pet_id: "cat-1".into() },
            &crate::MessageContext::correlated("corr"),
        )
        .expect("encode");
        env.extensions.insert("custom".into(), "x".into());
        let headers = headers(&env);
        let names: Vec<&str> = headers.iter().map(|h| h.key).collect();
        for expected in [
            "ce_id",
            "ce_source",
            "ce_specversion",
            "ce_type",
            "ce_time",
            "ce_subject",
            "ce_partitionkey",
            "ce_correlationid",
            "ce_custom",
            "content-type",
        ] {
            assert!(names.contains(&expected), "{expected} missing from {names:?}");
        }
        let content_type = headers.iter().find(|h| h.key == CONTENT_TYPE).and_then(|h| h.value);
        assert_eq!(content_type, Some(&b"application/json"[..]));
    }
}
