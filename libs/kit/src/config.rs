//! Typed, layered configuration (see `config/enhanced_config.yaml` for the layers and every
//! key). Unknown keys and invalid values fail start-up with the key's name.

use std::path::Path;

use figment::{
    Figment,
    providers::{Env, Format, Yaml},
};
use messaging::MessagingConfig;
use serde::Deserialize;

/// The embedded defaults: the all-in-one mode.
const DEFAULTS: &str = include_str!("../../../config/enhanced_config.yaml");

/// A configuration that could not be loaded or is invalid; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Everything a petstore process reads from configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Name of the environment (`local`, `distributed`, `test`, …), for logs.
    pub environment: String,
    /// Logging.
    pub log: LogSettings,
    /// Distributed tracing (OpenTelemetry).
    pub tracing: TracingSettings,
    /// The entry point of the all-in-one binary.
    pub http: HttpSettings,
    /// Where services keep their state.
    pub storage: StorageKind,
    /// PostgreSQL, used when `storage` is `postgres`.
    pub database: DatabaseSettings,
    /// The catalog cache.
    pub cache: CacheSettings,
    /// The bus: backends and channels.
    pub messaging: MessagingConfig,
    /// Per-service settings.
    pub services: ServicesSettings,
    /// Circuit breakers and other protections shared by every service.
    pub resilience: ResilienceSettings,
}

/// `resilience`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResilienceSettings {
    /// Every circuit breaker (catalog cache, inventory queries, payment provider).
    pub circuit_breaker: BreakerConfig,
}

/// `resilience.circuit_breaker`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open a breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before it lets a probe through.
    pub open_for_ms: u64,
    /// Calls let through at once while half-open.
    pub half_open_probes: u32,
}

impl From<BreakerConfig> for crate::resilience::BreakerSettings {
    fn from(c: BreakerConfig) -> Self {
        Self {
            failure_threshold: c.failure_threshold,
            open_for: std::time::Duration::from_millis(c.open_for_ms),
            half_open_probes: c.half_open_probes,
        }
    }
}

/// `log`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directive; `RUST_LOG` overrides it.
    pub level: String,
}

/// `tracing`: where spans go. With `otlp_endpoint` set, every span is an OpenTelemetry span
/// (its ids in every log line and message) exported there; without, no OpenTelemetry layer is
/// installed at all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    /// Base URL of an OTLP/HTTP receiver (Jaeger, an OpenTelemetry collector), e.g.
    /// `http://jaeger:4318`; spans are POSTed to `<endpoint>/v1/traces`. Empty: no export.
    pub otlp_endpoint: String,
    /// Fraction of new traces recorded, 0.0–1.0; a trace continued from a caller or a message
    /// follows the caller's decision.
    pub sample_ratio: f64,
    /// How often finished spans are sent, in milliseconds.
    pub export_interval_ms: u64,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable (local runs).
    Pretty,
}

/// `http`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Interface to bind.
    pub host: String,
    /// Port of the single entry point.
    pub port: u16,
}

/// Where services keep their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    /// In process memory: lost on exit (the all-in-one mode).
    Memory,
    /// PostgreSQL, one schema per service.
    Postgres,
}

/// `database`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connection URL (may hold a password: never logged).
    pub url: String,
    /// Pool size per service.
    pub max_connections: u32,
    /// Longest a statement may run (PostgreSQL's `statement_timeout`, lock waits included):
    /// a stuck query fails and its handler is retried instead of holding a connection forever.
    pub statement_timeout_ms: u64,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .finish()
    }
}

/// `cache`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Where cached catalog pages live.
    pub backend: CacheBackend,
    /// Redis URL, used when `backend` is `redis`.
    pub redis_url: String,
    /// Time to live of a cached entry.
    pub ttl_secs: u64,
    /// Prefix of every cache key (tests use a random one).
    pub key_prefix: String,
}

/// Where the catalog cache lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheBackend {
    /// In process memory.
    Memory,
    /// Redis, shared by every inventory instance.
    Redis,
}

/// `services`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesSettings {
    /// The order service.
    pub order: OrderSettings,
    /// The payment service.
    pub payment: PaymentSettings,
    /// The delivery service.
    pub delivery: DeliverySettings,
    /// The inventory service.
    pub inventory: InventorySettings,
    /// The notification service.
    pub notification: PortSettings,
    /// The orchestrator.
    pub orchestrator: OrchestratorSettings,
}

