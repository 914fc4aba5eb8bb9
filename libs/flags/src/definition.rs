//! The flagd flag document: its types, and how JSON becomes them (every check but the ones on
//! targeting rules, which live in [`crate::jsonlogic`]).
//!
//! The types only come out of [`crate::FlagSet::parse`], so a [`Flag`] in hand is always valid:
//! its default variant exists and its variants share one type. They serialize back to the flagd
//! JSON they were read from, `$ref`s intact, so an admin API can show them as written.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::error::{FlagError, KeyPath, Problem, json_type};
use crate::jsonlogic::{self, Scope};

/// A whole flagd flag-definition document: `{"$schema"?, "flags", "$evaluators"?, "metadata"?}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlagDocument {
    #[serde(rename = "$schema", skip_serializing_if = "Option::is_none")]
    schema: Option<String>,
    flags: BTreeMap<String, Flag>,
    #[serde(rename = "$evaluators", skip_serializing_if = "Map::is_empty")]
    evaluators: Map<String, Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    metadata: Map<String, Value>,
}

/// One flag: its variants, which one it serves by default, and the rule that may pick another.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Flag {
    state: FlagState,
    variants: BTreeMap<String, FlagValue>,
    default_variant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    targeting: Option<Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    metadata: Map<String, Value>,
}

/// Whether a flag's targeting runs. A disabled flag serves its default variant to everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FlagState {
    /// Targeting decides the variant.
    Enabled,
    /// The default variant is served, with reason `DISABLED`.
    Disabled,
}

/// The value of a variant. All variants of a flag have the same kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FlagValue {
    /// A boolean flag's value.
    Bool(bool),
    /// A string flag's value.
    String(String),
    /// A number flag's value, integer or not as written.
    Number(Number),
    /// An object flag's value.
    Object(Map<String, Value>),
}

/// The type shared by a flag's variants, which decides the typed getter that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlagKind {
    /// `true` / `false` variants.
    Boolean,
    /// String variants.
    String,
    /// Number variants.
    Number,
    /// Object variants.
    Object,
}

impl FlagDocument {
    /// The `$schema` the document declares, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The flags by key.
    pub fn flags(&self) -> &BTreeMap<String, Flag> {
        &self.flags
    }

    /// The shared rules that targeting refers to with `{"$ref": name}`.
    pub fn evaluators(&self) -> &Map<String, Value> {
        &self.evaluators
    }

    /// Metadata about the whole flag set (strings, numbers or booleans).
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// Reads and checks a document; the first problem refuses it whole.
    pub(crate) fn from_json(root: &Value) -> Result<Self, FlagError> {
        let path = KeyPath::root();
        let object = expect_object(root, &path)?;
        reject_unknown_keys(object, &["$schema", "flags", "$evaluators", "metadata"], &path)?;

        let schema = match object.get("$schema") {
            None => None,
            Some(Value::String(schema)) => Some(schema.clone()),
            Some(other) => return Err(wrong_type(&path.key("$schema"), "a string", other)),
        };
        let evaluators = parse_evaluators(object.get("$evaluators"), &path.key("$evaluators"))?;

        let flags_path = path.key("flags");
        let flags = expect_object(required(object, "flags", &path)?, &flags_path)?
            .iter()
            .map(|(key, flag)| {
                let flag_path = flags_path.key(key);
                if key.is_empty() {
                    return Err(flag_path.invalid(Problem::EmptyName));
                }
                Ok((key.clone(), Flag::from_json(flag, &flag_path, &evaluators)?))
            })
            .collect::<Result<_, _>>()?;

        let metadata = parse_metadata(object.get("metadata"), &path.key("metadata"))?;
        Ok(Self { schema, flags, evaluators, metadata })
    }
}

impl Flag {
    /// Whether targeting runs.
    pub fn state(&self) -> FlagState {
        self.state
    }

    /// The variants by name.
    pub fn variants(&self) -> &BTreeMap<String, FlagValue> {
        &self.variants
    }

    /// The name of the variant served when targeting is absent, returns null, or the flag is
    /// disabled.
    pub fn default_variant(&self) -> &str {
        &self.default_variant
    }

    /// The value of the default variant.
    pub fn default_value(&self) -> &FlagValue {
        // Parsing refused any flag whose default variant is missing, and the fields are private.
        &self.variants[&self.default_variant]
    }

    /// The targeting rule as written (`$ref`s unresolved); `None` when absent, null or `{}`.
    pub fn targeting(&self) -> Option<&Value> {
        self.targeting.as_ref()
    }

    /// Metadata about this flag (strings, numbers or booleans).
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// The type every variant of this flag has.
    pub fn kind(&self) -> FlagKind {
        self.default_value().kind()
    }

