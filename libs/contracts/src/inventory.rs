//! Inventory: commands that move a pet between available, reserved and sold; their replies
//! (which double as availability events); and the pet-status query.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

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

/// Query: what is this pet, what does it cost and can it be bought now?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetPetStatus {
    /// The pet asked about.
    pub pet_id: String,
}
message!(GetPetStatus, "petstore.inventory.get-pet-status.v1", channels::INVENTORY_QUERIES, |m| m.pet_id.clone());

/// Availability of a pet in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
