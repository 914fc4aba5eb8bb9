use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{Pattern, StartFrom};

/// The transports a channel can be mapped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// In-process channels: the all-in-one mode, no external server.
    Memory,
    /// Apache Kafka (or any Kafka-protocol broker) through rdkafka.
    Kafka,
    /// NATS with JetStream.
    Nats,
    /// RabbitMQ (AMQP 0-9-1).
    Rabbitmq,
    /// Redis streams.
    Redis,
    /// AWS SNS topics with SQS queues for consumers.
    Sns,
}

impl BackendKind {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Kafka => "kafka",
            Self::Nats => "nats",
            Self::Rabbitmq => "rabbitmq",
            Self::Redis => "redis",
            Self::Sns => "sns",
        }
    }
}

/// `messaging:` in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagingConfig {
    /// Backend for channels that do not name one.
    pub default_backend: BackendKind,
    /// Prepended to every physical topic/queue name (tests use a random one).
    #[serde(default)]
    pub topic_prefix: String,
    /// Declared channels: logical name → pattern, backend, partitions.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Default backend per pattern, and the fallback backend.
    #[serde(default)]
    pub backend_selection: BackendSelection,
    /// Handler retries before a message is dead-lettered.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Messages a subscription handles at once (never two of one partition key at a time,
    /// so each key's order holds); a channel may set its own. Default 16.
    #[serde(default = "MessagingConfig::default_concurrency")]
    pub concurrency: usize,
    /// How often each bus samples the backlog of the groups it consumes and of their
    /// dead-letter channels into gauges (`10s`, `500ms`, `1m30s`; default 10 s).
    #[serde(default = "MessagingConfig::default_lag_interval", deserialize_with = "duration::deserialize")]
    pub lag_interval: std::time::Duration,
    /// Kafka connection settings, required when any channel uses Kafka.
    #[cfg(feature = "kafka")]
    #[serde(default)]
    pub kafka: Option<crate::kafka::KafkaConfig>,
    /// Kafka connection settings (the `kafka` feature is off in this build).
    #[cfg(not(feature = "kafka"))]
    #[serde(default)]
    pub kafka: Option<serde::de::IgnoredAny>,
    /// NATS connection settings, required when any channel uses NATS.
    #[cfg(feature = "nats")]
    #[serde(default)]
    pub nats: Option<crate::nats::NatsConfig>,
    /// NATS connection settings (the `nats` feature is off in this build).
    #[cfg(not(feature = "nats"))]
    #[serde(default)]
    pub nats: Option<serde::de::IgnoredAny>,
    /// RabbitMQ connection settings, required when any channel uses RabbitMQ.
    #[cfg(feature = "rabbitmq")]
    #[serde(default)]
    pub rabbitmq: Option<crate::rabbitmq::RabbitMqConfig>,
    /// RabbitMQ connection settings (the `rabbitmq` feature is off in this build).
    #[cfg(not(feature = "rabbitmq"))]
    #[serde(default)]
    pub rabbitmq: Option<serde::de::IgnoredAny>,
    /// Redis connection settings, required when any channel uses Redis.
    #[cfg(feature = "redis")]
    #[serde(default)]
    pub redis: Option<crate::redis::RedisConfig>,
    /// Redis connection settings (the `redis` feature is off in this build).
    #[cfg(not(feature = "redis"))]
    #[serde(default)]
    pub redis: Option<serde::de::IgnoredAny>,
    /// SNS/SQS connection settings, required when any channel uses SNS/SQS.
    #[cfg(feature = "sns")]
    #[serde(default)]
    pub sns: Option<crate::sns::SnsConfig>,
    /// SNS/SQS connection settings (the `sns` feature is off in this build).
    #[cfg(not(feature = "sns"))]
    #[serde(default)]
    pub sns: Option<serde::de::IgnoredAny>,
    /// Memory backend settings.
    #[serde(default)]
    pub memory: MemoryConfig,
}

/// `messaging.backend_selection`: which backend carries a channel that names none, by the
/// channel's pattern, and which backend stands in when a channel's own is unavailable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSelection {
    /// Backend for pub/sub channels.
    #[serde(default)]
    pub pub_sub: Option<BackendKind>,
    /// Backend for point-to-point channels.
    #[serde(default)]
    pub point_to_point: Option<BackendKind>,
    /// Backend for request/response channels.
    #[serde(default)]
    pub request_response: Option<BackendKind>,
    /// Backend for streaming channels.
    #[serde(default)]
    pub streaming: Option<BackendKind>,
    /// Backend that request/response channels fall back to: each such channel is served on
    /// it too, and a request whose own backend fails goes through it. It must support
    /// request/response (checked at start-up). Other patterns never fall back: splitting an
    /// event stream over two backends would break its order and its consumer groups.
    #[serde(default)]
    pub fallback: Option<BackendKind>,
}

impl BackendSelection {
    /// The configured default for `pattern`, if any.
    pub fn for_pattern(&self, pattern: Pattern) -> Option<BackendKind> {
        match pattern {
            Pattern::PubSub => self.pub_sub,
            Pattern::PointToPoint => self.point_to_point,
            Pattern::RequestResponse => self.request_response,
            Pattern::Streaming => self.streaming,
        }
    }
}