    fn from_json(value: &Value, path: &KeyPath, evaluators: &Map<String, Value>) -> Result<Self, FlagError> {
        let object = expect_object(value, path)?;
        reject_unknown_keys(object, &["state", "variants", "defaultVariant", "targeting", "metadata"], path)?;

        let state_path = path.key("state");
        let state = match required(object, "state", path)? {
            Value::String(state) if state == "ENABLED" => FlagState::Enabled,
            Value::String(state) if state == "DISABLED" => FlagState::Disabled,
            Value::String(state) => return Err(state_path.invalid(Problem::UnknownState(state.clone()))),
            other => return Err(wrong_type(&state_path, "a string", other)),
        };

        let variants = parse_variants(required(object, "variants", path)?, &path.key("variants"))?;

        let default_path = path.key("defaultVariant");
        let default_variant = match required(object, "defaultVariant", path)? {
            Value::String(name) if variants.contains_key(name) => name.clone(),
            Value::String(name) => return Err(default_path.invalid(Problem::UnknownVariant(name.clone()))),
            other => return Err(wrong_type(&default_path, "a variant name", other)),
        };

        let targeting_path = path.key("targeting");
        let targeting = match object.get("targeting") {
            None | Some(Value::Null) => None,
            // flagd reads an empty targeting as none at all.
            Some(Value::Object(rule)) if rule.is_empty() => None,
            Some(rule @ Value::Object(_)) => {
                jsonlogic::check(rule, &targeting_path, &Scope { evaluators, variants: Some(&variants) })?;
                Some(rule.clone())
            }
            Some(other) => return Err(wrong_type(&targeting_path, "a JsonLogic rule (an object)", other)),
        };

        let metadata = parse_metadata(object.get("metadata"), &path.key("metadata"))?;
        Ok(Self { state, variants, default_variant, targeting, metadata })
    }
}

impl FlagValue {
    /// The kind of value this is.
    pub fn kind(&self) -> FlagKind {
        match self {
            Self::Bool(_) => FlagKind::Boolean,
            Self::String(_) => FlagKind::String,
            Self::Number(_) => FlagKind::Number,
            Self::Object(_) => FlagKind::Object,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(value) => Some(*value),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(value) => Some(value),
            _ => None,
        }
    }

    /// The number as `f64`, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Number(value) => value.as_f64(),
            _ => None,
        }
    }

    /// The number as `i64`, if this is a number with no fractional part.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Number(value) => value.as_i64().or_else(|| {
                // A float written without a fractional part (`5.0`), within the range of i64.
                let float = value.as_f64()?;
                (float.fract() == 0.0 && float.abs() < i64::MAX as f64).then_some(float as i64)
            }),
            _ => None,
        }
    }

    fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(value) => Some(Self::Bool(*value)),
            Value::String(value) => Some(Self::String(value.clone())),
            Value::Number(value) => Some(Self::Number(value.clone())),
            Value::Object(value) => Some(Self::Object(value.clone())),
            Value::Null | Value::Array(_) => None,
        }
    }
}

impl fmt::Display for FlagKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Boolean => "boolean",
            Self::String => "string",
            Self::Number => "number",
            Self::Object => "object",
        })
    }
}

fn parse_variants(value: &Value, path: &KeyPath) -> Result<BTreeMap<String, FlagValue>, FlagError> {
    let object = expect_object(value, path)?;
    let mut first: Option<(&str, &Value)> = None;
    let mut variants = BTreeMap::new();
    for (name, value) in object {
        let variant_path = path.key(name);
        if name.is_empty() {
            return Err(variant_path.invalid(Problem::EmptyName));
        }
        let flag_value = FlagValue::from_json(value)
            .ok_or_else(|| variant_path.invalid(Problem::UnservableVariant(json_type(value))))?;
        match first {
            None => first = Some((name, value)),
            Some((first_name, first_value)) if json_type(first_value) != json_type(value) => {
                return Err(variant_path.invalid(Problem::MixedVariantTypes {
                    first: first_name.to_owned(),
                    expected: json_type(first_value),
                    found: json_type(value),
                }));
            }
            Some(_) => {}
        }
        variants.insert(name.clone(), flag_value);
    }
    if variants.is_empty() {
        return Err(path.invalid(Problem::NoVariants));
    }
    Ok(variants)
}

/// Checks each shared rule, and that following `$ref`s from any of them ends.
fn parse_evaluators(value: Option<&Value>, path: &KeyPath) -> Result<Map<String, Value>, FlagError> {
    let Some(value) = value else { return Ok(Map::new()) };
    let evaluators = expect_object(value, path)?;
    for (name, rule) in evaluators {
        let rule_path = path.key(name);
        if name.is_empty() {
            return Err(rule_path.invalid(Problem::EmptyName));
        }
        jsonlogic::check(rule, &rule_path, &Scope { evaluators, variants: None })?;
    }
    for (name, rule) in evaluators {
        jsonlogic::resolve(rule, evaluators, &path.key(name), Some(name))?;
    }
    Ok(evaluators.clone())
}

fn parse_metadata(value: Option<&Value>, path: &KeyPath) -> Result<Map<String, Value>, FlagError> {
    let Some(value) = value else { return Ok(Map::new()) };
    let metadata = expect_object(value, path)?;
    for (key, value) in metadata {
        if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            return Err(path.key(key).invalid(Problem::BadMetadata(json_type(value))));
        }
    }
    Ok(metadata.clone())
}

fn expect_object<'v>(value: &'v Value, path: &KeyPath) -> Result<&'v Map<String, Value>, FlagError> {
    value.as_object().ok_or_else(|| wrong_type(path, "an object", value))
}

fn required<'v>(object: &'v Map<String, Value>, key: &str, path: &KeyPath) -> Result<&'v Value, FlagError> {
    object.get(key).ok_or_else(|| path.key(key).invalid(Problem::Missing))
}

fn reject_unknown_keys(
    object: &Map<String, Value>,
    allowed: &'static [&'static str],
    path: &KeyPath,
) -> Result<(), FlagError> {
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => Err(path.key(key).invalid(Problem::UnknownKey { expected: allowed })),
    }
}

fn wrong_type(path: &KeyPath, expected: &'static str, found: &Value) -> FlagError {
    path.invalid(Problem::WrongType { expected, found: json_type(found) })
}
