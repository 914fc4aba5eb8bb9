//! The starting catalog: one file, `db/inventory/seed_pets.json`, embedded in the binary and
//! loaded by both stores when their catalog is empty.

use std::collections::HashSet;

use chrono::Utc;
use contracts::inventory::PetDetails;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::domain::Pet;

const SEED: &str = include_str!("../../../db/inventory/seed_pets.json");

/// The seed file is malformed or breaks a catalog rule (a defect of the build, found at start-up).
#[derive(Debug, thiserror::Error)]
#[error("db/inventory/seed_pets.json: {0}")]
pub struct SeedError(String);

/// One entry of the seed file: a pet as the catalog lists it, without stock state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedPet {
    pet_id: String,
    name: String,
    category: String,
    breed: String,
    age_months: i32,
    price: Decimal,
    currency: String,
    description: String,
}

/// The seed catalog, every pet available, checked against the rules the `pets` table enforces
/// so that the memory store starts from a catalog PostgreSQL would accept too.
pub fn catalog() -> Result<Vec<Pet>, SeedError> {
    let entries: Vec<SeedPet> = serde_json::from_str(SEED).map_err(|e| SeedError(e.to_string()))?;
    let now = Utc::now();
    let mut seen = HashSet::new();
    entries
        .into_iter()
        .map(|e| {
            let bad = |why: &str| Err(SeedError(format!("{}: {why}", e.pet_id)));
            if e.pet_id.is_empty() || !seen.insert(e.pet_id.clone()) {
                return bad("empty or duplicate pet_id");
            }
            if e.category.is_empty() || e.category != e.category.to_lowercase() {
                return bad("category must be non-empty lower case");
            }
            if e.price.is_sign_negative() || e.price.scale() > 2 || e.age_months < 0 {
                return bad("price must be >= 0 with at most two decimals, age_months >= 0");
            }
            if e.currency.len() != 3 || !e.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return bad("currency must be an ISO 4217 code");
            }
            let mut price = e.price;
            price.rescale(2);
            let details = PetDetails {
                name: e.name,
                category: e.category,
                breed: e.breed,
                age_months: e.age_months,
                price,
                currency: e.currency,
                description: e.description,
            };
            Ok(Pet::listed(e.pet_id, details, now))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use contracts::inventory::Availability;

    use super::*;

    #[test]
    fn the_seed_holds_the_original_five_pets_and_a_varied_catalog() {
        let pets = catalog().expect("the seed file is valid");
        let originals = [
            ("golden-retriever-001", "Buddy", "dog", "1200.00"),
            ("persian-cat-002", "Princess", "cat", "800.00"),
            ("cockatiel-003", "Sunny", "bird", "300.00"),
            ("goldfish-004", "Bubbles", "fish", "25.00"),
            ("bearded-dragon-005", "Spike", "reptile", "150.00"),
        ];
        for (id, name, category, price) in originals {
            let pet = pets.iter().find(|p| p.pet_id == id).unwrap_or_else(|| panic!("{id} is missing"));
            assert_eq!(
                (pet.name.as_str(), pet.category.as_str(), pet.price.to_string().as_str()),
                (name, category, price),
                "{id}"
            );
            assert_eq!(pet.currency, "USD", "{id}");
        }
        assert!(pets.len() >= 25, "only {} pets", pets.len());
        for category in ["dog", "cat", "bird", "fish", "reptile"] {
            let n = pets.iter().filter(|p| p.category == category).count();
            assert!(n >= 4, "only {n} pets of category {category}");
        }
        assert!(pets.iter().all(|p| p.status == Availability::Available && p.held_by_saga.is_none()));
    }
}
