//! Catalog administration, free of I/O: what an administrator may put in the catalog (each
//! field parsed into a value that is valid by construction) and how listing a new pet or
//! revising one is decided on the pet as stored.
//!
//! An administrator sets a pet's catalog fields, never its availability: the sagas own that
//! (a reservation is a saga's semantic lock), so a new pet is always listed available and a
//! revision keeps the pet's availability and holder. The price of a reserved or sold pet is
//! frozen: the running saga's order was priced from it, and a sold pet's price is history.

use std::fmt;

use chrono::{DateTime, Utc};
use contracts::inventory::{Availability, PetDetails, PetListed, PetUpdated};
use messaging::{BusError, MessageContext};
use persistence::Outgoing;
use rust_decimal::Decimal;

use crate::domain::Pet;

/// Why a field of a request is refused: the field's name and the rule it breaks. Shown to
/// the client as `field: problem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as the request names it.
    pub field: &'static str,
    /// The rule it breaks.
    pub problem: String,
}

impl FieldError {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self { field, problem: problem.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for FieldError {}

/// `value` when it is `1..=max` characters of `[a-z0-9-]` (ids and categories: they appear in
/// URLs and filters, so they stay plain).
fn slug(field: &'static str, value: String, max: usize) -> Result<String, FieldError> {
    let plain = value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if value.is_empty() || value.len() > max || !plain {
        return Err(FieldError::new(field, format!("must be 1 to {max} characters of a-z, 0-9 and -")));
    }
    Ok(value)
}

/// `value` trimmed, when it has at most `max` characters and (if `required`) is not blank.
fn text(field: &'static str, value: &str, max: usize, required: bool) -> Result<String, FieldError> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(FieldError::new(field, "must not be blank"));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(field, format!("must be at most {max} characters")));
    }
    Ok(value.to_owned())
}

/// A pet's id as the catalog's contract has it: 1 to [`PetId::MAX_LEN`] characters of
/// `[a-z0-9-]`, e.g. `golden-retriever-001`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PetId(String);

impl PetId {
    /// The longest id.
    pub const MAX_LEN: usize = 128;

    /// Parses the `pet_id` field.
    pub fn parse(value: String) -> Result<Self, FieldError> {
        slug("pet_id", value, Self::MAX_LEN).map(Self)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A price the catalog accepts: more than 0, below [`Price::MAX`], with at most two decimal
/// places (kept with exactly two, as the catalog shows prices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price(Decimal);

impl Price {
    /// Prices must stay below this: a typo guard well inside the column's `NUMERIC(12, 2)`.
    pub const MAX: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

    /// Parses the `price` field, a decimal string such as `"19.99"` (money is never a float).
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let err = |problem: &str| FieldError::new("price", problem);
        let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
        let amount: Decimal = digits
            .then(|| value.parse().ok())
            .flatten()
            .ok_or_else(|| err("must be a decimal string such as \"19.99\""))?;
        if amount <= Decimal::ZERO {
            return Err(err("must be greater than 0"));
        }
        if amount.normalize().scale() > 2 {
            return Err(err("must have at most 2 decimal places"));
        }
        if amount >= Self::MAX {
            return Err(FieldError::new("price", format!("must be less than {}", Self::MAX)));
        }
        let mut amount = amount;
        amount.rescale(2);
        Ok(Self(amount))
    }

    /// The amount, with two decimal places.
    pub fn amount(self) -> Decimal {
        self.0
    }
}

/// An ISO 4217 currency code: three upper-case letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency(String);

impl Currency {
    /// Parses the `currency` field.
    pub fn parse(value: String) -> Result<Self, FieldError> {
        if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(FieldError::new("currency", "must be 3 upper-case letters (ISO 4217), e.g. \"USD\""));
        }
        Ok(Self(value))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The catalog fields of a pet an administrator sets, each valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Display name, trimmed, 1 to [`CatalogEntry::MAX_NAME`] characters.
    pub name: String,
    /// Lower-case slug, as `GET /pets?category=` filters it.
    pub category: String,
    /// Breed or species, trimmed, 1 to [`CatalogEntry::MAX_NAME`] characters.
    pub breed: String,
    /// `0..=`[`CatalogEntry::MAX_AGE_MONTHS`].
    pub age_months: i32,
    /// The price, in `currency`.
    pub price: Price,
    /// The price's currency.
    pub currency: Currency,
    /// Free text, trimmed, at most [`CatalogEntry::MAX_DESCRIPTION`] characters (may be empty).
    pub description: String,
}

impl CatalogEntry {
    /// The longest name or breed.
    pub const MAX_NAME: usize = 100;
    /// The longest category (the catalog filter's limit too).
    pub const MAX_CATEGORY: usize = 64;
    /// The longest description.
    pub const MAX_DESCRIPTION: usize = 2000;
    /// The oldest pet the catalog takes, in months (a century: tortoises live long).
    pub const MAX_AGE_MONTHS: i32 = 1200;

