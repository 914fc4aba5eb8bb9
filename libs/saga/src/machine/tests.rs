use super::*;
use crate::Step::*;
use contracts::{Address, PaymentMethod};
use rust_decimal::Decimal;

fn order() -> OrderDetails {
    OrderDetails {
        order_id: Uuid::now_v7(),
        customer_id: "c-1".into(),
        pet_id: "goldfish-004".into(),
        amount: Decimal::new(2500, 2),
        currency: "USD".into(),
        shipping_address: Address {
            street: "1 Main St".into(),
            city: "Springfield".into(),
            postal_code: "12345".into(),
            country: "US".into(),
        },
        payment_method: PaymentMethod::CreditCard,
        special_instructions: None,
        pricing_arm: contracts::pricing::PricingArm::Control,
        express: false,
    }
}

/// What happens to a running saga: a participant's reply, or the deadline passing with none.
#[derive(Clone)]
enum Input {
    Reply(Reply),
    Deadline,
}

/// Runs the saga through `replies` and returns it with every command it sent, in order.
fn run(replies: &[Reply]) -> (Saga, Vec<Command>) {
    drive(&replies.iter().cloned().map(Input::Reply).collect::<Vec<_>>())
}

/// Runs the saga through `inputs` and returns it with every command it sent, in order.
fn drive(inputs: &[Input]) -> (Saga, Vec<Command>) {
    let mut log = Saga::start(Uuid::now_v7(), order(), Some("corr-1".into()));
    let mut commands: Vec<Command> = log.iter().filter_map(SagaEvent::command).collect();
    let mut saga = Saga::replay(log.iter().map(|e| (e, Utc::now()))).expect("starts");
    for input in inputs {
        let events = match input {
            Input::Reply(reply) => saga.on_reply(reply),
            Input::Deadline => saga.on_deadline(),
        };
        for e in &events {
            saga.apply(e, Utc::now());
            commands.extend(e.command());
        }
        log.extend(events);
    }
    // Replaying the whole log gives the same state as applying it step by step.
    let replayed = Saga::replay(log.iter().map(|e| (e, saga.updated_at))).expect("replays");
    assert_eq!(replayed.status, saga.status);
    assert_eq!(replayed.reason, saga.reason);
    assert_eq!(replayed.correlation_id.as_deref(), Some("corr-1"));
    (saga, commands)
}

#[test]
fn happy_path_runs_all_five_steps_and_approves_the_order() {
    let (saga, commands) = run(&[
        Reply::Succeeded(ReservePet),
        Reply::Succeeded(ProcessPayment),
        Reply::Succeeded(ScheduleDelivery),
        Reply::Succeeded(MarkPetSold),
        Reply::Succeeded(SendConfirmation),
    ]);
    assert_eq!(saga.status, SagaStatus::Completed);
    assert!(
        saga.steps
            .iter()
            .all(|s| s.status == StepStatus::Succeeded && s.started_at.is_some() && s.finished_at.is_some())
    );
    assert_eq!(
        commands,
        [
            Command::Execute(ReservePet),
            Command::Execute(ProcessPayment),
            Command::Execute(ScheduleDelivery),
            Command::Execute(MarkPetSold),
            Command::Execute(SendConfirmation),
            Command::ApproveOrder
        ]
    );
}

#[test]
fn failures_compensate_completed_steps_in_reverse_order() {
    struct Case {
        name: &'static str,
        replies: Vec<Reply>,
        compensations: Vec<Step>,
    }
    let cases = [
        Case {
            name: "reservation refused",
            replies: vec![Reply::Failed(ReservePet, "sold".into())],
            compensations: vec![],
        },
        Case {
            name: "payment declined",
            replies: vec![
                Reply::Succeeded(ReservePet),
                Reply::Failed(ProcessPayment, "declined".into()),
                Reply::Compensated(ReservePet),
            ],
            compensations: vec![ReservePet],
        },
        Case {
            name: "pivot refused",
            replies: vec![
                Reply::Succeeded(ReservePet),
                Reply::Succeeded(ProcessPayment),
                Reply::Succeeded(ScheduleDelivery),
                Reply::Failed(MarkPetSold, "not reserved".into()),
                Reply::Compensated(ScheduleDelivery),
                Reply::Compensated(ProcessPayment),
                Reply::Compensated(ReservePet),
            ],
            compensations: vec![ScheduleDelivery, ProcessPayment, ReservePet],
        },
    ];
    for case in cases {
        let mut replies = case.replies.clone();
        replies.push(Reply::NoticeSent);
        let (saga, commands) = run(&replies);
        assert_eq!(saga.status, SagaStatus::Compensated, "{}", case.name);
        assert!(saga.reason.is_some(), "{}", case.name);
        let sent: Vec<Step> =
            commands.iter().filter_map(|c| if let Command::Compensate(s) = c { Some(*s) } else { None }).collect();
        assert_eq!(sent, case.compensations, "{}", case.name);
        assert_eq!(
            &commands[commands.len() - 2..],
            [Command::SendCancellationNotice, Command::RejectOrder],
            "{}",
            case.name
        );
    }
}

