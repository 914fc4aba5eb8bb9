//! A started inventory service to drive in tests: its router (driven with `oneshot`, bare or
//! behind the real gate), its readiness checks, and a bus client playing the saga orchestrator.
//!
//! `Harness::memory()` runs everything in memory; `Harness::postgres_redis()` runs on a fresh
//! PostgreSQL database (server from `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`) under a random key prefix; both are removed when the harness is
//! dropped, even after a failed assertion.

#![allow(dead_code)] // each test binary uses part of the harness

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use contracts::{
    Message, SagaRef, channels,
    inventory::{GetPetStatus, PetStatus, ReservePet},
};
use http_body_util::BodyExt;
use kit::{Readiness, ServiceContext, Settings};
use messaging::{Backends, Bus, Envelope, MessageContext};
use sqlx::{Connection, PgConnection};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use uuid::Uuid;

/// Defines each `test(h: &Harness)` named as a test twice: `memory::<test>` on
/// [`Harness::memory`] and `postgres_redis::<test>` on [`Harness::postgres_redis`]. (Use with
/// `#[macro_use] mod common;`.)
#[allow(unused_macros)] // not every test binary runs on both backends with default settings
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&super::Harness::memory().await).await;
                }
            )*
        }
        mod postgres_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&super::Harness::postgres_redis().await).await;
                }
            )*
        }
    };
}

/// How long an asynchronous outcome may take to show.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub x_cache: Option<String>,
    pub location: Option<String>,
    pub body: serde_json::Value,
}

impl Reply {
    /// The ids of the pets of a `GET /pets` page.
    pub fn pet_ids(&self) -> Vec<String> {
        self.body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("not a page: {}", self.body))
            .iter()
            .map(|p| p["pet_id"].as_str().expect("pet_id").to_owned())
            .collect()
    }

    /// The `status` of the pet `pet_id` on a `GET /pets` page.
    pub fn status_of(&self, pet_id: &str) -> Option<String> {
        self.body["items"]
            .as_array()?
            .iter()
            .find(|p| p["pet_id"] == pet_id)
            .map(|p| p["status"].as_str().unwrap_or("").to_owned())
    }
}

/// What to remove when the test ends.
pub struct Cleanup {
    server_url: String,
    database: String,
    redis_url: String,
    key_prefix: String,
}

