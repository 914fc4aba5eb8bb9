//! Where dead letters are kept: the `dead_letters` table of the orchestrator's schema, or its
//! in-memory twin. A letter is recorded through the inbox; a replay sets `replayed_at` and
//! puts the message in the orchestrator's outbox in one transaction.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use chrono::{DateTime, SubsecRound, Utc};
use messaging::{Bus, DeadLetter, Envelope};
use persistence::{
    Storage, StoreError,
    memory::{MemoryInbox, MemoryOutbox},
    pg,
};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use utoipa::ToSchema;
use uuid::Uuid;

/// The inbox consumer that records dead letters (apart from the saga handler's entries).
const CONSUMER: &str = "orchestrator.dead-letters";

const COLUMNS: &str = "id, channel, consumer_group, error, attempts, dead_lettered_at, replayed_at, replay_count, \
                       message_type, message";

/// A dead letter as stored and as `GET /admin/dlq` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoredLetter {
    /// The dead-lettered message's id.
    pub id: Uuid,
    /// The channel it was consumed from, where a replay publishes it.
    pub channel: String,
    /// The consumer group that gave up on it.
    pub group: String,
    /// The handler's last error.
    pub error: String,
    /// Handler attempts before the bus gave up.
    pub attempts: u32,
    /// When it was (last) dead-lettered.
    pub dead_lettered_at: DateTime<Utc>,
    /// When it was last replayed since then; `None` while it waits for an operator.
    pub replayed_at: Option<DateTime<Utc>>,
    /// Replays so far.
    pub replay_count: u32,
    /// The message's CloudEvents `type`.
    pub message_type: String,
    /// The original message, CloudEvents JSON.
    #[schema(value_type = Object)]
    pub message: serde_json::Value,
}

impl StoredLetter {
    fn of(letter: &DeadLetter) -> Result<Self, StoreError> {
        Ok(Self {
            id: letter.message.id,
            channel: letter.channel.clone(),
            group: letter.group.clone(),
            error: letter.error.clone(),
            attempts: letter.attempts,
            // A letter from a bus that did not stamp it: the message's own time, which at
            // least stays the same when the letter is redelivered.
            dead_lettered_at: letter.dead_lettered_at.unwrap_or(letter.message.time).trunc_subsecs(6),
            replayed_at: None,
            replay_count: 0,
            message_type: letter.message.event_type.clone(),
            message: letter.message.to_json().map_err(codec)?,
        })
    }

    /// The message to publish when the letter is replayed at `at`.
    fn replay_message(&self, at: DateTime<Utc>) -> Result<Envelope, StoreError> {
        let letter = DeadLetter {
            message: Envelope::from_json(&self.message).map_err(codec)?,
            error: self.error.clone(),
            attempts: self.attempts,
            channel: self.channel.clone(),
            group: self.group.clone(),
            dead_lettered_at: Some(self.dead_lettered_at),
        };
        Ok(letter.to_replay(at))
    }

    fn from_row(row: &PgRow) -> Result<Self, StoreError> {
        let attempts: i64 = row.try_get("attempts")?;
        let replay_count: i32 = row.try_get("replay_count")?;
        Ok(Self {
            id: row.try_get("id")?,
            channel: row.try_get("channel")?,
            group: row.try_get("consumer_group")?,
            error: row.try_get("error")?,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            dead_lettered_at: row.try_get("dead_lettered_at")?,
            replayed_at: row.try_get("replayed_at")?,
            replay_count: u32::try_from(replay_count).unwrap_or(0),
            message_type: row.try_get("message_type")?,
            message: row.try_get("message")?,
        })
    }

    /// Where this letter sorts in the newest-first listing.
    pub fn position(&self) -> (DateTime<Utc>, Uuid) {
        (self.dead_lettered_at, self.id)
    }

    /// Takes in another dead-lettering of the same message: a newer one replaces this one
    /// (the replay count kept) and waits for a replay again; an older one changes nothing.
    fn absorb(&mut self, newer: StoredLetter) {
        if newer.dead_lettered_at > self.dead_lettered_at {
            *self = StoredLetter { replay_count: self.replay_count, ..newer };
        }
    }
}

