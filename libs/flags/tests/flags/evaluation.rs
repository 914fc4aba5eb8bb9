//! Evaluation follows flagd: reasons, targeting operators, `$ref`, injected `$flagd` properties,
//! typed getters.

use std::time::{SystemTime, UNIX_EPOCH};

use flags::{EvaluationContext, EvaluationError, FlagSet, FlagValue, Reason, TargetingError};
use serde_json::json;

use crate::{load, load_flag, targeted};

fn string(value: &str) -> FlagValue {
    FlagValue::String(value.to_owned())
}

#[test]
fn a_disabled_flag_serves_its_default_with_reason_disabled() {
    let mut flag = targeted(json!({ "if": [true, "b", null] }));
    flag["state"] = json!("DISABLED");
    let flags = load_flag(flag);

    let evaluation = flags.evaluate("f", &EvaluationContext::for_key("c-1")).expect("evaluates");

    assert_eq!(
        (evaluation.value, evaluation.variant.as_str(), evaluation.reason),
        (string("A"), "a", Reason::Disabled)
    );
}

#[test]
fn a_flag_without_targeting_serves_its_default_with_reason_static() {
    let flags =
        load_flag(json!({ "state": "ENABLED", "variants": { "on": true, "off": false }, "defaultVariant": "on" }));

    let evaluation = flags.evaluate("f", &EvaluationContext::new()).expect("evaluates");

    assert_eq!(
        (evaluation.value, evaluation.variant.as_str(), evaluation.reason),
        (FlagValue::Bool(true), "on", Reason::Static)
    );
}

#[test]
fn targeting_that_names_a_variant_serves_it_with_reason_targeting_match() {
    let flags = load_flag(targeted(json!({ "if": [{ "==": [{ "var": "tier" }, "premium"] }, "b", null] })));

    let evaluation =
        flags.evaluate("f", &EvaluationContext::for_key("c-1").with("tier", "premium")).expect("evaluates");

    assert_eq!(
        (evaluation.value, evaluation.variant.as_str(), evaluation.reason),
        (string("B"), "b", Reason::TargetingMatch)
    );
    assert_eq!(evaluation.error, None);
}

#[test]
fn targeting_that_returns_null_serves_the_default_with_reason_default() {
    let flags = load_flag(targeted(json!({ "if": [{ "==": [{ "var": "tier" }, "premium"] }, "b", null] })));

    let evaluation = flags.evaluate("f", &EvaluationContext::for_key("c-1").with("tier", "basic")).expect("evaluates");

    assert_eq!((evaluation.value, evaluation.variant.as_str(), evaluation.reason), (string("A"), "a", Reason::Default));
}

#[test]
fn targeting_that_names_no_variant_serves_the_default_with_reason_error() {
    let flags = load_flag(targeted(json!({ "var": "wanted" })));

    let evaluation = flags.evaluate("f", &EvaluationContext::new().with("wanted", "gold")).expect("evaluates");

    assert_eq!((evaluation.value, evaluation.reason), (string("A"), Reason::Error));
    assert_eq!(evaluation.error, Some(TargetingError::NoSuchVariant { variant: "gold".to_owned() }));
}

#[test]
fn targeting_that_fails_or_returns_a_list_serves_the_default_with_reason_error() {
    let failing = load_flag(targeted(json!({ "+": [1, { "var": "tier" }] })));
    let evaluation = failing.evaluate("f", &EvaluationContext::new().with("tier", "premium")).expect("evaluates");
    assert_eq!(evaluation.reason, Reason::Error);
    assert!(matches!(evaluation.error, Some(TargetingError::Rule { .. })), "{:?}", evaluation.error);

    let listing = load_flag(targeted(json!({ "merge": [["b"], ["c"]] })));
    let evaluation = listing.evaluate("f", &EvaluationContext::new()).expect("evaluates");
    assert_eq!(evaluation.reason, Reason::Error);
    assert!(matches!(evaluation.error, Some(TargetingError::UnusableResult { .. })), "{:?}", evaluation.error);
}

