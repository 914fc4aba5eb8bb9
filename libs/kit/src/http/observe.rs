use std::{collections::BTreeMap, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;
use opentelemetry::trace::TraceContextExt;
use serde::Serialize;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use utoipa::ToSchema;

use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{
    ApiError, Gate, ProblemType,
    body::limit_body,
    correlation::correlate,
    guard::{admit, security_headers},
};
use crate::service::Readiness;

/// Wraps an API router with the cross-cutting layers, outermost first: a span per request,
/// correlation ids, RED metrics per route, security headers, CORS, the gate (authentication
/// and rate limits), body limits; problem+json for unknown routes and methods.
pub fn layers(router: Router, gate: &Gate) -> Router {
    let router = router
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ProblemType::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(gate.body.clone(), limit_body))
        .layer(middleware::from_fn_with_state(gate.clone(), admit));
    let router = match gate.cors_origins.is_empty() {
        true => router,
        false => router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(gate.cors_origins.clone()))
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("idempotency-key"),
                    HeaderName::from_static(super::CORRELATION_HEADER),
                ])
                .expose_headers([
                    HeaderName::from_static(super::CORRELATION_HEADER),
                    header::RETRY_AFTER,
                    header::LOCATION,
                ])
                .max_age(std::time::Duration::from_secs(600)),
        ),
    };
    router
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(record_metrics))
        .layer(middleware::from_fn(correlate))
        .layer(middleware::from_fn(trace_request))
}

/// Routes served for operators and probes: not traced.
const OPS_ROUTES: [&str; 3] = ["/health", "/ready", "/metrics"];

/// Header on every response naming the request's trace, to look it up in Jaeger.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// A server span per request, a child of the caller's `traceparent` when it sends one; the
/// response says which trace it is in (`X-Trace-Id`).
async fn trace_request(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    if OPS_ROUTES.contains(&route.as_str()) {
        // Probes and scrapes every few seconds would bury the traces people look for.
        return next.run(req).await;
    }
    let method = req.method().clone();
    let span = tracing::info_span!(
        "http request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
    );
    let parent = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
    messaging::trace::set_parent(&span, parent);
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID
        && let Ok(value) = HeaderValue::from_str(&trace_id.to_string())
    {
        response.headers_mut().insert(HeaderName::from_static(TRACE_ID_HEADER), value);
    }
    response
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("petstore_http_requests_total", &labels).increment(1);
    metrics::histogram!("petstore_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

#[derive(Clone)]
pub(super) struct Ops {
    checks: Arc<Vec<Arc<dyn Readiness>>>,
    metrics: Option<PrometheusHandle>,
}

/// `/health` (the process is alive), `/ready` (every dependency answers; 503 naming the
/// failing ones otherwise) and `/metrics` (Prometheus text format).
pub fn ops_router(checks: Vec<Arc<dyn Readiness>>, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(Ops { checks: Arc::new(checks), metrics })
}

/// The body of `GET /health`.
#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// Always `ok`: the process answers.
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, description = "The process answers.", body = Health)))]
pub(super) async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// The body of `GET /ready`.
#[derive(Serialize, ToSchema)]
pub(super) struct ReadyReport {
    /// `ready`, or `not_ready` when a required dependency is down.
    status: ReadyStatus,
    /// Each dependency by name.
    checks: BTreeMap<String, CheckReport>,
}

/// Whether the process takes traffic.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum ReadyStatus {
    /// Every required dependency answers.
    Ready,
    /// A required dependency does not.
    NotReady,
}

/// One dependency's state.
#[derive(Serialize, ToSchema)]
pub(super) struct CheckReport {
    /// `up`; `down` (required, failing) or `degraded` (optional, failing).
    status: CheckStatus,
    /// Why it is failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A dependency's state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum CheckStatus {
    /// It answers.
    Up,
    /// A required dependency fails: the process is not ready.
    Down,
    /// An optional dependency fails: the process serves on without it.
    Degraded,
}

/// Every dependency answers (503 naming the failing ones otherwise).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "ops",
    responses(
        (status = 200, description = "Every required dependency answers.", body = ReadyReport),
        (status = 503, description = "A required dependency does not answer.", body = ReadyReport),
    )
)]
pub(super) async fn ready(State(ops): State<Ops>) -> Response {
    let mut checks = BTreeMap::new();
    let mut all_ok = true;
    for check in ops.checks.iter() {
        let result = check.check().await;
        let required = check.required();
        all_ok &= result.is_ok() || !required;
        let failed = if required { CheckStatus::Down } else { CheckStatus::Degraded };
        let report = match result {
            Ok(()) => CheckReport { status: CheckStatus::Up, error: None },
            Err(e) => CheckReport { status: failed, error: Some(e) },
        };
        checks.insert(check.name().to_owned(), report);
    }
    let (status, ready) = if all_ok {
        (StatusCode::OK, ReadyStatus::Ready)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, ReadyStatus::NotReady)
    };
    (status, axum::Json(ReadyReport { status: ready, checks })).into_response()
}

/// Prometheus metrics of this process.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4.", body = String, content_type = "text/plain"),
        (status = 404, response = super::docs::NotFound),
    )
)]
pub(super) async fn render_metrics(State(ops): State<Ops>) -> Response {
    match ops.metrics {
        Some(handle) => {
            ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
        }
        None => ApiError::new(StatusCode::NOT_FOUND, ProblemType::NotFound, "metrics are not enabled in this process")
            .into_response(),
    }
}
