//! Targeting rules in JsonLogic: which operators a rule may use, checking a rule when the
//! document loads, following `$ref` to shared evaluators, and running a rule against a context.
//!
//! Running is [`datalogic_rs`]'s job; the flagd operators (`fractional`, `sem_ver`,
//! `starts_with`, `ends_with`) are ours, registered on its engine as custom operators. The
//! operator list is flagd's (its targeting schema), not the engine's larger one, so a document
//! that loads here also loads in flagd itself.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use datalogic_rs::bumpalo::Bump;
use datalogic_rs::{DataValue, Engine, Logic};
use serde_json::{Map, Value};

use crate::definition::FlagValue;
use crate::error::{FlagError, KeyPath, Problem, json_type};
use crate::evaluation::TargetingError;
use crate::fractional::{self, Fractional};
use crate::sem_ver::{self, SemVer};
use crate::string_ops::{self, AffixTest};

/// What a rule may refer to while it is checked.
pub(crate) struct Scope<'d> {
    /// The document's `$evaluators`, for `$ref`.
    pub(crate) evaluators: &'d Map<String, Value>,
    /// The flag's variants, for names written in `fractional` buckets (`None` for shared
    /// evaluators, which several flags use).
    pub(crate) variants: Option<&'d BTreeMap<String, FlagValue>>,
}

/// Unbounded argument count.
const MANY: usize = usize::MAX;

/// Every operator a targeting rule may use, with the argument counts it accepts: JsonLogic's
/// standard operators as flagd's targeting schema lists them, and flagd's own.
const OPERATORS: &[(&str, usize, usize)] = &[
    ("var", 0, 2),
    ("missing", 0, MANY),
    ("missing_some", 2, 2),
    ("if", 1, MANY),
    ("==", 2, 2),
    ("===", 2, 2),
    ("!=", 2, 2),
    ("!==", 2, 2),
    ("!", 1, 1),
    ("!!", 1, 1),
    ("or", 1, MANY),
    ("and", 1, MANY),
    (">", 2, 2),
    (">=", 2, 2),
    ("<", 2, 3),
    ("<=", 2, 3),
    ("max", 1, MANY),
    ("min", 1, MANY),
    ("+", 1, MANY),
    ("-", 1, 2),
    ("*", 1, MANY),
    ("/", 2, 2),
    ("%", 2, 2),
    ("map", 2, 2),
    ("filter", 2, 2),
    ("reduce", 3, 3),
    ("all", 2, 2),
    ("none", 2, 2),
    ("some", 2, 2),
    ("merge", 1, MANY),
    ("in", 2, 2),
    ("cat", 1, MANY),
    ("substr", 2, 3),
    (fractional::NAME, 1, MANY),
    (sem_ver::NAME, 3, 3),
    (string_ops::STARTS_WITH, 2, 2),
    (string_ops::ENDS_WITH, 2, 2),
];

/// The key of a reference to a shared evaluator: `{"$ref": "name"}`.
const REF: &str = "$ref";

/// One engine for every flag set: it holds no state besides its operator table.
static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    Engine::builder()
        .add_operator(fractional::NAME, Fractional)
        .add_operator(sem_ver::NAME, SemVer)
        .add_operator(string_ops::STARTS_WITH, AffixTest::STARTS_WITH)
        .add_operator(string_ops::ENDS_WITH, AffixTest::ENDS_WITH)
        .build()
});

/// Checks a rule as written: known operators with fitting argument counts, well-formed
/// `fractional` and `sem_ver`, and `$ref`s that name an evaluator. Errors name the key path.
pub(crate) fn check(rule: &Value, path: &KeyPath, scope: &Scope<'_>) -> Result<(), FlagError> {
    match rule {
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| check(item, &path.index(i), scope)),
        Value::Object(object) => {
            let mut entries = object.iter();
            let (Some((operator, argument)), None) = (entries.next(), entries.next()) else {
                return Err(path.invalid(Problem::NotARule(object.len())));
            };
            let operator_path = path.key(operator);
            if operator == REF {
                return match argument {
                    Value::String(name) if scope.evaluators.contains_key(name) => Ok(()),
                    Value::String(name) => Err(operator_path.invalid(Problem::MissingEvaluator(name.clone()))),
                    other => Err(operator_path
                        .invalid(Problem::WrongType { expected: "an evaluator name", found: json_type(other) })),
                };
            }
            let Some(&(_, min, max)) = OPERATORS.iter().find(|(name, ..)| name == operator) else {
                return Err(path.invalid(Problem::UnknownOperator(operator.clone())));
            };
            // `{"!": x}` is shorthand for `{"!": [x]}`.
            let (arguments, listed) = match argument {
                Value::Array(items) => (items.as_slice(), true),
                single => (std::slice::from_ref(single), false),
            };
            if !(min..=max).contains(&arguments.len()) {
                return Err(operator_path.invalid(Problem::Arity {
                    operator: operator.clone(),
                    expected: describe_arity(min, max),
                    found: arguments.len(),
                }));
            }
            match operator.as_str() {
                fractional::NAME => fractional::check(arguments, &operator_path, scope.variants)?,
                sem_ver::NAME => sem_ver::check(arguments, &operator_path)?,
                _ => {}
            }
            arguments.iter().enumerate().try_for_each(|(i, argument)| {
                let argument_path = if listed { operator_path.index(i) } else { operator_path.clone() };
                check(argument, &argument_path, scope)
            })
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => Ok(()),
    }
}

