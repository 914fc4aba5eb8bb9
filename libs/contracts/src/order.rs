//! Order: lifecycle events (OrderCreated starts the saga) and the commands the orchestrator
//! sends when a saga ends.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{Address, PaymentMethod, SagaRef, channels, message};

/// What a customer ordered: what the order service records and every saga step needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderDetails {
    /// The order.
    pub order_id: Uuid,
    /// Who ordered.
    pub customer_id: String,
    /// What.
    pub pet_id: String,
    /// Price at the time of ordering.
    pub amount: Decimal,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Where to ship.
    pub shipping_address: Address,
    /// How the customer pays.
    pub payment_method: PaymentMethod,
    /// Free text for the delivery.
    pub special_instructions: Option<String>,
}

/// A customer placed an order; the orchestrator starts saga `saga_id` for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCreated {
    /// What was ordered.
    #[serde(flatten)]
    pub order: OrderDetails,
    /// The saga that will process it.
    pub saga_id: Uuid,
    /// When the order was placed.
    pub created_at: DateTime<Utc>,
}
message!(OrderCreated, "petstore.order.order-created.v1", channels::ORDER_EVENTS, |m| m.order.order_id.to_string());

/// The order's saga completed: the pet is sold and on its way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    /// The order.
    pub order_id: Uuid,
    /// Its saga.
    pub saga_id: Uuid,
}
message!(OrderConfirmed, "petstore.order.order-confirmed.v1", channels::ORDER_EVENTS, |m| m.order_id.to_string());

/// The order's saga compensated: nothing is charged and the pet is not held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// The order.
    pub order_id: Uuid,
    /// Its saga.
    pub saga_id: Uuid,
    /// Why.
    pub reason: String,
}
message!(OrderCancelled, "petstore.order.order-cancelled.v1", channels::ORDER_EVENTS, |m| m.order_id.to_string());

/// The saga completed: confirm the order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApproveOrder {
    /// The saga and its order.
    #[serde(flatten)]
    pub saga: SagaRef,
}
message!(ApproveOrder, "petstore.order.approve-order.v1", channels::ORDER_COMMANDS, |m| m.saga.order_id.to_string());

/// The saga compensated (or failed): cancel the order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectOrder {
    /// The saga and its order.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// Why.
    pub reason: String,
}
message!(RejectOrder, "petstore.order.reject-order.v1", channels::ORDER_COMMANDS, |m| m.saga.order_id.to_string());
