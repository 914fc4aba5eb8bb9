//! Envelope → AMQP message (binary content mode) and publishing it with a publisher confirm.

use lapin::{
    BasicProperties, Confirmation,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use super::{NAME, Shared, amqp_error, is_not_found};
use crate::{BusError, Envelope};

/// Prefix of the headers that carry CloudEvents attributes.
pub(super) const CE_PREFIX: &str = "ce_";
/// AMQP delivery mode of messages written to disk.
const PERSISTENT: u8 = 2;

/// Why a publish failed, and whether it was because the exchange does not exist.
pub(super) struct PublishFailure {
    pub(super) error: BusError,
    pub(super) exchange_missing: bool,
}

impl From<BusError> for PublishFailure {
    fn from(error: BusError) -> Self {
        Self { error, exchange_missing: false }
    }
}

/// The AMQP properties of `envelope`: persistent, its id as `message-id`, its content type,
/// its time, and every attribute as a `ce_<name>` header.
pub(super) fn properties(envelope: &Envelope) -> Result<BasicProperties, BusError> {
    let mut headers = FieldTable::default();
    for (name, value) in envelope.attributes() {
        let key = ShortString::try_new(format!("{CE_PREFIX}{name}"))
            .map_err(|e| BusError::Codec(format!("attribute name `{name}`: {e}")))?;
        headers.insert(key, AMQPValue::LongString(LongString::from(value)));
    }
    let content_type = ShortString::try_new(envelope.data_content_type.clone())
        .map_err(|e| BusError::Codec(format!("datacontenttype: {e}")))?;
    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_message_id(envelope.id.to_string().into())
        .with_content_type(content_type)
        .with_headers(headers);
    if let Ok(seconds) = u64::try_from(envelope.time.timestamp()) {
        properties = properties.with_timestamp(seconds);
    }
    Ok(properties)
}

/// Publishes `envelope` to `exchange` and waits for the server's confirm.
pub(super) async fn publish(
    shared: &Shared,
    exchange: &ShortString,
    envelope: &Envelope,
) -> Result<(), PublishFailure> {
    let properties = properties(envelope)?;
    let link = shared.link().await?;
    let what = format!("publish to `{exchange}`");
    let confirmed = async {
        let options = BasicPublishOptions::default();
        let confirm =
            link.publisher.basic_publish(exchange.clone(), ShortString::default(), options, &envelope.data, properties);
        confirm.await?.await
    };
    let timeout = shared.config.operation_timeout();
    match tokio::time::timeout(timeout, confirmed).await {
        Ok(Ok(Confirmation::Ack(_))) => Ok(()),
        Ok(Ok(Confirmation::NotRequested)) => {
            Err(BusError::transient(NAME, format!("{what}: the publishing channel is not in confirm mode")).into())
        }
        Ok(Ok(Confirmation::Nack(_))) => {
            Err(BusError::transient(NAME, format!("{what}: the server refused the message (nack)")).into())
        }
        Ok(Err(e)) => Err(PublishFailure { error: amqp_error(&what, &e), exchange_missing: is_not_found(&e) }),
        Err(_) => Err(BusError::transient(NAME, format!("{what}: no publisher confirm within {timeout:?}")).into()),
    }
}
