//! Why a flag document was refused, and where in it.

use std::fmt;

use serde_json::Value;

/// A flag document that was refused as a whole. Nothing of a refused document is served, so a
/// bad edit never half-applies.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// The text is not JSON at all.
    #[error("flag document is not valid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    /// The JSON does not describe valid flags. `path` names the offending key, e.g.
    /// `flags.pricing_experiment.defaultVariant`.
    #[error("{path}: {problem}")]
    Invalid {
        /// Dotted key path from the document root, with `[i]` for array items.
        path: KeyPath,
        /// What is wrong at `path`.
        problem: Problem,
    },
}

/// What is wrong at a key path of a flag document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A required key is absent.
    #[error("is required")]
    Missing,
    /// A key the flagd format does not define (a typo would otherwise be silently ignored).
    #[error("unknown key (expected one of: {})", .expected.join(", "))]
    UnknownKey {
        /// The keys allowed at this place.
        expected: &'static [&'static str],
    },
    /// A value of the wrong JSON type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What the format wants here.
        expected: &'static str,
        /// The JSON type that was there.
        found: &'static str,
    },
    /// A flag, variant or evaluator named by the empty string.
    #[error("names must not be empty")]
    EmptyName,
    /// `state` is neither `ENABLED` nor `DISABLED`.
    #[error("`{0}` is not a flag state (expected ENABLED or DISABLED)")]
    UnknownState(String),
    /// A flag without variants has nothing to serve.
    #[error("a flag needs at least one variant")]
    NoVariants,
    /// A variant name (in `defaultVariant` or a `fractional` bucket) that the flag does not define.
    #[error("`{0}` is not one of the variants")]
    UnknownVariant(String),
    /// A variant value of a type flagd cannot serve (null or an array).
    #[error("a variant is a boolean, string, number or object, found {0}")]
    UnservableVariant(&'static str),
    /// Variants of one flag must share a type, so typed getters cannot be surprised.
    #[error("is {found} but variant `{first}` is {expected}: a flag's variants share one type")]
    MixedVariantTypes {
        /// The variant that set the flag's type.
        first: String,
        /// That variant's type.
        expected: &'static str,
        /// This variant's type.
        found: &'static str,
    },
    /// Metadata values are strings, numbers or booleans (flagd's schema).
    #[error("metadata values are strings, numbers or booleans, found {0}")]
    BadMetadata(&'static str),
    /// An object in a rule that is not a single-operator rule.
    #[error("a rule is an object with exactly one operator key, found {0} keys")]
    NotARule(usize),
    /// A JsonLogic operator neither JsonLogic nor flagd defines.
    #[error("unknown operator `{0}`")]
    UnknownOperator(String),
    /// An operator given too few or too many arguments.
    #[error("`{operator}` takes {expected} argument(s), found {found}")]
    Arity {
        /// The operator.
        operator: String,
        /// The accepted count, e.g. `2` or `2 to 3`.
        expected: String,
        /// How many it was given.
        found: usize,
    },
    /// A malformed `fractional` (no buckets, or a bucket that is not `[variant, weight]`).
    #[error("fractional: {0}")]
    BadFractional(&'static str),
    /// A literal `fractional` weight that is not a non-negative integer.
    #[error("a fractional weight is a non-negative integer (or a rule), found {0}")]
    BadWeight(String),
    /// `fractional` weights add up past what flagd allows (2^31 - 1).
    #[error("fractional weights add up to {0}, more than 2147483647")]
    WeightsTooLarge(u64),
    /// A `sem_ver` comparison operator that flagd does not define.
    #[error("`{0}` is not a sem_ver operator (expected one of = != < <= > >= ^ ~)")]
    SemVerOperator(String),
    /// A literal version in `sem_ver` that is not a semantic version.
    #[error("`{0}` is not a semantic version")]
    NotASemVer(String),
    /// `{"$ref": name}` with no `$evaluators.name`.
    #[error("no evaluator named `{0}` in $evaluators")]
    MissingEvaluator(String),
    /// Evaluators that refer to each other in a loop.
    #[error("evaluators refer to each other in a loop: {0}")]
    CyclicEvaluators(String),
    /// The JsonLogic engine refused the rule after our own checks passed.
    #[error("not a valid rule: {0}")]
    Engine(String),
}

/// A dotted key path into a flag document, as error messages show it:
/// `flags.premium_filters.targeting.if[0].$ref`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(String);

impl KeyPath {
    /// The document root.
    pub(crate) fn root() -> Self {
        Self::default()
    }

    /// The path of `key` inside this object.
    pub(crate) fn key(&self, key: &str) -> Self {
        if self.0.is_empty() { Self(key.to_owned()) } else { Self(format!("{}.{key}", self.0)) }
    }

    /// The path of item `index` of this array.
    pub(crate) fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// The error saying `problem` happened here.
    pub(crate) fn invalid(&self, problem: Problem) -> FlagError {
        FlagError::Invalid { path: self.clone(), problem }
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        if self.0.is_empty() { "(document)" } else { &self.0 }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON type of a value, as error messages name it.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
