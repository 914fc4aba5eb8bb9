//! The order API: `POST /orders` (retry-safe with an `Idempotency-Key`), `GET /orders/{id}`,
//! `GET /orders/{id}/events`.

use std::time::Duration;

use axum::http::StatusCode;
use axum::{
    Router,
    extract::{Path, State},
    response::Response,
};
use chrono::{DateTime, Utc};
use contracts::{
    Address, PaymentMethod, channels,
    inventory::{Availability, GetPetStatus, PetStatus},
    order::OrderDetails,
};
use kit::{
    audit::{AuditDraft, RecordedInTransaction},
    auth::{Customer, Principal},
    flags::Flags,
    http::{ApiError, CorrelationId, Json, docs},
    resilience::{BreakerError, CircuitBreaker},
};
use messaging::{Bus, BusError, Envelope, MessageContext};
use serde::{Deserialize, Serialize};
use utoipa::{ToSchema, openapi::OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    decisions::FlagDecisions,
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
    /// The feature flags that price an order (`pricing_experiment`) and make it express
    /// (`express_order_processing`), evaluated for the customer placing it.
    pub flags: Flags,
}

/// The order routes.
pub fn router(state: AppState) -> Router {
    api(state).0
}

/// The order routes and their OpenAPI description, both from the handlers' annotations.
pub fn api(state: AppState) -> (Router, OpenApi) {
    OpenApiRouter::new()
        .routes(routes!(place_order))
        .routes(routes!(get_order))
        .routes(routes!(order_events))
        .with_state(state)
        .split_for_parts()
}