#[test]
fn compensated_saga_keeps_the_reason_of_the_failed_step() {
    let (saga, _) = run(&[
        Reply::Succeeded(ReservePet),
        Reply::Failed(ProcessPayment, "card declined".into()),
        Reply::Compensated(ReservePet),
        Reply::NoticeSent,
    ]);
    assert_eq!(saga.reason.as_deref(), Some("card declined"));
    assert_eq!(saga.step(ProcessPayment).status, StepStatus::Failed);
    assert_eq!(saga.step(ReservePet).status, StepStatus::Compensated);
    assert!(saga.notice.as_ref().and_then(|n| n.sent_at).is_some());
}

#[test]
fn a_failing_confirmation_is_retried_and_never_compensates() {
    let mut replies = vec![
        Reply::Succeeded(ReservePet),
        Reply::Succeeded(ProcessPayment),
        Reply::Succeeded(ScheduleDelivery),
        Reply::Succeeded(MarkPetSold),
    ];
    replies.extend(std::iter::repeat_n(Reply::Failed(SendConfirmation, "smtp down".into()), 2));
    replies.push(Reply::Succeeded(SendConfirmation));
    let (saga, commands) = run(&replies);
    assert_eq!(saga.status, SagaStatus::Completed);
    assert_eq!(saga.step(SendConfirmation).attempts, 3);
    assert!(!commands.iter().any(|c| matches!(c, Command::Compensate(_))));
}

#[test]
fn a_compensation_that_keeps_failing_fails_the_saga() {
    let mut replies = vec![Reply::Succeeded(ReservePet), Reply::Failed(ProcessPayment, "declined".into())];
    replies.extend(std::iter::repeat_n(
        Reply::CompensationFailed(ReservePet, "db down".into()),
        MAX_COMPENSATION_ATTEMPTS as usize,
    ));
    let (saga, commands) = run(&replies);
    assert_eq!(saga.status, SagaStatus::Failed);
    assert!(saga.reason.as_deref().is_some_and(|r| r.contains("release the reservation")), "{:?}", saga.reason);
    let releases = commands.iter().filter(|c| **c == Command::Compensate(ReservePet)).count();
    assert_eq!(releases, MAX_COMPENSATION_ATTEMPTS as usize);
    assert_eq!(commands.last(), Some(&Command::RejectOrder));
}

#[test]
fn late_or_duplicate_replies_change_nothing() {
    let (saga, _) = run(&[Reply::Succeeded(ReservePet)]);
    assert!(saga.on_reply(&Reply::Succeeded(ReservePet)).is_empty(), "duplicate");
    assert!(saga.on_reply(&Reply::Succeeded(MarkPetSold)).is_empty(), "step not running");
    assert!(saga.on_reply(&Reply::NoticeSent).is_empty(), "no notice requested");
    let (done, _) = run(&[Reply::Failed(ReservePet, "sold".into()), Reply::NoticeSent]);
    assert!(done.on_reply(&Reply::NoticeSent).is_empty(), "terminal");
}

