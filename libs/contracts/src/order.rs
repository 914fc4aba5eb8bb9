//! Order: lifecycle events (OrderCreated starts the saga) and the commands the orchestrator
//! sends when a saga ends.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{Address, PaymentMethod, SagaRef, channels, message, pricing::PricingArm};

/// What a customer ordered: what the order service records and every saga step needs.
///
/// Orders are stored as events and sagas keep a copy, so fields added later carry a serde
/// default: what was recorded before them still reads (as the catalog price, standard
/// delivery).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderDetails {
    /// The order.
    pub order_id: Uuid,
    /// Who ordered.
    pub customer_id: String,
    /// What.
    pub pet_id: String,
    /// What the customer is charged: the catalog price at the time of ordering, as the
    /// customer's `pricing_arm` prices it.
    pub amount: Decimal,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Where to ship.
    pub shipping_address: Address,
    /// How the customer pays.
    pub payment_method: PaymentMethod,
    /// Free text for the delivery.
    pub special_instructions: Option<String>,
    /// The arm of the `pricing_experiment` the customer was in when ordering: how `amount`
    /// came from the catalog price. `control` (the catalog price) for orders placed before
    /// the experiment.
    // Always in what the API answers (orders, their events, sagas), though old records lack it.
    #[serde(default)]
    #[schema(required = true)]
    pub pricing_arm: PricingArm,
    /// An express order (`express_order_processing` was on for the customer when ordering):
    /// delivered the next day instead of after the usual transit days.
    #[serde(default)]
    #[schema(required = true)]
    pub express: bool,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An `OrderCreated` as it was published before the pricing experiment and express orders.
    fn recorded_before_flags() -> serde_json::Value {
        json!({
            "order_id": "0190a0b0-0000-7000-8000-000000000001",
            "customer_id": "alice",
            "pet_id": "goldfish-004",
            "amount": "25.00",
            "currency": "USD",
            "shipping_address": { "street": "1 Main St", "city": "Springfield", "postal_code": "1", "country": "US" },
            "payment_method": "credit_card",
            "special_instructions": null,
            "saga_id": "0190a0b0-0000-7000-8000-000000000002",
            "created_at": "2025-01-01T00:00:00Z"
        })
    }

    #[test]
    fn orders_recorded_before_the_flags_read_as_control_and_standard_delivery() {
        let created: OrderCreated = serde_json::from_value(recorded_before_flags()).expect("an old OrderCreated reads");
        assert_eq!(created.order.pricing_arm, PricingArm::Control);
        assert!(!created.order.express);
        assert_eq!(created.order.amount, Decimal::new(2500, 2));
    }

    #[test]
    fn the_arm_and_express_travel_with_the_order() {
        let mut json = recorded_before_flags();
        json["pricing_arm"] = json!("discount_10");
        json["express"] = json!(true);
        let created: OrderCreated = serde_json::from_value(json).expect("reads");
        assert_eq!((created.order.pricing_arm, created.order.express), (PricingArm::Discount10, true));
        let again = serde_json::to_value(&created).expect("writes");
        assert_eq!((&again["pricing_arm"], &again["express"]), (&json!("discount_10"), &json!(true)));
    }
}
