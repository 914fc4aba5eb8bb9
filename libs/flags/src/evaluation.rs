//! What an evaluation takes (the context) and gives back (value, variant, reason).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::definition::{Flag, FlagValue};

/// Who a flag is evaluated for, as a JSON object rules read with `{"var": …}`:
/// `targetingKey` (the customer id, which `fractional` buckets by), `roles`, `tier`, `channel`,
/// `pet_category`, …
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EvaluationContext(Map<String, Value>);

/// The context key `fractional` buckets by unless told otherwise.
const TARGETING_KEY: &str = "targetingKey";

impl EvaluationContext {
    /// An empty context: rules see no attributes and `fractional` has no one to bucket.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context for one subject (a customer id, say): its `targetingKey`.
    pub fn for_key(targeting_key: impl Into<String>) -> Self {
        Self::new().with(TARGETING_KEY, targeting_key.into())
    }

    /// This context with one more attribute, e.g. `.with("tier", "premium")`.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// The subject's `targetingKey`, if it has a string one.
    pub fn targeting_key(&self) -> Option<&str> {
        self.0.get(TARGETING_KEY).and_then(Value::as_str)
    }

    /// The attributes as a JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The data a rule runs on: these attributes plus `$flagd.flagKey` and `$flagd.timestamp`
    /// (Unix seconds), which flagd injects and rules may read. A caller's own `$flagd` is
    /// replaced, as flagd does.
    pub(crate) fn rule_data(&self, flag_key: &str) -> Value {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let mut data = self.0.clone();
        data.insert("$flagd".to_owned(), json!({ "flagKey": flag_key, "timestamp": timestamp }));
        Value::Object(data)
    }
}

impl From<Map<String, Value>> for EvaluationContext {
    fn from(attributes: Map<String, Value>) -> Self {
        Self(attributes)
    }
}

/// The outcome of evaluating a flag: the value served, the variant it came from, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// The value served.
    pub value: FlagValue,
    /// The name of the variant served.
    pub variant: String,
    /// Why this variant was served.
    pub reason: Reason,
    /// What went wrong, when `reason` is [`Reason::Error`] (the default variant is served then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TargetingError>,
}

/// Why a variant was served; the names are flagd's (and OpenFeature's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The flag has no targeting: the default variant.
    Static,
    /// Targeting returned null: the default variant.
    Default,
    /// Targeting named this variant.
    TargetingMatch,
    /// The flag is disabled: the default variant.
    Disabled,
    /// Targeting failed or named no variant: the default variant, with the error beside it.
    Error,
}

/// Why targeting could not pick a variant. The default variant is served instead, so a broken
/// rule degrades to the flag's default rather than to an outage.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetingError {
    /// The rule returned a name the flag has no variant for.
    #[error("targeting returned `{variant}`, which is not one of the variants")]
    NoSuchVariant {
        /// The name returned.
        variant: String,
    },
    /// The rule returned an array or object, which cannot name a variant.
    #[error("targeting returned {result}, which cannot name a variant")]
    UnusableResult {
        /// The result as JSON.
        result: String,
    },
    /// The rule failed while running (e.g. arithmetic on a string).
    #[error("targeting failed: {message}")]
    Rule {
        /// The engine's account of the failure.
        message: String,
    },
}

/// Why no value could be served at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvaluationError {
    /// The flag set defines no flag by this key.
    #[error("no flag named `{0}`")]
    FlagNotFound(String),
    /// A typed getter was used on a flag of another type.
    #[error("flag `{flag}` served {found}, which is not {expected}")]
    TypeMismatch {
        /// The flag's key.
        flag: String,
        /// What the getter reads, e.g. `a boolean`.
        expected: &'static str,
        /// The value served, as JSON.
        found: String,
    },
}

impl Evaluation {
    /// The flag's default variant, served for `reason`.
    pub(crate) fn default_of(flag: &Flag, reason: Reason, error: Option<TargetingError>) -> Self {
        Self { value: flag.default_value().clone(), variant: flag.default_variant().to_owned(), reason, error }
    }
}
