use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A step of the order saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Reserve the pet (a semantic lock: no other saga can reserve it).
    ReservePet,
    /// Charge the customer.
    ProcessPayment,
    /// Book the delivery.
    ScheduleDelivery,
    /// Mark the pet sold: the point of no return.
    MarkPetSold,
    /// Tell the customer.
    SendConfirmation,
}

/// How a step behaves when it or a later step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Undone by its compensation when a later step fails.
    Compensatable,
    /// The point of no return: once it succeeds the saga only goes forward.
    Pivot,
    /// After the pivot: retried until it succeeds, never a reason to compensate.
    Retriable,
}

/// One line of the saga definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepDefinition {
    /// The step.
    pub step: Step,
    /// Its behaviour on failure.
    pub kind: StepKind,
    /// What undoes it, if anything (names the compensating command).
    pub compensation: Option<&'static str>,
}

/// The order-processing saga, in execution order. A failed step runs the compensations of
/// the completed steps in reverse order; the customer then gets a cancellation notice.
pub const ORDER_SAGA: [StepDefinition; 5] = [
    StepDefinition {
        step: Step::ReservePet,
        kind: StepKind::Compensatable,
        compensation: Some("release the reservation"),
    },
    StepDefinition {
        step: Step::ProcessPayment,
        kind: StepKind::Compensatable,
        compensation: Some("refund the payment"),
    },
    StepDefinition {
        step: Step::ScheduleDelivery,
        kind: StepKind::Compensatable,
        compensation: Some("cancel the delivery"),
    },
    StepDefinition { step: Step::MarkPetSold, kind: StepKind::Pivot, compensation: Some("restore availability") },
    StepDefinition { step: Step::SendConfirmation, kind: StepKind::Retriable, compensation: None },
];

impl Step {
    /// Position in [`ORDER_SAGA`].
    pub fn index(self) -> usize {
        ORDER_SAGA.iter().position(|d| d.step == self).unwrap_or(0)
    }

    /// The step's definition.
    pub fn definition(self) -> &'static StepDefinition {
        &ORDER_SAGA[self.index()]
    }

    /// The step after this one, if any.
    pub fn next(self) -> Option<Step> {
        ORDER_SAGA.get(self.index() + 1).map(|d| d.step)
    }

    /// The name used in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservePet => "reserve_pet",
            Self::ProcessPayment => "process_payment",
            Self::ScheduleDelivery => "schedule_delivery",
            Self::MarkPetSold => "mark_pet_sold",
            Self::SendConfirmation => "send_confirmation",
        }
    }
}
