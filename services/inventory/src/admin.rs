//! Catalog administration, for the `admin` role: `POST /pets` lists a new pet (201 with its
//! `Location`), `PUT /pets/{pet_id}` replaces a pet's catalog fields (200). Both answer with
//! the pet as `GET /pets/{pet_id}` shows it, publish `PetListed` / `PetUpdated` on
//! `inventory-events` through the outbox, and invalidate the catalog cache.
//!
//! Bodies are strict (an unknown field is a 400, naming it) and parsed into catalog types at
//! once; a field breaking a rule is a 422 naming it. Availability cannot be set here: a new
//! pet is available, and the sagas alone move it on. The price of a reserved or sold pet
//! cannot change (409); its other fields can.

use axum::{
    extract::{Path, State, rejection::PathRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use kit::{
    auth::Admin,
    http::{ApiError, CorrelationId, Json, docs},
};
use messaging::MessageContext;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    catalog::{CatalogChange, CatalogEntry, Currency, FieldError, PetId, Price, Refusal},
    domain::Pet,
    http::{AppState, PetView, storage_error},
};

/// The administration routes, described.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_pet)).routes(routes!(revise_pet))
}

/// Body of `PUT /pets/{pet_id}`: every catalog field (the id is the path's).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Buddy", "category": "dog", "breed": "Golden Retriever", "age_months": 24,
    "price": "1150.00", "currency": "USD", "description": "Friendly and energetic."
}))]
struct PetBody {
    /// Display name; surrounding blanks are ignored.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    name: String,
    /// `a-z`, `0-9` and `-`, e.g. `dog`.
    #[schema(pattern = "^[a-z0-9-]{1,64}$")]
    category: String,
    /// Breed or species.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    breed: String,
    /// Age in months.
    #[schema(minimum = 0, maximum = 1200)]
    age_months: i64,
    /// A decimal string, e.g. `"19.99"`: more than 0, less than 1000000, at most two places.
    #[schema(pattern = r"^[0-9]+(\.[0-9]{1,2})?$")]
    price: String,
    /// ISO 4217 code, e.g. `USD`.
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: String,
    /// Free text, at most 2000 characters.
    #[serde(default)]
    #[schema(max_length = 2000)]
    description: String,
}

impl PetBody {
    fn parse(self) -> Result<CatalogEntry, FieldError> {
        Ok(CatalogEntry {
            name: CatalogEntry::name(&self.name)?,
            category: CatalogEntry::category(self.category)?,
            breed: CatalogEntry::breed(&self.breed)?,
            age_months: CatalogEntry::age_months(self.age_months)?,
            price: Price::parse(&self.price)?,
            currency: Currency::parse(self.currency)?,
            description: CatalogEntry::description(&self.description)?,
        })
    }
}

/// Body of `POST /pets`: the new pet's id and every catalog field. (Not a flattened
/// [`PetBody`]: serde cannot deny unknown fields through `flatten`.)
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "pet_id": "corgi-101", "name": "Biscuit", "category": "dog", "breed": "Pembroke Welsh Corgi",
    "age_months": 10, "price": "950.00", "currency": "USD", "description": "Short legs, big heart."
}))]
struct NewPetBody {
    /// The new pet's id: `a-z`, `0-9` and `-`.
    #[schema(pattern = "^[a-z0-9-]{1,128}$")]
    pet_id: String,
    /// Display name; surrounding blanks are ignored.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    name: String,
    /// `a-z`, `0-9` and `-`, e.g. `dog`.
    #[schema(pattern = "^[a-z0-9-]{1,64}$")]
    category: String,
    /// Breed or species.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    breed: String,
    /// Age in months.
    #[schema(minimum = 0, maximum = 1200)]
    age_months: i64,
    /// A decimal string, e.g. `"19.99"`: more than 0, less than 1000000, at most two places.
    #[schema(pattern = r"^[0-9]+(\.[0-9]{1,2})?$")]
    price: String,
    /// ISO 4217 code, e.g. `USD`.
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: String,
    /// Free text, at most 2000 characters.
    #[serde(default)]
    #[schema(max_length = 2000)]
    description: String,
}

impl NewPetBody {
    fn parse(self) -> Result<CatalogChange, FieldError> {
        let Self { pet_id, name, category, breed, age_months, price, currency, description } = self;
        let pet_id = PetId::parse(pet_id)?;
        let entry = PetBody { name, category, breed, age_months, price, currency, description }.parse()?;
        Ok(CatalogChange::List(pet_id, entry))
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::validation(e.to_string())
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NoSuchPet(_) => ApiError::not_found(refusal.to_string()),
            Refusal::AlreadyListed(_) | Refusal::PriceFrozen { .. } => ApiError::conflict(refusal.to_string()),
        }
    }
}

/// Applies `change` for `admin`, then forgets what this instance's cache knew of the pet at
/// once (the event does the same for every instance, a moment later).
async fn apply(state: &AppState, change: CatalogChange, admin: &Admin, correlation_id: &str) -> Result<Pet, ApiError> {
    let ctx = MessageContext::correlated(correlation_id);
    let changed_by = admin.0.subject();
    let pet = state.store.change(&change, changed_by, &state.source, &ctx).await.map_err(storage_error)??;
    state.cache.invalidate(&pet.pet_id).await;
    let action = if change.is_new() { "listed" } else { "revised" };
    tracing::info!(pet_id = %pet.pet_id, changed_by, correlation_id, "pet {action}");
    Ok(pet)
}

/// Lists a new pet, available (the `admin` role).
#[utoipa::path(
    post,
    path = "/pets",
    request_body = NewPetBody,
    responses(
        (status = 201, description = "The pet is listed.", body = PetView,
         headers(("Location" = String, description = "The pet: `/pets/{pet_id}`."))),
        (status = 403, response = docs::Forbidden),
        (status = 409, response = docs::Conflict),
        (status = 503, response = docs::Unavailable),
    )
)]
async fn list_pet(
    State(state): State<AppState>,
    admin: Admin,
    CorrelationId(correlation_id): CorrelationId,
    Json(body): Json<NewPetBody>,
) -> Result<Response, ApiError> {
    let change = body.parse()?;
    let pet = apply(&state, change, &admin, &correlation_id).await?;
    let location = format!("/pets/{}", pet.pet_id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(PetView::from(&pet))).into_response())
}

/// Replaces a pet's catalog fields (the `admin` role).
///
/// Its availability stays; the price of a reserved or sold pet cannot change.
#[utoipa::path(
    put,
    path = "/pets/{pet_id}",
    params(("pet_id" = String, Path, description = "The pet's id.")),
    request_body = PetBody,
    responses(
        (status = 200, description = "The pet as revised.", body = PetView),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 409, response = docs::Conflict),
        (status = 503, response = docs::Unavailable),
    )
)]
async fn revise_pet(
    State(state): State<AppState>,
    admin: Admin,
    CorrelationId(correlation_id): CorrelationId,
    pet_id: Result<Path<String>, PathRejection>,
    Json(body): Json<PetBody>,
) -> Result<Response, ApiError> {
    // An id the catalog could not hold names no pet.
    let pet_id =
        pet_id.ok().and_then(|Path(id)| PetId::parse(id).ok()).ok_or_else(|| ApiError::not_found("no such pet"))?;
    let change = CatalogChange::Revise(pet_id, body.parse()?);
    let pet = apply(&state, change, &admin, &correlation_id).await?;
    Ok(Json(PetView::from(&pet)).into_response())
}
