//! The pets orders are placed for: read once from the catalog, each lent to one order at a
//! time, and given back when that order's saga compensated (the pet is released then).
//!
//! A pet that was sold, or whose fate is unknown, is not lent again: a second order for it
//! would answer `409` or compensate for a reason that is not the load's.

use std::{collections::VecDeque, sync::Mutex};

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::client;

/// The largest page `GET /pets` serves.
const PAGE: usize = 100;

/// A page of `GET /pets`.
#[derive(Deserialize)]
struct Page {
    items: Vec<Listed>,
    next_cursor: Option<String>,
}

/// A pet as `GET /pets` lists it (only what the load needs).
#[derive(Deserialize)]
struct Listed {
    pet_id: String,
    status: String,
}

/// Every pet the catalog at `url` says can be ordered (`GET /pets?available=true`, all
/// pages), in catalog order.
pub async fn available(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<String>> {
    let mut pets = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut page_url = format!("{url}/pets?available=true&limit={PAGE}");
        if let Some(cursor) = &cursor {
            page_url.push_str("&cursor=");
            page_url.push_str(cursor);
        }
        let what = format!("GET {page_url}");
        let response = client::send_waiting_out_429(&what, || http.get(&page_url)).await?;
        let status = response.status();
        if !status.is_success() {
            bail!("{what}: {status}: {}", client::problem(response).await);
        }
        let page: Page = response.json().await.with_context(|| format!("{what}: not a page of pets"))?;
        pets.extend(page.items.into_iter().filter(|p| p.status == "available").map(|p| p.pet_id));
        match page.next_cursor {
            Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
            _ => return Ok(pets),
        }
    }
}

/// Pets free to lend, and how many are lent out.
#[derive(Debug, Default)]
struct Stock {
    free: VecDeque<String>,
    lent: usize,
}

/// The pets of a run: each lent to one order at a time.
#[derive(Debug, Default)]
pub struct Pool {
    stock: Mutex<Stock>,
    /// Wakes one waiting order when a pet comes back, every one when none is lent out any
    /// more (none will come back).
    changed: Notify,
}

/// What [`Pool::lend`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lent {
    /// A pet that was free.
    Now(String),
    /// A pet that came back while this order waited for one.
    AfterWaiting(String),
    /// No pet is free and none is lent out: none will come back.
    Dry,
}

impl Pool {
    /// A pool of `pets`, all free.
    pub fn new(pets: Vec<String>) -> Self {
        Self { stock: Mutex::new(Stock { free: pets.into(), lent: 0 }), changed: Notify::new() }
    }

    /// A free pet; if there is none, waits for one to come back while any is lent out.
    pub async fn lend(&self) -> Lent {
        let mut waited = false;
        loop {
            // Registered before looking, so a pet given back between the look and the wait
            // still wakes this order.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut stock = self.lock();
                if let Some(pet) = stock.free.pop_front() {
                    stock.lent += 1;
                    return if waited { Lent::AfterWaiting(pet) } else { Lent::Now(pet) };
                }
                if stock.lent == 0 {
                    return Lent::Dry;
                }
            }
            changed.await;
            waited = true;
        }
    }

    /// Takes back a lent pet: it can be ordered again.
    pub fn give_back(&self, pet: String) {
        {
            let mut stock = self.lock();
            stock.lent = stock.lent.saturating_sub(1);
            stock.free.push_back(pet);
        }
        self.changed.notify_one();
    }

    /// Writes off a lent pet: sold, or in a state the load cannot know.
    pub fn write_off(&self) {
        let none_lent = {
            let mut stock = self.lock();
            stock.lent = stock.lent.saturating_sub(1);
            stock.lent == 0
        };
        if none_lent {
            self.changed.notify_waiters();
        }
    }

    /// The stock; a panic while it was held left it consistent (every change is one step).
    fn lock(&self) -> std::sync::MutexGuard<'_, Stock> {
        self.stock.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    fn pool(pets: &[&str]) -> Arc<Pool> {
        Arc::new(Pool::new(pets.iter().map(|p| (*p).to_owned()).collect()))
    }

    #[tokio::test]
    async fn pets_are_lent_once_and_the_pool_runs_dry_when_none_can_come_back() {
        let pool = pool(&["a", "b"]);
        assert_eq!(pool.lend().await, Lent::Now("a".into()));
        assert_eq!(pool.lend().await, Lent::Now("b".into()));
        pool.write_off();
        pool.write_off();
        assert_eq!(pool.lend().await, Lent::Dry);
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_waits_for_a_pet_given_back() {
        let pool = pool(&["a"]);
        assert_eq!(pool.lend().await, Lent::Now("a".into()));
        let waiting = wait_for_a_pet(&pool);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished(), "a pet is lent out: the order waits for it");
        pool.give_back("a".into());
        assert_eq!(waiting.await.expect("joins"), Lent::AfterWaiting("a".into()));
    }

    fn wait_for_a_pet(pool: &Arc<Pool>) -> tokio::task::JoinHandle<Lent> {
        let pool = pool.clone();
        tokio::spawn(async move { pool.lend().await })
    }

    #[tokio::test(start_paused = true)]
    async fn each_pet_given_back_serves_one_waiting_order() {
        let pool = pool(&["a", "b", "c"]);
        for _ in 0..3 {
            assert!(matches!(pool.lend().await, Lent::Now(_)));
        }
        let waiting = [wait_for_a_pet(&pool), wait_for_a_pet(&pool)];
        tokio::time::sleep(Duration::from_millis(10)).await;
        // A sold pet wakes nobody while others are still lent out.
        pool.write_off();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(waiting.iter().all(|w| !w.is_finished()));
        pool.give_back("a".into());
        pool.give_back("b".into());
        let mut lent = Vec::new();
        for w in waiting {
            lent.push(w.await.expect("joins"));
        }
        lent.sort_by_key(|l| format!("{l:?}"));
        assert_eq!(lent, [Lent::AfterWaiting("a".into()), Lent::AfterWaiting("b".into())]);
    }

    #[tokio::test(start_paused = true)]
    async fn orders_waiting_for_a_pet_learn_when_none_will_come_back() {
        let pool = pool(&["a"]);
        assert_eq!(pool.lend().await, Lent::Now("a".into()));
        let waiting = [wait_for_a_pet(&pool), wait_for_a_pet(&pool)];
        tokio::time::sleep(Duration::from_millis(10)).await;
        pool.write_off();
        for w in waiting {
            assert_eq!(w.await.expect("joins"), Lent::Dry);
        }
        assert_eq!(pool.lend().await, Lent::Dry);
    }
}
