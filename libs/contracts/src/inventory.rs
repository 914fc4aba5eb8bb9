//! Inventory: commands that move a pet between available, reserved and sold; their replies
//! (which double as availability events); the catalog events an administrator's changes
//! publish; and the pet-status query.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{SagaRef, channels, message};

/// Reserve a pet for a saga (step 1). The reservation is a semantic lock on the pet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReservePet {
    /// The saga asking.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The pet.
    pub pet_id: String,
}
message!(ReservePet, "petstore.inventory.reserve-pet.v1", channels::INVENTORY_COMMANDS, |m| m
    .saga
    .order_id
    .to_string());

/// Release a reservation (compensation of step 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasePet {
    /// The saga that holds the reservation.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The pet.
    pub pet_id: String,
}
message!(ReleasePet, "petstore.inventory.release-pet.v1", channels::INVENTORY_COMMANDS, |m| m
    .saga
    .order_id
    .to_string());

/// Mark a reserved pet sold (step 4, the saga's pivot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkPetSold {
    /// The saga that holds the reservation.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The pet.
    pub pet_id: String,
}
message!(MarkPetSold, "petstore.inventory.mark-pet-sold.v1", channels::INVENTORY_COMMANDS, |m| m
    .saga
    .order_id
    .to_string());

/// Make a pet sold by this saga available again (compensation of step 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestorePet {
    /// The saga that sold the pet.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The pet.
    pub pet_id: String,
}
message!(RestorePet, "petstore.inventory.restore-pet.v1", channels::INVENTORY_COMMANDS, |m| m
    .saga
    .order_id
    .to_string());

/// The pet is reserved for the saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PetReserved {
    /// The saga the pet is reserved for.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The pet.
    pub pet_id: String,
}
message!(PetReserved, "petstore.inventory.pet-reserved.v1", channels::INVENTORY_EVENTS, |m| m
    .saga
    .order_id
    .to_string());

/// The pet could not be reserved (unknown, already reserved or sold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PetReservationFailed {
    /// The saga that asked.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The pet.
    pub pet_id: String,
    /// Why, for the saga's compensation reason.
    pub reason: String,
}
message!(PetReservationFailed, "petstore.inventory.pet-reservation-failed.v1", channels::INVENTORY_EVENTS, |m| m
    .saga
    .order_id
    .to_string());

/// The reservation is released; the pet is available again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PetReleased {
    /// The saga that held it.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The pet.
    pub pet_id: String,
}
message!(PetReleased, "petstore.inventory.pet-released.v1", channels::INVENTORY_EVENTS, |m| m
    .saga
    .order_id
    .to_string());

/// The pet is sold to the saga's customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PetSold {
    /// The saga that bought it.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The pet.
    pub pet_id: String,
}
message!(PetSold, "petstore.inventory.pet-sold.v1", channels::INVENTORY_EVENTS, |m| m.saga.order_id.to_string());

/// The pet could not be marked sold (the saga does not hold its reservation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PetSaleFailed {
    /// The saga that asked.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The pet.
    pub pet_id: String,
    /// Why.
    pub reason: String,
}
message!(PetSaleFailed, "petstore.inventory.pet-sale-failed.v1", channels::INVENTORY_EVENTS, |m| m
    .saga
    .order_id
    .to_string());

/// The sale is undone; the pet is available again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PetRestored {
    /// The saga whose sale is undone.
    #[serde(flatten)]
    pub saga: SagaRef,
    /// The pet.
    pub pet_id: String,
}
message!(PetRestored, "petstore.inventory.pet-restored.v1", channels::INVENTORY_EVENTS, |m| m
    .saga
    .order_id
    .to_string());

/// The fields of a catalog entry an administrator sets: everything but the pet's id and its
/// availability (which the sagas own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PetDetails {
    /// Display name.
    pub name: String,
    /// `dog`, `cat`, `bird`, … (lower case).
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
}

/// A new pet entered the catalog, available. Readers of the catalog (caches, search
/// indexes) learn of it from this event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PetListed {
    /// The new pet.
    pub pet_id: String,
    /// What the catalog shows of it.
    #[serde(flatten)]
    pub details: PetDetails,
    /// The administrator who listed it (the token's subject), for the audit trail.
    pub changed_by: String,
}
message!(PetListed, "petstore.inventory.pet-listed.v1", channels::INVENTORY_EVENTS, |m| m.pet_id.clone());

/// An administrator replaced a pet's catalog fields; its availability is unchanged. The
/// price of a reserved or sold pet never changes this way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PetUpdated {
    /// The pet.
    pub pet_id: String,
    /// Its catalog fields as they are now.
    #[serde(flatten)]
    pub details: PetDetails,
    /// The administrator who changed it (the token's subject), for the audit trail.
    pub changed_by: String,
}
message!(PetUpdated, "petstore.inventory.pet-updated.v1", channels::INVENTORY_EVENTS, |m| m.pet_id.clone());

/// Query: what is this pet, what does it cost and can it be bought now?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetPetStatus {
    /// The pet asked about.
    pub pet_id: String,
}
message!(GetPetStatus, "petstore.inventory.get-pet-status.v1", channels::INVENTORY_QUERIES, |m| m.pet_id.clone());

/// Availability of a pet in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// Can be ordered.
    Available,
    /// Held by a running saga.
    Reserved,
    /// Sold.
    Sold,
}

/// Reply to [`GetPetStatus`]; `pet` is `None` when no such pet exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PetStatus {
    /// The pet asked about.
    pub pet_id: String,
    /// What the catalog knows, if the pet exists.
    pub pet: Option<PetSummary>,
}
message!(PetStatus, "petstore.inventory.pet-status.v1", channels::INVENTORY_QUERIES, |m| m.pet_id.clone());

/// The part of a catalog entry an order needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PetSummary {
    /// Display name.
    pub name: String,
    /// Price, in `currency`.
    pub price: Decimal,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Current availability.
    pub availability: Availability,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_events_are_flat_and_keep_the_price_exact() {
        let details = PetDetails {
            name: "Rex".into(),
            category: "dog".into(),
            breed: "Beagle".into(),
            age_months: 7,
            price: Decimal::new(19999, 2),
            currency: "EUR".into(),
            description: String::new(),
        };
        let listed = PetListed { pet_id: "beagle-100".into(), details, changed_by: "ops".into() };
        let json = serde_json::to_value(&listed).expect("encode");
        assert_eq!(json["pet_id"], "beagle-100");
        assert_eq!(json["price"], "199.99", "money travels as a decimal string");
        assert_eq!(json["changed_by"], "ops");
        let back: PetListed = serde_json::from_value(json).expect("decode");
        assert_eq!(back, listed);
    }
}
