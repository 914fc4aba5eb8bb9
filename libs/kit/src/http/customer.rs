use axum::{extract::FromRequestParts, http::request::Parts};

use super::ApiError;

/// Header naming the customer until authentication arrives.
pub const CUSTOMER_HEADER: &str = "x-customer-id";

/// The customer making the request.
///
/// Read from `X-Customer-Id` for now; the authentication work replaces this one extractor
/// with the token's subject, and no handler changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for CustomerId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(CUSTOMER_HEADER).and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or_default();
        if value.is_empty() || value.len() > 128 {
            return Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                super::ProblemType::Unauthenticated,
                "send the customer id in the `X-Customer-Id` header",
            ));
        }
        Ok(Self(value.to_owned()))
    }
}
