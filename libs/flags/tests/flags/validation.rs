//! A document with any problem is refused whole, and the error names the offending key.

use flags::{FlagError, FlagSet, Problem};
use serde_json::{Value, json};

use crate::targeted;

/// The key path and message of a refused document.
fn refusal(document: &Value) -> (String, String) {
    let error = FlagSet::parse(&document.to_string()).expect_err("refused");
    let FlagError::Invalid { path, .. } = &error else { panic!("refused for another reason: {error}") };
    (path.to_string(), error.to_string())
}

fn with_flag(flag: Value) -> Value {
    json!({ "flags": { "f": flag } })
}

fn boolean_flag() -> Value {
    json!({ "state": "ENABLED", "variants": { "on": true, "off": false }, "defaultVariant": "off" })
}

fn boolean_flag_with(key: &str, value: Value) -> Value {
    let mut flag = boolean_flag();
    flag[key] = value;
    flag
}

#[test]
fn a_default_variant_that_is_not_a_variant_is_refused_with_its_key_path() {
    let document = json!({ "flags": { "pricing_experiment": {
        "state": "ENABLED",
        "variants": { "control": "control", "discount_10": "discount_10" },
        "defaultVariant": "gold"
    }}});

    let error = FlagSet::parse(&document.to_string()).expect_err("refused");

    assert_eq!(error.to_string(), "flags.pricing_experiment.defaultVariant: `gold` is not one of the variants");
    assert!(matches!(error, FlagError::Invalid { problem: Problem::UnknownVariant(ref name), .. } if name == "gold"));
}

