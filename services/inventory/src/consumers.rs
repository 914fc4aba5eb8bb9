//! What the inventory does with messages: saga commands, the pet-status query, and the
//! inventory events that invalidate the catalog cache.

use contracts::{
    Message, channels,
    inventory::{GetPetStatus, PetListed, PetReleased, PetReserved, PetRestored, PetSold, PetStatus, PetUpdated},
};
use kit::flags::{EvaluationContext, Flags};
use messaging::{Envelope, HandlerError, MessageContext};
use serde::Deserialize;

use crate::{cache::CatalogCache, domain::InventoryCommand, store::InventoryStore};

/// Handles `inventory-commands`: decides and stores in one transaction with the reply, then
/// invalidates the cached pet and listings at once if the pet changed (before the reply's
/// event comes back through the cache consumer).
pub(crate) struct Commands {
    pub(crate) store: InventoryStore,
    pub(crate) cache: CatalogCache,
    pub(crate) source: String,
}

#[async_trait::async_trait]
impl messaging::Handler for Commands {
    async fn handle(&self, message: Envelope) -> Result<(), HandlerError> {
        let ctx = MessageContext::caused_by(&message);
        let command = InventoryCommand::from_envelope(&message)?;
        let changed =
            self.store.handle(&message, &command, &self.source, &ctx).await.map_err(HandlerError::retriable)?;
        if let Some(pet_id) = changed {
            self.cache.invalidate(&pet_id).await;
        }
        Ok(())
    }
}

/// Answers `GetPetStatus` from storage (never from the cache: an order must see the
/// current price and availability). The fault flag `fault_inventory_latency_ms` delays the
/// answer here, so the order service's timeout and `inventory_queries` breaker meet it as
/// they would a slow inventory.
pub(crate) async fn pet_status(
    store: &InventoryStore,
    flags: &Flags,
    source: &str,
    request: Envelope,
) -> Result<Envelope, HandlerError> {
    let query: GetPetStatus = request.decode()?;
    let context = EvaluationContext::new().with("channel", channels::INVENTORY_QUERIES);
    let delay_ms = flags.number("fault_inventory_latency_ms", &context).clamp(0.0, 60_000.0);
    if delay_ms > 0.0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms as u64)).await;
    }
    let pet = store.get(&query.pet_id).await.map_err(HandlerError::retriable)?;
    let reply = PetStatus { pet_id: query.pet_id, pet: pet.as_ref().map(crate::Pet::summary) };
    Ok(Envelope::from_message(source, &reply, &MessageContext::caused_by(&request))?)
}

/// The events that change what the catalog shows of a pet: its availability, or (an
/// administrator's change) the pet itself.
const CATALOG_CHANGES: [&str; 6] =
    [PetReserved::TYPE, PetReleased::TYPE, PetSold::TYPE, PetRestored::TYPE, PetListed::TYPE, PetUpdated::TYPE];

/// The part every catalog-changing event shares.
#[derive(Deserialize)]
struct AboutPet {
    pet_id: String,
}

/// Handles `inventory-events` in the `inventory-cache` group: invalidates the pet the event
/// is about. One group for all instances is enough because they share one Redis; this is
/// what keeps an instance's cache right when another instance handled the command. Cache
/// failures are logged and counted by the cache, never retried here (the TTL bounds them).
pub(crate) async fn invalidate_on_event(cache: &CatalogCache, message: Envelope) -> Result<(), HandlerError> {
    if !CATALOG_CHANGES.contains(&message.event_type.as_str()) {
        return Ok(());
    }
    let about: AboutPet = serde_json::from_slice(&message.data)
        .map_err(|e| HandlerError::fatal(format!("{}: {e}", message.event_type)))?;
    cache.invalidate(&about.pet_id).await;
    Ok(())
}
