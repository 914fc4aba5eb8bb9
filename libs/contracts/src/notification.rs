//! Notification: the confirmation and the cancellation notice a customer receives.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{SagaRef, channels, message};

/// Tell the customer the order is confirmed (step 5; retried, never compensated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendConfirmation {
    /// The saga asking.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// Recipient.
    pub customer_id: String,
    /// What was bought.
    pub pet_id: String,
    /// What was charged.
    pub amount: Decimal,
}
message!(SendConfirmation, "petstore.notification.send-confirmation.v1", channels::NOTIFICATION_COMMANDS, |m| m
    .saga
    .order_id
    .to_string());

/// Tell the customer the order was cancelled and why (sent when a saga compensates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendCancellationNotice {
    /// The saga asking.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// Recipient.
    pub customer_id: String,
    /// What was ordered.
    pub pet_id: String,
    /// Why the order was cancelled.
    pub reason: String,
}
message!(
    SendCancellationNotice,
    "petstore.notification.send-cancellation-notice.v1",
    channels::NOTIFICATION_COMMANDS,
    |m| m.saga.order_id.to_string()
);

/// Which notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// Order confirmed.
    Confirmation,
    /// Order cancelled.
    CancellationNotice,
}

/// A notification went out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationSent {
    /// The saga.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The notification record.
    pub notification_id: Uuid,
    /// Which one.
    pub kind: NotificationKind,
}
message!(NotificationSent, "petstore.notification.notification-sent.v1", channels::NOTIFICATION_EVENTS, |m| m
    .saga
    .order_id
    .to_string());

/// A notification could not be sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationFailed {
    /// The saga.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// Which one.
    pub kind: NotificationKind,
    /// Why.
    pub reason: String,
}
message!(NotificationFailed, "petstore.notification.notification-failed.v1", channels::NOTIFICATION_EVENTS, |m| m
    .saga
    .order_id
    .to_string());
