//! Logs, traces and metrics, set up once per process (`docs/architecture.md`, "Observability").
//!
//! - **Logs**: one JSON object per line (or a compact human format for local runs) with the
//!   service, level, message, `correlation_id`, `trace_id`, `span_id` and the saga and order
//!   ids when a span in scope knows them — so `grep <correlation id>` over every service's
//!   logs shows one order's journey.
//! - **Traces**: every `tracing` span becomes an OpenTelemetry span; they are exported over
//!   OTLP/HTTP when `tracing.otlp_endpoint` is set. Context crosses HTTP (`traceparent`) and
//!   every message (`messaging::trace`).
//! - **Metrics**: a Prometheus recorder, served on `/metrics`.
//!
//! The log filter is swapped at run time when `log.level` changes in a watched configuration
//! file ([`crate::live`]).

mod logs;
mod traces;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{EnvFilter, Layer, Registry, filter::LevelFilter, fmt, prelude::*, reload};

use crate::{Settings, config::LogFormat, live::LiveSettings};

/// What [`init`] installed; dropping it sends the spans not yet exported (call it last in
/// `main`, after the service has shut down).
#[must_use = "dropping the guard stops span export"]
pub struct Telemetry {
    tracer: Option<traces::Tracer>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.take() {
            tracer.shutdown();
        }
    }
}

/// Installs the global `tracing` subscriber for `service`: the log output (filtered by
/// `RUST_LOG`, else `log.level`; a later change of `log.level` replaces either, see
/// [`set_log_level`]) and, when `tracing.otlp_endpoint` is set, the OpenTelemetry layer (info
/// spans and above, whatever the log level, so traces stay whole when logs are quiet). Later
/// calls install nothing and return an empty guard.
pub fn init(settings: &Settings, service: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log.level));
    let (filter, handle) = reload::Layer::new(filter);
    let logs = match settings.log.format {
        LogFormat::Json => logs::JsonLogs::new(service).with_filter(filter).boxed(),
        LogFormat::Pretty => fmt::layer().compact().with_filter(filter).boxed(),
    };
    // Without an endpoint spans would go nowhere: no OpenTelemetry layer, so nothing is paid
    // for them (messages still carry a `traceparent`, see `messaging::trace`).
    let tracer = match settings.tracing.otlp_endpoint.is_empty() {
        true => None,
        false => match traces::Tracer::new(&settings.tracing, service) {
            Ok(tracer) => Some(tracer),
            Err(e) => {
                eprintln!("tracing.otlp_endpoint: {e}; spans will not be exported");
                None
            }
        },
    };
    let spans = tracer.as_ref().map(|t| t.layer().with_filter(LevelFilter::INFO));
    if tracing_subscriber::registry().with(logs).with(spans).try_init().is_err() {
        return Telemetry { tracer: None };
    }
    let _ = LOG_FILTER.set(handle);
    tracing::info!(
        service,
        environment = %settings.environment,
        otlp_endpoint = settings.tracing.otlp_endpoint.as_str(),
        "telemetry initialised"
    );
    Telemetry { tracer }
}

/// The log filter of the subscriber [`init`] installed, swappable.
static LOG_FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The log filter in force (its directives), or `None` when [`init`] installed no subscriber.
pub fn log_filter() -> Option<String> {
    LOG_FILTER.get()?.with_current(ToString::to_string).ok()
}

/// Filters the logs by `directive` (a `tracing` `EnvFilter` directive such as
/// `info,order=debug`) from now on. Without a subscriber of [`init`]'s, nothing changes.
pub fn set_log_level(directive: &str) -> Result<(), String> {
    let filter = EnvFilter::builder().parse(directive).map_err(|e| format!("log.level: {e}"))?;
    let Some(handle) = LOG_FILTER.get() else { return Ok(()) };
    handle.reload(filter).map_err(|e| format!("log.level: {e}"))?;
    tracing::info!(level = directive, "log filter changed");
    Ok(())
}

/// Applies every change of `log.level` in `live` to the log filter, until `shutdown`.
pub fn follow_log_level(live: &LiveSettings, shutdown: &CancellationToken) {
    live.follow(
        shutdown,
        |s| s.log.level.clone(),
        |level| {
            if let Err(error) = set_log_level(level) {
                tracing::error!(%error, "log filter not changed");
            }
        },
    );
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
