//! The load of a few hundred orders the fault tests put on a cluster, and the books they
//! check afterwards: every saga ends, no order is lost, no payment is taken twice, the money
//! adds up, each pet is sold at most once, deliveries and notifications match outcomes, the
//! order projection agrees with every saga, and dead letters say why.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use rust_decimal::Decimal;
use sqlx::{PgPool, Row};
use tokio::sync::Mutex;

use super::Cluster;

/// A cheap deterministic random sequence (no extra dependency), seeded per run and printed.
pub struct Dice(pub u64);

impl Dice {
    /// A number below `n`.
    pub fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A seed from the clock, odd (the sequence never reaches 0).
pub fn seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
}

/// Orders sent `concurrency` at a time to the order instances in `targets` (round robin; a
/// test may change the list while the load runs), for random pets, a third with the declined
/// test card. Only accepted orders (202) count; the rest were refused, not lost.
pub struct Load {
    /// Base URLs of the order instances the load is sent to.
    pub targets: Arc<RwLock<Vec<String>>>,
    accepted: Arc<Mutex<Vec<(String, String)>>>,
    answers: Arc<Mutex<HashMap<u16, usize>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `orders` orders by customers `<prefix>-<n>`.
    pub fn start(
        cluster: &Cluster,
        prefix: &str,
        orders: usize,
        concurrency: usize,
        seed: u64,
        targets: Vec<String>,
    ) -> Self {
        let targets = Arc::new(RwLock::new(targets));
        let accepted = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
        let answers = Arc::new(Mutex::new(HashMap::<u16, usize>::new()));
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let customers: Vec<String> = (0..orders).map(|n| format!("{prefix}-{n}")).collect();
        let tokens: Arc<Vec<(String, String)>> =
            Arc::new(customers.into_iter().map(|c| (cluster.token(&c, &["customer"]), c)).collect());
        let mut workers = Vec::new();
        for worker in 0..concurrency {
            let (http, targets, accepted, next) =
                (cluster.http.clone(), targets.clone(), accepted.clone(), next.clone());
            let (answers, tokens) = (answers.clone(), tokens.clone());
            workers.push(tokio::spawn(async move {
                let mut dice = Dice(seed.wrapping_add(worker as u64 * 7919) | 1);
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n >= tokens.len() {
                        break;
                    }
                    let url = {
                        let targets = targets.read().expect("targets");
                        format!("{}/orders", targets[n % targets.len()])
                    };
                    let pet = SEEDED_PETS[dice.next(SEEDED_PETS.len())];
                    let method = if dice.next(3) == 0 { "declined_card" } else { "credit_card" };
                    let body = serde_json::json!({
                        "pet_id": pet,
                        "shipping_address": { "street": "1 Chaos Way", "city": "Entropy", "postal_code": "00000", "country": "US" },
                        "payment_method": method,
                    });
                    let (token, customer) = &tokens[n];
                    let sent = http.post(&url).bearer_auth(token).json(&body).send().await;
                    let status = sent.as_ref().map_or(0, |r| r.status().as_u16());
                    *answers.lock().await.entry(status).or_insert(0usize) += 1;
                    // A well-behaved client waits as `Retry-After` says (capped, to keep the
                    // test short) instead of spending the load on refusals while a dependency
                    // is down.
                    let retry_after = sent.as_ref().ok().and_then(|r| r.headers().get("retry-after"));
                    if let Some(secs) = retry_after.and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()) {
                        tokio::time::sleep(Duration::from_secs(secs.min(2))).await;
                    }
                    if let Ok(r) = sent
                        && status == 202
                        && let Ok(v) = r.json::<serde_json::Value>().await
                        && let Some(id) = v["order_id"].as_str()
                    {
                        accepted.lock().await.push((customer.clone(), id.to_owned()));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        Self { targets, accepted, answers, workers }
    }

    /// Orders accepted so far.
    pub async fn accepted_so_far(&self) -> usize {
        self.accepted.lock().await.len()
    }

    /// Orders answered so far, accepted or not.
    pub async fn answered_so_far(&self) -> usize {
        self.answers.lock().await.values().sum()
    }

    /// Waits for the load to end: the accepted orders (customer, order id) and the answers
    /// by status (0: no answer, the instance was killed under the request).
    pub async fn finish(self) -> (Vec<(String, String)>, HashMap<u16, usize>) {
        for worker in self.workers {
            worker.await.expect("load worker");
        }
        let accepted = self.accepted.lock().await.clone();
        let answers = self.answers.lock().await.clone();
        (accepted, answers)
    }
}

/// Waits (at most `settle`) for every accepted order's saga to end and its order to follow,
/// then checks and prints the books.
pub async fn check_books(db: &PgPool, accepted: &[(String, String)], settle: Duration) {
    // Every saga ends.
    let deadline = Instant::now() + settle;
    let ids: Vec<uuid::Uuid> = accepted.iter().map(|(_, id)| uuid::Uuid::parse_str(id).expect("uuid")).collect();
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM unnest($1::uuid[]) AS o(id) \
             LEFT JOIN orchestrator.sagas s ON s.order_id = o.id \
             WHERE s.status IS NULL OR s.status NOT IN ('completed', 'compensated', 'failed')",
        )
        .bind(&ids)
        .fetch_one(db)
        .await
        .expect("count open sagas");
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} sagas did not end within {settle:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The order service hears of each end through the saga's ApproveOrder/RejectOrder, just
    // after: wait until no accepted order is still pending.
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM orders.orders WHERE order_id = ANY($1) AND status = 'pending'")
                .bind(&ids)
                .fetch_one(db)
                .await
                .expect("count pending orders");
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} orders still pending after their sagas ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let rows = sqlx::query(
        "SELECT o.order_id, o.pet_id, o.amount, o.status AS order_status, s.status AS saga_status \
         FROM orders.orders o JOIN orchestrator.sagas s ON s.order_id = o.order_id WHERE o.order_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(db)
    .await
    .expect("orders");
    let mut outcome: HashMap<String, usize> = HashMap::new();
    let mut completed_amount = Decimal::ZERO;
    let mut sold_by_saga: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        let saga: String = r.get("saga_status");
        let order: String = r.get("order_status");
        *outcome.entry(saga.clone()).or_default() += 1;
        let expected = if saga == "completed" { "confirmed" } else { "cancelled" };
        assert_eq!(order, expected, "order {} follows its saga ({saga})", r.get::<uuid::Uuid, _>("order_id"));
        if saga == "completed" {
            completed_amount += r.get::<Decimal, _>("amount");
            *sold_by_saga.entry(r.get("pet_id")).or_default() += 1;
        }
    }
    println!("invariant: every saga terminal — {outcome:?}");
    assert_eq!(rows.len(), accepted.len(), "0 orders lost: every accepted order has an order and a saga");
    println!("invariant: 0 orders lost — {} accepted, {} found", accepted.len(), rows.len());

    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT order_id FROM payment.payments WHERE order_id = ANY($1) \
         GROUP BY order_id HAVING count(*) > 1) t",
    )
    .bind(&ids)
    .fetch_one(db)
    .await
    .expect("payments");
    println!("invariant: payments charged twice — {twice}");
    assert_eq!(twice, 0);
    let unavailable: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment.payments WHERE order_id = ANY($1) AND decline_reason LIKE $2")
            .bind(&ids)
            .bind(format!("{}%", payment::UNAVAILABLE))
            .fetch_one(db)
            .await
            .expect("declines");
    println!("observed: charges declined because the flaky provider failed every attempt — {unavailable}");
    let charged: Decimal = sqlx::query_scalar(
        "SELECT COALESCE(sum(amount), 0) FROM payment.payments WHERE order_id = ANY($1) AND status = 'charged'",
    )
    .bind(&ids)
    .fetch_one(db)
    .await
    .expect("charged");
    println!("invariant: charged − refunded = {charged}, completed orders = {completed_amount}");
    let failed = outcome.get("failed").copied().unwrap_or(0);
    if failed == 0 {
        assert_eq!(charged, completed_amount, "money adds up");
    }

