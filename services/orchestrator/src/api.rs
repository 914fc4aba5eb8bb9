//! Saga status routes.

use axum::{
    Router,
    extract::{Path, State},
    routing::get,
};
use kit::http::{ApiError, CustomerId, Json};
use saga::Saga;
use uuid::Uuid;

use crate::SagaStore;

/// `GET /sagas/{saga_id}` (operators; gated to the `admin` role once authentication
/// arrives) and `GET /orders/{order_id}/status` (the order's customer).
pub fn router(store: SagaStore) -> Router {
    Router::new()
        .route("/sagas/{saga_id}", get(get_saga))
        .route("/orders/{order_id}/status", get(order_status))
        .with_state(store)
}

async fn get_saga(State(store): State<SagaStore>, Path(saga_id): Path<String>) -> Result<Json<Saga>, ApiError> {
    let not_found = || ApiError::not_found(format!("no saga {saga_id}"));
    let id = Uuid::parse_str(&saga_id).map_err(|_| not_found())?;
    store.get(id).await.map_err(ApiError::internal)?.map(Json).ok_or_else(not_found)
}

/// The saga of the caller's order. The saga starts a moment after the order is accepted, so
/// right after `POST /orders` this may briefly answer 404.
async fn order_status(
    State(store): State<SagaStore>,
    CustomerId(customer_id): CustomerId,
    Path(order_id): Path<String>,
) -> Result<Json<Saga>, ApiError> {
    let not_found = || ApiError::not_found(format!("no saga for order {order_id} (yet)"));
    let id = Uuid::parse_str(&order_id).map_err(|_| not_found())?;
    let saga = store.for_order(id).await.map_err(ApiError::internal)?.ok_or_else(not_found)?;
    if saga.order.customer_id != customer_id {
        return Err(not_found());
    }
    Ok(Json(saga))
}
