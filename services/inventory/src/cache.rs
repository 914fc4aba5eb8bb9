//! The catalog cache: the JSON of `GET /pets` pages and of `GET /pets/{id}`, in Redis (shared
//! by every inventory instance) or in process memory (the all-in-one mode).
//!
//! Keys (all under `cache.key_prefix`):
//! - `catalog:generation` — a counter bumped by every invalidation;
//! - `catalog:g<generation>:pets?<query>` — one listing page, so bumping the generation
//!   makes every cached listing unreachable at once;
//! - `catalog:pet:<pet_id>` — one pet, deleted when the pet changes.
//!
//! An entry is only written while the generation is still the one read before the storage
//! read that produced it (a compare-and-set in Redis), so a reader racing an invalidation
//! can never put a stale page or pet back. Entries expire after `cache.ttl_secs` in any case.
//!
//! The cache is never a reason to fail a request: a Redis error or timeout is logged, counted
//! in `petstore_cache_errors_total` and treated as a miss (the catalog is read from storage).
//!
//! The `fault_cache_outage` flag drills a cache outage: while it is on, every read and fill
//! fails as an unanswered Redis call does — through the `catalog_cache` breaker, which opens —
//! and `/ready` reports the cache down. Invalidations still go through, so that no entry
//! cached before the drill is served stale after it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use kit::{
    Readiness,
    config::{CacheBackend, CacheSettings},
    flags::{EvaluationContext, Flags},
    resilience::{BreakerError, CircuitBreaker},
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{info, warn};

/// How long one cache operation may take before it counts as failed; bounds the latency
/// Redis can add to a request when it is down or slow.
const OP_TIMEOUT: Duration = Duration::from_millis(300);
/// How long one attempt to (re)connect to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How many entries the memory cache keeps before it drops expired ones (and, if still full,
/// everything): query strings are client-controlled, the memory is not.
const MEMORY_MAX_ENTRIES: usize = 10_000;

/// Sets `KEYS[2]` to `ARGV[2]` for `ARGV[3]` seconds only while the generation `KEYS[1]` is
/// still `ARGV[1]`.
const PUT_IF_GENERATION: &str = "if (redis.call('GET', KEYS[1]) or '0') == ARGV[1] then \
                                 redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) return 1 end return 0";

/// The flag that drills a cache outage.
pub const OUTAGE_FLAG: &str = "fault_cache_outage";

/// What a drilled outage answers in place of Redis.
const DRILLED: &str = "fault_cache_outage is on: the cache does not answer";

/// The `fault_cache_outage` drill of one cache: none in tests that build a bare cache.
#[derive(Clone, Default)]
pub struct OutageDrill(Option<Flags>);

impl OutageDrill {
    /// Whether the outage is being drilled now.
    fn on(&self) -> bool {
        self.0.as_ref().is_some_and(|flags| flags.enabled(OUTAGE_FLAG, &EvaluationContext::new()))
    }

    /// `Err` while the outage is drilled.
    fn check(&self) -> Result<(), String> {
        if self.on() { Err(DRILLED.to_owned()) } else { Ok(()) }
    }
}

/// The cache could not be set up (an invalid Redis URL).
#[derive(Debug, thiserror::Error)]
#[error("cache.redis_url: {0}")]
pub struct CacheError(String);

/// Key names and time to live, the same for both backends.
#[derive(Debug, Clone)]
pub struct Keyspace {
    prefix: Arc<str>,
    ttl: Duration,
}

impl Keyspace {
    /// Keys under `prefix`, entries living `ttl`.
    pub fn new(prefix: &str, ttl: Duration) -> Self {
        Self { prefix: prefix.into(), ttl }
    }

    fn generation(&self) -> String {
        format!("{}catalog:generation", self.prefix)
    }

    fn listings(&self) -> String {
        format!("{}catalog:g", self.prefix)
    }

    fn listing(&self, generation: u64, query: &str) -> String {
        format!("{}{generation}:pets?{query}", self.listings())
    }

    fn pet(&self, pet_id: &str) -> String {
        format!("{}catalog:pet:{pet_id}", self.prefix)
    }
}

