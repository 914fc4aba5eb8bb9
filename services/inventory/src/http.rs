//! The catalog API: `GET /pets` (filtered, keyset-paged) and `GET /pets/{pet_id}`, both
//! served through the catalog cache and saying so in `X-Cache: HIT|MISS`.

use axum::{
    extract::{FromRequestParts, Path, Query, State, rejection::PathRejection},
    http::{HeaderName, HeaderValue, header, request::Parts},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use contracts::inventory::Availability;
use kit::http::{ApiError, docs};
use kit::{auth::Principal, flags::Flags};
use persistence::StoreError;
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    cache::{CatalogCache, Lookup},
    catalog::{CatalogEntry, PetId},
    domain::{Pet, PetFilter},
    store::InventoryStore,
};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest page a client may ask for.
pub const MAX_LIMIT: usize = 100;
/// Longest pet id the API accepts (in a path or inside a cursor).
const MAX_PET_ID: usize = PetId::MAX_LEN;
/// Longest category the API accepts.
const MAX_CATEGORY: usize = CatalogEntry::MAX_CATEGORY;

/// The response header saying whether the body came from the cache.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What the catalog handlers need.
#[derive(Clone)]
pub struct AppState {
    /// The catalog.
    pub store: InventoryStore,
    /// Its cache.
    pub cache: CatalogCache,
    /// The CloudEvents source of the events the catalog's changes publish.
    pub source: String,
    /// Feature flags (`redis_caching`).
    pub flags: Flags,
}

impl AppState {
    /// `lookup`, unless the `redis_caching` flag is off for `caller`: then the cache is not
    /// asked at all. (Invalidations still run either way, so turning it back on serves
    /// nothing stale.)
    async fn lookup(&self, caller: Option<&Principal>, lookup: impl Future<Output = Lookup>) -> Lookup {
        if self.flags.enabled("redis_caching", &kit::flags::context_of(caller)) {
            lookup.await
        } else {
            Lookup::Bypassed
        }
    }
}

/// The catalog routes, described.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_pets)).routes(routes!(get_pet))
}

/// A pet as the API shows it: the saga holding it stays internal.
#[derive(Serialize, ToSchema)]
#[schema(as = Pet)]
pub(crate) struct PetView<'a> {
    /// The pet's id.
    #[schema(example = "golden-retriever-001")]
    pet_id: &'a str,
    /// Its name.
    name: &'a str,
    /// Its category, e.g. `dog`.
    category: &'a str,
    /// Breed or species.
    breed: &'a str,
    /// Age in months.
    age_months: i32,
    /// A decimal string with two places, e.g. `"1200.00"`: money is never a float.
    #[schema(example = "1200.00", pattern = r"^[0-9]+\.[0-9]{2}$")]
    price: String,
    /// ISO 4217 currency code.
    #[schema(example = "USD")]
    currency: &'a str,
    /// Free text.
    description: &'a str,
    /// Whether it can be ordered.
    status: Availability,
}

impl<'a> From<&'a Pet> for PetView<'a> {
    fn from(p: &'a Pet) -> Self {
        let mut price = p.price;
        price.rescale(2);
        Self {
            pet_id: &p.pet_id,
            name: &p.name,
            category: &p.category,
            breed: &p.breed,
            age_months: p.age_months,
            price: price.to_string(),
            currency: &p.currency,
            description: &p.description,
            status: p.status,
        }
    }
}

/// A page of `GET /pets`.
#[derive(Serialize, ToSchema)]
#[schema(as = PetPage)]
struct PageView<'a> {
    /// Pets in id order.
    items: Vec<PetView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// The validated query of `GET /pets`. Unknown parameters are ignored (and so never split
/// the cache); an empty value counts as absent; a malformed value is a 400 and an
/// out-of-range one a 422, each naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListQuery {
    filter: PetFilter,
    after: Option<String>,
    limit: usize,
}

