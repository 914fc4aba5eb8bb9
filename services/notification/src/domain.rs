//! Notification decisions, free of I/O: the same code runs on PostgreSQL and in memory.

use chrono::{DateTime, Utc};
use contracts::{
    SagaRef,
    notification::{NotificationKind, NotificationSent, SendCancellationNotice, SendConfirmation},
};
use messaging::{BusError, MessageContext};
use persistence::Outgoing;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// How a notification reaches the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationChannel {
    /// An email (the only channel used for now).
    Email,
    /// A text message.
    Sms,
    /// A push notification to the customer's app.
    Push,
}

impl NotificationChannel {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Push => "push",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "email" => Some(Self::Email),
            "sms" => Some(Self::Sms),
            "push" => Some(Self::Push),
            _ => None,
        }
    }
}

/// The stored name of a notification kind.
pub(crate) fn kind_name(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::Confirmation => "confirmation",
        NotificationKind::CancellationNotice => "cancellation_notice",
    }
}

/// Parses the stored name of a notification kind.
pub(crate) fn parse_kind(s: &str) -> Option<NotificationKind> {
    match s {
        "confirmation" => Some(NotificationKind::Confirmation),
        "cancellation_notice" => Some(NotificationKind::CancellationNotice),
        _ => None,
    }
}

/// A message sent to a customer: the record is the sent message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// The notification.
    pub notification_id: Uuid,
    /// The saga that asked for it (one notification of each kind per saga).
    pub saga_id: Uuid,
    /// The order it is about.
    pub order_id: Uuid,
    /// The recipient.
    pub customer_id: String,
    /// Which notification.
    pub kind: NotificationKind,
    /// How it was sent.
    pub channel: NotificationChannel,
    /// Its subject line.
    pub subject: String,
    /// Its text.
    pub body: String,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

type Decision = persistence::Decision<Notification>;

/// Composes the order confirmation, unless this saga's confirmation was already sent, in
/// which case that one is reported again (the customer never gets it twice).
pub(crate) fn confirm(
    existing: Option<Notification>,
    cmd: &SendConfirmation,
    source: &str,
    ctx: &MessageContext,
) -> Result<Decision, BusError> {
    let order_id = cmd.saga.order_id;
    let draft = Draft {
        saga: cmd.saga,
        customer_id: &cmd.customer_id,
        kind: NotificationKind::Confirmation,
        subject: format!("Your order {order_id} is confirmed"),
        body: format!(
            "Thank you for your order {order_id}. Pet {} is yours and is being prepared for delivery. Amount charged: {}.",
            cmd.pet_id, cmd.amount
        ),
    };
    send(existing, draft, source, ctx)
}

/// Composes the cancellation notice with the saga's reason, unless this saga's notice was
/// already sent, in which case that one is reported again.
pub(crate) fn notify_cancellation(
    existing: Option<Notification>,
    cmd: &SendCancellationNotice,
    source: &str,
    ctx: &MessageContext,
) -> Result<Decision, BusError> {
    let order_id = cmd.saga.order_id;
    let draft = Draft {
        saga: cmd.saga,
        customer_id: &cmd.customer_id,
        kind: NotificationKind::CancellationNotice,
        subject: format!("Your order {order_id} was cancelled"),
        body: format!(
            "We are sorry: your order {order_id} for pet {} was cancelled. Reason: {}. If you were charged, the amount is refunded.",
            cmd.pet_id, cmd.reason
        ),
    };
    send(existing, draft, source, ctx)
}

/// A notification about to be sent.
struct Draft<'a> {
    saga: SagaRef,
    customer_id: &'a str,
    kind: NotificationKind,
    subject: String,
    body: String,
}

fn send(
    existing: Option<Notification>,
    draft: Draft<'_>,
    source: &str,
    ctx: &MessageContext,
) -> Result<Decision, BusError> {
    let (notification, new) = match existing {
        Some(n) => (n, false),
        None => {
            let n = Notification {
                notification_id: Uuid::now_v7(),
                saga_id: draft.saga.saga_id,
                order_id: draft.saga.order_id,
                customer_id: draft.customer_id.to_owned(),
                kind: draft.kind,
                channel: NotificationChannel::Email,
                subject: draft.subject,
                body: draft.body,
                sent_at: Utc::now(),
            };
            (n, true)
        }
    };
    let reply =
        NotificationSent { saga: draft.saga, notification_id: notification.notification_id, kind: notification.kind };
    Ok((new.then_some(notification), Outgoing::message(source, &reply, ctx)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn saga() -> SagaRef {
        SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() }
    }

    #[test]
    fn a_confirmation_is_sent_once_and_a_repeat_returns_the_same_notification_without_a_write() {
        let cmd = SendConfirmation {
            saga: saga(),
            customer_id: "c".into(),
            pet_id: "pet-1".into(),
            amount: Decimal::new(120000, 2),
        };
        let ctx = MessageContext::default();
        let (first, reply) = confirm(None, &cmd, "/t", &ctx).expect("decide");
        let first = first.expect("saved");
        assert_eq!(first.kind, NotificationKind::Confirmation);
        assert_eq!(first.channel, NotificationChannel::Email);
        assert!(first.subject.contains(&cmd.saga.order_id.to_string()), "{}", first.subject);
        assert!(first.body.contains("pet-1") && first.body.contains("1200.00"), "{}", first.body);
        let sent = reply.envelope.decode::<NotificationSent>().expect("reply");
        assert_eq!((sent.notification_id, sent.kind), (first.notification_id, NotificationKind::Confirmation));

        let (again, reply) = confirm(Some(first.clone()), &cmd, "/t", &ctx).expect("decide");
        assert!(again.is_none(), "no second write");
        assert_eq!(reply.envelope.decode::<NotificationSent>().expect("reply").notification_id, first.notification_id);
    }

    #[test]
    fn a_cancellation_notice_tells_the_customer_why() {
        let cmd = SendCancellationNotice {
            saga: saga(),
            customer_id: "c".into(),
            pet_id: "pet-1".into(),
            reason: "card declined by the payment provider".into(),
        };
        let (saved, reply) = notify_cancellation(None, &cmd, "/t", &MessageContext::default()).expect("decide");
        let saved = saved.expect("saved");
        assert_eq!(saved.kind, NotificationKind::CancellationNotice);
        assert!(saved.body.contains("card declined by the payment provider"), "{}", saved.body);
        assert_eq!(
            reply.envelope.decode::<NotificationSent>().expect("reply").kind,
            NotificationKind::CancellationNotice
        );
    }

    #[test]
    fn stored_kind_names_round_trip() {
        for kind in [NotificationKind::Confirmation, NotificationKind::CancellationNotice] {
            assert_eq!(parse_kind(kind_name(kind)), Some(kind), "{kind:?}");
        }
    }
}
