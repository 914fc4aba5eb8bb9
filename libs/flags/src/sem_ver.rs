//! flagd's `sem_ver` operator: `{"sem_ver": [version, op, version]}` compares semantic versions,
//! e.g. the app version a customer runs against a minimum.
//!
//! `op` is `=`, `!=`, `<`, `<=`, `>`, `>=`, `^` (same major) or `~` (same major and minor).
//! Versions read as flagd reads them: a leading `v` or `V` is dropped, `1` and `1.2` mean
//! `1.0.0` and `1.2.0`, numbers are read as their text, build metadata is ignored. A version that
//! does not parse gives null, so an `if` on it takes the else branch.

use std::cmp::Ordering;

use datalogic_rs::bumpalo::Bump;
use datalogic_rs::operator::EvalContext;
use datalogic_rs::{ArenaExt, CustomOperator, DataValue};
use semver::Version;
use serde_json::Value;

use crate::error::{FlagError, KeyPath, Problem};

/// The operator's name in rules.
pub(crate) const NAME: &str = "sem_ver";

/// How two versions are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    SameMajor,
    SameMinor,
}

impl Comparison {
    fn parse(operator: &str) -> Option<Self> {
        Some(match operator {
            "=" => Self::Equal,
            "!=" => Self::NotEqual,
            "<" => Self::Less,
            "<=" => Self::LessOrEqual,
            ">" => Self::Greater,
            ">=" => Self::GreaterOrEqual,
            "^" => Self::SameMajor,
            "~" => Self::SameMinor,
            _ => return None,
        })
    }

    fn holds(self, left: &Version, right: &Version) -> bool {
        // Precedence, not `Ord`: build metadata does not order versions.
        let order = left.cmp_precedence(right);
        match self {
            Self::Equal => order == Ordering::Equal,
            Self::NotEqual => order != Ordering::Equal,
            Self::Less => order == Ordering::Less,
            Self::LessOrEqual => order != Ordering::Greater,
            Self::Greater => order == Ordering::Greater,
            Self::GreaterOrEqual => order != Ordering::Less,
            Self::SameMajor => left.major == right.major,
            Self::SameMinor => left.major == right.major && left.minor == right.minor,
        }
    }
}

/// A version as flagd reads it (see the module docs).
fn parse_version(text: &str) -> Option<Version> {
    let bare = text.strip_prefix(['v', 'V']).unwrap_or(text);
    let is_number = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    let padded = match bare.split('.').collect::<Vec<_>>().as_slice() {
        [major] if is_number(major) => format!("{major}.0.0"),
        [major, minor] if is_number(major) && is_number(minor) => format!("{major}.{minor}.0"),
        _ => bare.to_owned(),
    };
    Version::parse(&padded).ok()
}

/// A number's text the way flagd prints it: `1.2`, and `1` for `1.0`.
fn number_text(number: f64) -> String {
    number.to_string()
}

/// Checks the literal parts of a `sem_ver` (called with exactly three arguments): the operator,
/// and versions written as strings or numbers. Rules in any place are left to evaluation.
pub(crate) fn check(arguments: &[Value], path: &KeyPath) -> Result<(), FlagError> {
    for (i, argument) in arguments.iter().enumerate() {
        let argument_path = path.index(i);
        match (i, argument) {
            (_, Value::Object(_)) => {}
            (1, Value::String(operator)) if Comparison::parse(operator).is_some() => {}
            (1, other) => {
                let operator = other.as_str().map_or_else(|| other.to_string(), str::to_owned);
                return Err(argument_path.invalid(Problem::SemVerOperator(operator)));
            }
            (_, Value::String(version)) if parse_version(version).is_some() => {}
            (_, Value::Number(number))
                if number.as_f64().map(number_text).and_then(|v| parse_version(&v)).is_some() => {}
            (_, other) => {
                let version = other.as_str().map_or_else(|| other.to_string(), str::to_owned);
                return Err(argument_path.invalid(Problem::NotASemVer(version)));
            }
        }
    }
    Ok(())
}

/// `sem_ver` as a custom operator on the JsonLogic engine. Its arguments arrive evaluated.
pub(crate) struct SemVer;

impl CustomOperator for SemVer {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        _ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> datalogic_rs::Result<&'a DataValue<'a>> {
        Ok(compare(args).map_or_else(|| arena.null(), |holds| arena.bool(holds)))
    }
}

fn compare(args: &[&DataValue<'_>]) -> Option<bool> {
    let [left, operator, right] = args else { return None };
    let version = |value: &DataValue<'_>| match value {
        DataValue::String(text) => parse_version(text),
        DataValue::Number(_) => parse_version(&number_text(value.as_f64()?)),
        _ => None,
    };
    Some(Comparison::parse(operator.as_str()?)?.holds(&version(left)?, &version(right)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_flagd_reads_them() {
        let cases = [
            ("1.2.3", Some("1.2.3")),
            ("v1.2.3", Some("1.2.3")),
            ("V1.2.3", Some("1.2.3")),
            ("1", Some("1.0.0")),
            ("1.2", Some("1.2.0")),
            ("1.2.3-beta.1", Some("1.2.3-beta.1")),
            ("1.2.3+build.7", Some("1.2.3+build.7")),
            ("1.2-beta", None),
            ("01.2.3", None),
            ("one", None),
            ("", None),
        ];
        for (text, expected) in cases {
            let expected = expected.map(|v| Version::parse(v).expect("test version parses"));
            assert_eq!(parse_version(text), expected, "case {text:?}");
        }
    }

    #[test]
    fn every_operator_compares_as_flagd_does() {
        let cases = [
            ("1.0.0", "=", "v1.0.0", true),
            ("1.0.0+a", "=", "1.0.0+b", true),
            ("1.0.0", "!=", "1.0.1", true),
            ("1.0.0-rc.1", "<", "1.0.0", true),
            ("1.0.0", "<=", "1.0.0", true),
            ("2.0.0", ">", "1.9.9", true),
            ("1.0.0", ">", "1.0.0", false),
            ("1.0.0", ">=", "1.0.0", true),
            ("1.2.3", "^", "1.5.6", true),
            ("2.2.3", "^", "1.2.3", false),
            ("1.2.3", "~", "1.2.6", true),
            ("1.3.3", "~", "1.2.6", false),
        ];
        for (left, operator, right, expected) in cases {
            let holds = Comparison::parse(operator)
                .expect("test operator")
                .holds(&parse_version(left).expect("left parses"), &parse_version(right).expect("right parses"));
            assert_eq!(holds, expected, "case {left} {operator} {right}");
        }
    }

    #[test]
    fn numbers_read_as_their_text() {
        assert_eq!(parse_version(&number_text(1.2)), Version::parse("1.2.0").ok());
        assert_eq!(parse_version(&number_text(1.0)), Version::parse("1.0.0").ok());
    }
}
