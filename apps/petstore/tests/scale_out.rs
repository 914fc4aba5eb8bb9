//! Scale-out: two instances of every service, each pair in the same consumer groups (the
//! order instances share the load's requests), process a few hundred orders; halfway through,
//! one instance of each service is SIGKILLed — no graceful shutdown, no offset commit, no
//! outbox flush. The survivors take over the killed instances' partitions and unsent outbox
//! rows, and afterwards the books balance: every saga ends, no order is lost, no payment is
//! taken twice, each pet is sold at most once, and the order projection agrees with every
//! saga's outcome.

mod support;

use std::time::{Duration, Instant};

use support::{
    Cluster, SERVICES,
    books::{Load, check_books, seed},
};

const ORDERS: usize = 300;
const CONCURRENCY: usize = 8;
const SETTLE_LIMIT: Duration = Duration::from_secs(180);
/// The second instance of each service.
const SECOND: [&str; 6] = ["inventory-2", "order-2", "payment-2", "delivery-2", "notification-2", "orchestrator-2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_every_service_one_of_each_killed_mid_run_and_the_books_balance() {
    let mut cluster = Cluster::start_with_env(&[
        // A command the killed instance took but never answered is sent again after this.
        ("PETSTORE__SERVICES__ORCHESTRATOR__STEP_TIMEOUT_MS", "8000"),
        ("PETSTORE__SERVICES__ORCHESTRATOR__DEADLINE_CHECK_MS", "500"),
    ])
    .await;
    for instance in SECOND {
        cluster.add_instance(instance).await;
    }
    let seed = seed();
    println!("scale-out seed {seed}");
    let targets = vec![cluster.url("order", ""), cluster.url("order-2", "")];
    let load = Load::start(&cluster, "scale", ORDERS, CONCURRENCY, seed, targets);

    // Halfway: one instance of each service killed. The first instances go for the
    // participants (they joined their groups first, so they hold partitions for sure), the
    // second for the order service, whose survivor then takes every request.
    let started = Instant::now();
    while load.answered_so_far().await < ORDERS / 3 {
        assert!(started.elapsed() < Duration::from_secs(120), "the load does not get going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivor = cluster.url("order", "");
    *load.targets.write().expect("targets") = vec![survivor];
    let victims: Vec<&'static str> = SERVICES.iter().map(|s| if *s == "order" { "order-2" } else { *s }).collect();
    for victim in &victims {
        cluster.kill(victim).await;
    }
    println!(
        "scale-out: SIGKILLed {victims:?} after {} answers, {} orders accepted",
        load.answered_so_far().await,
        load.accepted_so_far().await
    );

    let (accepted, answers) = load.finish().await;
    println!("scale-out: {} of {ORDERS} orders accepted; answers by status: {answers:?}", accepted.len());
    // 0: the killed order instance took the request down with it — refused, not lost.
    assert!(answers.keys().all(|s| matches!(s, 0 | 202 | 409 | 503)), "unexpected answers: {answers:?}");
    assert!(!accepted.is_empty(), "orders were accepted");
    check_books(&cluster.db, &accepted, SETTLE_LIMIT).await;
}
