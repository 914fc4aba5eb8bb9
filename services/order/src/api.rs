//! The order API: `POST /orders`, `GET /orders/{id}`, `GET /orders/{id}/events`.

use std::time::Duration;

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use contracts::{
    Address, PaymentMethod, channels,
    inventory::{Availability, GetPetStatus, PetStatus},
    order::OrderDetails,
};
use kit::http::{ApiError, CorrelationId, CustomerId, Json};
use messaging::{Bus, BusError, Envelope, MessageContext};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::{
    domain::{Order, OrderEvent},
    store::OrderStore,
};

/// What the order routes need.
#[derive(Clone)]
pub struct AppState {
    /// Orders.
    pub store: OrderStore,
    /// The bus, for the inventory-status query.
    pub bus: Bus,
    /// How long to wait for the inventory.
    pub pet_lookup_timeout: Duration,
}

/// The order routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{order_id}", get(get_order))
        .route("/orders/{order_id}/events", get(order_events))
        .with_state(state)
}

/// Body of `POST /orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceOrder {
    pet_id: String,
    shipping_address: Address,
    payment_method: PaymentMethod,
    #[serde(default)]
    special_instructions: Option<String>,
}

const MAX_INSTRUCTIONS: usize = 500;

impl PlaceOrder {
    fn validate(&self) -> Result<(), ApiError> {
        let pet_id = self.pet_id.trim();
        if pet_id.is_empty() || pet_id.len() > 64 {
            return Err(ApiError::validation("pet_id: must be 1 to 64 characters"));
        }
        let blank = self.shipping_address.blank_fields();
        if !blank.is_empty() {
            return Err(ApiError::validation(format!("{}: must not be blank", blank.join(", "))));
        }
        if self.special_instructions.as_ref().is_some_and(|s| s.chars().count() > MAX_INSTRUCTIONS) {
            return Err(ApiError::validation(format!("special_instructions: at most {MAX_INSTRUCTIONS} characters")));
        }
        Ok(())
    }
}

async fn place_order(
    State(app): State<AppState>,
    CustomerId(customer_id): CustomerId,
    CorrelationId(correlation_id): CorrelationId,
    Json(body): Json<PlaceOrder>,
) -> Result<impl IntoResponse, ApiError> {
    body.validate()?;
    let pet_id = body.pet_id.trim().to_owned();
    let ctx = MessageContext::correlated(&correlation_id);
    let pet = lookup_pet(&app, &pet_id, &ctx).await?;
    let pet = pet.pet.ok_or_else(|| ApiError::validation(format!("pet_id: no pet `{pet_id}` in the catalog")))?;
    if pet.availability == Availability::Sold {
        return Err(ApiError::conflict(format!("pet `{pet_id}` is already sold")));
    }
    let placed = OrderEvent::Placed {
        saga_id: Uuid::now_v7(),
        order: OrderDetails {
            order_id: Uuid::now_v7(),
            customer_id,
            pet_id,
            amount: pet.price,
            currency: pet.currency,
            shipping_address: body.shipping_address,
            payment_method: body.payment_method,
            special_instructions: body.special_instructions.filter(|s| !s.trim().is_empty()),
        },
    };
    let order = app.store.place(placed, &ctx).await.map_err(ApiError::internal)?;
    metrics::counter!("petstore_orders_created_total").increment(1);
    tracing::info!(order_id = %order.details.order_id, saga_id = %order.saga_id, correlation_id, "order placed");
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", order.details.order_id)) {
        headers.insert(header::LOCATION, location);
    }
    let body = json!({
        "order_id": order.details.order_id,
        "saga_id": order.saga_id,
        "status": order.status,
        "correlation_id": correlation_id,
    });
    Ok((StatusCode::ACCEPTED, headers, Json(body)))
}

/// Asks the inventory (request/response over the bus) what the pet is and costs.
async fn lookup_pet(app: &AppState, pet_id: &str, ctx: &MessageContext) -> Result<PetStatus, ApiError> {
    let request = Envelope::from_message(app.bus.source(), &GetPetStatus { pet_id: pet_id.to_owned() }, ctx)
        .map_err(ApiError::internal)?;
    let reply =
        app.bus.request(channels::INVENTORY_QUERIES, request, app.pet_lookup_timeout).await.map_err(|e| match e {
            BusError::Timeout { .. } | BusError::Backend { .. } | BusError::Closed => {
                ApiError::unavailable("the inventory did not answer; try again shortly", 2, e)
            }
            other => ApiError::internal(other),
        })?;
    reply.decode::<PetStatus>().map_err(ApiError::internal)
}

/// Loads an order the caller may see. Someone else's order answers 404, like a missing one,
/// so order ids cannot be probed.
async fn owned_order(app: &AppState, order_id: &str, customer_id: &str) -> Result<Order, ApiError> {
    let not_found = || ApiError::not_found(format!("no order {order_id}"));
    let id = Uuid::parse_str(order_id).map_err(|_| not_found())?;
    let order = app.store.get(id).await.map_err(ApiError::internal)?.ok_or_else(not_found)?;
    if order.details.customer_id != customer_id {
        return Err(not_found());
    }
    Ok(order)
}

async fn get_order(
    State(app): State<AppState>,
    CustomerId(customer_id): CustomerId,
    Path(order_id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    owned_order(&app, &order_id, &customer_id).await.map(Json)
}

async fn order_events(
    State(app): State<AppState>,
    CustomerId(customer_id): CustomerId,
    Path(order_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let order = owned_order(&app, &order_id, &customer_id).await?;
    let history = app.store.history(order.details.order_id).await.map_err(ApiError::internal)?;
    let items: Vec<_> = history
        .iter()
        .map(|r| json!({ "version": r.version, "recorded_at": r.recorded_at, "event": r.event }))
        .collect();
    Ok(Json(json!({ "order_id": order.details.order_id, "events": items })))
}
