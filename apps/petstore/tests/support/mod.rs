//! A petstore cluster for end-to-end tests: six `petstore serve <service>` processes, each on
//! a port the kernel picks (port 0), sharing a fresh PostgreSQL database, a random Kafka topic prefix and a
//! random Redis key prefix, so tests never collide. Servers come from the environment
//! (`DATABASE_URL`, `REDIS_URL`, `KAFKA_BROKERS`), defaulting to what `dev/infra.sh` starts.

#![allow(dead_code)] // each test binary uses a different part

pub mod books;
pub mod otlp;
pub mod proxy;
pub mod stack;

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::process::{Child, Command};

pub const SERVICES: [&str; 6] = ["inventory", "order", "payment", "delivery", "notification", "orchestrator"];

/// Messaging configuration (for [`Cluster::start_with`]) that keeps the saga on Kafka and
/// moves the inventory's events and status query to NATS and notifications to RabbitMQ.
pub fn mixed_backends() -> String {
    format!(
        r#"  nats: {{ url: "{nats}" }}
  rabbitmq: {{ url: "{rabbitmq}" }}
  channels:
    inventory-events: {{ pattern: pub_sub, partitions: 3, backend: nats }}
    inventory-queries: {{ pattern: request_response, partitions: 1, backend: nats }}
    notification-commands: {{ pattern: point_to_point, partitions: 3, backend: rabbitmq }}
    notification-events: {{ pattern: pub_sub, partitions: 3, backend: rabbitmq }}"#,
        nats = env_or("NATS_URL", "nats://127.0.0.1:4222"),
        rabbitmq = env_or("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    )
}

/// The cluster's own HS256 secret: tokens of one test are worthless to another.
fn secret_of(id: &str) -> String {
    format!("e2e-secret-{id}")
}

/// The service an instance name (`order`, `order-2`) runs.
fn service_of(instance: &str) -> &str {
    instance.split('-').next().unwrap_or(instance)
}

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

pub struct Cluster {
    pub id: String,
    server_url: String,
    db_name: String,
    /// Each service's port: every service binds port 0 and logs the address it got, so
    /// concurrent clusters never race for a port.
    pub ports: HashMap<&'static str, u16>,
    pub database_url: String,
    pub db: PgPool,
    pub http: reqwest::Client,
    config_path: PathBuf,
    log_dir: PathBuf,
    children: HashMap<&'static str, Child>,
    /// How many times each service has started (its log says `listening` once per start).
    starts: HashMap<&'static str, usize>,
    /// Extra environment of every service process.
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Creates the database and starts every service with every channel on Kafka; returns
    /// once all answer `/ready`.
    pub async fn start() -> Cluster {
        Self::start_with("").await
    }

    /// Like [`Cluster::start`], with `messaging` extra YAML lines (indented two spaces) merged
    /// into the services' messaging configuration: other backends, channels moved to them.
    pub async fn start_with(messaging_extra: &str) -> Cluster {
        Self::start_custom(messaging_extra, "").await
    }

    /// Like [`Cluster::start_with`], with `top_extra` YAML (top-level sections such as
    /// `tracing`) added to the configuration.
    pub async fn start_custom(messaging_extra: &str, top_extra: &str) -> Cluster {
        Self::start_full(messaging_extra, top_extra, &[]).await
    }

    /// Every service started with `env` (e.g. `PETSTORE__SERVICES__ORCHESTRATOR__…`) as well.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Cluster {
        Self::start_full("", "", env).await
    }

    pub async fn start_full(messaging_extra: &str, top_extra: &str, env: &[(&str, &str)]) -> Cluster {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let server_url = env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres");
        let db_name = format!("e2e_{id}");
        let mut admin = PgConnection::connect(&server_url).await.expect("connect to PostgreSQL (run dev/infra.sh)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        let database_url = match server_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{db_name}"),
            None => panic!("DATABASE_URL has no database part: {server_url}"),
        };
        let dir = std::env::temp_dir().join(format!("petstore-e2e-{id}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = format!(
            r#"environment: test
log: {{ format: json, level: "info" }}
auth: {{ hs256_secret: "{secret}" }}
rate_limits:
  authenticated: {{ requests: 100000, per: 1s, burst: 100000 }}
  anonymous: {{ requests: 100000, per: 1s, burst: 100000 }}
  routes: {{ "POST /orders": {{ requests: 100000, per: 1s, burst: 100000 }} }}
{top_extra}
storage: postgres
database: {{ url: "{database_url}", max_connections: 5 }}
cache: {{ backend: redis, redis_url: "{redis}", ttl_secs: 60, key_prefix: "e2e{id}:" }}
messaging:
  default_backend: kafka
  topic_prefix: "e2e{id}."
  retry: {{ max_attempts: 5, initial_backoff_ms: 50, max_backoff_ms: 500 }}
  kafka:
    brokers: "{brokers}"
    client: {{ "fetch.wait.max.ms": "10", "session.timeout.ms": "6000", "heartbeat.interval.ms": "1000" }}
{messaging_extra}
services:
  order: {{ port: 0, pet_lookup_timeout_ms: 10000 }}
  payment: {{ port: 0 }}
  delivery: {{ port: 0, delivery_days: 3 }}
  inventory: {{ port: 0 }}
  notification: {{ port: 0 }}
  orchestrator: {{ port: 0 }}
"#,
            redis = env_or("REDIS_URL", "redis://127.0.0.1:6379"),
            brokers = env_or("KAFKA_BROKERS", "127.0.0.1:9092"),
            secret = secret_of(&id),
        );
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let db = PgPool::connect(&database_url).await.expect("connect to the test database");
        let mut cluster = Cluster {
            id,
            server_url: server_url.clone(),
            db_name: db_name.clone(),
            ports: HashMap::new(),
            starts: HashMap::new(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            database_url,
            db,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            config_path,
            log_dir: dir,
            children: HashMap::new(),
        };
        // Migrations of one schema at a time are serialised by sqlx's lock; start in
        // parallel and wait for all.
        for service in SERVICES {
            cluster.spawn(service);
        }
        for service in SERVICES {
            cluster.wait_ready(service).await;
        }
        cluster
    }

    pub fn url(&self, service: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[service])
    }

    fn spawn(&mut self, service: &'static str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{service}.log")))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_petstore"))
            .args(["serve", service_of(service)])
            .env("PETSTORE_CONFIG", &self.config_path)
            .env_remove("PETSTORE_ENV")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn petstore");
        self.children.insert(service, child);
        *self.starts.entry(service).or_insert(0) += 1;
    }

    /// The port the service's latest start logged (`"message":"listening"`), if it has.
    fn logged_port(&self, service: &str) -> Option<u16> {
        let log = std::fs::read_to_string(self.log_dir.join(format!("{service}.log"))).ok()?;
        let starts = self.starts.get(service).copied().unwrap_or(0);
        let address = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == "listening")
            .nth(starts.checked_sub(1)?)?;
        address["address"].as_str()?.rsplit_once(':')?.1.parse().ok()
    }

    /// Polls `/ready` until 200, failing with the service's log after 90 s.
    pub async fn wait_ready(&mut self, service: &'static str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(port) = self.logged_port(service) {
                self.ports.insert(service, port);
            }
            if self.ports.contains_key(service)
                && let Ok(r) = self.http.get(self.url(service, "/ready")).send().await
                && r.status() == 200
            {
                return;
            }
            if let Some(child) = self.children.get_mut(service)
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{service} exited with {status}:\n{}", self.log(service));
            }
            assert!(Instant::now() < deadline, "{service} not ready in 90 s:\n{}", self.log(service));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self, service: &str) -> String {
        let text = std::fs::read_to_string(self.log_dir.join(format!("{service}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The service's whole log.
    pub fn full_log(&self, service: &str) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("{service}.log"))).unwrap_or_default()
    }

    /// SIGKILLs a service: no graceful shutdown, no offset commit, no outbox flush.
    pub async fn kill(&mut self, service: &'static str) {
        if let Some(mut child) = self.children.remove(service) {
            child.kill().await.expect("kill");
        }
        self.ports.remove(service);
    }

    /// Sends SIGTERM and waits (at most `limit`) for the service to exit; returns whether it
    /// exited successfully.
    pub async fn terminate(&mut self, service: &'static str, limit: Duration) -> bool {
        let Some(mut child) = self.children.remove(service) else { return false };
        let pid = child.id().expect("a running child has a pid");
        let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
        assert!(sent.success(), "kill -TERM {pid}");
        self.ports.remove(service);
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => status.expect("wait").success(),
            Err(_) => {
                let _ = child.kill().await;
                false
            }
        }
    }

    /// Starts one more instance of a service, named `<service>-<n>` (e.g. `order-2`): the
    /// same configuration, so the same consumer groups, its own port and log. `kill`,
    /// `restart` and `url` take the instance's name.
    pub async fn add_instance(&mut self, instance: &'static str) {
        assert!(SERVICES.contains(&service_of(instance)), "`{instance}` is not an instance of a service");
        self.spawn(instance);
        self.wait_ready(instance).await;
    }

    /// Starts a killed service again and waits until it is ready.
    pub async fn restart(&mut self, service: &'static str) {
        self.spawn(service);
        self.wait_ready(service).await;
    }

    pub async fn place_order(&self, customer: &str, pet_id: &str, payment_method: &str) -> (u16, Value) {
        let r = self.post_order(customer, pet_id, payment_method, None).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST /orders`, with `X-Correlation-ID` when given; the raw response.
    pub async fn post_order(
        &self,
        customer: &str,
        pet_id: &str,
        payment_method: &str,
        correlation_id: Option<&str>,
    ) -> reqwest::Response {
        let body = serde_json::json!({
            "pet_id": pet_id,
            "shipping_address": { "street": "742 Evergreen Terrace", "city": "Springfield", "postal_code": "49007", "country": "US" },
            "payment_method": payment_method,
        });
        let mut request =
            self.http.post(self.url("order", "/orders")).bearer_auth(self.token(customer, &["customer"])).json(&body);
        if let Some(id) = correlation_id {
            request = request.header("x-correlation-id", id);
        }
        request.send().await.expect("POST /orders")
    }

    /// A token of this cluster's issuer for `subject` with `roles`.
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        let settings = kit::Settings::with_overrides(&format!("auth: {{ hs256_secret: \"{}\" }}", secret_of(&self.id)))
            .expect("cluster auth settings");
        kit::testing::token(&settings, subject, roles)
    }

    /// `GET path` of `service` as the customer `customer`.
    pub async fn get_json(&self, service: &str, path: &str, customer: &str) -> (u16, Value) {
        self.get_as(service, path, &self.token(customer, &["customer"])).await
    }

    /// `GET path` of `service` as an administrator.
    pub async fn get_admin_json(&self, service: &str, path: &str) -> (u16, Value) {
        self.get_as(service, path, &self.token("e2e-admin", &["admin"])).await
    }

    async fn get_as(&self, service: &str, path: &str, token: &str) -> (u16, Value) {
        let r = self.http.get(self.url(service, path)).bearer_auth(token).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls the order's saga until it ends; panics with the services' logs after `limit`.
    pub async fn wait_for_saga_end(&self, order_id: &str, customer: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let (status, body) = self.get_json("orchestrator", &format!("/orders/{order_id}/status"), customer).await;
            if status == 200 && matches!(body["status"].as_str(), Some("completed" | "compensated" | "failed")) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let logs: Vec<String> = SERVICES.iter().map(|s| format!("--- {s}\n{}", self.log(s))).collect();
        panic!("saga of order {order_id} did not end in {limit:?}; last status {last}\n{}", logs.join("\n"));
    }

    /// Polls `check` until it returns `Some`, for at most `limit`.
    pub async fn eventually<T, F, Fut>(&self, what: &str, limit: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `service`'s `/metrics` has the sample `line` (name, labels and value):
    /// counters and gauges are updated a moment after the state they describe is visible
    /// through the API, so a test reads them with a deadline rather than once.
    pub async fn wait_for_metric(&self, service: &str, line: &str, limit: Duration) {
        self.eventually(&format!("{service} /metrics to show `{line}`"), limit, || async {
            let metrics = self.http.get(self.url(service, "/metrics")).send().await.ok()?.text().await.ok()?;
            metrics.lines().any(|l| l == line).then_some(())
        })
        .await;
    }

    /// A bus on the cluster's Kafka, with its topic prefix, for a test to publish what no
    /// service would (a command no participant understands, say). The context's shutdown
    /// token stops it.
    pub async fn bus(&self, service: &str) -> (messaging::Bus, kit::ServiceContext) {
        let overrides = format!(
            r#"messaging:
  default_backend: kafka
  topic_prefix: "e2e{id}."
  kafka: {{ brokers: "{brokers}" }}"#,
            id = self.id,
            brokers = env_or("KAFKA_BROKERS", "127.0.0.1:9092"),
        );
        let ctx = kit::testing::context(&overrides).await;
        let bus = messaging::Bus::new(&ctx.backends, &ctx.settings.messaging, service, ctx.shutdown.clone())
            .await
            .expect("a bus on the cluster's Kafka");
        (bus, ctx)
    }

    pub async fn count(&self, sql: &str, id: uuid::Uuid) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).bind(id).fetch_one(&self.db).await.expect(sql)
    }
}

impl Drop for Cluster {
    /// Stops the services and drops the test's database, also when the test failed, so
    /// repeated runs leave nothing behind.
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.start_kill();
        }
        let (server, name) = (self.server_url.clone(), self.db_name.clone());
        // Drop runs inside the test's runtime: do the async clean-up on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&server).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await;
                }
            });
        });
        let _ = cleanup.join();
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}
