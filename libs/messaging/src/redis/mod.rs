//! Redis streams backend through the `redis` crate (Redis 7 or later: `XAUTOCLAIM` must
//! report the pending entries it drops because they were trimmed).
//!
//! | bus concept | Redis |
//! |---|---|
//! | channel `c` | stream key `bus:c` (created by the first `XADD` or `XGROUP CREATE … MKSTREAM`) |
//! | publish | `XADD bus:c MAXLEN ~ <max_len> * ce_id … content-type … data …` on the shared connection |
//! | group `g` of `c` | consumer group `g` of the stream, created at `0` (`Earliest`) or `$` (`Latest`); every group reads the whole stream (pub/sub), consumers of one group share it (point-to-point) |
//! | `ensure_group` | `XGROUP CREATE bus:c g 0 MKSTREAM` |
//! | consumer | a unique consumer name in the group and its own connection for `XREADGROUP … BLOCK` |
//! | ack | `XACK` (the entry stays in the stream for the other groups) |
//! | close | the consumer's pending entries are moved to the group's `released` consumer with their idle time set far in the past, and the consumer is deleted; the next `XAUTOCLAIM` of any consumer of the group takes them at once |
//! | crash | the dead consumer's pending entries are taken over by `XAUTOCLAIM` once idle for `claim_idle_ms` |
//! | `remove` (the bus's reply channels on close) | `DEL bus:c` |
//! | private subscription | plain `XREAD … BLOCK` from `0` (`Earliest`) or the last entry (`Latest`), remembering the last id; no group, nothing acknowledged |
//!
//! Names: the key of a channel is `bus:` followed by the channel name as is (Redis keys and
//! group names are binary-safe), so distinct channels never share a key; group names are
//! used as is. Consumer names are random (UUID v7) and the `released` consumer holds what
//! closing consumers handed back. `partitions` has no Redis counterpart: one stream per
//! channel.
//!
//! Envelopes travel as the entry's fields in binary content mode: every attribute as
//! `ce_<name>`, the content type as `content-type`, the payload as `data`.
//!
//! Durability: `publish` returns once the server has appended the entry; groups, their
//! positions and pending entries live in the stream itself, so a consumer that restarts
//! (or crashes) loses nothing, whatever the server's persistence. A restart of the *server*
//! keeps them only as far as its persistence does: with AOF and `appendfsync always` every
//! acknowledged publish survives, with `everysec` up to a second can be lost, without
//! persistence everything is (a consumer then re-creates its group, empty). Replication is
//! asynchronous: a failover to a replica can lose the last acknowledged publishes. `durable`
//! is declared for a Redis configured with AOF persistence.
//!
//! Replay: a stream keeps its last `max_len` entries (approximately) whatever the groups
//! have read, so a new group with [`StartFrom::Earliest`] starts from the oldest entry still
//! retained. Trimming does not wait for groups: one that falls more than `max_len` entries
//! behind loses the oldest ones.
//!
//! Order: a stream is one log, so a group with a single consumer gets each key in
//! publication order. Competing consumers of one group take entries as they come, and a
//! redelivered entry comes after newer ones: per-key order across consumers is not kept,
//! hence `ordering_per_key: false`.
//!
//! The shared [`ConnectionManager`] (publish, ack, group management, health) reconnects by
//! itself; a consumer's own connection is reopened on its next `receive` after a failure.
//! Every `claim_idle_ms`, a consumer also deletes the group's consumers that hold nothing
//! and have been idle that long (dead instances), atomically in a script so that a consumer
//! that has just taken something is never deleted.

mod config;
mod publisher;
mod subscriber;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, FromRedisValue, RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
};
use async_trait::async_trait;

pub use self::config::RedisConfig;
use crate::sync::lock;
use crate::{Backend, BusError, Capabilities, Consumer, Envelope, Pattern, StartFrom, SubscribeOptions};

const NAME: &str = "redis";

/// Prefix of the stream key of every channel.
const KEY_PREFIX: &str = "bus:";

/// The Redis backend: one shared, self-reconnecting connection, plus one connection per
/// consumer for its blocking reads.
pub struct RedisBackend {
    shared: Arc<Shared>,
    /// Channels checked (or created) through this backend.
    declared: Mutex<HashSet<String>>,
    /// `(channel, group)` pairs whose group [`Backend::ensure_group`] made sure of.
    groups: Mutex<HashSet<(String, String)>>,
}

/// What the backend and its consumers share.
pub(super) struct Shared {
    config: RedisConfig,
    client: Client,
    manager: ConnectionManager,
    /// The URL without credentials, for messages.
    display_url: String,
}

/// A connection of one consumer, with the server's id of it (for `CLIENT UNBLOCK`).
pub(super) struct Dedicated {
    conn: MultiplexedConnection,
    id: i64,
}

