//! The payment mix: which payment method each order uses, in the shares `--mix` gives.
//!
//! The choice is deterministic and evenly spread (order `n` takes the point `n · φ⁻¹ mod 1`
//! on the cumulative shares, a low-discrepancy sequence), so even a short run has the asked
//! shares, and two runs with the same options place the same orders.

use std::{fmt, str::FromStr};

use contracts::PaymentMethod;

/// The payment methods the order API accepts, as `--mix` names them.
pub const METHODS: [&str; 4] = ["credit_card", "debit_card", "paypal", "declined_card"];

/// 2⁶⁴ / φ: multiplying by it walks the unit interval (scaled to 2⁶⁴) in golden-ratio steps.
const GOLDEN_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// Payment methods with their cumulative shares (the last is 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// Each method and the share of it and those before it, ascending to 1.
    cumulative: Vec<(PaymentMethod, f64)>,
    /// The methods and their shares as given (normalized), for the report.
    shares: Vec<(&'static str, f64)>,
}

impl Mix {
    /// The payment method of order `n`.
    pub fn pick(&self, n: u64) -> PaymentMethod {
        let point = spread(n);
        let chosen = self.cumulative.iter().find(|(_, up_to)| point < *up_to).or(self.cumulative.last());
        chosen.map_or(PaymentMethod::CreditCard, |(method, _)| *method)
    }
}

/// The `n`-th point of the golden-ratio sequence in `[0, 1)`.
fn spread(n: u64) -> f64 {
    // The top 53 bits: exactly representable in an f64.
    (n.wrapping_mul(GOLDEN_STEP) >> 11) as f64 / (1u64 << 53) as f64
}

/// A payment method named as the API names it.
fn method(name: &str) -> Result<(&'static str, PaymentMethod), String> {
    let known = METHODS
        .iter()
        .find(|m| **m == name)
        .ok_or_else(|| format!("unknown payment method `{name}`; the API accepts {}", METHODS.join(", ")))?;
    let method =
        serde_json::from_value(serde_json::Value::from(*known)).map_err(|e| format!("payment method `{name}`: {e}"))?;
    Ok((known, method))
}

impl FromStr for Mix {
    type Err = String;

    /// `method=weight,…`: weights are non-negative numbers, shares of their sum.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut given: Vec<(&'static str, PaymentMethod, f64)> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, weight) =
                entry.split_once('=').ok_or_else(|| format!("`{entry}` is not method=weight, e.g. credit_card=0.9"))?;
            let (name, method) = method(name.trim())?;
            let weight: f64 = weight.trim().parse().map_err(|_| format!("the weight of {name} is not a number"))?;
            if !weight.is_finite() || weight < 0.0 {
                return Err(format!("the weight of {name} must be a number of at least 0"));
            }
            if given.iter().any(|(n, _, _)| *n == name) {
                return Err(format!("{name} is given more than once"));
            }
            given.push((name, method, weight));
        }
        let total: f64 = given.iter().map(|(_, _, w)| w).sum();
        if total <= 0.0 {
            return Err("give at least one payment method a weight above 0, e.g. credit_card=1".into());
        }
        given.retain(|(_, _, weight)| *weight > 0.0);
        let mut up_to = 0.0;
        let mut cumulative: Vec<(PaymentMethod, f64)> = given
            .iter()
            .map(|(_, method, weight)| {
                up_to += weight / total;
                (*method, up_to)
            })
            .collect();
        if let Some(last) = cumulative.last_mut() {
            last.1 = 1.0;
        }
        let shares = given.iter().map(|(name, _, weight)| (*name, weight / total)).collect();
        Ok(Self { cumulative, shares })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, share)) in self.shares.iter().enumerate() {
            let separator = if i == 0 { "" } else { "," };
            write!(f, "{separator}{name}={}", (share * 1e4).round() / 1e4)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_method_is_one_the_api_accepts() {
        for name in METHODS {
            let (_, parsed) = method(name).expect(name);
            assert_eq!(serde_json::to_value(parsed).expect("serializes"), serde_json::json!(name));
        }
    }

    #[test]
    fn a_mix_is_parsed_normalized_and_printed() {
        let mix: Mix = "credit_card=3, declined_card=1".parse().expect("valid");
        assert_eq!(mix.to_string(), "credit_card=0.75,declined_card=0.25");
        let alone: Mix = "paypal=1,debit_card=0".parse().expect("valid");
        assert_eq!(alone.to_string(), "paypal=1");
        assert!((0..100).all(|n| alone.pick(n) == PaymentMethod::Paypal));
    }

    #[test]
    fn bad_mixes_are_refused_with_a_reason() {
        for (bad, why) in [
            ("card=1", "unknown payment method `card`"),
            ("credit_card", "not method=weight"),
            ("credit_card=x", "not a number"),
            ("credit_card=-1", "at least 0"),
            ("credit_card=inf", "at least 0"),
            ("credit_card=0", "above 0"),
            ("", "above 0"),
            ("paypal=1,paypal=2", "more than once"),
        ] {
            let err = bad.parse::<Mix>().expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_choice_follows_the_shares_even_over_a_few_orders() {
        let mix: Mix = "credit_card=0.9,declined_card=0.1".parse().expect("valid");
        let declined = |orders: u64| (0..orders).filter(|n| mix.pick(*n) == PaymentMethod::DeclinedCard).count();
        // A low-discrepancy sequence: within one of the share at every length, not just on average.
        for orders in [10, 20, 50, 100, 1000, 10_000] {
            let expected = orders as f64 * 0.1;
            let got = declined(orders) as f64;
            assert!((got - expected).abs() <= 1.0, "{orders} orders: {got} declined, expected {expected}");
        }
        let three: Mix = "credit_card=1,debit_card=1,paypal=2".parse().expect("valid");
        let paypal = (0..10_000).filter(|n| three.pick(*n) == PaymentMethod::Paypal).count();
        assert!((4_990..=5_010).contains(&paypal), "{paypal}");
        assert!((0..10_000).any(|n| three.pick(n) == PaymentMethod::DebitCard));
    }

    #[test]
    fn the_sequence_stays_in_the_unit_interval() {
        for n in [0, 1, 2, u64::MAX / 3, u64::MAX] {
            assert!((0.0..1.0).contains(&spread(n)), "{n}: {}", spread(n));
        }
    }
}
