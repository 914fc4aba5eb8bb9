//! The service kit: what every petstore service does the same way — layered configuration
//! validated at start-up (and its live keys reloaded when its files change), authentication and the HTTP conventions (problem+json errors,
//! correlation ids, rate and body limits, ops routes), telemetry set-up, and serving with
//! graceful shutdown.

pub mod audit;
pub mod auth;
pub mod config;
pub mod flags;
pub mod http;
pub mod live;
pub mod resilience;
pub mod service;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod watch;

pub use config::{ConfigError, ConfigSources, Settings, StorageKind};
pub use service::{Readiness, Service, ServiceContext, StartError, app, serve, shutdown_on_signal};
