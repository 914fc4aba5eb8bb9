//! The project's flag file, `config/flags.json`, loads and behaves as the services expect.

use flags::{EvaluationContext, FlagKind, FlagSet, Reason};
use serde_json::Value;

const FLAGS_FILE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/flags.json"));

fn project_flags() -> FlagSet {
    FlagSet::parse(FLAGS_FILE).unwrap_or_else(|error| panic!("config/flags.json refused: {error}"))
}

#[test]
fn the_flag_file_defines_every_project_flag_with_its_type_and_default() {
    let flags = project_flags();
    let anyone = EvaluationContext::for_key("c-1");
    let expected: [(&str, FlagKind, Value); 9] = [
        ("express_order_processing", FlagKind::Boolean, false.into()),
        ("redis_caching", FlagKind::Boolean, true.into()),
        ("pricing_experiment", FlagKind::String, "control".into()),
        ("premium_filters", FlagKind::Boolean, false.into()),
        ("fault_payment_failure_rate", FlagKind::Number, 0.into()),
        ("fault_payment_latency_ms", FlagKind::Number, 0.into()),
        ("fault_inventory_latency_ms", FlagKind::Number, 0.into()),
        ("fault_cache_outage", FlagKind::Boolean, false.into()),
        ("fault_handler_failure_rate", FlagKind::Number, 0.into()),
    ];

    assert_eq!(flags.document().flags().len(), expected.len());
    for (key, kind, default) in expected {
        let flag = flags.flag(key).unwrap_or_else(|| panic!("{key} is not defined"));
        assert_eq!(flag.kind(), kind, "{key}");
        assert_eq!(serde_json::to_value(flag.default_value()).expect("serializes"), default, "{key}");
        if flag.targeting().is_none() {
            assert_eq!(flags.evaluate(key, &anyone).expect("evaluates").reason, Reason::Static, "{key}");
        }
    }
}

#[test]
fn premium_filters_are_on_for_premium_customers_only() {
    let flags = project_flags();

    let premium = EvaluationContext::for_key("c-1").with("tier", "premium");
    let basic = EvaluationContext::for_key("c-2").with("tier", "basic");

    assert_eq!(flags.bool("premium_filters", &premium), Ok(true));
    assert_eq!(flags.bool("premium_filters", &basic), Ok(false));
    assert_eq!(flags.bool("premium_filters", &EvaluationContext::new()), Ok(false));
}

#[test]
fn the_fault_flags_inject_nothing_by_default_on_any_channel() {
    let flags = project_flags();

    for context in
        [EvaluationContext::for_key("c-1"), EvaluationContext::for_key("c-1").with("channel", "payment-commands")]
    {
        for rate in ["fault_payment_failure_rate", "fault_handler_failure_rate"] {
            assert_eq!(flags.f64(rate, &context), Ok(0.0), "{rate} {context:?}");
        }
        for latency in ["fault_payment_latency_ms", "fault_inventory_latency_ms"] {
            assert_eq!(flags.i64(latency, &context), Ok(0), "{latency} {context:?}");
        }
        assert_eq!(flags.bool("fault_cache_outage", &context), Ok(false));
    }
    // The drill's targeting runs (no error) and drills no channel until one is listed.
    let drill = flags
        .evaluate("fault_handler_failure_rate", &EvaluationContext::new().with("channel", "payment-commands"))
        .expect("evaluates");
    assert_eq!((drill.reason, drill.error), (Reason::Default, None));
}

#[test]
fn the_pricing_experiment_puts_customers_in_all_three_arms() {
    let flags = project_flags();

    let arms: std::collections::BTreeSet<String> = (0..300)
        .map(|i| flags.string("pricing_experiment", &EvaluationContext::for_key(format!("c-{i}"))).expect("a string"))
        .collect();

    assert_eq!(arms.into_iter().collect::<Vec<_>>(), ["control", "discount_10", "premium_plus_5"]);
}

#[test]
fn the_definitions_serialize_back_to_the_file_as_written() {
    let flags = project_flags();
    let file: Value = serde_json::from_str(FLAGS_FILE).expect("JSON");

    assert_eq!(serde_json::to_value(flags.document()).expect("serializes"), file);
}
