//! The saga log (`saga_events`) and its projection (`sagas`), written in one transaction with
//! the inbox entry of the message that moved the saga and the commands it sends.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, SubsecRound, Utc};
use messaging::{Envelope, MessageContext};
use persistence::{
    DomainEvent, Outgoing, Recorded, Storage, StoreError,
    group_commit::{BatchWork, Committers, GroupCommit},
    memory::{MemoryEventLog, MemoryStore},
    pg::EventTable,
};
use saga::{Saga, SagaEvent};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    SERVICE,
    commands::{command_span, message_for},
};

const EVENTS: EventTable = EventTable::new("saga_events");

/// A saga event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredEvent(pub SagaEvent);

impl DomainEvent for StoredEvent {
    fn event_type(&self) -> &'static str {
        self.0.name()
    }
}

/// The saga log and the order → saga index, for the in-memory store.
#[derive(Debug, Default)]
pub struct SagaState {
    log: MemoryEventLog<StoredEvent>,
    by_order: HashMap<Uuid, Uuid>,
    /// Sagas waiting for a reply, with their last change (what `sagas.updated_at` is for
    /// PostgreSQL): where the deadline check looks.
    waiting: HashMap<Uuid, DateTime<Utc>>,
}

/// The saga store.
#[derive(Clone)]
pub struct SagaStore {
    backend: Backend,
    source: String,
    /// Requests waiting for an order's saga to end (`GET /orders/{id}/status?wait=`).
    waiters: Arc<Waiters>,
}

/// Who waits for which order's saga to end. A saga that ends in this instance wakes its
/// waiters at once; with PostgreSQL, one ended by another instance wakes them at the next of
/// [`SagaStore::follow_ends`]'s looks; while those are not being made or fail, a waiter looks
/// again itself after [`RECHECK`].
#[derive(Default)]
struct Waiters {
    waiting: std::sync::Mutex<HashMap<Uuid, Vec<tokio::sync::oneshot::Sender<()>>>>,
    /// Whether [`SagaStore::follow_ends`] is looking and its last look succeeded.
    followed: std::sync::atomic::AtomicBool,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<tokio::sync::oneshot::Sender<()>>>> {
        // Entries are pushed or removed whole: a poisoned map is consistent.
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn followed(&self) -> bool {
        self.followed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_followed(&self, followed: bool) {
        self.followed.store(followed, std::sync::atomic::Ordering::Relaxed);
    }

    fn register(&self, order_id: Uuid) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut waiters = self.lock();
        let list = waiters.entry(order_id).or_default();
        // Waiters that gave up (their receiver is gone) go now, not when the saga ends.
        list.retain(|w| !w.is_closed());
        list.push(tx);
        rx
    }

    /// The orders someone still waits for; entries whose waiters all gave up are dropped.
    fn orders(&self) -> Vec<Uuid> {
        let mut waiters = self.lock();
        waiters.retain(|_, list| {
            list.retain(|w| !w.is_closed());
            !list.is_empty()
        });
        waiters.keys().copied().collect()
    }

    fn ended(&self, order_id: Uuid) {
        if let Some(list) = self.lock().remove(&order_id) {
            for waiter in list {
                let _ = waiter.send(());
            }
        }
    }
}

/// How often a waiting request looks at its saga again itself while
/// [`SagaStore::follow_ends`] does not look for it (a safety net, not the way ends are seen:
/// thousands of waiting requests looking every few seconds take the connections the saga
/// transitions need).
const RECHECK: Duration = Duration::from_secs(5);
/// How often an instance looks for the ends, by other instances, of the sagas its requests
/// wait for: one query for all of them.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// How long a waiting request waits for a saga that does not exist yet to start (a saga starts
/// a moment after its order is accepted).
const START_WAIT: Duration = Duration::from_secs(2);

/// What one message did to a saga.
#[derive(Debug)]
pub struct Advanced {
    /// The saga after the message.
    pub saga: Saga,
    /// The events the message added.
    pub events: Vec<SagaEvent>,
}

/// Where the sagas are kept: in memory, or in PostgreSQL with the transitions of the moment
/// committed together (see [`persistence::group_commit`]).
#[derive(Clone)]
enum Backend {
    Memory(Arc<MemoryStore<SagaState>>),
    Postgres { pool: PgPool, transitions: GroupCommit<Transitions> },
}

/// What decides a transition: the events that follow for the saga as it is (`None` if it
/// does not exist yet). Called again when its batch is retried, so it must not have effects.
type Decide = Box<dyn Fn(Option<&Saga>) -> Vec<SagaEvent> + Send + Sync>;

/// One transition to make: of which saga, decided how, on behalf of which message (its
/// context and trace span continue in the commands sent).
pub struct Transition {
    saga_id: Uuid,
    decide: Decide,
    cause: Option<MessageContext>,
    span: tracing::Span,
}

/// The orchestrator's part of handling messages in batches: every saga of the batch loaded in
/// one query, the transitions decided in order (a saga moved twice in a batch is moved from
/// where the first move left it), their events appended in one statement and the projection
/// written in one.
pub struct Transitions {
    source: String,
}

impl BatchWork for Transitions {
    type Job = Transition;
    type Output = Option<Advanced>;

