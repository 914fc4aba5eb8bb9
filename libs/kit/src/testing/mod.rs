//! Helpers for the services' tests (feature `testing`): a fresh PostgreSQL database per
//! test, a [`ServiceContext`] built from YAML overrides, tokens, and a test OIDC issuer.

pub mod issuer;

pub use issuer::{HostileCase, Issuer, hostile_cases};

use messaging::Backends;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::{ServiceContext, Settings};

/// The PostgreSQL server tests use: `DATABASE_URL`, or the local default of `dev/infra.sh`.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Test databases older than this are dropped by the next [`fresh_database`]: no test runs
/// that long, so they are left over (tests do not drop theirs: a failed test's database is
/// there to look at until then).
const TEST_DATABASE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(2 * 60 * 60);

/// Creates an empty database with a random name (`t_<UUIDv7>`, so its age shows in its name)
/// and returns its URL; first drops the test databases older than two hours.
pub async fn fresh_database() -> String {
    let server = server_url();
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&server).await.expect("connect to PostgreSQL (run dev/infra.sh)");
    drop_stale_test_databases(&mut admin).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let (base, _) = server.rsplit_once('/').expect("DATABASE_URL names a database");
    format!("{base}/{name}")
}

/// Drops `t_<UUIDv7>` databases created more than [`TEST_DATABASE_LIFETIME`] ago. Failures
/// are ignored: another test process may be dropping the same one.
async fn drop_stale_test_databases(admin: &mut sqlx::PgConnection) {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'")
        .fetch_all(&mut *admin)
        .await
        .unwrap_or_default();
    let now = std::time::SystemTime::now();
    for name in names {
        let created = uuid::Uuid::parse_str(&name[2..]).ok().and_then(|id| id.get_timestamp()).map(|t| {
            let (secs, nanos) = t.to_unix();
            std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos)
        });
        let stale = created.and_then(|c| now.duration_since(c).ok()).is_some_and(|age| age > TEST_DATABASE_LIFETIME);
        if stale {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut *admin).await;
        }
    }
}

/// A context from the embedded defaults plus `overrides` (YAML), with its own shutdown
/// token and task tracker.
pub async fn context(overrides: &str) -> ServiceContext {
    crate::telemetry::metrics_handle();
    assembled(Settings::with_overrides(overrides).expect("test settings")).await
}

/// A context from the embedded defaults with the YAML file at `path` over them, watched as a
/// process's `PETSTORE_CONFIG` file is: its live keys apply when it changes.
pub async fn file_context(path: &std::path::Path) -> ServiceContext {
    crate::telemetry::metrics_handle();
    assembled(Settings::from_file(path).expect("test settings")).await
}

async fn assembled(settings: Settings) -> ServiceContext {
    let backends = Backends::connect(&settings.messaging).await.expect("bus backends");
    ServiceContext::assemble(settings, backends, CancellationToken::new()).expect("test gate")
}

/// A context whose services store in a fresh PostgreSQL database; the bus and cache stay
/// in memory unless `overrides` says otherwise. Returns the database URL too.
pub async fn postgres_context(overrides: &str) -> (ServiceContext, String) {
    let url = fresh_database().await;
    let ctx =
        context(&format!("storage: postgres\ndatabase: {{ url: \"{url}\", max_connections: 5 }}\n{overrides}")).await;
    (ctx, url)
}

/// A bearer token for `subject` with `roles`, signed for `ctx`'s configuration (its HS256
/// development key source), valid for an hour.
pub fn token(settings: &Settings, subject: &str, roles: &[&str]) -> String {
    let request = crate::auth::TokenRequest {
        subject: subject.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        tier: None,
        ttl: std::time::Duration::from_secs(3600),
    };
    crate::auth::mint(&settings.auth, &request).expect("sign a test token")
}

/// `Bearer <token>` for `subject` with `roles`, accepted by the default configuration (what
/// [`context`] builds unless its overrides change `auth`).
pub fn bearer(subject: &str, roles: &[&str]) -> String {
    let defaults = Settings::with_overrides("{}").expect("default settings");
    format!("Bearer {}", token(&defaults, subject, roles))
}
