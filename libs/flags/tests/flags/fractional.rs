//! `fractional` buckets exactly as flagd 0.15 and later do, spreads customers by weight, and
//! keeps each customer in their bucket.

use std::collections::BTreeMap;

use flags::{EvaluationContext, FlagSet, Reason};
use serde_json::{Value, json};

use crate::{load, load_flag, targeted};

/// Flag `key` with colour variants and this targeting.
fn colours(key: &str, targeting: Value) -> FlagSet {
    load(&json!({ "flags": { key: {
        "state": "ENABLED",
        "variants": { "red": "#FF0000", "blue": "#0000FF", "green": "#00FF00", "yellow": "#FFFF00" },
        "defaultVariant": "red",
        "targeting": targeting
    }}}))
}

fn variant(flags: &FlagSet, key: &str, context: &EvaluationContext) -> (String, Reason) {
    let evaluation = flags.evaluate(key, context).expect("evaluates");
    (evaluation.variant, evaluation.reason)
}

#[test]
fn flag_user_hashes_into_bucket_56_which_is_a_of_a60_b40() {
    // murmur3("flag-user") = 2410693464; (2410693464 * 100) >> 32 = 56 < 60. The percentage
    // formula of the Rust flagd engine 0.0.x/0.2.x answers `b` here.
    let split = |bucket_by: Option<Value>| {
        let buckets = [json!(["a", 60]), json!(["b", 40])];
        let arguments: Vec<Value> = bucket_by.into_iter().chain(buckets).collect();
        json!({
            "state": "ENABLED",
            "variants": { "a": "A", "b": "B" },
            "defaultVariant": "b",
            "targeting": { "fractional": arguments }
        })
    };
    let flags = load(&json!({ "flags": {
        // flagKey + targetingKey
        "flag": split(None),
        // An explicit bucketing value built the same way.
        "flag_": split(Some(json!({ "cat": ["flag", "-", { "var": "targetingKey" }] })))
    }}));

    let implicit = variant(&flags, "flag", &EvaluationContext::for_key("-user"));
    let explicit = variant(&flags, "flag_", &EvaluationContext::for_key("user"));

    assert_eq!(implicit, ("a".to_owned(), Reason::TargetingMatch));
    assert_eq!(explicit, ("a".to_owned(), Reason::TargetingMatch));
}

#[test]
fn ten_thousand_customers_split_within_3_percent_of_the_weights_and_stay_put() {
    let document = json!({ "flags": { "pricing_experiment": {
        "state": "ENABLED",
        "variants": { "control": "control", "discount_10": "discount_10", "premium_plus_5": "premium_plus_5" },
        "defaultVariant": "control",
        "targeting": { "fractional": [["control", 50], ["discount_10", 25], ["premium_plus_5", 25]] }
    }}});
    let flags = load(&document);
    let reloaded = load(&document);
    let customers: Vec<String> = (0..10_000).map(|i| format!("cust-{i:05}-{}", i * 7919 % 10_007)).collect();

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for customer in &customers {
        let context = EvaluationContext::for_key(customer.as_str());
        let (arm, reason) = variant(&flags, "pricing_experiment", &context);
        assert_eq!(reason, Reason::TargetingMatch);
        for again in [&flags, &flags, &reloaded] {
            assert_eq!(variant(again, "pricing_experiment", &context).0, arm, "customer {customer} moved");
        }
        *counts.entry(arm).or_default() += 1;
    }

    for (arm, weight) in [("control", 0.50), ("discount_10", 0.25), ("premium_plus_5", 0.25)] {
        let share = counts.get(arm).copied().unwrap_or_default() as f64 / customers.len() as f64;
        assert!((share - weight).abs() <= 0.03, "{arm}: {share:.4} of customers, weight {weight}; counts {counts:?}");
    }
}

