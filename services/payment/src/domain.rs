//! Payment decisions, free of I/O: the same code runs on PostgreSQL and in memory.
//!
//! One payment per saga. A refund that comes before any charge (the saga was compensated while
//! its `ProcessPayment` was still on its way) voids the saga's payment: a tombstone that makes
//! a later `ProcessPayment` for that saga charge nothing.

use chrono::{DateTime, Utc};
use contracts::{
    PaymentMethod,
    payment::{PaymentFailed, PaymentProcessed, PaymentRefunded, ProcessPayment, RefundPayment},
};
use messaging::{BusError, MessageContext};
use persistence::Outgoing;
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use crate::provider::Verdict;

/// Where a payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Money taken.
    Charged,
    /// The provider refused, or could not be reached; nothing taken.
    Declined,
    /// Money given back.
    Refunded,
    /// Refunded before any charge: the saga was compensated, nothing may be charged for it.
    Voided,
}

impl PaymentStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charged => "charged",
            Self::Declined => "declined",
            Self::Refunded => "refunded",
            Self::Voided => "voided",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "charged" => Some(Self::Charged),
            "declined" => Some(Self::Declined),
            "refunded" => Some(Self::Refunded),
            "voided" => Some(Self::Voided),
            _ => None,
        }
    }
}

/// The payment of one saga.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payment {
    /// The payment.
    pub payment_id: Uuid,
    /// Its saga (one payment per saga).
    pub saga_id: Uuid,
    /// Its order.
    pub order_id: Uuid,
    /// Who pays (`None` when voided: the refund that voided it does not say).
    pub customer_id: Option<String>,
    /// How much (0 when voided).
    pub amount: Decimal,
    /// ISO 4217 currency (`None` when voided).
    pub currency: Option<String>,
    /// How (`None` when voided).
    pub payment_method: Option<PaymentMethod>,
    /// Where it is.
    pub status: PaymentStatus,
    /// Why the provider declined.
    pub decline_reason: Option<String>,
    /// When it was attempted.
    pub created_at: DateTime<Utc>,
    /// When it was refunded.
    pub refunded_at: Option<DateTime<Utc>>,
}

/// Why a payment voided by an earlier refund charges nothing.
pub const VOIDED: &str = "payment voided: the order was cancelled";

type Decision = persistence::Decision<Payment>;

/// Charges the customer as the provider's `verdict` says, unless this saga's payment was
/// already attempted, in which case the earlier outcome is repeated (never a second charge,
/// and the new verdict lapses), or voided by a refund that came first, in which case nothing
/// is charged and the payment fails. `verdict` is `None` when the caller saw the payment
/// already recorded and so did not ask the provider.
pub(crate) fn process(
    existing: Option<Payment>,
    cmd: &ProcessPayment,
    verdict: Option<&Verdict>,
    source: &str,
    ctx: &MessageContext,
) -> Result<Decision, BusError> {
    let (payment, changed) = match (existing, verdict) {
        (Some(p), _) => (p, false),
        (None, None) => {
            return Err(BusError::Backend {
                backend: "payment",
                message: format!("no payment for saga {} and no provider verdict", cmd.saga.saga_id),
                retriable: true,
            });
        }
        (None, Some(verdict)) => {
            let decline_reason = match verdict {
                Verdict::Approved => None,
                Verdict::Declined(reason) => Some(reason.clone()),
            };
            let p = Payment {
                payment_id: Uuid::now_v7(),
                saga_id: cmd.saga.saga_id,
                order_id: cmd.saga.order_id,
                customer_id: Some(cmd.customer_id.clone()),
                amount: cmd.amount,
                currency: Some(cmd.currency.clone()),
                payment_method: Some(cmd.payment_method),
                status: if decline_reason.is_some() { PaymentStatus::Declined } else { PaymentStatus::Charged },
                decline_reason,
                created_at: Utc::now(),
                refunded_at: None,
            };
            (p, true)
        }
    };
    let reply = match payment.status {
        PaymentStatus::Declined => Outgoing::message(
            source,
            &PaymentFailed {
                saga: cmd.saga,
                reason: payment.decline_reason.clone().unwrap_or_else(|| "declined".into()),
            },
            ctx,
        )?,
        PaymentStatus::Voided => {
            Outgoing::message(source, &PaymentFailed { saga: cmd.saga, reason: VOIDED.to_owned() }, ctx)?
        }
        PaymentStatus::Charged | PaymentStatus::Refunded => Outgoing::message(
            source,
            &PaymentProcessed { saga: cmd.saga, payment_id: payment.payment_id, amount: payment.amount },
            ctx,
        )?,
    };
    Ok((changed.then_some(payment), reply))
}

