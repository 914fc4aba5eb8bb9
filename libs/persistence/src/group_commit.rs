//! Group commit: the messages a service handles at the same moment share one PostgreSQL
//! transaction. Each handler still waits for its own message's outcome, but the batch pays
//! for one `BEGIN`, one inbox insert, one statement per table the work writes, one outbox
//! insert and one commit (one WAL flush), instead of all of them per message.
//!
//! Batches form by themselves: a few committers take work from one queue; a committer that
//! is free takes everything waiting (up to a limit) at once. Alone, a message is committed
//! as soon as it arrives — nothing waits for a batch to fill — and under load, the messages
//! that arrive while the committers are busy make the next batch.
//!
//! A batch that fails is not failed for everyone: each of its jobs is then done again in a
//! transaction of its own, so one job's conflict or bad data is its own error and the others
//! are committed.

use std::{collections::HashSet, future::Future, sync::Arc};

use messaging::Envelope;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use crate::{Outgoing, StoreError, pg};

/// What a job gives back, with the messages it sends (the outbox takes them).
pub type Done<T> = (T, Vec<Outgoing>);

/// A job's output of any type, for its caller to downcast (see [`Transactions`]).
pub type AnyOutput = Box<dyn std::any::Any + Send>;

/// A service's part of handling messages, done for several at once inside one transaction:
/// load what the jobs need, decide, write.
pub trait BatchWork: Send + Sync + 'static {
    /// One message's (or one timer's) work.
    type Job: Send + Sync + 'static;
    /// What a job gives back to whoever asked for it.
    type Output: Send + 'static;

    /// Does `jobs` in order inside the transaction of `conn`: for each, its output and the
    /// messages it sends (the outbox takes them). Jobs may concern the same record; a later
    /// one must see what an earlier one did. An error fails the whole batch (and each job is
    /// then tried alone).
    fn run(
        &self,
        conn: &mut PgConnection,
        jobs: &[&Self::Job],
    ) -> impl Future<Output = Result<Vec<Done<Self::Output>>, StoreError>> + Send;
}

/// How many transactions a service's committers run at once, and how large a batch may grow.
#[derive(Debug, Clone, Copy)]
pub struct Committers {
    /// Committers (transactions at once). More than one, so that a batch forms while another
    /// one commits.
    pub count: usize,
    /// The most jobs in one transaction.
    pub max_batch: usize,
}

impl Default for Committers {
    fn default() -> Self {
        Self { count: 4, max_batch: 64 }
    }
}

/// One job waiting for a committer: the message that caused it (recorded in the inbox), if
/// any, and where its outcome goes.
struct Pending<W: BatchWork> {
    message: Option<(&'static str, Envelope)>,
    job: W::Job,
    done: oneshot::Sender<Result<Option<W::Output>, StoreError>>,
}

/// The queue of a service's committers (see the module documentation). Cloning it shares
/// the queue; the committers stop when the last clone is dropped.
pub struct GroupCommit<W: BatchWork> {
    queue: mpsc::UnboundedSender<Pending<W>>,
}

impl<W: BatchWork> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<W: BatchWork> GroupCommit<W> {
    /// Starts `committers` on the current runtime, committing `work` through `pool`.
    pub fn start(pool: PgPool, work: W, committers: Committers) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        let max_batch = committers.max_batch.max(1);
        let shared = Arc::new(Shared { pool, work, jobs: Mutex::new(jobs), max_batch });
        for _ in 0..committers.count.max(1) {
            tokio::spawn(shared.clone().commit_batches());
        }
        Self { queue }
    }

    /// Does `job` for `message` once for `consumer`: `None` when the consumer handled the
    /// message before (the job is not done again).
    pub async fn handle_once(
        &self,
        consumer: &'static str,
        message: Envelope,
        job: W::Job,
    ) -> Result<Option<W::Output>, StoreError> {
        self.submit(Some((consumer, message)), job).await
    }

    /// Does `job`, caused by no message (a request, a timer).
    pub async fn write(&self, job: W::Job) -> Result<W::Output, StoreError> {
        // A job without a message always runs: no output would be a committer's bug.
        self.submit(None, job).await?.ok_or_else(|| StoreError::Invariant("a write gave no outcome".into()))
    }

    async fn submit(
        &self,
        message: Option<(&'static str, Envelope)>,
        job: W::Job,
    ) -> Result<Option<W::Output>, StoreError> {
        let (done, outcome) = oneshot::channel();
        self.queue.send(Pending { message, job, done }).map_err(|_| StoreError::Stopped)?;
        outcome.await.map_err(|_| StoreError::Stopped)?
    }
}

struct Shared<W: BatchWork> {
    pool: PgPool,
    work: W,
    jobs: Mutex<mpsc::UnboundedReceiver<Pending<W>>>,
    max_batch: usize,
}

impl<W: BatchWork> Shared<W> {
    /// One committer: takes what waits, commits it, hands out the outcomes; ends when the
    /// queue's last sender is gone.
    async fn commit_batches(self: Arc<Self>) {
        loop {
            let batch = {
                let mut jobs = self.jobs.lock().await;
                let Some(first) = jobs.recv().await else { return };
                let mut batch = vec![first];
                while batch.len() < self.max_batch
                    && let Ok(next) = jobs.try_recv()
                {
                    batch.push(next);
                }
                batch
            };
            metrics::histogram!("petstore_db_batch_jobs").record(batch.len() as f64);
            if batch.len() == 1 {
                self.alone(batch).await;
                continue;
            }
            match self.together(&batch).await {
                Ok(outputs) => {
                    for (pending, output) in batch.into_iter().zip(outputs) {
                        let _ = pending.done.send(Ok(output));
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, jobs = batch.len(), "a batch failed; its jobs are tried one by one");
                    self.alone(batch).await;
                }
            }
        }
    }