    async fn run(
        &self,
        conn: &mut PgConnection,
        jobs: &[&Transition],
    ) -> Result<Vec<(Option<Advanced>, Vec<Outgoing>)>, StoreError> {
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.saga_id).collect();
        let histories = EVENTS.load_all_of::<StoredEvent>(conn, &ids).await?;
        // Each saga of the batch as it stands, with its version.
        let mut sagas: HashMap<Uuid, (Option<Saga>, i64)> =
            histories.iter().map(|(id, history)| (*id, (replay(history), expected(history)))).collect();
        let mut appended: Vec<Recorded<StoredEvent>> = Vec::new();
        let mut moved: Vec<Uuid> = Vec::new();
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            let (current, version) = sagas.entry(job.saga_id).or_insert((None, 0));
            let evolved = job.span.in_scope(|| evolve(current.clone(), job, &self.source))?;
            let Some((advanced, outgoing)) = evolved else {
                outcomes.push((None, Vec::new()));
                continue;
            };
            for event in &advanced.events {
                *version += 1;
                appended.push(Recorded {
                    aggregate_id: job.saga_id,
                    version: *version,
                    recorded_at: advanced.saga.updated_at,
                    event: StoredEvent(event.clone()),
                });
            }
            *current = Some(advanced.saga.clone());
            if !moved.contains(&job.saga_id) {
                moved.push(job.saga_id);
            }
            outcomes.push((Some(advanced), outgoing));
        }
        let rows: Vec<Recorded<&StoredEvent>> = appended
            .iter()
            .map(|r| Recorded {
                aggregate_id: r.aggregate_id,
                version: r.version,
                recorded_at: r.recorded_at,
                event: &r.event,
            })
            .collect();
        EVENTS.append_all(conn, &rows).await?;
        let projected: Vec<(&Saga, i64)> = moved
            .iter()
            .filter_map(|id| sagas.get(id).and_then(|(saga, version)| saga.as_ref().map(|s| (s, *version))))
            .collect();
        project(conn, &projected).await?;
        Ok(outcomes)
    }
}

/// The events `transition` decides for the saga as it is (`current`), applied, and the
/// commands they send; `None` when nothing follows.
fn evolve(
    current: Option<Saga>,
    transition: &Transition,
    source: &str,
) -> Result<Option<(Advanced, Vec<Outgoing>)>, StoreError> {
    let events = (transition.decide)(current.as_ref());
    if events.is_empty() {
        return Ok(None);
    }
    let at = Utc::now().trunc_subsecs(6);
    let (mut saga, new) = match current {
        Some(saga) => (saga, &events[..]),
        None => {
            let saga = Saga::replay(events.iter().take(1).map(|e| (e, at)))
                .ok_or_else(|| codec("a saga must begin with Started"))?;
            (saga, &events[1..])
        }
    };
    for e in new {
        saga.apply(e, at);
    }
    // Commands sent on a deadline continue the order's flow under its correlation id.
    let ctx = transition
        .cause
        .clone()
        .unwrap_or_else(|| MessageContext { correlation_id: saga.correlation_id.clone(), ..MessageContext::default() });
    let mut outgoing = Vec::new();
    for command in events.iter().filter_map(SagaEvent::command) {
        // The command's envelope takes this span's trace context.
        let _step = command_span(&saga, command).entered();
        outgoing.extend(message_for(&saga, command, source, &ctx).map_err(codec)?);
    }
    Ok(Some((Advanced { saga, events }, outgoing)))
}

/// The version of a saga with `history`.
fn expected(history: &[Recorded<StoredEvent>]) -> i64 {
    i64::try_from(history.len()).unwrap_or(i64::MAX)
}

