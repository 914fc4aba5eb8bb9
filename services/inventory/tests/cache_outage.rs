//! The catalog cache is a soft dependency: with Redis unreachable the inventory starts, serves
//! the catalog from storage (`X-Cache: MISS`, never an error), handles commands, and stays
//! ready; with Redis up `/ready` reports every dependency.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Harness, eventually};
use contracts::inventory::PetReserved;

/// A closed port: connecting is refused at once.
const REFUSED: &str = "redis://127.0.0.1:1";

/// A port that accepts connections and never answers: without timeouts every cache call
/// would hang. The listener must outlive the test.
fn silent_redis() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("redis://{}", listener.local_addr().expect("address"));
    (listener, url)
}

async fn with_dead_redis(url: &str) -> Harness {
    let overrides = serde_json::json!({ "cache": { "backend": "redis", "redis_url": url } });
    let started = Instant::now();
    let h = Harness::start(&overrides.to_string(), None).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{url}: start-up took {:?}", started.elapsed());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_catalog_is_served_from_storage() {
    let (_silent, silent_url) = silent_redis();
    for url in [REFUSED, &silent_url] {
        let h = with_dead_redis(url).await;
        for uri in ["/pets?category=fish", "/pets?category=fish", "/pets/goldfish-004", "/pets/goldfish-004"] {
            let started = Instant::now();
            let reply = h.get(uri).await;
            assert_eq!(reply.status, StatusCode::OK, "{url} {uri}: {}", reply.body);
            assert_eq!(reply.x_cache.as_deref(), Some("MISS"), "{url} {uri}");
            assert!(started.elapsed() < Duration::from_secs(2), "{url} {uri}: took {:?}", started.elapsed());
        }
        assert_eq!(h.get("/pets/goldfish-004").await.body["price"], "25.00", "{url}");
        assert_eq!(h.get("/pets/no-such-pet").await.status, StatusCode::NOT_FOUND, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_commands_still_change_the_catalog() {
    let h = with_dead_redis(REFUSED).await;
    let saga = h.reserve("goldfish-004").await;
    h.reply::<PetReserved>(saga.saga_id).await;
    eventually("the reservation to show", async || {
        (h.get("/pets/goldfish-004").await.body["status"] == "reserved").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_service_stays_ready_and_says_the_cache_is_degraded() {
    let h = with_dead_redis(REFUSED).await;
    let ready = h.ready().await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    let checks = &ready.body["checks"];
    assert!(checks.get("cache_degraded").is_some(), "{checks}");
    assert!(checks.get("cache").is_none(), "{checks}");
    assert_eq!(checks["catalog_cache"]["status"], "up", "the breaker is closed until reads fail: {checks}");

    // Reads keep failing: the breaker opens, reads skip Redis, and `/ready` says so while the
    // service stays ready.
    for _ in 0..6 {
        assert_eq!(h.get("/pets/goldfish-004").await.status, StatusCode::OK);
    }
    let ready = h.ready().await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    let breaker = &ready.body["checks"]["catalog_cache"];
    assert_eq!(breaker["status"], "degraded", "{}", ready.body);
    assert_eq!(breaker["error"], "circuit breaker open", "{}", ready.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_comes_back_by_itself_when_redis_does() {
    // A free port: nothing listens on it yet, so Redis is "down" at start-up.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let overrides = serde_json::json!({ "cache": {
        "backend": "redis",
        "redis_url": format!("redis://127.0.0.1:{port}"),
        "key_prefix": format!("test:{}:", uuid::Uuid::now_v7().simple()),
    } });
    let h = Harness::start(&overrides.to_string(), None).await;
    assert_eq!(h.get("/pets/goldfish-004").await.x_cache.as_deref(), Some("MISS"));
    assert_eq!(
        h.get("/pets/goldfish-004").await.x_cache.as_deref(),
        Some("MISS"),
        "nothing is cached while Redis is down"
    );

    // Redis comes up on that port (a proxy to the real one).
    let redis =
        std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let upstream = redis.trim_start_matches("redis://").trim_end_matches('/').to_owned();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("take over the port");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    eventually("the cache to serve hits again", async || {
        h.get("/pets/goldfish-004").await;
        (h.get("/pets/goldfish-004").await.x_cache.as_deref() == Some("HIT")).then_some(())
    })
    .await;
    let ready = h.ready().await;
    assert!(ready.body["checks"].get("cache").is_some(), "{}", ready.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_checks_postgres_the_bus_and_redis() {
    let h = Harness::postgres_redis().await;
    let ready = h.ready().await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    for check in ["postgres", "bus", "cache"] {
        assert_eq!(ready.body["checks"][check]["status"], "up", "{check}: {}", ready.body);
    }
}
