//! PostgreSQL: one schema per service (every connection of a service's pool has its
//! `search_path` set to it), migrations embedded and run at start-up, and the outbox, inbox
//! and event store inside the service's own transactions.

use std::{str::FromStr, sync::LazyLock, time::Duration};

use async_trait::async_trait;
use futures::future::join_all;
use messaging::Envelope;
use sqlx::{
    PgConnection, PgPool, Row,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use crate::{DomainEvent, OutboxSink, OutboxStore, Outgoing, Recorded, StoreError};

/// Migrations every service schema gets: outbox, inbox, audit log.
static COMMON: Migrator = sqlx::migrate!("../../db/common");

/// Opens a pool whose connections work in `schema` and cancel any statement that runs longer
/// than `statement_timeout`.
pub async fn connect(
    url: &str,
    schema: &str,
    max_connections: u32,
    statement_timeout: Duration,
) -> Result<PgPool, StoreError> {
    let timeout = format!("{}ms", statement_timeout.as_millis().max(1));
    let options = PgConnectOptions::from_str(url)?
        .options([("search_path", schema), ("statement_timeout", timeout.as_str())])
        .application_name(&format!("petstore-{schema}"));
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Creates `schema` if needed and applies the common migrations and then the service's own.
/// Each set keeps its history in its own table inside the schema.
pub async fn migrate(pool: &PgPool, schema: &str, service: &Migrator) -> Result<(), StoreError> {
    for (migrator, table) in [(&COMMON, "_migrations_common"), (service, "_migrations")] {
        let mut migrator = Migrator { migrations: migrator.migrations.clone(), ..Migrator::DEFAULT };
        migrator.create_schema(schema.to_owned());
        migrator.dangerous_set_table_name(format!("\"{schema}\".{table}"));
        migrator.run(pool).await?;
    }
    Ok(())
}

/// Counts commits of transactions that may have written to an outbox in this process; the
/// relays wait on it. In-process on purpose: PostgreSQL's `NOTIFY` takes one cluster-wide
/// lock from the commit of a notifying transaction until its WAL is flushed, which made every
/// writing transaction of every service wait for the others' flushes in turn. A replica's
/// relay that misses a wake-up (the rows were written by another replica) finds the rows at
/// its next poll.
static OUTBOX_WRITTEN: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Commits `tx` and wakes this process's outbox relays: how every transaction that puts
/// messages in an outbox ends.
pub async fn commit(tx: sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), StoreError> {
    tx.commit().await?;
    OUTBOX_WRITTEN.send_modify(|n| *n = n.wrapping_add(1));
    Ok(())
}

/// Puts `envelope` in the outbox, inside the caller's transaction.
pub async fn enqueue(conn: &mut PgConnection, channel: &str, envelope: &Envelope) -> Result<(), StoreError> {
    let json = envelope.to_json().map_err(|e| StoreError::Codec(e.to_string()))?;
    sqlx::query("INSERT INTO outbox (message_id, channel, envelope) VALUES ($1, $2, $3)")
        .bind(envelope.id)
        .bind(channel)
        .bind(json)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that `consumer` processed `message`, inside the caller's transaction. Returns
/// false when it already had: the caller must then skip the message.
pub async fn record_in_inbox(conn: &mut PgConnection, consumer: &str, message: &Envelope) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, message_id, message_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(message.id)
    .bind(&message.event_type)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Handles `message` once for `consumer`: in one transaction, records it in the inbox, runs
/// `work` (which changes state and says what to publish) and puts the outgoing messages in
/// the outbox. Returns `None` without running `work` when the message was handled before.
pub async fn handle_once<T>(
    pool: &PgPool,
    consumer: &str,
    message: &Envelope,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<(T, Vec<Outgoing>), StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut tx = pool.begin().await?;
    if !record_in_inbox(&mut tx, consumer, message).await? {
        return Ok(None);
    }
    let (value, outgoing) = work(&mut tx).await?;
    enqueue_all(&mut tx, &outgoing).await?;
    commit(tx).await?;
    Ok(Some(value))
}

/// Runs `work` (which changes state and says what to publish) and puts the outgoing
/// messages in the outbox, in one transaction: a change not caused by a message (a request,
/// a timer).
pub async fn write<T>(
    pool: &PgPool,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<(T, Vec<Outgoing>), StoreError>,
) -> Result<T, StoreError> {
    let mut tx = pool.begin().await?;
    let (value, outgoing) = work(&mut tx).await?;
    enqueue_all(&mut tx, &outgoing).await?;
    commit(tx).await?;
    Ok(value)
}

/// Puts every outgoing message in the outbox, inside the caller's transaction: one statement
/// for all of them.
pub async fn enqueue_all(conn: &mut PgConnection, outgoing: &[Outgoing]) -> Result<(), StoreError> {
    match outgoing {
        [] => Ok(()),
        [one] => enqueue(conn, &one.channel, &one.envelope).await,
        many => {
            let mut ids = Vec::with_capacity(many.len());
            let mut channels = Vec::with_capacity(many.len());
            let mut envelopes = Vec::with_capacity(many.len());
            for o in many {
                ids.push(o.envelope.id);
                channels.push(o.channel.as_str());
                envelopes.push(o.envelope.to_json().map_err(|e| StoreError::Codec(e.to_string()))?);
            }
            // WITH ORDINALITY: `seq` follows the order of `outgoing`, the order they leave in.
            sqlx::query(
                "INSERT INTO outbox (message_id, channel, envelope) \
                 SELECT id, channel, envelope FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[]) \
                 WITH ORDINALITY AS m(id, channel, envelope, n) ORDER BY n",
            )
            .bind(&ids)
            .bind(&channels)
            .bind(&envelopes)
            .execute(conn)
            .await?;
            Ok(())
        }
    }
}

/// The outbox of one schema, drained by [`crate::run_relay`].
pub struct PgOutbox {
    pool: PgPool,
    /// Commits seen so far (see [`commit`]).
    written: Mutex<watch::Receiver<u64>>,
}

impl PgOutbox {
    /// The outbox of the schema `pool`'s connections work in.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, written: Mutex::new(OUTBOX_WRITTEN.subscribe()) }
    }
}

#[async_trait]
impl OutboxStore for PgOutbox {
    async fn relay(&self, max: usize, sink: &dyn OutboxSink) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One relay per schema at a time, so that messages leave in commit order even with
        // several replicas of the service: the lock and the read in one round trip (a
        // replica that does not get the lock reads nothing).
        let rows = sqlx::query(
            "WITH relay AS (SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.outbox')) AS leader) \
             SELECT seq, channel, envelope FROM outbox, relay WHERE relay.leader ORDER BY seq LIMIT $1",
        )
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let mut batch = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get("seq")?;
            let channel: String = row.try_get("channel")?;
            let json: serde_json::Value = row.try_get("envelope")?;
            let envelope =
                Envelope::from_json(&json).map_err(|e| StoreError::Codec(format!("outbox row {seq}: {e}")))?;
            batch.push((seq, channel, envelope));
        }
        // One lane per channel and partition key, all lanes in flight at once: the batch costs
        // about one round trip, not one per message, and each lane's first publish is enqueued
        // in commit order when first polled (Kafka's idempotent producer keeps that order per
        // partition). Within a lane messages leave one after the other, and a failure holds
        // back the rest of its lane for a later round: a message never overtakes an earlier
        // one of its key, even when the transport fails for one of them.
        let mut lanes: Vec<Vec<&(i64, String, Envelope)>> = Vec::new();
        let mut lane_of: std::collections::HashMap<(&str, Option<&str>), usize> = std::collections::HashMap::new();
        for row in &batch {
            let key = (row.1.as_str(), row.2.partition_key.as_deref());
            let lane = *lane_of.entry(key).or_insert_with(|| {
                lanes.push(Vec::new());
                lanes.len() - 1
            });
            lanes[lane].push(row);
        }
        let results = join_all(lanes.iter().map(|lane| async move {
            let mut delivered = Vec::with_capacity(lane.len());
            for (seq, channel, envelope) in lane {
                if let Err(e) = sink.deliver(channel, envelope).await {
                    let held = lane.len() - delivered.len() - 1;
                    let why =
                        format!("publishing outbox row {seq} to {channel} ({held} later of its key held back): {e}");
                    return (delivered, Some(why));
                }
                delivered.push(*seq);
            }
            (delivered, None)
        }))
        .await;
        let mut delivered = Vec::with_capacity(batch.len());
        let mut failure = None;
        for (sent, error) in results {
            delivered.extend(sent);
            if let (Some(e), None) = (error, &failure) {
                failure = Some(StoreError::Codec(e));
            }
        }
        if !delivered.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)").bind(&delivered).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(delivered.len()),
        }
    }

    async fn wait_for_messages(&self, timeout: Duration) {
        let mut written = self.written.lock().await;
        // Returns at once when a commit came since the last look.
        let _ = tokio::time::timeout(timeout, written.changed()).await;
    }

    async fn backlog(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&self.pool).await?)
    }
}

