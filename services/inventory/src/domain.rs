//! Catalog decisions, free of I/O: the same code runs on PostgreSQL and in memory.
//!
//! A pet is `available`, `reserved` by a running saga (the saga's semantic lock on it) or
//! `sold` to a saga. Every command is answered, and answering it twice is harmless: a command
//! that finds its work already done repeats the success without writing. A reservation holds
//! until `reserved_until`: past it the saga can no longer buy the pet, and [`expire`] releases
//! it (the sweeper's decision).

use chrono::{DateTime, TimeDelta, Utc};
use contracts::{
    SagaRef,
    inventory::{
        Availability, MarkPetSold, PetDetails, PetReleased, PetReservationFailed, PetReserved, PetRestored,
        PetSaleFailed, PetSold, PetSummary, ReleasePet, ReservePet, RestorePet,
    },
};
use messaging::{BusError, Envelope, MessageContext};
use persistence::Outgoing;
use rust_decimal::Decimal;
use uuid::Uuid;

/// The stored name of an availability.
pub fn availability_name(a: Availability) -> &'static str {
    match a {
        Availability::Available => "available",
        Availability::Reserved => "reserved",
        Availability::Sold => "sold",
    }
}

/// Parses the stored name of an availability.
pub fn parse_availability(s: &str) -> Option<Availability> {
    match s {
        "available" => Some(Availability::Available),
        "reserved" => Some(Availability::Reserved),
        "sold" => Some(Availability::Sold),
        _ => None,
    }
}

/// A catalog entry and its stock state.
#[derive(Debug, Clone, PartialEq)]
pub struct Pet {
    /// Human-readable id, e.g. `golden-retriever-001` (the contract).
    pub pet_id: String,
    /// Display name.
    pub name: String,
    /// `dog`, `cat`, `bird`, `fish`, `reptile`, …
    pub category: String,
    /// Breed or species.
    pub breed: String,
    /// Age in months.
    pub age_months: i32,
    /// Price in `currency`, two decimal places.
    pub price: Decimal,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Free text for the catalog page.
    pub description: String,
    /// Available, reserved or sold.
    pub status: Availability,
    /// The saga that reserved or bought the pet; `None` exactly when it is available.
    pub held_by_saga: Option<Uuid>,
    /// The order of that saga (the nil UUID for holds older than this column).
    pub held_for_order: Option<Uuid>,
    /// Until when the reservation holds; `Some` exactly when the pet is reserved.
    pub reserved_until: Option<DateTime<Utc>>,
    /// When `status` last changed.
    pub status_changed_at: DateTime<Utc>,
    /// When the pet entered the catalog.
    pub created_at: DateTime<Utc>,
}

impl Pet {
    /// A pet entering the catalog at `at`: available, held by no saga (the seed and an
    /// administrator's listing both start a pet so).
    pub fn listed(pet_id: String, details: PetDetails, at: DateTime<Utc>) -> Self {
        let PetDetails { name, category, breed, age_months, price, currency, description } = details;
        Self {
            pet_id,
            name,
            category,
            breed,
            age_months,
            price,
            currency,
            description,
            status: Availability::Available,
            held_by_saga: None,
            held_for_order: None,
            reserved_until: None,
            status_changed_at: at,
            created_at: at,
        }
    }

    /// What an order needs to know about the pet (the `GetPetStatus` answer).
    pub fn summary(&self) -> PetSummary {
        PetSummary {
            name: self.name.clone(),
            price: self.price,
            currency: self.currency.clone(),
            availability: self.status,
        }
    }

    fn held_by(&self, saga_id: Uuid) -> bool {
        self.held_by_saga == Some(saga_id)
    }

    /// Whether `saga_id` holds a reservation of the pet that has not run out by `now`.
    fn reserved_in_time_for(&self, saga_id: Uuid, now: DateTime<Utc>) -> bool {
        self.status == Availability::Reserved && self.held_by(saga_id) && !self.reservation_expired(now)
    }

    /// The saga holding the pet, if one does.
    fn holder(&self) -> Option<SagaRef> {
        Some(SagaRef { saga_id: self.held_by_saga?, order_id: self.held_for_order.unwrap_or_default() })
    }

    /// Whether the pet is reserved and its reservation ran out by `now`.
    pub fn reservation_expired(&self, now: DateTime<Utc>) -> bool {
        self.status == Availability::Reserved && self.reserved_until.is_some_and(|until| until <= now)
    }

    /// The pet moved at `at` to `status`, held by `saga` (`None` when available), reserved
    /// until `reserved_until` (`Some` only when reserved).
    fn moved(
        mut self,
        status: Availability,
        saga: Option<SagaRef>,
        at: DateTime<Utc>,
        reserved_until: Option<DateTime<Utc>>,
    ) -> Self {
        self.status = status;
        self.held_by_saga = saga.map(|s| s.saga_id);
        self.held_for_order = saga.map(|s| s.order_id);
        self.reserved_until = reserved_until;
        self.status_changed_at = at;
        self
    }
}

/// The catalog filters of `GET /pets`; an absent filter matches every pet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PetFilter {
    /// Exactly this category.
    pub category: Option<String>,
    /// Price at most this (the catalog price, whatever a customer's pricing arm makes of it).
    pub max_price: Option<Decimal>,
    /// `true`: only available pets; `false`: only reserved or sold ones.
    pub available: Option<bool>,
    /// Exactly this breed.
    pub breed: Option<String>,
    /// At least this many months old.
    pub min_age_months: Option<i32>,
    /// At most this many months old.
    pub max_age_months: Option<i32>,
}