/// A running inventory service.
pub struct Harness {
    pub router: Router,
    /// The router behind the cross-cutting layers (authentication, limits), as served.
    pub api: Router,
    pub readiness: Vec<Arc<dyn Readiness>>,
    pub ctx: ServiceContext,
    /// The orchestrator's side of the bus.
    pub bus: Bus,
    /// Inventory events as they arrive, and those a wait passed over (kept for a later wait).
    events: Mutex<(mpsc::UnboundedReceiver<Envelope>, Vec<Envelope>)>,
    cleanup: Option<Cleanup>,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// `server` with its database replaced by `database`.
fn database_url(server: &str, database: &str) -> String {
    let (base, query) = server.split_once('?').map_or((server, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{host}/{database}?{q}"),
        None => format!("{host}/{database}"),
    }
}

impl Harness {
    /// Everything in memory: storage, cache and bus (the all-in-one mode).
    pub async fn memory() -> Self {
        Self::memory_with(serde_json::json!({})).await
    }

    /// Everything in memory, configured with `overrides` on top.
    pub async fn memory_with(overrides: serde_json::Value) -> Self {
        Self::start(&overrides.to_string(), None).await
    }

    /// A fresh PostgreSQL database, Redis under a random key prefix, the memory bus.
    pub async fn postgres_redis() -> Self {
        Self::postgres_redis_with(serde_json::json!({})).await
    }

    /// A fresh PostgreSQL database, Redis and the memory bus, configured with `overrides` (a
    /// JSON object whose top-level keys are other than `storage`, `database`, `cache` and
    /// `messaging`) on top.
    pub async fn postgres_redis_with(overrides: serde_json::Value) -> Self {
        let server_url = env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres");
        let redis_url = env_or("REDIS_URL", "redis://127.0.0.1:6379");
        let database = format!("t_{}", Uuid::now_v7().simple());
        let mut admin =
            PgConnection::connect(&server_url).await.expect("connect to the PostgreSQL server (DATABASE_URL)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{database}\"")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.expect("close");
        let key_prefix = format!("test:{}:", Uuid::now_v7().simple());
        let mut settings = serde_json::json!({
            "storage": "postgres",
            "database": { "url": database_url(&server_url, &database), "max_connections": 5 },
            "cache": { "backend": "redis", "redis_url": redis_url, "key_prefix": key_prefix },
            "messaging": { "default_backend": "memory" },
        });
        if let (Some(settings), serde_json::Value::Object(extra)) = (settings.as_object_mut(), overrides) {
            settings.extend(extra);
        }
        let cleanup = Cleanup { server_url, database, redis_url, key_prefix };
        Self::start(&settings.to_string(), Some(cleanup)).await
    }

    /// The service configured by the embedded defaults plus `overrides` (YAML, and so JSON).
    pub async fn start(overrides: &str, cleanup: Option<Cleanup>) -> Self {
        let settings = Settings::with_overrides(overrides).expect("test settings");
        let backends = Backends::connect(&settings.messaging).await.expect("connect the bus");
        let ctx = ServiceContext::assemble(settings, backends, CancellationToken::new()).expect("test gate");
        let service = tokio::time::timeout(PATIENCE, inventory::start(&ctx))
            .await
            .expect("start-up must not hang")
            .expect("the inventory starts");
        let bus = Bus::new(&ctx.backends, &ctx.settings.messaging, "orchestrator", ctx.shutdown.clone())
            .await
            .expect("orchestrator bus");
        let (tx, rx) = mpsc::unbounded_channel();
        bus.subscribe(channels::INVENTORY_EVENTS, "test-observer", move |env: Envelope| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(env);
                Ok(())
            }
        })
        .await
        .expect("observe inventory events");
        Self {
            api: kit::http::layers(service.router.clone(), &ctx.gate),
            router: service.router,
            readiness: service.readiness,
            ctx,
            bus,
            events: Mutex::new((rx, Vec::new())),
            cleanup,
        }
    }

    /// `GET uri` through the service's router.
    pub async fn get(&self, uri: &str) -> Reply {
        read(
            self.router
                .clone()
                .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
                .await
                .expect("infallible"),
        )
        .await
    }

    /// `method uri` with a JSON `body` (sent as is, so it may be malformed) through the real
    /// gate, with `authorization` as the `Authorization` header when given.
    pub async fn call(&self, method: Method, uri: &str, authorization: Option<&str>, body: &str) -> Reply {
        let mut request = Request::builder().method(method).uri(uri).header(header::CONTENT_TYPE, "application/json");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request.body(Body::from(body.to_owned())).expect("request");
        read(self.api.clone().oneshot(request).await.expect("infallible")).await
    }

    /// `method uri` with `body` as an administrator (`ops`, role `admin`).
    pub async fn as_admin(&self, method: Method, uri: &str, body: &serde_json::Value) -> Reply {
        self.call(method, uri, Some(&kit::testing::bearer("ops", &["admin"])), &body.to_string()).await
    }

    /// `GET /ready` through the ops router built from the service's readiness checks.
    pub async fn ready(&self) -> Reply {
        let ops = kit::http::ops_router(self.readiness.clone(), None);
        read(ops.oneshot(Request::get("/ready").body(Body::empty()).expect("request")).await.expect("infallible")).await
    }

    /// Sends a command to the inventory, as the orchestrator does.
    pub async fn send<M: Message>(&self, command: &M) {
        let envelope = Envelope::from_message("/petstore/orchestrator", command, &MessageContext::correlated("test"))
            .expect("encode");
        self.bus.send(channels::INVENTORY_COMMANDS, &envelope).await.expect("send the command");
    }

    /// Publishes an inventory event, as another inventory instance's relay does.
    pub async fn publish_event<M: Message>(&self, event: &M) {
        let envelope =
            Envelope::from_message("/petstore/inventory", event, &MessageContext::correlated("test")).expect("encode");
        self.bus.publish(channels::INVENTORY_EVENTS, &envelope).await.expect("publish the event");
    }