fn codec(e: impl std::fmt::Display) -> StoreError {
    StoreError::Codec(e.to_string())
}

fn replay(history: &[Recorded<StoredEvent>]) -> Option<Saga> {
    Saga::replay(history.iter().map(|r| (&r.event.0, r.recorded_at)))
}

impl SagaStore {
    /// Wraps the configured storage; `source` names the orchestrator in its commands.
    pub fn new(storage: Storage<SagaState>, source: &str) -> Self {
        let backend = match storage {
            Storage::Memory(memory) => Backend::Memory(memory),
            Storage::Postgres { pool, .. } => {
                let work = Transitions { source: source.to_owned() };
                let transitions = GroupCommit::start(pool.clone(), work, Committers::default());
                Backend::Postgres { pool, transitions }
            }
        };
        Self { backend, source: source.to_owned(), waiters: Arc::default() }
    }

    /// Wakes the requests waiting for sagas that other orchestrator instances end: every
    /// [`LOOK_EVERY`], while requests wait, one query finds which of their sagas have ended,
    /// until `shutdown`. In memory every saga ends in this process, so there is nothing to
    /// look for.
    pub async fn follow_ends(self, shutdown: tokio_util::sync::CancellationToken) {
        let Backend::Postgres { pool, .. } = &self.backend else { return };
        let mut ticks = tokio::time::interval(LOOK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.waiters.set_followed(true);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.waiters.set_followed(false);
                    return;
                }
                _ = ticks.tick() => {}
            }
            let waited_for = self.waiters.orders();
            if waited_for.is_empty() {
                continue;
            }
            let ended: Result<Vec<Uuid>, sqlx::Error> =
                sqlx::query_scalar("SELECT order_id FROM sagas WHERE order_id = ANY($1) AND ended_at IS NOT NULL")
                    .bind(&waited_for)
                    .fetch_all(pool)
                    .await;
            self.waiters.set_followed(ended.is_ok());
            match ended {
                Ok(ended) => ended.into_iter().for_each(|order_id| self.waiters.ended(order_id)),
                Err(error) => {
                    tracing::warn!(%error, "looking for ended sagas failed; waiting requests look again themselves")
                }
            }
        }
    }

    /// The saga of `order_id` once it has ended, or as it is when `wait` runs out; `None` when
    /// no saga for the order has started within [`START_WAIT`] (or `wait`, if shorter).
    pub async fn wait_for_end(&self, order_id: Uuid, wait: Duration) -> Result<Option<Saga>, StoreError> {
        let started = tokio::time::Instant::now();
        loop {
            // Registered before looking, so an end between the look and the wait is not missed.
            let ended = self.waiters.register(order_id);
            let saga = self.for_order(order_id).await?;
            let waited = started.elapsed();
            let limit = if saga.is_some() { wait } else { wait.min(START_WAIT) };
            if saga.as_ref().is_some_and(|s| s.ended_at.is_some()) || waited >= limit {
                return Ok(saga);
            }
            // In memory every end is seen here; with PostgreSQL, `follow_ends` looks for it.
            let own_look = match &self.backend {
                Backend::Postgres { .. } if !self.waiters.followed() => RECHECK,
                _ => limit,
            };
            let _ = tokio::time::timeout((limit - waited).min(own_look), ended).await;
        }
    }

    /// Handles `message` once for saga `saga_id`: `decide` looks at the saga (`None` if it
    /// does not exist yet) and says which events follow; they are appended (failing with
    /// [`StoreError::Conflict`] if another message moved the saga meanwhile), projected, and
    /// the commands they imply go to the outbox. `None` when nothing changed.
    pub async fn advance(
        &self,
        message: &Envelope,
        saga_id: Uuid,
        decide: impl Fn(Option<&Saga>) -> Vec<SagaEvent> + Send + Sync + 'static,
    ) -> Result<Option<Advanced>, StoreError> {
        self.transition(Some(message), saga_id, Box::new(decide)).await
    }

    /// Moves saga `saga_id` on when the reply it waits for is overdue: if its last change is
    /// before `overdue_before`, the events of [`Saga::on_deadline`] are appended like a
    /// message's (a concurrent reply or another orchestrator instance makes this a
    /// [`StoreError::Conflict`], and the saga is looked at again on the next check).
    pub async fn advance_overdue(
        &self,
        saga_id: Uuid,
        overdue_before: DateTime<Utc>,
    ) -> Result<Option<Advanced>, StoreError> {
        let decide = move |current: Option<&Saga>| match current {
            Some(saga) if saga.updated_at < overdue_before => saga.on_deadline(),
            _ => Vec::new(),
        };
        self.transition(None, saga_id, Box::new(decide)).await
    }

    /// Sagas still waiting for a reply whose last change is before `before`, oldest first.
    pub async fn overdue(&self, before: DateTime<Utc>, limit: i64) -> Result<Vec<Uuid>, StoreError> {
        match &self.backend {
            Backend::Memory(memory) => Ok(memory.read(|s| {
                let mut due: Vec<(DateTime<Utc>, Uuid)> =
                    s.waiting.iter().filter(|(_, at)| **at < before).map(|(id, at)| (*at, *id)).collect();
                due.sort_unstable();
                due.into_iter().take(usize::try_from(limit).unwrap_or(0)).map(|(_, id)| id).collect()
            })),
            Backend::Postgres { pool, .. } => Ok(sqlx::query_scalar(
                "SELECT saga_id FROM sagas WHERE status IN ('running', 'compensating') AND updated_at < $1 \
                 ORDER BY updated_at LIMIT $2",
            )
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?),
        }
    }

    /// One transition of a saga, caused by `message` (recorded in the inbox in the same
    /// transaction) or, when `None`, by a deadline.
    async fn transition(
        &self,
        message: Option<&Envelope>,
        saga_id: Uuid,
        decide: Decide,
    ) -> Result<Option<Advanced>, StoreError> {
        let transition = Transition {
            saga_id,
            decide,
            cause: message.map(MessageContext::caused_by),
            span: tracing::Span::current(),
        };
        let advanced = match &self.backend {
            Backend::Memory(memory) => {
                let work = |state: &mut SagaState| {
                    let history = state.log.load(saga_id);
                    let Some((advanced, outgoing)) = evolve(replay(&history), &transition, &self.source)? else {
                        return Ok((None, Vec::new()));
                    };
                    let stored: Vec<StoredEvent> = advanced.events.iter().cloned().map(StoredEvent).collect();
                    state.log.append(saga_id, expected(&history), &stored, advanced.saga.updated_at)?;
                    state.by_order.insert(advanced.saga.order.order_id, saga_id);
                    match advanced.saga.awaiting() {
                        Some(_) => state.waiting.insert(saga_id, advanced.saga.updated_at),
                        None => state.waiting.remove(&saga_id),
                    };
                    Ok::<_, StoreError>((Some(advanced), outgoing))
                };
                match message {
                    Some(message) => memory.handle_once(SERVICE, message, work).map(Option::flatten),
                    None => memory.write(work),
                }
            }
            Backend::Postgres { transitions, .. } => match message {
                Some(message) => {
                    transitions.handle_once(SERVICE, message.clone(), transition).await.map(Option::flatten)
                }
                None => transitions.write(transition).await,
            },
        }?;
        if let Some(a) = &advanced
            && a.saga.ended_at.is_some()
        {
            self.waiters.ended(a.saga.order.order_id);
        }
        Ok(advanced)
    }

    /// The saga, rebuilt from its log.
    pub async fn get(&self, saga_id: Uuid) -> Result<Option<Saga>, StoreError> {
        match &self.backend {
            Backend::Memory(memory) => Ok(memory.read(|s| replay(&s.log.load(saga_id)))),
            Backend::Postgres { pool, .. } => {
                let mut conn = pool.acquire().await?;
                Ok(replay(&EVENTS.load::<StoredEvent>(&mut conn, saga_id).await?))
            }
        }
    }

    /// The saga processing `order_id`.
    pub async fn for_order(&self, order_id: Uuid) -> Result<Option<Saga>, StoreError> {
        match &self.backend {
            Backend::Memory(memory) => {
                Ok(memory.read(|s| s.by_order.get(&order_id).and_then(|id| replay(&s.log.load(*id)))))
            }
            Backend::Postgres { pool, .. } => {
                let mut conn = pool.acquire().await?;
                let find = "SELECT saga_id FROM sagas WHERE order_id = $1";
                Ok(replay(&EVENTS.load_found::<StoredEvent>(&mut conn, find, order_id).await?))
            }
        }
    }
}