impl PetFilter {
    /// Whether `pet` passes every filter (the in-memory twin of the SQL `WHERE`).
    pub fn matches(&self, pet: &Pet) -> bool {
        self.category.as_ref().is_none_or(|c| *c == pet.category)
            && self.max_price.is_none_or(|max| pet.price <= max)
            && self.available.is_none_or(|a| a == (pet.status == Availability::Available))
            && self.breed.as_ref().is_none_or(|b| *b == pet.breed)
            && self.min_age_months.is_none_or(|min| pet.age_months >= min)
            && self.max_age_months.is_none_or(|max| pet.age_months <= max)
    }
}

/// The order of a `GET /pets` listing. Every order breaks ties by pet id (ascending), so it is
/// total and keyset paging by (sort key, pet id) visits each pet exactly once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PetSort {
    /// By pet id (the default).
    #[default]
    Id,
    /// Cheapest first.
    Price,
    /// Dearest first.
    PriceDesc,
    /// Youngest first.
    Age,
    /// Oldest first.
    AgeDesc,
}

impl PetSort {
    /// Every sort.
    pub const ALL: [Self; 5] = [Self::Id, Self::Price, Self::PriceDesc, Self::Age, Self::AgeDesc];

    /// The sort a `sort` parameter names: `id`, `price`, `-price`, `age` or `-age`.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// The sort's name, as the `sort` parameter spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Price => "price",
            Self::PriceDesc => "-price",
            Self::Age => "age",
            Self::AgeDesc => "-age",
        }
    }

    /// How this sort orders two pets (the in-memory twin of the SQL `ORDER BY`).
    pub fn compare(self, a: &Pet, b: &Pet) -> std::cmp::Ordering {
        let primary = match self {
            Self::Id => std::cmp::Ordering::Equal,
            Self::Price => a.price.cmp(&b.price),
            Self::PriceDesc => b.price.cmp(&a.price),
            Self::Age => a.age_months.cmp(&b.age_months),
            Self::AgeDesc => b.age_months.cmp(&a.age_months),
        };
        primary.then_with(|| a.pet_id.cmp(&b.pet_id))
    }
}

/// The sort key a cursor holds besides the pet id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    /// `PetSort::Id`: the pet id is the key.
    None,
    /// A price sort.
    Price(Decimal),
    /// An age sort.
    Age(i32),
}

/// Where the next page of a listing starts: just after the last pet of the previous page, as
/// its sort orders pets. It holds its sort, that pet's sort key and its id (the tie-break), so
/// a cursor is only ever used with the sort it came from.
///
/// Its text form is the pet id alone for [`PetSort::Id`] (as cursors always were), else
/// `<sort>:<key>:<pet id>`, e.g. `-price:1200:golden-retriever-001` (the price normalized; pet
/// ids have no `:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    sort: PetSort,
    key: SortKey,
    pet_id: String,
}

impl Cursor {
    /// The position of `pet` in a listing sorted by `sort`.
    pub fn after(sort: PetSort, pet: &Pet) -> Self {
        let key = match sort {
            PetSort::Id => SortKey::None,
            PetSort::Price | PetSort::PriceDesc => SortKey::Price(pet.price),
            PetSort::Age | PetSort::AgeDesc => SortKey::Age(pet.age_months),
        };
        Self { sort, key, pet_id: pet.pet_id.clone() }
    }

    /// The sort the cursor belongs to.
    pub fn sort(&self) -> PetSort {
        self.sort
    }

    /// The last pet's id.
    pub fn pet_id(&self) -> &str {
        &self.pet_id
    }

    /// The last pet's price, for a price sort.
    pub fn price(&self) -> Option<Decimal> {
        match self.key {
            SortKey::Price(price) => Some(price),
            _ => None,
        }
    }

    /// The last pet's age, for an age sort.
    pub fn age_months(&self) -> Option<i32> {
        match self.key {
            SortKey::Age(age) => Some(age),
            _ => None,
        }
    }

    /// Whether `pet` comes after the cursor in its sort (belongs to a later page).
    pub fn precedes(&self, pet: &Pet) -> bool {
        let primary = match (self.sort, self.key) {
            (PetSort::Price, SortKey::Price(price)) => price.cmp(&pet.price),
            (PetSort::PriceDesc, SortKey::Price(price)) => pet.price.cmp(&price),
            (PetSort::Age, SortKey::Age(age)) => age.cmp(&pet.age_months),
            (PetSort::AgeDesc, SortKey::Age(age)) => pet.age_months.cmp(&age),
            // The constructors pair every sort with its key.
            _ => std::cmp::Ordering::Equal,
        };
        primary.then_with(|| self.pet_id.as_str().cmp(&pet.pet_id)).is_lt()
    }

    /// The cursor's text form (see [`Cursor`]).
    pub fn to_text(&self) -> String {
        match self.key {
            SortKey::None => self.pet_id.clone(),
            SortKey::Price(price) => format!("{}:{}:{}", self.sort.as_str(), price.normalize(), self.pet_id),
            SortKey::Age(age) => format!("{}:{age}:{}", self.sort.as_str(), self.pet_id),
        }
    }

