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
