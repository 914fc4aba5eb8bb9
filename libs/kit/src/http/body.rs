//! Request body limits per route (`http.body_limit`, `http.body_limits`): a body larger than
//! its route accepts is refused with 413 before a handler reads it.

use std::{collections::HashMap, sync::Arc};

use axum::{
    body::Body,
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use http_body_util::BodyExt as _;

use super::{ApiError, ProblemType};
use crate::config::HttpSettings;

/// The largest refused body still read (and dropped) so that its client sees the 413.
const DRAIN_LIMIT: u64 = 1024 * 1024;

/// The body limit of every route.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    inner: Arc<(usize, HashMap<String, usize>)>,
}

impl BodyLimits {
    /// From `http.body_limit` and `http.body_limits`.
    pub fn new(settings: &HttpSettings) -> Self {
        Self { inner: Arc::new((settings.body_limit, settings.body_limits.clone())) }
    }

    fn of(&self, method: &str, route: Option<&str>) -> usize {
        let (default, routes) = &*self.inner;
        route.and_then(|r| routes.get(&format!("{method} {r}"))).copied().unwrap_or(*default)
    }
}

/// The 413 for a body over `limit` bytes.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ProblemType::PayloadTooLarge,
        format!("the request body is larger than this route accepts ({limit} bytes)"),
    )
}

/// Middleware: refuses a declared `Content-Length` over the route's limit at once, and cuts
/// a streamed body off at the limit (the JSON extractor then answers 413).
pub(super) async fn limit_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let limit = limits.of(request.method().as_str(), route.as_deref());
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|n| *n > limit as u64) {
        // Read and drop a moderately large body before answering, as a proxy would: a client
        // still writing it when the connection closed would see a reset instead of the 413.
        // A body past the drain limit is not worth reading; that connection just closes.
        if length <= DRAIN_LIMIT {
            let _ = http_body_util::Limited::new(request.into_body(), DRAIN_LIMIT as usize).collect().await;
        }
        return too_large(limit).into_response();
    }
    let (parts, body) = request.into_parts();
    let limited = Request::from_parts(parts, Body::new(http_body_util::Limited::new(body, limit)));
    next.run(limited).await
}