#[test]
fn every_refusal_names_the_offending_key_path() {
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("not an object", json!([]), "(document)", "expected an object, found an array"),
        ("no flags", json!({}), "flags", "is required"),
        ("unknown top-level key", json!({ "flags": {}, "flag": {} }), "flag", "unknown key"),
        (
            "unknown state",
            with_flag(boolean_flag_with("state", json!("ON"))),
            "flags.f.state",
            "`ON` is not a flag state",
        ),
        (
            "state of the wrong type",
            with_flag(boolean_flag_with("state", json!(true))),
            "flags.f.state",
            "expected a string",
        ),
        (
            "missing state",
            with_flag(json!({ "variants": { "on": true }, "defaultVariant": "on" })),
            "flags.f.state",
            "is required",
        ),
        (
            "unknown flag key",
            with_flag(boolean_flag_with("defaultvariant", json!("off"))),
            "flags.f.defaultvariant",
            "unknown key",
        ),
        (
            "no variants",
            with_flag(boolean_flag_with("variants", json!({}))),
            "flags.f.variants",
            "at least one variant",
        ),
        (
            "empty variant name",
            with_flag(boolean_flag_with("variants", json!({ "": true, "off": false }))),
            "flags.f.variants.",
            "must not be empty",
        ),
        (
            "mixed variant types",
            with_flag(boolean_flag_with("variants", json!({ "off": false, "on": "yes" }))),
            "flags.f.variants.on",
            "is a string but variant `off` is a boolean",
        ),
        (
            "null variant",
            with_flag(boolean_flag_with("variants", json!({ "off": false, "on": null }))),
            "flags.f.variants.on",
            "found null",
        ),
        (
            "default variant missing",
            with_flag(boolean_flag_with("defaultVariant", json!("maybe"))),
            "flags.f.defaultVariant",
            "`maybe` is not one of the variants",
        ),
        (
            "metadata of the wrong type",
            with_flag(boolean_flag_with("metadata", json!({ "owner": ["a"] }))),
            "flags.f.metadata.owner",
            "strings, numbers or booleans",
        ),
        (
            "targeting that is not an object",
            with_flag(targeted(json!("b"))),
            "flags.f.targeting",
            "expected a JsonLogic rule",
        ),
        (
            "unknown operator",
            with_flag(targeted(json!({ "if": [{ "frobnicate": [1] }, "b", null] }))),
            "flags.f.targeting.if[0]",
            "unknown operator `frobnicate`",
        ),
        (
            "object with two operators",
            with_flag(targeted(json!({ "==": [1, 1], "!=": [1, 2] }))),
            "flags.f.targeting",
            "exactly one operator key",
        ),
        (
            "too few arguments",
            with_flag(targeted(json!({ "if": [{ "==": [1] }, "b", null] }))),
            "flags.f.targeting.if[0].==",
            "`==` takes 2 argument(s), found 1",
        ),
        (
            "negative fractional weight",
            with_flag(targeted(json!({ "fractional": [["a", 50], ["b", -1]] }))),
            "flags.f.targeting.fractional[1][1]",
            "non-negative integer",
        ),
        (
            "fractional weight with a fraction",
            with_flag(targeted(json!({ "fractional": [["a", 50.5], ["b", 49.5]] }))),
            "flags.f.targeting.fractional[0][1]",
            "found 50.5",
        ),
        (
            "fractional weight as a string",
            with_flag(targeted(json!({ "fractional": [{ "var": "email" }, ["a", "50"], ["b", 50]] }))),
            "flags.f.targeting.fractional[1][1]",
            "found \"50\"",
        ),
        (
            "fractional weights past 2^31 - 1",
            with_flag(targeted(json!({ "fractional": [["a", 2_147_483_647_u64], ["b", 1]] }))),
            "flags.f.targeting.fractional",
            "more than 2147483647",
        ),
        (
            "fractional without buckets",
            with_flag(targeted(json!({ "fractional": [{ "var": "email" }] }))),
            "flags.f.targeting.fractional",
            "at least one",
        ),
        (
            "fractional bucket with three items",
            with_flag(targeted(json!({ "fractional": [["a", 1, 2]] }))),
            "flags.f.targeting.fractional[0]",
            "[variant, weight]",
        ),
        (
            "fractional bucket naming no variant",
            with_flag(targeted(json!({ "fractional": [["a", 50], ["gold", 50]] }))),
            "flags.f.targeting.fractional[1][0]",
            "`gold` is not one of the variants",
        ),
        (
            "sem_ver operator",
            with_flag(targeted(json!({ "if": [{ "sem_ver": [{ "var": "v" }, "=>", "1.0.0"] }, "b", null] }))),
            "flags.f.targeting.if[0].sem_ver[1]",
            "`=>` is not a sem_ver operator",
        ),
        (
            "sem_ver version",
            with_flag(targeted(json!({ "if": [{ "sem_ver": [{ "var": "v" }, ">=", "1.x"] }, "b", null] }))),
            "flags.f.targeting.if[0].sem_ver[2]",
            "`1.x` is not a semantic version",
        ),
        (
            "sem_ver arguments",
            with_flag(targeted(json!({ "sem_ver": ["1.0.0", "="] }))),
            "flags.f.targeting.sem_ver",
            "takes 3 argument(s), found 2",
        ),
        (
            "$ref to a missing evaluator",
            with_flag(targeted(json!({ "if": [{ "$ref": "is_vip" }, "b", null] }))),
            "flags.f.targeting.if[0].$ref",
            "no evaluator named `is_vip`",
        ),
        (
            "$ref that is not a name",
            with_flag(targeted(json!({ "$ref": 7 }))),
            "flags.f.targeting.$ref",
            "expected an evaluator name",
        ),
        (
            "evaluator with an unknown operator",
            json!({ "flags": {}, "$evaluators": { "is_vip": { "is": [{ "var": "tier" }, "vip"] } } }),
            "$evaluators.is_vip",
            "unknown operator `is`",
        ),
        (
            "evaluators in a loop",
            json!({ "flags": {}, "$evaluators": { "a": { "!": { "$ref": "b" } }, "b": { "!": { "$ref": "a" } } } }),
            "$evaluators.b.!.$ref",
            "a → b → a",
        ),
    ];
    for (case, document, path, message) in cases {
        let (found_path, found_message) = refusal(&document);
        assert_eq!(found_path, path, "case `{case}`: {found_message}");
        assert!(found_message.starts_with(&format!("{path}: ")), "case `{case}`: {found_message}");
        assert!(found_message.contains(message), "case `{case}`: `{found_message}` does not say `{message}`");
    }
}

#[test]
fn text_that_is_not_json_is_refused_as_such() {
    let error = FlagSet::parse("{ \"flags\": ").expect_err("refused");
    assert!(matches!(error, FlagError::Syntax(_)), "{error}");
}

#[test]
fn weights_may_be_whole_numbers_written_with_a_point_or_rules() {
    let flag = targeted(json!({ "fractional": [["a", 25.0], ["b", { "var": "rollout" }], ["c"]] }));
    assert!(FlagSet::parse(&with_flag(flag).to_string()).is_ok());
}

#[test]
fn an_empty_targeting_is_no_targeting() {
    let flags = crate::load_flag(targeted(json!({})));
    assert_eq!(flags.flag("f").expect("defined").targeting(), None);
}