#[test]
fn a_boolean_result_names_the_true_or_false_variant() {
    let flags = load_flag(json!({
        "state": "ENABLED",
        "variants": { "true": "premium look", "false": "standard look" },
        "defaultVariant": "false",
        "targeting": { "==": [{ "var": "tier" }, "premium"] }
    }));

    let premium = flags.evaluate("f", &EvaluationContext::new().with("tier", "premium")).expect("evaluates");
    let basic = flags.evaluate("f", &EvaluationContext::new().with("tier", "basic")).expect("evaluates");

    assert_eq!((premium.variant.as_str(), premium.reason), ("true", Reason::TargetingMatch));
    assert_eq!((basic.variant.as_str(), basic.reason), ("false", Reason::TargetingMatch));
}

#[test]
fn targeting_operators_pick_variants_as_in_flagd() {
    let customer = || EvaluationContext::for_key("c-1");
    let cases = [
        ("tier is premium", json!({ "==": [{ "var": "tier" }, "premium"] }), customer().with("tier", "premium"), true),
        (
            "tier is not premium",
            json!({ "==": [{ "var": "tier" }, "premium"] }),
            customer().with("tier", "basic"),
            false,
        ),
        ("no tier", json!({ "==": [{ "var": "tier" }, "premium"] }), customer(), false),
        (
            "role listed",
            json!({ "in": ["admin", { "var": "roles" }] }),
            customer().with("roles", json!(["staff", "admin"])),
            true,
        ),
        (
            "role not listed",
            json!({ "in": ["admin", { "var": "roles" }] }),
            customer().with("roles", json!(["staff"])),
            false,
        ),
        (
            "starts_with",
            json!({ "starts_with": [{ "var": "email" }, "vet."] }),
            customer().with("email", "vet.ana@example.com"),
            true,
        ),
        (
            "not starts_with",
            json!({ "starts_with": [{ "var": "email" }, "vet."] }),
            customer().with("email", "ana@example.com"),
            false,
        ),
        (
            "starts_with on a number",
            json!({ "starts_with": [{ "var": "email" }, "vet."] }),
            customer().with("email", 7),
            false,
        ),
        (
            "ends_with",
            json!({ "ends_with": [{ "var": "email" }, "@petstore.example"] }),
            customer().with("email", "ana@petstore.example"),
            true,
        ),
        (
            "not ends_with",
            json!({ "ends_with": [{ "var": "email" }, "@petstore.example"] }),
            customer().with("email", "ana@example.com"),
            false,
        ),
        (
            "sem_ver at least",
            json!({ "sem_ver": [{ "var": "app_version" }, ">=", "2.1.0"] }),
            customer().with("app_version", "v2.3.0"),
            true,
        ),
        (
            "sem_ver below",
            json!({ "sem_ver": [{ "var": "app_version" }, ">=", "2.1.0"] }),
            customer().with("app_version", "2.0.9"),
            false,
        ),
        (
            "sem_ver same minor",
            json!({ "sem_ver": [{ "var": "app_version" }, "~", "2.1.0"] }),
            customer().with("app_version", "2.1.7"),
            true,
        ),
        (
            "sem_ver same major",
            json!({ "sem_ver": [{ "var": "app_version" }, "^", "2.0.0"] }),
            customer().with("app_version", "3.0.0"),
            false,
        ),
        (
            "sem_ver garbage",
            json!({ "sem_ver": [{ "var": "app_version" }, ">=", "2.1.0"] }),
            customer().with("app_version", "latest"),
            false,
        ),
        (
            "channel and category",
            json!({ "and": [{ "==": [{ "var": "channel" }, "mobile"] }, { "in": [{ "var": "pet_category" }, ["dog", "cat"]] }] }),
            customer().with("channel", "mobile").with("pet_category", "cat"),
            true,
        ),
    ];
    for (case, condition, context, matches) in cases {
        let flags = load_flag(targeted(json!({ "if": [condition, "b", null] })));

        let evaluation = flags.evaluate("f", &context).expect("evaluates");

        let expected = if matches { ("b", Reason::TargetingMatch) } else { ("a", Reason::Default) };
        assert_eq!((evaluation.variant.as_str(), evaluation.reason), expected, "case `{case}`");
    }
}

