use axum::{
    extract::{FromRequestParts, Request},
    http::{HeaderName, HeaderValue, request::Parts},
    middleware::Next,
    response::Response,
};

/// Header carrying the correlation id in and out.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

tokio::task_local! {
    static CORRELATION_ID: String;
}

/// The request's correlation id: taken from `X-Correlation-ID` when the client sent a sane
/// one, otherwise generated. It goes into every message the request causes and back on the
/// response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<CorrelationId>().cloned().unwrap_or_else(|| Self(uuid::Uuid::now_v7().to_string())))
    }
}

/// The correlation id of the request being served on this task, if any.
pub fn current_correlation_id() -> Option<String> {
    CORRELATION_ID.try_with(Clone::clone).ok()
}

fn acceptable(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?.trim();
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_owned())
}

/// Middleware: resolves the correlation id, makes it available to handlers and error
/// bodies, and sets `X-Correlation-ID` on the response.
pub(super) async fn correlate(mut req: Request, next: Next) -> Response {
    let id =
        req.headers().get(CORRELATION_HEADER).and_then(acceptable).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(CorrelationId(id.clone()));
    tracing::Span::current().record("correlation_id", id.as_str());
    let mut response = CORRELATION_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HeaderName::from_static(CORRELATION_HEADER), value);
    }
    response
}