fn codec(e: impl std::fmt::Display) -> StoreError {
    StoreError::Codec(e.to_string())
}

/// Which letters `GET /admin/dlq` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this channel's.
    pub channel: Option<String>,
    /// Only replayed (`true`) or only waiting (`false`) letters.
    pub replayed: Option<bool>,
    /// Only letters after this position in the newest-first order (a page's cursor).
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

impl Filter {
    fn matches(&self, letter: &StoredLetter) -> bool {
        self.channel.as_ref().is_none_or(|c| *c == letter.channel)
            && self.replayed.is_none_or(|r| r == letter.replayed_at.is_some())
            && self.after.is_none_or(|after| letter.position() < after)
    }
}

/// A replay as `POST /admin/dlq/{id}/replay` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Replay {
    /// The letter.
    pub id: Uuid,
    /// When it was replayed.
    pub replayed_at: DateTime<Utc>,
    /// Replays so far.
    pub replay_count: u32,
}

/// What a replay request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// The message is in the outbox, on its way back to its channel.
    Replayed(Replay),
    /// The letter had been replayed since it was dead-lettered: nothing published again.
    AlreadyReplayed(Replay),
}

/// Why a replay was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No letter with that id.
    #[error("no dead letter {0}")]
    NotFound(Uuid),
    /// Its channel cannot take it back (unknown here, or request/response).
    #[error("dead letter {id} cannot be replayed: {why}")]
    NotReplayable {
        /// The letter.
        id: Uuid,
        /// Why not.
        why: String,
    },
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ReplayError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The dead letters, in PostgreSQL or in memory, and the bus their replays go back to.
#[derive(Clone)]
pub struct DeadLetterStore {
    backing: Backing,
    bus: Bus,
}

#[derive(Clone)]
enum Backing {
    Memory(Arc<MemoryLetters>),
    Postgres(PgPool),
}

/// The in-memory table with its inbox behind one lock, and the service's outbox.
struct MemoryLetters {
    state: Mutex<(HashMap<Uuid, StoredLetter>, MemoryInbox)>,
    outbox: Arc<MemoryOutbox>,
}

impl MemoryLetters {
    fn lock(&self) -> MutexGuard<'_, (HashMap<Uuid, StoredLetter>, MemoryInbox)> {
        // Every change is a single insert or field update: consistent even after a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DeadLetterStore {
    /// Keeps dead letters where the service keeps its state (in memory: beside it, with
    /// replays going to the same outbox); replays are checked against `bus`'s channels.
    pub fn new<S>(storage: &Storage<S>, bus: Bus) -> Self {
        let backing = match storage {
            Storage::Memory(memory) => Backing::Memory(Arc::new(MemoryLetters {
                state: Mutex::new((HashMap::new(), MemoryInbox::default())),
                outbox: memory.outbox(),
            })),
            Storage::Postgres { pool, .. } => Backing::Postgres(pool.clone()),
        };
        Self { backing, bus }
    }

    /// Whether `channel` is one of the bus's channels.
    pub fn has_channel(&self, channel: &str) -> bool {
        self.bus.has_channel(channel)
    }

    /// Records a dead letter once: `false` when this dead-lettering was recorded before (a
    /// redelivered letter). The same message dead-lettered again later (after a replay)
    /// updates its row and waits for a replay again.
    pub async fn record(&self, letter: &DeadLetter) -> Result<bool, StoreError> {
        let row = StoredLetter::of(letter)?;
        let mut key = letter.message.clone();
        key.id = inbox_key(row.id, row.dead_lettered_at);
        match &self.backing {
            Backing::Memory(memory) => {
                let mut guard = memory.lock();
                let (letters, inbox) = &mut *guard;
                if !inbox.record(CONSUMER, &key) {
                    return Ok(false);
                }
                match letters.get_mut(&row.id) {
                    Some(existing) => existing.absorb(row),
                    None => {
                        letters.insert(row.id, row);
                    }
                }
                Ok(true)
            }
            Backing::Postgres(pool) => {
                let recorded = pg::handle_once(pool, CONSUMER, &key, async |conn| {
                    upsert(conn, &row).await?;
                    Ok(((), Vec::new()))
                })
                .await?;
                Ok(recorded.is_some())
            }
        }
    }