    for (pet, sales) in &sold_by_saga {
        assert_eq!(*sales, 1, "pet {pet} sold {sales} times");
    }
    let pets =
        sqlx::query("SELECT pet_id, status, held_by_saga FROM inventory.pets").fetch_all(db).await.expect("pets");
    let sold: HashSet<String> =
        pets.iter().filter(|p| p.get::<String, _>("status") == "sold").map(|p| p.get("pet_id")).collect();
    let reserved: Vec<String> =
        pets.iter().filter(|p| p.get::<String, _>("status") == "reserved").map(|p| p.get("pet_id")).collect();
    println!(
        "invariant: pets — {} sold (completed sagas: {}), {} reserved, {} in stock; {} in the catalog",
        sold.len(),
        sold_by_saga.len(),
        reserved.len(),
        pets.len() - sold.len() - reserved.len(),
        pets.len()
    );
    assert_eq!(
        sold,
        sold_by_saga.keys().cloned().collect::<HashSet<_>>(),
        "each sold pet belongs to one completed saga"
    );
    if failed == 0 {
        assert!(reserved.is_empty(), "no reservation outlives its saga: {reserved:?}");
    }

    // A delivery is scheduled for each completed saga and for no other (a late booking of a
    // compensated saga books nothing).
    let deliveries = sqlx::query(
        "SELECT s.status, count(*) AS n FROM delivery.deliveries d JOIN orchestrator.sagas s ON s.saga_id = d.saga_id \
         WHERE s.order_id = ANY($1) AND d.status = 'scheduled' GROUP BY 1",
    )
    .bind(&ids)
    .fetch_all(db)
    .await
    .expect("deliveries");
    let scheduled: HashMap<String, i64> = deliveries.iter().map(|r| (r.get("status"), r.get("n"))).collect();
    println!("invariant: deliveries scheduled by saga outcome — {scheduled:?}");
    let completed_sagas = outcome.get("completed").copied().unwrap_or(0) as i64;
    assert_eq!(scheduled.get("completed").copied().unwrap_or(0), completed_sagas, "one delivery per completed saga");
    assert_eq!(scheduled.values().sum::<i64>(), completed_sagas, "no delivery for a saga that did not complete");

