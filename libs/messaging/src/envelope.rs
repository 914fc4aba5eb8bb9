use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use contracts::Message;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::BusError;

const JSON: &str = "application/json";

/// A message on the bus: CloudEvents 1.0 attributes, the petstore's tracing extensions, and
/// the payload.
///
/// On Kafka it travels in binary content mode (attributes as `ce_*` headers, `data` as the
/// value); in storage (outbox, dead letters) it is kept in the CloudEvents JSON format.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// `id`: unique per message; consumers deduplicate on it.
    pub id: Uuid,
    /// `source`: the producing service, e.g. `/petstore/order`.
    pub source: String,
    /// `type`: the versioned message type, e.g. `petstore.inventory.reserve-pet.v1`.
    pub event_type: String,
    /// `time`: when the message was created.
    pub time: DateTime<Utc>,
    /// `subject`: the entity the message is about (order id, pet id), if any.
    pub subject: Option<String>,
    /// `datacontenttype`: media type of `data`.
    pub data_content_type: String,
    /// `partitionkey` extension: messages with one key are delivered in order.
    pub partition_key: Option<String>,
    /// `correlationid` extension: shared by every message of one business flow (one order).
    pub correlation_id: Option<String>,
    /// `causationid` extension: the id of the message that caused this one.
    pub causation_id: Option<String>,
    /// `traceparent` extension: W3C trace context of the producer.
    pub traceparent: Option<String>,
    /// `replyto` extension: where the reply to a request goes.
    pub reply_to: Option<String>,
    /// Any other extension attributes (dead-letter details, for example).
    pub extensions: BTreeMap<String, String>,
    /// The payload.
    pub data: Bytes,
}

/// Where a new message comes from and what caused it: copied into the envelope so that a
/// whole flow shares one correlation id and each message names its cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageContext {
    /// The flow's correlation id.
    pub correlation_id: Option<String>,
    /// The id of the message being handled when this one is produced.
    pub causation_id: Option<String>,
    /// The W3C trace context of the message being handled; a new message continues its trace
    /// (or starts one when there is none).
    pub traceparent: Option<String>,
}

impl MessageContext {
    /// The context for messages produced while handling `cause`.
    pub fn caused_by(cause: &Envelope) -> Self {
        Self {
            correlation_id: cause.correlation_id.clone(),
            causation_id: Some(cause.id.to_string()),
            traceparent: cause.traceparent.clone(),
        }
    }

    /// A context that starts a flow with the given correlation id.
    pub fn correlated(correlation_id: impl Into<String>) -> Self {
        Self { correlation_id: Some(correlation_id.into()), ..Self::default() }
    }
}

impl Envelope {
    /// Wraps a typed message, keyed by [`Message::key`].
    pub fn from_message<M: Message>(source: &str, message: &M, ctx: &MessageContext) -> Result<Self, BusError> {
        let data = serde_json::to_vec(message).map_err(|e| BusError::Codec(e.to_string()))?;
        let key = message.key();
        Ok(Self {
            id: Uuid::now_v7(),
            source: source.to_owned(),
            event_type: M::TYPE.to_owned(),
            // Microseconds: what every transport and PostgreSQL keep, so a round trip is exact.
            time: Utc::now().trunc_subsecs(6),
            subject: Some(key.clone()),
            data_content_type: JSON.to_owned(),
            partition_key: Some(key),
            correlation_id: ctx.correlation_id.clone(),
            causation_id: ctx.causation_id.clone(),
            traceparent: Some(crate::trace::for_new_message(ctx.traceparent.as_deref())),
            reply_to: None,
            extensions: BTreeMap::new(),
            data: Bytes::from(data),
        })
    }

    /// What transports that deduplicate publishes (NATS `Nats-Msg-Id`, SNS
    /// `MessageDeduplicationId`) key them by: the id, qualified by the dead-lettering time of a
    /// dead letter ([`crate::DLQ_TIME`]) and the replay time of a replayed message
    /// ([`crate::REPLAYED_AT`]). A retried publish of one envelope is dropped as a duplicate;
    /// a dead letter or a replay of it, which keep its id, are not.
    pub fn publication_id(&self) -> String {
        let mut id = self.id.to_string();
        for name in [crate::REPLAYED_AT, crate::DLQ_TIME] {
            if let Some(at) = self.extensions.get(name) {
                id.push('/');
                id.push_str(at);
            }
        }
        id
    }

