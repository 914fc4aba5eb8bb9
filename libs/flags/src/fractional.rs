//! flagd's `fractional` operator: deterministic weighted bucketing for experiments and rollouts.
//!
//! It buckets exactly as flagd 0.15 and later do, so a customer sees the same variant here as
//! from any flagd provider: MurmurHash3 x86_32 with seed 0 over the UTF-8 bytes of
//! `flagKey + targetingKey` (or of the first argument, when that is or evaluates to a string);
//! `bucket = (hash * total_weight) >> 32`; the first variant whose running weight total exceeds
//! the bucket wins. (The older percentage formula, still in the Rust flagd engine 0.0.x and
//! 0.2.x, puts some customers near a boundary in the other variant.)
//!
//! `{"fractional": [bucketBy?, [variant, weight?], …]}`: a weight defaults to 1; weights written
//! as rules are computed per evaluation and clamped at 0 when negative, as flagd does. No
//! targeting key, no buckets or a zero total give null, so the default variant is served.

use std::collections::BTreeMap;

use datalogic_rs::bumpalo::Bump;
use datalogic_rs::operator::EvalContext;
use datalogic_rs::{ArenaExt, CustomOperator, DataValue};
use serde_json::Value;

use crate::definition::FlagValue;
use crate::error::{FlagError, KeyPath, Problem};

/// The operator's name in rules.
pub(crate) const NAME: &str = "fractional";

/// flagd keeps weights, and their total, within a 32-bit signed integer.
const MAX_TOTAL_WEIGHT: u64 = 2_147_483_647;

/// MurmurHash3 x86_32 with seed 0 of `key`'s UTF-8 bytes. `None` only if reading the bytes
/// failed, which reading from memory does not.
pub(crate) fn hash(key: &str) -> Option<u32> {
    murmur3::murmur3_32(&mut key.as_bytes(), 0).ok()
}

/// The index of the weight whose band `key` hashes into; `None` when the weights add up to zero
/// or past what flagd allows.
pub(crate) fn pick(key: &str, weights: &[u64]) -> Option<usize> {
    let total: u64 = weights.iter().sum();
    if total == 0 || total > MAX_TOTAL_WEIGHT {
        return None;
    }
    let bucket = (u64::from(hash(key)?) * total) >> 32;
    let mut band_end = 0;
    weights.iter().position(|weight| {
        band_end += weight;
        bucket < band_end
    })
}

/// Checks a `fractional` as written: at least one bucket, each `[variant]` or
/// `[variant, weight]`, literal weights non-negative integers, literal variant names among the
/// flag's `variants` (when known). `arguments` are the operator's; `path` is the operator's.
pub(crate) fn check(
    arguments: &[Value],
    path: &KeyPath,
    variants: Option<&BTreeMap<String, FlagValue>>,
) -> Result<(), FlagError> {
    // Without a bucketing value first, the buckets start at once.
    let first_bucket = usize::from(!matches!(arguments.first(), Some(Value::Array(_))));
    if arguments.len() <= first_bucket {
        return Err(path.invalid(Problem::BadFractional("needs at least one [variant, weight] bucket")));
    }
    let mut literal_total = 0_u64;
    for (i, bucket) in arguments.iter().enumerate().skip(first_bucket) {
        let bucket_path = path.index(i);
        let (variant, weight) = match bucket {
            Value::Array(items) => match items.as_slice() {
                [variant] => (variant, None),
                [variant, weight] => (variant, Some(weight)),
                _ => {
                    return Err(
                        bucket_path.invalid(Problem::BadFractional("a bucket is [variant] or [variant, weight]"))
                    );
                }
            },
            _ => return Err(bucket_path.invalid(Problem::BadFractional("a bucket is [variant] or [variant, weight]"))),
        };
        check_variant(variant, &bucket_path.index(0), variants)?;
        literal_total += match weight {
            None => 1,
            Some(weight) => literal_weight(weight, &bucket_path.index(1))?,
        };
    }
    if literal_total > MAX_TOTAL_WEIGHT {
        return Err(path.invalid(Problem::WeightsTooLarge(literal_total)));
    }
    Ok(())
}

fn check_variant(
    variant: &Value,
    path: &KeyPath,
    variants: Option<&BTreeMap<String, FlagValue>>,
) -> Result<(), FlagError> {
    // A bucket may also hold null (serve the default) or a rule computing the name.
    let name = match variant {
        Value::String(name) => name.clone(),
        // flagd reads a boolean or number result as its JSON text.
        Value::Bool(_) | Value::Number(_) => variant.to_string(),
        Value::Null | Value::Object(_) => return Ok(()),
        Value::Array(_) => {
            return Err(path.invalid(Problem::BadFractional("a bucket's variant is a variant name or a rule")));
        }
    };
    match variants {
        Some(variants) if !variants.contains_key(&name) => Err(path.invalid(Problem::UnknownVariant(name))),
        _ => Ok(()),
    }
}

