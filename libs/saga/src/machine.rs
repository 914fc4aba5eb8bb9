use chrono::{DateTime, Utc};
use contracts::order::OrderDetails;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{ORDER_SAGA, Step, StepKind};

/// Attempts of a retriable step (the confirmation) or of the cancellation notice before the
/// saga records it as failed and ends anyway.
pub const MAX_RETRIABLE_ATTEMPTS: u32 = 5;
/// Attempts of one compensation before the saga is marked `failed`.
pub const MAX_COMPENSATION_ATTEMPTS: u32 = 5;
/// How many times a forward step's command is sent when no reply comes before its deadline.
pub const MAX_STEP_ATTEMPTS: u32 = 3;

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Going forward.
    Running,
    /// A step failed; undoing the completed ones.
    Compensating,
    /// Terminal: every step done.
    Completed,
    /// Terminal: a step failed and everything done before it was undone.
    Compensated,
    /// Terminal: a compensation kept failing; needs an operator.
    Failed,
}

impl SagaStatus {
    /// Whether the saga has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }

    /// The name used in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }
}

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Command sent, waiting for the reply.
    Running,
    /// Done.
    Succeeded,
    /// The participant refused or failed; nothing of it was applied.
    Failed,
    /// Compensation sent, waiting for the reply.
    Compensating,
    /// Undone.
    Compensated,
    /// The compensation kept failing.
    CompensationFailed,
}

/// One step of a saga, as shown by the status API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepState {
    /// Which step.
    pub step: Step,
    /// Where it is.
    pub status: StepStatus,
    /// Forward commands sent for it so far.
    pub attempts: u32,
    /// Compensation commands sent for it so far.
    pub compensation_attempts: u32,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it last succeeded or failed.
    pub finished_at: Option<DateTime<Utc>>,
    /// When its compensation started.
    pub compensation_started_at: Option<DateTime<Utc>>,
    /// When it was compensated.
    pub compensated_at: Option<DateTime<Utc>>,
    /// The last failure.
    pub error: Option<String>,
}

/// The cancellation notice sent when a saga compensates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NoticeState {
    /// Attempts so far.
    pub attempts: u32,
    /// When it was sent successfully.
    pub sent_at: Option<DateTime<Utc>>,
    /// The last failure.
    pub error: Option<String>,
}

/// The saga's history: what is stored, one row per event.
// `Started` carries the order; events are short-lived values read one saga at a time, so
// boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SagaEvent {
    /// An order arrived; the saga begins.
    Started {
        /// The saga.
        saga_id: Uuid,
        /// Its order.
        order: OrderDetails,
        /// The order's correlation id, for the commands the saga sends on its own (after a
        /// deadline passes) rather than in answer to a message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// A step's command was sent.
    StepStarted {
        /// The step.
        step: Step,
    },
    /// A step's participant succeeded.
    StepSucceeded {
        /// The step.
        step: Step,
    },
    /// A step's participant failed.
    StepFailed {
        /// The step.
        step: Step,
        /// Why.
        reason: String,
    },
    /// A step's compensation was sent.
    CompensationStarted {
        /// The step being undone.
        step: Step,
    },
    /// A step was undone.
    StepCompensated {
        /// The step.
        step: Step,
    },
    /// A compensation failed (it is retried up to [`MAX_COMPENSATION_ATTEMPTS`]).
    CompensationFailed {
        /// The step.
        step: Step,
        /// Why.
        reason: String,
    },
    /// A step's participant did not reply before the step's deadline.
    StepTimedOut {
        /// The step.
        step: Step,
    },
    /// A compensation's participant did not reply before its deadline.
    CompensationTimedOut {
        /// The step being undone.
        step: Step,
    },
    /// The notification service did not confirm the cancellation notice in time.
    NoticeTimedOut,
    /// The cancellation notice was requested.
    NoticeRequested,
    /// The cancellation notice went out.
    NoticeSent,
    /// The cancellation notice failed.
    NoticeFailed {
        /// Why.
        reason: String,
    },
    /// Terminal: completed.
    Completed,
    /// Terminal: compensated.
    Compensated {
        /// The failure that made the saga compensate.
        reason: String,
    },
    /// Terminal: a compensation could not be done.
    Failed {
        /// What could not be undone.
        reason: String,
    },
}

/// A command the orchestrator sends because of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Run a step.
    Execute(Step),
    /// Undo a step.
    Compensate(Step),
    /// Send the customer the cancellation notice.
    SendCancellationNotice,
    /// Confirm the order (saga completed).
    ApproveOrder,
    /// Cancel the order (saga compensated or failed).
    RejectOrder,
}

