use axum::{
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::current_correlation_id;

/// The body of every error response: RFC 9457 problem details, `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (one of [`ProblemType`]'s, or a service's own).
    #[serde(rename = "type")]
    #[schema(example = "https://petstore.example.com/problems/not-found")]
    pub problem_type: String,
    /// A short summary of the kind of problem.
    #[schema(example = "Not found")]
    pub title: String,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599, example = 404)]
    pub status: u16,
    /// What went wrong with this request, for a person to read.
    pub detail: String,
    /// The request's correlation id (`X-Correlation-Id`), to find its logs and messages.
    pub correlation_id: Option<String>,
}

impl Problem {
    /// A problem of this request (its correlation id filled in).
    pub fn new(problem_type: String, title: &str, status: StatusCode, detail: String) -> Self {
        Self {
            problem_type,
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            correlation_id: current_correlation_id(),
        }
    }
}

impl IntoResponse for Problem {
    /// `status` with this body as `application/problem+json`.
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(super::docs::PROBLEM_JSON));
        response
    }
}

/// The stable problem types of the API: the `type` member of every error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// The request body or parameters are malformed or invalid (400/422).
    Validation,
    /// No such resource (404).
    NotFound,
    /// The request conflicts with the current state (409).
    Conflict,
    /// The caller is not identified (401).
    Unauthenticated,
    /// The caller may not do this (403).
    Forbidden,
    /// The body is larger than the route accepts (413).
    PayloadTooLarge,
    /// Too many requests in the rate limit's window (429).
    RateLimited,
    /// The body is not JSON (415).
    UnsupportedMediaType,
    /// The route exists but not for this method (405).
    MethodNotAllowed,
    /// A dependency is unavailable; try again later (503).
    Unavailable,
    /// Something went wrong on our side (500).
    Internal,
}

impl ProblemType {
    fn slug(self) -> &'static str {
        match self {
            Self::Validation => "validation-error",
            Self::NotFound => "not-found",
            Self::Conflict => "conflict",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::PayloadTooLarge => "payload-too-large",
            Self::RateLimited => "rate-limited",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Unavailable => "service-unavailable",
            Self::Internal => "internal-error",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Validation => "Invalid request",
            Self::NotFound => "Not found",
            Self::Conflict => "Conflict",
            Self::Unauthenticated => "Authentication required",
            Self::Forbidden => "Forbidden",
            Self::PayloadTooLarge => "Payload too large",
            Self::RateLimited => "Too many requests",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Unavailable => "Service unavailable",
            Self::Internal => "Internal server error",
        }
    }

    /// The `type` URI.
    pub fn uri(self) -> String {
        format!("https://petstore.example.com/problems/{}", self.slug())
    }
}

/// An error answered as RFC 9457 `application/problem+json`. Internal causes are logged once
/// here and never shown to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    problem: ProblemType,
    detail: String,
    retry_after: Option<u64>,
    cause: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// A problem with a status, a type and a detail the client may read.
    pub fn new(status: StatusCode, problem: ProblemType, detail: impl Into<String>) -> Self {
        Self { status, problem, detail: detail.into(), retry_after: None, cause: None, headers: Vec::new() }
    }

    /// 422: the request is well-formed but its content is invalid.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, ProblemType::Validation, detail)
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ProblemType::Validation, detail)
    }

    /// 403: the caller is known (or anonymous) and may not do this; `detail` says why.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ProblemType::Forbidden, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ProblemType::NotFound, detail)
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ProblemType::Conflict, detail)
    }

    /// 503 with `Retry-After`; `cause` is logged, not shown.
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64, cause: impl std::fmt::Display) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            cause: Some(cause.to_string()),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, ProblemType::Unavailable, detail)
        }
    }

    /// 500; `cause` is logged, the client sees a generic detail.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ProblemType::Internal,
                "the server could not complete the request",
            )
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Adds `Retry-After: secs` to the response.
    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Adds a header to the response (`WWW-Authenticate`, rate-limit headers).
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem::new(self.problem.uri(), self.problem.title(), self.status, self.detail);
        if let Some(cause) = &self.cause {
            tracing::error!(
                status = self.status.as_u16(),
                correlation_id = problem.correlation_id,
                cause,
                "request failed"
            );
        }
        let mut response = problem.into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}
