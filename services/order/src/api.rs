//! The order API: `POST /orders` (retry-safe with an `Idempotency-Key`), `GET /orders/{id}`,
//! `GET /orders/{id}/events`.

use std::time::Duration;

use axum::{
    Router,
    extract::{Path, State},
    response::Response,
    routing::{get, post},
};
use contracts::{
    Address, PaymentMethod, channels,
    inventory::{Availability, GetPetStatus, PetStatus},
    order::OrderDetails,
};
use kit::{
    auth::{Customer, Principal},
    http::{ApiError, CorrelationId, Json},
    resilience::{BreakerError, CircuitBreaker},
};
use messaging::{Bus, BusError, Envelope, MessageContext};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::{
    domain::{Order, OrderEvent},
    idempotency::{IdempotencyKey, KeyClaim, Receipt},
    store::{OrderStore, Placement},
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
    /// Opens while the inventory does not answer: orders get a 503 with `Retry-After` at
    /// once instead of each waiting for the timeout.
    pub inventory_breaker: CircuitBreaker,
}

/// The order routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{order_id}", get(get_order))
        .route("/orders/{order_id}/events", get(order_events))
        .with_state(state)
}

/// Body of `POST /orders`; serialized (after [`PlaceOrder::normalized`]) it is the canonical
/// form an `Idempotency-Key`'s fingerprint is taken of.
#[derive(Debug, Serialize, Deserialize)]
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

    /// The request as it is placed: `pet_id` trimmed, blank instructions dropped.
    fn normalized(self) -> Self {
        Self {
            pet_id: self.pet_id.trim().to_owned(),
            special_instructions: self.special_instructions.filter(|s| !s.trim().is_empty()),
            ..self
        }
    }
}

async fn place_order(
    State(app): State<AppState>,
    customer: Customer,
    CorrelationId(correlation_id): CorrelationId,
    IdempotencyKey(key): IdempotencyKey,
    Json(body): Json<PlaceOrder>,
) -> Result<Response, ApiError> {
    body.validate()?;
    let body = body.normalized();
    let customer_id = customer.id().to_owned();
    let claim = key.map(|key| KeyClaim::new(&customer_id, key, &body)).transpose().map_err(ApiError::internal)?;
    // A retry is answered from what its key remembers, before asking the inventory: it must
    // not depend on the inventory being up, nor on the pet still being available.
    if let Some(claim) = &claim
        && let Some(earlier) = app.store.remembered_key(claim).await.map_err(ApiError::internal)?
    {
        return Ok(claim.answer_again(&earlier));
    }
    let pet_id = body.pet_id;
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
            special_instructions: body.special_instructions,
        },
    };
    let order = match (app.store.place(placed, &ctx, claim.as_ref()).await.map_err(ApiError::internal)?, &claim) {
        (Placement::Placed(order), _) => order,
        // A concurrent request with the same key placed its order first.
        (Placement::Remembered(earlier), Some(claim)) => return Ok(claim.answer_again(&earlier)),
        (Placement::Remembered(_), None) => {
            return Err(ApiError::internal("a key remembered for a request without one"));
        }
    };
    metrics::counter!("petstore_orders_created_total").increment(1);
    tracing::info!(order_id = %order.details.order_id, saga_id = %order.saga_id, correlation_id, "order placed");
    Ok(Receipt::new(&order, &correlation_id).accepted(false))
}

/// Asks the inventory (request/response over the bus) what the pet is and costs.
async fn lookup_pet(app: &AppState, pet_id: &str, ctx: &MessageContext) -> Result<PetStatus, ApiError> {
    let request = Envelope::from_message(app.bus.source(), &GetPetStatus { pet_id: pet_id.to_owned() }, ctx)
        .map_err(ApiError::internal)?;
    // Only an inventory that does not answer counts against the breaker.
    let unanswered = |e: &BusError| matches!(e, BusError::Timeout { .. } | BusError::Backend { .. } | BusError::Closed);
    let asked = app.bus.request(channels::INVENTORY_QUERIES, request, app.pet_lookup_timeout);
    let reply = app.inventory_breaker.call_judged(asked, unanswered).await.map_err(|e| match e {
        BreakerError::Open { retry_after, .. } => ApiError::unavailable(
            "the inventory is not answering; try again shortly",
            retry_after.as_secs().max(1),
            "inventory-queries circuit breaker open",
        ),
        BreakerError::Failed(e) if unanswered(&e) => {
            ApiError::unavailable("the inventory did not answer; try again shortly", 2, e)
        }
        BreakerError::Failed(other) => ApiError::internal(other),
    })?;
    reply.decode::<PetStatus>().map_err(ApiError::internal)
}

/// Loads an order the caller may see (its customer's, or any for an admin). Someone else's
/// order answers 404, like a missing one, so order ids cannot be probed.
async fn owned_order(app: &AppState, order_id: &str, caller: &Principal) -> Result<Order, ApiError> {
    let not_found = || ApiError::not_found(format!("no order {order_id}"));
    let id = Uuid::parse_str(order_id).map_err(|_| not_found())?;
    let order = app.store.get(id).await.map_err(ApiError::internal)?.ok_or_else(not_found)?;
    if !caller.may_see(&order.details.customer_id) {
        return Err(not_found());
    }
    Ok(order)
}

async fn get_order(
    State(app): State<AppState>,
    caller: Principal,
    Path(order_id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    owned_order(&app, &order_id, &caller).await.map(Json)
}

async fn order_events(
    State(app): State<AppState>,
    caller: Principal,
    Path(order_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let order = owned_order(&app, &order_id, &caller).await?;
    let history = app.store.history(order.details.order_id).await.map_err(ApiError::internal)?;
    let items: Vec<_> = history
        .iter()
        .map(|r| json!({ "version": r.version, "recorded_at": r.recorded_at, "event": r.event }))
        .collect();
    Ok(Json(json!({ "order_id": order.details.order_id, "events": items })))
}
