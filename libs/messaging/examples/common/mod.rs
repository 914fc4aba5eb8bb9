//! What the examples share: a bus on the backend named on the command line (default
//! `memory`), with the channels they use and connection settings from the environment.

#![allow(dead_code)] // each example uses part of this

use std::time::Duration;

use messaging::{Backends, Bus, MessagingConfig};
use tokio_util::sync::CancellationToken;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// The configuration for `backend`, with a fresh topic prefix so runs never mix.
pub fn config(backend: &str) -> MessagingConfig {
    let mut config = serde_json::json!({
        "default_backend": backend,
        "topic_prefix": format!("example{}.", uuid::Uuid::now_v7().simple()),
        "channels": {
            "pet-events": { "pattern": "pub_sub", "partitions": 3 },
            "pet-commands": { "pattern": "point_to_point", "partitions": 3 },
            "pet-queries": { "pattern": "request_response", "partitions": 1 },
            "pet-stream": { "pattern": "streaming", "partitions": 3 },
        },
        "kafka": { "brokers": env_or("KAFKA_BROKERS", "127.0.0.1:9092"),
                   "client": { "fetch.wait.max.ms": "10", "session.timeout.ms": "6000", "heartbeat.interval.ms": "1000" } },
        "nats": { "url": env_or("NATS_URL", "nats://127.0.0.1:4222") },
        "rabbitmq": { "url": env_or("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f") },
        "redis": { "url": env_or("REDIS_URL", "redis://127.0.0.1:6379") },
        "sns": { "region": "us-east-1", "endpoint_url": env_or("SNS_ENDPOINT", "http://127.0.0.1:5055"),
                 "access_key_id": "test", "secret_access_key": "test" },
    });
    // Sections of backends this build does not include are ignored by the configuration.
    if let Some(map) = config.as_object_mut() {
        map.retain(|k, _| !["kafka", "nats", "rabbitmq", "redis", "sns"].contains(&k.as_str()) || k == backend);
    }
    serde_json::from_value(config).expect("example configuration")
}

/// The backend named by the first command-line argument, or `memory`.
pub fn backend_from_args() -> String {
    std::env::args().nth(1).unwrap_or_else(|| "memory".to_owned())
}

/// Connects `backend` and builds a bus for `service`; `None` (with the reason printed) when
/// the backend is not compiled in or not reachable.
pub async fn bus(backend: &str, service: &str) -> Option<(Bus, CancellationToken)> {
    connect(backend, service).await.map(|(bus, _, shutdown)| (bus, shutdown))
}

/// Like [`bus`], also returning the connected backends (to read their capabilities).
pub async fn connect(backend: &str, service: &str) -> Option<(Bus, Backends, CancellationToken)> {
    let config = config(backend);
    let connected = tokio::time::timeout(Duration::from_secs(15), Backends::connect(&config)).await;
    let backends = match connected {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            eprintln!("{backend}: {e}");
            return None;
        }
        Err(_) => {
            eprintln!("{backend}: no answer within 15 s");
            return None;
        }
    };
    let shutdown = CancellationToken::new();
    match Bus::new(&backends, &config, service, shutdown.clone()).await {
        Ok(bus) => Some((bus, backends, shutdown)),
        Err(e) => {
            eprintln!("{backend}: {e}");
            None
        }
    }
}

/// A pet event payload for the examples.
pub fn pet_message(pet_id: &str) -> contracts::inventory::GetPetStatus {
    contracts::inventory::GetPetStatus { pet_id: pet_id.to_owned() }
}