    /// Up to `limit` letters matching `filter`, newest first.
    pub async fn list(&self, filter: &Filter, limit: usize) -> Result<Vec<StoredLetter>, StoreError> {
        match &self.backing {
            Backing::Memory(memory) => {
                let guard = memory.lock();
                let mut letters: Vec<StoredLetter> = guard.0.values().filter(|l| filter.matches(l)).cloned().collect();
                letters.sort_by_key(|l| std::cmp::Reverse(l.position()));
                letters.truncate(limit);
                Ok(letters)
            }
            Backing::Postgres(pool) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM dead_letters \
                     WHERE ($1::text IS NULL OR channel = $1) \
                       AND ($2::boolean IS NULL OR (replayed_at IS NOT NULL) = $2) \
                       AND ($3::timestamptz IS NULL OR (dead_lettered_at, id) < ($3, $4)) \
                     ORDER BY dead_lettered_at DESC, id DESC LIMIT $5"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&filter.channel)
                    .bind(filter.replayed)
                    .bind(filter.after.map(|(at, _)| at))
                    .bind(filter.after.map(|(_, id)| id))
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(StoredLetter::from_row).collect()
            }
        }
    }

    /// The letter `id`.
    pub async fn get(&self, id: Uuid) -> Result<Option<StoredLetter>, StoreError> {
        match &self.backing {
            Backing::Memory(memory) => Ok(memory.lock().0.get(&id).cloned()),
            Backing::Postgres(pool) => {
                let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?;
                row.as_ref().map(StoredLetter::from_row).transpose()
            }
        }
    }

    /// Replays the letter `id`: its message goes into the outbox for its channel, in the
    /// transaction that sets `replayed_at`. A letter replayed since it was dead-lettered is
    /// left alone unless `force`.
    pub async fn replay(&self, id: Uuid, force: bool) -> Result<ReplayOutcome, ReplayError> {
        match &self.backing {
            Backing::Memory(memory) => {
                let mut guard = memory.lock();
                let letter = guard.0.get_mut(&id).ok_or(ReplayError::NotFound(id))?;
                if let Some(done) = self.earlier_replay(letter, force, false) {
                    return Ok(done);
                }
                let (at, message) = self.prepare(letter)?;
                memory.outbox.enqueue(&letter.channel, message);
                letter.replayed_at = Some(at);
                letter.replay_count += 1;
                Ok(ReplayOutcome::Replayed(Replay { id, replayed_at: at, replay_count: letter.replay_count }))
            }
            Backing::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1 FOR UPDATE");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *tx).await?;
                let letter = row.as_ref().map(StoredLetter::from_row).transpose()?.ok_or(ReplayError::NotFound(id))?;
                // The outbox keeps one row per message id: a replay still waiting there is
                // the one a forced replay would add.
                let pending: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox WHERE message_id = $1)")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                if let Some(done) = self.earlier_replay(&letter, force, pending) {
                    return Ok(done);
                }
                let (at, message) = self.prepare(&letter)?;
                pg::enqueue(&mut tx, &letter.channel, &message).await?;
                let count: i32 = sqlx::query_scalar(
                    "UPDATE dead_letters SET replayed_at = $2, replay_count = replay_count + 1 \
                     WHERE id = $1 RETURNING replay_count",
                )
                .bind(id)
                .bind(at)
                .fetch_one(&mut *tx)
                .await?;
                pg::commit(tx).await?;
                let replay_count = u32::try_from(count).unwrap_or(0);
                Ok(ReplayOutcome::Replayed(Replay { id, replayed_at: at, replay_count }))
            }
        }
    }

    /// The answer to a replay request that must not publish again: the letter was replayed
    /// since it was dead-lettered and the caller does not `force` it, or that replay is still
    /// in the outbox.
    fn earlier_replay(&self, letter: &StoredLetter, force: bool, pending: bool) -> Option<ReplayOutcome> {
        let replayed_at = letter.replayed_at.filter(|_| !force || pending)?;
        Some(ReplayOutcome::AlreadyReplayed(Replay { id: letter.id, replayed_at, replay_count: letter.replay_count }))
    }

    /// The replay time and the message to publish, once the channel is known to take it.
    fn prepare(&self, letter: &StoredLetter) -> Result<(DateTime<Utc>, Envelope), ReplayError> {
        self.bus
            .check_replayable(&letter.channel)
            .map_err(|e| ReplayError::NotReplayable { id: letter.id, why: e.to_string() })?;
        let at = Utc::now().trunc_subsecs(6);
        Ok((at, letter.replay_message(at)?))
    }

    /// Per channel, the letters waiting for a replay and when the oldest was dead-lettered.
    pub async fn waiting(&self) -> Result<HashMap<String, (u64, DateTime<Utc>)>, StoreError> {
        match &self.backing {
            Backing::Memory(memory) => {
                let mut waiting: HashMap<String, (u64, DateTime<Utc>)> = HashMap::new();
                for letter in memory.lock().0.values().filter(|l| l.replayed_at.is_none()) {
                    let entry = waiting.entry(letter.channel.clone()).or_insert((0, letter.dead_lettered_at));
                    entry.0 += 1;
                    entry.1 = entry.1.min(letter.dead_lettered_at);
                }
                Ok(waiting)
            }
            Backing::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT channel, count(*) AS waiting, min(dead_lettered_at) AS oldest FROM dead_letters \
                     WHERE replayed_at IS NULL GROUP BY channel",
                )
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let count: i64 = row.try_get("waiting")?;
                        Ok((row.try_get("channel")?, (u64::try_from(count).unwrap_or(0), row.try_get("oldest")?)))
                    })
                    .collect()
            }
        }
    }
}

