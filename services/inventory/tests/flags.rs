//! The catalog under the `redis_caching` flag, changed live by editing the flag file: off,
//! reads bypass the cache (`X-Cache: BYPASS`) and invalidations still run; back on, the cache
//! serves again — without a restart.

mod common;

use std::time::{Duration, Instant};

use common::Harness;

/// The project's flag file with `redis_caching` served as `variant`.
fn flags_with_caching(variant: &str) -> String {
    let mut doc: serde_json::Value =
        serde_json::from_str(include_str!("../../../config/flags.json")).expect("config/flags.json");
    doc["flags"]["redis_caching"]["defaultVariant"] = serde_json::json!(variant);
    doc.to_string()
}

async fn x_cache(h: &Harness, uri: &str) -> String {
    h.get(uri).await.x_cache.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_redis_caching_off_and_on_in_the_flag_file_takes_effect_live() {
    let dir = std::env::temp_dir().join(format!("petstore-flags-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("flags.json");
    std::fs::write(&file, flags_with_caching("on")).expect("write flags");
    let h = Harness::memory_with(serde_json::json!({ "flags": { "file": file } })).await;

    assert_eq!(x_cache(&h, "/pets/beagle-008").await, "MISS");
    assert_eq!(x_cache(&h, "/pets/beagle-008").await, "HIT");

    std::fs::write(&file, flags_with_caching("off")).expect("edit flags");
    let changed = Instant::now();
    while x_cache(&h, "/pets/beagle-008").await != "BYPASS" {
        assert!(changed.elapsed() < Duration::from_secs(1), "the edit was not in force within a second");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(x_cache(&h, "/pets?category=dog").await, "BYPASS", "listings too");

    // A broken edit is refused whole: the flags in force stay (still off).
    std::fs::write(
        &file,
        r#"{"flags": {"redis_caching": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "gone"}}}"#,
    )
    .expect("break flags");
    tokio::time::sleep(kit::flags::SETTLE * 4).await;
    assert_eq!(x_cache(&h, "/pets/beagle-008").await, "BYPASS", "the last good flags stay in force");

    std::fs::write(&file, flags_with_caching("on")).expect("restore flags");
    let changed = Instant::now();
    while x_cache(&h, "/pets/beagle-008").await == "BYPASS" {
        assert!(changed.elapsed() < Duration::from_secs(1), "the fix was not in force within a second");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(x_cache(&h, "/pets/beagle-008").await, "HIT", "the entry cached before is still good");
    let _ = std::fs::remove_dir_all(&dir);
}