    /// Each job in a transaction of its own.
    async fn alone(&self, batch: Vec<Pending<W>>) {
        for pending in batch {
            let outcome = self.together(std::slice::from_ref(&pending)).await;
            let outcome = outcome.map(|mut outputs| outputs.pop().flatten());
            let _ = pending.done.send(outcome);
        }
    }

    /// The jobs in one transaction: the inbox entries of their messages, the work of those not
    /// handled before, the outbox, the commit. One output per job (`None`: handled before).
    async fn together(&self, batch: &[Pending<W>]) -> Result<Vec<Option<W::Output>>, StoreError> {
        let started = std::time::Instant::now();
        let mut tx = self.pool.begin().await?;
        let begun = started.elapsed();
        let fresh = self.record_in_inbox(&mut tx, batch).await?;
        let recorded = started.elapsed();
        let todo: Vec<&W::Job> = batch.iter().zip(&fresh).filter(|(_, fresh)| **fresh).map(|(p, _)| &p.job).collect();
        let done = if todo.is_empty() { Vec::new() } else { self.work.run(&mut tx, &todo).await? };
        let worked = started.elapsed();
        if done.len() != todo.len() {
            return Err(StoreError::Invariant(format!("{} outcomes for {} jobs", done.len(), todo.len())));
        }
        let mut outputs = Vec::with_capacity(batch.len());
        let mut outgoing = Vec::new();
        let mut done = done.into_iter();
        for fresh in fresh {
            let output = match fresh {
                true => done.next().map(|(output, sent)| {
                    outgoing.extend(sent);
                    output
                }),
                false => None,
            };
            outputs.push(output);
        }
        pg::enqueue_all(&mut tx, &outgoing).await?;
        let queued = started.elapsed();
        pg::commit(tx).await?;
        let took = started.elapsed();
        metrics::histogram!("petstore_db_batch_seconds").record(took.as_secs_f64());
        tracing::debug!(
            jobs = batch.len(),
            ?begun,
            ?recorded,
            ?worked,
            ?queued,
            ?took,
            "batch committed (times since the start: connection, inbox, work, outbox, commit)"
        );
        Ok(outputs)
    }

    /// Records the messages of `batch` in the inbox, in one statement; for each job, whether
    /// its work is to be done (no message, or a message not handled before — the first of
    /// two copies in one batch).
    async fn record_in_inbox(&self, conn: &mut PgConnection, batch: &[Pending<W>]) -> Result<Vec<bool>, StoreError> {
        let messages: Vec<(&'static str, &Envelope)> =
            batch.iter().filter_map(|p| p.message.as_ref().map(|(c, m)| (*c, m))).collect();
        let new: HashSet<(&str, Uuid)> = match messages.as_slice() {
            [] => HashSet::new(),
            [(consumer, one)] => match pg::record_in_inbox(conn, consumer, one).await? {
                true => HashSet::from([(*consumer, one.id)]),
                false => HashSet::new(),
            },
            many => {
                let consumers: Vec<&str> = many.iter().map(|(c, _)| *c).collect();
                let ids: Vec<Uuid> = many.iter().map(|(_, m)| m.id).collect();
                let types: Vec<&str> = many.iter().map(|(_, m)| m.event_type.as_str()).collect();
                let rows: Vec<(String, Uuid)> = sqlx::query_as(
                    "INSERT INTO inbox (consumer, message_id, message_type) \
                     SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::text[]) \
                     ON CONFLICT DO NOTHING RETURNING consumer, message_id",
                )
                .bind(&consumers)
                .bind(&ids)
                .bind(&types)
                .fetch_all(conn)
                .await?;
                // Back to the consumers' own names (they outlive the batch).
                rows.into_iter().filter_map(|(c, id)| consumers.iter().find(|k| **k == c).map(|k| (*k, id))).collect()
            }
        };
        let mut claimed = HashSet::with_capacity(new.len());
        Ok(batch
            .iter()
            .map(|p| match &p.message {
                None => true,
                Some((c, m)) => new.contains(&(*c, m.id)) && claimed.insert((*c, m.id)),
            })
            .collect())
    }
}

/// A job that does its own statements in the shared transaction (see [`Transactions`]).
pub trait TxJob: Send + Sync + 'static {
    /// Does the job inside the transaction of `conn`: what it gives back (for its caller to
    /// downcast) and the messages it sends. May be called again if its batch fails.
    fn run<'a>(
        &'a self,
        conn: &'a mut PgConnection,
    ) -> futures::future::BoxFuture<'a, Result<Done<AnyOutput>, StoreError>>;
}

/// Jobs of any kind that each do their own statements, one after the other in one
/// transaction: the batch still shares the `BEGIN`, the inbox insert, the outbox insert and
/// the commit. A later job sees what an earlier one wrote (the same transaction).
pub struct Transactions;

impl BatchWork for Transactions {
    type Job = Box<dyn TxJob>;
    type Output = AnyOutput;

    async fn run(&self, conn: &mut PgConnection, jobs: &[&Box<dyn TxJob>]) -> Result<Vec<Done<AnyOutput>>, StoreError> {
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            outcomes.push(job.run(conn).await?);
        }
        Ok(outcomes)
    }
}
