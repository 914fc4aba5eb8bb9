//! Configuration live reload, from a real file watched by a real context: a change of
//! `rate_limits` changes the quotas a served route answers with, a change of `log.level` the
//! log filter, a change of `resilience.circuit_breaker` the breakers; a change of any other
//! key is named in a warning and not applied; an invalid file is refused, named in an error
//! log and counted, and the configuration in force stays.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kit::{ServiceContext, Settings, resilience::CircuitBreaker};
use messaging::Backends;
use tokio_util::sync::CancellationToken;

/// How long a reload may take to show before a test gives up (not a speed check).
const PATIENCE: Duration = Duration::from_secs(15);

/// A configuration file in a directory of its own, removed at the end.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(yaml: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("petstore-live-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = Self { path: dir.join("petstore.yaml"), dir };
        file.write(yaml);
        file
    }

    /// Replaces the file's content as an editor saving it would.
    fn write(&self, yaml: &str) {
        std::fs::write(&self.path, yaml).expect("write the configuration file");
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A context assembled from `file`, as a process started with `PETSTORE_CONFIG=<file>` has.
async fn context(file: &ConfigFile) -> ServiceContext {
    kit::telemetry::metrics_handle();
    let settings = Settings::from_file(file.path()).expect("the configuration file loads");
    assert_eq!(settings.sources().map(kit::ConfigSources::files), Some(vec![file.path().to_path_buf()]));
    let backends = Backends::connect(&settings.messaging).await.expect("bus backends");
    ServiceContext::assemble(settings, backends, CancellationToken::new()).expect("context")
}

/// Serves the ops routes behind `ctx`'s gate; returns the base URL.
async fn serve(ctx: &ServiceContext) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = kit::app(Vec::new(), &ctx.gate);
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
    format!("http://{addr}")
}

/// `GET /health`: its status and `X-RateLimit-Limit`.
async fn health(base: &str) -> (u16, String) {
    let response = reqwest::get(format!("{base}/health")).await.expect("GET /health");
    let limit = response.headers().get("x-ratelimit-limit").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (response.status().as_u16(), limit)
}

