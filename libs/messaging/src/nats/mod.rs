//! NATS backend: channels are JetStream streams, consumer groups durable pull consumers.
//!
//! **Channels.** Each channel is one stream with a single subject: the channel name itself
//! (`t0199….events`; dots are subject token separators, which is fine for a literal subject).
//! The stream keeps messages for `max_age_secs` (limits retention), so a group that joins late
//! can start from the earliest retained message, and a group whose members are all down
//! finds its messages when one comes back. Partitions do not exist in JetStream: a stream is
//! one ordered log, and `declare`'s partition count is ignored.
//!
//! **Names.** Stream and consumer names cannot contain `.`, `*`, `>` or whitespace, so
//! channel and group names are mapped, deterministically and injectively: lowercase ASCII
//! letters, digits and `-` stay as they are, `.` becomes `_`, and every other byte (an
//! uppercase letter, `_`, anything else) becomes `_` followed by two uppercase letters `A`–`P`
//! spelling the byte's two hex digits (`A` = 0 … `P` = 15). No kept character is uppercase, so
//! a `_` followed by an uppercase letter is always an escape and any other `_` a dot:
//! `t0199ab.events.dlq` → `t0199ab_events_dlq`, `my_group` → `my_FPgroup`.
//!
//! **Messages.** CloudEvents binary mode over NATS headers: every attribute as `ce_<name>`,
//! `datacontenttype` as `content-type`, the data as the payload. Header values cannot hold
//! line breaks and lose surrounding whitespace, so `%`, control characters and leading or
//! trailing whitespace are percent-encoded (UTF-8 bytes); everything else is carried as is.
//! The envelope id (qualified for dead letters and replays: `Envelope::publication_id`) is
//! also the `Nats-Msg-Id`, so a publish retried within the duplicate window is stored once. `publish` returns once the stream's acknowledgement is in.
//!
//! **Groups.** A group is a durable pull consumer named after the group (explicit acks,
//! unlimited deliveries — the bus dead-letters); its members pull from it, so each message
//! goes to one member. Members pull one message at a time while idle and then only what is
//! immediately ready (or arrives within `max_wait`), so a busy member does not sit on messages
//! another could take. `ack` is confirmed by the server (double ack); `close` gives back
//! (`-NAK`) every message the member holds, for immediate redelivery to the group; a member
//! that dies without closing has its messages redelivered after `ack_wait_secs`.
//!
//! **Private subscriptions** (`group: None`, reply channels) are ephemeral pull consumers
//! without acks, created with deliver policy all/new, removed on `close` (or by the server
//! once unused for a while), and recreated from the next sequence if the server lost them.
//!
//! **Order.** A stream is one ordered log and a member receives its messages in that order,
//! so one consumer per group sees every key in publication order. Competing members of one
//! group each take the next message, so two messages of one key may be processed at once by
//! two members; JetStream (2.9) cannot pin a key to a member, hence `ordering_per_key: false`.

mod config;
mod publisher;
mod subscriber;

use std::{
    collections::HashSet,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use async_nats::{
    Client, ConnectOptions,
    client::RequestErrorKind,
    jetstream::{self, stream},
};
use async_trait::async_trait;
use bytes::Bytes;

pub use self::config::NatsConfig;
use crate::{Backend, BusError, Capabilities, Consumer, Envelope, Pattern, StartFrom, SubscribeOptions};

const NAME: &str = "nats";

/// The NATS JetStream backend: one connection shared by publishing and every consumer.
pub struct NatsBackend {
    config: NatsConfig,
    client: Client,
    jetstream: jetstream::Context,
    /// Channels whose stream this backend created or found.
    declared: Mutex<HashSet<String>>,
}

/// The stream or consumer name of a channel or group name (see the module documentation).
fn physical_name(name: &str) -> String {
    const NIBBLES: &[u8; 16] = b"ABCDEFGHIJKLMNOP";
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'-' => out.push(char::from(byte)),
            b'.' => out.push('_'),
            other => {
                out.push('_');
                out.push(char::from(NIBBLES[usize::from(other >> 4)]));
                out.push(char::from(NIBBLES[usize::from(other & 0x0f)]));
            }
        }
    }
    out
}

/// Checks that `channel` can be used as a literal subject: non-empty tokens, no wildcards,
/// no whitespace.
fn check_subject(channel: &str) -> Result<(), BusError> {
    let valid = channel
        .split('.')
        .all(|token| !token.is_empty() && !token.contains(['*', '>']) && !token.chars().any(char::is_whitespace));
    if valid {
        Ok(())
    } else {
        Err(BusError::Config(format!(
            "channel `{channel}` cannot be a NATS subject: it needs non-empty dot-separated tokens without `*`, `>` or whitespace"
        )))
    }
}

