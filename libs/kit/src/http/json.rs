use axum::{
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

use super::{ApiError, ProblemType};

/// JSON body extractor and response: like `axum::Json`, but a malformed body is answered
/// as problem+json naming what is wrong (400 bad syntax or an unknown field, 413 too large,
/// 415 wrong content type, 422 a missing or mistyped field).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ProblemType::PayloadTooLarge, rejection.body_text()))
            }
            Err(rejection) => Err(match rejection {
                // Strict bodies: a field the API does not know is a malformed request, named.
                JsonRejection::JsonDataError(e) if source_text(&e).contains("unknown field `") => {
                    ApiError::bad_request(format!("invalid body: {}", source_text(&e)))
                }
                JsonRejection::JsonDataError(e) => ApiError::validation(format!("invalid body: {}", source_text(&e))),
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::bad_request(format!("malformed JSON: {}", source_text(&e)))
                }
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ProblemType::UnsupportedMediaType,
                    "expected `Content-Type: application/json`",
                ),
                other => ApiError::bad_request(other.body_text()),
            }),
        }
    }
}

/// The innermost serde message ("missing field `pet_id` at line 1 column 2").
fn source_text(e: &dyn std::error::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
