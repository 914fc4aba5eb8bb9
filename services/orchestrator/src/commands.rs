//! Turns the saga's abstract commands and the participants' replies into contract messages.

use contracts::{
    SagaRef,
    delivery::{CancelDelivery, DeliveryCancelled, DeliveryFailed, DeliveryScheduled, ScheduleDelivery},
    inventory::{
        MarkPetSold, PetReleased, PetReservationFailed, PetReserved, PetRestored, PetSaleFailed, PetSold, ReleasePet,
        ReservePet, RestorePet,
    },
    notification::{NotificationFailed, NotificationKind, NotificationSent, SendCancellationNotice, SendConfirmation},
    order::{ApproveOrder, RejectOrder},
    payment::{PaymentFailed, PaymentProcessed, PaymentRefunded, ProcessPayment, RefundPayment},
};
use messaging::{BusError, Envelope, MessageContext};
use persistence::Outgoing;
use saga::{Command, Reply, Saga, Step};
use uuid::Uuid;

/// The span a command is sent in: one per saga step and per compensation, so the trace of an
/// order shows each step (and the participant's work as its child, since the command carries
/// this span's context).
pub fn command_span(saga: &Saga, command: Command) -> tracing::Span {
    let (name, step, action) = match command {
        Command::Execute(step) => ("saga step", step.as_str(), "execute"),
        Command::Compensate(step) => ("saga compensation", step.as_str(), "compensate"),
        Command::SendCancellationNotice => ("saga notice", "send_cancellation_notice", "notify"),
        Command::ApproveOrder => ("saga end", "approve_order", "complete"),
        Command::RejectOrder => ("saga end", "reject_order", "reject"),
    };
    tracing::info_span!(
        "saga command",
        otel.name = %format_args!("{name} {step}"),
        otel.kind = "producer",
        saga_id = %saga.saga_id,
        order_id = %saga.order.order_id,
        saga.step = step,
        saga.action = action,
    )
}

/// The message that carries `command` for `saga`, if the command has one. The commands carry
/// what their step needs of the order: the payment its `amount` (already priced by the
/// customer's pricing arm), the delivery whether it is `express`.
pub fn message_for(
    saga: &Saga,
    command: Command,
    source: &str,
    ctx: &MessageContext,
) -> Result<Option<Outgoing>, BusError> {
    let s = SagaRef { saga_id: saga.saga_id, order_id: saga.order.order_id };
    let o = &saga.order;
    let pet_id = o.pet_id.clone();
    let out = match command {
        Command::Execute(Step::ReservePet) => Outgoing::message(source, &ReservePet { saga: s, pet_id }, ctx),
        Command::Execute(Step::ProcessPayment) => Outgoing::message(
            source,
            &ProcessPayment {
                saga: s,
                customer_id: o.customer_id.clone(),
                amount: o.amount,
                currency: o.currency.clone(),
                payment_method: o.payment_method,
            },
            ctx,
        ),
        Command::Execute(Step::ScheduleDelivery) => Outgoing::message(
            source,
            &ScheduleDelivery {
                saga: s,
                customer_id: o.customer_id.clone(),
                pet_id,
                shipping_address: o.shipping_address.clone(),
                express: o.express,
            },
            ctx,
        ),
        Command::Execute(Step::MarkPetSold) => Outgoing::message(source, &MarkPetSold { saga: s, pet_id }, ctx),
        Command::Execute(Step::SendConfirmation) => Outgoing::message(
            source,
            &SendConfirmation { saga: s, customer_id: o.customer_id.clone(), pet_id, amount: o.amount },
            ctx,
        ),
        Command::Compensate(Step::ReservePet) => Outgoing::message(source, &ReleasePet { saga: s, pet_id }, ctx),
        Command::Compensate(Step::ProcessPayment) => Outgoing::message(source, &RefundPayment { saga: s }, ctx),
        Command::Compensate(Step::ScheduleDelivery) => Outgoing::message(source, &CancelDelivery { saga: s }, ctx),
        Command::Compensate(Step::MarkPetSold) => Outgoing::message(source, &RestorePet { saga: s, pet_id }, ctx),
        Command::Compensate(Step::SendConfirmation) => return Ok(None),
        Command::SendCancellationNotice => Outgoing::message(
            source,
            &SendCancellationNotice { saga: s, customer_id: o.customer_id.clone(), pet_id, reason: reason(saga) },
            ctx,
        ),
        Command::ApproveOrder => Outgoing::message(source, &ApproveOrder { saga: s }, ctx),
        Command::RejectOrder => Outgoing::message(source, &RejectOrder { saga: s, reason: reason(saga) }, ctx),
    };
    out.map(Some)
}

