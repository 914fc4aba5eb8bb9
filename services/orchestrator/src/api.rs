//! Saga status routes.

use axum::{
    Router,
    extract::{Path, State},
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

/// The saga of an order of the caller's (any order for an admin).
///
/// The saga starts a moment after the order is accepted, so right after `POST /orders` this
/// may briefly answer 404.
#[utoipa::path(
    get,
    path = "/orders/{order_id}/status",
    params(("order_id" = Uuid, Path, description = "The order.")),
    responses(
        (status = 200, description = "The saga processing the order.", body = Saga),
        (status = 404, response = docs::NotFound),
    )
)]
async fn order_status(
    State(store): State<SagaStore>,
    caller: Principal,
    Path(order_id): Path<String>,
) -> Result<Json<Saga>, ApiError> {
    let not_found = || ApiError::not_found(format!("no saga for order {order_id} (yet)"));
    let id = Uuid::parse_str(&order_id).map_err(|_| not_found())?;
    let saga = store.for_order(id).await.map_err(ApiError::internal)?.ok_or_else(not_found)?;
    if !caller.may_see(&saga.order.customer_id) {
        return Err(not_found());
    }
    Ok(Json(saga))
}