/// Waits until `done` holds, for at most [`PATIENCE`]; panics naming `what` otherwise.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Log lines written on this thread (the test's runtime is single-threaded, so the reloads'
/// too) while the guard lives.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }

    /// The lines at `level` (`WARN`, `ERROR`, …).
    fn at(&self, level: &str) -> Vec<String> {
        self.text().lines().filter(|l| l.contains(&format!(" {level} "))).map(str::to_owned).collect()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `petstore_config_reload_failures_total` now.
fn reload_failures() -> u64 {
    let text = kit::telemetry::metrics_handle().expect("the recorder").render();
    text.lines()
        .find_map(|l| l.strip_prefix("petstore_config_reload_failures_total "))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

const HEALTH_QUOTA: &str = r#"rate_limits: { routes: { "GET /health": { requests: 1000, per: 1s, burst: 1000 } } }"#;

#[tokio::test]
async fn a_changed_quota_applies_to_the_route_without_a_restart() {
    let (logs, _guard) = Logs::capture();
    let file = ConfigFile::new(HEALTH_QUOTA);
    let ctx = context(&file).await;
    let base = serve(&ctx).await;
    assert_eq!(health(&base).await, (200, "1000".to_owned()));

    file.write(r#"rate_limits: { routes: { "GET /health": { requests: 1, per: 1h, burst: 2 } } }"#);
    // The first answer with the new quota took one of its two requests.
    eventually("the new quota", async || health(&base).await == (200, "2".to_owned())).await;
    assert_eq!(health(&base).await, (200, "2".to_owned()));
    assert_eq!(health(&base).await.0, 429, "a request beyond the new burst");

    assert_eq!(ctx.live.current().rate_limits.routes["GET /health"].burst.get(), 2);
    assert_eq!(ctx.settings.rate_limits.routes["GET /health"].burst.get(), 1000, "the start-up snapshot stays");
    let applied = logs.text();
    assert!(applied.contains("applied rate_limits.routes.GET /health.burst"), "{applied}");
    assert!(logs.at("WARN").is_empty(), "a live key needs no restart: {:?}", logs.at("WARN"));
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn a_changed_log_level_swaps_the_log_filter() {
    let file = ConfigFile::new("log: { format: json, level: info }");
    let settings = Settings::from_file(file.path()).expect("loads");
    let _telemetry = kit::telemetry::init(&settings, "live-config-test");
    let ctx = context(&file).await;
    let at_start = kit::telemetry::log_filter().expect("init installed a swappable filter");

    file.write("log: { format: json, level: 'debug,kit=trace' }");
    eventually("the new filter", async || {
        kit::telemetry::log_filter().is_some_and(|f| f.contains("kit=trace") && f != at_start)
    })
    .await;
    assert!(tracing::enabled!(target: "kit", tracing::Level::TRACE), "kit's trace events pass now");
    assert_eq!(ctx.live.current().log.level, "debug,kit=trace");
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn breakers_read_the_thresholds_in_force() {
    let file = ConfigFile::new("resilience: { circuit_breaker: { failure_threshold: 5 } }");
    let ctx = context(&file).await;
    let breaker = CircuitBreaker::live("live_test", ctx.breaker_settings());
    assert_eq!(breaker.settings().failure_threshold, 5);

    file.write("resilience: { circuit_breaker: { failure_threshold: 1, open_for_ms: 60000 } }");
    eventually("the new threshold", async || breaker.settings().failure_threshold == 1).await;
    let _ = breaker.call(async { Err::<(), _>("down") }).await;
    assert_eq!(breaker.state(), kit::resilience::BreakerState::Open, "one failure opens it now");
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn a_key_that_needs_a_restart_is_named_and_not_applied() {
    let (logs, _guard) = Logs::capture();
    let file = ConfigFile::new("database: { url: 'postgres://db-a/petstore' }");
    let ctx = context(&file).await;
    let before = ctx.live.current();

    file.write("database: { url: 'postgres://user:secret@db-b/petstore' }\nhttp: { port: 9999 }");
    eventually("the warnings", async || logs.at("WARN").len() >= 2).await;
    let warnings = logs.at("WARN").join("\n");
    assert!(warnings.contains("database.url changed; it needs a restart to apply"), "{warnings}");
    assert!(warnings.contains("http.port changed; it needs a restart to apply"), "{warnings}");
    assert!(!logs.text().contains("secret"), "values are never logged: {}", logs.text());
    assert!(Arc::ptr_eq(&before, &ctx.live.current()), "nothing applied");
    assert_eq!(ctx.live.current().database.url, "postgres://db-a/petstore");
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn an_invalid_file_is_refused_and_the_quotas_in_force_stay() {
    let (logs, _guard) = Logs::capture();
    let file = ConfigFile::new(r#"rate_limits: { routes: { "GET /health": { requests: 1, per: 1h, burst: 3 } } }"#);
    let ctx = context(&file).await;
    let base = serve(&ctx).await;
    let failures = reload_failures();

    // A negative quota, next to a larger one for the route that must not apply either.
    file.write(
        r#"rate_limits:
  authenticated: { requests: -1, per: 1s, burst: 10 }
  routes: { "GET /health": { requests: 1000, per: 1s, burst: 1000 } }"#,
    );
    eventually("the refusal", async || !logs.at("ERROR").is_empty()).await;
    let error = logs.at("ERROR").join("\n");
    assert!(error.contains("rate_limits.authenticated.requests"), "names the key: {error}");
    assert!(error.contains("configuration in force stays"), "{error}");
    assert_eq!(reload_failures(), failures + 1);
    for _ in 0..3 {
        assert_eq!(health(&base).await, (200, "3".to_owned()), "the previous quota");
    }
    assert_eq!(health(&base).await.0, 429, "the previous quota's burst is spent");

    // A log level that is not a filter directive.
    file.write("log: { level: 'info,kit=loud' }");
    eventually("the second refusal", async || logs.at("ERROR").len() >= 2).await;
    let error = logs.at("ERROR").join("\n");
    assert!(error.contains("log.level: not a tracing filter directive"), "{error}");
    assert_eq!(reload_failures(), failures + 2);
    assert_eq!(ctx.live.current().log.level, "info");
    assert!(logs.at("WARN").is_empty(), "{:?}", logs.at("WARN"));
    ctx.shutdown.cancel();
}
