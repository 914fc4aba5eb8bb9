//! Stream entries → deliveries: consumers in a consumer group (`XREADGROUP`, `XAUTOCLAIM`,
//! `XACK`) and private subscriptions (`XREAD`).

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use ::redis::{Cmd, RedisError, Value};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{
    Dedicated, NAME, Shared,
    publisher::{CE_PREFIX, CONTENT_TYPE, DATA},
    redis_error, stream_key,
};
use crate::{BusError, Consumer, Delivery, Envelope, StartFrom, backend::Receipt};

/// The consumer of a group that holds what closing consumers handed back until another
/// consumer takes it (consumer names are otherwise UUIDs, so it cannot clash).
pub(super) const RELEASED: &str = "released";

/// The least idle time given to handed-back entries: far beyond any sensible
/// `claim_idle_ms`, so that the next `XAUTOCLAIM` of any consumer takes them.
const HANDED_BACK_IDLE_MS: u64 = 24 * 60 * 60 * 1000;

/// Entries per page when a consumer re-reads its own pending entries.
const PAGE: usize = 100;

/// Moves every pending entry of a consumer to another consumer with the given idle time,
/// without counting a delivery, then deletes the consumer; returns how many moved. Atomic,
/// so that nothing the closing consumer holds is left behind.
/// KEYS[1]: the stream; ARGV: group, closing consumer, receiving consumer, idle time (ms).
const RELEASE_SCRIPT: &str = r"
local moved = 0
for _ = 1, 100000 do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 100, ARGV[2])
  if #pending == 0 then break end
  local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0}
  for _, entry in ipairs(pending) do claim[#claim + 1] = entry[1] end
  claim[#claim + 1] = 'IDLE'
  claim[#claim + 1] = ARGV[4]
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
  moved = moved + #pending
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return moved
";

/// Deletes the consumers of a group that hold nothing and have been idle for at least the
/// given time (instances that crashed, once their entries were taken over); returns how
/// many. Atomic, so that a consumer that has just taken an entry is never deleted (which
/// would drop the entry from the group's pending list). A consumer deleted while alive is
/// re-created by its next read.
/// KEYS[1]: the stream; ARGV: group, minimum idle time (ms).
const SWEEP_SCRIPT: &str = r"
local deleted = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    deleted = deleted + 1
  end
end
return deleted
";

// ---------------------------------------------------------------------------------------
// Replies and entries
// ---------------------------------------------------------------------------------------

/// One stream entry: its id, and its fields unless it was deleted (trimmed) while pending.
pub(super) struct Entry {
    pub(super) id: String,
    pub(super) fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

fn unexpected(what: &str, value: &Value) -> BusError {
    BusError::permanent(NAME, format!("unexpected reply to {what}: {value:?}"))
}

fn bytes(value: Value, what: &str) -> Result<Vec<u8>, BusError> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Ok(s.into_bytes()),
        other => Err(unexpected(what, &other)),
    }
}

fn text(value: Value, what: &str) -> Result<String, BusError> {
    String::from_utf8(bytes(value, what)?)
        .map_err(|e| BusError::permanent(NAME, format!("{what}: an id is not UTF-8: {e}")))
}

/// The entries of a reply like `XRANGE`'s: `[[id, [field, value, …] | nil] | nil, …]`.
pub(super) fn entries(value: Value, what: &str) -> Result<Vec<Entry>, BusError> {
    let items = match value {
        Value::Array(items) => items,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(unexpected(what, &other)),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let pair = match item {
            Value::Array(pair) => pair,
            // Redis 6.2's XAUTOCLAIM answers nil for a deleted entry (7 lists it apart).
            Value::Nil => continue,
            other => return Err(unexpected(what, &other)),
        };
        let mut pair = pair.into_iter();
        let id = text(pair.next().unwrap_or_default(), what)?;
        let fields =
            match pair.next() {
                None | Some(Value::Nil) => None,
                Some(Value::Array(flat)) => {
                    let mut fields = Vec::with_capacity(flat.len() / 2);
                    let mut flat = flat.into_iter();
                    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                        fields.push((bytes(name, what)?, bytes(value, what)?));
                    }
                    Some(fields)
                }
                Some(Value::Map(map)) => Some(
                    map.into_iter()
                        .map(|(name, value)| Ok((bytes(name, what)?, bytes(value, what)?)))
                        .collect::<Result<_, BusError>>()?,
                ),
                Some(other) => return Err(unexpected(what, &other)),
            };
        out.push(Entry { id, fields });
    }
    Ok(out)
}

/// The entries of an `XREAD`/`XREADGROUP` reply for one stream: nil when the wait ended
/// empty, `[[key, entries]]` (RESP2) or `{key: entries}` (RESP3).
pub(super) fn read_reply(value: Value, what: &str) -> Result<Vec<Entry>, BusError> {
    let streams: Vec<Value> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(key_and_entries) => Ok(key_and_entries.into_iter().nth(1).unwrap_or_default()),
                other => Err(unexpected(what, &other)),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        other => return Err(unexpected(what, &other)),
    };
    let mut out = Vec::new();
    for stream in streams {
        out.extend(entries(stream, what)?);
    }
    Ok(out)
}