    /// Parses a cursor's text form; `None` when it is not one (an empty pet id, an unknown
    /// sort, a key that does not fit the sort).
    pub fn parse(text: &str) -> Option<Self> {
        let Some((sort, rest)) = text.split_once(':') else {
            return (!text.is_empty()).then(|| Self { sort: PetSort::Id, key: SortKey::None, pet_id: text.to_owned() });
        };
        let (key, pet_id) = rest.split_once(':')?;
        let sort = PetSort::parse(sort)?;
        let key = match sort {
            PetSort::Id => return None,
            PetSort::Price | PetSort::PriceDesc => {
                let price: Decimal = key.parse().ok()?;
                (!price.is_sign_negative()).then_some(SortKey::Price(price))?
            }
            PetSort::Age | PetSort::AgeDesc => {
                let age: i32 = key.parse().ok()?;
                (age >= 0).then_some(SortKey::Age(age))?
            }
        };
        (!pet_id.is_empty()).then(|| Self { sort, key, pet_id: pet_id.to_owned() })
    }
}

/// A command of the `inventory-commands` channel.
#[derive(Debug, Clone, PartialEq)]
pub enum InventoryCommand {
    /// Saga step 1.
    Reserve(ReservePet),
    /// Compensation of step 1.
    Release(ReleasePet),
    /// Saga step 4, the pivot.
    MarkSold(MarkPetSold),
    /// Compensation of step 4.
    Restore(RestorePet),
}

impl InventoryCommand {
    /// Decodes a command envelope; a type this service does not handle is a codec error.
    pub fn from_envelope(message: &Envelope) -> Result<Self, BusError> {
        if message.is::<ReservePet>() {
            message.decode().map(Self::Reserve)
        } else if message.is::<ReleasePet>() {
            message.decode().map(Self::Release)
        } else if message.is::<MarkPetSold>() {
            message.decode().map(Self::MarkSold)
        } else if message.is::<RestorePet>() {
            message.decode().map(Self::Restore)
        } else {
            Err(BusError::Codec(format!("inventory does not handle {}", message.event_type)))
        }
    }

    /// The saga that sent the command.
    pub fn saga(&self) -> SagaRef {
        match self {
            Self::Reserve(c) => c.saga,
            Self::Release(c) => c.saga,
            Self::MarkSold(c) => c.saga,
            Self::Restore(c) => c.saga,
        }
    }

    /// The pet the command is about.
    pub fn pet_id(&self) -> &str {
        match self {
            Self::Reserve(c) => &c.pet_id,
            Self::Release(c) => &c.pet_id,
            Self::MarkSold(c) => &c.pet_id,
            Self::Restore(c) => &c.pet_id,
        }
    }
}

type Decision = persistence::Decision<Pet>;

/// What the decisions of one moment need to know: the time, and how long a new reservation
/// holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// The time the decision is made at.
    pub(crate) now: DateTime<Utc>,
    /// How long a reservation made now holds.
    pub(crate) reservation_ttl: TimeDelta,
}

/// Why `saga` cannot take the pet: it does not exist, its own reservation ran out, or another
/// saga (or a sale) holds it.
fn refusal(existing: Option<&Pet>, saga_id: Uuid, now: DateTime<Utc>, pet_id: &str) -> String {
    match existing.map(|p| p.status) {
        None => format!("no pet {pet_id}"),
        Some(Availability::Reserved) if existing.is_some_and(|p| p.held_by(saga_id) && p.reservation_expired(now)) => {
            format!("the reservation of pet {pet_id} expired")
        }
        Some(Availability::Available) => format!("pet {pet_id} is not reserved"),
        Some(Availability::Reserved) => format!("pet {pet_id} is already reserved"),
        Some(Availability::Sold) => format!("pet {pet_id} is sold"),
    }
}

/// Decides what `cmd` does to the pet as it is at `clock.now` (`None`: no such pet) and what
/// to reply. A reservation past its time no longer counts as the saga's: the saga can neither
/// confirm it (`ReservePet` again) nor buy the pet; releasing it is still a release.
pub(crate) fn decide(
    existing: Option<Pet>,
    cmd: &InventoryCommand,
    clock: Clock,
    source: &str,
    ctx: &MessageContext,
) -> Result<Decision, BusError> {
    use Availability::{Available, Reserved, Sold};
    let saga = cmd.saga();
    let pet_id = cmd.pet_id().to_owned();
    let is = |status: Availability| existing.as_ref().is_some_and(|p| p.status == status);
    let held = |status: Availability| existing.as_ref().is_some_and(|p| p.status == status && p.held_by(saga.saga_id));
    let reserved_in_time = existing.as_ref().is_some_and(|p| p.reserved_in_time_for(saga.saga_id, clock.now));
    let reserved = Some((Reserved, Some(saga), Some(clock.now + clock.reservation_ttl)));
    // The state to move to (if any), and whether the command succeeds.
    let (next, succeeds) = match cmd {
        InventoryCommand::Reserve(_) if is(Available) => (reserved, true),
        InventoryCommand::Reserve(_) => (None, reserved_in_time),
        InventoryCommand::Release(_) => (held(Reserved).then_some((Available, None, None)), true),
        InventoryCommand::MarkSold(_) if reserved_in_time => (Some((Sold, Some(saga), None)), true),
        InventoryCommand::MarkSold(_) => (None, held(Sold)),
        InventoryCommand::Restore(_) => (held(Sold).then_some((Available, None, None)), true),
    };
    let reason = || refusal(existing.as_ref(), saga.saga_id, clock.now, &pet_id);
    let reply = match (cmd, succeeds) {
        (InventoryCommand::Reserve(_), true) => Outgoing::message(source, &PetReserved { saga, pet_id }, ctx),
        (InventoryCommand::Reserve(_), false) => {
            Outgoing::message(source, &PetReservationFailed { saga, reason: reason(), pet_id }, ctx)
        }
        (InventoryCommand::Release(_), _) => Outgoing::message(source, &PetReleased { saga, pet_id }, ctx),
        (InventoryCommand::MarkSold(_), true) => Outgoing::message(source, &PetSold { saga, pet_id }, ctx),
        (InventoryCommand::MarkSold(_), false) => {
            Outgoing::message(source, &PetSaleFailed { saga, reason: reason(), pet_id }, ctx)
        }
        (InventoryCommand::Restore(_), _) => Outgoing::message(source, &PetRestored { saga, pet_id }, ctx),
    }?;
    let saved = next.and_then(|(status, holder, until)| existing.map(|p| p.moved(status, holder, clock.now, until)));
    Ok((saved, reply))
}