/// `services.orchestrator`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorSettings {
    /// Its own HTTP port when run as a separate process.
    pub port: u16,
    /// How long a saga waits for a participant's reply before it sends the command again (a
    /// bounded number of times) and then compensates.
    pub step_timeout_ms: u64,
    /// How often the orchestrator looks for sagas past their deadline.
    pub deadline_check_ms: u64,
}

/// A service with nothing to configure but its port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSettings {
    /// Its own HTTP port when run as a separate process.
    pub port: u16,
}

/// `services.order`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderSettings {
    /// Its own HTTP port when run as a separate process.
    pub port: u16,
    /// How long `POST /orders` waits for the inventory to describe the pet.
    pub pet_lookup_timeout_ms: u64,
}

/// `services.payment`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSettings {
    /// Its own HTTP port when run as a separate process.
    pub port: u16,
    /// The payment provider every charge is authorized by.
    pub provider: ProviderSettings,
}

/// `services.payment.provider`: how the provider is called, and how the built-in simulated
/// provider behaves (it declines the `declined_card` test card and can be made slow or
/// flaky to watch the circuit breaker work).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Longest one call may take; a slower call counts as a failure.
    pub timeout_ms: u64,
    /// Calls per charge, the first included, with exponential backoff and jitter between them;
    /// when all fail the payment is declined as "payment provider unavailable".
    pub max_attempts: u32,
    /// Simulated provider: how long each authorization takes.
    pub latency_ms: u64,
    /// Simulated provider: the share of calls that fail as in an outage (0.0–1.0).
    pub failure_rate: f64,
}

/// `services.inventory`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventorySettings {
    /// Its own HTTP port when run as a separate process.
    pub port: u16,
    /// How long a reservation holds the pet: past it, a saga that died (or stalls) loses the
    /// pet, which becomes available again.
    pub reservation_ttl_ms: u64,
    /// How often the inventory looks for reservations past their time and releases them.
    pub reservation_sweep_ms: u64,
}

/// `services.delivery`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Its own HTTP port when run as a separate process.
    pub port: u16,
    /// Days from scheduling to the estimated delivery.
    pub delivery_days: u32,
}

