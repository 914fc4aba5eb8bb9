//! Logging and metrics set-up, once per process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings};

/// Installs the global `tracing` subscriber: JSON lines or human-readable output, filtered by
/// `RUST_LOG` or else the configured level. Later calls do nothing.
pub fn init_logging(settings: &LogSettings, service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_current_span(true)).try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
    if result.is_ok() {
        tracing::info!(service, "logging initialised");
    }
}

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first call. `None` if another recorder
/// was installed first (metrics then go there). Call it before any metric handle is resolved
/// (`ServiceContext::connect` does): handles resolved earlier stay bound to the no-op recorder.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let seconds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}
