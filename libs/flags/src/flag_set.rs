//! A checked flag document with its rules compiled, ready to answer evaluations.

use std::collections::HashMap;

use serde_json::Value;

use crate::definition::{Flag, FlagDocument, FlagState, FlagValue};
use crate::error::{FlagError, KeyPath};
use crate::evaluation::{Evaluation, EvaluationContext, EvaluationError, Reason, TargetingError};
use crate::jsonlogic::Rule;

/// Every flag of one flagd document, checked and compiled: evaluating is a lookup and, for
/// targeted flags, one run of a compiled rule. Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct FlagSet {
    document: FlagDocument,
    /// The compiled targeting of each flag that has one.
    rules: HashMap<String, Rule>,
}

impl FlagSet {
    /// Reads a flagd flag-definition document. Any problem refuses the whole document, with the
    /// key path of the first offending key in the error.
    pub fn parse(json: &str) -> Result<Self, FlagError> {
        Self::from_value(&serde_json::from_str(json)?)
    }

    /// [`FlagSet::parse`] for a document already read as JSON (one assembled from parts, say).
    pub fn from_value(root: &Value) -> Result<Self, FlagError> {
        let document = FlagDocument::from_json(root)?;
        let rules = document
            .flags()
            .iter()
            .filter_map(|(key, flag)| Some((key, flag.targeting()?)))
            .map(|(key, targeting)| {
                let path = KeyPath::root().key("flags").key(key).key("targeting");
                Ok((key.clone(), Rule::compile(targeting, document.evaluators(), &path)?))
            })
            .collect::<Result<_, FlagError>>()?;
        Ok(Self { document, rules })
    }

    /// The definitions as read; serialize it to show them as flagd JSON.
    pub fn document(&self) -> &FlagDocument {
        &self.document
    }

    /// One flag's definition.
    pub fn flag(&self, key: &str) -> Option<&Flag> {
        self.document.flags().get(key)
    }

    /// Evaluates a flag for `context`, with flagd's semantics: a disabled flag serves its default
    /// (`DISABLED`), a flag without targeting its default (`STATIC`); targeting that returns a
    /// variant's name serves that variant (`TARGETING_MATCH`), null the default (`DEFAULT`), and
    /// anything else the default with the error (`ERROR`).
    pub fn evaluate(&self, flag_key: &str, context: &EvaluationContext) -> Result<Evaluation, EvaluationError> {
        let flag = self.flag(flag_key).ok_or_else(|| EvaluationError::FlagNotFound(flag_key.to_owned()))?;
        if flag.state() == FlagState::Disabled {
            return Ok(Evaluation::default_of(flag, Reason::Disabled, None));
        }
        let Some(rule) = self.rules.get(flag_key) else {
            return Ok(Evaluation::default_of(flag, Reason::Static, None));
        };
        Ok(match rule.evaluate(&context.rule_data(flag_key)) {
            Ok(None) => Evaluation::default_of(flag, Reason::Default, None),
            Ok(Some(name)) => match flag.variants().get_key_value(&name) {
                Some((variant, value)) => Evaluation {
                    value: value.clone(),
                    variant: variant.clone(),
                    reason: Reason::TargetingMatch,
                    error: None,
                },
                None => {
                    Evaluation::default_of(flag, Reason::Error, Some(TargetingError::NoSuchVariant { variant: name }))
                }
            },
            Err(error) => Evaluation::default_of(flag, Reason::Error, Some(error)),
        })
    }

    /// The value of a boolean flag.
    pub fn bool(&self, flag_key: &str, context: &EvaluationContext) -> Result<bool, EvaluationError> {
        self.typed(flag_key, context, "a boolean", FlagValue::as_bool)
    }

    /// The value of a string flag.
    pub fn string(&self, flag_key: &str, context: &EvaluationContext) -> Result<String, EvaluationError> {
        self.typed(flag_key, context, "a string", |value| value.as_str().map(str::to_owned))
    }

    /// The value of a number flag.
    pub fn f64(&self, flag_key: &str, context: &EvaluationContext) -> Result<f64, EvaluationError> {
        self.typed(flag_key, context, "a number", FlagValue::as_f64)
    }

    /// The value of a number flag whose served value is whole (a count, milliseconds).
    pub fn i64(&self, flag_key: &str, context: &EvaluationContext) -> Result<i64, EvaluationError> {
        self.typed(flag_key, context, "an integer", FlagValue::as_i64)
    }

    fn typed<T>(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
        expected: &'static str,
        read: impl FnOnce(&FlagValue) -> Option<T>,
    ) -> Result<T, EvaluationError> {
        let evaluation = self.evaluate(flag_key, context)?;
        read(&evaluation.value).ok_or_else(|| EvaluationError::TypeMismatch {
            flag: flag_key.to_owned(),
            expected,
            found: serde_json::to_string(&evaluation.value).unwrap_or_default(),
        })
    }
}