/// Writes the projection of `sagas` (each with its version), one statement for all.
async fn project(conn: &mut PgConnection, sagas: &[(&Saga, i64)]) -> Result<(), StoreError> {
    if sagas.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = sagas.iter().map(|(s, _)| s.saga_id).collect();
    let orders: Vec<Uuid> = sagas.iter().map(|(s, _)| s.order.order_id).collect();
    let customers: Vec<&str> = sagas.iter().map(|(s, _)| s.order.customer_id.as_str()).collect();
    let statuses: Vec<&str> = sagas.iter().map(|(s, _)| s.status.as_str()).collect();
    let reasons: Vec<Option<&str>> = sagas.iter().map(|(s, _)| s.reason.as_deref()).collect();
    let started: Vec<DateTime<Utc>> = sagas.iter().map(|(s, _)| s.started_at).collect();
    let updated: Vec<DateTime<Utc>> = sagas.iter().map(|(s, _)| s.updated_at).collect();
    let ended: Vec<Option<DateTime<Utc>>> = sagas.iter().map(|(s, _)| s.ended_at).collect();
    let versions: Vec<i64> = sagas.iter().map(|(_, v)| *v).collect();
    sqlx::query(
        "INSERT INTO sagas (saga_id, order_id, customer_id, status, reason, started_at, updated_at, ended_at, version) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], \
         $7::timestamptz[], $8::timestamptz[], $9::bigint[]) \
         ON CONFLICT (saga_id) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason, \
         updated_at = EXCLUDED.updated_at, ended_at = EXCLUDED.ended_at, version = EXCLUDED.version",
    )
    .bind(&ids)
    .bind(&orders)
    .bind(&customers)
    .bind(&statuses)
    .bind(&reasons)
    .bind(&started)
    .bind(&updated)
    .bind(&ended)
    .bind(&versions)
    .execute(conn)
    .await?;
    Ok(())
}

