use std::{sync::Arc, time::Instant};

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
use serde_json::json;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

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
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("idempotency-key"), HeaderName::from_static(super::CORRELATION_HEADER)])
                .expose_headers([HeaderName::from_static(super::CORRELATION_HEADER), header::RETRY_AFTER, header::LOCATION])
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
struct Ops {
    checks: Arc<Vec<Arc<dyn Readiness>>>,
    metrics: Option<PrometheusHandle>,
}

/// `/health` (the process is alive), `/ready` (every dependency answers; 503 naming the
/// failing ones otherwise) and `/metrics` (Prometheus text format).
pub fn ops_router(checks: Vec<Arc<dyn Readiness>>, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/health", get(|| async { axum::Json(json!({ "status": "ok" })) }))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(Ops { checks: Arc::new(checks), metrics })
}

async fn ready(State(ops): State<Ops>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut all_ok = true;
    for check in ops.checks.iter() {
        let result = check.check().await;
        let required = check.required();
        all_ok &= result.is_ok() || !required;
        let failed = if required { "down" } else { "degraded" };
        checks.insert(
            check.name().to_owned(),
            result.map_or_else(|e| json!({"status": failed, "error": e}), |()| json!({"status": "up"})),
        );
    }
    let status = if all_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({ "status": if all_ok { "ready" } else { "not_ready" }, "checks": checks })))
        .into_response()
}

async fn render_metrics(State(ops): State<Ops>) -> Response {
    match ops.metrics {
        Some(handle) => {
            ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
        }
        None => ApiError::new(StatusCode::NOT_FOUND, ProblemType::NotFound, "metrics are not enabled in this process")
            .into_response(),
    }
}
