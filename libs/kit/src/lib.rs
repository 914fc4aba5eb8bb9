//! The service kit: what every petstore service does the same way — layered configuration
//! validated at start-up, authentication and the HTTP conventions (problem+json errors,
//! correlation ids, rate and body limits, ops routes), telemetry set-up, and serving with
//! graceful shutdown.

pub mod audit;
pub mod auth;
pub mod config;
pub mod flags;
pub mod http;
pub mod resilience;
pub mod service;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{ConfigError, Settings, StorageKind};
pub use service::{Readiness, Service, ServiceContext, StartError, app, serve, shutdown_on_signal};
