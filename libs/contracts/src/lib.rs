//! Message contracts of the petstore: every command, reply, event and query that crosses the
//! bus, with its CloudEvents type name (which carries the schema version) and its channel.
//!
//! Contracts live apart from the services that send them so that a producer and a consumer
//! agree on one definition. Changing a payload incompatibly means a new version suffix.

use serde::{Serialize, de::DeserializeOwned};

pub mod channels;
pub mod delivery;
pub mod flags;
pub mod inventory;
pub mod notification;
pub mod order;
pub mod payment;
pub mod pricing;

mod common;
pub use common::{Address, PaymentMethod, SagaRef};

/// A typed message: its payload shape plus the metadata the bus needs to route it.
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// CloudEvents `type`, ending in the schema version, e.g. `petstore.inventory.reserve-pet.v1`.
    const TYPE: &'static str;
    /// The channel this message travels on by default.
    const CHANNEL: &'static str;
    /// Partition key: messages with the same key are delivered in order (the order id for
    /// everything that belongs to a saga).
    fn key(&self) -> String;
}

/// Implements [`Message`] for a payload type.
macro_rules! message {
    ($ty:ty, $type_name:literal, $channel:expr, |$s:ident| $key:expr) => {
        impl $crate::Message for $ty {
            const TYPE: &'static str = $type_name;
            const CHANNEL: &'static str = $channel;
            fn key(&self) -> String {
                let $s = self;
                $key
            }
        }
    };
}
pub(crate) use message;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_versioned_and_unique() {
        let names = [
            inventory::ReservePet::TYPE,
            inventory::ReleasePet::TYPE,
            inventory::MarkPetSold::TYPE,
            inventory::RestorePet::TYPE,
            inventory::PetReserved::TYPE,
            inventory::PetReservationFailed::TYPE,
            inventory::PetReleased::TYPE,
            inventory::PetSold::TYPE,
            inventory::PetSaleFailed::TYPE,
            inventory::PetRestored::TYPE,
            inventory::PetListed::TYPE,
            inventory::PetUpdated::TYPE,
            inventory::GetPetStatus::TYPE,
            inventory::PetStatus::TYPE,
            payment::ProcessPayment::TYPE,
            payment::RefundPayment::TYPE,
            payment::PaymentProcessed::TYPE,
            payment::PaymentFailed::TYPE,
            payment::PaymentRefunded::TYPE,
            delivery::ScheduleDelivery::TYPE,
            delivery::CancelDelivery::TYPE,
            delivery::DeliveryScheduled::TYPE,
            delivery::DeliveryFailed::TYPE,
            delivery::DeliveryCancelled::TYPE,
            notification::SendConfirmation::TYPE,
            notification::SendCancellationNotice::TYPE,
            notification::NotificationSent::TYPE,
            notification::NotificationFailed::TYPE,
            order::OrderCreated::TYPE,
            order::OrderConfirmed::TYPE,
            order::OrderCancelled::TYPE,
            order::ApproveOrder::TYPE,
            order::RejectOrder::TYPE,
        ];
        let mut seen = std::collections::HashSet::new();
        for name in names {
            assert!(name.starts_with("petstore."), "{name}");
            assert!(name.rsplit('.').next().is_some_and(|v| v.starts_with('v')), "{name} has no version");
            assert!(seen.insert(name), "{name} is used twice");
        }
    }
}
