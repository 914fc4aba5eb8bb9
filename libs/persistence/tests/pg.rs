//! The storage building blocks on a real PostgreSQL: optimistic concurrency of the event
//! store, the inbox dropping redeliveries, and the relay keeping order through failures.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use contracts::inventory::GetPetStatus;
use messaging::{BusError, Envelope, MessageContext};
use persistence::{DomainEvent, OutboxSink, OutboxStore, Outgoing, StoreError, group_commit, pg};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations");
const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const THINGS: pg::EventTable = pg::EventTable::new("thing_events");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Renamed {
    name: String,
}

impl DomainEvent for Renamed {
    fn event_type(&self) -> &'static str {
        "renamed"
    }
}

async fn schema() -> PgPool {
    let url = kit::testing::fresh_database().await;
    let pool = pg::connect(&url, "things", 4, STATEMENT_TIMEOUT).await.expect("connect");
    pg::migrate(&pool, "things", &MIGRATOR).await.expect("migrate");
    pool
}

fn message(n: usize) -> Envelope {
    Envelope::from_message("/test", &GetPetStatus { pet_id: format!("pet-{n}") }, &MessageContext::default())
        .expect("envelope")
}

#[tokio::test]
async fn two_writers_of_one_version_conflict_and_the_loser_changes_nothing() {
    let pool = schema().await;
    let id = Uuid::now_v7();
    let mut conn = pool.acquire().await.expect("conn");
    let first = [Renamed { name: "a".into() }];
    assert_eq!(THINGS.append(&mut conn, id, 0, &first, Utc::now()).await.expect("first append"), 1);
    let err =
        THINGS.append(&mut conn, id, 0, &[Renamed { name: "b".into() }], Utc::now()).await.expect_err("stale writer");
    assert!(matches!(err, StoreError::Conflict { expected: 0, .. }), "{err}");
    let history = THINGS.load::<Renamed>(&mut conn, id).await.expect("load");
    assert_eq!(history.iter().map(|r| (r.version, r.event.name.as_str())).collect::<Vec<_>>(), [(1, "a")]);
}

#[tokio::test]
async fn a_statement_running_past_the_timeout_is_cancelled_and_the_connection_stays_usable() {
    let pool = schema().await;
    let started = std::time::Instant::now();
    let err = sqlx::query("SELECT pg_sleep(10)").execute(&pool).await.expect_err("cancelled by statement_timeout");
    assert!(err.to_string().contains("statement timeout"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8), "took {:?}", started.elapsed());
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.expect("the pool still works");
    assert_eq!(one, 1);
}

#[tokio::test]
async fn a_redelivered_message_is_handled_once() {
    let pool = schema().await;
    let msg = message(1);
    for _ in 0..3 {
        pg::handle_once(&pool, "counter", &msg, async |conn| {
            sqlx::query(
                "INSERT INTO counters VALUES ('n', 1) ON CONFLICT (name) DO UPDATE SET value = counters.value + 1",
            )
            .execute(&mut *conn)
            .await?;
            Ok(((), vec![Outgoing { channel: "out".into(), envelope: message(2) }]))
        })
        .await
        .expect("handle");
    }
    let value: i64 =
        sqlx::query_scalar("SELECT value FROM counters WHERE name = 'n'").fetch_one(&pool).await.expect("value");
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&pool).await.expect("outbox");
    assert_eq!((value, outbox), (1, 1));
}

/// Records what it is given; fails every delivery while `failing` is set, and deliveries of
/// the pet named in `refuse`.
#[derive(Default)]
struct Recorder {
    delivered: Mutex<Vec<String>>,
    failing: Mutex<bool>,
    refuse: Mutex<Option<String>>,
}

#[async_trait]
impl OutboxSink for Recorder {
    async fn deliver(&self, _channel: &str, envelope: &Envelope) -> Result<(), BusError> {
        let pet = envelope.decode::<GetPetStatus>().expect("decode").pet_id;
        if *self.failing.lock().expect("lock") || self.refuse.lock().expect("lock").as_deref() == Some(pet.as_str()) {
            return Err(BusError::transient("test", "broker unreachable"));
        }
        self.delivered.lock().expect("lock").push(pet);
        Ok(())
    }
}