impl ListQuery {
    fn parse(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut q = Self { filter: PetFilter::default(), after: None, limit: DEFAULT_LIMIT };
        let mut seen = Vec::new();
        for (name, value) in pairs {
            if !matches!(name.as_str(), "category" | "max_price" | "available" | "limit" | "cursor") {
                continue;
            }
            if seen.contains(&name) {
                return Err(ApiError::bad_request(format!("query parameter `{name}` is given more than once")));
            }
            seen.push(name.clone());
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match name.as_str() {
                "category" if value.len() > MAX_CATEGORY => {
                    return Err(ApiError::validation(format!(
                        "query parameter `category` is longer than {MAX_CATEGORY} characters"
                    )));
                }
                "category" if !value.chars().all(|c| c.is_alphanumeric() || c == ' ' || c == '-') => {
                    return Err(ApiError::bad_request(
                        "query parameter `category` may hold only letters, digits, spaces and `-`",
                    ));
                }
                "category" => q.filter.category = Some(value.to_owned()),
                "max_price" => q.filter.max_price = Some(parse_max_price(value)?),
                "available" => q.filter.available = Some(parse_available(value)?),
                "limit" => q.limit = parse_limit(value)?,
                _ => q.after = Some(decode_cursor(value)?),
            }
        }
        Ok(q)
    }

    /// The cache key of the page: every parameter in one canonical form, so `max_price=50`
    /// and `max_price=50.00&foo=1` share an entry.
    fn cache_key(&self) -> String {
        let f = &self.filter;
        let key = (&f.category, f.max_price.map(|p| p.normalize().to_string()), f.available, self.limit, &self.after);
        serde_json::to_string(&key).unwrap_or_default()
    }
}

fn parse_max_price(value: &str) -> Result<Decimal, ApiError> {
    let why = "query parameter `max_price` must be a decimal number of at least 0, e.g. `250.00`";
    let price: Decimal = value.parse().map_err(|_| ApiError::bad_request(why))?;
    if price.is_sign_negative() && !price.is_zero() {
        return Err(ApiError::validation(why));
    }
    Ok(price)
}

fn parse_available(value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::bad_request("query parameter `available` must be `true` or `false`")),
    }
}

fn parse_limit(value: &str) -> Result<usize, ApiError> {
    let why = format!("query parameter `limit` must be an integer from 1 to {MAX_LIMIT}");
    let limit: i64 = value.parse().map_err(|_| ApiError::bad_request(why.clone()))?;
    usize::try_from(limit).ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| ApiError::validation(why))
}

fn encode_cursor(pet_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(pet_id)
}

fn decode_cursor(value: &str) -> Result<String, ApiError> {
    URL_SAFE_NO_PAD
        .decode(value)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|id| !id.is_empty() && id.len() <= MAX_PET_ID)
        .ok_or_else(|| ApiError::bad_request("query parameter `cursor` is not a cursor returned by this API"))
}

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|_| ApiError::bad_request("the query string is malformed"))?;
        Self::parse(pairs)
    }
}

fn json_response(body: String, cache: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (X_CACHE, HeaderValue::from_static(cache)),
    ];
    (headers, body).into_response()
}

/// The problem for a storage failure: an outage is a 503 to retry, anything else a 500.
pub(crate) fn storage_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Database(_) => ApiError::unavailable("the catalog is unavailable; try again shortly", 1, e),
        other => ApiError::internal(other),
    }
}

/// The catalog, filtered, in pages (keyset-paged by pet id), through the catalog cache.
#[utoipa::path(
    get,
    path = "/pets",
    params(
        ("category" = Option<String>, Query, max_length = 64,
         description = "Only pets of this category, e.g. `dog`: letters, digits, spaces and `-`."),
        ("max_price" = Option<String>, Query, pattern = r"^[0-9]+(\.[0-9]+)?$",
         description = "Only pets costing at most this, a decimal of at least 0, e.g. `250.00`."),
        ("available" = Option<bool>, Query, description = "Only pets that can (`true`) or cannot (`false`) be ordered."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Page size (default 20)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of pets.", body = PageView,
         headers(("X-Cache" = String, description = "`HIT` when the page came from the catalog cache, `MISS` when not, `BYPASS` when the `redis_caching` flag is off for the caller."))),
        (status = 400, response = docs::BadRequest),
        (status = 422, response = docs::Unprocessable),
        (status = 503, response = docs::Unavailable),
    )
)]
async fn list_pets(
    State(state): State<AppState>,
    caller: Option<Principal>,
    query: ListQuery,
) -> Result<Response, ApiError> {
    let lookup = state.lookup(caller.as_ref(), state.cache.listing(&query.cache_key())).await;
    if let Lookup::Hit(json) = lookup {
        return Ok(json_response(json, "HIT"));
    }
    let mut pets =
        state.store.list(&query.filter, query.after.as_deref(), query.limit + 1).await.map_err(storage_error)?;
    let next_cursor = if pets.len() > query.limit {
        pets.truncate(query.limit);
        pets.last().map(|p| encode_cursor(&p.pet_id))
    } else {
        None
    };
    let page = PageView { items: pets.iter().map(PetView::from).collect(), next_cursor };
    let body = serde_json::to_string(&page).map_err(ApiError::internal)?;
    let header = lookup.header();
    if let Lookup::Miss(slot) = lookup {
        state.cache.fill(slot, &body).await;
    }
    Ok(json_response(body, header))
}

