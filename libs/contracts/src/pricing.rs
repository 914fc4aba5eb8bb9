//! The arms of the `pricing_experiment` feature flag: how a catalog price becomes the price one
//! customer sees and is charged. The catalog (which shows prices) and the order service (which
//! charges them) both apply an arm through [`PricingArm::price`], so what a customer sees in
//! `GET /pets` is exactly what their order charges.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The name of the flag that assigns a customer to an arm.
pub const FLAG: &str = "pricing_experiment";

/// One arm of the pricing experiment, named as the flag's variants are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PricingArm {
    /// The catalog price.
    #[default]
    Control,
    /// 10 % off the catalog price.
    #[serde(rename = "discount_10")]
    Discount10,
    /// 5 % on top of the catalog price.
    #[serde(rename = "premium_plus_5")]
    PremiumPlus5,
}

impl PricingArm {
    /// The arm a flag variant names; `None` for a name that is not an arm (the flag was given a
    /// variant this code does not know: callers serve the catalog price then).
    pub fn from_variant(variant: &str) -> Option<Self> {
        match variant {
            "control" => Some(Self::Control),
            "discount_10" => Some(Self::Discount10),
            "premium_plus_5" => Some(Self::PremiumPlus5),
            _ => None,
        }
    }

    /// The arm's name, as the flag's variant is.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Control => "control",
            Self::Discount10 => "discount_10",
            Self::PremiumPlus5 => "premium_plus_5",
        }
    }

    /// What a customer in this arm pays for something the catalog prices at `list`: rounded
    /// to the cent, half away from zero (as a till does).
    pub fn price(self, list: Decimal) -> Decimal {
        let factor = match self {
            Self::Control => return list,
            Self::Discount10 => Decimal::new(90, 2),
            Self::PremiumPlus5 => Decimal::new(105, 2),
        };
        (list * factor).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_price_to_the_cent() {
        let list = Decimal::new(19999, 2);
        assert_eq!(PricingArm::Control.price(list), list);
        assert_eq!(PricingArm::Discount10.price(list), Decimal::new(17999, 2)); // 179.991
        assert_eq!(PricingArm::PremiumPlus5.price(list), Decimal::new(20999, 2)); // 209.9895
        assert_eq!(PricingArm::Discount10.price(Decimal::new(5, 2)), Decimal::new(5, 2)); // 0.045 → 0.05
    }

    #[test]
    fn arms_round_trip_through_their_variant_names() {
        for arm in [PricingArm::Control, PricingArm::Discount10, PricingArm::PremiumPlus5] {
            assert_eq!(PricingArm::from_variant(arm.as_str()), Some(arm));
            assert_eq!(serde_json::to_value(arm).expect("json"), arm.as_str());
        }
        assert_eq!(PricingArm::from_variant("gold"), None);
    }
}
