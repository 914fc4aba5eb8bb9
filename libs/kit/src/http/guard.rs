//! The gate every request passes before its handler: authentication (zero trust: a bearer
//! token on every route but the public ones), then the rate limit of its route.

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use tokio_util::sync::CancellationToken;

use super::{ApiError, ProblemType, body::BodyLimits, limits::RateLimits};
use crate::{
    ConfigError, Settings,
    auth::{AuthError, Authenticator},
};

/// Routes anyone may call without a token: catalog reads, probes, metrics and the API
/// description. Everything else needs a valid bearer token.
pub const PUBLIC_ROUTES: [(&str, &str); 8] = [
    ("GET", "/pets"),
    ("GET", "/pets/{pet_id}"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/{*path}"),
];

/// Whether `method route` is on the public list (`HEAD` counts as `GET`).
pub fn is_public(method: &Method, route: Option<&str>) -> bool {
    let method = if method == Method::HEAD { "GET" } else { method.as_str() };
    route.is_some_and(|route| PUBLIC_ROUTES.iter().any(|(m, r)| *m == method && *r == route))
}

/// What the gate needs: how to check tokens, the rate limits, body limits and CORS. One per
/// process, built from configuration.
#[derive(Clone)]
pub struct Gate {
    /// Verifies bearer tokens.
    pub auth: Authenticator,
    /// Per-route request quotas.
    pub limits: RateLimits,
    /// Per-route body limits.
    pub body: BodyLimits,
    /// Origins browsers may call the API from (`http.cors.allowed_origins`); empty: none.
    pub cors_origins: Vec<HeaderValue>,
}

impl Gate {
    /// The gate `settings` describe; its background upkeep (key refresh, forgetting idle
    /// callers) stops with `shutdown`.
    pub fn new(settings: &Settings, shutdown: &CancellationToken) -> Result<Self, ConfigError> {
        Ok(Self {
            auth: Authenticator::from_settings(&settings.auth, shutdown)?,
            limits: RateLimits::new(&settings.rate_limits, shutdown),
            body: BodyLimits::new(&settings.http),
            cors_origins: settings
                .http
                .cors
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
        })
    }
}

/// The 401 for `error` (503 with `Retry-After` when the issuer cannot be reached), with
/// `WWW-Authenticate: Bearer` as RFC 6750 asks, counted by reason.
pub fn unauthenticated(error: &AuthError) -> ApiError {
    metrics::counter!("petstore_auth_rejections_total", "reason" => error.reason()).increment(1);
    if *error == AuthError::IssuerUnavailable {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ProblemType::Unavailable, error.to_string())
            .retry_after(5);
    }
    let challenge = match error {
        AuthError::Missing => r#"Bearer realm="petstore""#,
        _ => r#"Bearer realm="petstore", error="invalid_token""#,
    };
    ApiError::new(StatusCode::UNAUTHORIZED, ProblemType::Unauthenticated, error.to_string())
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge))
}

/// The bearer token of `Authorization`, if the header is there; `Err` when it is there but
/// is not a bearer token.
fn bearer(request: &Request) -> Option<Result<&str, AuthError>> {
    let value = request.headers().get(header::AUTHORIZATION)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    Some(token.ok_or(AuthError::Malformed))
}

/// Middleware: verifies the caller's token and puts the [`Principal`](crate::auth::Principal)
/// in the request's extensions, refuses protected routes without one, then applies the
/// route's rate limit (by subject, or by client address for anonymous calls). Responses to
/// authenticated calls are marked `Cache-Control: no-store`.
pub(super) async fn admit(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let public = is_public(request.method(), route.as_deref());
    let principal = match bearer(&request) {
        None if public => None,
        None => return unauthenticated(&AuthError::Missing).into_response(),
        Some(Err(e)) => return unauthenticated(&e).into_response(),
        Some(Ok(token)) => match gate.auth.verify(token).await {
            Ok(principal) => Some(principal),
            // A catalog read does not need the token it was sent with: an issuer outage
            // must not take the public catalog down.
            Err(AuthError::IssuerUnavailable) if public => None,
            Err(e) => return unauthenticated(&e).into_response(),
        },
    };
    let key = gate.limits.key(&request, principal.as_ref());
    let verdict = gate.limits.check(request.method(), route.as_deref(), principal.is_some(), &key);
    let headers = match verdict {
        Ok(headers) => headers,
        Err(refusal) => return refusal.into_response(),
    };
    let authenticated = principal.is_some();
    if let Some(principal) = principal {
        request.extensions_mut().insert(principal);
    }
    let mut response = next.run(request).await;
    let out = response.headers_mut();
    for (name, value) in headers {
        out.insert(name, value);
    }
    if authenticated {
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Middleware: headers that make browsers treat every response conservatively.
pub(super) async fn security_headers(request: Request, next: Next) -> Response {
    let docs = request.uri().path().starts_with("/docs");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: &'static str, value: &'static str| {
        headers.entry(HeaderName::from_static(name)).or_insert(HeaderValue::from_static(value));
    };
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "cross-origin-resource-policy", "same-origin");
    // The API answers JSON only; the Swagger UI page needs its own scripts and styles.
    let policy = if docs {
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
    } else {
        "default-src 'none'; frame-ancestors 'none'"
    };
    set(headers, "content-security-policy", policy);
    response
}