#[test]
fn a_payment_that_never_answers_is_sent_again_then_refunded_and_the_pet_released() {
    use Input::*;
    let (saga, commands) = drive(&[
        Reply(super::Reply::Succeeded(ReservePet)),
        Deadline,
        Deadline,
        Deadline,
        Reply(super::Reply::Compensated(ProcessPayment)),
        Reply(super::Reply::Compensated(ReservePet)),
        Reply(super::Reply::NoticeSent),
    ]);
    assert_eq!(saga.status, SagaStatus::Compensated, "{saga:?}");
    assert!(saga.reason.as_deref().is_some_and(|r| r.contains("no reply to process_payment after 3 attempts")));
    assert_eq!(saga.step(ProcessPayment).attempts, MAX_STEP_ATTEMPTS);
    assert_eq!(
        commands,
        [
            Command::Execute(ReservePet),
            Command::Execute(ProcessPayment),
            Command::Execute(ProcessPayment),
            Command::Execute(ProcessPayment),
            // The charge may have happened without its reply arriving: refund it first.
            Command::Compensate(ProcessPayment),
            Command::Compensate(ReservePet),
            Command::SendCancellationNotice,
            Command::RejectOrder,
        ]
    );
}

#[test]
fn a_reply_that_comes_after_a_resend_moves_the_saga_on() {
    let (saga, commands) = drive(&[
        Input::Reply(Reply::Succeeded(ReservePet)),
        Input::Deadline,
        Input::Reply(Reply::Succeeded(ProcessPayment)),
        // The reply to the first command arrives too: nothing more happens.
        Input::Reply(Reply::Succeeded(ProcessPayment)),
    ]);
    assert_eq!(saga.status, SagaStatus::Running);
    assert_eq!(saga.step(ScheduleDelivery).status, StepStatus::Running);
    assert_eq!(commands.iter().filter(|c| **c == Command::Execute(ScheduleDelivery)).count(), 1);
}

#[test]
fn a_compensation_that_never_answers_fails_the_saga_after_its_attempts() {
    let mut inputs = vec![
        Input::Reply(Reply::Succeeded(ReservePet)),
        Input::Reply(Reply::Failed(ProcessPayment, "declined".into())),
    ];
    inputs.extend(std::iter::repeat_n(Input::Deadline, MAX_COMPENSATION_ATTEMPTS as usize));
    let (saga, commands) = drive(&inputs);
    assert_eq!(saga.status, SagaStatus::Failed, "{saga:?}");
    assert!(saga.reason.as_deref().is_some_and(|r| r.contains("could not release the reservation")), "{saga:?}");
    let releases = commands.iter().filter(|c| **c == Command::Compensate(ReservePet)).count();
    assert_eq!(releases, MAX_COMPENSATION_ATTEMPTS as usize);
    assert_eq!(commands.last(), Some(&Command::RejectOrder));
}

#[test]
fn past_the_pivot_a_silent_confirmation_is_given_up_and_the_saga_completes() {
    let mut inputs: Vec<Input> = [ReservePet, ProcessPayment, ScheduleDelivery, MarkPetSold]
        .into_iter()
        .map(|s| Input::Reply(Reply::Succeeded(s)))
        .collect();
    inputs.extend(std::iter::repeat_n(Input::Deadline, MAX_STEP_ATTEMPTS as usize));
    let (saga, commands) = drive(&inputs);
    assert_eq!(saga.status, SagaStatus::Completed);
    assert!(!commands.iter().any(|c| matches!(c, Command::Compensate(_))), "never undo a sold pet: {commands:?}");
}

#[test]
fn a_silent_notice_is_sent_again_and_then_the_saga_ends_compensated() {
    let mut inputs = vec![Input::Reply(Reply::Failed(ReservePet, "already reserved".into()))];
    inputs.extend(std::iter::repeat_n(Input::Deadline, MAX_RETRIABLE_ATTEMPTS as usize));
    let (saga, commands) = drive(&inputs);
    assert_eq!(saga.status, SagaStatus::Compensated);
    let notices = commands.iter().filter(|c| **c == Command::SendCancellationNotice).count();
    assert_eq!(notices, MAX_RETRIABLE_ATTEMPTS as usize);
}

#[test]
fn an_ended_saga_has_no_deadline() {
    let (saga, _) = run(&[Reply::Failed(ReservePet, "taken".into()), Reply::NoticeSent]);
    assert_eq!(saga.status, SagaStatus::Compensated);
    assert_eq!(saga.awaiting(), None);
    assert!(saga.on_deadline().is_empty());
}