    /// Parses the `name` field.
    pub fn name(value: &str) -> Result<String, FieldError> {
        text("name", value, Self::MAX_NAME, true)
    }

    /// Parses the `category` field.
    pub fn category(value: String) -> Result<String, FieldError> {
        slug("category", value, Self::MAX_CATEGORY)
    }

    /// Parses the `breed` field.
    pub fn breed(value: &str) -> Result<String, FieldError> {
        text("breed", value, Self::MAX_NAME, true)
    }

    /// Parses the `age_months` field.
    pub fn age_months(value: i64) -> Result<i32, FieldError> {
        i32::try_from(value)
            .ok()
            .filter(|a| (0..=Self::MAX_AGE_MONTHS).contains(a))
            .ok_or_else(|| FieldError::new("age_months", format!("must be from 0 to {}", Self::MAX_AGE_MONTHS)))
    }

    /// Parses the `description` field.
    pub fn description(value: &str) -> Result<String, FieldError> {
        text("description", value, Self::MAX_DESCRIPTION, false)
    }

    /// The entry as the catalog's events carry it.
    fn details(&self) -> PetDetails {
        PetDetails {
            name: self.name.clone(),
            category: self.category.clone(),
            breed: self.breed.clone(),
            age_months: self.age_months,
            price: self.price.amount(),
            currency: self.currency.as_str().to_owned(),
            description: self.description.clone(),
        }
    }

    /// `pet` with these catalog fields; its availability and holder are kept.
    fn applied_to(&self, pet: Pet) -> Pet {
        let PetDetails { name, category, breed, age_months, price, currency, description } = self.details();
        Pet { name, category, breed, age_months, price, currency, description, ..pet }
    }
}

/// Why an administrator's change is refused; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `POST` of an id the catalog has.
    AlreadyListed(String),
    /// `PUT` of an id the catalog does not have.
    NoSuchPet(String),
    /// A new price (or currency) for a pet a saga holds: reserved (its order was priced
    /// already) or sold.
    PriceFrozen {
        /// The pet.
        pet_id: String,
        /// Reserved or sold.
        status: Availability,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyListed(id) => write!(f, "pet {id} already exists"),
            Self::NoSuchPet(id) => write!(f, "no pet {id}"),
            Self::PriceFrozen { pet_id, status: Availability::Sold } => {
                write!(f, "pet {pet_id} is sold; its price cannot change")
            }
            Self::PriceFrozen { pet_id, .. } => {
                write!(f, "pet {pet_id} is reserved by a running saga; its price cannot change until the saga ends")
            }
        }
    }
}

/// An administrator's change to the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogChange {
    /// `POST /pets`: a new pet, available.
    List(PetId, CatalogEntry),
    /// `PUT /pets/{pet_id}`: new catalog fields for a pet the catalog has.
    Revise(PetId, CatalogEntry),
}

impl CatalogChange {
    /// The pet changed.
    pub fn pet_id(&self) -> &str {
        match self {
            Self::List(id, _) | Self::Revise(id, _) => id.as_str(),
        }
    }

    /// Whether the change adds a pet (rather than changing one).
    pub fn is_new(&self) -> bool {
        matches!(self, Self::List(..))
    }

    /// Decides the change on the pet as stored at `now` (`None`: no such pet): the pet to
    /// store, or why not.
    pub(crate) fn decide(&self, existing: Option<Pet>, now: DateTime<Utc>) -> Result<Pet, Refusal> {
        match (self, existing) {
            (Self::List(id, _), Some(_)) => Err(Refusal::AlreadyListed(id.to_string())),
            (Self::List(id, entry), None) => Ok(Pet::listed(id.to_string(), entry.details(), now)),
            (Self::Revise(id, _), None) => Err(Refusal::NoSuchPet(id.to_string())),
            (Self::Revise(_, entry), Some(pet)) => {
                let repriced = pet.price != entry.price.amount() || pet.currency != entry.currency.as_str();
                if repriced && pet.status != Availability::Available {
                    return Err(Refusal::PriceFrozen { pet_id: pet.pet_id, status: pet.status });
                }
                Ok(entry.applied_to(pet))
            }
        }
    }

