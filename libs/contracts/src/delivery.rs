//! Delivery: schedule and cancel, with replies.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Address, SagaRef, channels, message};

/// Schedule the pet's delivery (step 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleDelivery {
    /// The saga asking.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// Recipient.
    pub customer_id: String,
    /// What is delivered.
    pub pet_id: String,
    /// Where to.
    pub shipping_address: Address,
    /// An express order: deliver the next day instead of after the usual transit days.
    /// Absent (standard delivery) in commands sent before express orders existed.
    #[serde(default)]
    pub express: bool,
}
message!(ScheduleDelivery, "petstore.delivery.schedule-delivery.v1", channels::DELIVERY_COMMANDS, |m| m
    .saga
    .order_id
    .to_string());

/// Cancel the saga's delivery, if one was scheduled (compensation of step 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelDelivery {
    /// The saga whose delivery is cancelled.
    #[serde(flatten)]
    pub saga: SagaRef,
}
message!(CancelDelivery, "petstore.delivery.cancel-delivery.v1", channels::DELIVERY_COMMANDS, |m| m
    .saga
    .order_id
    .to_string());

/// The delivery is booked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryScheduled {
    /// The saga.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The delivery record.
    pub delivery_id: Uuid,
    /// Expected delivery date.
    pub estimated_delivery: NaiveDate,
}
message!(DeliveryScheduled, "petstore.delivery.delivery-scheduled.v1", channels::DELIVERY_EVENTS, |m| m
    .saga
    .order_id
    .to_string());

/// No delivery could be booked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryFailed {
    /// The saga.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// Why.
    pub reason: String,
}
message!(DeliveryFailed, "petstore.delivery.delivery-failed.v1", channels::DELIVERY_EVENTS, |m| m
    .saga
    .order_id
    .to_string());

/// The saga's delivery is cancelled (or there was none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryCancelled {
    /// The saga.
    #[serde(flatten)]
    pub saga: SagaRef,
}
message!(DeliveryCancelled, "petstore.delivery.delivery-cancelled.v1", channels::DELIVERY_EVENTS, |m| m
    .saga
    .order_id
    .to_string());

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schedule_delivery_sent_before_express_orders_is_a_standard_delivery() {
        let old = json!({
            "saga_id": "0190a0b0-0000-7000-8000-000000000002",
            "order_id": "0190a0b0-0000-7000-8000-000000000001",
            "customer_id": "alice",
            "pet_id": "goldfish-004",
            "shipping_address": { "street": "1 Main St", "city": "Springfield", "postal_code": "1", "country": "US" }
        });
        let cmd: ScheduleDelivery = serde_json::from_value(old.clone()).expect("an old command reads");
        assert!(!cmd.express);
        let mut express = old;
        express["express"] = json!(true);
        assert!(serde_json::from_value::<ScheduleDelivery>(express).expect("reads").express);
    }
}
