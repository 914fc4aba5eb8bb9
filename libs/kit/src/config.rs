//! Typed, layered configuration (see `config/enhanced_config.yaml` for the layers and every
//! key). Unknown keys and invalid values fail start-up with the key's name. The files a
//! configuration was read from are watched: [`crate::live`] applies the keys that may change
//! at run time.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

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
    /// Who may call: bearer token checks.
    pub auth: AuthSettings,
    /// Request quotas per route.
    pub rate_limits: RateLimitSettings,
    /// Feature flags.
    pub flags: FlagSettings,
    /// Where these settings were read from (not a key).
    #[serde(skip)]
    pub(crate) origin: Origin,
}

/// Where a [`Settings`] was read from: its files (to read them again) and its layers merged
/// (to tell which keys a reload changes).
#[derive(Clone, Default)]
pub(crate) struct Origin {
    /// The files and variables, when it was read from them (not from a test's YAML).
    pub(crate) sources: Option<ConfigSources>,
    /// Every key with its value, as the layers make it.
    pub(crate) raw: Arc<serde_json::Value>,
}

impl std::fmt::Debug for Origin {
    // The raw values hold secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin").field("sources", &self.sources).finish_non_exhaustive()
    }
}

/// The layers a configuration is read from, over the embedded defaults (later wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSources {
    /// `config/<PETSTORE_ENV>.yaml`, when `PETSTORE_ENV` is set.
    pub overlay: Option<PathBuf>,
    /// The file `PETSTORE_CONFIG` names.
    pub file: Option<PathBuf>,
    /// Whether the `PETSTORE__SECTION__KEY` environment variables are laid over the files.
    pub env_vars: bool,
}

impl ConfigSources {
    /// What the environment names: `config/<PETSTORE_ENV>.yaml`, the `PETSTORE_CONFIG` file and
    /// the `PETSTORE__…` variables.
    pub fn from_env() -> Self {
        Self {
            overlay: std::env::var("PETSTORE_ENV").ok().map(|env| Path::new("config").join(format!("{env}.yaml"))),
            file: std::env::var_os("PETSTORE_CONFIG").map(PathBuf::from),
            env_vars: true,
        }
    }

    /// `path` over the embedded defaults, without environment variables (tests, tools).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self { overlay: None, file: Some(path.into()), env_vars: false }
    }

    /// The files, in the order they are laid.
    pub fn files(&self) -> Vec<PathBuf> {
        self.overlay.iter().chain(&self.file).cloned().collect()
    }

    /// Reads every layer and validates the result; the error names the key (or the missing
    /// file).
    pub fn load(&self) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Yaml::string(DEFAULTS));
        if let Some(path) = &self.overlay {
            if !path.exists() {
                let env = path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
                return Err(ConfigError(format!("PETSTORE_ENV={env}: no file {}", path.display())));
            }
            figment = figment.merge(Yaml::file_exact(path));
        }
        if let Some(path) = &self.file {
            if !path.exists() {
                return Err(ConfigError(format!("PETSTORE_CONFIG={}: no such file", path.display())));
            }
            figment = figment.merge(Yaml::file_exact(path));
        }
        if self.env_vars {
            figment = figment.merge(Env::prefixed("PETSTORE__").split("__"));
        }
        Settings::from_figment(figment, Some(self.clone()))
    }
}

/// `flags`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagSettings {
    /// The flagd definition file, watched and reloaded when it changes; it must exist. Unset:
    /// `config/flags.json` when the process runs where that file is (the repository), else
    /// the definitions built into the binary, without reload.
    #[serde(default)]
    pub file: Option<std::path::PathBuf>,
}

/// The HS256 secret of the development configuration: accepted by the all-in-one and the
/// tests, refused by `environment: production`.
pub const DEVELOPMENT_SECRET: &str = "petstore-development-secret-not-for-production";

/// `auth`: where token-signing keys come from and what every token must say.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// An OIDC issuer (e.g. a Keycloak realm's URL). When set, keys come from its JWKS
    /// (RS256, ES256) and tokens' `iss` must be this URL; `hs256_secret` and `issuer` are
    /// not used.
    pub oidc_issuer_url: String,
    /// How often the issuer's keys are fetched again.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// Least time between two fetches caused by a token with an unknown `kid`.
    #[serde(with = "humantime_serde")]
    pub jwks_refetch_cooldown: Duration,
    /// Longest a request to the issuer may take.
    #[serde(with = "humantime_serde")]
    pub jwks_timeout: Duration,
    /// Development key source: the `iss` of tokens signed with `hs256_secret`.
    pub issuer: String,
    /// The `aud` every token must include (both key sources).
    pub audience: String,
    /// Development key source: the shared HS256 secret (at least 32 bytes; never logged).
    pub hs256_secret: String,
    /// Clock skew allowed on `exp` and `nbf` (at most 30 s).
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("oidc_issuer_url", &self.oidc_issuer_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("hs256_secret", &"<redacted>")
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

/// `rate_limits`: request quotas, per instance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Routes without their own quota, for a caller with a valid token (per subject).
    pub authenticated: RateLimit,
    /// Routes without their own quota, for a caller without a token (per client address).
    pub anonymous: RateLimit,
    /// Quotas of single routes, keyed `"<METHOD> <route>"` as the router names it, e.g.
    /// `"POST /orders"` or `"GET /pets/{pet_id}"`.
    #[serde(default)]
    pub routes: BTreeMap<String, RateLimit>,
    /// Proxies whose `X-Forwarded-For` names the client (the gateway); from anyone else the
    /// header is ignored and the socket's address counts.
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
}

