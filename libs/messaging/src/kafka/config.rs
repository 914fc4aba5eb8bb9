use std::{collections::BTreeMap, time::Duration};

use rdkafka::ClientConfig;
use serde::Deserialize;

/// `messaging.kafka`: how to reach the Kafka cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, e.g. `kafka-1:9092,kafka-2:9092`.
    pub brokers: String,
    /// Extra librdkafka properties applied to the producer, the consumers and the admin
    /// client (security settings, timeouts, test tuning). The settings the backend's
    /// guarantees rest on (idempotence, `acks`, group id, offset storing and committing)
    /// cannot be overridden here.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
    /// Replication factor of the topics this service declares.
    #[serde(default = "KafkaConfig::default_replication_factor")]
    pub replication_factor: i32,
    /// Timeout of admin, metadata and health calls, in milliseconds.
    #[serde(default = "KafkaConfig::default_operation_timeout_ms")]
    pub operation_timeout_ms: u64,
}

impl KafkaConfig {
    fn default_replication_factor() -> i32 {
        1
    }

    fn default_operation_timeout_ms() -> u64 {
        10_000
    }

    /// Settings for `brokers` with every other field at its default.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client: BTreeMap::new(),
            replication_factor: Self::default_replication_factor(),
            operation_timeout_ms: Self::default_operation_timeout_ms(),
        }
    }

    /// The timeout of admin, metadata and health calls.
    pub fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.operation_timeout_ms)
    }

    /// The base configuration every client starts from: the brokers, then the extra
    /// properties. Each client sets its fixed settings on top.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.client {
            config.set(key, value);
        }
        config
    }
}
