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