impl SagaEvent {
    /// The command this event sends, if any. Deriving commands from events means the
    /// orchestrator can always tell what it still owes from the log alone.
    pub fn command(&self) -> Option<Command> {
        match self {
            Self::StepStarted { step } => Some(Command::Execute(*step)),
            Self::CompensationStarted { step } => Some(Command::Compensate(*step)),
            Self::NoticeRequested => Some(Command::SendCancellationNotice),
            Self::Completed => Some(Command::ApproveOrder),
            Self::Compensated { .. } | Self::Failed { .. } => Some(Command::RejectOrder),
            _ => None,
        }
    }

    /// A short name for storage and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Started { .. } => "started",
            Self::StepStarted { .. } => "step_started",
            Self::StepSucceeded { .. } => "step_succeeded",
            Self::StepFailed { .. } => "step_failed",
            Self::CompensationStarted { .. } => "compensation_started",
            Self::StepCompensated { .. } => "step_compensated",
            Self::CompensationFailed { .. } => "compensation_failed",
            Self::StepTimedOut { .. } => "step_timed_out",
            Self::CompensationTimedOut { .. } => "compensation_timed_out",
            Self::NoticeTimedOut => "notice_timed_out",
            Self::NoticeRequested => "notice_requested",
            Self::NoticeSent => "notice_sent",
            Self::NoticeFailed { .. } => "notice_failed",
            Self::Completed => "completed",
            Self::Compensated { .. } => "compensated",
            Self::Failed { .. } => "failed",
        }
    }
}

/// A participant's answer, as the saga sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The step succeeded.
    Succeeded(Step),
    /// The step failed; nothing of it was applied.
    Failed(Step, String),
    /// The step was undone.
    Compensated(Step),
    /// The compensation failed.
    CompensationFailed(Step, String),
    /// The cancellation notice went out.
    NoticeSent,
    /// The cancellation notice failed.
    NoticeFailed(String),
}

/// A saga instance, rebuilt from its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Saga {
    /// The saga.
    pub saga_id: Uuid,
    /// Its order.
    pub order: OrderDetails,
    /// The order's correlation id.
    pub correlation_id: Option<String>,
    /// Where it is.
    pub status: SagaStatus,
    /// Why it compensated or failed.
    pub reason: Option<String>,
    /// Every step of [`ORDER_SAGA`], in order.
    pub steps: Vec<StepState>,
    /// The cancellation notice, once requested.
    pub notice: Option<NoticeState>,
    /// When the saga started.
    pub started_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
}

/// What a running saga waits for (see [`Saga::awaiting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// The reply to a step's command.
    Step(Step),
    /// The reply to a step's compensation.
    Compensation(Step),
    /// The confirmation that the cancellation notice went out.
    Notice,
}

/// The error recorded on a step whose reply did not come in time.
const TIMED_OUT: &str = "no reply before the deadline";

impl Saga {
    /// The events that start a saga for `order`: `Started`, then the first step.
    pub fn start(saga_id: Uuid, order: OrderDetails, correlation_id: Option<String>) -> Vec<SagaEvent> {
        vec![SagaEvent::Started { saga_id, order, correlation_id }, SagaEvent::StepStarted { step: ORDER_SAGA[0].step }]
    }