/// The rule with every `{"$ref": name}` replaced by that evaluator, recursively, as flagd does
/// before evaluating. Refuses references in a loop. `from` names the evaluator `rule` is the body
/// of, if it is one.
pub(crate) fn resolve(
    rule: &Value,
    evaluators: &Map<String, Value>,
    path: &KeyPath,
    from: Option<&str>,
) -> Result<Value, FlagError> {
    let mut chain: Vec<&str> = from.into_iter().collect();
    resolve_in(rule, evaluators, path, &mut chain)
}

fn resolve_in<'e>(
    rule: &Value,
    evaluators: &'e Map<String, Value>,
    path: &KeyPath,
    chain: &mut Vec<&'e str>,
) -> Result<Value, FlagError> {
    match rule {
        Value::Object(object) => {
            if let (1, Some(target)) = (object.len(), object.get(REF)) {
                let ref_path = path.key(REF);
                let Some((name, body)) = target.as_str().and_then(|name| evaluators.get_key_value(name)) else {
                    let name = target.as_str().map_or_else(|| target.to_string(), str::to_owned);
                    return Err(ref_path.invalid(Problem::MissingEvaluator(name)));
                };
                if chain.contains(&name.as_str()) {
                    let mut names = chain.clone();
                    names.push(name);
                    return Err(ref_path.invalid(Problem::CyclicEvaluators(names.join(" → "))));
                }
                chain.push(name);
                let resolved = resolve_in(body, evaluators, &KeyPath::root().key("$evaluators").key(name), chain);
                chain.pop();
                return resolved;
            }
            object
                .iter()
                .map(|(key, value)| Ok((key.clone(), resolve_in(value, evaluators, &path.key(key), chain)?)))
                .collect::<Result<Map<_, _>, _>>()
                .map(Value::Object)
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| resolve_in(item, evaluators, &path.index(i), chain))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

fn describe_arity(min: usize, max: usize) -> String {
    match (min, max) {
        (min, MANY) => format!("at least {min}"),
        (min, max) if min == max => min.to_string(),
        (min, max) => format!("{min} to {max}"),
    }
}

/// A targeting rule with its `$ref`s resolved, compiled once for many evaluations.
#[derive(Debug)]
pub(crate) struct Rule {
    logic: Logic,
}

impl Rule {
    /// Resolves and compiles a rule that [`check`] accepted.
    pub(crate) fn compile(rule: &Value, evaluators: &Map<String, Value>, path: &KeyPath) -> Result<Self, FlagError> {
        let resolved = resolve(rule, evaluators, path, None)?;
        let logic = ENGINE.compile(&resolved).map_err(|error| path.invalid(Problem::Engine(error.to_string())))?;
        Ok(Self { logic })
    }

    /// Runs the rule. `Ok(None)` when it returns null (serve the default variant), otherwise the
    /// variant name it returned; flagd reads a boolean or number result as its JSON text.
    pub(crate) fn evaluate(&self, data: &Value) -> Result<Option<String>, TargetingError> {
        let arena = Bump::new();
        let result = ENGINE
            .evaluate(&self.logic, data, &arena)
            .map_err(|error| TargetingError::Rule { message: error.to_string() })?;
        match result {
            DataValue::Null => Ok(None),
            DataValue::String(name) => Ok(Some((*name).to_owned())),
            DataValue::Bool(_) | DataValue::Number(_) => Ok(Some(result.to_string())),
            other => Err(TargetingError::UnusableResult { result: other.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_operator_is_known_to_the_engine() {
        let builtins: Vec<&str> = ENGINE.builtin_operator_names().collect();
        for (name, ..) in OPERATORS {
            assert!(
                builtins.contains(name) || ENGINE.has_custom_operator(name),
                "`{name}` is allowed in rules but the engine does not know it"
            );
        }
    }

    #[test]
    fn an_all_literal_custom_operator_is_not_folded_away_at_compile_time() {
        // `fractional` reads the targeting key from the context, so it must run per evaluation.
        let rule =
            Rule::compile(&serde_json::json!({"fractional": [["a", 1], ["b", 1]]}), &Map::new(), &KeyPath::root())
                .expect("compiles");
        assert_eq!(rule.evaluate(&serde_json::json!({})).expect("runs"), None);
        assert!(rule.evaluate(&serde_json::json!({"targetingKey": "someone"})).expect("runs").is_some());
    }
}
