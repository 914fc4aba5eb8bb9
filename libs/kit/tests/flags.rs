//! Feature flags at run time: a malformed file stops start-up naming the key, evaluations are
//! counted per flag and variant, and the caller's token is the evaluation context.

use kit::{
    auth::Principal,
    config::FlagSettings,
    flags::{Flags, context_of},
};

fn settings(path: &std::path::Path) -> FlagSettings {
    FlagSettings { file: Some(path.to_path_buf()) }
}

#[test]
fn a_malformed_flag_file_stops_start_up_naming_the_file_and_the_key() {
    let dir = std::env::temp_dir().join(format!("petstore-flags-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("flags.json");
    std::fs::write(
        &file,
        r#"{"flags": {"redis_caching": {"state": "ON", "variants": {"on": true}, "defaultVariant": "on"}}}"#,
    )
    .expect("write");
    let err = Flags::load(&settings(&file)).expect_err("refused").to_string();
    assert!(err.contains("flags.file") && err.contains("flags.redis_caching.state"), "{err}");

    let missing = Flags::load(&settings(&dir.join("nope.json"))).expect_err("refused").to_string();
    assert!(missing.contains("flags.file") && missing.contains("nope.json"), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_callers_token_is_the_evaluation_context() {
    let flags = Flags::from_json(include_str!("../../../config/flags.json")).expect("project flags");
    let premium = Principal::new("alice".into(), vec!["customer".into()], Some("premium".into()));
    let standard = Principal::new("bob".into(), vec!["customer".into()], None);
    assert!(flags.enabled("premium_filters", &context_of(Some(&premium))));
    assert!(!flags.enabled("premium_filters", &context_of(Some(&standard))));
    assert!(!flags.enabled("premium_filters", &context_of(None)));
    assert_eq!(context_of(Some(&standard)).targeting_key(), Some("bob"));
    assert!(flags.evaluate("no_such_flag", &context_of(None)).is_none());
    assert_eq!(flags.number("fault_payment_failure_rate", &context_of(None)), 0.0);
}

#[test]
fn evaluations_are_counted_per_flag_and_variant() {
    let handle = kit::telemetry::metrics_handle().expect("the recorder");
    let flags = Flags::from_json(include_str!("../../../config/flags.json")).expect("project flags");
    for _ in 0..3 {
        flags.enabled("redis_caching", &context_of(None));
    }
    let metrics = handle.render();
    assert!(
        metrics.lines().any(|l| l.starts_with("petstore_flag_evaluations_total{")
            && l.contains("flag=\"redis_caching\"")
            && l.contains("variant=\"on\"")
            && l.ends_with(" 3")),
        "{metrics}"
    );
}

/// `petstore_flag_reload_failures_total` as rendered now (0 before the first failure).
fn reload_failures(handle: &metrics_exporter_prometheus::PrometheusHandle) -> u64 {
    handle
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("petstore_flag_reload_failures_total ")?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_the_flag_file_is_in_force_within_a_second_and_an_invalid_one_changes_nothing() {
    let handle = kit::telemetry::metrics_handle().expect("the recorder");
    let dir = std::env::temp_dir().join(format!("petstore-flags-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("flags.json");
    let project: serde_json::Value =
        serde_json::from_str(include_str!("../../../config/flags.json")).expect("project flags");
    let caching = |variant: &str| {
        let mut doc = project.clone();
        doc["flags"]["redis_caching"]["defaultVariant"] = serde_json::json!(variant);
        doc.to_string()
    };
    std::fs::write(&file, caching("on")).expect("write");
    let flags = Flags::load(&settings(&file)).expect("valid flags");
    let shutdown = tokio_util::sync::CancellationToken::new();
    flags.watch(&shutdown).expect("watching");
    let on = || flags.enabled("redis_caching", &context_of(None));
    assert!(on());

    std::fs::write(&file, caching("off")).expect("edit");
    let edited = std::time::Instant::now();
    while on() {
        assert!(edited.elapsed() < std::time::Duration::from_secs(1), "the edit is not in force after a second");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // Refused whole: the last good set stays in force, and the refusal is counted.
    let failures = reload_failures(&handle);
    std::fs::write(&file, caching("maybe")).expect("invalid edit");
    let edited = std::time::Instant::now();
    while reload_failures(&handle) == failures {
        assert!(edited.elapsed() < std::time::Duration::from_secs(5), "the invalid edit was not refused");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!on(), "the previous value keeps working");

    std::fs::write(&file, caching("on")).expect("fix");
    let edited = std::time::Instant::now();
    while !on() {
        assert!(edited.elapsed() < std::time::Duration::from_secs(1), "the fixed file is not in force after a second");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_update_swapping_its_data_symlink_is_picked_up() {
    use std::os::unix::fs::symlink;
    let dir = std::env::temp_dir().join(format!("petstore-configmap-{}", uuid::Uuid::now_v7().simple()));
    let project: serde_json::Value =
        serde_json::from_str(include_str!("../../../config/flags.json")).expect("project flags");
    // The layout the kubelet writes: flags.json -> ..data/flags.json, ..data -> ..<version>.
    let version = |name: &str, variant: &str| {
        let mut doc = project.clone();
        doc["flags"]["redis_caching"]["defaultVariant"] = serde_json::json!(variant);
        std::fs::create_dir_all(dir.join(name)).expect("version dir");
        std::fs::write(dir.join(name).join("flags.json"), doc.to_string()).expect("write");
    };
    version("..v1", "on");
    symlink("..v1", dir.join("..data")).expect("..data");
    symlink("..data/flags.json", dir.join("flags.json")).expect("flags.json");
    let flags = Flags::load(&settings(&dir.join("flags.json"))).expect("valid flags");
    let shutdown = tokio_util::sync::CancellationToken::new();
    flags.watch(&shutdown).expect("watching");
    assert!(flags.enabled("redis_caching", &context_of(None)));

    // An update: the new version beside the old, then ..data swapped to it in one rename.
    version("..v2", "off");
    symlink("..v2", dir.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    let swapped = std::time::Instant::now();
    while flags.enabled("redis_caching", &context_of(None)) {
        assert!(swapped.elapsed() < std::time::Duration::from_secs(1), "the swap is not in force after a second");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