    /// Rebuilds a saga from its history; `None` if it does not begin with `Started`.
    pub fn replay<'a>(events: impl IntoIterator<Item = (&'a SagaEvent, DateTime<Utc>)>) -> Option<Self> {
        let mut iter = events.into_iter();
        let (SagaEvent::Started { saga_id, order, correlation_id }, at) = iter.next()? else { return None };
        let mut saga = Self {
            saga_id: *saga_id,
            order: order.clone(),
            correlation_id: correlation_id.clone(),
            status: SagaStatus::Running,
            reason: None,
            steps: ORDER_SAGA
                .iter()
                .map(|d| StepState {
                    step: d.step,
                    status: StepStatus::Pending,
                    attempts: 0,
                    compensation_attempts: 0,
                    started_at: None,
                    finished_at: None,
                    compensation_started_at: None,
                    compensated_at: None,
                    error: None,
                })
                .collect(),
            notice: None,
            started_at: at,
            updated_at: at,
            ended_at: None,
        };
        for (event, at) in iter {
            saga.apply(event, at);
        }
        Some(saga)
    }

    /// The step's state.
    pub fn step(&self, step: Step) -> &StepState {
        &self.steps[step.index()]
    }

    fn step_mut(&mut self, step: Step) -> &mut StepState {
        &mut self.steps[step.index()]
    }

    /// Applies one recorded event.
    pub fn apply(&mut self, event: &SagaEvent, at: DateTime<Utc>) {
        self.updated_at = at;
        match event {
            SagaEvent::Started { .. } => {}
            SagaEvent::StepStarted { step } => {
                let s = self.step_mut(*step);
                s.status = StepStatus::Running;
                s.attempts += 1;
                s.started_at.get_or_insert(at);
            }
            SagaEvent::StepSucceeded { step } => {
                let s = self.step_mut(*step);
                s.status = StepStatus::Succeeded;
                s.finished_at = Some(at);
                s.error = None;
            }
            SagaEvent::StepFailed { step, reason } => {
                let s = self.step_mut(*step);
                s.status = StepStatus::Failed;
                s.finished_at = Some(at);
                s.error = Some(reason.clone());
                if step.definition().kind != StepKind::Retriable {
                    self.status = SagaStatus::Compensating;
                    self.reason = Some(reason.clone());
                }
            }
            SagaEvent::CompensationStarted { step } => {
                let s = self.step_mut(*step);
                s.status = StepStatus::Compensating;
                s.compensation_attempts += 1;
                s.compensation_started_at.get_or_insert(at);
            }
            SagaEvent::StepCompensated { step } => {
                let s = self.step_mut(*step);
                s.status = StepStatus::Compensated;
                s.compensated_at = Some(at);
            }
            SagaEvent::CompensationFailed { step, reason } => {
                let s = self.step_mut(*step);
                s.status = StepStatus::CompensationFailed;
                s.error = Some(reason.clone());
            }
            SagaEvent::StepTimedOut { step } | SagaEvent::CompensationTimedOut { step } => {
                self.step_mut(*step).error = Some(TIMED_OUT.to_owned());
            }
            SagaEvent::NoticeTimedOut => {
                if let Some(n) = self.notice.as_mut() {
                    n.error = Some(TIMED_OUT.to_owned());
                }
            }
            SagaEvent::NoticeRequested => {
                let notice = self.notice.get_or_insert(NoticeState { attempts: 0, sent_at: None, error: None });
                notice.attempts += 1;
            }
            SagaEvent::NoticeSent => {
                if let Some(n) = self.notice.as_mut() {
                    n.sent_at = Some(at);
                    n.error = None;
                }
            }
            SagaEvent::NoticeFailed { reason } => {
                if let Some(n) = self.notice.as_mut() {
                    n.error = Some(reason.clone());
                }
            }
            SagaEvent::Completed => self.end(SagaStatus::Completed, None, at),
            SagaEvent::Compensated { reason } => self.end(SagaStatus::Compensated, Some(reason.clone()), at),
            SagaEvent::Failed { reason } => self.end(SagaStatus::Failed, Some(reason.clone()), at),
        }
    }

    fn end(&mut self, status: SagaStatus, reason: Option<String>, at: DateTime<Utc>) {
        self.status = status;
        if reason.is_some() {
            self.reason = reason;
        }
        self.ended_at = Some(at);
    }

    /// The events a participant's reply leads to. A reply that does not fit the saga's state
    /// (late, duplicated, for a finished saga) leads to none.
    pub fn on_reply(&self, reply: &Reply) -> Vec<SagaEvent> {
        if self.status.is_terminal() {
            return Vec::new();
        }
        match reply {
            Reply::Succeeded(step) if self.step(*step).status == StepStatus::Running => {
                let mut events = vec![SagaEvent::StepSucceeded { step: *step }];
                match step.next() {
                    Some(next) => events.push(SagaEvent::StepStarted { step: next }),
                    None => events.push(SagaEvent::Completed),
                }
                events
            }
            Reply::Failed(step, reason) if self.step(*step).status == StepStatus::Running => {
                self.on_step_failed(*step, reason)
            }
            Reply::Compensated(step) if self.step(*step).status == StepStatus::Compensating => {
                let mut events = vec![SagaEvent::StepCompensated { step: *step }];
                events.push(self.next_compensation(step.index()));
                events
            }
            Reply::CompensationFailed(step, reason) if self.step(*step).status == StepStatus::Compensating => {
                let mut events = vec![SagaEvent::CompensationFailed { step: *step, reason: reason.clone() }];
                if self.step(*step).compensation_attempts >= MAX_COMPENSATION_ATTEMPTS {
                    events.push(SagaEvent::Failed {
                        reason: format!(
                            "could not {}: {reason}",
                            step.definition().compensation.unwrap_or("compensate")
                        ),
                    });
                } else {
                    events.push(SagaEvent::CompensationStarted { step: *step });
                }
                events
            }
            Reply::NoticeSent if self.notice_pending() => {
                vec![SagaEvent::NoticeSent, self.compensated()]
            }
            Reply::NoticeFailed(reason) if self.notice_pending() => {
                let mut events = vec![SagaEvent::NoticeFailed { reason: reason.clone() }];
                let attempts = self.notice.as_ref().map_or(0, |n| n.attempts);
                events.push(if attempts >= MAX_RETRIABLE_ATTEMPTS {
                    self.compensated()
                } else {
                    SagaEvent::NoticeRequested
                });
                events
            }
            _ => Vec::new(),
        }
    }

    /// What the saga is waiting for: a running step's reply, a compensation's, or the
    /// cancellation notice's; `None` when it waits for nothing (it has ended).
    pub fn awaiting(&self) -> Option<Awaiting> {
        if self.status.is_terminal() {
            return None;
        }
        if let Some(s) = self.steps.iter().find(|s| s.status == StepStatus::Running) {
            return Some(Awaiting::Step(s.step));
        }
        if let Some(s) = self.steps.iter().find(|s| s.status == StepStatus::Compensating) {
            return Some(Awaiting::Compensation(s.step));
        }
        self.notice_pending().then_some(Awaiting::Notice)
    }

    /// The events that follow when the reply the saga waits for has not come by its deadline
    /// (the deadline is the caller's: the saga's last change plus the step timeout). The
    /// command is sent again up to its attempt limit. Then a forward step counts as failed —
    /// and, since its participant may have acted without the reply arriving, its own
    /// compensation runs first (compensations are safe to run for something never done);
    /// a retriable step past the pivot gives up and the saga completes; a compensation fails
    /// the saga; the notice is given up and the saga ends compensated.
    pub fn on_deadline(&self) -> Vec<SagaEvent> {
        match self.awaiting() {
            Some(Awaiting::Step(step)) => {
                let timed_out = SagaEvent::StepTimedOut { step };
                let definition = step.definition();
                if self.step(step).attempts < MAX_STEP_ATTEMPTS {
                    return vec![timed_out, SagaEvent::StepStarted { step }];
                }
                if definition.kind == StepKind::Retriable {
                    return vec![timed_out, SagaEvent::Completed];
                }
                let reason = format!("no reply to {} after {} attempts", step.as_str(), self.step(step).attempts);
                let undo = match definition.compensation {
                    Some(_) => SagaEvent::CompensationStarted { step },
                    None => self.next_compensation(step.index()),
                };
                vec![timed_out, SagaEvent::StepFailed { step, reason }, undo]
            }
            Some(Awaiting::Compensation(step)) => {
                let timed_out = SagaEvent::CompensationTimedOut { step };
                if self.step(step).compensation_attempts < MAX_COMPENSATION_ATTEMPTS {
                    return vec![timed_out, SagaEvent::CompensationStarted { step }];
                }
                let what = step.definition().compensation.unwrap_or("compensate");
                let reason = format!("could not {what}: no reply after {MAX_COMPENSATION_ATTEMPTS} attempts");
                vec![timed_out, SagaEvent::Failed { reason }]
            }
            Some(Awaiting::Notice) => {
                let attempts = self.notice.as_ref().map_or(0, |n| n.attempts);
                let next =
                    if attempts < MAX_RETRIABLE_ATTEMPTS { SagaEvent::NoticeRequested } else { self.compensated() };
                vec![SagaEvent::NoticeTimedOut, next]
            }
            None => Vec::new(),
        }
    }

    fn on_step_failed(&self, step: Step, reason: &str) -> Vec<SagaEvent> {
        let failed = SagaEvent::StepFailed { step, reason: reason.to_owned() };
        if step.definition().kind == StepKind::Retriable {
            // Past the pivot: the pet is sold and paid for; retry, never compensate.
            let retry = if self.step(step).attempts >= MAX_RETRIABLE_ATTEMPTS {
                SagaEvent::Completed
            } else {
                SagaEvent::StepStarted { step }
            };
            return vec![failed, retry];
        }
        vec![failed, self.next_compensation(step.index())]
    }

    /// The compensation of the last succeeded step before `before`, or, when none is left,
    /// the cancellation notice.
    fn next_compensation(&self, before: usize) -> SagaEvent {
        self.steps[..before]
            .iter()
            .rev()
            .find(|s| s.status == StepStatus::Succeeded && s.step.definition().compensation.is_some())
            .map_or(SagaEvent::NoticeRequested, |s| SagaEvent::CompensationStarted { step: s.step })
    }

    fn notice_pending(&self) -> bool {
        self.status == SagaStatus::Compensating && self.notice.as_ref().is_some_and(|n| n.sent_at.is_none())
    }

    fn compensated(&self) -> SagaEvent {
        SagaEvent::Compensated { reason: self.reason.clone().unwrap_or_else(|| "compensated".to_owned()) }
    }
}

#[cfg(test)]
mod tests;