/// An `XAUTOCLAIM` reply: the cursor to continue from, the claimed entries, and how many
/// pending entries it dropped because they were no longer in the stream.
fn autoclaim_reply(value: Value) -> Result<(String, Vec<Entry>, usize), BusError> {
    const WHAT: &str = "XAUTOCLAIM";
    let parts = match value {
        Value::Array(parts) if parts.len() >= 2 => parts,
        other => return Err(unexpected(WHAT, &other)),
    };
    let mut parts = parts.into_iter();
    let cursor = text(parts.next().unwrap_or_default(), WHAT)?;
    let claimed = entries(parts.next().unwrap_or_default(), WHAT)?;
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids.len(),
        _ => 0,
    };
    Ok((cursor, claimed, deleted))
}

/// Rebuilds an envelope from an entry's fields: `ce_*` attributes, `content-type`, `data`.
pub(super) fn decode(fields: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Envelope, BusError> {
    let mut names = Vec::with_capacity(fields.len());
    let mut values = Vec::with_capacity(fields.len());
    let mut content_type = None;
    let mut data = Bytes::new();
    for (name, value) in fields {
        let name = String::from_utf8(name).map_err(|e| BusError::Codec(format!("a field name is not UTF-8: {e}")))?;
        if name == DATA {
            data = Bytes::from(value);
            continue;
        }
        let value =
            String::from_utf8(value).map_err(|e| BusError::Codec(format!("field `{name}` is not UTF-8: {e}")))?;
        if let Some(attribute) = name.strip_prefix(CE_PREFIX) {
            names.push(attribute.to_owned());
            values.push(value);
        } else if name == CONTENT_TYPE {
            content_type = Some(value);
        }
    }
    Envelope::from_attributes(names.iter().map(String::as_str).zip(values), content_type, data)
}

fn malformed(stream: &str, id: &str, error: &BusError) {
    warn!(%stream, id, %error, "skipping a malformed entry");
    metrics::counter!("petstore_messages_malformed_total", "backend" => NAME, "topic" => stream.to_owned())
        .increment(1);
}

/// Milliseconds for `BLOCK` and idle times: at least 1 (`BLOCK 0` waits forever).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

// ---------------------------------------------------------------------------------------
// The consumer
// ---------------------------------------------------------------------------------------

/// A consumer of one stream: in a consumer group, or private (plain reads, no group).
pub(super) struct RedisConsumer {
    io: Io,
    /// Read but not handed out yet (a cancelled `receive` leaves them here).
    ready: VecDeque<Delivery>,
    mode: Mode,
}

/// The stream a consumer reads and the connections it reads it with.
struct Io {
    shared: Arc<Shared>,
    stream: String,
    /// The consumer's own connection; `None` after a failure (reopened on the next read) or
    /// once closed.
    conn: Option<Dedicated>,
}

impl Io {
    /// Runs `cmd` on the consumer's own connection, opening one first if needed; a
    /// connection that failed is dropped so that the next call opens a new one. The outer
    /// error is a connection that could not be opened, the inner one the command's failure.
    async fn on_link(&mut self, cmd: &Cmd) -> Result<Result<Value, RedisError>, BusError> {
        if self.conn.is_none() {
            self.conn = Some(self.shared.dedicated().await?);
        }
        let link = self.conn.as_mut().ok_or(BusError::Closed)?;
        let result = cmd.query_async::<Value>(&mut link.conn).await;
        if let Err(e) = &result
            && (e.is_io_error() || e.is_unrecoverable_error())
        {
            self.conn = None;
        }
        Ok(result)
    }
}

enum Mode {
    Group(Group),
    /// Reads the stream after `last_id`; nothing to acknowledge.
    Private {
        last_id: String,
    },
}

/// The state of a consumer in a group.
struct Group {
    name: String,
    consumer: String,
    /// Where the group starts if it has to be created again (deleted, or lost by the server).
    start: StartFrom,
    /// Entries in `ready` or handed out and not acknowledged yet.
    owned: HashSet<Arc<str>>,
    /// A read or acknowledgement was interrupted or failed: the consumer's pending list on
    /// the server may hold entries it does not know about; the next read re-reads it.
    uncertain: bool,
    /// Where the next `XAUTOCLAIM` continues scanning the group's pending entries.
    cursor: String,
    next_claim: Instant,
    next_sweep: Instant,
    closed: bool,
}

impl RedisConsumer {
    /// A consumer in `group`, created at `start` (and the stream with it) unless it exists.
    pub(super) async fn group(
        shared: Arc<Shared>,
        channel: &str,
        group: String,
        start: StartFrom,
    ) -> Result<Self, BusError> {
        let stream = stream_key(channel);
        shared.create_group(&stream, &group, start).await?;
        let conn = Some(shared.dedicated().await?);
        let now = Instant::now();
        let group = Group {
            name: group,
            consumer: uuid::Uuid::now_v7().simple().to_string(),
            start,
            owned: HashSet::new(),
            uncertain: false,
            cursor: "0-0".to_owned(),
            next_claim: now,
            next_sweep: now + Duration::from_millis(shared.config.claim_idle_ms),
            closed: false,
        };
        Ok(Self { io: Io { shared, stream, conn }, ready: VecDeque::new(), mode: Mode::Group(group) })
    }

    /// A private subscription from the start of the stream or from its current end.
    pub(super) async fn private(shared: Arc<Shared>, channel: &str, start: StartFrom) -> Result<Self, BusError> {
        let stream = stream_key(channel);
        let last_id = match start {
            StartFrom::Earliest => "0-0".to_owned(),
            StartFrom::Time(t) => super::before_time(t),
            StartFrom::Latest => {
                let mut cmd = ::redis::cmd("XREVRANGE");
                cmd.arg(&stream).arg("+").arg("-").arg("COUNT").arg(1);
                let last: Value = shared.run(&cmd, || format!("find the last entry of `{stream}`")).await?;
                entries(last, "XREVRANGE")?.into_iter().next().map_or_else(|| "0-0".to_owned(), |e| e.id)
            }
        };
        let conn = Some(shared.dedicated().await?);
        Ok(Self { io: Io { shared, stream, conn }, ready: VecDeque::new(), mode: Mode::Private { last_id } })
    }

    /// One round of reading: adds to `ready` what arrives within `block`. The first round of
    /// a `receive` also takes over abandoned entries of the group when due.
    async fn fetch(&mut self, count: usize, block: Duration, first: bool) -> Result<(), BusError> {
        let Self { io, ready, mode } = self;
        match mode {
            Mode::Group(group) => group.fetch(io, ready, count, block, first).await,
            Mode::Private { last_id } => {
                let mut cmd = ::redis::cmd("XREAD");
                cmd.arg("COUNT")
                    .arg(count)
                    .arg("BLOCK")
                    .arg(millis(block))
                    .arg("STREAMS")
                    .arg(&io.stream)
                    .arg(&*last_id);
                let reply = io.on_link(&cmd).await?.map_err(|e| redis_error(&format!("read `{}`", io.stream), &e))?;
                for Entry { id, fields } in read_reply(reply, "XREAD")? {
                    last_id.clone_from(&id);
                    match fields.map(decode) {
                        Some(Ok(envelope)) => {
                            ready.push_back(Delivery { envelope, receipt: Receipt::Handle(id.into()) })
                        }
                        Some(Err(error)) => malformed(&io.stream, &id, &error),
                        None => {}
                    }
                }
                Ok(())
            }
        }
    }

    /// What `close` (or a drop) has to do on the server; `None` once done or when private.
    fn release(&mut self) -> Option<Release> {
        let Mode::Group(group) = &mut self.mode else { return None };
        if group.closed {
            return None;
        }
        group.closed = true;
        Some(Release {
            shared: self.io.shared.clone(),
            stream: self.io.stream.clone(),
            group: group.name.clone(),
            consumer: group.consumer.clone(),
            conn: self.io.conn.take(),
        })
    }
}

impl Group {
    fn read_cmd(&self, stream: &str, count: usize, block: Option<Duration>, after: &str) -> Cmd {
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.name).arg(&self.consumer).arg("COUNT").arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(millis(block));
        }
        cmd.arg("STREAMS").arg(stream).arg(after);
        cmd
    }

    async fn fetch(
        &mut self,
        io: &mut Io,
        ready: &mut VecDeque<Delivery>,
        count: usize,
        block: Duration,
        first: bool,
    ) -> Result<(), BusError> {
        if self.uncertain {
            self.recover(io, ready).await?;
        }
        if first && Instant::now() >= self.next_sweep {
            self.sweep(io).await;
        }
        if first && Instant::now() >= self.next_claim {
            self.claim(io, ready, count).await?;
            if !ready.is_empty() {
                return Ok(());
            }
        }
        let cmd = self.read_cmd(&io.stream, count, Some(block), ">");
        self.uncertain = true;
        let Some(reply) = self.query(io, &cmd, "read").await? else { return Ok(()) };
        let discard = self.accept(&io.stream, read_reply(reply, "XREADGROUP")?, ready);
        self.uncertain = false;
        self.discard(io, discard).await;
        Ok(())
    }

    /// Hands out again the entries of this consumer's pending list that it does not hold
    /// (read by an interrupted call, or whose acknowledgement failed).
    async fn recover(&mut self, io: &mut Io, ready: &mut VecDeque<Delivery>) -> Result<(), BusError> {
        let mut after = "0-0".to_owned();
        loop {
            let cmd = self.read_cmd(&io.stream, PAGE, None, &after);
            let Some(reply) = self.query(io, &cmd, "re-read the pending entries of").await? else { return Ok(()) };
            let page = read_reply(reply, "XREADGROUP")?;
            let Some(last) = page.last() else { break };
            after.clone_from(&last.id);
            let discard = self.accept(&io.stream, page, ready);
            self.discard(io, discard).await;
        }
        self.uncertain = false;
        Ok(())
    }

    /// Takes over up to `count` entries of the group idle for `claim_idle_ms` or more (held
    /// by a consumer that crashed, or handed back by one that closed).
    async fn claim(&mut self, io: &mut Io, ready: &mut VecDeque<Delivery>, count: usize) -> Result<(), BusError> {
        let mut cmd = ::redis::cmd("XAUTOCLAIM");
        cmd.arg(&io.stream)
            .arg(&self.name)
            .arg(&self.consumer)
            .arg(io.shared.config.claim_idle_ms)
            .arg(&self.cursor)
            .arg("COUNT")
            .arg(count);
        self.uncertain = true;
        let Some(reply) = self.query(io, &cmd, "claim abandoned entries of").await? else { return Ok(()) };
        let (cursor, claimed, deleted) = autoclaim_reply(reply)?;
        let before = ready.len();
        let discard = self.accept(&io.stream, claimed, ready);
        self.uncertain = false;
        let stream = &io.stream;
        if ready.len() > before {
            debug!(%stream, group = %self.name, count = ready.len() - before, "took over abandoned messages");
        }
        if deleted > 0 {
            warn!(%stream, group = %self.name, deleted, "pending messages were trimmed from the stream before being handled");
        }
        // A scan that has not come round yet continues on the next receive.
        let now = Instant::now();
        self.next_claim = if cursor == "0-0" { now + io.shared.config.block() } else { now };
        self.cursor = cursor;
        self.discard(io, discard).await;
        Ok(())
    }

    /// Deletes the group's idle consumers that hold nothing; a failure is only logged.
    async fn sweep(&mut self, io: &Io) {
        let idle = io.shared.config.claim_idle_ms;
        self.next_sweep = Instant::now() + Duration::from_millis(idle);
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(SWEEP_SCRIPT).arg(1).arg(&io.stream).arg(&self.name).arg(idle);
        let stream = &io.stream;
        match io.shared.run::<i64>(&cmd, || format!("remove idle consumers of `{}` on `{stream}`", self.name)).await {
            Ok(0) => {}
            Ok(deleted) => {
                debug!(%stream, group = %self.name, deleted, "removed idle consumers without pending messages")
            }
            Err(error) => debug!(%error, "could not remove idle consumers"),
        }
    }

    /// Adds the entries read for this consumer to `ready`, except those it holds already;
    /// returns the ids to acknowledge without handing them out (malformed, or trimmed).
    fn accept(&mut self, stream: &str, entries: Vec<Entry>, ready: &mut VecDeque<Delivery>) -> Vec<String> {
        let mut discard = Vec::new();
        for Entry { id, fields } in entries {
            if self.owned.contains(id.as_str()) {
                continue;
            }
            match fields.map(decode) {
                Some(Ok(envelope)) => {
                    let id: Arc<str> = id.into();
                    self.owned.insert(id.clone());
                    ready.push_back(Delivery { envelope, receipt: Receipt::Handle(id) });
                }
                Some(Err(error)) => {
                    malformed(stream, &id, &error);
                    discard.push(id);
                }
                None => discard.push(id),
            }
        }
        discard
    }

    /// Acknowledges entries that are not handed out; a failure is only logged (they come
    /// back and are discarded again).
    async fn discard(&self, io: &Io, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let stream = &io.stream;
        let mut cmd = ::redis::cmd("XACK");
        cmd.arg(stream).arg(&self.name).arg(&ids);
        if let Err(error) = io.shared.run::<i64>(&cmd, || format!("acknowledge skipped entries of `{stream}`")).await {
            warn!(%error, "could not acknowledge skipped entries; they will be skipped again");
        }
    }

    /// Runs a read of this consumer on its connection. A group that no longer exists
    /// (deleted by hand, or lost by a server restarted without persistence) is created
    /// again, and the read answers `None`.
    async fn query(&self, io: &mut Io, cmd: &Cmd, what: &str) -> Result<Option<Value>, BusError> {
        let error = match io.on_link(cmd).await? {
            Ok(reply) => return Ok(Some(reply)),
            Err(error) => error,
        };
        let stream = &io.stream;
        if error.code() == Some("NOGROUP") {
            warn!(%stream, group = %self.name, "the consumer group is gone; creating it again");
            io.shared.create_group(stream, &self.name, self.start).await?;
            return Ok(None);
        }
        Err(redis_error(&format!("{what} group `{}` of `{stream}`", self.name), &error))
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    async fn receive(&mut self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let max = max.max(1);
        let block = self.io.shared.config.block();
        // Dropped during a read, the entries it takes on the server are in this consumer's
        // pending list, and `uncertain` makes the next read hand them out (`recover`); those
        // already read are in `ready`.
        while self.ready.is_empty() {
            self.fetch(max, block, true).await?;
        }
        if !max_wait.is_zero() {
            let deadline = Instant::now() + max_wait;
            while self.ready.len() < max {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining < Duration::from_millis(1) {
                    break;
                }
                if let Err(error) = self.fetch(max - self.ready.len(), remaining.min(block), false).await {
                    // Hand out what is there; a lasting failure shows on the next receive.
                    debug!(%error, stream = %self.io.stream, "read failed while gathering a batch");
                    break;
                }
            }
        }
        let n = max.min(self.ready.len());
        Ok(self.ready.drain(..n).collect())
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        let Mode::Group(group) = &mut self.mode else { return Ok(()) };
        let Receipt::Handle(id) = &delivery.receipt else { return Ok(()) };
        if !group.owned.remove(id) {
            // Acknowledged already.
            return Ok(());
        }
        // Should this be cancelled or fail, the next read looks at the pending list again
        // and hands the entry out anew.
        let uncertain = std::mem::replace(&mut group.uncertain, true);
        let stream = &self.io.stream;
        let mut cmd = ::redis::cmd("XACK");
        cmd.arg(stream).arg(&group.name).arg(&**id);
        self.io.shared.run::<i64>(&cmd, || format!("acknowledge {id} of group `{}` on `{stream}`", group.name)).await?;
        group.uncertain = uncertain;
        Ok(())
    }

    async fn close(mut self: Box<Self>) {
        if let Some(release) = self.release() {
            release.run().await;
        }
    }
}