/// The stream key of a channel.
fn stream_key(channel: &str) -> String {
    format!("{KEY_PREFIX}{channel}")
}

/// The first id a new group reads after: `0` for the whole stream, `$` for what comes next,
/// or the last possible id of the millisecond before a start time (stream ids begin with the
/// server's time in milliseconds).
fn group_start(start: StartFrom) -> String {
    match start {
        StartFrom::Earliest => "0".to_owned(),
        StartFrom::Latest => "$".to_owned(),
        StartFrom::Time(t) => before_time(t),
    }
}

/// The greatest stream id before `t`.
pub(super) fn before_time(t: chrono::DateTime<chrono::Utc>) -> String {
    match t.timestamp_millis() {
        ms if ms > 0 => format!("{}-{}", ms - 1, u64::MAX),
        _ => "0-0".to_owned(),
    }
}

/// Maps a client failure: what no retry can fix (a key of another type, refused access or
/// credentials, a reply the backend does not understand) is permanent, anything else
/// (connection loss, timeouts, a server loading or out of memory) transient.
fn redis_error(what: &str, error: &RedisError) -> BusError {
    let message = format!("{what}: {error}");
    let permanent = matches!(
        error.kind(),
        ErrorKind::AuthenticationFailed
            | ErrorKind::InvalidClientConfig
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::Client
    ) || matches!(error.code(), Some("WRONGTYPE" | "NOPERM" | "NOAUTH" | "WRONGPASS"));
    if permanent { BusError::permanent(NAME, message) } else { BusError::transient(NAME, message) }
}

impl Shared {
    /// Runs one command on the shared connection, bounded by the operation timeout: the
    /// server's answer, or `None` when it did not come in time.
    async fn call<T: FromRedisValue>(&self, cmd: &Cmd) -> Option<Result<T, RedisError>> {
        let mut conn = self.manager.clone();
        tokio::time::timeout(self.config.operation_timeout(), cmd.query_async(&mut conn)).await.ok()
    }

    /// Runs one command on the shared connection; errors say `what` failed.
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd, what: impl FnOnce() -> String) -> Result<T, BusError> {
        match self.call(cmd).await {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(redis_error(&what(), &e)),
            None => Err(self.no_answer(&what())),
        }
    }

    fn no_answer(&self, what: &str) -> BusError {
        BusError::transient(NAME, format!("{what}: no answer within {:?}", self.config.operation_timeout()))
    }

    /// Creates consumer group `group` of `stream` (and the stream) unless it exists.
    async fn create_group(&self, stream: &str, group: &str, start: StartFrom) -> Result<(), BusError> {
        let mut cmd = ::redis::cmd("XGROUP");
        cmd.arg("CREATE").arg(stream).arg(group).arg(group_start(start)).arg("MKSTREAM");
        let what = || format!("create group `{group}` of `{stream}`");
        match self.call::<()>(&cmd).await {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) if e.code() == Some("BUSYGROUP") => Ok(()),
            Some(Err(e)) => Err(redis_error(&what(), &e)),
            None => Err(self.no_answer(&what())),
        }
    }

    /// Opens a connection for one consumer: its blocking reads would stall every other user
    /// of a shared one. Replies may take a whole blocking read plus the operation timeout.
    async fn dedicated(&self) -> Result<Dedicated, BusError> {
        let timeout = self.config.operation_timeout();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(self.config.block() + timeout));
        let unreachable = |why: String| {
            BusError::transient(NAME, format!("cannot open a consumer connection to {}: {why}", self.display_url))
        };
        let mut conn = tokio::time::timeout(timeout, self.client.get_multiplexed_async_connection_with_config(&config))
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let id = tokio::time::timeout(timeout, ::redis::cmd("CLIENT").arg("ID").query_async::<i64>(&mut conn))
            .await
            .map_err(|_| unreachable(format!("CLIENT ID: no answer within {timeout:?}")))?
            .map_err(|e| redis_error("CLIENT ID", &e))?;
        Ok(Dedicated { conn, id })
    }
}