    let notices = sqlx::query(
        "SELECT s.status, n.kind, count(*) AS n FROM orchestrator.sagas s \
         JOIN notification.notifications n ON n.saga_id = s.saga_id WHERE s.order_id = ANY($1) GROUP BY 1, 2",
    )
    .bind(&ids)
    .fetch_all(db)
    .await
    .expect("notifications");
    let mut notified: HashMap<(String, String), i64> = HashMap::new();
    for n in &notices {
        notified.insert((n.get("status"), n.get("kind")), n.get("n"));
    }
    println!("invariant: notifications by (saga outcome, kind) — {notified:?}");
    let completed = outcome.get("completed").copied().unwrap_or(0) as i64;
    let compensated = outcome.get("compensated").copied().unwrap_or(0) as i64;
    assert_eq!(notified.get(&("completed".into(), "confirmation".into())).copied().unwrap_or(0), completed);
    assert!(!notified.contains_key(&("completed".into(), "cancellation_notice".into())));
    assert!(!notified.contains_key(&("compensated".into(), "confirmation".into())));
    // A notice that kept failing is given up (the saga still compensates), so at most one each.
    assert!(notified.get(&("compensated".into(), "cancellation_notice".into())).copied().unwrap_or(0) <= compensated);

    let letters = sqlx::query("SELECT channel, error FROM orchestrator.dead_letters").fetch_all(db).await.expect("dlq");
    println!("invariant: dead letters — {}", letters.len());
    for l in &letters {
        println!("  {}: {}", l.get::<String, _>("channel"), l.get::<String, _>("error"));
    }
    // Each failed saga leaves its compensation; anything else must at least say why.
    assert!(letters.len() >= failed, "every failed saga is dead-lettered");
    assert!(letters.iter().all(|l| !l.get::<String, _>("error").is_empty()), "every dead letter says why");
}

/// The catalog's pet ids (db/inventory/seed_pets.json).
pub const SEEDED_PETS: [&str; 30] = [
    "golden-retriever-001",
    "persian-cat-002",
    "cockatiel-003",
    "goldfish-004",
    "bearded-dragon-005",
    "labrador-retriever-006",
    "german-shepherd-007",
    "beagle-008",
    "french-bulldog-009",
    "dachshund-010",
    "border-collie-011",
    "siamese-cat-012",
    "maine-coon-013",
    "british-shorthair-014",
    "ragdoll-015",
    "domestic-shorthair-016",
    "budgerigar-017",
    "african-grey-018",
    "canary-019",
    "lovebird-020",
    "betta-021",
    "koi-022",
    "clownfish-023",
    "angelfish-024",
    "neon-tetra-025",
    "leopard-gecko-026",
    "ball-python-027",
    "corn-snake-028",
    "red-eared-slider-029",
    "green-iguana-030",
];
