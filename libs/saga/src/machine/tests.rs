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
    }
}

/// Runs the saga through `replies` and returns it with every command it sent, in order.
fn run(replies: &[Reply]) -> (Saga, Vec<Command>) {
    let mut log = Saga::start(Uuid::now_v7(), order());
    let mut commands: Vec<Command> = log.iter().filter_map(SagaEvent::command).collect();
    let mut saga = Saga::replay(log.iter().map(|e| (e, Utc::now()))).expect("starts");
    for reply in replies {
        let events = saga.on_reply(reply);
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