impl RedisBackend {
    /// Connects and checks that the server answers, within the operation timeout.
    pub async fn connect(config: &RedisConfig) -> Result<Self, BusError> {
        config.validate()?;
        let display_url = crate::redact::url(&config.url);
        let client = Client::open(config.url.as_str())
            .map_err(|e| BusError::Config(format!("messaging.redis.url: `{display_url}`: {e}")))?;
        let timeout = config.operation_timeout();
        let no_answer =
            || BusError::transient(NAME, format!("cannot connect to {display_url}: no answer within {timeout:?}"));
        let refused = |e: &RedisError| redis_error(&format!("cannot connect to {display_url}"), e);
        // A first plain connection reports a refused connection, wrong credentials or a
        // missing database at once, where the manager would retry them until the timeout.
        let probe =
            AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
        tokio::time::timeout(timeout, client.get_multiplexed_async_connection_with_config(&probe))
            .await
            .map_err(|_| no_answer())?
            .map_err(|e| refused(&e))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_max_delay(timeout);
        let manager = tokio::time::timeout(timeout, ConnectionManager::new_with_config(client.clone(), manager_config))
            .await
            .map_err(|_| no_answer())?
            .map_err(|e| refused(&e))?;
        let backend = Self {
            shared: Arc::new(Shared { config: config.clone(), client, manager, display_url: display_url.clone() }),
            declared: Mutex::new(HashSet::new()),
            groups: Mutex::new(HashSet::new()),
        };
        backend.health().await?;
        Ok(backend)
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { patterns: Pattern::ALL, ordering_per_key: false, durable: true, replay: true, backlog: true }
    }

    /// A stream needs no creation (the first write creates it); this checks once that the
    /// key is free or already a stream.
    async fn declare(&self, channel: &str, _partitions: u32) -> Result<(), BusError> {
        if lock(&self.declared).contains(channel) {
            return Ok(());
        }
        let key = stream_key(channel);
        let kind: String =
            self.shared.run(::redis::cmd("TYPE").arg(&key), || format!("check the type of `{key}`")).await?;
        if kind != "stream" && kind != "none" {
            return Err(BusError::Config(format!(
                "redis: key `{key}` of channel `{channel}` holds a {kind}, not a stream"
            )));
        }
        lock(&self.declared).insert(channel.to_owned());
        Ok(())
    }

    /// Deletes the stream with its entries and groups (consumers still reading it re-create
    /// it, empty, with their group).
    async fn remove(&self, channel: &str) -> Result<(), BusError> {
        let key = stream_key(channel);
        let _: i64 = self.shared.run(::redis::cmd("DEL").arg(&key), || format!("delete `{key}`")).await?;
        lock(&self.declared).remove(channel);
        lock(&self.groups).retain(|(c, _)| c != channel);
        Ok(())
    }

    async fn publish(&self, channel: &str, envelope: &Envelope) -> Result<(), BusError> {
        publisher::publish(&self.shared, channel, envelope).await
    }

    async fn ensure_group(&self, channel: &str, group: &str) -> Result<(), BusError> {
        let pair = (channel.to_owned(), group.to_owned());
        if lock(&self.groups).contains(&pair) {
            return Ok(());
        }
        self.shared.create_group(&stream_key(channel), group, StartFrom::Earliest).await?;
        lock(&self.groups).insert(pair);
        Ok(())
    }

    async fn subscribe(&self, channel: &str, options: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError> {
        let shared = self.shared.clone();
        let consumer = match options.group {
            Some(group) => subscriber::RedisConsumer::group(shared, channel, group, options.start).await?,
            None => subscriber::RedisConsumer::private(shared, channel, options.start).await?,
        };
        Ok(Box::new(consumer))
    }

    /// `lag` (entries not delivered to the group yet) plus `pending` (delivered, not
    /// acknowledged) from `XINFO GROUPS`. `None` while Redis cannot determine the lag: when
    /// entries the group has not read yet were deleted or trimmed away, or for a group
    /// created at a point in time until it has caught up. A group that does not exist counts the
    /// stream's length (`XLEN`, what it would start with); a stream that does not exist, 0.
    async fn backlog(&self, channel: &str, group: &str) -> Result<Option<u64>, BusError> {
        let key = stream_key(channel);
        let what = || format!("backlog of group `{group}` on `{channel}`");
        let groups: ::redis::streams::StreamInfoGroupsReply =
            match self.shared.call(::redis::cmd("XINFO").arg("GROUPS").arg(&key)).await {
                Some(Ok(reply)) => reply,
                Some(Err(e)) if e.to_string().contains("no such key") => return Ok(Some(0)),
                Some(Err(e)) => return Err(redis_error(&what(), &e)),
                None => return Err(self.shared.no_answer(&what())),
            };
        match groups.groups.iter().find(|g| g.name == group) {
            Some(found) => Ok(found.lag.map(|lag| (lag + found.pending) as u64)),
            None => self.shared.run(::redis::cmd("XLEN").arg(&key), what).await.map(Some),
        }
    }

    async fn health(&self) -> Result<(), BusError> {
        let display_url = &self.shared.display_url;
        let pong: String = self.shared.run(&::redis::cmd("PING"), || format!("PING {display_url}")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(BusError::transient(NAME, format!("PING {display_url}: unexpected answer `{pong}`")))
        }
    }
}

#[cfg(test)]
mod tests;