    /// Whether this envelope carries a `M`.
    pub fn is<M: Message>(&self) -> bool {
        self.event_type == M::TYPE
    }

    /// Decodes the payload as `M`, checking the type name first.
    pub fn decode<M: Message>(&self) -> Result<M, BusError> {
        if !self.is::<M>() {
            return Err(BusError::Codec(format!("expected {}, got {}", M::TYPE, self.event_type)));
        }
        serde_json::from_slice(&self.data).map_err(|e| BusError::Codec(format!("{}: {e}", self.event_type)))
    }

    /// The CloudEvents attributes and extensions as `(name, value)` pairs, `specversion`
    /// included; the binary-mode header set (without the `ce_` prefix).
    pub fn attributes(&self) -> Vec<(&str, String)> {
        let mut attrs = vec![
            ("id", self.id.to_string()),
            ("source", self.source.clone()),
            ("specversion", "1.0".to_owned()),
            ("type", self.event_type.clone()),
            ("time", self.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        ];
        let optional = [
            ("subject", &self.subject),
            ("partitionkey", &self.partition_key),
            ("correlationid", &self.correlation_id),
            ("causationid", &self.causation_id),
            ("traceparent", &self.traceparent),
            ("replyto", &self.reply_to),
        ];
        attrs.extend(optional.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k, v))));
        attrs.extend(self.extensions.iter().map(|(k, v)| (k.as_str(), v.clone())));
        attrs
    }

    /// Rebuilds an envelope from binary-mode attributes (names without the `ce_` prefix),
    /// its content type and its payload.
    pub fn from_attributes<'a>(
        attributes: impl IntoIterator<Item = (&'a str, String)>,
        data_content_type: Option<String>,
        data: Bytes,
    ) -> Result<Self, BusError> {
        let mut id = None;
        let mut source = None;
        let mut event_type = None;
        let mut time = None;
        let mut env = Self {
            id: Uuid::nil(),
            source: String::new(),
            event_type: String::new(),
            time: DateTime::<Utc>::MIN_UTC,
            subject: None,
            data_content_type: data_content_type.unwrap_or_else(|| JSON.to_owned()),
            partition_key: None,
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            reply_to: None,
            extensions: BTreeMap::new(),
            data,
        };
        for (name, value) in attributes {
            match name {
                "id" => id = Some(Uuid::parse_str(&value).map_err(|e| BusError::Codec(format!("id: {e}")))?),
                "source" => source = Some(value),
                "type" => event_type = Some(value),
                "time" => {
                    let t = DateTime::parse_from_rfc3339(&value).map_err(|e| BusError::Codec(format!("time: {e}")))?;
                    time = Some(t.with_timezone(&Utc));
                }
                "specversion" if value != "1.0" => {
                    return Err(BusError::Codec(format!("unsupported specversion {value}")));
                }
                "specversion" => {}
                "datacontenttype" => env.data_content_type = value,
                "subject" => env.subject = Some(value),
                "partitionkey" => env.partition_key = Some(value),
                "correlationid" => env.correlation_id = Some(value),
                "causationid" => env.causation_id = Some(value),
                "traceparent" => env.traceparent = Some(value),
                "replyto" => env.reply_to = Some(value),
                other => {
                    env.extensions.insert(other.to_owned(), value);
                }
            }
        }
        let missing = |what: &str| BusError::Codec(format!("missing required attribute `{what}`"));
        env.id = id.ok_or_else(|| missing("id"))?;
        env.source = source.ok_or_else(|| missing("source"))?;
        env.event_type = event_type.ok_or_else(|| missing("type"))?;
        env.time = time.ok_or_else(|| missing("time"))?;
        Ok(env)
    }

    /// The envelope in the CloudEvents JSON format (structured mode), for storage. JSON data
    /// is embedded as `data`; any other payload, including one labelled JSON that does not
    /// parse (a malformed message on its way to a dead-letter store, say), goes into
    /// `data_base64`, so that storing a message never fails on its payload.
    pub fn to_json(&self) -> Result<serde_json::Value, BusError> {
        let mut map = serde_json::Map::new();
        for (k, v) in self.attributes() {
            map.insert(k.to_owned(), serde_json::Value::String(v));
        }
        map.insert("datacontenttype".to_owned(), self.data_content_type.clone().into());
        let json = (self.data_content_type == JSON)
            .then(|| serde_json::from_slice::<&RawValue>(&self.data).ok())
            .flatten()
            .and_then(|data| serde_json::from_str::<serde_json::Value>(data.get()).ok());
        match json {
            Some(data) => map.insert("data".to_owned(), data),
            None => map
                .insert("data_base64".to_owned(), base64::engine::general_purpose::STANDARD.encode(&self.data).into()),
        };
        Ok(serde_json::Value::Object(map))
    }

    /// Reads an envelope back from the CloudEvents JSON format.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, BusError> {
        let serde_json::Value::Object(map) = value else {
            return Err(BusError::Codec("a CloudEvent must be a JSON object".to_owned()));
        };
        let mut data = Bytes::new();
        let mut attrs = Vec::with_capacity(map.len());
        for (k, v) in map {
            match (k.as_str(), v) {
                ("data", v) => data = Bytes::from(serde_json::to_vec(v).map_err(|e| BusError::Codec(e.to_string()))?),
                ("data_base64", serde_json::Value::String(s)) => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .map_err(|e| BusError::Codec(e.to_string()))?;
                    data = Bytes::from(raw);
                }
                (k, serde_json::Value::String(s)) => attrs.push((k, s.clone())),
                (k, _) => return Err(BusError::Codec(format!("attribute `{k}` must be a string"))),
            }
        }
        Self::from_attributes(attrs, None, data)
    }
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().map_err(serde::ser::Error::custom)?.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::from_json(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::{SagaRef, inventory::ReservePet};

    fn sample() -> Envelope {
        let msg = ReservePet {
            saga: SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() },
            pet_id: "goldfish-004".into(),
        };
        let mut env = Envelope::from_message("/petstore/orchestrator", &msg, &MessageContext::correlated("corr-1"))
            .expect("encode");
        env.extensions.insert(crate::DLQ_ATTEMPTS.into(), "3".into());
        env
    }

    #[test]
    fn structured_json_round_trips() {
        let env = sample();
        let json = env.to_json().expect("to json");
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "petstore.inventory.reserve-pet.v1");
        assert_eq!(json["data"]["pet_id"], "goldfish-004");
        let back = Envelope::from_json(&json).expect("from json");
        assert_eq!(back.decode::<ReservePet>().expect("decode"), env.decode::<ReservePet>().expect("decode"));
        assert_eq!(back.id, env.id);
        assert_eq!(back.correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(back.extensions, env.extensions);
        assert_eq!(back.time, env.time);
    }

    #[test]
    fn binary_attributes_round_trip() {
        let env = sample();
        let attrs: Vec<(String, String)> = env.attributes().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let back = Envelope::from_attributes(
            attrs.iter().map(|(k, v)| (k.as_str(), v.clone())),
            Some(JSON.into()),
            env.data.clone(),
        )
        .expect("from attributes");
        assert_eq!(back, env);
    }

    #[test]
    fn missing_required_attribute_is_named() {
        let err =
            Envelope::from_attributes([("id", Uuid::now_v7().to_string())], None, Bytes::new()).expect_err("must fail");
        assert!(err.to_string().contains("`source`"), "{err}");
    }

    #[test]
    fn a_payload_that_is_not_the_json_it_claims_to_be_is_stored_as_base64() {
        let mut env = sample();
        env.data = Bytes::from_static(b"{not json");
        let json = env.to_json().expect("to json");
        assert_eq!(json["data_base64"], "e25vdCBqc29u");
        let back = Envelope::from_json(&json).expect("from json");
        assert_eq!((back.data, back.data_content_type), (env.data, env.data_content_type));
    }

    #[test]
    fn decoding_the_wrong_type_is_refused() {
        let err = sample().decode::<contracts::inventory::ReleasePet>().expect_err("must fail");
        assert!(err.to_string().contains("expected petstore.inventory.release-pet.v1"), "{err}");
    }
}