/// Wraps a client or server failure, masking any credentials it quotes.
fn failure(config: &NatsConfig, what: &str, error: impl std::fmt::Display, retriable: bool) -> BusError {
    let message = config.scrub(&format!("{what}: {error}"));
    if retriable { BusError::transient(NAME, message) } else { BusError::permanent(NAME, message) }
}

impl NatsBackend {
    /// Connects to the servers of `config` and checks that JetStream answers; fails within
    /// about `connect_timeout_ms` + `request_timeout_ms` when nothing does.
    pub async fn connect(config: &NatsConfig) -> Result<Self, BusError> {
        config.validate()?;
        let shown = config.display_url();
        let options = ConnectOptions::new()
            .name("petstore-messaging")
            .connection_timeout(config.connect_timeout())
            .request_timeout(Some(config.request_timeout()));
        let connecting = options.connect(config.urls());
        // The client bounds each attempt; this bounds the whole (several servers, TLS, auth).
        let client = tokio::time::timeout(config.connect_timeout() + Duration::from_secs(1), connecting)
            .await
            .map_err(|_| {
                BusError::transient(NAME, format!("no answer from {shown} within {:?}", config.connect_timeout()))
            })?
            .map_err(|e| failure(config, &format!("cannot connect to {shown}"), e, true))?;
        let backend = Self {
            config: config.clone(),
            jetstream: jetstream::new(client.clone()),
            client,
            declared: Mutex::new(HashSet::new()),
        };
        backend.health().await?;
        Ok(backend)
    }

