//! Delivery decisions, free of I/O: the same code runs on PostgreSQL and in memory.

use chrono::{DateTime, Days, NaiveDate, Utc};
use contracts::{
    Address,
    delivery::{CancelDelivery, DeliveryCancelled, DeliveryFailed, DeliveryScheduled, ScheduleDelivery},
};
use messaging::{BusError, MessageContext};
use persistence::Outgoing;
use serde::Serialize;
use uuid::Uuid;

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Booked with the carrier.
    Scheduled,
    /// Called off by the saga's compensation.
    Cancelled,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scheduled" => Some(Self::Scheduled),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// The delivery of one saga's pet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// The delivery.
    pub delivery_id: Uuid,
    /// Its saga (one delivery per saga).
    pub saga_id: Uuid,
    /// Its order.
    pub order_id: Uuid,
    /// What was booked; `None` for a delivery cancelled before it was ever scheduled (the
    /// saga compensated while its `ScheduleDelivery` was still on its way): a tombstone that
    /// makes that late command book nothing.
    pub booking: Option<Booking>,
    /// Where it is.
    pub status: DeliveryStatus,
    /// When it was scheduled (or, for a tombstone, cancelled).
    pub created_at: DateTime<Utc>,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// What a scheduled delivery carries where.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Booking {
    /// The recipient.
    pub customer_id: String,
    /// What is delivered.
    pub pet_id: String,
    /// Where to.
    pub shipping_address: Address,
    /// The day the pet is expected to arrive.
    pub estimated_delivery: NaiveDate,
    /// Booked as an express delivery: for the next day.
    pub express: bool,
}

/// Why a delivery cancelled before a late `ScheduleDelivery` books nothing.
pub const CANCELLED: &str = "the delivery was cancelled: the order was cancelled";

type Decision = persistence::Decision<Delivery>;

/// Books the delivery unless this saga already has one, in which case the earlier booking is
/// repeated (never a second delivery), or it was cancelled, in which case nothing is booked
/// and the step fails. An address with blank fields fails the step and stores nothing, so a
/// repeat of the command fails the same way. An express order is booked for the next day,
/// any other `delivery_days` after today (see [`estimated_delivery`]).
pub(crate) fn schedule(
    existing: Option<Delivery>,
    cmd: &ScheduleDelivery,
    delivery_days: u32,
    source: &str,
    ctx: &MessageContext,
) -> Result<Decision, BusError> {
    let failed = |reason: String| Outgoing::message(source, &DeliveryFailed { saga: cmd.saga, reason }, ctx);
    match existing {
        Some(d) if d.status == DeliveryStatus::Cancelled => return Ok((None, failed(CANCELLED.to_owned())?)),
        Some(Delivery { delivery_id, booking: Some(b), .. }) => {
            let reply = DeliveryScheduled { saga: cmd.saga, delivery_id, estimated_delivery: b.estimated_delivery };
            return Ok((None, Outgoing::message(source, &reply, ctx)?));
        }
        Some(_) | None => {}
    }
    let blank = cmd.shipping_address.blank_fields();
    if !blank.is_empty() {
        let reason = format!("the shipping address is incomplete: {} must not be blank", blank.join(", "));
        return Ok((None, failed(reason)?));
    }
    let now = Utc::now();
    let booking = Booking {
        customer_id: cmd.customer_id.clone(),
        pet_id: cmd.pet_id.clone(),
        shipping_address: cmd.shipping_address.clone(),
        estimated_delivery: estimated_delivery(now.date_naive(), delivery_days, cmd.express),
        express: cmd.express,
    };
    let reply = DeliveryScheduled {
        saga: cmd.saga,
        delivery_id: Uuid::now_v7(),
        estimated_delivery: booking.estimated_delivery,
    };
    let delivery = Delivery {
        delivery_id: reply.delivery_id,
        saga_id: cmd.saga.saga_id,
        order_id: cmd.saga.order_id,
        booking: Some(booking),
        status: DeliveryStatus::Scheduled,
        created_at: now,
        cancelled_at: None,
    };
    Ok((Some(delivery), Outgoing::message(source, &reply, ctx)?))
}