#[tokio::test]
async fn the_relay_keeps_messages_while_the_transport_fails_and_then_delivers_them_in_order() {
    let pool = schema().await;
    let mut tx = pool.begin().await.expect("tx");
    for n in 0..5 {
        pg::enqueue(&mut tx, "out", &message(n)).await.expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let outbox = pg::PgOutbox::new(pool.clone());
    let sink = Recorder::default();

    *sink.failing.lock().expect("lock") = true;
    assert!(outbox.relay(100, &sink).await.is_err(), "a failing transport is reported");
    assert_eq!(outbox.backlog().await.expect("backlog"), 5, "nothing is dropped");

    *sink.failing.lock().expect("lock") = false;
    assert_eq!(outbox.relay(100, &sink).await.expect("relay"), 5);
    assert_eq!(outbox.backlog().await.expect("backlog"), 0);
    assert_eq!(*sink.delivered.lock().expect("lock"), ["pet-0", "pet-1", "pet-2", "pet-3", "pet-4"]);
}

#[tokio::test]
async fn a_message_that_fails_holds_back_the_later_ones_of_its_key_and_no_other() {
    let pool = schema().await;
    let mut tx = pool.begin().await.expect("tx");
    // pet-0 and pet-2 share key `a`; pet-1 and pet-3 key `b`.
    for n in 0..4 {
        let mut envelope = message(n);
        envelope.partition_key = Some(if n % 2 == 0 { "a" } else { "b" }.to_owned());
        pg::enqueue(&mut tx, "out", &envelope).await.expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let outbox = pg::PgOutbox::new(pool.clone());
    let sink = Recorder::default();

    *sink.refuse.lock().expect("lock") = Some("pet-0".into());
    let error = outbox.relay(100, &sink).await.expect_err("pet-0 could not be published").to_string();
    assert!(error.contains("1 later of its key held back"), "{error}");
    assert_eq!(*sink.delivered.lock().expect("lock"), ["pet-1", "pet-3"], "key b went on; key a waited");
    assert_eq!(outbox.backlog().await.expect("backlog"), 2);

    *sink.refuse.lock().expect("lock") = None;
    assert_eq!(outbox.relay(100, &sink).await.expect("relay"), 2);
    assert_eq!(*sink.delivered.lock().expect("lock"), ["pet-1", "pet-3", "pet-0", "pet-2"], "a in its order");
}

/// Renames things in batches: every thing of the batch loaded in one query, the renames
/// appended in one statement, a message sent per rename. A rename to "" is refused, which
/// fails its batch.
struct Renames(std::sync::Arc<BatchSizes>);

/// How many batches ran, and the largest.
#[derive(Default)]
struct BatchSizes {
    batches: std::sync::atomic::AtomicUsize,
    largest: std::sync::atomic::AtomicUsize,
}

struct Rename {
    thing: Uuid,
    name: &'static str,
}

impl group_commit::BatchWork for Renames {
    type Job = Rename;
    type Output = i64;

    async fn run(
        &self,
        conn: &mut sqlx::PgConnection,
        jobs: &[&Rename],
    ) -> Result<Vec<(i64, Vec<Outgoing>)>, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.0.batches.fetch_add(1, SeqCst);
        self.0.largest.fetch_max(jobs.len(), SeqCst);
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.thing).collect();
        let histories = THINGS.load_all_of::<Renamed>(conn, &ids).await?;
        let mut versions: std::collections::HashMap<Uuid, i64> =
            histories.iter().map(|(id, h)| (*id, h.len() as i64)).collect();
        let events: Vec<Renamed> = jobs.iter().map(|j| Renamed { name: j.name.to_owned() }).collect();
        let mut rows = Vec::new();
        let mut outcomes = Vec::new();
        for (job, event) in jobs.iter().zip(&events) {
            if job.name.is_empty() {
                return Err(StoreError::Codec("an empty name".into()));
            }
            let version = versions.entry(job.thing).or_insert(0);
            *version += 1;
            rows.push(persistence::Recorded {
                aggregate_id: job.thing,
                version: *version,
                recorded_at: Utc::now(),
                event,
            });
            let out =
                Envelope::from_message("/test", &GetPetStatus { pet_id: job.name.into() }, &MessageContext::default())
                    .expect("envelope");
            outcomes.push((*version, vec![Outgoing { channel: "renamed".into(), envelope: out }]));
        }
        THINGS.append_all(conn, &rows).await?;
        Ok(outcomes)
    }
}

/// Jobs queued while the committer is busy share a transaction: one batch for all of them,
/// two renames of one thing in order, a message delivered twice handled once, and a job that
/// fails its batch fails alone — the others are committed with their messages.
#[tokio::test]
async fn jobs_waiting_together_are_committed_together_and_a_bad_one_fails_alone() {
    use std::sync::{Arc, atomic::Ordering::SeqCst};
    let pool = schema().await;
    let work = Arc::new(BatchSizes::default());
    let committers = group_commit::Committers { count: 1, max_batch: 64 };
    let group = group_commit::GroupCommit::start(pool.clone(), Renames(work.clone()), committers);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let twice = message(7);
    let jobs = [
        (message(1), Rename { thing: a, name: "a1" }),
        (message(2), Rename { thing: b, name: "b1" }),
        (twice.clone(), Rename { thing: a, name: "a2" }),
        (twice, Rename { thing: a, name: "a2 again" }),
        (message(3), Rename { thing: b, name: "" }),
        (message(4), Rename { thing: b, name: "b2" }),
    ];
    // All queued before the committer first runs (a current-thread runtime runs it only when
    // this task waits).
    let outcomes = futures::future::join_all(jobs.into_iter().map(|(m, j)| group.handle_once("renamer", m, j))).await;
    let outcomes: Vec<String> = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(v) => format!("{v:?}"),
            Err(e) => format!("error: {e}"),
        })
        .collect();
    assert_eq!(outcomes, ["Some(1)", "Some(1)", "Some(2)", "None", "error: codec: an empty name", "Some(2)"]);
    assert!(work.largest.load(SeqCst) >= 5, "the waiting jobs were tried in one batch");

    let mut conn = pool.acquire().await.expect("conn");
    let names = |h: Vec<persistence::Recorded<Renamed>>| h.into_iter().map(|r| r.event.name).collect::<Vec<_>>();
    assert_eq!(names(THINGS.load(&mut conn, a).await.expect("a")), ["a1", "a2"]);
    assert_eq!(names(THINGS.load(&mut conn, b).await.expect("b")), ["b1", "b2"]);
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool);
    assert_eq!(count("SELECT count(*) FROM outbox").await.expect("outbox"), 4, "one message per rename");
    // The failed job's message is not in the inbox: a redelivery is handled again.
    assert_eq!(count("SELECT count(*) FROM inbox").await.expect("inbox"), 4);

    // A lone job takes a transaction of its own at once.
    let before = work.batches.load(SeqCst);
    let lone = group.write(Rename { thing: b, name: "b3" }).await.expect("lone write");
    assert_eq!((lone, work.batches.load(SeqCst) - before), (3, 1));
}
