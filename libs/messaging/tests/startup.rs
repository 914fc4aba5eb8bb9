//! Start-up fails fast, naming what is wrong: a broker that does not answer, a pattern a
//! backend cannot carry, a fallback that could not stand in.

use std::sync::Arc;

use async_trait::async_trait;
use messaging::{
    Backend, BackendKind, Backends, Bus, BusError, Capabilities, Consumer, Envelope, MessagingConfig, Pattern,
    SubscribeOptions,
};
use tokio_util::sync::CancellationToken;

/// A reachable backend that only does pub/sub.
struct PubSubOnly;

#[async_trait]
impl Backend for PubSubOnly {
    fn name(&self) -> &'static str {
        "pubsub-only"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            patterns: &[Pattern::PubSub],
            ordering_per_key: true,
            durable: false,
            replay: false,
            backlog: false,
        }
    }
    async fn declare(&self, _: &str, _: u32) -> Result<(), BusError> {
        Ok(())
    }
    async fn publish(&self, _: &str, _: &Envelope) -> Result<(), BusError> {
        Ok(())
    }
    async fn subscribe(&self, _: &str, _: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError> {
        Err(BusError::permanent("pubsub-only", "not used in these tests"))
    }
    async fn health(&self) -> Result<(), BusError> {
        Ok(())
    }
    async fn backlog(&self, _: &str, _: &str) -> Result<Option<u64>, BusError> {
        Ok(None)
    }
}

fn config(value: serde_json::Value) -> MessagingConfig {
    serde_json::from_value(value).expect("config")
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn a_fallback_that_cannot_carry_a_channel_is_refused_by_name() {
    let c = config(serde_json::json!({
        "default_backend": "memory",
        "backend_selection": { "fallback": "kafka" },
        "channels": { "queries": { "pattern": "request_response" } },
    }));
    let backends = Backends::default()
        .with(BackendKind::Memory, Arc::new(messaging::memory::MemoryBackend::new(10)))
        .with(BackendKind::Kafka, Arc::new(PubSubOnly));
    let err = Bus::new(&backends, &c, "test", CancellationToken::new()).await.err().expect("refused").to_string();
    assert!(err.contains("messaging.backend_selection.fallback") && err.contains("queries"), "{err}");
}

#[tokio::test]
async fn a_pattern_chosen_by_backend_selection_that_the_backend_lacks_is_refused_by_name() {
    let c = config(serde_json::json!({
        "default_backend": "memory",
        "backend_selection": { "streaming": "kafka" },
        "channels": { "stream": { "pattern": "streaming" } },
    }));
    let backends = Backends::default().with(BackendKind::Kafka, Arc::new(PubSubOnly));
    let err = Bus::new(&backends, &c, "test", CancellationToken::new()).await.err().expect("refused").to_string();
    assert!(
        err.contains("messaging.backend_selection.streaming") && err.contains("does not support streaming"),
        "{err}"
    );
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn an_unreachable_kafka_broker_fails_start_up_with_its_address() {
    let c = config(serde_json::json!({
        "default_backend": "kafka",
        "kafka": { "brokers": "127.0.0.1:1", "operation_timeout_ms": 2000 },
        "channels": { "events": { "pattern": "pub_sub" } },
    }));
    // The bound only keeps a broken build from hanging the suite; the backend's own
    // operation timeout is what ends the attempt.
    let result =
        tokio::time::timeout(std::time::Duration::from_secs(60), Backends::connect(&c)).await.expect("gives up");
    let err = result.err().expect("unreachable").to_string();
    assert!(err.contains("kafka") && err.contains("127.0.0.1:1"), "{err}");
}