/// Seconds from start to end of a finished saga.
pub fn duration_secs(saga: &Saga, ended: DateTime<Utc>) -> f64 {
    (ended - saga.started_at).num_microseconds().unwrap_or(0) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use contracts::{Address, PaymentMethod, order::OrderDetails, pricing::PricingArm};
    use persistence::pg;
    use saga::{Reply, Step};

    use super::*;

    fn order() -> OrderDetails {
        OrderDetails {
            order_id: Uuid::now_v7(),
            customer_id: "alice".into(),
            pet_id: "pet-1".into(),
            amount: rust_decimal::Decimal::new(1_000, 2),
            currency: "USD".into(),
            shipping_address: Address {
                street: "1 Main St".into(),
                city: "Springfield".into(),
                postal_code: "49007".into(),
                country: "US".into(),
            },
            payment_method: PaymentMethod::CreditCard,
            special_instructions: None,
            pricing_arm: PricingArm::default(),
            express: false,
        }
    }

    /// The orchestrator's schema in a fresh database.
    async fn saga_schema() -> sqlx::PgPool {
        let url = kit::testing::fresh_database().await;
        let pool = pg::connect(&url, SERVICE, 4, Duration::from_secs(5)).await.expect("connect");
        pg::migrate(&pool, SERVICE, &crate::MIGRATOR).await.expect("migrate");
        pool
    }

    /// A message with a fresh id, to move a saga on behalf of.
    fn cause(n: u32) -> Envelope {
        let ctx = MessageContext::default();
        let mut message =
            Envelope::from_message("/t", &contracts::inventory::GetPetStatus { pet_id: n.to_string() }, &ctx)
                .expect("envelope");
        message.id = Uuid::now_v7();
        message
    }

    /// Transitions queued together are committed in one batch: twenty sagas start side by side,
    /// a saga moved twice in one batch moves on from where the first move left it (its log and
    /// projection agree), and a second copy of a message in the batch changes nothing.
    #[tokio::test]
    async fn transitions_committed_together_keep_each_saga_whole() {
        let pool = saga_schema().await;
        let store = SagaStore::new(Storage::postgres(pool.clone(), SERVICE), "/a");

        // All queued before a committer first runs (a current-thread runtime runs them only
        // when this task waits), so they share transactions.
        let orders: Vec<(Uuid, OrderDetails)> = (0..20).map(|_| (Uuid::now_v7(), order())).collect();
        let starts = orders.iter().enumerate().map(|(n, (saga_id, order))| {
            let (saga_id, order) = (*saga_id, order.clone());
            let message = cause(u32::try_from(n).expect("small"));
            let store = store.clone();
            async move { store.advance(&message, saga_id, move |_| Saga::start(saga_id, order.clone(), None)).await }
        });
        for started in futures::future::join_all(starts).await {
            assert!(started.expect("start").is_some(), "every saga started");
        }
        let batches: i64 = sqlx::query_scalar("SELECT count(DISTINCT xmin::text::bigint) FROM orchestrator.sagas")
            .fetch_one(&pool)
            .await
            .expect("transactions");
        assert!(batches < 20, "twenty starts took {batches} transactions");

        let saga_id = orders[0].0;
        let started_at: i64 = sqlx::query_scalar("SELECT version FROM sagas WHERE saga_id = $1")
            .bind(saga_id)
            .fetch_one(&pool)
            .await
            .expect("version after the start");
        let reply =
            |step: Step| move |s: Option<&Saga>| s.map(|s| s.on_reply(&Reply::Succeeded(step))).unwrap_or_default();
        let twice = cause(100);
        let (first, second, copy) = futures::future::join3(
            store.advance(&twice, saga_id, reply(Step::ReservePet)),
            store.advance(&cause(101), saga_id, reply(Step::ProcessPayment)),
            store.advance(&twice, saga_id, reply(Step::ReservePet)),
        )
        .await;
        assert!(first.expect("first").is_some() && second.expect("second").is_some(), "both replies moved the saga");
        assert!(copy.expect("copy").is_none(), "the second copy of a message changed nothing");

        let saga = store.get(saga_id).await.expect("read").expect("saga");
        let done: Vec<Step> = saga.steps.iter().filter(|s| s.finished_at.is_some()).map(|s| s.step).collect();
        assert_eq!(done, [Step::ReservePet, Step::ProcessPayment], "{saga:?}");
        let mut conn = pool.acquire().await.expect("conn");
        let log = EVENTS.load::<StoredEvent>(&mut conn, saga_id).await.expect("log");
        let versions: Vec<i64> = log.iter().map(|r| r.version).collect();
        assert_eq!(versions, (1..=expected(&log)).collect::<Vec<_>>(), "one gapless history");
        let projected: i64 = sqlx::query_scalar("SELECT version FROM sagas WHERE saga_id = $1")
            .bind(saga_id)
            .fetch_one(&mut *conn)
            .await
            .expect("projection");
        assert_eq!(projected, expected(&log), "the projection is at the log's version");
        let replies_in: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT xmin::text) FROM saga_events WHERE aggregate_id = $1 AND version > $2",
        )
        .bind(saga_id)
        .bind(started_at)
        .fetch_one(&mut *conn)
        .await
        .expect("transactions");
        assert_eq!(replies_in, 1, "both replies were committed in one transaction, not redone one by one");
    }

    /// Two orchestrator instances on one database: a request waiting in one hears of the end
    /// of a saga the other ended at the next look for all waiting requests — long before it
    /// would look again on its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_request_wakes_when_another_instance_ends_the_saga() {
        let pool = saga_schema().await;
        let storage = || Storage::postgres(pool.clone(), SERVICE);
        let (ending, waiting) = (SagaStore::new(storage(), "/a"), SagaStore::new(storage(), "/b"));
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(waiting.clone().follow_ends(shutdown.clone()));

        let (saga_id, order) = (Uuid::now_v7(), order());
        let order_id = order.order_id;
        ending.advance(&cause(0), saga_id, move |_| Saga::start(saga_id, order.clone(), None)).await.expect("start");
        // Let the listener start listening (its first connection), then wait in the other instance.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let waiter = tokio::spawn({
            let waiting = waiting.clone();
            async move {
                let asked = tokio::time::Instant::now();
                let saga = waiting.wait_for_end(order_id, Duration::from_secs(20)).await.expect("wait");
                (saga, asked.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let failed = Reply::Failed(Step::ReservePet, "sold".into());
        ending
            .advance(&cause(1), saga_id, move |s| s.map(|s| s.on_reply(&failed)).unwrap_or_default())
            .await
            .expect("fail");
        ending
            .advance(&cause(2), saga_id, |s| s.map(|s| s.on_reply(&Reply::NoticeSent)).unwrap_or_default())
            .await
            .expect("notice");
        let ended = ending.for_order(order_id).await.expect("read").expect("saga");
        assert!(ended.ended_at.is_some(), "the saga ended: {ended:?}");

        let (saga, took) = waiter.await.expect("waiter");
        assert!(saga.is_some_and(|s| s.ended_at.is_some()), "the waiter saw the end");
        assert!(took < RECHECK, "woken by the instance's look for ended sagas after {took:?}, not by its own");
        shutdown.cancel();
    }
}
