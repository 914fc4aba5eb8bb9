use std::time::Duration;

use serde::Deserialize;

/// `messaging.rabbitmq`: how to reach RabbitMQ and how its consumers pull.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqConfig {
    /// AMQP URL, e.g. `amqp://user:password@rabbitmq:5672/%2f` (the vhost percent-encoded).
    /// Only plain `amqp://`: this build has no TLS.
    pub url: String,
    /// Unacknowledged messages one consumer may hold (`basic.qos` prefetch count); also the
    /// largest batch a consumer can gather. At least 1.
    #[serde(default = "RabbitMqConfig::default_prefetch")]
    pub prefetch: u16,
    /// Makes every consumer-group queue a single-active-consumer queue: one consumer of a
    /// group gets all its messages and the others stand by. Keeps per-key order across
    /// consumer restarts and competing instances, at the price of load sharing. A queue's
    /// mode is fixed when it is created: changing this for existing groups fails with
    /// PRECONDITION_FAILED until their queues are deleted.
    #[serde(default)]
    pub single_active_consumer: bool,
    /// How long connecting may take before `connect` (or a reconnect) gives up.
    #[serde(default = "RabbitMqConfig::default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Timeout of declarations, publisher confirms, closes and health checks.
    #[serde(default = "RabbitMqConfig::default_operation_timeout_ms")]
    pub operation_timeout_ms: u64,
}

impl RabbitMqConfig {
    fn default_prefetch() -> u16 {
        64
    }

    fn default_connect_timeout_ms() -> u64 {
        5_000
    }

    fn default_operation_timeout_ms() -> u64 {
        10_000
    }

    /// Settings for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefetch: Self::default_prefetch(),
            single_active_consumer: false,
            connect_timeout_ms: Self::default_connect_timeout_ms(),
            operation_timeout_ms: Self::default_operation_timeout_ms(),
        }
    }

    /// The bound on connecting.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The bound on every other round trip to the server.
    pub fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.operation_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_url_is_required() {
        let config: RabbitMqConfig = serde_json::from_value(serde_json::json!({ "url": "amqp://h:5672/%2f" }))
            .expect("a config with the url alone");
        assert_eq!(config.prefetch, 64);
        assert!(!config.single_active_consumer);
        assert_eq!(config.connect_timeout(), Duration::from_secs(5));
        assert_eq!(config.operation_timeout(), Duration::from_secs(10));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_value::<RabbitMqConfig>(serde_json::json!({ "url": "amqp://h", "prefech": 5 }))
            .expect_err("a misspelt key");
        assert!(err.to_string().contains("prefech"), "{err}");
    }
}
