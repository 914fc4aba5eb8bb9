//! The flags crate as its users see it: loading documents, evaluating flags, bucketing, and the
//! project's own flag file.

mod config_file;
mod evaluation;
mod fractional;
mod validation;

use flags::FlagSet;
use serde_json::{Value, json};

/// A flag set that must load.
fn load(document: &Value) -> FlagSet {
    FlagSet::parse(&document.to_string()).unwrap_or_else(|error| panic!("document refused: {error}"))
}

/// A flag set of one flag, `f`.
fn load_flag(flag: Value) -> FlagSet {
    load(&json!({ "flags": { "f": flag } }))
}

/// An enabled string flag with variants `a`, `b` and `c` (default `a`) and this targeting.
fn targeted(targeting: Value) -> Value {
    json!({
        "state": "ENABLED",
        "variants": { "a": "A", "b": "B", "c": "C" },
        "defaultVariant": "a",
        "targeting": targeting
    })
}