/// Where a value may be cached after a miss: the key, and the generation it was looked up at.
#[derive(Debug, Clone)]
pub struct Slot {
    key: String,
    generation: u64,
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup {
    /// The cached JSON.
    Hit(String),
    /// Not cached; fill the slot with what storage says.
    Miss(Slot),
    /// The cache failed (already logged and counted): read storage, cache nothing.
    Unavailable,
    /// The `redis_caching` flag is off for this caller: read storage, cache nothing.
    Bypassed,
}

impl Lookup {
    /// The `X-Cache` value of the answer: `HIT`, `MISS`, or `BYPASS` when the flag kept the
    /// cache out.
    pub fn header(&self) -> &'static str {
        match self {
            Self::Hit(_) => "HIT",
            Self::Miss(_) | Self::Unavailable => "MISS",
            Self::Bypassed => "BYPASS",
        }
    }
}

/// The memory backend: entries with their expiry, and the generation.
#[derive(Debug, Default)]
pub struct MemoryCache {
    inner: Mutex<MemoryEntries>,
}

#[derive(Debug, Default)]
struct MemoryEntries {
    generation: u64,
    entries: HashMap<String, (String, Instant)>,
}

impl MemoryCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryEntries> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The catalog cache, as configured by `cache.backend`.
#[derive(Clone)]
pub enum CatalogCache {
    /// In process memory: correct for one process (the all-in-one mode).
    Memory(Arc<MemoryCache>, Keyspace, OutageDrill),
    /// Redis, shared by every inventory instance; reconnects by itself. Reads go through a
    /// circuit breaker (`catalog_cache`): while Redis keeps failing they skip it at once instead of
    /// waiting for a timeout each.
    Redis(ConnectionManager, Keyspace, CircuitBreaker, OutageDrill),
}

impl CatalogCache {
    /// An empty memory cache.
    pub fn memory(keys: Keyspace) -> Self {
        Self::Memory(Arc::default(), keys, OutageDrill::default())
    }

    /// The cache with the `fault_cache_outage` drill of `flags`.
    pub fn with_outage_drill(self, flags: Flags) -> Self {
        let drill = OutageDrill(Some(flags));
        match self {
            Self::Memory(memory, keys, _) => Self::Memory(memory, keys, drill),
            Self::Redis(conn, keys, breaker, _) => Self::Redis(conn, keys, breaker, drill),
        }
    }