    /// The event that tells the catalog's readers about the change, made by `changed_by`.
    pub(crate) fn announcement(
        &self,
        changed_by: &str,
        source: &str,
        ctx: &MessageContext,
    ) -> Result<Outgoing, BusError> {
        let changed_by = changed_by.to_owned();
        match self {
            Self::List(id, entry) => {
                let listed = PetListed { pet_id: id.to_string(), details: entry.details(), changed_by };
                Outgoing::message(source, &listed, ctx)
            }
            Self::Revise(id, entry) => {
                let updated = PetUpdated { pet_id: id.to_string(), details: entry.details(), changed_by };
                Outgoing::message(source, &updated, ctx)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use contracts::{Message, SagaRef};
    use uuid::Uuid;

    use super::*;

    fn entry(price: &str) -> CatalogEntry {
        CatalogEntry {
            name: "Rex".into(),
            category: "dog".into(),
            breed: "Beagle".into(),
            age_months: 7,
            price: Price::parse(price).expect("a valid price"),
            currency: Currency::parse("USD".into()).expect("a valid currency"),
            description: "Friendly.".into(),
        }
    }

    fn stored(status: Availability) -> Pet {
        let id = PetId::parse("beagle-100".into()).expect("id");
        let pet = CatalogChange::List(id, entry("100")).decide(None, DateTime::<Utc>::UNIX_EPOCH).expect("listed");
        let saga =
            (status != Availability::Available).then(|| SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::nil() });
        let until = (status == Availability::Reserved).then_some(DateTime::<Utc>::MAX_UTC);
        Pet {
            status,
            held_by_saga: saga.map(|s| s.saga_id),
            held_for_order: saga.map(|s| s.order_id),
            reserved_until: until,
            ..pet
        }
    }

    #[test]
    fn prices_are_positive_bounded_and_exact_to_the_cent() {
        let cases = [
            ("19.99", Ok("19.99")),
            ("20", Ok("20.00")),
            ("0.01", Ok("0.01")),
            ("12.500", Ok("12.50")),
            ("999999.99", Ok("999999.99")),
            ("0", Err("must be greater than 0")),
            ("0.00", Err("must be greater than 0")),
            ("-5", Err("must be greater than 0")),
            ("1.999", Err("must have at most 2 decimal places")),
            ("1000000", Err("must be less than 1000000")),
            ("", Err("must be a decimal string")),
            ("abc", Err("must be a decimal string")),
            (" 5", Err("must be a decimal string")),
            ("1_000", Err("must be a decimal string")),
            ("1e3", Err("must be a decimal string")),
        ];
        for (input, expected) in cases {
            match (Price::parse(input), expected) {
                (Ok(price), Ok(shown)) => assert_eq!(price.amount().to_string(), shown, "{input:?}"),
                (Err(e), Err(problem)) => {
                    assert_eq!(e.field, "price", "{input:?}");
                    assert!(e.problem.starts_with(problem), "{input:?}: {e}");
                }
                (got, _) => panic!("{input:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn each_field_rule_names_its_field() {
        let long = "a".repeat(129);
        let refusals = [
            PetId::parse(String::new()).map(drop),
            PetId::parse("Golden-Retriever".into()).map(drop),
            PetId::parse("dog 1".into()).map(drop),
            PetId::parse(long).map(drop),
            CatalogEntry::category("Dogs".into()).map(drop),
            CatalogEntry::name("   ").map(drop),
            CatalogEntry::breed(&"b".repeat(101)).map(drop),
            CatalogEntry::age_months(-1).map(drop),
            CatalogEntry::age_months(i64::from(i32::MAX) + 1).map(drop),
            CatalogEntry::description(&"d".repeat(2001)).map(drop),
            Currency::parse("usd".into()).map(drop),
            Currency::parse("US".into()).map(drop),
        ];
        let fields = [
            "pet_id",
            "pet_id",
            "pet_id",
            "pet_id",
            "category",
            "name",
            "breed",
            "age_months",
            "age_months",
            "description",
            "currency",
            "currency",
        ];
        for (i, (refusal, field)) in refusals.into_iter().zip(fields).enumerate() {
            let e = refusal.expect_err(&format!("case {i} ({field}) must be refused"));
            assert_eq!(e.field, field, "case {i}: {e}");
        }
        assert_eq!(PetId::parse("a".repeat(128)).map(|id| id.as_str().len()), Ok(128));
        assert_eq!(CatalogEntry::name("  Rex  ").as_deref(), Ok("Rex"));
        assert_eq!(CatalogEntry::description("").as_deref(), Ok(""));
    }

    #[test]
    fn a_new_pet_is_listed_available_once() {
        let id = PetId::parse("beagle-100".into()).expect("id");
        let change = CatalogChange::List(id, entry("100"));
        let pet = change.decide(None, DateTime::<Utc>::UNIX_EPOCH).expect("listed");
        assert_eq!((pet.status, pet.held_by_saga, pet.reserved_until), (Availability::Available, None, None));
        assert_eq!((pet.name.as_str(), pet.price.to_string().as_str()), ("Rex", "100.00"));
        let again = change.decide(Some(pet), DateTime::<Utc>::UNIX_EPOCH);
        assert_eq!(again, Err(Refusal::AlreadyListed("beagle-100".into())));

        let event = change.announcement("ops", "/t", &MessageContext::default()).expect("encode");
        assert_eq!(event.channel, contracts::channels::INVENTORY_EVENTS);
        let listed: PetListed = event.envelope.decode().expect("a PetListed");
        assert_eq!((listed.pet_id.as_str(), listed.changed_by.as_str()), ("beagle-100", "ops"));
        assert_eq!(listed.details.price, Decimal::new(10000, 2));
    }

    #[test]
    fn a_held_pet_keeps_its_price_but_takes_other_changes() {
        use Availability::{Available, Reserved, Sold};
        let id = || PetId::parse("beagle-100".into()).expect("id");
        let frozen = |status| Err(Refusal::PriceFrozen { pet_id: "beagle-100".into(), status });
        let euro = CatalogEntry { currency: Currency::parse("EUR".into()).expect("EUR"), ..entry("100") };
        let renamed = CatalogEntry { name: "Max".into(), ..entry("100.00") };
        let cases = [
            (Available, entry("120"), Ok("120.00")),
            (Reserved, entry("120"), frozen(Reserved)),
            (Sold, entry("120"), frozen(Sold)),
            (Reserved, euro.clone(), frozen(Reserved)),
            (Available, euro, Ok("100.00")),
            (Reserved, renamed.clone(), Ok("100.00")),
            (Sold, renamed, Ok("100.00")),
        ];
        for (status, entry, expected) in cases {
            let before = stored(status);
            let name = entry.name.clone();
            let got = CatalogChange::Revise(id(), entry).decide(Some(before.clone()), DateTime::<Utc>::MAX_UTC);
            match (got, expected) {
                (Ok(after), Ok(price)) => {
                    assert_eq!((after.price.to_string().as_str(), after.name), (price, name), "{status:?}");
                    let kept = (after.status, after.held_by_saga, after.reserved_until, after.status_changed_at);
                    let was = (before.status, before.held_by_saga, before.reserved_until, before.status_changed_at);
                    assert_eq!(kept, was, "{status:?}: availability is the sagas' business");
                    assert_eq!(after.created_at, before.created_at, "{status:?}");
                }
                (got, expected) => assert_eq!(got.map(|p| p.price.to_string()), expected.map(str::to_owned)),
            }
        }
        let missing = CatalogChange::Revise(id(), entry("1")).decide(None, DateTime::<Utc>::UNIX_EPOCH);
        assert_eq!(missing, Err(Refusal::NoSuchPet("beagle-100".into())));
        let update = CatalogChange::Revise(id(), entry("1")).announcement("ops", "/t", &MessageContext::default());
        assert_eq!(update.expect("encode").envelope.event_type, PetUpdated::TYPE);
    }

    #[test]
    fn refusals_say_why_in_the_words_of_the_api() {
        let frozen = |status| Refusal::PriceFrozen { pet_id: "p-1".into(), status }.to_string();
        assert_eq!(
            frozen(Availability::Reserved),
            "pet p-1 is reserved by a running saga; its price cannot change until the saga ends"
        );
        assert_eq!(frozen(Availability::Sold), "pet p-1 is sold; its price cannot change");
        assert_eq!(Refusal::AlreadyListed("p-1".into()).to_string(), "pet p-1 already exists");
    }
}
