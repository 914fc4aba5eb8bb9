//! Envelope → SNS message (a structured-mode CloudEvent) and publishing it to a FIFO topic.

use std::{borrow::Cow, collections::BTreeMap};

use aws_sdk_sns::Client;
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use serde_json::value::RawValue;

use super::{NAME, names, service_error};
use crate::{BusError, Envelope};

/// The largest message SNS accepts (256 KiB).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The media type whose data travels as JSON (`data`) rather than base64 (`data_base64`).
const JSON: &str = "application/json";

/// The message body of `envelope`: the CloudEvents JSON format, every attribute and the data
/// in one document (SNS allows only 10 message attributes, too few for binary mode).
///
/// Unlike [`Envelope::to_json`], JSON data is embedded verbatim (not re-serialised, which
/// would reorder its keys), so the data comes back byte for byte; data that is not exactly
/// one JSON value travels as `data_base64`.
pub(super) fn body(envelope: &Envelope) -> Result<String, BusError> {
    let mut event: BTreeMap<&str, Cow<'_, RawValue>> = BTreeMap::new();
    let attributes = envelope.attributes();
    let content_type = ("datacontenttype", envelope.data_content_type.clone());
    for (name, value) in attributes.iter().chain([&content_type]) {
        event.insert(name, Cow::Owned(json_raw(value)?));
    }
    let verbatim = (envelope.data_content_type == JSON)
        .then(|| serde_json::from_slice::<&RawValue>(&envelope.data).ok())
        .flatten()
        .filter(|raw| raw.get().len() == envelope.data.len());
    match verbatim {
        Some(raw) => event.insert("data", Cow::Borrowed(raw)),
        None => event.insert("data_base64", Cow::Owned(json_raw(&BASE64.encode(&envelope.data))?)),
    };
    serde_json::to_string(&event).map_err(|e| BusError::Codec(e.to_string()))
}

fn json_raw(value: &str) -> Result<Box<RawValue>, BusError> {
    serde_json::value::to_raw_value(value).map_err(|e| BusError::Codec(e.to_string()))
}

/// Reads an envelope back from a message body.
pub(super) fn decode(body: &str) -> Result<Envelope, BusError> {
    let event: BTreeMap<String, &RawValue> =
        serde_json::from_str(body).map_err(|e| BusError::Codec(format!("not a JSON CloudEvent: {e}")))?;
    let mut data = Bytes::new();
    let mut attributes = Vec::with_capacity(event.len());
    for (name, value) in &event {
        match name.as_str() {
            "data" => data = Bytes::copy_from_slice(value.get().as_bytes()),
            name => {
                let text: String = serde_json::from_str(value.get())
                    .map_err(|_| BusError::Codec(format!("attribute `{name}` must be a string")))?;
                if name == "data_base64" {
                    data = Bytes::from(BASE64.decode(text).map_err(|e| BusError::Codec(format!("data_base64: {e}")))?);
                } else {
                    attributes.push((name, text));
                }
            }
        }
    }
    Envelope::from_attributes(attributes, None, data)
}

/// Publishes `envelope` to the FIFO topic `topic_arn`: message group = partition key,
/// deduplication id = the envelope's publication id. SNS answers once it has stored the message.
pub(super) async fn publish(sns: &Client, topic_arn: &str, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
    let body = body(envelope)?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(BusError::permanent(
            NAME,
            format!(
                "publish to `{channel}`: message {} is {} bytes, SNS takes at most 256 KiB",
                envelope.id,
                body.len()
            ),
        ));
    }
    sns.publish()
        .topic_arn(topic_arn)
        .message(body)
        .message_group_id(names::message_group(envelope))
        .message_deduplication_id(envelope.publication_id())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| service_error(format!("publish to `{channel}`"), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_survives_the_body_round_trip() {
        let mut env = Envelope::from_message(
            "/petstore/test",
            &contracts::inventory::GetPetStatus { pet_id: "cat-1".into() },
            &crate::MessageContext::correlated("corr-1"),
        )
        .expect("encode");
        env.reply_to = Some("replies.x".into());
        env.causation_id = Some("cause".into());
        env.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        for n in 0..12 {
            env.extensions.insert(format!("ext{n}"), format!("value {n}"));
        }
        assert_eq!(decode(&body(&env).expect("body")).expect("decode"), env);

        // JSON data comes back byte for byte: key order and spacing are kept.
        env.data = bytes::Bytes::from_static(br#"{"zebra": 1,"apple":[true, null]}"#);
        let text = body(&env).expect("body");
        assert!(text.contains(r#""data":{"zebra": 1,"apple":[true, null]}"#), "{text}");
        assert_eq!(decode(&text).expect("decode"), env);
        // Not exactly one JSON value: base64.
        env.data = bytes::Bytes::from_static(b"{} ");
        let text = body(&env).expect("body");
        assert!(text.contains("data_base64"), "{text}");
        assert_eq!(decode(&text).expect("decode"), env);

        env.data_content_type = "application/octet-stream".into();
        env.data = bytes::Bytes::from_static(&[0, 159, 146, 150]);
        assert_eq!(decode(&body(&env).expect("body")).expect("decode"), env);
    }

    #[test]
    fn a_body_that_is_not_a_cloudevent_is_a_codec_error() {
        for body in ["", "not json", "[]", r#"{"id":"x"}"#, r#"{"source":1}"#] {
            let err = decode(body).expect_err(body);
            assert!(matches!(err, BusError::Codec(_)), "{body}: {err}");
        }
    }
}
