//! Payment: charge and refund, with replies.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{PaymentMethod, SagaRef, channels, message};

/// Charge the customer for the order (step 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessPayment {
    /// The saga asking.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// Who pays.
    pub customer_id: String,
    /// How much.
    pub amount: Decimal,
    /// ISO 4217 currency code.
    pub currency: String,
    /// How.
    pub payment_method: PaymentMethod,
}
message!(ProcessPayment, "petstore.payment.process-payment.v1", channels::PAYMENT_COMMANDS, |m| m
    .saga
    .order_id
    .to_string());

/// Refund the saga's payment, if one was taken (compensation of step 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundPayment {
    /// The saga whose payment is refunded.
    #[serde(flatten)]
    pub saga: SagaRef,
}
message!(RefundPayment, "petstore.payment.refund-payment.v1", channels::PAYMENT_COMMANDS, |m| m
    .saga
    .order_id
    .to_string());

/// The customer was charged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentProcessed {
    /// The saga.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The payment record.
    pub payment_id: Uuid,
    /// Amount charged.
    pub amount: Decimal,
}
message!(PaymentProcessed, "petstore.payment.payment-processed.v1", channels::PAYMENT_EVENTS, |m| m
    .saga
    .order_id
    .to_string());

/// The charge was declined; nothing was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    /// The saga.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// Why, for the saga's compensation reason.
    pub reason: String,
}
message!(PaymentFailed, "petstore.payment.payment-failed.v1", channels::PAYMENT_EVENTS, |m| m
    .saga
    .order_id
    .to_string());

/// The saga's payment is refunded (or there was nothing to refund).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    /// The saga.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// Amount given back (zero when nothing had been charged).
    pub amount: Decimal,
}
message!(PaymentRefunded, "petstore.payment.payment-refunded.v1", channels::PAYMENT_EVENTS, |m| m
    .saga
    .order_id
    .to_string());
