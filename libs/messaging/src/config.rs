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
    /// Handler retries before a message is dead-lettered.
    #[serde(default)]
    pub retry: RetryPolicy,
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
}

impl ChannelConfig {
    fn default_partitions() -> u32 {
        3
    }
}

/// Retry with exponential backoff and full jitter, then dead-letter.
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
    /// Backoff before attempt `attempt + 1` (attempt counts from 1): a random duration up to
    /// `initial * 2^(attempt-1)`, capped.
    pub fn backoff(&self, attempt: u32) -> std::time::Duration {
        let exp = self.initial_backoff_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.max_backoff_ms).max(1);
        std::time::Duration::from_millis(rand::random_range(cap / 2..=cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
