//! Envelope → stream entry (binary content mode: attributes as `ce_*` fields) and appending
//! it.

use ::redis::Cmd;

use super::{Shared, stream_key};
use crate::{BusError, Envelope};

/// Prefix of the fields that carry CloudEvents attributes.
pub(super) const CE_PREFIX: &str = "ce_";
/// The field that carries `datacontenttype`.
pub(super) const CONTENT_TYPE: &str = "content-type";
/// The field that carries the payload.
pub(super) const DATA: &str = "data";

/// The text fields of `envelope`'s entry: every attribute as `ce_<name>`, then the content
/// type (the payload goes in [`DATA`]).
pub(super) fn text_fields(envelope: &Envelope) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> =
        envelope.attributes().into_iter().map(|(name, value)| (format!("{CE_PREFIX}{name}"), value)).collect();
    fields.push((CONTENT_TYPE.to_owned(), envelope.data_content_type.clone()));
    fields
}

/// `XADD` of `envelope` to `stream`, trimming the stream to about `max_len` entries (`0`:
/// no trimming).
fn xadd(stream: &str, max_len: u64, envelope: &Envelope) -> Cmd {
    let mut cmd = ::redis::cmd("XADD");
    cmd.arg(stream);
    if max_len > 0 {
        cmd.arg("MAXLEN").arg("~").arg(max_len);
    }
    cmd.arg("*");
    for (name, value) in text_fields(envelope) {
        cmd.arg(name).arg(value);
    }
    cmd.arg(DATA).arg(&envelope.data[..]);
    cmd
}

/// Appends `envelope` to the stream of `channel`; returns once the server has added it.
pub(super) async fn publish(shared: &Shared, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
    let stream = stream_key(channel);
    let cmd = xadd(&stream, shared.config.max_len, envelope);
    let _id: String = shared.run(&cmd, || format!("publish to `{stream}`")).await?;
    Ok(())
}