/// One quota: `requests` every `per`, with up to `burst` at once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per period.
    pub requests: NonZeroU32,
    /// The period.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// Requests allowed at once after a quiet spell.
    pub burst: NonZeroU32,
}

/// `http.cors`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins (`https://shop.example.com`) browsers may call the API from; empty: no CORS
    /// headers at all, so browsers allow only same-origin calls.
    pub allowed_origins: Vec<String>,
}

/// `resilience`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResilienceSettings {
    /// Every circuit breaker (catalog cache, inventory queries, payment provider).
    pub circuit_breaker: BreakerConfig,
}

/// `resilience.circuit_breaker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
    /// Largest request body a route accepts unless `body_limits` says otherwise, in bytes.
    pub body_limit: usize,
    /// Body limits of single routes, keyed `"<METHOD> <route>"`.
    #[serde(default)]
    pub body_limits: HashMap<String, usize>,
    /// Cross-origin calls from browsers.
    pub cors: CorsSettings,
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// then `PETSTORE__…` variables. The files are watched once a context is assembled.
    pub fn load() -> Result<Self, ConfigError> {
        ConfigSources::from_env().load()
    }

    /// The embedded defaults with the file at `path` on top (no environment variables), as
    /// `PETSTORE_CONFIG` would lay it; the file is watched once a context is assembled.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        ConfigSources::file(path).load()
    }

    /// The embedded defaults with `overrides` (YAML) on top: for tests and tools. Nothing is
    /// watched: these settings never change.
    pub fn with_overrides(overrides: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Yaml::string(DEFAULTS)).merge(Yaml::string(overrides)), None)
    }

    /// The layers these settings were read from; `None` for [`Settings::with_overrides`].
    pub fn sources(&self) -> Option<&ConfigSources> {
        self.origin.sources.as_ref()
    }

    fn from_figment(figment: Figment, sources: Option<ConfigSources>) -> Result<Self, ConfigError> {
        let described = |e: figment::Error| {
            let key = e.path.join(".");
            let mut message = String::new();
            for (i, err) in e.into_iter().enumerate() {
                if i > 0 {
                    message.push_str("; ");
                }
                message.push_str(&err.kind.to_string());
            }
            ConfigError(if key.is_empty() { message } else { format!("{key}: {message}") })
        };
        let mut settings: Self = figment.extract().map_err(described)?;
        settings.validate()?;
        let raw: serde_json::Value = figment.extract().map_err(described)?;
        settings.origin = Origin { sources, raw: Arc::new(raw) };
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            return err("log.level", &format!("not a tracing filter directive: {e}"));
        }
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
        self.validate_auth()?;
        let route_key = |key: &str| {
            key.split_once(' ').is_some_and(|(m, r)| {
                ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m) && r.starts_with('/') && !r.contains(' ')
            })
        };
        for (section, keys) in [
            ("rate_limits.routes", self.rate_limits.routes.keys().collect::<Vec<_>>()),
            ("http.body_limits", self.http.body_limits.keys().collect()),
        ] {
            if let Some(bad) = keys.into_iter().find(|k| !route_key(k)) {
                return err(&format!("{section}.{bad}"), "must be `<METHOD> <route>`, e.g. `POST /orders`");
            }
        }
        let quotas = [("authenticated", &self.rate_limits.authenticated), ("anonymous", &self.rate_limits.anonymous)];
        let routes = self.rate_limits.routes.iter().map(|(k, v)| (k.as_str(), v));
        if let Some((name, _)) = quotas.into_iter().chain(routes).find(|(_, q)| q.per.is_zero()) {
            return err(&format!("rate_limits.{name}.per"), "must be longer than zero");
        }
        if self.http.body_limit == 0 || self.http.body_limits.values().any(|v| *v == 0) {
            return err("http.body_limit", "must be at least 1 byte");
        }
        if let Some(bad) = self.http.cors.allowed_origins.iter().find(|o| {
            !(o.starts_with("http://") || o.starts_with("https://")) || axum::http::HeaderValue::from_str(o).is_err()
        }) {
            return err(
                "http.cors.allowed_origins",
                &format!("`{bad}` is not an origin such as https://shop.example.com"),
            );
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

impl Settings {
    fn validate_auth(&self) -> Result<(), ConfigError> {
        let err = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        let auth = &self.auth;
        if auth.audience.trim().is_empty() {
            return err("auth.audience", "must not be empty");
        }
        if auth.leeway > Duration::from_secs(30) {
            return err("auth.leeway", "must be at most 30s");
        }
        let production = self.environment == "production";
        if auth.oidc_issuer_url.is_empty() {
            if production {
                return err("auth.oidc_issuer_url", "required in production: tokens must come from an OIDC issuer");
            }
            if auth.issuer.trim().is_empty() {
                return err("auth.issuer", "must not be empty");
            }
            if auth.hs256_secret.len() < 32 {
                return err("auth.hs256_secret", "must be at least 32 bytes");
            }
        } else {
            let url = &auth.oidc_issuer_url;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return err("auth.oidc_issuer_url", "must be an http:// or https:// URL");
            }
            if auth.jwks_refresh.is_zero() || auth.jwks_refetch_cooldown.is_zero() || auth.jwks_timeout.is_zero() {
                return err(
                    "auth.jwks_refresh",
                    "jwks_refresh, jwks_refetch_cooldown and jwks_timeout must be longer than zero",
                );
            }
        }
        if production && auth.hs256_secret == DEVELOPMENT_SECRET {
            return err("auth.hs256_secret", "the development secret is refused in production");
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
            ("auth: { hs256_secret: short }", "auth.hs256_secret"),
            ("auth: { leeway: 2m }", "auth.leeway"),
            ("auth: { leeway: soon }", "auth.leeway"),
            ("auth: { oidc_issuer_url: 'keycloak:8080' }", "auth.oidc_issuer_url"),
            ("environment: production", "auth.oidc_issuer_url"),
            ("environment: production\nauth: { oidc_issuer_url: 'http://kc/realms/p' }", "auth.hs256_secret"),
            (
                "rate_limits: { routes: { '/orders': { requests: 1, per: 1s, burst: 1 } } }",
                "rate_limits.routes./orders",
            ),
            ("rate_limits: { anonymous: { requests: 0, per: 1s, burst: 1 } }", "rate_limits.anonymous.requests"),
            ("rate_limits: { anonymous: { requests: 1, per: 0s, burst: 1 } }", "rate_limits.anonymous.per"),
            ("http: { cors: { allowed_origins: ['*'] } }", "http.cors.allowed_origins"),
            ("http: { body_limit: 0 }", "http.body_limit"),
            ("log: { level: 'info,kit=loud' }", "log.level"),
        ];
        for (yaml, key) in cases {
            let err = Settings::with_overrides(yaml).expect_err(yaml).to_string();
            assert!(err.contains(key), "{yaml}: `{err}` does not name `{key}`");
        }
    }

    #[test]
    fn a_file_is_laid_over_the_defaults_and_remembered_for_reloads() {
        let path = std::env::temp_dir().join(format!("petstore-config-{}.yaml", uuid::Uuid::now_v7().simple()));
        std::fs::write(&path, "http: { port: 9090 }").expect("write");
        let s = Settings::from_file(&path).expect("loads");
        assert_eq!((s.http.port, s.storage), (9090, StorageKind::Memory));
        assert_eq!(s.sources().map(ConfigSources::files), Some(vec![path.clone()]));
        assert!(Settings::with_overrides("{}").expect("defaults").sources().is_none(), "nothing to reload");
        std::fs::remove_file(&path).expect("remove");
        let missing = Settings::from_file(&path).expect_err("no file").to_string();
        assert!(missing.contains("no such file"), "{missing}");
    }

    #[test]
    fn secrets_are_never_printed() {
        let s = Settings::with_overrides("auth: { hs256_secret: 'a-very-long-and-very-secret-signing-key' }")
            .expect("loads");
        assert!(!format!("{s:?}").contains("very-secret"));
    }

    #[test]
    fn the_production_overlay_demands_an_issuer() {
        let overlay = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/production.yaml"))
            .expect("config/production.yaml");
        let without = Settings::from_figment(Figment::from(Yaml::string(DEFAULTS)).merge(Yaml::string(&overlay)), None);
        assert!(without.expect_err("no issuer").to_string().contains("auth.oidc_issuer_url"));
        let with = Figment::from(Yaml::string(DEFAULTS))
            .merge(Yaml::string(&overlay))
            .merge(Yaml::string("auth: { oidc_issuer_url: 'https://sso.example.com/realms/petstore' }\nmessaging: { kafka: { brokers: 'k:9092' } }"));
        Settings::from_figment(with, None).expect("production with an issuer starts");
    }

    #[test]
    fn production_starts_with_an_issuer_and_its_own_secret() {
        let yaml = "environment: production\nauth: { oidc_issuer_url: 'http://kc/realms/p', hs256_secret: '' }";
        assert!(Settings::with_overrides(yaml).is_ok());
    }

    #[test]
    fn database_url_is_never_printed() {
        let s = Settings::with_overrides("database: { url: 'postgres://u:secret@h/db' }").expect("loads");
        assert!(!format!("{s:?}").contains("u:secret@"));
    }
}
