//! Saga status routes.

use std::time::Duration;

use axum::{
    Router,
    extract::{Path, Query, State},
};
use kit::{
    auth::{Admin, Principal},
    http::{ApiError, Json, docs},
};
use saga::Saga;
use utoipa::openapi::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::SagaStore;

/// `GET /sagas/{saga_id}` (the `admin` role) and `GET /orders/{order_id}/status` (the order's
/// customer, or an admin).
pub fn router(store: SagaStore) -> Router {
    api(store).0
}

/// The saga status routes and their OpenAPI description.
pub fn api(store: SagaStore) -> (Router, OpenApi) {
    OpenApiRouter::new().routes(routes!(get_saga)).routes(routes!(order_status)).with_state(store).split_for_parts()
}

/// A saga: every step, its attempts and errors (the `admin` role).
#[utoipa::path(
    get,
    path = "/sagas/{saga_id}",
    params(("saga_id" = Uuid, Path, description = "The saga.")),
    responses(
        (status = 200, description = "The saga.", body = Saga),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
    )
)]
async fn get_saga(
    State(store): State<SagaStore>,
    _: Admin,
    Path(saga_id): Path<String>,
) -> Result<Json<Saga>, ApiError> {
    let not_found = || ApiError::not_found(format!("no saga {saga_id}"));
    let id = Uuid::parse_str(&saga_id).map_err(|_| not_found())?;
    store.get(id).await.map_err(ApiError::internal)?.map(Json).ok_or_else(not_found)
}

/// The longest `?wait=` a request may hold.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// The query of `GET /orders/{order_id}/status`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    wait: Option<String>,
}

impl StatusQuery {
    fn wait(&self) -> Result<Option<Duration>, ApiError> {
        let Some(text) = self.wait.as_deref() else { return Ok(None) };
        let refused = || {
            ApiError::bad_request(format!(
                "query parameter `wait` must be a duration up to {}s, e.g. `10s` or `500ms`",
                MAX_WAIT.as_secs()
            ))
        };
        let wait = humantime::parse_duration(text.trim()).map_err(|_| refused())?;
        if wait > MAX_WAIT {
            return Err(refused());
        }
        Ok(Some(wait))
    }
}

/// The saga of an order of the caller's (any order for an admin).
///
/// The saga starts a moment after the order is accepted, so right after `POST /orders` this
/// may briefly answer 404. With `wait`, the answer comes when the saga has ended (completed,
/// compensated or failed) or when `wait` runs out, whichever is first — one request instead of
/// polling; a saga that has not started is waited for up to 2 s.
#[utoipa::path(
    get,
    path = "/orders/{order_id}/status",
    params(
        ("order_id" = Uuid, Path, description = "The order."),
        ("wait" = Option<String>, Query, pattern = "^[0-9]{1,5}(ms|s)$",
         description = "Hold the answer until the saga ends, for at most this long (up to `30s`), e.g. `10s`."),
    ),
    responses(
        (status = 200, description = "The saga processing the order (ended, unless `wait` ran out).", body = Saga),
        (status = 400, response = docs::BadRequest),
        (status = 404, response = docs::NotFound),
    )
)]
async fn order_status(
    State(store): State<SagaStore>,
    caller: Principal,
    Path(order_id): Path<String>,
    query: Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Saga>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let wait = query.wait()?;
    let not_found = || ApiError::not_found(format!("no saga for order {order_id} (yet)"));
    let id = Uuid::parse_str(&order_id).map_err(|_| not_found())?;
    // Another customer's order answers 404 at once, however long it was to be waited for.
    let saga = match wait {
        Some(wait) => match store.for_order(id).await.map_err(ApiError::internal)? {
            Some(saga) if !caller.may_see(&saga.order.customer_id) => return Err(not_found()),
            _ => store.wait_for_end(id, wait).await.map_err(ApiError::internal)?,
        },
        None => store.for_order(id).await.map_err(ApiError::internal)?,
    };
    let saga = saga.ok_or_else(not_found)?;
    if !caller.may_see(&saga.order.customer_id) {
        return Err(not_found());
    }
    Ok(Json(saga))
}