    /// The configured cache. For Redis the connection is made lazily and never awaited here
    /// beyond one bounded ping: a Redis that is down leaves the service running on storage
    /// reads (logged), and the connection comes back by itself when Redis does. Only an
    /// invalid URL fails. Redis reads go through `breaker`.
    pub async fn connect(settings: &CacheSettings, breaker: CircuitBreaker) -> Result<Self, CacheError> {
        let keys = Keyspace::new(&settings.key_prefix, Duration::from_secs(settings.ttl_secs));
        match settings.backend {
            CacheBackend::Memory => Ok(Self::memory(keys)),
            CacheBackend::Redis => {
                let client = redis::Client::open(settings.redis_url.as_str()).map_err(|e| CacheError(e.to_string()))?;
                // One attempt per (re)connection, each bounded: requests never queue behind a
                // retry loop; the next command after a failure starts a new attempt.
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(OP_TIMEOUT));
                let manager =
                    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| CacheError(e.to_string()))?;
                let cache = Self::Redis(manager, keys, breaker, OutageDrill::default());
                match cache.ping().await {
                    Ok(()) => info!("catalog cache: connected to redis"),
                    Err(e) => {
                        warn!(error = %e, "catalog cache: redis unreachable; serving the catalog from storage until it is back")
                    }
                }
                Ok(cache)
            }
        }
    }

    /// Looks up a page of `GET /pets`; `query` is the normalized query string.
    pub async fn listing(&self, query: &str) -> Lookup {
        let lookup = match self {
            Self::Memory(memory, keys, drill) => drilled(drill, "listing").map(|()| {
                let mut m = memory.lock();
                let key = keys.listing(m.generation, query);
                memory_get(&mut m, key)
            }),
            Self::Redis(conn, keys, breaker, drill) => {
                let mut conn = conn.clone();
                let generation = keys.generation();
                guarded(breaker, drill, "listing", async {
                    let generation: Option<u64> = redis::cmd("GET").arg(&generation).query_async(&mut conn).await?;
                    let generation = generation.unwrap_or(0);
                    let key = keys.listing(generation, query);
                    let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
                    Ok(found(value, key, generation))
                })
                .await
            }
        };
        counted(lookup)
    }

    /// Looks up one pet.
    pub async fn pet(&self, pet_id: &str) -> Lookup {
        let lookup = match self {
            Self::Memory(memory, keys, drill) => drilled(drill, "pet").map(|()| {
                let mut m = memory.lock();
                memory_get(&mut m, keys.pet(pet_id))
            }),
            Self::Redis(conn, keys, breaker, drill) => {
                let mut conn = conn.clone();
                let key = keys.pet(pet_id);
                guarded(breaker, drill, "pet", async {
                    let (generation, value): (Option<u64>, Option<String>) =
                        redis::cmd("MGET").arg(keys.generation()).arg(&key).query_async(&mut conn).await?;
                    Ok(found(value, key, generation.unwrap_or(0)))
                })
                .await
            }
        };
        counted(lookup)
    }

    /// Caches `json` in the slot of a miss, unless an invalidation happened since the lookup.
    pub async fn fill(&self, slot: Slot, json: &str) {
        match self {
            Self::Memory(memory, keys, drill) => {
                if drilled(drill, "fill").is_err() {
                    return;
                }
                let mut m = memory.lock();
                if m.generation != slot.generation {
                    return;
                }
                if m.entries.len() >= MEMORY_MAX_ENTRIES {
                    let now = Instant::now();
                    m.entries.retain(|_, (_, expires)| *expires > now);
                    if m.entries.len() >= MEMORY_MAX_ENTRIES {
                        m.entries.clear();
                    }
                }
                m.entries.insert(slot.key, (json.to_owned(), Instant::now() + keys.ttl));
            }
            Self::Redis(conn, keys, breaker, drill) => {
                let mut conn = conn.clone();
                let _: Result<i64, _> = guarded(breaker, drill, "fill", async {
                    redis::cmd("EVAL")
                        .arg(PUT_IF_GENERATION)
                        .arg(2)
                        .arg(keys.generation())
                        .arg(&slot.key)
                        .arg(slot.generation)
                        .arg(json)
                        .arg(keys.ttl.as_secs().max(1))
                        .query_async(&mut conn)
                        .await
                })
                .await;
            }
        }
    }

    /// Forgets what the cache knows about `pet_id`: deletes the pet's entry and bumps the
    /// generation so that every cached listing is stale at once. Called when a pet's
    /// availability or price changes. A failure is logged and counted; the TTL bounds how long
    /// a stale entry can then be served.
    pub async fn invalidate(&self, pet_id: &str) {
        match self {
            Self::Memory(memory, keys, _) => {
                let mut m = memory.lock();
                let (pet, listings) = (keys.pet(pet_id), keys.listings());
                // Listings of older generations can never be read again: drop them now.
                m.entries.retain(|k, _| *k != pet && !k.starts_with(&listings));
                m.generation += 1;
            }
            // Never skipped by the breaker: a lost invalidation leaves stale entries behind.
            Self::Redis(conn, keys, _, _) => {
                let mut conn = conn.clone();
                let _: Result<(), _> = bounded("invalidate", async {
                    redis::pipe()
                        .atomic()
                        .del(keys.pet(pet_id))
                        .ignore()
                        .incr(keys.generation(), 1)
                        .ignore()
                        .query_async(&mut conn)
                        .await
                })
                .await;
            }
        }
    }

    /// Checks that the cache answers (Redis `PING`).
    pub async fn ping(&self) -> Result<(), String> {
        match self {
            Self::Memory(_, _, drill) => drill.check(),
            Self::Redis(conn, _, _, drill) => {
                drill.check()?;
                let mut conn = conn.clone();
                let ping = async {
                    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
                    Ok(())
                };
                match tokio::time::timeout(OP_TIMEOUT, ping).await {
                    Ok(result) => result.map_err(|e: redis::RedisError| e.to_string()),
                    Err(_) => Err(format!("no answer within {OP_TIMEOUT:?}")),
                }
            }
        }
    }

    /// The `/ready` check of the cache; see [`CacheReadiness`].
    pub fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(CacheReadiness { cache: self.clone(), up: AtomicBool::new(true) })
    }

    /// The breaker in front of Redis reads, for `/ready` (none for the memory cache).
    pub fn breaker(&self) -> Option<CircuitBreaker> {
        match self {
            Self::Redis(_, _, breaker, _) => Some(breaker.clone()),
            Self::Memory(..) => None,
        }
    }
}

