//! Dead letters as an operator's tools see them: the original message and why the bus gave up
//! on it, read from the `dlq*` attributes the bus adds when it dead-letters a message.

use chrono::{DateTime, Utc};

use crate::{BusError, DLQ_ATTEMPTS, DLQ_ERROR, DLQ_ORIGIN, DLQ_TIME, Envelope, REPLAYED_AT};

/// The prefix of every attribute the bus adds to a dead letter.
const DLQ_PREFIX: &str = "dlq";

/// A dead letter read back from a `<channel>.dlq`: the message as first published and why it
/// was dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The original message: the `dlq*` attributes removed, the id kept, so that a consumer
    /// whose inbox recorded it meanwhile drops a replay.
    pub message: Envelope,
    /// The handler's last error (`dlqerror`).
    pub error: String,
    /// Handler attempts made before the bus gave up (`dlqattempts`).
    pub attempts: u32,
    /// The logical channel the message was consumed from (`dlqorigin`), where a replay
    /// publishes it again.
    pub channel: String,
    /// The consumer group that gave up on it (`dlqorigin`).
    pub group: String,
    /// When it was dead-lettered (`dlqtime`); `None` for a letter without that attribute.
    pub dead_lettered_at: Option<DateTime<Utc>>,
}

impl DeadLetter {
    /// Reads a dead letter as delivered from a dead-letter channel; fails with
    /// [`BusError::Codec`] when it has no valid `dlqorigin` (then it is no dead letter).
    pub fn parse(letter: &Envelope) -> Result<Self, BusError> {
        let attribute = |name: &str| letter.extensions.get(name).map(String::as_str);
        let origin = attribute(DLQ_ORIGIN)
            .ok_or_else(|| BusError::Codec(format!("dead letter {} has no `{DLQ_ORIGIN}` attribute", letter.id)))?;
        let (channel, group) = origin
            .split_once('/')
            .filter(|(channel, group)| !channel.is_empty() && !group.is_empty())
            .ok_or_else(|| BusError::Codec(format!("`{DLQ_ORIGIN}` is not <channel>/<group>: {origin}")))?;
        let attempts = match attribute(DLQ_ATTEMPTS) {
            Some(n) => n.parse().map_err(|_| BusError::Codec(format!("`{DLQ_ATTEMPTS}` is not a count: {n}")))?,
            None => 0,
        };
        let dead_lettered_at = match attribute(DLQ_TIME) {
            Some(t) => Some(
                DateTime::parse_from_rfc3339(t)
                    .map_err(|e| BusError::Codec(format!("`{DLQ_TIME}`: {e}")))?
                    .with_timezone(&Utc),
            ),
            None => None,
        };
        let mut message = letter.clone();
        message.extensions.retain(|name, _| !name.starts_with(DLQ_PREFIX));
        Ok(Self {
            error: attribute(DLQ_ERROR).unwrap_or_default().to_owned(),
            attempts,
            channel: channel.to_owned(),
            group: group.to_owned(),
            dead_lettered_at,
            message,
        })
    }

    /// The message to publish again when the letter is replayed at `at`: the original, marked
    /// with [`REPLAYED_AT`] so that transports which deduplicate publishes by id take it.
    pub fn to_replay(&self, at: DateTime<Utc>) -> Envelope {
        let mut message = self.message.clone();
        message.extensions.insert(REPLAYED_AT.to_owned(), at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageContext;
    use contracts::inventory::GetPetStatus;

    fn letter(extensions: &[(&str, &str)]) -> Envelope {
        let message = GetPetStatus { pet_id: "goldfish-004".into() };
        let mut env = Envelope::from_message("/test", &message, &MessageContext::default()).expect("encode");
        env.extensions.insert("custom".into(), "kept".into());
        env.extensions.extend(extensions.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        env
    }

    #[test]
    fn a_dead_letter_gives_back_the_original_message_and_why_it_failed() {
        let env = letter(&[
            (DLQ_ERROR, "cannot parse"),
            (DLQ_ATTEMPTS, "3"),
            (DLQ_ORIGIN, "payment-commands/payment"),
            (DLQ_TIME, "2026-01-02T03:04:05.000006Z"),
        ]);
        let letter = DeadLetter::parse(&env).expect("a dead letter");
        assert_eq!(letter.error, "cannot parse");
        assert_eq!(letter.attempts, 3);
        assert_eq!((letter.channel.as_str(), letter.group.as_str()), ("payment-commands", "payment"));
        assert_eq!(letter.dead_lettered_at.map(|t| t.timestamp_micros()), Some(1_767_323_045_000_006));
        assert_eq!(letter.message.id, env.id, "the original id, so inboxes recognise a replay");
        assert_eq!(letter.message.extensions.keys().collect::<Vec<_>>(), ["custom"]);
        assert_eq!(letter.message.data, env.data);
        let replay = letter.to_replay(chrono::Utc::now());
        assert_eq!(replay.id, env.id);
        assert!(replay.publication_id() != env.publication_id(), "a transport must not drop it as a duplicate");
        assert!(env.publication_id() != letter.message.publication_id(), "nor the dead letter");
    }

    #[test]
    fn a_message_without_an_origin_is_no_dead_letter() {
        for extensions in [&[][..], &[(DLQ_ORIGIN, "no-group")], &[(DLQ_ORIGIN, "/x")]] {
            let err = DeadLetter::parse(&letter(extensions)).expect_err("not a dead letter");
            assert!(err.to_string().contains(DLQ_ORIGIN), "{extensions:?}: {err}");
        }
        let err = DeadLetter::parse(&letter(&[(DLQ_ORIGIN, "a/b"), (DLQ_ATTEMPTS, "many")])).expect_err("bad count");
        assert!(err.to_string().contains(DLQ_ATTEMPTS), "{err}");
    }
}
