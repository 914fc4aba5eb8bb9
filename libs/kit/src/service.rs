//! What a service is to the processes that run it: a router, readiness checks and
//! background tasks, started from a shared context and stopped by one cancellation token.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use messaging::Backends;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    Settings, http,
    live::{Live, LiveSettings},
    resilience::BreakerSettings,
};

/// A dependency `/ready` checks.
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// The dependency's name in the `/ready` body.
    fn name(&self) -> &'static str;
    /// `Ok` when it answers; otherwise why not.
    async fn check(&self) -> Result<(), String>;
    /// Whether the service is unready without it. A soft dependency (a cache, a circuit
    /// breaker) reports `degraded` instead and keeps the service in rotation.
    fn required(&self) -> bool {
        true
    }
}

#[async_trait]
impl Readiness for Backends {
    fn name(&self) -> &'static str {
        "bus"
    }

    async fn check(&self) -> Result<(), String> {
        self.health().await.map_err(|e| e.to_string())
    }
}

/// What every service is started with. In the all-in-one binary the six services share one
/// context (and so one memory bus); separate processes each build their own.
#[derive(Clone)]
pub struct ServiceContext {
    /// Configuration as it was at start-up: what everything that does not change at run time
    /// reads.
    pub settings: Arc<Settings>,
    /// Configuration in force: the start-up settings with the keys of
    /// [`crate::live::LIVE_KEYS`] as last reloaded from the watched files. What applies those
    /// keys subscribes to it.
    pub live: LiveSettings,
    /// Connected bus backends.
    pub backends: Backends,
    /// Fired by SIGTERM/Ctrl+C: stop taking work, finish what is in hand.
    pub shutdown: CancellationToken,
    /// Background tasks (consumers, relays); awaited on shutdown.
    pub tasks: TaskTracker,
    /// Authentication, rate and body limits of every route this process serves.
    pub gate: http::Gate,
    /// The feature flags in force (reloaded when their file changes).
    pub flags: crate::flags::Flags,
}

impl ServiceContext {
    /// Connects the configured bus backends and arms the shutdown signal handler.
    pub async fn connect(settings: Settings) -> Result<Self, StartError> {
        // Before anything resolves a metric handle: handles resolved earlier would be bound to
        // the no-op recorder and record nothing.
        crate::telemetry::metrics_handle();
        let backends =
            Backends::connect(&settings.messaging).await.map_err(StartError::at("bus", "connecting backends"))?;
        Self::assemble(settings, backends, shutdown_on_signal()).map_err(StartError::at("http", "configuring the gate"))
    }

    /// A context of connected `backends`, stopped by `shutdown`.
    pub fn assemble(
        settings: Settings,
        backends: Backends,
        shutdown: CancellationToken,
    ) -> Result<Self, crate::ConfigError> {
        let gate = http::Gate::new(&settings, &shutdown)?;
        let flags = crate::flags::Flags::load(&settings.flags)?;
        flags.watch(&shutdown)?;
        let settings = Arc::new(settings);
        let live = LiveSettings::watch(Arc::clone(&settings), &shutdown)?;
        gate.limits.follow(&live, &shutdown);
        crate::telemetry::follow_log_level(&live, &shutdown);
        Ok(Self { settings, live, backends, shutdown, tasks: TaskTracker::new(), gate, flags })
    }

    /// `resilience.circuit_breaker` in force, for [`crate::resilience::CircuitBreaker::live`].
    pub fn breaker_settings(&self) -> Live<BreakerSettings> {
        self.live.section(|s| s.resilience.circuit_breaker.into())
    }

    /// Closes `bus` when shutdown fires: its consumers finish the message in hand and leave
    /// their groups; the context's `run` waits for that.
    pub fn close_on_shutdown(&self, bus: &messaging::Bus) {
        let bus = bus.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            shutdown.cancelled().await;
            bus.close().await;
        });
    }

    /// Serves `services` on `listener` until shutdown, then waits for background tasks
    /// (consumers finishing their message, relays flushing the outbox).
    pub async fn run(&self, listener: TcpListener, services: Vec<Service>) -> Result<(), StartError> {
        serve(listener, services, &self.gate, self.shutdown.clone())
            .await
            .map_err(StartError::at("http", "serving"))?;
        self.shutdown.cancel();
        self.tasks.close();
        // Consumers finish the message in hand, relays flush the outbox (bounded by their
        // own timeouts); a task that still hangs must not keep the process alive forever.
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait()).await.is_err() {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "background tasks did not finish in time; exiting anyway");
        } else {
            tracing::info!("shutdown complete: requests answered, consumers stopped, outbox flushed");
        }
        Ok(())
    }
}

/// How long shutdown waits for background tasks after the HTTP server has drained.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// A service could not start; says which service, at which stage, and why.
#[derive(Debug, thiserror::Error)]
#[error("{service}: {stage}: {source}")]
pub struct StartError {
    /// The service (or component).
    pub service: &'static str,
    /// What it was doing.
    pub stage: &'static str,
    /// Why it failed.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl StartError {
    /// A `map_err` adapter: `.map_err(StartError::at("order", "opening storage"))`.
    pub fn at<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
        service: &'static str,
        stage: &'static str,
    ) -> impl FnOnce(E) -> Self {
        move |e| Self { service, stage, source: e.into() }
    }
}

/// A started service: its API routes, their description and what `/ready` must check for it.
pub struct Service {
    /// The service's name.
    pub name: &'static str,
    /// Its API routes (without the ops routes and layers).
    pub router: Router,
    /// The OpenAPI description of `router`'s routes; [`serve`] merges those of the services
    /// it serves into one document with the shared parts ([`http::docs`]).
    pub openapi: utoipa::openapi::OpenApi,
    /// Its dependencies.
    pub readiness: Vec<Arc<dyn Readiness>>,
    /// Where its audited requests are recorded (its own schema, or memory).
    pub audit: Arc<dyn crate::audit::AuditLog>,
}

/// Serves [`app`] on `listener` until `shutdown` fires, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    services: Vec<Service>,
    gate: &http::Gate,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app(services, gate);
    // The peer's address keys the rate limit of anonymous callers.
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// What a process serving `services` answers: their routes, the ops routes, the API
/// description of all of them (`GET /openapi.json`, Swagger UI at `/docs`), wrapped with the
/// API layers.
pub fn app(services: Vec<Service>, gate: &http::Gate) -> Router {
    let document = http::docs::document(&services);
    let mut api = Router::new();
    let mut checks = Vec::new();
    let mut audit_logs = Vec::new();
    for service in services {
        api = api.merge(crate::audit::audited(service.router, service.name, service.audit.clone()));
        audit_logs.push(service.audit);
        checks.extend(service.readiness);
    }
    let api = api.merge(crate::audit::router(audit_logs));
    checks.sort_by_key(|c| c.name());
    checks.dedup_by_key(|c| c.name());
    let api =
        api.merge(http::ops_router(checks, crate::telemetry::metrics_handle())).merge(http::docs::router(document));
    http::layers(api, gate)
}

/// A token fired by Ctrl+C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
        tracing::info!("shutdown signal received");
        fire.cancel();
    });
    token
}
