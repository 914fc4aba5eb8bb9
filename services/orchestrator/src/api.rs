//! Saga status routes.

use axum::{
    Router,
    extract::{Path, State},
    routing::get,
};
use kit::{
    auth::{Admin, Principal},
    http::{ApiError, Json},
};
use saga::Saga;
use uuid::Uuid;

use crate::SagaStore;

/// `GET /sagas/{saga_id}` (the `admin` role) and `GET /orders/{order_id}/status` (the order's
/// customer, or an admin).
pub fn router(store: SagaStore) -> Router {
    Router::new()
        .route("/sagas/{saga_id}", get(get_saga))
        .route("/orders/{order_id}/status", get(order_status))
        .with_state(store)
}

async fn get_saga(
    State(store): State<SagaStore>,
    _: Admin,
    Path(saga_id): Path<String>,
) -> Result<Json<Saga>, ApiError> {
    let not_found = || ApiError::not_found(format!("no saga {saga_id}"));
    let id = Uuid::parse_str(&saga_id).map_err(|_| not_found())?;
    store.get(id).await.map_err(ApiError::internal)?.map(Json).ok_or_else(not_found)
}

/// The saga of the caller's order. The saga starts a moment after the order is accepted, so
/// right after `POST /orders` this may briefly answer 404.
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