impl MessagingConfig {
    fn default_lag_interval() -> std::time::Duration {
        std::time::Duration::from_secs(10)
    }

    fn default_concurrency() -> usize {
        16
    }

    /// Checks the settings that need no connection to check: `lag_interval` (a zero period
    /// cannot be sampled at) and every concurrency (at least 1), naming the key.
    pub(crate) fn validate_settings(&self) -> Result<(), crate::BusError> {
        if self.lag_interval.is_zero() {
            return Err(crate::BusError::Config("messaging.lag_interval: must be greater than 0".into()));
        }
        if self.concurrency == 0 {
            return Err(crate::BusError::Config("messaging.concurrency: must be at least 1".into()));
        }
        for (name, channel) in &self.channels {
            if channel.concurrency == Some(0) {
                return Err(crate::BusError::Config(format!(
                    "messaging.channels.{name}.concurrency: must be at least 1"
                )));
            }
        }
        Ok(())
    }

    /// How many messages a subscription of `channel` handles at once.
    pub fn concurrency_of(&self, channel: &ChannelConfig) -> usize {
        channel.concurrency.unwrap_or(self.concurrency)
    }

    /// The backend that carries `channel`: its own `backend`, else the selection for its
    /// pattern, else `default_backend`; with the configuration key that chose it.
    pub fn backend_of(&self, name: &str, channel: &ChannelConfig) -> (BackendKind, String) {
        if let Some(kind) = channel.backend {
            return (kind, format!("messaging.channels.{name}.backend"));
        }
        if let Some(kind) = self.backend_selection.for_pattern(channel.pattern) {
            return (kind, format!("messaging.backend_selection.{}", channel.pattern.as_str()));
        }
        (self.default_backend, "messaging.default_backend".to_owned())
    }

    /// Checks what can be checked without connecting: every backend in use has its
    /// connection section, every channel has at least one partition, `lag_interval` is
    /// positive and every concurrency at least 1. Errors name the key.
    pub fn validate(&self) -> Result<(), crate::BusError> {
        self.validate_settings()?;
        for kind in self.backends_in_use() {
            let present = match kind {
                BackendKind::Memory => true,
                BackendKind::Kafka => self.kafka.is_some(),
                BackendKind::Nats => self.nats.is_some(),
                BackendKind::Rabbitmq => self.rabbitmq.is_some(),
                BackendKind::Redis => self.redis.is_some(),
                BackendKind::Sns => self.sns.is_some(),
            };
            if !present {
                return Err(crate::BusError::Config(format!(
                    "messaging.{0}: required because a channel uses the {0} backend",
                    kind.as_str()
                )));
            }
        }
        for (name, channel) in &self.channels {
            if channel.partitions == 0 {
                return Err(crate::BusError::Config(format!(
                    "messaging.channels.{name}.partitions: must be at least 1"
                )));
            }
        }
        Ok(())
    }

    /// Every backend the configuration needs connected.
    pub fn backends_in_use(&self) -> Vec<BackendKind> {
        let mut kinds: Vec<BackendKind> = self.channels.iter().map(|(name, c)| self.backend_of(name, c).0).collect();
        kinds.push(self.default_backend);
        kinds.extend(self.backend_selection.fallback);
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// Durations written the humantime way: numbers with units, `10s`, `500ms`, `1m30s`, `2h`.
mod duration {
    use std::time::Duration;

    use serde::{Deserializer, de};

    /// Parses `text`: one or more `<integer><unit>` parts (units `ms`, `s`, `m`, `h`),
    /// optionally separated by spaces.
    pub(super) fn parse(text: &str) -> Result<Duration, String> {
        let invalid = || format!("`{text}` is not a duration such as `10s`, `500ms` or `1m30s`");
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
            let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit() || c.is_whitespace()).unwrap_or(rest.len());
            let part = match &rest[..unit_len] {
                "ms" => Duration::from_millis(number),
                "s" => Duration::from_secs(number),
                "m" => Duration::from_secs(number.saturating_mul(60)),
                "h" => Duration::from_secs(number.saturating_mul(3600)),
                _ => return Err(invalid()),
            };
            total = total.saturating_add(part);
            rest = rest[unit_len..].trim_start();
        }
        Ok(total)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as `10s`, `500ms` or `1m30s`")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// `messaging.memory`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Messages kept per channel for groups that join later.
    #[serde(default = "MemoryConfig::default_retention")]
    pub retention_messages: usize,
}

impl MemoryConfig {
    fn default_retention() -> usize {
        10_000
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { retention_messages: Self::default_retention() }
    }
}

/// `messaging.channels.<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// How the channel is used.
    pub pattern: Pattern,
    /// Backend carrying it; `default_backend` when absent.
    #[serde(default)]
    pub backend: Option<BackendKind>,
    /// Partitions (Kafka) — the unit of parallelism and of per-key order.
    #[serde(default = "ChannelConfig::default_partitions")]
    pub partitions: u32,
    /// Where a new consumer group starts.
    #[serde(default)]
    pub start: StartFrom,
    /// Messages a subscription of this channel handles at once; `messaging.concurrency`
    /// when absent.
    #[serde(default)]
    pub concurrency: Option<usize>,
}