/// Inserts the letter, or updates its row when it is a newer dead-lettering of the message
/// (which then waits for a replay again); an older one changes nothing.
async fn upsert(conn: &mut PgConnection, letter: &StoredLetter) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO dead_letters \
           (id, channel, consumer_group, error, attempts, dead_lettered_at, message_type, message) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (id) DO UPDATE SET channel = EXCLUDED.channel, consumer_group = EXCLUDED.consumer_group, \
           error = EXCLUDED.error, attempts = EXCLUDED.attempts, dead_lettered_at = EXCLUDED.dead_lettered_at, \
           message_type = EXCLUDED.message_type, message = EXCLUDED.message, replayed_at = NULL \
         WHERE dead_letters.dead_lettered_at < EXCLUDED.dead_lettered_at",
    )
    .bind(letter.id)
    .bind(&letter.channel)
    .bind(&letter.group)
    .bind(&letter.error)
    .bind(i64::from(letter.attempts))
    .bind(letter.dead_lettered_at)
    .bind(&letter.message_type)
    .bind(&letter.message)
    .execute(conn)
    .await?;
    Ok(())
}

/// The inbox key of one dead-lettering of a message: its id with the first eight bytes XORed
/// with the dead-lettering time in microseconds. A redelivered letter has the same key; the
/// message dead-lettered again after a replay gets another one, so it is recorded again.
fn inbox_key(id: Uuid, dead_lettered_at: DateTime<Utc>) -> Uuid {
    let mut bytes = *id.as_bytes();
    for (byte, time) in bytes.iter_mut().zip(dead_lettered_at.timestamp_micros().to_be_bytes()) {
        *byte ^= time;
    }
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dead_lettering_of_a_message_has_its_own_inbox_key() {
        let id = Uuid::now_v7();
        let first = Utc::now();
        let again = first + chrono::Duration::microseconds(1);
        assert_eq!(inbox_key(id, first), inbox_key(id, first), "a redelivery is recognised");
        assert_ne!(inbox_key(id, first), inbox_key(id, again));
        assert_ne!(inbox_key(id, first), id);
    }
}
