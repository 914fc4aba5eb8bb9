//! The reservation sweeper: a reservation is the saga's semantic lock on a pet, and a saga
//! that died (or stalls) must not keep it for good. Every `reservation_sweep_ms` the sweeper
//! releases the reservations past their `reserved_until`, each with a `PetReleased` through the
//! outbox: the catalog caches drop the pet, and the saga, if it still runs, is refused the sale.

use std::time::Duration;

use chrono::Utc;
use tokio::time::MissedTickBehavior;
use tracing::warn;

use crate::{cache::CatalogCache, store::InventoryStore};

/// Sweeps every `every` until `stopped` completes (the process's shutdown).
pub(crate) async fn run(
    store: InventoryStore,
    cache: CatalogCache,
    source: String,
    every: Duration,
    stopped: impl Future<Output = ()>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = ticks.tick() => sweep(&store, &cache, &source).await,
        }
    }
}

/// Releases what has expired by now, counts and logs each release, and drops the pets from
/// the cache at once (the `PetReleased` events do it again for the other instances). A failed
/// sweep is logged and the next one tries again.
async fn sweep(store: &InventoryStore, cache: &CatalogCache, source: &str) {
    let released = match store.release_expired(Utc::now(), source).await {
        Ok(released) => released,
        Err(e) => {
            warn!(error = %e, "releasing expired reservations failed; the next sweep tries again");
            return;
        }
    };
    if released.is_empty() {
        return;
    }
    metrics::counter!("petstore_reservations_expired_total").increment(released.len() as u64);
    for expiry in &released {
        let pet_id = &expiry.pet.pet_id;
        let (saga_id, order_id) = (expiry.saga.saga_id, expiry.saga.order_id);
        warn!(%pet_id, %saga_id, %order_id, "reservation expired: the pet is available again");
        cache.invalidate(pet_id).await;
    }
}