#[test]
fn a_ref_uses_the_shared_evaluator() {
    let flags = load(&json!({
        "flags": {
            "f": targeted(json!({ "if": [{ "$ref": "is_staff" }, "b", null] })),
            "g": targeted(json!({ "if": [{ "!": { "$ref": "is_staff" } }, "c", null] }))
        },
        "$evaluators": {
            "is_staff": { "or": [{ "$ref": "is_admin" }, { "in": ["staff", { "var": "roles" }] }] },
            "is_admin": { "in": ["admin", { "var": "roles" }] }
        }
    }));
    let admin = EvaluationContext::for_key("c-1").with("roles", json!(["admin"]));
    let customer = EvaluationContext::for_key("c-2").with("roles", json!(["customer"]));

    assert_eq!(flags.evaluate("f", &admin).expect("evaluates").variant, "b");
    assert_eq!(flags.evaluate("f", &customer).expect("evaluates").variant, "a");
    assert_eq!(flags.evaluate("g", &admin).expect("evaluates").variant, "a");
    assert_eq!(flags.evaluate("g", &customer).expect("evaluates").variant, "c");
}

#[test]
fn rules_see_the_flag_key_and_the_time_as_flagd_injects_them() {
    let before = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let flags = load(&json!({ "flags": {
        "own_key": targeted(json!({ "if": [{ "==": [{ "var": "$flagd.flagKey" }, "own_key"] }, "b", "c"] })),
        "clock": targeted(json!({ "if": [{ ">=": [{ "var": "$flagd.timestamp" }, before] }, "b", "c"] }))
    }}));
    // A caller's own `$flagd` does not get through.
    let context = EvaluationContext::new().with("$flagd", json!({ "flagKey": "forged", "timestamp": 0 }));

    assert_eq!(flags.evaluate("own_key", &context).expect("evaluates").variant, "b");
    assert_eq!(flags.evaluate("clock", &context).expect("evaluates").variant, "b");
}

#[test]
fn typed_getters_read_their_type_and_refuse_others() {
    let flags = load(&json!({ "flags": {
        "switch": { "state": "ENABLED", "variants": { "on": true, "off": false }, "defaultVariant": "on" },
        "arm": { "state": "ENABLED", "variants": { "control": "control" }, "defaultVariant": "control" },
        "rate": { "state": "ENABLED", "variants": { "low": 0.25 }, "defaultVariant": "low" },
        "delay": { "state": "ENABLED", "variants": { "slow": 500, "slower": 750.0 }, "defaultVariant": "slow" }
    }}));
    let context = EvaluationContext::new();

    assert_eq!(flags.bool("switch", &context), Ok(true));
    assert_eq!(flags.string("arm", &context), Ok("control".to_owned()));
    assert_eq!(flags.f64("rate", &context), Ok(0.25));
    assert_eq!(flags.i64("delay", &context), Ok(500));
    assert_eq!(flags.f64("delay", &context), Ok(500.0));
    assert!(matches!(flags.bool("arm", &context), Err(EvaluationError::TypeMismatch { .. })));
    assert!(matches!(flags.i64("rate", &context), Err(EvaluationError::TypeMismatch { .. })));
    assert_eq!(flags.bool("nope", &context), Err(EvaluationError::FlagNotFound("nope".to_owned())));
}

#[test]
fn an_evaluation_serializes_with_flagds_reason_names() {
    let flags = load_flag(targeted(json!({ "var": "wanted" })));

    let matched = flags.evaluate("f", &EvaluationContext::new().with("wanted", "b")).expect("evaluates");
    let failed = flags.evaluate("f", &EvaluationContext::new().with("wanted", "gold")).expect("evaluates");

    assert_eq!(
        serde_json::to_value(matched).expect("serializes"),
        json!({ "value": "B", "variant": "b", "reason": "TARGETING_MATCH" })
    );
    assert_eq!(
        serde_json::to_value(failed).expect("serializes"),
        json!({ "value": "A", "variant": "a", "reason": "ERROR", "error": { "kind": "no_such_variant", "variant": "gold" } })
    );
}

#[test]
fn a_flag_set_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<FlagSet>();
}