#[test]
fn buckets_match_flagds_own_answers() {
    // Expected variants as flagd's Go evaluator answers them (its fractional tests).
    let four_ways = |bucket_by: Value| json!({ "fractional": [bucket_by, ["red", 25], ["blue", 25], ["green", 25], ["yellow", 25]] });
    let email = |address: &str| EvaluationContext::new().with("email", address);
    let cases = [
        (
            "headerColor",
            four_ways(json!({ "cat": [{ "var": "$flagd.flagKey" }, { "var": "email" }] })),
            email("rachel@faas.com"),
            "blue",
        ),
        (
            "headerColor",
            four_ways(json!({ "cat": [{ "var": "$flagd.flagKey" }, { "var": "email" }] })),
            email("monica@faas.com"),
            "yellow",
        ),
        (
            "headerColor",
            four_ways(json!({ "cat": [{ "var": "$flagd.flagKey" }, { "var": "email" }] })),
            email("joey@faas.com"),
            "red",
        ),
        (
            "headerColor",
            four_ways(json!({ "cat": [{ "var": "$flagd.flagKey" }, { "var": "email" }] })),
            email("ross@faas.com"),
            "blue",
        ),
        (
            "headerColor",
            four_ways(json!({ "cat": ["my-seed", { "var": "email" }] })),
            email("rachel@faas.com"),
            "green",
        ),
        ("headerColor", four_ways(json!({ "cat": ["my-seed", { "var": "email" }] })), email("monica@faas.com"), "red"),
        ("headerColor", four_ways(json!({ "cat": ["my-seed", { "var": "email" }] })), email("joey@faas.com"), "blue"),
        ("footerColor", four_ways(json!({ "var": "email" })), email("ross@faas.com"), "red"),
        (
            "headerColor",
            json!({ "fractional": ["email", ["red", 50], ["blue", 25], ["green", 25]] }),
            email("test4@faas.com"),
            "green",
        ),
        (
            "headerColor",
            json!({ "fractional": [{ "var": "email" }, ["red", 25], ["blue", 25]] }),
            email("foo@foo.com"),
            "blue",
        ),
        ("headerColor", json!({ "fractional": [{ "var": "email" }, ["red"], ["blue"]] }), email("foo@foo.com"), "blue"),
        (
            "headerColor",
            json!({ "fractional": [["blue", 50], ["green", 50]] }),
            EvaluationContext::for_key("foo@foo.com"),
            "green",
        ),
        // A bucketing value that comes out null falls back to the targeting key.
        (
            "headerColor",
            json!({ "fractional": [{ "var": "email" }, ["red", 50], ["blue", 50]] }),
            EvaluationContext::for_key("foo@foo.com"),
            "blue",
        ),
        // A computed negative weight counts as 0.
        (
            "clampedWeightFlag",
            json!({ "fractional": [["red", { "var": "redWeight" }], ["green", 1]] }),
            EvaluationContext::for_key("some-targeting-key").with("redWeight", -1000),
            "green",
        ),
        ("headerColor", json!({ "fractional": [["yellow"]] }), EvaluationContext::for_key("any-user"), "yellow"),
    ];
    for (key, targeting, context, expected) in cases {
        let flags = colours(key, targeting.clone());
        assert_eq!(
            variant(&flags, key, &context),
            (expected.to_owned(), Reason::TargetingMatch),
            "case {key} {targeting} {context:?}"
        );
    }
}

#[test]
fn without_a_targeting_key_the_default_is_served() {
    let flags = load_flag(targeted(json!({ "fractional": [["b", 50], ["c", 50]] })));

    for context in [
        EvaluationContext::new(),
        EvaluationContext::for_key(""),
        EvaluationContext::new().with("targetingKey", Value::Null),
        EvaluationContext::new().with("targetingKey", 42),
    ] {
        assert_eq!(variant(&flags, "f", &context), ("a".to_owned(), Reason::Default), "context {context:?}");
    }
}

#[test]
fn omitted_weights_count_as_1() {
    let implicit = load_flag(targeted(json!({ "fractional": [["a"], ["b"], ["c", 2]] })));
    let explicit = load_flag(targeted(json!({ "fractional": [["a", 1], ["b", 1], ["c", 2]] })));

    for i in 0..200 {
        let context = EvaluationContext::for_key(format!("customer-{i}"));
        assert_eq!(variant(&implicit, "f", &context), variant(&explicit, "f", &context), "customer-{i}");
    }
}

#[test]
fn weights_computed_by_rules_drive_a_rollout() {
    let flags = load_flag(targeted(
        json!({ "fractional": [["b", { "var": "rollout" }], ["c", { "-": [100, { "var": "rollout" }] }]] }),
    ));
    let at = |rollout: i64| {
        (0..300)
            .filter(|i| {
                let context = EvaluationContext::for_key(format!("customer-{i}")).with("rollout", rollout);
                variant(&flags, "f", &context).0 == "b"
            })
            .count()
    };

    assert_eq!(at(0), 0);
    assert_eq!(at(100), 300);
    let half = at(50);
    assert!((120..=180).contains(&half), "{half} of 300 at 50 %");
}