/// One pet, through the catalog cache.
#[utoipa::path(
    get,
    path = "/pets/{pet_id}",
    params(("pet_id" = String, Path, description = "The pet's id, e.g. `golden-retriever-001`.")),
    responses(
        (status = 200, description = "The pet.", body = PetView,
         headers(("X-Cache" = String, description = "`HIT` when the pet came from the catalog cache, `MISS` when not, `BYPASS` when the `redis_caching` flag is off for the caller."))),
        (status = 404, response = docs::NotFound),
        (status = 503, response = docs::Unavailable),
    )
)]
async fn get_pet(
    State(state): State<AppState>,
    caller: Option<Principal>,
    pet_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let not_found = |id: &str| ApiError::not_found(format!("no pet {id}"));
    let pet_id = match pet_id {
        Ok(Path(id)) if !id.is_empty() && id.len() <= MAX_PET_ID => id,
        Ok(Path(id)) => return Err(not_found(&id)),
        Err(_) => return Err(ApiError::not_found("no such pet")),
    };
    let lookup = state.lookup(caller.as_ref(), state.cache.pet(&pet_id)).await;
    if let Lookup::Hit(json) = lookup {
        return Ok(json_response(json, "HIT"));
    }
    let pet = state.store.get(&pet_id).await.map_err(storage_error)?.ok_or_else(|| not_found(&pet_id))?;
    let body = serde_json::to_string(&PetView::from(&pet)).map_err(ApiError::internal)?;
    let header = lookup.header();
    if let Lookup::Miss(slot) = lookup {
        state.cache.fill(slot, &body).await;
    }
    Ok(json_response(body, header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<ListQuery, ApiError> {
        let uri: axum::http::Uri = format!("/pets?{query}").parse().expect("uri");
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&uri).expect("pairs");
        ListQuery::parse(pairs)
    }

    #[test]
    fn equivalent_queries_share_one_cache_key() {
        let same = [
            ("max_price=50", "max_price=50.00&utm_source=x"),
            ("category=dog&limit=20", "limit=20&category=dog"),
            ("", "limit=20&cursor="),
        ];
        for (a, b) in same {
            let (ka, kb) = (parse(a).expect(a).cache_key(), parse(b).expect(b).cache_key());
            assert_eq!(ka, kb, "`{a}` and `{b}`");
        }
        assert_ne!(parse("limit=5").expect("5").cache_key(), parse("limit=6").expect("6").cache_key());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = encode_cursor("golden-retriever-001");
        assert_eq!(parse(&format!("cursor={cursor}")).expect("valid").after.as_deref(), Some("golden-retriever-001"));
        for bad in ["cursor=!!!", "cursor=%FF", "cursor=wA"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.to_string().contains("cursor"), "{bad}: {err}");
        }
    }

    #[test]
    fn prices_render_with_two_decimals() {
        let mut pet = crate::seed::catalog().expect("seed").remove(0);
        for (price, shown) in
            [(Decimal::new(25, 0), "25.00"), (Decimal::new(12, 1), "1.20"), (Decimal::new(120000, 2), "1200.00")]
        {
            pet.price = price;
            assert_eq!(PetView::from(&pet).price, shown, "{price}");
        }
    }
}