/// Refunds this saga's charge; with nothing charged (declined, already refunded, voided)
/// nothing more is given back. With no payment at all, the payment is voided (a tombstone with
/// nothing charged), so that a `ProcessPayment` arriving after this refund charges nothing.
pub(crate) fn refund(
    existing: Option<Payment>,
    cmd: &RefundPayment,
    source: &str,
    ctx: &MessageContext,
) -> Result<Decision, BusError> {
    let (changed, amount) = match existing {
        Some(mut p) if p.status == PaymentStatus::Charged => {
            p.status = PaymentStatus::Refunded;
            p.refunded_at = Some(Utc::now());
            let amount = p.amount;
            (Some(p), amount)
        }
        Some(p) if p.status == PaymentStatus::Refunded => (None, p.amount),
        Some(_) => (None, Decimal::ZERO),
        None => (Some(voided(cmd)), Decimal::ZERO),
    };
    let reply = Outgoing::message(source, &PaymentRefunded { saga: cmd.saga, amount }, ctx)?;
    Ok((changed, reply))
}

/// The tombstone a refund leaves for a saga with no payment: only what the refund knows.
fn voided(cmd: &RefundPayment) -> Payment {
    Payment {
        payment_id: Uuid::now_v7(),
        saga_id: cmd.saga.saga_id,
        order_id: cmd.saga.order_id,
        customer_id: None,
        amount: Decimal::ZERO,
        currency: None,
        payment_method: None,
        status: PaymentStatus::Voided,
        decline_reason: None,
        created_at: Utc::now(),
        refunded_at: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use contracts::SagaRef;

    /// A charge of 1 200.00 USD for a new saga.
    pub(crate) fn charge(method: PaymentMethod) -> ProcessPayment {
        ProcessPayment {
            saga: SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() },
            customer_id: "c".into(),
            amount: Decimal::new(120000, 2),
            currency: "USD".into(),
            payment_method: method,
        }
    }

    const APPROVED: Option<&Verdict> = Some(&Verdict::Approved);

    #[test]
    fn a_declined_charge_is_recorded_with_its_reason_and_nothing_is_charged() {
        let declined = Verdict::Declined("card declined".into());
        let (saved, reply) =
            process(None, &charge(PaymentMethod::DeclinedCard), Some(&declined), "/t", &MessageContext::default())
                .expect("decide");
        let saved = saved.expect("saved");
        assert_eq!((saved.status, saved.decline_reason.as_deref()), (PaymentStatus::Declined, Some("card declined")));
        assert_eq!(reply.envelope.decode::<PaymentFailed>().expect("failed").reason, "card declined");
    }

    #[test]
    fn a_recorded_payment_needs_no_verdict_and_none_without_one_is_retried() {
        let cmd = charge(PaymentMethod::CreditCard);
        let ctx = MessageContext::default();
        let (first, _) = process(None, &cmd, APPROVED, "/t", &ctx).expect("decide");
        let (again, reply) = process(first, &cmd, None, "/t", &ctx).expect("decide");
        assert!(again.is_none());
        assert!(reply.envelope.is::<PaymentProcessed>());
        let Err(err) = process(None, &cmd, None, "/t", &ctx) else { panic!("nothing to decide with") };
        assert!(matches!(err, BusError::Backend { retriable: true, .. }), "{err}");
    }

    #[test]
    fn a_repeated_charge_repeats_the_outcome_without_charging_again() {
        let cmd = charge(PaymentMethod::CreditCard);
        let (first, _) = process(None, &cmd, APPROVED, "/t", &MessageContext::default()).expect("decide");
        let first = first.expect("saved");
        let (again, reply) =
            process(Some(first.clone()), &cmd, APPROVED, "/t", &MessageContext::default()).expect("decide");
        assert!(again.is_none(), "no second write");
        assert_eq!(reply.envelope.decode::<PaymentProcessed>().expect("reply").payment_id, first.payment_id);
    }

    #[test]
    fn refunds_give_back_only_what_was_charged_once() {
        let cmd = charge(PaymentMethod::CreditCard);
        let refund_cmd = RefundPayment { saga: cmd.saga };
        let ctx = MessageContext::default();
        let (charged, _) = process(None, &cmd, APPROVED, "/t", &ctx).expect("decide");
        let (refunded, reply) = refund(charged, &refund_cmd, "/t", &ctx).expect("decide");
        let refunded = refunded.expect("saved");
        assert_eq!(refunded.status, PaymentStatus::Refunded);
        assert_eq!(reply.envelope.decode::<PaymentRefunded>().expect("reply").amount, cmd.amount);
        let (again, _) = refund(Some(refunded), &refund_cmd, "/t", &ctx).expect("decide");
        assert!(again.is_none(), "no second refund");
    }

    #[test]
    fn a_refund_before_any_charge_voids_the_payment_and_a_late_charge_takes_nothing() {
        let cmd = charge(PaymentMethod::CreditCard);
        let refund_cmd = RefundPayment { saga: cmd.saga };
        let ctx = MessageContext::default();

        let (tombstone, reply) = refund(None, &refund_cmd, "/t", &ctx).expect("decide");
        let tombstone = tombstone.expect("a voided payment is recorded");
        assert_eq!((tombstone.saga_id, tombstone.order_id), (cmd.saga.saga_id, cmd.saga.order_id));
        assert_eq!((tombstone.status, tombstone.amount), (PaymentStatus::Voided, Decimal::ZERO));
        assert_eq!(reply.envelope.decode::<PaymentRefunded>().expect("reply").amount, Decimal::ZERO);

        let (late, reply) = process(Some(tombstone.clone()), &cmd, APPROVED, "/t", &ctx).expect("decide");
        assert!(late.is_none(), "the tombstone stays; nothing is charged");
        let failed = reply.envelope.decode::<PaymentFailed>().expect("the late charge fails");
        assert_eq!((failed.saga, failed.reason.as_str()), (cmd.saga, VOIDED));

        let (again, reply) = refund(Some(tombstone), &refund_cmd, "/t", &ctx).expect("decide");
        assert!(again.is_none(), "a repeated refund leaves the tombstone as it is");
        assert_eq!(reply.envelope.decode::<PaymentRefunded>().expect("reply").amount, Decimal::ZERO);
    }

    #[test]
    fn a_charge_before_its_refund_is_charged_then_refunded_in_full() {
        let cmd = charge(PaymentMethod::CreditCard);
        let ctx = MessageContext::default();
        let (charged, reply) = process(None, &cmd, APPROVED, "/t", &ctx).expect("decide");
        assert!(reply.envelope.is::<PaymentProcessed>());
        let charged = charged.expect("saved");
        assert_eq!((charged.status, charged.amount), (PaymentStatus::Charged, cmd.amount));

        let (refunded, reply) = refund(Some(charged), &RefundPayment { saga: cmd.saga }, "/t", &ctx).expect("decide");
        assert_eq!(refunded.expect("saved").status, PaymentStatus::Refunded, "a charge is refunded, not voided");
        assert_eq!(reply.envelope.decode::<PaymentRefunded>().expect("reply").amount, cmd.amount);
    }

    #[test]
    fn a_declined_payment_is_not_voided_by_its_refund() {
        let cmd = charge(PaymentMethod::DeclinedCard);
        let ctx = MessageContext::default();
        let (declined, _) =
            process(None, &cmd, Some(&Verdict::Declined("card declined".into())), "/t", &ctx).expect("decide");
        let (changed, reply) = refund(declined, &RefundPayment { saga: cmd.saga }, "/t", &ctx).expect("decide");
        assert!(changed.is_none(), "nothing to give back, and a tombstone is not needed");
        assert_eq!(reply.envelope.decode::<PaymentRefunded>().expect("reply").amount, Decimal::ZERO);
    }
}