    /// Sends `ReservePet` for a new saga and returns the saga.
    pub async fn reserve(&self, pet_id: &str) -> SagaRef {
        let saga = SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() };
        self.send(&ReservePet { saga, pet_id: pet_id.to_owned() }).await;
        saga
    }

    /// Asks the inventory about a pet over the bus.
    pub async fn pet_status(&self, pet_id: &str) -> PetStatus {
        let query = Envelope::from_message(
            "/petstore/order",
            &GetPetStatus { pet_id: pet_id.to_owned() },
            &MessageContext::correlated("test"),
        )
        .expect("encode");
        let reply = self.bus.request(channels::INVENTORY_QUERIES, query, PATIENCE).await.expect("a reply in time");
        reply.decode().expect("a PetStatus reply")
    }

    /// The next inventory event of type `M` for `saga_id`, within [`PATIENCE`] (events before
    /// it are passed over).
    pub async fn reply<M: Message>(&self, saga_id: Uuid) -> M {
        let what = format!("{} for saga {saga_id}", M::TYPE);
        self.next_event(&what, |env| env.is::<M>() && about_saga(env, saga_id)).await.decode().expect("decode")
    }

    /// The next inventory event of type `M` about the pet `pet_id`, within [`PATIENCE`].
    pub async fn pet_event<M: Message>(&self, pet_id: &str) -> M {
        let what = format!("{} about pet {pet_id}", M::TYPE);
        self.next_event(&what, |env| env.is::<M>() && about_pet(env, pet_id)).await.decode().expect("decode")
    }

    /// The types of the inventory events about the pet `pet_id`, in the order they came, up to
    /// and including the first of type `M`.
    pub async fn pet_events_until<M: Message>(&self, pet_id: &str) -> Vec<String> {
        let mut types = Vec::new();
        loop {
            let env = self.next_event(&format!("an event about pet {pet_id}"), |env| about_pet(env, pet_id)).await;
            types.push(env.event_type.clone());
            if env.is::<M>() {
                return types;
            }
        }
    }

    /// The next inventory event for `saga_id` that `wanted`, within [`PATIENCE`].
    pub async fn event_for(&self, saga_id: Uuid, wanted: impl Fn(&Envelope) -> bool) -> Envelope {
        self.next_event(&format!("the event awaited for saga {saga_id}"), |env| about_saga(env, saga_id) && wanted(env))
            .await
    }

    /// The earliest inventory event that `wanted`, within [`PATIENCE`]; the events passed
    /// over stay for later waits.
    async fn next_event(&self, what: &str, wanted: impl Fn(&Envelope) -> bool) -> Envelope {
        let mut guard = self.events.lock().await;
        let (events, passed_over) = &mut *guard;
        if let Some(i) = passed_over.iter().position(&wanted) {
            return passed_over.remove(i);
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let env = tokio::time::timeout(left, events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
                .expect("observer running");
            if wanted(&env) {
                return env;
            }
            passed_over.push(env);
        }
    }
}

/// Whether the event's payload names `saga_id`.
fn about_saga(env: &Envelope, saga_id: Uuid) -> bool {
    serde_json::from_slice::<serde_json::Value>(&env.data).is_ok_and(|d| d["saga_id"] == saga_id.to_string())
}

/// Whether the event's payload names the pet `pet_id`.
fn about_pet(env: &Envelope, pet_id: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(&env.data).is_ok_and(|d| d["pet_id"] == pet_id)
}

/// Polls `probe` until it yields a value, failing the test after [`PATIENCE`].
pub async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {PATIENCE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read(response: axum::response::Response) -> Reply {
    let status = response.status();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let content_type = header("content-type").unwrap_or_default();
    let x_cache = header("x-cache");
    let location = header("location");
    let bytes = response.into_body().collect().await.expect("read the body").to_bytes();
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    Reply { status, content_type, x_cache, location, body }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
        let Some(c) = self.cleanup.take() else { return };
        // Drop cannot await: clean up on a thread with its own runtime (also after a panic).
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cleanup runtime");
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&c.server_url).await {
                    let drop_db = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", c.database);
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop_db)).execute(&mut admin).await;
                }
                if let Ok(client) = redis::Client::open(c.redis_url.as_str())
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                {
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("{}*", c.key_prefix))
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                    }
                }
            });
        });
        let _ = done.join();
    }
}
