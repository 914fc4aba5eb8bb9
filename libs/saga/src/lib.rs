//! The order-processing saga (`docs/architecture.md`, "The order saga") as a pure state machine.
//!
//! [`ORDER_SAGA`] reads top to bottom like the business process. A [`Saga`] is rebuilt by
//! applying its recorded [`SagaEvent`]s; [`Saga::start`], [`Saga::on_reply`] and
//! [`Saga::on_deadline`] (no reply in time) decide which events come next; [`SagaEvent::command`] says which command each event sends. Nothing here
//! does I/O: the orchestrator persists the events and sends the commands in one transaction.

mod definition;
mod machine;

pub use contracts::order::OrderDetails;
pub use definition::{ORDER_SAGA, Step, StepDefinition, StepKind};
pub use machine::NoticeState;
pub use machine::{
    Awaiting, Command, MAX_COMPENSATION_ATTEMPTS, MAX_RETRIABLE_ATTEMPTS, MAX_STEP_ATTEMPTS, Reply, Saga, SagaEvent,
    SagaStatus, StepState, StepStatus,
};