/// Body of `POST /orders`; serialized (after [`PlaceOrder::normalized`]) it is the canonical
/// form an `Idempotency-Key`'s fingerprint is taken of. What the flags decide for the order
/// (its price, express) is not part of it: a retry is the same request whatever the flags say
/// by then, and is answered the first order as it was placed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "pet_id": "golden-retriever-001",
    "shipping_address": { "street": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US" },
    "payment_method": "credit_card",
    "special_instructions": "Leave at the door"
}))]
struct PlaceOrder {
    /// The pet to buy (`GET /pets`); surrounding blanks are ignored.
    #[schema(min_length = 1, max_length = 64, example = "golden-retriever-001")]
    pet_id: String,
    /// Where to ship it.
    shipping_address: Address,
    /// How to pay; `declined_card` is always declined (the saga then compensates).
    payment_method: PaymentMethod,
    /// Free text for the delivery.
    #[serde(default)]
    #[schema(max_length = 500)]
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

/// Places an order for a pet (the `customer` role).
///
/// The answer comes before the saga has run: `status` is `pending`, and
/// `GET /orders/{order_id}` shows how it ends. Retry-safe with an `Idempotency-Key`.
///
/// The order is charged the pet's catalog price as the customer's arm of the
/// `pricing_experiment` flag prices it (the price `GET /pets` shows them), and is an express
/// order, delivered the next day, when `express_order_processing` is on for the customer;
/// the order records both (`pricing_arm`, `express`).
#[utoipa::path(
    post,
    path = "/orders",
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
         description = "Makes a retry safe: the same key with the same body within 24 h answers the first \
                        order again (`Idempotent-Replayed: true`); with another body, 422."),
    ),
    request_body = PlaceOrder,
    responses(
        (status = 202, description = "The order is placed; its saga runs.", body = Receipt,
         headers(
             ("Location" = String, description = "The order: `/orders/{order_id}`."),
             ("Idempotent-Replayed" = String, description = "`true` when this answers an earlier request with the same key."),
         ),
         links(
             ("GetOrder" = (operation_id = "get_order", parameters(("order_id" = "$response.body#/order_id")))),
             ("GetOrderEvents" = (operation_id = "order_events", parameters(("order_id" = "$response.body#/order_id")))),
             ("GetOrderStatus" = (operation_id = "order_status", parameters(("order_id" = "$response.body#/order_id")))),
             ("GetSaga" = (operation_id = "get_saga", parameters(("saga_id" = "$response.body#/saga_id")))),
         )),
        (status = 400, response = docs::BadRequest),
        (status = 403, response = docs::Forbidden),
        (status = 409, response = docs::Conflict),
        (status = 422, response = docs::Unprocessable),
        (status = 503, response = docs::Unavailable),
    )
)]
async fn place_order(
    State(app): State<AppState>,
    customer: Customer,
    CorrelationId(correlation_id): CorrelationId,
    IdempotencyKey(key): IdempotencyKey,
    audit: AuditDraft,
    Json(body): Json<PlaceOrder>,
) -> Result<Response, ApiError> {
    body.validate()?;
    let body = body.normalized();
    let customer_id = customer.id().to_owned();
    // The fingerprint is of the body alone, not of what the flags decide below.
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
    let decided = FlagDecisions::for_customer(&app.flags, &customer.0);
    let order_id = Uuid::now_v7();
    // Written in the order's own transaction: the trail has the order exactly when it exists.
    let entry = audit.finish(StatusCode::ACCEPTED.as_u16(), order_id.to_string());
    let placed = OrderEvent::Placed {
        saga_id: Uuid::now_v7(),
        order: OrderDetails {
            order_id,
            customer_id,
            pet_id,
            amount: decided.charge(pet.price),
            currency: pet.currency,
            shipping_address: body.shipping_address,
            payment_method: body.payment_method,
            special_instructions: body.special_instructions,
            pricing_arm: decided.pricing_arm,
            express: decided.express,
        },
    };
    let placement = app.store.place(placed, &ctx, claim.as_ref(), entry.as_ref()).await.map_err(ApiError::internal)?;
    let order = match (placement, &claim) {
        (Placement::Placed(order), _) => order,
        // A concurrent request with the same key placed its order first.
        (Placement::Remembered(earlier), Some(claim)) => return Ok(claim.answer_again(&earlier)),
        (Placement::Remembered(_), None) => {
            return Err(ApiError::internal("a key remembered for a request without one"));
        }
    };
    metrics::counter!("petstore_orders_created_total").increment(1);
    tracing::info!(
        order_id = %order.details.order_id,
        saga_id = %order.saga_id,
        correlation_id,
        pricing_arm = order.details.pricing_arm.as_str(),
        express = order.details.express,
        "order placed"
    );
    let mut response = Receipt::new(&order, &correlation_id).accepted(false);
    if entry.is_some() {
        response.extensions_mut().insert(RecordedInTransaction);
    }
    Ok(response)
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

/// An order of the caller's (any order for an admin).
#[utoipa::path(
    get,
    path = "/orders/{order_id}",
    params(("order_id" = Uuid, Path, description = "The order.")),
    responses(
        (status = 200, description = "The order.", body = Order,
         links(
             ("GetOrderEvents" = (operation_id = "order_events", parameters(("order_id" = "$response.body#/order_id")))),
             ("GetOrderStatus" = (operation_id = "order_status", parameters(("order_id" = "$response.body#/order_id")))),
         )),
        (status = 404, response = docs::NotFound),
    )
)]
async fn get_order(
    State(app): State<AppState>,
    caller: Principal,
    Path(order_id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    owned_order(&app, &order_id, &caller).await.map(Json)
}

/// The body of `GET /orders/{order_id}/events`.
#[derive(Debug, Serialize, ToSchema)]
struct OrderHistory {
    /// The order.
    order_id: Uuid,
    /// Its events, oldest first.
    events: Vec<RecordedEvent>,
}

/// One event of an order's history.
#[derive(Debug, Serialize, ToSchema)]
struct RecordedEvent {
    /// 1 for the first event, then +1 per event.
    version: i64,
    /// When it was recorded.
    recorded_at: DateTime<Utc>,
    /// What happened.
    event: OrderEvent,
}

/// The history of an order of the caller's (any order for an admin).
///
/// The events the order's state is folded from, oldest first.
#[utoipa::path(
    get,
    path = "/orders/{order_id}/events",
    params(("order_id" = Uuid, Path, description = "The order.")),
    responses(
        (status = 200, description = "The order's events, oldest first.", body = OrderHistory),
        (status = 404, response = docs::NotFound),
    )
)]
async fn order_events(
    State(app): State<AppState>,
    caller: Principal,
    Path(order_id): Path<String>,
) -> Result<Json<OrderHistory>, ApiError> {
    let order = owned_order(&app, &order_id, &caller).await?;
    let history = app.store.history(order.details.order_id).await.map_err(ApiError::internal)?;
    let events = history
        .into_iter()
        .map(|r| RecordedEvent { version: r.version, recorded_at: r.recorded_at, event: r.event })
        .collect();
    Ok(Json(OrderHistory { order_id: order.details.order_id, events }))
}
