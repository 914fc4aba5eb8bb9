//! The order aggregate: its events, how they fold into an [`Order`], and which message each
//! event publishes. No I/O.

use chrono::{DateTime, Utc};
use contracts::order::{OrderCancelled, OrderConfirmed, OrderCreated, OrderDetails};
use messaging::{BusError, MessageContext};
use persistence::{DomainEvent, Outgoing, Recorded};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What happened to an order.
// `Placed` carries the whole order and the others almost nothing; events are short-lived
// values read one aggregate at a time, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrderEvent {
    /// The customer placed the order.
    Placed {
        /// The saga that processes it.
        saga_id: Uuid,
        /// What was ordered.
        #[serde(flatten)]
        order: OrderDetails,
    },
    /// The saga completed.
    Confirmed,
    /// The saga compensated or failed.
    Cancelled {
        /// Why.
        reason: String,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Placed { .. } => "placed",
            Self::Confirmed => "confirmed",
            Self::Cancelled { .. } => "cancelled",
        }
    }
}

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Its saga is running.
    Pending,
    /// Its saga completed.
    Confirmed,
    /// Its saga compensated or failed.
    Cancelled,
}

impl OrderStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// An order, as folded from its events.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Order {
    /// What was ordered.
    #[serde(flatten)]
    pub details: OrderDetails,
    /// Its saga.
    pub saga_id: Uuid,
    /// Where it is.
    pub status: OrderStatus,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Number of events so far.
    pub version: i64,
}

impl Order {
    /// Folds an order's history; `None` when it does not start with `Placed`.
    pub fn replay(history: &[Recorded<OrderEvent>]) -> Option<Self> {
        let (first, rest) = history.split_first()?;
        let mut order = Self::placed(&first.event, first.recorded_at)?;
        for r in rest {
            order.apply(&r.event, r.recorded_at);
        }
        Some(order)
    }

    /// The order a `Placed` event creates.
    pub fn placed(event: &OrderEvent, at: DateTime<Utc>) -> Option<Self> {
        let OrderEvent::Placed { saga_id, order } = event else { return None };
        Some(Self {
            details: order.clone(),
            saga_id: *saga_id,
            status: OrderStatus::Pending,
            cancel_reason: None,
            created_at: at,
            updated_at: at,
            version: 1,
        })
    }

    /// Applies a later event.
    pub fn apply(&mut self, event: &OrderEvent, at: DateTime<Utc>) {
        match event {
            OrderEvent::Placed { .. } => {}
            OrderEvent::Confirmed => self.status = OrderStatus::Confirmed,
            OrderEvent::Cancelled { reason } => {
                self.status = OrderStatus::Cancelled;
                self.cancel_reason = Some(reason.clone());
            }
        }
        self.updated_at = at;
        self.version += 1;
    }

    /// Confirms a pending order; anything else is already settled.
    pub fn approve(&self) -> Vec<OrderEvent> {
        if self.status == OrderStatus::Pending { vec![OrderEvent::Confirmed] } else { Vec::new() }
    }

    /// Cancels a pending order.
    pub fn reject(&self, reason: &str) -> Vec<OrderEvent> {
        if self.status == OrderStatus::Pending {
            vec![OrderEvent::Cancelled { reason: reason.to_owned() }]
        } else {
            Vec::new()
        }
    }

    /// The message that announces `event` on `order-events`.
    pub fn announce(&self, event: &OrderEvent, source: &str, ctx: &MessageContext) -> Result<Outgoing, BusError> {
        match event {
            OrderEvent::Placed { .. } => Outgoing::message(
                source,
                &OrderCreated { order: self.details.clone(), saga_id: self.saga_id, created_at: self.created_at },
                ctx,
            ),
            OrderEvent::Confirmed => Outgoing::message(
                source,
                &OrderConfirmed { order_id: self.details.order_id, saga_id: self.saga_id },
                ctx,
            ),
            OrderEvent::Cancelled { reason } => Outgoing::message(
                source,
                &OrderCancelled { order_id: self.details.order_id, saga_id: self.saga_id, reason: reason.clone() },
                ctx,
            ),
        }
    }
}