/// What the inventory remembers of one saga's reservation. Commands can arrive late — a
/// re-sent `ReservePet` processed after the saga was already answered, or a `ReservePet`
/// overtaken by the saga's `ReleasePet` — and the pet's own state cannot tell: the pet may be
/// available again by then. The mark makes a saga's reservation decided once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaMark {
    /// Its `ReservePet` succeeded (the pet may have been released or expired since).
    Reserved,
    /// Its `ReservePet` was refused, for this reason.
    Refused(String),
    /// It released the pet, possibly before any reservation arrived.
    Released,
}

impl SagaMark {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Refused(_) => "refused",
            Self::Released => "released",
        }
    }

    /// Reads the stored name and reason.
    pub fn parse(mark: &str, reason: Option<String>) -> Option<Self> {
        match (mark, reason) {
            ("reserved", None) => Some(Self::Reserved),
            ("refused", Some(reason)) => Some(Self::Refused(reason)),
            ("released", None) => Some(Self::Released),
            _ => None,
        }
    }
}

/// A pet as one saga's command sees it: the pet, the saga, and the saga's mark.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeldFor {
    /// The pet.
    pub(crate) pet: Pet,
    /// The saga of the command.
    pub(crate) saga_id: Uuid,
    /// What that saga's earlier commands decided.
    pub(crate) mark: Option<SagaMark>,
    /// Whether the pet changed (what caches must forget), as opposed to the mark alone.
    pub(crate) pet_changed: bool,
}

/// [`decide`] for a saga that may have been answered before. A `ReservePet` from a saga
/// whose reservation was already decided repeats that decision — refused stays refused, and
/// a reservation released, expired or never made is not made now — so a late copy cannot
/// reserve a pet for a saga that has moved on. A `ReleasePet` or `RestorePet` (both sent
/// only by a compensating saga) marks the saga released even when there was nothing to undo
/// yet, so the `ReservePet` or `MarkPetSold` it overtook is refused when it comes.
pub(crate) fn decide_for_saga(
    existing: Option<HeldFor>,
    cmd: &InventoryCommand,
    clock: Clock,
    source: &str,
    ctx: &MessageContext,
) -> Result<persistence::Decision<HeldFor>, BusError> {
    let Some(HeldFor { pet, saga_id, mark, .. }) = existing else {
        let (_, reply) = decide(None, cmd, clock, source, ctx)?;
        return Ok((None, reply));
    };
    let saga = cmd.saga();
    let pet_id = pet.pet_id.clone();
    let refuse =
        |reason: String| Outgoing::message(source, &PetReservationFailed { saga, reason, pet_id: pet_id.clone() }, ctx);
    match (cmd, &mark) {
        (InventoryCommand::Reserve(_), Some(SagaMark::Refused(reason))) => return Ok((None, refuse(reason.clone())?)),
        (InventoryCommand::Reserve(_), Some(SagaMark::Released)) => {
            return Ok((None, refuse(format!("the reservation of pet {pet_id} was cancelled"))?));
        }
        (InventoryCommand::Reserve(_), Some(SagaMark::Reserved)) if !pet.reserved_in_time_for(saga_id, clock.now) => {
            return Ok((None, refuse(refusal(Some(&pet), saga_id, clock.now, &pet_id))?));
        }
        (InventoryCommand::MarkSold(_), Some(SagaMark::Released)) => {
            let reason = format!("the reservation of pet {pet_id} was cancelled");
            return Ok((
                None,
                Outgoing::message(source, &PetSaleFailed { saga, reason, pet_id: pet_id.clone() }, ctx)?,
            ));
        }
        _ => {}
    }
    let reason = refusal(Some(&pet), saga_id, clock.now, &pet_id);
    let (saved, reply) = decide(Some(pet.clone()), cmd, clock, source, ctx)?;
    let new_mark = match cmd {
        InventoryCommand::Reserve(_) if mark.is_none() => {
            Some(if reply.envelope.is::<PetReserved>() { SagaMark::Reserved } else { SagaMark::Refused(reason) })
        }
        InventoryCommand::Release(_) | InventoryCommand::Restore(_) if mark != Some(SagaMark::Released) => {
            Some(SagaMark::Released)
        }
        _ => None,
    };
    let pet_changed = saved.is_some();
    if !pet_changed && new_mark.is_none() {
        return Ok((None, reply));
    }
    let held = HeldFor { pet: saved.unwrap_or(pet), saga_id, mark: new_mark.or(mark), pet_changed };
    Ok((Some(held), reply))
}