/// A written weight's contribution to the total: itself if a non-negative integer, 0 if a rule.
fn literal_weight(weight: &Value, path: &KeyPath) -> Result<u64, FlagError> {
    let bad = || path.invalid(Problem::BadWeight(weight.to_string()));
    match weight {
        Value::Number(number) => match (number.as_u64(), number.as_f64()) {
            (Some(weight), _) => Ok(weight),
            // Written with a point but whole, like `25.0`.
            (None, Some(float)) if float.fract() == 0.0 && (0.0..=MAX_TOTAL_WEIGHT as f64).contains(&float) => {
                Ok(float as u64)
            }
            _ => Err(bad()),
        },
        Value::Object(_) => Ok(0),
        _ => Err(bad()),
    }
}

/// `fractional` as a custom operator on the JsonLogic engine. Its arguments arrive evaluated.
pub(crate) struct Fractional;

impl CustomOperator for Fractional {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> datalogic_rs::Result<&'a DataValue<'a>> {
        Ok(distribute(args, ctx.root_input()).unwrap_or_else(|| arena.null()))
    }
}

/// The chosen bucket's variant, or `None` for null.
fn distribute<'a>(args: &[&'a DataValue<'a>], root: &'a DataValue<'a>) -> Option<&'a DataValue<'a>> {
    let (first, rest) = args.split_first()?;
    let implicit_key;
    let (key, buckets) = match first.as_str() {
        Some(key) => (key, rest),
        None => {
            let targeting_key = root["targetingKey"].as_str().filter(|key| !key.is_empty())?;
            let flag_key = root["$flagd"]["flagKey"].as_str().unwrap_or_default();
            implicit_key = format!("{flag_key}{targeting_key}");
            // A bucketing value that came out null (`{"var": "email"}` without an email) is
            // skipped, and the targeting key used instead.
            (implicit_key.as_str(), if first.is_null() { rest } else { args })
        }
    };
    let buckets = buckets.iter().map(|bucket| parse_bucket(bucket)).collect::<Option<Vec<_>>>()?;
    let weights: Vec<u64> = buckets.iter().map(|&(_, weight)| weight).collect();
    buckets.get(pick(key, &weights)?).map(|&(variant, _)| variant)
}

/// An evaluated `[variant, weight?]`; `None` when malformed, which makes the whole result null.
fn parse_bucket<'a>(bucket: &'a DataValue<'a>) -> Option<(&'a DataValue<'a>, u64)> {
    let (variant, weight) = match bucket.as_array()? {
        [variant] => (variant, 1),
        [variant, weight, ..] => (variant, evaluated_weight(weight)?),
        [] => return None,
    };
    matches!(variant, DataValue::Null | DataValue::Bool(_) | DataValue::Number(_) | DataValue::String(_))
        .then_some((variant, weight))
}

/// A weight as flagd reads it after evaluation: null is 1, negatives are 0, fractions refused.
fn evaluated_weight(weight: &DataValue<'_>) -> Option<u64> {
    match weight {
        DataValue::Null => Some(1),
        DataValue::Number(_) => {
            let weight = weight.as_f64()?;
            (weight.fract() == 0.0 && weight <= MAX_TOTAL_WEIGHT as f64).then_some(weight.max(0.0) as u64)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_murmur3_crate_is_murmurhash3_x86_32_with_seed_0() {
        // The flags issue's vector, then SMHasher reference values.
        assert_eq!(hash("flag-user"), Some(2_410_693_464));
        assert_eq!(hash(""), Some(0));
        assert_eq!(hash("hello"), Some(0x248b_fa47));
        assert_eq!(hash("The quick brown fox jumps over the lazy dog"), Some(0x2e4f_f723));
    }

    #[test]
    fn flag_user_lands_in_bucket_56_of_100_and_so_in_the_first_of_60_40() {
        assert_eq!((2_410_693_464_u64 * 100) >> 32, 56);
        assert_eq!(pick("flag-user", &[60, 40]), Some(0));
    }

    #[test]
    fn zero_weights_get_no_one_and_zero_total_gets_null() {
        for key in ["a", "b", "c", "d"] {
            assert_eq!(pick(key, &[0, 1, 0]), Some(1), "key {key}");
        }
        assert_eq!(pick("a", &[0, 0]), None);
        assert_eq!(pick("a", &[]), None);
    }

    #[test]
    fn weights_adding_up_past_flagds_limit_get_null() {
        assert_eq!(pick("a", &[MAX_TOTAL_WEIGHT, 1]), None);
        assert!(pick("a", &[MAX_TOTAL_WEIGHT]).is_some());
    }
}