impl ChannelConfig {
    fn default_partitions() -> u32 {
        3
    }
}

/// Retry with exponential backoff and "equal" jitter (between half and all of the backoff),
/// then dead-letter.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt.
    pub initial_backoff_ms: u64,
    /// Cap on the backoff.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, initial_backoff_ms: 100, max_backoff_ms: 5_000 }
    }
}

impl RetryPolicy {
    /// Backoff before attempt `attempt + 1` (attempt counts from 1): a random duration between
    /// half and all of `initial * 2^(attempt-1)`, capped — never near zero, so retries of many
    /// failed messages still spread out and back off.
    pub fn backoff(&self, attempt: u32) -> std::time::Duration {
        let exp = self.initial_backoff_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.max_backoff_ms).max(1);
        std::time::Duration::from_millis(rand::random_range(cap / 2..=cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: serde_json::Value) -> MessagingConfig {
        serde_json::from_value(yaml).expect("config")
    }

    #[test]
    fn a_channel_gets_its_own_backend_then_its_pattern_default_then_the_default() {
        let c = config(serde_json::json!({
            "default_backend": "memory",
            "backend_selection": { "pub_sub": "kafka" },
            "kafka": { "brokers": "x:9092" },
            "channels": {
                "pinned": { "pattern": "pub_sub", "backend": "memory" },
                "events": { "pattern": "pub_sub" },
                "queries": { "pattern": "request_response" },
            },
        }));
        let backend = |name: &str| c.backend_of(name, &c.channels[name]);
        assert_eq!(backend("pinned"), (BackendKind::Memory, "messaging.channels.pinned.backend".into()));
        assert_eq!(backend("events"), (BackendKind::Kafka, "messaging.backend_selection.pub_sub".into()));
        assert_eq!(backend("queries"), (BackendKind::Memory, "messaging.default_backend".into()));
        assert_eq!(c.backends_in_use(), [BackendKind::Memory, BackendKind::Kafka]);
    }

    #[test]
    fn a_backend_in_use_without_its_section_is_named() {
        let c = config(serde_json::json!({
            "default_backend": "memory",
            "backend_selection": { "fallback": "nats" },
            "channels": { "events": { "pattern": "pub_sub" } },
        }));
        let err = c.validate().expect_err("nats has no section").to_string();
        assert!(err.contains("messaging.nats"), "{err}");
    }

    #[test]
    fn lag_interval_defaults_to_ten_seconds_and_reads_humantime_durations() {
        let base = serde_json::json!({ "default_backend": "memory", "channels": {} });
        assert_eq!(config(base.clone()).lag_interval, std::time::Duration::from_secs(10));
        let cases = [("250ms", 250), ("2s", 2_000), ("1m30s", 90_000), ("1m 5s", 65_000), ("1h", 3_600_000)];
        for (text, millis) in cases {
            let mut value = base.clone();
            value["lag_interval"] = text.into();
            assert_eq!(config(value).lag_interval.as_millis(), millis, "{text}");
        }
        for bad in ["", "10", "s", "10 seconds", "1.5s", "-1s", "10sm"] {
            assert!(duration::parse(bad).is_err(), "`{bad}` must be refused");
        }
    }

    #[test]
    fn a_zero_lag_interval_is_refused_naming_the_key() {
        let c = config(serde_json::json!({ "default_backend": "memory", "channels": {}, "lag_interval": "0s" }));
        let err = c.validate().expect_err("zero interval").to_string();
        assert!(err.contains("messaging.lag_interval"), "{err}");
    }

    #[test]
    fn concurrency_defaults_to_sixteen_a_channel_may_set_its_own_and_zero_is_refused() {
        let c = config(serde_json::json!({
            "default_backend": "memory",
            "channels": { "a": { "pattern": "pub_sub" }, "b": { "pattern": "pub_sub", "concurrency": 2 } },
        }));
        assert_eq!(c.concurrency_of(&c.channels["a"]), 16);
        assert_eq!(c.concurrency_of(&c.channels["b"]), 2);
        let zero = config(serde_json::json!({
            "default_backend": "memory", "concurrency": 0, "channels": {},
        }));
        let err = zero.validate().expect_err("zero").to_string();
        assert!(err.contains("messaging.concurrency"), "{err}");
        let zero = config(serde_json::json!({
            "default_backend": "memory",
            "channels": { "c": { "pattern": "pub_sub", "concurrency": 0 } },
        }));
        let err = zero.validate().expect_err("zero").to_string();
        assert!(err.contains("messaging.channels.c.concurrency"), "{err}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy { max_attempts: 5, initial_backoff_ms: 100, max_backoff_ms: 1_000 };
        for _ in 0..100 {
            let first = p.backoff(1).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let third = p.backoff(3).as_millis();
            assert!((200..=400).contains(&third), "{third}");
            let late = p.backoff(30).as_millis();
            assert!((500..=1_000).contains(&late), "{late}");
        }
    }
}