fn memory_get(m: &mut MemoryEntries, key: String) -> Lookup {
    match m.entries.get(&key) {
        Some((json, expires)) if *expires > Instant::now() => Lookup::Hit(json.clone()),
        found => {
            if found.is_some() {
                m.entries.remove(&key);
            }
            Lookup::Miss(Slot { key, generation: m.generation })
        }
    }
}

fn found(value: Option<String>, key: String, generation: u64) -> Lookup {
    match value {
        Some(json) => Lookup::Hit(json),
        None => Lookup::Miss(Slot { key, generation }),
    }
}

/// Runs a Redis operation with [`OP_TIMEOUT`]; a failure is logged and counted, then
/// reported as `Err(())` for the caller to carry on without the cache.
async fn bounded<T>(operation: &'static str, op: impl Future<Output = redis::RedisResult<T>>) -> Result<T, ()> {
    attempt(op).await.map_err(|error| failed(operation, &error))
}

/// [`bounded`] through the breaker: while it is open the operation is not tried at all. A
/// drilled outage fails the attempt as an unanswered call does.
async fn guarded<T>(
    breaker: &CircuitBreaker,
    drill: &OutageDrill,
    operation: &'static str,
    op: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, ()> {
    let tried = async {
        drill.check()?;
        attempt(op).await
    };
    match breaker.call(tried).await {
        Ok(value) => Ok(value),
        Err(BreakerError::Open { .. }) => Err(()),
        Err(BreakerError::Failed(error)) => {
            failed(operation, &error);
            Err(())
        }
    }
}

async fn attempt<T>(op: impl Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {OP_TIMEOUT:?}")),
    }
}

/// The memory cache's answer to a drilled outage: failed (logged, counted), as Redis's is.
fn drilled(drill: &OutageDrill, operation: &'static str) -> Result<(), ()> {
    drill.check().map_err(|error| failed(operation, &error))
}

fn failed(operation: &'static str, error: &str) {
    warn!(operation, error, "catalog cache: redis failed; using storage");
    metrics::counter!("petstore_cache_errors_total", "operation" => operation).increment(1);
}

fn counted(lookup: Result<Lookup, ()>) -> Lookup {
    match lookup {
        Ok(Lookup::Hit(json)) => {
            metrics::counter!("petstore_cache_requests_total", "result" => "hit").increment(1);
            Lookup::Hit(json)
        }
        Ok(other) => {
            metrics::counter!("petstore_cache_requests_total", "result" => "miss").increment(1);
            other
        }
        Err(()) => {
            metrics::counter!("petstore_cache_requests_total", "result" => "miss").increment(1);
            Lookup::Unavailable
        }
    }
}

/// The cache's `/ready` check. The cache is a soft dependency: without it the catalog is
/// served from storage, slower but correct, so it never makes the service unready (taking
/// instances out of rotation because Redis is down would turn a slowdown into an outage).
/// The check always passes; its name says the state: `cache` while Redis answers,
/// `cache_degraded` while it does not (the error is logged and `petstore_cache_up` is 0).
pub struct CacheReadiness {
    cache: CatalogCache,
    up: AtomicBool,
}

#[async_trait]
impl Readiness for CacheReadiness {
    fn name(&self) -> &'static str {
        if self.up.load(Ordering::Relaxed) { "cache" } else { "cache_degraded" }
    }

    async fn check(&self) -> Result<(), String> {
        let result = self.cache.ping().await;
        if let Err(e) = &result {
            warn!(error = %e, "catalog cache is down; serving the catalog from storage");
        }
        self.up.store(result.is_ok(), Ordering::Relaxed);
        metrics::gauge!("petstore_cache_up").set(if result.is_ok() { 1.0 } else { 0.0 });
        Ok(())
    }
}
