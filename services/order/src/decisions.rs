//! What the feature flags decide about an order as it is placed, for the customer placing it:
//! their arm of the pricing experiment ([`pricing::FLAG`]), which prices the order, and
//! whether it is an express order ([`EXPRESS_FLAG`]). Decided once and recorded on the order
//! (`pricing_arm`, `express`); the saga, the payment and the delivery follow the record and
//! never evaluate the flags again, so a flag edit changes new orders only.

use contracts::pricing::{self, PricingArm};
use kit::{
    auth::Principal,
    flags::{EvaluationContext, Flags, context_of},
};
use rust_decimal::Decimal;

/// The boolean flag that makes a customer's orders express orders (delivered the next day).
pub const EXPRESS_FLAG: &str = "express_order_processing";

/// The flags' decisions for one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlagDecisions {
    /// The customer's arm of the pricing experiment.
    pub pricing_arm: PricingArm,
    /// Whether the order is an express order.
    pub express: bool,
}

impl FlagDecisions {
    /// Evaluates the flags for `customer` (bucketed by their id, so a customer stays in one
    /// arm, the arm the catalog shows them prices of).
    pub fn for_customer(flags: &Flags, customer: &Principal) -> Self {
        let context = context_of(Some(customer));
        Self { pricing_arm: pricing_arm(flags, &context), express: flags.enabled(EXPRESS_FLAG, &context) }
    }

    /// What the customer is charged for a pet the catalog lists at `list`.
    pub fn charge(&self, list: Decimal) -> Decimal {
        self.pricing_arm.price(list)
    }
}

/// The arm the pricing flag serves for `context`; the control arm (the catalog price) when
/// the flag cannot be evaluated or serves a variant that is no arm, logged either way.
fn pricing_arm(flags: &Flags, context: &EvaluationContext) -> PricingArm {
    let Some(evaluation) = flags.evaluate(pricing::FLAG, context) else {
        tracing::warn!(flag = pricing::FLAG, "pricing flag not evaluated; the order is charged the catalog price");
        return PricingArm::Control;
    };
    PricingArm::from_variant(&evaluation.variant).unwrap_or_else(|| {
        tracing::warn!(
            flag = pricing::FLAG,
            variant = %evaluation.variant,
            "pricing flag served a variant that is no pricing arm; the order is charged the catalog price"
        );
        PricingArm::Control
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn customer(id: &str) -> Principal {
        Principal::new(id.to_owned(), vec!["customer".to_owned()], None)
    }

    /// Flags where `pricing_experiment` serves `pricing` (a variant name) to everyone, and
    /// `express_order_processing` is on for `express_for` only.
    fn flags(pricing: &str, express_for: &str) -> Flags {
        let doc = json!({
            "flags": {
                "pricing_experiment": {
                    "state": "ENABLED",
                    "variants": { "control": "control", "discount_10": "discount_10", "premium_plus_5": "premium_plus_5", "gold": "gold" },
                    "defaultVariant": pricing,
                },
                "express_order_processing": {
                    "state": "ENABLED",
                    "variants": { "on": true, "off": false },
                    "defaultVariant": "off",
                    "targeting": { "if": [{ "==": [{ "var": "targetingKey" }, express_for] }, "on", null] },
                },
            }
        });
        Flags::from_json(&doc.to_string()).expect("valid flags")
    }

    #[test]
    fn the_customers_arm_prices_the_order() {
        let list = Decimal::new(120_000, 2);
        for (variant, arm, charged) in [
            ("control", PricingArm::Control, Decimal::new(120_000, 2)),
            ("discount_10", PricingArm::Discount10, Decimal::new(108_000, 2)),
            ("premium_plus_5", PricingArm::PremiumPlus5, Decimal::new(126_000, 2)),
        ] {
            let decided = FlagDecisions::for_customer(&flags(variant, "nobody"), &customer("alice"));
            assert_eq!(decided.pricing_arm, arm, "{variant}");
            assert_eq!(decided.charge(list), charged, "{variant}");
        }
    }

    #[test]
    fn a_variant_that_is_no_arm_or_a_missing_flag_charges_the_catalog_price() {
        let decided = FlagDecisions::for_customer(&flags("gold", "nobody"), &customer("alice"));
        assert_eq!(decided.pricing_arm, PricingArm::Control);
        assert_eq!(decided.charge(Decimal::new(2500, 2)), Decimal::new(2500, 2));

        let none = Flags::from_json(r#"{ "flags": {} }"#).expect("valid flags");
        assert_eq!(FlagDecisions::for_customer(&none, &customer("alice")), FlagDecisions::default());
    }

    #[test]
    fn express_is_targeted_per_customer() {
        let flags = flags("control", "alice");
        assert!(FlagDecisions::for_customer(&flags, &customer("alice")).express);
        assert!(!FlagDecisions::for_customer(&flags, &customer("bob")).express);
    }

    #[test]
    fn a_fractional_rollout_keeps_a_customer_in_one_arm() {
        let doc = json!({
            "flags": {
                "pricing_experiment": {
                    "state": "ENABLED",
                    "variants": { "control": "control", "discount_10": "discount_10", "premium_plus_5": "premium_plus_5" },
                    "defaultVariant": "control",
                    "targeting": { "fractional": [["control", 50], ["discount_10", 25], ["premium_plus_5", 25]] },
                },
            }
        });
        let flags = Flags::from_json(&doc.to_string()).expect("valid flags");
        let mut arms = std::collections::HashSet::new();
        for n in 0..40 {
            let id = format!("customer-{n}");
            let first = FlagDecisions::for_customer(&flags, &customer(&id));
            assert_eq!(FlagDecisions::for_customer(&flags, &customer(&id)), first, "{id} stays in its arm");
            arms.insert(first.pricing_arm);
        }
        assert_eq!(arms.len(), 3, "customers are spread over the arms: {arms:?}");
    }
}
