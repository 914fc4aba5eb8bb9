//! Helpers for the services' tests (feature `testing`): a fresh PostgreSQL database per
//! test and a [`ServiceContext`] built from YAML overrides.

use std::sync::Arc;

use messaging::Backends;
use sqlx::Connection;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{ServiceContext, Settings};

/// The PostgreSQL server tests use: `DATABASE_URL`, or the local default of `dev/infra.sh`.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty database with a random name and returns its URL.
pub async fn fresh_database() -> String {
    let server = server_url();
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&server).await.expect("connect to PostgreSQL (run dev/infra.sh)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let (base, _) = server.rsplit_once('/').expect("DATABASE_URL names a database");
    format!("{base}/{name}")
}

/// A context from the embedded defaults plus `overrides` (YAML), with its own shutdown
/// token and task tracker.
pub async fn context(overrides: &str) -> ServiceContext {
    crate::telemetry::metrics_handle();
    let settings = Settings::with_overrides(overrides).expect("test settings");
    let backends = Backends::connect(&settings.messaging).await.expect("bus backends");
    ServiceContext {
        settings: Arc::new(settings),
        backends,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
    }
}

/// A context whose services store in a fresh PostgreSQL database; the bus and cache stay
/// in memory unless `overrides` says otherwise. Returns the database URL too.
pub async fn postgres_context(overrides: &str) -> (ServiceContext, String) {
    let url = fresh_database().await;
    let ctx =
        context(&format!("storage: postgres\ndatabase: {{ url: \"{url}\", max_connections: 5 }}\n{overrides}")).await;
    (ctx, url)
}