impl Drop for RedisConsumer {
    fn drop(&mut self) {
        // Dropped without `close`: hand back what it holds all the same, if a runtime is there
        // (otherwise it comes back after `claim_idle_ms`).
        if let Some(release) = self.release()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(release.run());
        }
    }
}

/// Leaving a group: hands the consumer's pending entries back to the group and deletes the
/// consumer.
struct Release {
    shared: Arc<Shared>,
    stream: String,
    group: String,
    consumer: String,
    conn: Option<Dedicated>,
}

impl Release {
    async fn run(self) {
        let Self { shared, stream, group, consumer, conn } = self;
        let idle = shared.config.claim_idle_ms.max(HANDED_BACK_IDLE_MS);
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(RELEASE_SCRIPT).arg(1).arg(&stream).arg(&group).arg(&consumer).arg(RELEASED).arg(idle);
        let what = || format!("hand back the messages of consumer {consumer} of group `{group}` on `{stream}`");
        let on_link = match conn {
            // Run it on the consumer's own connection, after any read still in flight there
            // (that of a cancelled receive), so that what such a read takes is handed back
            // too; wake a blocked read first so that the script need not wait for it.
            Some(mut link) => {
                let mut unblock = ::redis::cmd("CLIENT");
                unblock.arg("UNBLOCK").arg(link.id);
                let _ = shared.call::<i64>(&unblock).await;
                let timeout = shared.config.operation_timeout();
                tokio::time::timeout(timeout, cmd.query_async::<i64>(&mut link.conn)).await.ok().and_then(Result::ok)
            }
            None => None,
        };
        let handed_back = match on_link {
            Some(n) => Ok(n),
            None => shared.run::<i64>(&cmd, what).await,
        };
        match handed_back {
            Ok(0) => {}
            Ok(n) => debug!(%stream, %group, n, "handed unacknowledged messages back to the group"),
            Err(error) => warn!(
                %error,
                "could not hand back unacknowledged messages; the group gets them after claim_idle_ms"
            ),
        }
    }
}