impl Settings {
    /// Loads the layers: embedded defaults, `config/<PETSTORE_ENV>.yaml`, `PETSTORE_CONFIG`,
    /// then `PETSTORE__…` variables.
    pub fn load() -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Yaml::string(DEFAULTS));
        if let Ok(env) = std::env::var("PETSTORE_ENV") {
            let path = Path::new("config").join(format!("{env}.yaml"));
            if !path.exists() {
                return Err(ConfigError(format!("PETSTORE_ENV={env}: no file {}", path.display())));
            }
            figment = figment.merge(Yaml::file(path));
        }
        if let Ok(path) = std::env::var("PETSTORE_CONFIG") {
            if !Path::new(&path).exists() {
                return Err(ConfigError(format!("PETSTORE_CONFIG={path}: no such file")));
            }
            figment = figment.merge(Yaml::file(path));
        }
        Self::from_figment(figment.merge(Env::prefixed("PETSTORE__").split("__")))
    }

    /// The embedded defaults with `overrides` (YAML) on top: for tests and tools.
    pub fn with_overrides(overrides: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Yaml::string(DEFAULTS)).merge(Yaml::string(overrides)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Self = figment.extract().map_err(|e| {
            let key = e.path.join(".");
            let mut message = String::new();
            for (i, err) in e.into_iter().enumerate() {
                if i > 0 {
                    message.push_str("; ");
                }
                message.push_str(&err.kind.to_string());
            }
            ConfigError(if key.is_empty() { message } else { format!("{key}: {message}") })
        })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.storage == StorageKind::Postgres && self.database.url.is_empty() {
            return err("database.url", "required when storage is postgres");
        }
        if self.database.max_connections == 0 {
            return err("database.max_connections", "must be at least 1");
        }
        if self.database.statement_timeout_ms == 0 {
            return err("database.statement_timeout_ms", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return err("tracing.sample_ratio", "must be between 0.0 and 1.0");
        }
        if self.tracing.export_interval_ms == 0 {
            return err("tracing.export_interval_ms", "must be at least 1");
        }
        let endpoint = &self.tracing.otlp_endpoint;
        if !(endpoint.is_empty() || endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return err("tracing.otlp_endpoint", "must be an http:// or https:// URL (OTLP/HTTP), or empty");
        }
        if self.services.orchestrator.step_timeout_ms == 0 {
            return err("services.orchestrator.step_timeout_ms", "must be at least 1");
        }
        if self.services.inventory.reservation_ttl_ms == 0 {
            return err("services.inventory.reservation_ttl_ms", "must be at least 1");
        }
        if self.services.inventory.reservation_sweep_ms == 0 {
            return err("services.inventory.reservation_sweep_ms", "must be at least 1");
        }
        if self.services.orchestrator.deadline_check_ms == 0 {
            return err("services.orchestrator.deadline_check_ms", "must be at least 1");
        }
        let provider = &self.services.payment.provider;
        if provider.timeout_ms == 0 {
            return err("services.payment.provider.timeout_ms", "must be at least 1");
        }
        if provider.max_attempts == 0 {
            return err("services.payment.provider.max_attempts", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&provider.failure_rate) {
            return err("services.payment.provider.failure_rate", "must be between 0.0 and 1.0");
        }
        let breaker = &self.resilience.circuit_breaker;
        if breaker.failure_threshold == 0 {
            return err("resilience.circuit_breaker.failure_threshold", "must be at least 1");
        }
        if breaker.open_for_ms == 0 {
            return err("resilience.circuit_breaker.open_for_ms", "must be at least 1");
        }
        if breaker.half_open_probes == 0 {
            return err("resilience.circuit_breaker.half_open_probes", "must be at least 1");
        }
        if self.cache.ttl_secs == 0 {
            return err("cache.ttl_secs", "must be at least 1");
        }
        self.messaging.validate().map_err(|e| match e {
            messaging::BusError::Config(message) => ConfigError(message),
            other => ConfigError(other.to_string()),
        })?;
        for channel in contracts::channels::ALL {
            if !self.messaging.channels.contains_key(*channel) {
                return err(
                    &format!("messaging.channels.{channel}"),
                    "missing: every service channel must be declared",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_all_in_one_mode() {
        let s = Settings::with_overrides("{}").expect("defaults load");
        assert_eq!(s.storage, StorageKind::Memory);
        assert_eq!(s.messaging.default_backend, messaging::BackendKind::Memory);
        assert_eq!(s.http.port, 8080);
    }

    #[test]
    fn errors_name_the_offending_key() {
        let cases = [
            ("http: { port: eighty }", "http.port"),
            ("http: { colour: blue }", "colour"),
            ("storage: floppy", "storage"),
            ("database: { max_connections: 0 }", "database.max_connections"),
            ("database: { statement_timeout_ms: 0 }", "database.statement_timeout_ms"),
            ("services: { payment: { provider: { failure_rate: 2 } } }", "services.payment.provider.failure_rate"),
            ("services: { payment: { provider: { max_attempts: 0 } } }", "services.payment.provider.max_attempts"),
            (
                "resilience: { circuit_breaker: { failure_threshold: 0 } }",
                "resilience.circuit_breaker.failure_threshold",
            ),
            ("resilience: { circuit_breaker: { open_for_ms: 0 } }", "resilience.circuit_breaker.open_for_ms"),
            ("tracing: { sample_ratio: 1.5 }", "tracing.sample_ratio"),
            ("services: { inventory: { reservation_ttl_ms: 0 } }", "services.inventory.reservation_ttl_ms"),
            ("services: { inventory: { reservation_sweep_ms: 0 } }", "services.inventory.reservation_sweep_ms"),
            ("tracing: { otlp_endpoint: 'jaeger:4317' }", "tracing.otlp_endpoint"),
            ("messaging: { default_backend: kafka }", "messaging.kafka"),
            ("messaging: { backend_selection: { pub_sub: nats } }", "messaging.nats"),
            (
                "messaging: { backend_selection: { streaming: carrier_pigeon } }",
                "messaging.backend_selection.streaming",
            ),
            ("messaging: { channels: { order-events: { pattern: telepathy } } }", "messaging.channels.order-events"),
        ];
        for (yaml, key) in cases {
            let err = Settings::with_overrides(yaml).expect_err(yaml).to_string();
            assert!(err.contains(key), "{yaml}: `{err}` does not name `{key}`");
        }
    }

    #[test]
    fn database_url_is_never_printed() {
        let s = Settings::with_overrides("database: { url: 'postgres://u:secret@h/db' }").expect("loads");
        assert!(!format!("{s:?}").contains("secret"));
    }
}