fn reason(saga: &Saga) -> String {
    saga.reason.clone().unwrap_or_else(|| "the order could not be completed".to_owned())
}

/// The saga and reply a participant's message carries; `None` for messages on the reply
/// channels that are not replies.
pub fn reply_of(message: &Envelope) -> Result<Option<(Uuid, Reply)>, BusError> {
    macro_rules! on {
        ($ty:ty, |$m:ident| $reply:expr) => {
            if message.is::<$ty>() {
                let $m = message.decode::<$ty>()?;
                return Ok(Some(($m.saga.saga_id, $reply)));
            }
        };
    }
    on!(PetReserved, |m| Reply::Succeeded(Step::ReservePet));
    on!(PetReservationFailed, |m| Reply::Failed(Step::ReservePet, m.reason));
    on!(PetReleased, |m| Reply::Compensated(Step::ReservePet));
    on!(PetSold, |m| Reply::Succeeded(Step::MarkPetSold));
    on!(PetSaleFailed, |m| Reply::Failed(Step::MarkPetSold, m.reason));
    on!(PetRestored, |m| Reply::Compensated(Step::MarkPetSold));
    on!(PaymentProcessed, |m| Reply::Succeeded(Step::ProcessPayment));
    on!(PaymentFailed, |m| Reply::Failed(Step::ProcessPayment, m.reason));
    on!(PaymentRefunded, |m| Reply::Compensated(Step::ProcessPayment));
    on!(DeliveryScheduled, |m| Reply::Succeeded(Step::ScheduleDelivery));
    on!(DeliveryFailed, |m| Reply::Failed(Step::ScheduleDelivery, m.reason));
    on!(DeliveryCancelled, |m| Reply::Compensated(Step::ScheduleDelivery));
    on!(NotificationSent, |m| match m.kind {
        NotificationKind::Confirmation => Reply::Succeeded(Step::SendConfirmation),
        NotificationKind::CancellationNotice => Reply::NoticeSent,
    });
    on!(NotificationFailed, |m| match m.kind {
        NotificationKind::Confirmation => Reply::Failed(Step::SendConfirmation, m.reason),
        NotificationKind::CancellationNotice => Reply::NoticeFailed(m.reason),
    });
    Ok(None)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use contracts::{Address, PaymentMethod, order::OrderDetails, pricing::PricingArm};
    use rust_decimal::Decimal;

    use super::*;

    fn saga(express: bool) -> Saga {
        let order = OrderDetails {
            order_id: Uuid::now_v7(),
            customer_id: "alice".into(),
            pet_id: "goldfish-004".into(),
            amount: Decimal::new(2250, 2),
            currency: "USD".into(),
            shipping_address: Address {
                street: "1 Main St".into(),
                city: "Springfield".into(),
                postal_code: "1".into(),
                country: "US".into(),
            },
            payment_method: PaymentMethod::CreditCard,
            special_instructions: None,
            pricing_arm: PricingArm::Discount10,
            express,
        };
        let events = Saga::start(Uuid::now_v7(), order, None);
        Saga::replay(events.iter().map(|e| (e, Utc::now()))).expect("a saga")
    }

    fn sent<M: contracts::Message>(saga: &Saga, command: Command) -> M {
        let out = message_for(saga, command, "/t", &MessageContext::default()).expect("encodes").expect("a message");
        out.envelope.decode::<M>().expect("decodes")
    }

    #[test]
    fn the_delivery_command_says_whether_the_order_is_express() {
        for express in [false, true] {
            let saga = saga(express);
            let cmd: ScheduleDelivery = sent(&saga, Command::Execute(Step::ScheduleDelivery));
            assert_eq!(cmd.express, express);
            assert_eq!(cmd.saga.order_id, saga.order.order_id);
        }
    }

    #[test]
    fn the_payment_charges_the_priced_amount() {
        let saga = saga(false);
        let cmd: ProcessPayment = sent(&saga, Command::Execute(Step::ProcessPayment));
        assert_eq!(cmd.amount, Decimal::new(2250, 2));
    }
}
