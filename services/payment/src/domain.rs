//! Payment decisions, free of I/O: the same code runs on PostgreSQL and in memory.

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

/// Where a payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Money taken.
    Charged,
    /// The provider refused; nothing taken.
    Declined,
    /// Money given back.
    Refunded,
}

impl PaymentStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charged => "charged",
            Self::Declined => "declined",
            Self::Refunded => "refunded",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "charged" => Some(Self::Charged),
            "declined" => Some(Self::Declined),
            "refunded" => Some(Self::Refunded),
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
    /// Who pays.
    pub customer_id: String,
    /// How much.
    pub amount: Decimal,
    /// ISO 4217 currency.
    pub currency: String,
    /// How.
    pub payment_method: PaymentMethod,
    /// Where it is.
    pub status: PaymentStatus,
    /// Why the provider declined.
    pub decline_reason: Option<String>,
    /// When it was attempted.
    pub created_at: DateTime<Utc>,
    /// When it was refunded.
    pub refunded_at: Option<DateTime<Utc>>,
}

/// The simulated payment provider: the `declined_card` test card is always declined,
/// everything else is charged.
fn provider_decline_reason(method: PaymentMethod) -> Option<String> {
    (method == PaymentMethod::DeclinedCard).then(|| "card declined by the payment provider".to_owned())
}

type Decision = persistence::Decision<Payment>;

/// Charges the customer unless this saga's payment was already attempted, in which case the
/// earlier outcome is repeated (never a second charge).
pub(crate) fn process(
    existing: Option<Payment>,
    cmd: &ProcessPayment,
    source: &str,
    ctx: &MessageContext,
) -> Result<Decision, BusError> {
    let (payment, changed) = match existing {
        Some(p) => (p, false),
        None => {
            let decline_reason = provider_decline_reason(cmd.payment_method);
            let p = Payment {
                payment_id: Uuid::now_v7(),
                saga_id: cmd.saga.saga_id,
                order_id: cmd.saga.order_id,
                customer_id: cmd.customer_id.clone(),
                amount: cmd.amount,
                currency: cmd.currency.clone(),
                payment_method: cmd.payment_method,
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
        PaymentStatus::Charged | PaymentStatus::Refunded => Outgoing::message(
            source,
            &PaymentProcessed { saga: cmd.saga, payment_id: payment.payment_id, amount: payment.amount },
            ctx,
        )?,
    };
    Ok((changed.then_some(payment), reply))
}

/// Refunds this saga's charge; with nothing charged (no payment, declined, or already
/// refunded) nothing more is given back.
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
        _ => (None, Decimal::ZERO),
    };
    let reply = Outgoing::message(source, &PaymentRefunded { saga: cmd.saga, amount }, ctx)?;
    Ok((changed, reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::SagaRef;

    fn charge(method: PaymentMethod) -> ProcessPayment {
        ProcessPayment {
            saga: SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() },
            customer_id: "c".into(),
            amount: Decimal::new(120000, 2),
            currency: "USD".into(),
            payment_method: method,
        }
    }

    #[test]
    fn the_test_card_is_declined_and_nothing_is_charged() {
        let (saved, reply) =
            process(None, &charge(PaymentMethod::DeclinedCard), "/t", &MessageContext::default()).expect("decide");
        assert_eq!(saved.expect("saved").status, PaymentStatus::Declined);
        assert!(reply.envelope.is::<PaymentFailed>());
    }

    #[test]
    fn a_repeated_charge_repeats_the_outcome_without_charging_again() {
        let cmd = charge(PaymentMethod::CreditCard);
        let (first, _) = process(None, &cmd, "/t", &MessageContext::default()).expect("decide");
        let first = first.expect("saved");
        let (again, reply) = process(Some(first.clone()), &cmd, "/t", &MessageContext::default()).expect("decide");
        assert!(again.is_none(), "no second write");
        assert_eq!(reply.envelope.decode::<PaymentProcessed>().expect("reply").payment_id, first.payment_id);
    }

    #[test]
    fn refunds_give_back_only_what_was_charged_once() {
        let cmd = charge(PaymentMethod::CreditCard);
        let refund_cmd = RefundPayment { saga: cmd.saga };
        let ctx = MessageContext::default();
        let (charged, _) = process(None, &cmd, "/t", &ctx).expect("decide");
        let (refunded, reply) = refund(charged, &refund_cmd, "/t", &ctx).expect("decide");
        let refunded = refunded.expect("saved");
        assert_eq!(refunded.status, PaymentStatus::Refunded);
        assert_eq!(reply.envelope.decode::<PaymentRefunded>().expect("reply").amount, cmd.amount);
        let (again, _) = refund(Some(refunded), &refund_cmd, "/t", &ctx).expect("decide");
        assert!(again.is_none(), "no second refund");
        let (none, reply) = refund(None, &refund_cmd, "/t", &ctx).expect("decide");
        assert!(none.is_none());
        assert_eq!(reply.envelope.decode::<PaymentRefunded>().expect("reply").amount, Decimal::ZERO);
    }
}