/// A reservation the sweeper releases.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expiry {
    /// The pet, available again.
    pub(crate) pet: Pet,
    /// The saga that lost it.
    pub(crate) saga: SagaRef,
    /// The `PetReleased` that tells the saga (and every catalog cache).
    pub(crate) released: Outgoing,
}

/// The sweeper's decision about a pet: its release if its reservation ran out by `now`,
/// otherwise nothing. A sold or available pet is never touched.
pub(crate) fn expire(
    pet: Pet,
    now: DateTime<Utc>,
    source: &str,
    ctx: &MessageContext,
) -> Result<Option<Expiry>, BusError> {
    let Some(saga) = pet.holder().filter(|_| pet.reservation_expired(now)) else { return Ok(None) };
    let released = Outgoing::message(source, &PetReleased { saga, pet_id: pet.pet_id.clone() }, ctx)?;
    Ok(Some(Expiry { pet: pet.moved(Availability::Available, None, now, None), saga, released }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::Message;

    const PET: &str = "goldfish-004";

    #[derive(Debug, Clone, Copy)]
    enum Given {
        Unknown,
        Available,
        ReservedByUs,
        /// Reserved by us, past its time, not swept yet.
        ReservedByUsExpired,
        /// Reserved by us, past its time, and released by the sweeper.
        ReleasedOnExpiry,
        ReservedByOther,
        SoldToUs,
        SoldToOther,
    }

    #[derive(Debug, Clone, Copy)]
    enum Cmd {
        Reserve,
        Release,
        MarkSold,
        Restore,
    }

    /// What the pet must become: `None` for "not written".
    type Written = Option<(Availability, bool)>;

    /// The moment every decision of these tests is made at.
    fn clock() -> Clock {
        Clock { now: DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(1), reservation_ttl: TimeDelta::minutes(15) }
    }

    fn pet(given: Given, us: SagaRef) -> Option<Pet> {
        let other = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
        let (in_time, past) = (Some(clock().now + TimeDelta::seconds(1)), Some(clock().now));
        let (status, holder, reserved_until) = match given {
            Given::Unknown => return None,
            Given::Available => (Availability::Available, None, None),
            Given::ReservedByUs => (Availability::Reserved, Some(us), in_time),
            Given::ReservedByUsExpired => (Availability::Reserved, Some(us), past),
            Given::ReleasedOnExpiry => {
                let expired = pet(Given::ReservedByUsExpired, us)?;
                let expiry = expire(expired, clock().now, "/petstore/inventory", &MessageContext::default())
                    .expect("encode")
                    .expect("an expired reservation is released");
                return Some(expiry.pet);
            }
            Given::ReservedByOther => (Availability::Reserved, Some(other), in_time),
            Given::SoldToUs => (Availability::Sold, Some(us), None),
            Given::SoldToOther => (Availability::Sold, Some(other), None),
        };
        let at = DateTime::<Utc>::UNIX_EPOCH;
        Some(Pet {
            pet_id: PET.into(),
            name: "Bubbles".into(),
            category: "fish".into(),
            breed: "Goldfish".into(),
            age_months: 6,
            price: Decimal::new(2500, 2),
            currency: "USD".into(),
            description: String::new(),
            status,
            held_by_saga: holder.map(|h| h.saga_id),
            held_for_order: holder.map(|h| h.order_id),
            reserved_until,
            status_changed_at: at,
            created_at: at,
        })
    }

    fn command(cmd: Cmd, saga: SagaRef) -> InventoryCommand {
        let pet_id = PET.to_owned();
        match cmd {
            Cmd::Reserve => InventoryCommand::Reserve(ReservePet { saga, pet_id }),
            Cmd::Release => InventoryCommand::Release(ReleasePet { saga, pet_id }),
            Cmd::MarkSold => InventoryCommand::MarkSold(MarkPetSold { saga, pet_id }),
            Cmd::Restore => InventoryCommand::Restore(RestorePet { saga, pet_id }),
        }
    }

    #[test]
    fn every_command_in_every_state_writes_and_replies_as_specified() {
        use Availability::{Available as A, Reserved as R, Sold as S};
        use Cmd::*;
        use Given::*;
        let failed = PetReservationFailed::TYPE;
        let sale_failed = PetSaleFailed::TYPE;
        let expired = Some("the reservation of pet goldfish-004 expired");
        #[rustfmt::skip]
        let cases: [(Cmd, Given, Written, &str, Option<&str>); 32] = [
            (Reserve, Unknown,         None,             failed,            Some("no pet goldfish-004")),
            (Reserve, Available,       Some((R, true)),  PetReserved::TYPE, None),
            (Reserve, ReservedByUs,    None,             PetReserved::TYPE, None),
            (Reserve, ReservedByOther, None,             failed,            Some("pet goldfish-004 is already reserved")),
            (Reserve, ReservedByUsExpired, None,         failed,            expired),
            (Reserve, ReleasedOnExpiry, Some((R, true)), PetReserved::TYPE, None),
            (Reserve, SoldToUs,        None,             failed,            Some("pet goldfish-004 is sold")),
            (Reserve, SoldToOther,     None,             failed,            Some("pet goldfish-004 is sold")),
            (Release, Unknown,         None,             PetReleased::TYPE, None),
            (Release, Available,       None,             PetReleased::TYPE, None),
            (Release, ReservedByUs,    Some((A, false)), PetReleased::TYPE, None),
            (Release, ReservedByUsExpired, Some((A, false)), PetReleased::TYPE, None),
            (Release, ReleasedOnExpiry, None,            PetReleased::TYPE, None),
            (Release, ReservedByOther, None,             PetReleased::TYPE, None),
            (Release, SoldToUs,        None,             PetReleased::TYPE, None),
            (Release, SoldToOther,     None,             PetReleased::TYPE, None),
            (MarkSold, Unknown,         None,            sale_failed,       Some("no pet goldfish-004")),
            (MarkSold, Available,       None,            sale_failed,       Some("pet goldfish-004 is not reserved")),
            (MarkSold, ReservedByUs,    Some((S, true)), PetSold::TYPE,     None),
            (MarkSold, ReservedByUsExpired, None,        sale_failed,       expired),
            (MarkSold, ReleasedOnExpiry, None,           sale_failed,       Some("pet goldfish-004 is not reserved")),
            (MarkSold, ReservedByOther, None,            sale_failed,       Some("pet goldfish-004 is already reserved")),
            (MarkSold, SoldToUs,        None,            PetSold::TYPE,     None),
            (MarkSold, SoldToOther,     None,            sale_failed,       Some("pet goldfish-004 is sold")),
            (Restore, Unknown,         None,             PetRestored::TYPE, None),
            (Restore, Available,       None,             PetRestored::TYPE, None),
            (Restore, ReservedByUs,    None,             PetRestored::TYPE, None),
            (Restore, ReservedByUsExpired, None,         PetRestored::TYPE, None),
            (Restore, ReleasedOnExpiry, None,            PetRestored::TYPE, None),
            (Restore, ReservedByOther, None,             PetRestored::TYPE, None),
            (Restore, SoldToUs,        Some((A, false)), PetRestored::TYPE, None),
            (Restore, SoldToOther,     None,             PetRestored::TYPE, None),
        ];
        for (cmd, given, written, reply_type, reason) in cases {
            let case = format!("{cmd:?} when {given:?}");
            let saga = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
            let cause = MessageContext { causation_id: Some("cause".into()), ..MessageContext::correlated("corr") };
            let (saved, reply) = decide(pet(given, saga), &command(cmd, saga), clock(), "/petstore/inventory", &cause)
                .unwrap_or_else(|e| panic!("{case}: {e}"));

            let got = saved.as_ref().map(|p| (p.status, p.held_by(saga.saga_id)));
            assert_eq!(got, written, "{case}: written state");
            if let Some(p) = &saved {
                assert_eq!(
                    p.held_by_saga.is_some(),
                    p.status != Availability::Available,
                    "{case}: held iff not available"
                );
                assert_eq!(p.status_changed_at, clock().now, "{case}: status_changed_at");
                let until = (p.status == Availability::Reserved).then(|| clock().now + clock().reservation_ttl);
                assert_eq!(p.reserved_until, until, "{case}: reserved until");
                let order = p.held_by_saga.map(|_| saga.order_id);
                assert_eq!(p.held_for_order, order, "{case}: held for order");
            }
            assert_eq!(reply.channel, contracts::channels::INVENTORY_EVENTS, "{case}: channel");
            assert_eq!(reply.envelope.event_type, reply_type, "{case}: reply type");
            assert_eq!(reply.envelope.correlation_id.as_deref(), Some("corr"), "{case}: correlation");
            assert_eq!(reply.envelope.causation_id.as_deref(), Some("cause"), "{case}: causation");
            let data: serde_json::Value =
                serde_json::from_slice(&reply.envelope.data).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(data["pet_id"], PET, "{case}: pet id");
            assert_eq!(data["saga_id"], saga.saga_id.to_string(), "{case}: saga id");
            assert_eq!(data["reason"].as_str(), reason, "{case}: reason");
        }
    }

    #[test]
    fn the_sweeper_releases_only_reservations_past_their_time() {
        use Given::*;
        let cases = [
            (Available, false),
            (ReservedByUs, false),
            (ReservedByUsExpired, true),
            (ReservedByOther, false),
            (SoldToUs, false),
            (SoldToOther, false),
        ];
        for (given, released) in cases {
            let saga = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
            let before = pet(given, saga).expect("a pet");
            let swept =
                expire(before.clone(), clock().now, "/petstore/inventory", &MessageContext::correlated("sweep"))
                    .unwrap_or_else(|e| panic!("{given:?}: {e}"));
            assert_eq!(swept.is_some(), released, "{given:?}: released");
            let Some(Expiry { pet: after, saga: lost_by, released: event }) = swept else { continue };
            assert_eq!(lost_by, saga, "{given:?}: the saga that lost the pet");
            assert_eq!((after.status, after.held_by_saga, after.held_for_order), (Availability::Available, None, None));
            assert_eq!((after.reserved_until, after.status_changed_at), (None, clock().now), "{given:?}");
            assert_eq!(event.channel, contracts::channels::INVENTORY_EVENTS, "{given:?}");
            let sent: PetReleased = event.envelope.decode().unwrap_or_else(|e| panic!("{given:?}: {e}"));
            assert_eq!(sent, PetReleased { saga, pet_id: PET.into() }, "{given:?}: the saga and its order");
        }
    }

    #[test]
    fn filters_combine_and_absent_filters_match_everything() {
        let nobody = SagaRef { saga_id: Uuid::nil(), order_id: Uuid::nil() };
        let fish = pet(Given::Available, nobody).expect("pet");
        let sold = pet(Given::SoldToOther, nobody).expect("pet");
        let f = |category: Option<&str>, max_price: Option<i64>, available: Option<bool>| PetFilter {
            category: category.map(str::to_owned),
            max_price: max_price.map(|p| Decimal::new(p, 0)),
            available,
            ..PetFilter::default()
        };
        let cases = [
            (f(None, None, None), &fish, true),
            (f(Some("fish"), None, None), &fish, true),
            (f(Some("Fish"), None, None), &fish, false),
            (f(None, Some(25), None), &fish, true),
            (f(None, Some(24), None), &fish, false),
            (f(None, None, Some(true)), &fish, true),
            (f(None, None, Some(false)), &fish, false),
            (f(None, None, Some(false)), &sold, true),
            (f(Some("fish"), Some(100), Some(true)), &sold, false),
        ];
        for (filter, pet, expected) in cases {
            assert_eq!(filter.matches(pet), expected, "{filter:?} on a {:?} pet", pet.status);
        }
    }

    #[test]
    fn breed_and_age_filters_are_exact_and_inclusive() {
        let nobody = SagaRef { saga_id: Uuid::nil(), order_id: Uuid::nil() };
        let fish = pet(Given::Available, nobody).expect("pet"); // a Goldfish, 6 months old
        let f = |breed: Option<&str>, min: Option<i32>, max: Option<i32>| PetFilter {
            breed: breed.map(str::to_owned),
            min_age_months: min,
            max_age_months: max,
            ..PetFilter::default()
        };
        let cases = [
            (f(Some("Goldfish"), None, None), true),
            (f(Some("goldfish"), None, None), false),
            (f(Some("Gold"), None, None), false),
            (f(None, Some(6), Some(6)), true),
            (f(None, Some(7), None), false),
            (f(None, None, Some(5)), false),
            (f(Some("Goldfish"), Some(0), Some(12)), true),
        ];
        for (filter, expected) in cases {
            assert_eq!(filter.matches(&fish), expected, "{filter:?}");
        }
    }

    #[test]
    fn cursors_know_their_sort_and_where_the_next_page_starts() {
        let nobody = SagaRef { saga_id: Uuid::nil(), order_id: Uuid::nil() };
        let fish = pet(Given::Available, nobody).expect("pet"); // 25.00, 6 months
        let other = |pet_id: &str, price: i64, age_months: i32| Pet {
            pet_id: pet_id.into(),
            price: Decimal::new(price, 2),
            age_months,
            ..fish.clone()
        };
        let (a, z) = ("a-pet", "z-pet");
        let cases = [
            (PetSort::Id, other(z, 100, 1), true),
            (PetSort::Id, other(a, 100, 1), false),
            (PetSort::Price, other(a, 2501, 6), true),
            (PetSort::Price, other(z, 2500, 6), true),
            (PetSort::Price, other(a, 2500, 6), false),
            (PetSort::PriceDesc, other(a, 2499, 6), true),
            (PetSort::PriceDesc, other(a, 2501, 6), false),
            (PetSort::Age, other(a, 2500, 7), true),
            (PetSort::Age, other(z, 2500, 6), true),
            (PetSort::Age, other(a, 2500, 5), false),
            (PetSort::AgeDesc, other(a, 2500, 5), true),
            (PetSort::AgeDesc, other(z, 2500, 7), false),
        ];
        for (sort, next, expected) in cases {
            let cursor = Cursor::after(sort, &fish);
            assert_eq!(
                cursor.precedes(&next),
                expected,
                "{sort:?}: {} {} {}",
                next.pet_id,
                next.price,
                next.age_months
            );
            assert_eq!(sort.compare(&fish, &next).is_lt(), expected, "{sort:?}: the sort agrees");
            assert_eq!(Cursor::parse(&cursor.to_text()), Some(cursor.clone()), "{sort:?}: round trip");
            assert_eq!(cursor.sort(), sort);
        }
        assert!(!Cursor::after(PetSort::Price, &fish).precedes(&fish), "not the last pet itself");
        assert_eq!(Cursor::after(PetSort::Price, &fish).to_text(), format!("price:25:{PET}"));
        assert_eq!(Cursor::after(PetSort::AgeDesc, &fish).to_text(), format!("-age:6:{PET}"));
        assert_eq!(Cursor::after(PetSort::Id, &fish).to_text(), PET, "an id cursor is the id, as it always was");
        for bad in ["", "price::x", "price:1:", "id:1:x", "name:1:x", "-price:-5:x", "age:x:y"] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unknown_command_types_are_refused_by_name() {
        let env = Envelope::from_message(
            "/t",
            &contracts::inventory::GetPetStatus { pet_id: PET.into() },
            &MessageContext::default(),
        )
        .expect("encode");
        let err = InventoryCommand::from_envelope(&env).expect_err("not a command");
        assert!(err.to_string().contains("get-pet-status"), "{err}");
    }

    /// Runs `cmd` of `saga` through [`decide_for_saga`] against `held`, returning what is
    /// held afterwards (the input when nothing was written) and the reply's type and reason.
    fn for_saga(held: HeldFor, cmd: Cmd, saga: SagaRef) -> (HeldFor, bool, &'static str, Option<String>) {
        let (saved, reply) =
            decide_for_saga(Some(held.clone()), &command(cmd, saga), clock(), "/t", &MessageContext::default())
                .expect("decide");
        let reason = reply.envelope.decode::<PetReservationFailed>().ok().map(|f| f.reason);
        let kind =
            [PetReserved::TYPE, PetReservationFailed::TYPE, PetReleased::TYPE, PetRestored::TYPE, PetSaleFailed::TYPE]
                .into_iter()
                .find(|t| reply.envelope.event_type == *t)
                .unwrap_or("other");
        let written = saved.is_some();
        (saved.map(|s| HeldFor { pet_changed: false, ..s }).unwrap_or(held), written, kind, reason)
    }

    fn held(given: Given, saga: SagaRef, mark: Option<SagaMark>) -> HeldFor {
        HeldFor { pet: pet(given, saga).expect("a pet"), saga_id: saga.saga_id, mark, pet_changed: false }
    }

    #[test]
    fn a_late_copy_of_a_refused_reservation_is_refused_again_though_the_pet_is_free_now() {
        let saga = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
        let (after, written, kind, reason) = for_saga(held(Given::ReservedByOther, saga, None), Cmd::Reserve, saga);
        assert_eq!((written, kind), (true, PetReservationFailed::TYPE), "the refusal is remembered");
        let refused = Some("pet goldfish-004 is already reserved".to_owned());
        assert_eq!(
            (after.mark.clone(), reason.clone()),
            (Some(SagaMark::Refused(refused.clone().unwrap_or_default())), refused.clone())
        );

        // The other saga let the pet go; the re-sent copy arrives now.
        let freed = HeldFor { pet: pet(Given::Available, saga).expect("pet"), ..after };
        let (after, written, kind, again) = for_saga(freed, Cmd::Reserve, saga);
        assert_eq!((written, kind, again), (false, PetReservationFailed::TYPE, refused));
        assert_eq!(after.pet.status, Availability::Available, "not reserved for a saga that has moved on");
    }

    #[test]
    fn a_release_that_overtakes_its_reservation_makes_the_reservation_fail() {
        let saga = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
        let (after, written, kind, _) = for_saga(held(Given::Available, saga, None), Cmd::Release, saga);
        assert_eq!((written, kind, after.mark.clone()), (true, PetReleased::TYPE, Some(SagaMark::Released)));
        let (after, written, kind, reason) = for_saga(after, Cmd::Reserve, saga);
        assert_eq!((written, kind), (false, PetReservationFailed::TYPE));
        assert_eq!(reason.as_deref(), Some("the reservation of pet goldfish-004 was cancelled"));
        assert_eq!(after.pet.status, Availability::Available);
    }

    #[test]
    fn a_reservation_is_confirmed_while_it_holds_and_never_made_again() {
        let saga = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
        let (reserved, written, kind, _) = for_saga(held(Given::Available, saga, None), Cmd::Reserve, saga);
        assert_eq!((written, kind, reserved.mark.clone()), (true, PetReserved::TYPE, Some(SagaMark::Reserved)));
        assert_eq!(reserved.pet.status, Availability::Reserved);
        let (_, written, kind, _) = for_saga(reserved.clone(), Cmd::Reserve, saga);
        assert_eq!((written, kind), (false, PetReserved::TYPE), "a copy while it holds confirms it");

        // Expired and swept: the pet is free again, but not for this saga.
        let swept = held(Given::ReleasedOnExpiry, saga, Some(SagaMark::Reserved));
        let (after, written, kind, _) = for_saga(swept, Cmd::Reserve, saga);
        assert_eq!((written, kind, after.pet.status), (false, PetReservationFailed::TYPE, Availability::Available));

        // Released by its compensation: the same.
        let (released, _, kind, _) = for_saga(reserved, Cmd::Release, saga);
        assert_eq!(
            (kind, released.mark.clone(), released.pet.status),
            (PetReleased::TYPE, Some(SagaMark::Released), Availability::Available)
        );
        let (after, written, kind, _) = for_saga(released, Cmd::Reserve, saga);
        assert_eq!((written, kind, after.pet.status), (false, PetReservationFailed::TYPE, Availability::Available));
    }

    #[test]
    fn a_sale_overtaken_by_its_restore_is_refused() {
        let saga = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
        let reserved = held(Given::ReservedByUs, saga, Some(SagaMark::Reserved));
        let (after, written, kind, _) = for_saga(reserved, Cmd::Restore, saga);
        assert_eq!((written, kind, after.mark.clone()), (true, PetRestored::TYPE, Some(SagaMark::Released)));
        let (after, written, kind, _) = for_saga(after, Cmd::MarkSold, saga);
        assert_eq!((written, kind), (false, PetSaleFailed::TYPE), "not sold to a saga that is compensating");
        assert_eq!(after.pet.status, Availability::Reserved, "its ReleasePet is still to come");
    }
}
