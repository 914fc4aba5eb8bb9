//! Envelope → NATS message (CloudEvents binary mode over headers) and publishing it to a
//! channel's stream.

use std::{borrow::Cow, fmt::Write as _, str::FromStr};

use async_nats::{
    HeaderMap, HeaderName, HeaderValue,
    jetstream::{self, context::PublishErrorKind},
};

use super::{NatsConfig, failure, physical_name};
use crate::{BusError, Envelope};

/// Prefix of the headers that carry CloudEvents attributes.
pub(super) const CE_PREFIX: &str = "ce_";
/// The header that carries `datacontenttype`.
pub(super) const CONTENT_TYPE: &str = "content-type";

/// `value` made safe for a NATS header: `%`, control characters (line breaks among them) and
/// leading or trailing whitespace (which the protocol trims) are percent-encoded as UTF-8.
pub(super) fn encode_value(value: &str) -> Cow<'_, str> {
    let first_kept = value.find(|c: char| !c.is_whitespace()).unwrap_or(value.len());
    let last_kept = value.trim_end().len().max(first_kept);
    let needs = |i: usize, c: char| c == '%' || c.is_control() || i < first_kept || i >= last_kept;
    if !value.char_indices().any(|(i, c)| needs(i, c)) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for (i, c) in value.char_indices() {
        if needs(i, c) {
            let mut utf8 = [0; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                let _ = write!(out, "%{byte:02X}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The message headers of `envelope`: every attribute as `ce_<name>`, the content type as
/// `content-type`.
pub(super) fn headers(envelope: &Envelope) -> Result<HeaderMap, BusError> {
    let mut headers = HeaderMap::new();
    let attributes = envelope.attributes();
    let pairs = attributes
        .iter()
        .map(|(name, value)| (Cow::Owned(format!("{CE_PREFIX}{name}")), value.as_str()))
        .chain([(Cow::Borrowed(CONTENT_TYPE), envelope.data_content_type.as_str())]);
    for (name, value) in pairs {
        let header = HeaderName::from_str(&name)
            .map_err(|_| BusError::Codec(format!("attribute `{name}` cannot be a NATS header name")))?;
        let value = HeaderValue::from_str(&encode_value(value))
            .map_err(|_| BusError::Codec(format!("attribute `{name}` cannot be a NATS header value")))?;
        headers.insert(header, value);
    }
    Ok(headers)
}

/// Publishes `envelope` to `channel`'s stream and waits for the stream's acknowledgement.
pub(super) async fn publish(
    jetstream: &jetstream::Context,
    channel: &str,
    envelope: &Envelope,
    config: &NatsConfig,
) -> Result<(), BusError> {
    let stream = physical_name(channel);
    let message = jetstream::message::PublishMessage::build()
        .headers(headers(envelope)?)
        .payload(envelope.data.clone())
        .message_id(envelope.publication_id())
        .expected_stream(&stream);
    let what = || format!("publish to `{channel}`");
    // Both steps are bounded by the client's request timeout (`request_timeout_ms`).
    let ack =
        jetstream.send_publish(channel.to_owned(), message).await.map_err(|e| publish_error(config, &what(), &e))?;
    let ack = ack.await.map_err(|e| publish_error(config, &what(), &e))?;
    if ack.duplicate {
        tracing::debug!(message = %envelope.id, channel, "already stored within the duplicate window");
    }
    Ok(())
}

/// Maps a publish failure: no stream for the channel and a message the server will never
/// take are permanent, anything else (timeouts, a lost connection) transient.
fn publish_error(config: &NatsConfig, what: &str, error: &jetstream::context::PublishError) -> BusError {
    match error.kind() {
        PublishErrorKind::StreamNotFound => failure(config, what, format!("{error} (is the channel declared?)"), false),
        PublishErrorKind::MaxPayloadExceeded => failure(config, what, error, false),
        _ => failure(config, what, error, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageContext;

    #[test]
    fn plain_values_travel_as_they_are() {
        for plain in ["", "a", "database unavailable", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "é ü"]
        {
            assert!(matches!(encode_value(plain), Cow::Borrowed(_)), "{plain}");
        }
    }

    #[test]
    fn what_a_header_cannot_carry_is_percent_encoded() {
        assert_eq!(encode_value("50%"), "50%25");
        assert_eq!(encode_value("line 1\r\nline 2"), "line 1%0D%0Aline 2");
        assert_eq!(encode_value(" padded\t"), "%20padded%09");
        assert_eq!(encode_value("  "), "%20%20");
        assert_eq!(encode_value("\u{a0}x"), "%C2%A0x");
    }

    #[test]
    fn every_attribute_becomes_a_ce_header() {
        let mut env = Envelope::from_message(
            "/petstore/test",
            &contracts::inventory::GetPetStatus { pet_id: "cat-1".into() },
            &MessageContext::correlated("corr"),
        )
        .expect("encode");
        env.extensions.insert("custom".into(), "x".into());
        let headers = headers(&env).expect("headers");
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
            assert!(headers.get(expected).is_some(), "{expected} missing from {headers:?}");
        }
        assert_eq!(headers.get(CONTENT_TYPE).map(HeaderValue::as_str), Some("application/json"));
    }

    #[test]
    fn an_attribute_name_that_cannot_be_a_header_is_a_codec_error() {
        let mut env = Envelope::from_message(
            "/petstore/test",
            &contracts::inventory::GetPetStatus { pet_id: "cat-1".into() },
            &MessageContext::default(),
        )
        .expect("encode");
        env.extensions.insert("bad name".into(), "x".into());
        let err = headers(&env).expect_err("must fail");
        assert!(matches!(&err, BusError::Codec(m) if m.contains("ce_bad name")), "{err}");
    }
}