/// When a delivery booked `today` arrives: `today` plus the configured transit days, or for an
/// express order the next day — never later than a standard delivery would (with
/// `delivery_days` 0, both arrive today). Saturates at the last representable date.
fn estimated_delivery(today: NaiveDate, delivery_days: u32, express: bool) -> NaiveDate {
    let days = if express { delivery_days.min(EXPRESS_DAYS) } else { delivery_days };
    today.checked_add_days(Days::new(u64::from(days))).unwrap_or(NaiveDate::MAX)
}

/// The transit days of an express delivery: it arrives the day after it is booked.
const EXPRESS_DAYS: u32 = 1;

/// Cancels this saga's scheduled delivery; one already cancelled stays as it is. With no
/// delivery at all, a cancelled tombstone is recorded, so that a `ScheduleDelivery` arriving
/// after this cancellation books nothing. The cancellation is confirmed either way.
pub(crate) fn cancel(
    existing: Option<Delivery>,
    cmd: &CancelDelivery,
    source: &str,
    ctx: &MessageContext,
) -> Result<Decision, BusError> {
    let now = Utc::now();
    let changed = match existing {
        Some(mut d) if d.status == DeliveryStatus::Scheduled => {
            d.status = DeliveryStatus::Cancelled;
            d.cancelled_at = Some(now);
            Some(d)
        }
        Some(_) => None,
        None => Some(Delivery {
            delivery_id: Uuid::now_v7(),
            saga_id: cmd.saga.saga_id,
            order_id: cmd.saga.order_id,
            booking: None,
            status: DeliveryStatus::Cancelled,
            created_at: now,
            cancelled_at: Some(now),
        }),
    };
    Ok((changed, Outgoing::message(source, &DeliveryCancelled { saga: cmd.saga }, ctx)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::SagaRef;

    fn booking(address: Address) -> ScheduleDelivery {
        ScheduleDelivery {
            saga: SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() },
            customer_id: "c".into(),
            pet_id: "pet-1".into(),
            shipping_address: address,
            express: false,
        }
    }

    fn address() -> Address {
        Address {
            street: "1 Main St".into(),
            city: "Springfield".into(),
            postal_code: "12345".into(),
            country: "US".into(),
        }
    }

    #[test]
    fn a_delivery_is_scheduled_once_and_a_repeat_returns_the_same_delivery_without_a_write() {
        let cmd = booking(address());
        let ctx = MessageContext::default();
        let (first, reply) = schedule(None, &cmd, 3, "/t", &ctx).expect("decide");
        let first = first.expect("saved");
        assert_eq!(first.status, DeliveryStatus::Scheduled);
        let estimated = first.booking.as_ref().expect("a booking").estimated_delivery;
        assert_eq!((estimated - first.created_at.date_naive()).num_days(), 3, "three days after scheduling");
        let scheduled = reply.envelope.decode::<DeliveryScheduled>().expect("reply");
        assert_eq!(scheduled.delivery_id, first.delivery_id);
        assert_eq!(scheduled.estimated_delivery, estimated);

        let (again, reply) = schedule(Some(first.clone()), &cmd, 3, "/t", &ctx).expect("decide");
        assert!(again.is_none(), "no second write");
        assert_eq!(reply.envelope.decode::<DeliveryScheduled>().expect("reply").delivery_id, first.delivery_id);
    }

    #[test]
    fn an_express_delivery_is_booked_for_the_next_day_and_repeated_as_booked() {
        let cmd = ScheduleDelivery { express: true, ..booking(address()) };
        let ctx = MessageContext::default();
        let (first, reply) = schedule(None, &cmd, 3, "/t", &ctx).expect("decide");
        let first = first.expect("saved");
        let b = first.booking.as_ref().expect("a booking");
        assert!(b.express);
        assert_eq!(b.estimated_delivery, first.created_at.date_naive() + Days::new(1), "tomorrow, not in three days");
        let scheduled = reply.envelope.decode::<DeliveryScheduled>().expect("reply");
        assert_eq!(scheduled.estimated_delivery, b.estimated_delivery);

        let (again, reply) = schedule(Some(first.clone()), &cmd, 3, "/t", &ctx).expect("decide");
        assert!(again.is_none(), "no second write");
        assert_eq!(
            reply.envelope.decode::<DeliveryScheduled>().expect("reply").estimated_delivery,
            b.estimated_delivery
        );
    }

    #[test]
    fn estimated_delivery_is_after_the_transit_days_or_tomorrow_for_express() {
        let today = NaiveDate::from_ymd_opt(2025, 2, 28).expect("a date");
        let day = |m, d| NaiveDate::from_ymd_opt(2025, m, d).expect("a date");
        assert_eq!(estimated_delivery(today, 3, false), day(3, 3));
        assert_eq!(estimated_delivery(today, 3, true), day(3, 1));
        assert_eq!(estimated_delivery(today, 1, true), day(3, 1));
        // Express is never slower than standard.
        assert_eq!(estimated_delivery(today, 0, true), today);
        assert_eq!(estimated_delivery(NaiveDate::MAX, 3, true), NaiveDate::MAX);
    }

    #[test]
    fn an_address_with_blank_fields_fails_the_delivery_and_stores_nothing() {
        let cmd = booking(Address { street: " ".into(), city: String::new(), ..address() });
        let (saved, reply) = schedule(None, &cmd, 3, "/t", &MessageContext::default()).expect("decide");
        assert!(saved.is_none(), "nothing stored");
        let failed = reply.envelope.decode::<DeliveryFailed>().expect("a DeliveryFailed reply");
        assert!(failed.reason.contains("shipping_address.street"), "{}", failed.reason);
        assert!(failed.reason.contains("shipping_address.city"), "{}", failed.reason);
        assert!(!failed.reason.contains("postal_code"), "{}", failed.reason);
    }

    #[test]
    fn cancelling_a_scheduled_delivery_cancels_it_once() {
        let cmd = booking(address());
        let cancel_cmd = CancelDelivery { saga: cmd.saga };
        let ctx = MessageContext::default();
        let (scheduled, _) = schedule(None, &cmd, 3, "/t", &ctx).expect("decide");
        let (cancelled, reply) = cancel(scheduled, &cancel_cmd, "/t", &ctx).expect("decide");
        let cancelled = cancelled.expect("saved");
        assert_eq!(cancelled.status, DeliveryStatus::Cancelled);
        assert!(cancelled.cancelled_at.is_some());
        assert!(reply.envelope.is::<DeliveryCancelled>());
        let (again, reply) = cancel(Some(cancelled.clone()), &cancel_cmd, "/t", &ctx).expect("decide");
        assert!(again.is_none(), "no second write");
        assert!(reply.envelope.is::<DeliveryCancelled>());
        let (late, reply) = schedule(Some(cancelled), &cmd, 3, "/t", &ctx).expect("decide");
        assert!(late.is_none(), "a late copy of the booking does not book again");
        assert_eq!(reply.envelope.decode::<DeliveryFailed>().expect("the late booking fails").reason, CANCELLED);
    }

    #[test]
    fn a_cancellation_before_any_booking_leaves_a_tombstone_and_the_late_booking_books_nothing() {
        let booking_cmd = booking(address());
        let cmd = CancelDelivery { saga: booking_cmd.saga };
        let ctx = MessageContext::default();
        let (saved, reply) = cancel(None, &cmd, "/t", &ctx).expect("decide");
        let tombstone = saved.expect("a tombstone");
        assert_eq!((tombstone.status, tombstone.booking.as_ref()), (DeliveryStatus::Cancelled, None));
        assert_eq!(reply.envelope.decode::<DeliveryCancelled>().expect("reply").saga, cmd.saga);

        let (late, reply) = schedule(Some(tombstone.clone()), &booking_cmd, 3, "/t", &ctx).expect("decide");
        assert!(late.is_none(), "nothing booked");
        assert_eq!(reply.envelope.decode::<DeliveryFailed>().expect("fails").reason, CANCELLED);
        let (again, _) = cancel(Some(tombstone), &cmd, "/t", &ctx).expect("decide");
        assert!(again.is_none(), "a repeated cancellation leaves the tombstone as it is");
    }
}