    fn declared(&self) -> MutexGuard<'_, HashSet<String>> {
        // Nothing panics while holding this lock; recover the set if anything ever did.
        self.declared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stream_config(&self, channel: &str) -> stream::Config {
        stream::Config {
            name: physical_name(channel),
            subjects: vec![channel.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            max_age: self.config.max_age(),
            duplicate_window: self.config.duplicate_window(),
            num_replicas: self.config.replicas,
            description: Some(format!("petstore bus channel {channel}")),
            ..Default::default()
        }
    }

    /// The stream of `channel`, created if missing; fails if a stream of that name exists
    /// for other subjects.
    async fn ensure_stream(&self, channel: &str) -> Result<(), BusError> {
        let config = self.stream_config(channel);
        let name = config.name.clone();
        let stream = match self.jetstream.get_or_create_stream(config).await {
            Ok(stream) => stream,
            // Another process created it between our lookup and our create.
            Err(create) => self.jetstream.get_stream(&name).await.map_err(|_| {
                failure(&self.config, &format!("create stream `{name}` for channel `{channel}`"), create, true)
            })?,
        };
        let subjects = &stream.cached_info().config.subjects;
        if !subjects.iter().any(|s| s == channel) {
            return Err(BusError::permanent(
                NAME,
                format!("stream `{name}` exists for subjects {subjects:?}, not for channel `{channel}`"),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for NatsBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { patterns: Pattern::ALL, ordering_per_key: false, durable: true, replay: true, backlog: true }
    }

    async fn remove(&self, channel: &str) -> Result<(), BusError> {
        match self.jetstream.delete_stream(physical_name(channel)).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("not found") => {}
            Err(e) => return Err(BusError::transient(NAME, format!("delete stream of `{channel}`: {e}"))),
        }
        self.declared().remove(channel);
        Ok(())
    }

    async fn declare(&self, channel: &str, _partitions: u32) -> Result<(), BusError> {
        if self.declared().contains(channel) {
            return Ok(());
        }
        check_subject(channel)?;
        self.ensure_stream(channel).await?;
        self.declared().insert(channel.to_owned());
        Ok(())
    }

    async fn publish(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
        publisher::publish(&self.jetstream, channel, envelope, &self.config).await
    }

    async fn subscribe(&self, channel: &str, options: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError> {
        check_subject(channel)?;
        let settings = subscriber::Settings {
            channel: channel.to_owned(),
            stream: physical_name(channel),
            group: options.group.as_deref().map(physical_name),
            start: match options.start {
                StartFrom::Earliest => jetstream::consumer::DeliverPolicy::All,
                StartFrom::Latest => jetstream::consumer::DeliverPolicy::New,
                StartFrom::Time(t) => jetstream::consumer::DeliverPolicy::ByStartTime {
                    start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
                        t.timestamp_nanos_opt().unwrap_or_default(),
                    ))
                    .map_err(|e| BusError::Config(format!("start time {t}: {e}")))?,
                },
            },
            ack_wait: self.config.ack_wait(),
            max_ack_pending: self.config.max_ack_pending,
            request_timeout: self.config.request_timeout(),
        };
        let consumer = subscriber::NatsConsumer::start(self.client.clone(), self.jetstream.clone(), settings).await?;
        Ok(Box::new(consumer))
    }

    /// The group's durable consumer's `num_pending` (not delivered yet) plus
    /// `num_ack_pending` (delivered, not acknowledged). Without that consumer, the stream's
    /// message count (what the group would start with); without the stream, 0.
    async fn backlog(&self, channel: &str, group: &str) -> Result<Option<u64>, BusError> {
        use jetstream::context::ConsumerInfoErrorKind;
        let stream = self
            .jetstream
            .get_stream_no_info(physical_name(channel))
            .await
            .map_err(|e| failure(&self.config, &format!("stream of `{channel}`"), e, false))?;
        let what = || format!("backlog of group `{group}` on `{channel}`");
        match stream.consumer_info(physical_name(group)).await {
            Ok(info) => Ok(Some(info.num_pending + info.num_ack_pending as u64)),
            Err(e) if e.kind() == ConsumerInfoErrorKind::StreamNotFound => Ok(Some(0)),
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => match stream.get_info().await {
                Ok(info) => Ok(Some(info.state.messages)),
                Err(e) => Err(failure(&self.config, &what(), e, true)),
            },
            Err(e) => Err(failure(&self.config, &what(), e, true)),
        }
    }

    async fn health(&self) -> Result<(), BusError> {
        // The account info request: a JetStream round trip that any server version answers
        // (its full schema varies between versions, so only the error part is read).
        let shown = self.config.display_url();
        let timeout = self.config.request_timeout();
        let asked = tokio::time::timeout(timeout, self.client.request("$JS.API.INFO", Bytes::new())).await;
        let reply = match asked {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
                return Err(BusError::permanent(
                    NAME,
                    format!("{shown} does not offer JetStream (start the server with `-js`)"),
                ));
            }
            Ok(Err(e)) => return Err(failure(&self.config, &format!("JetStream at {shown}"), e, true)),
            Err(_) => {
                return Err(BusError::transient(NAME, format!("JetStream at {shown}: no answer within {timeout:?}")));
            }
        };
        let info: serde_json::Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| BusError::transient(NAME, format!("JetStream at {shown}: unreadable account info: {e}")))?;
        match info.get("error") {
            None => Ok(()),
            Some(error) => Err(BusError::transient(NAME, format!("JetStream at {shown}: {error}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Inverse of [`physical_name`], to prove it loses nothing.
    fn logical_name(physical: &str) -> String {
        let bytes = physical.as_bytes();
        let nibble = |b: u8| (b'A'..=b'P').contains(&b).then(|| b - b'A');
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match (bytes[i], bytes.get(i + 1).copied().and_then(nibble), bytes.get(i + 2).copied().and_then(nibble)) {
                (b'_', Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                (b'_', _, _) => {
                    out.push(b'.');
                    i += 1;
                }
                (b, _, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn bus_names_map_to_readable_stream_names() {
        assert_eq!(physical_name("t0199ab.events.dlq"), "t0199ab_events_dlq");
        assert_eq!(physical_name("t0199ab.dead-letters"), "t0199ab_dead-letters");
        assert_eq!(physical_name("my_group"), "my_FPgroup");
        assert_eq!(physical_name("Ab"), "_EBb");
    }

    #[test]
    fn the_name_mapping_is_injective_and_valid() {
        let names = [
            "a.b",
            "a_b",
            "a__b",
            "a._b",
            "a_.b",
            "a..b",
            "a_FPb",
            "A.b",
            "a-b",
            "a.-b",
            "_",
            ".",
            "__",
            "..",
            "a b",
            "a*b",
            "a>b",
            "é",
            "t.replies.svc.0199",
            "t.replies.svc_0199",
        ];
        let mut seen = HashMap::new();
        for name in names {
            let physical = physical_name(name);
            assert!(
                physical.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{name} → {physical}"
            );
            assert_eq!(logical_name(&physical), name, "round trip of {name}");
            if let Some(other) = seen.insert(physical.clone(), name) {
                panic!("{name} and {other} both map to {physical}");
            }
        }
    }

    #[test]
    fn channels_must_be_literal_subjects() {
        for good in ["t.events", "t0199.replies.svc.0199", "a-b_c"] {
            check_subject(good).expect(good);
        }
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "a\tb"] {
            let err = check_subject(bad).expect_err(bad);
            assert!(matches!(err, BusError::Config(_)), "{err}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_fast_naming_the_url_without_credentials() {
        // Nothing listens on port 1 of the loopback address.
        let config = NatsConfig { connect_timeout_ms: 1_000, ..NatsConfig::new("nats://bob:hunter2@127.0.0.1:1") };
        let started = std::time::Instant::now();
        let err = NatsBackend::connect(&config).await.err().expect("must fail");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        let text = err.to_string();
        assert!(text.contains("nats") && text.contains("nats://127.0.0.1:1"), "{text}");
        assert!(!text.contains("hunter2") && !text.contains("bob"), "{text}");
        assert!(err.is_retriable(), "{text}");
    }
}