/// An append-only event table: `(aggregate_id, version)` is the primary key, so two writers
/// appending the same version conflict and one of them gets [`StoreError::Conflict`].
#[derive(Debug, Clone, Copy)]
pub struct EventTable(&'static str);

impl EventTable {
    /// The event table named `name` (a trusted identifier, never user input).
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    /// Appends `events` after `expected_version` (0 for a new aggregate), recorded at `at`;
    /// returns the new version.
    pub async fn append<E: DomainEvent>(
        &self,
        conn: &mut PgConnection,
        aggregate_id: Uuid,
        expected_version: i64,
        events: &[E],
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<i64, StoreError> {
        let rows: Vec<Recorded<&E>> = (1..)
            .zip(events)
            .map(|(n, event)| Recorded { aggregate_id, version: expected_version + n, recorded_at: at, event })
            .collect();
        self.append_all(conn, &rows).await.map_err(|e| match e {
            StoreError::Conflict { .. } => StoreError::Conflict { aggregate: aggregate_id, expected: expected_version },
            other => other,
        })?;
        Ok(rows.last().map_or(expected_version, |r| r.version))
    }

    /// Appends events of any number of aggregates in one statement, each at the version it
    /// names (the next of its aggregate). When one of those versions is taken, nothing is
    /// appended and the error is a [`StoreError::Conflict`] about that aggregate.
    pub async fn append_all<E: DomainEvent>(
        &self,
        conn: &mut PgConnection,
        events: &[Recorded<&E>],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(events.len());
        let mut versions = Vec::with_capacity(events.len());
        let mut types = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        let mut ats = Vec::with_capacity(events.len());
        for e in events {
            ids.push(e.aggregate_id);
            versions.push(e.version);
            types.push(e.event.event_type());
            payloads.push(serde_json::to_value(e.event).map_err(|e| StoreError::Codec(e.to_string()))?);
            ats.push(e.recorded_at);
        }
        // One statement for all the events, inserted in the order given (their `seq` order).
        let sql = format!(
            "INSERT INTO {} (aggregate_id, version, event_type, payload, recorded_at) \
             SELECT id, version, event_type, payload, at \
             FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::jsonb[], $5::timestamptz[]) \
             WITH ORDINALITY AS e(id, version, event_type, payload, at, n) ORDER BY n",
            self.0
        );
        let result = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&ids)
            .bind(&versions)
            .bind(&types)
            .bind(&payloads)
            .bind(&ats)
            .execute(&mut *conn)
            .await;
        if let Err(sqlx::Error::Database(db)) = &result
            && db.is_unique_violation()
        {
            // Which aggregate: the one whose version is taken, as PostgreSQL names it.
            let detail = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().and_then(|e| e.detail());
            let taken = events.iter().find(|e| detail.is_some_and(|d| d.contains(&e.aggregate_id.to_string())));
            let first = taken.unwrap_or(&events[0]);
            return Err(StoreError::Conflict { aggregate: first.aggregate_id, expected: first.version - 1 });
        }
        result?;
        Ok(())
    }

    /// The histories of `aggregate_ids`, each oldest first, in one query; an aggregate without
    /// events has no entry.
    pub async fn load_all_of<E: DomainEvent>(
        &self,
        conn: &mut PgConnection,
        aggregate_ids: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, Vec<Recorded<E>>>, StoreError> {
        let sql = format!(
            "SELECT aggregate_id, version, recorded_at, payload FROM {} WHERE aggregate_id = ANY($1) \
             ORDER BY aggregate_id, version",
            self.0
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(aggregate_ids).fetch_all(conn).await?;
        let mut histories: std::collections::HashMap<Uuid, Vec<Recorded<E>>> = std::collections::HashMap::new();
        for row in &rows {
            let recorded: Recorded<E> = decode_row(row)?;
            histories.entry(recorded.aggregate_id).or_default().push(recorded);
        }
        Ok(histories)
    }

    /// The aggregate's history, oldest first.
    pub async fn load<E: DomainEvent>(
        &self,
        conn: &mut PgConnection,
        aggregate_id: Uuid,
    ) -> Result<Vec<Recorded<E>>, StoreError> {
        self.history(conn, "$1", aggregate_id).await
    }

    /// The history of the aggregate that `find` (a trusted statement, never user input,
    /// taking `$1` and returning at most one id) finds for `key`, oldest first: a lookup by
    /// another key and the load in one round trip.
    pub async fn load_found<E: DomainEvent>(
        &self,
        conn: &mut PgConnection,
        find: &'static str,
        key: Uuid,
    ) -> Result<Vec<Recorded<E>>, StoreError> {
        self.history(conn, &format!("({find})"), key).await
    }

    /// The history of the aggregate whose id is `id` (an SQL expression of `$1`, bound to `key`).
    async fn history<E: DomainEvent>(
        &self,
        conn: &mut PgConnection,
        id: &str,
        key: Uuid,
    ) -> Result<Vec<Recorded<E>>, StoreError> {
        let sql = format!(
            "SELECT aggregate_id, version, recorded_at, payload FROM {} WHERE aggregate_id = {id} ORDER BY version",
            self.0
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key).fetch_all(conn).await?;
        rows.iter().map(decode_row).collect()
    }

    /// Every event of every aggregate in the order they were appended, for rebuilding
    /// projections.
    pub async fn load_all<E: DomainEvent>(&self, conn: &mut PgConnection) -> Result<Vec<Recorded<E>>, StoreError> {
        let sql = format!("SELECT aggregate_id, version, recorded_at, payload FROM {} ORDER BY seq", self.0);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(conn).await?;
        rows.iter().map(decode_row).collect()
    }
}

fn decode_row<E: DomainEvent>(row: &sqlx::postgres::PgRow) -> Result<Recorded<E>, StoreError> {
    let payload: serde_json::Value = row.try_get("payload")?;
    Ok(Recorded {
        aggregate_id: row.try_get("aggregate_id")?,
        version: row.try_get("version")?,
        recorded_at: row.try_get("recorded_at")?,
        event: serde_json::from_value(payload).map_err(|e| StoreError::Codec(e.to_string()))?,
    })
}
