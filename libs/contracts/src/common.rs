use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Identifies the saga (and its order) a command or reply belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaRef {
    /// The saga instance.
    pub saga_id: Uuid,
    /// The order the saga processes; the partition key of every saga message.
    pub order_id: Uuid,
}

/// Where a pet is shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Street and number.
    #[schema(pattern = r"\S", example = "1 Main St")]
    pub street: String,
    /// City.
    #[schema(pattern = r"\S", example = "Springfield")]
    pub city: String,
    /// Postal or ZIP code.
    #[schema(pattern = r"\S", example = "12345")]
    pub postal_code: String,
    /// ISO 3166 country code or name.
    #[schema(pattern = r"\S", example = "US")]
    pub country: String,
}

impl Address {
    /// Names of the fields that are blank, for a validation error.
    pub fn blank_fields(&self) -> Vec<&'static str> {
        [
            ("shipping_address.street", &self.street),
            ("shipping_address.city", &self.city),
            ("shipping_address.postal_code", &self.postal_code),
            ("shipping_address.country", &self.country),
        ]
        .into_iter()
        .filter(|(_, v)| v.trim().is_empty())
        .map(|(k, _)| k)
        .collect()
    }
}

/// How the customer pays. `declined_card` is the provider's test card that is always declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    /// A credit card.
    CreditCard,
    /// A debit card.
    DebitCard,
    /// A PayPal account.
    Paypal,
    /// Test card: the payment provider always declines it.
    DeclinedCard,
}
