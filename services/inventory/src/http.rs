//! The catalog API: `GET /pets` (filtered, sorted, keyset-paged) and `GET /pets/{pet_id}`,
//! both served through the catalog cache and saying so in `X-Cache: HIT|MISS|BYPASS`.
//!
//! Two feature flags act here, evaluated for the caller of the request:
//!
//! - `premium_filters`: the parameters `breed`, `min_age_months`, `max_age_months` and `sort`
//!   work only for callers the flag is on for (in `config/flags.json`: tokens with
//!   `tier: premium`); anyone else who uses one (anonymous callers included) gets a 403
//!   naming the flag. The flag is evaluated only when one of them is given.
//! - `pricing_experiment`: a signed-in caller sees every price as the arm the flag gives them
//!   prices it ([`PricingArm::price`], the price the order service charges too), and the arm
//!   in `X-Pricing-Arm`. Anonymous callers see the catalog (list) price, and the flag is not
//!   evaluated for them; nor is it when it fails or serves a variant that is no arm (the list
//!   price is served then, logged). It is evaluated once per request.
//!
//! The cache holds pages and pets at list prices, shared by every caller; the caller's arm is
//! applied to what it holds after it is read. Filters (`max_price` included) and sorts work on
//! list prices: an arm scales every price by the same factor, so the order is the same.
//!
//! Keyset paging follows the sort: `next_cursor` holds the sort, the last pet's sort key and
//! its id (the tie-break), base64url-encoded (see [`Cursor`]); a cursor pages only the sort it
//! came from, and is refused (400) with another.

use std::borrow::Cow;

use axum::{
    extract::{FromRequestParts, Path, Query, State, rejection::PathRejection},
    http::{HeaderName, HeaderValue, header, request::Parts},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use contracts::{inventory::Availability, pricing::PricingArm};
use kit::http::{ApiError, Problem, docs};
use kit::{
    auth::Principal,
    flags::{Flags, context_of},
};
use persistence::StoreError;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    cache::{CatalogCache, Lookup},
    catalog::{CatalogEntry, PetId},
    domain::{Cursor, Pet, PetFilter, PetSort},
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
/// Longest breed the API accepts.
const MAX_BREED: usize = CatalogEntry::MAX_NAME;
/// Longest cursor (decoded): a sort, a sort key and a pet id.
const MAX_CURSOR: usize = MAX_PET_ID + 48;

/// The flag that opens the premium parameters of `GET /pets`.
pub const PREMIUM_FILTERS: &str = "premium_filters";
/// The parameters of `GET /pets` that need [`PREMIUM_FILTERS`], in the order a refusal names
/// them.
const PREMIUM_PARAMETERS: [&str; 4] = ["breed", "min_age_months", "max_age_months", "sort"];
/// Every parameter `GET /pets` reads; others are ignored.
const PARAMETERS: [&str; 9] =
    ["category", "max_price", "available", "limit", "cursor", "breed", "min_age_months", "max_age_months", "sort"];

/// The response header saying whether the body came from the cache.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// The response header naming the `pricing_experiment` arm whose prices the body shows (only
/// for a signed-in caller that an arm was applied for).
pub const X_PRICING_ARM: HeaderName = HeaderName::from_static("x-pricing-arm");

/// What the catalog handlers need.
#[derive(Clone)]
pub struct AppState {
    /// The catalog.
    pub store: InventoryStore,
    /// Its cache.
    pub cache: CatalogCache,
    /// The CloudEvents source of the events the catalog's changes publish.
    pub source: String,
    /// Feature flags (`redis_caching`, `premium_filters`, `pricing_experiment`).
    pub flags: Flags,
}

impl AppState {
    /// `lookup`, unless the `redis_caching` flag is off for `caller`: then the cache is not
    /// asked at all. (Invalidations still run either way, so turning it back on serves
    /// nothing stale.)
    async fn lookup(&self, caller: Option<&Principal>, lookup: impl Future<Output = Lookup>) -> Lookup {
        if self.flags.enabled("redis_caching", &context_of(caller)) { lookup.await } else { Lookup::Bypassed }
    }

    /// The arm of the `pricing_experiment` flag whose prices `caller` sees: `None` (list
    /// prices) for an anonymous caller (the flag is not evaluated), and when the evaluation
    /// fails or serves a variant that is no arm (logged).
    fn pricing_arm(&self, caller: Option<&Principal>) -> Option<PricingArm> {
        let caller = caller?;
        let flag = contracts::pricing::FLAG;
        let Some(evaluation) = self.flags.evaluate(flag, &context_of(Some(caller))) else {
            tracing::warn!(flag, "pricing arm unknown (the flag could not be evaluated); serving list prices");
            return None;
        };
        let arm = PricingArm::from_variant(&evaluation.variant);
        if arm.is_none() {
            tracing::warn!(flag, variant = evaluation.variant, "the flag served no pricing arm; serving list prices");
        }
        arm
    }
}

/// The catalog routes, described.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_pets)).routes(routes!(get_pet))
}

/// A pet as the API shows it: the saga holding it stays internal. Read back from the cache
/// too, to apply a pricing arm to a cached pet.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = Pet)]
pub(crate) struct PetView<'a> {
    /// The pet's id.
    #[schema(example = "golden-retriever-001")]
    pet_id: Cow<'a, str>,
    /// Its name.
    name: Cow<'a, str>,
    /// Its category, e.g. `dog`.
    category: Cow<'a, str>,
    /// Breed or species.
    breed: Cow<'a, str>,
    /// Age in months.
    age_months: i32,
    /// A decimal string with two places, e.g. `"1200.00"`: money is never a float. For a
    /// signed-in caller, the price of their `pricing_experiment` arm (see `X-Pricing-Arm`).
    #[schema(example = "1200.00", pattern = r"^[0-9]+\.[0-9]{2}$")]
    price: String,
    /// ISO 4217 currency code.
    #[schema(example = "USD")]
    currency: Cow<'a, str>,
    /// Free text.
    description: Cow<'a, str>,
    /// Whether it can be ordered.
    status: Availability,
}

/// `amount` as the API shows money: two decimal places.
fn money(mut amount: Decimal) -> String {
    amount.rescale(2);
    amount.to_string()
}

impl<'a> From<&'a Pet> for PetView<'a> {
    fn from(p: &'a Pet) -> Self {
        Self {
            pet_id: Cow::Borrowed(&p.pet_id),
            name: Cow::Borrowed(&p.name),
            category: Cow::Borrowed(&p.category),
            breed: Cow::Borrowed(&p.breed),
            age_months: p.age_months,
            price: money(p.price),
            currency: Cow::Borrowed(&p.currency),
            description: Cow::Borrowed(&p.description),
            status: p.status,
        }
    }
}

impl PetView<'_> {
    /// The pet at the price `arm` makes of its (list) price.
    fn priced(mut self, arm: PricingArm) -> Result<Self, rust_decimal::Error> {
        let list: Decimal = self.price.parse()?;
        self.price = money(arm.price(list));
        Ok(self)
    }
}

/// A page of `GET /pets`.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = PetPage)]
struct PageView<'a> {
    /// Pets in the order of `sort` (ties, and the default, by pet id).
    items: Vec<PetView<'a>>,
    /// Pass as `cursor` (with the same `sort`) for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

impl PageView<'_> {
    /// The page at the prices `arm` makes of its (list) prices.
    fn priced(self, arm: PricingArm) -> Result<Self, rust_decimal::Error> {
        let items = self.items.into_iter().map(|p| p.priced(arm)).collect::<Result<_, _>>()?;
        Ok(Self { items, ..self })
    }
}

/// Whether `arm` changes prices at all (`None` and `control` show list prices).
fn reprices(arm: Option<PricingArm>) -> Option<PricingArm> {
    arm.filter(|a| *a != PricingArm::Control)
}

/// `list_body` (a [`PageView`] or a [`PetView`] at list prices, as cached) at the prices of
/// `arm`.
fn reprice<T>(
    list_body: &str,
    arm: PricingArm,
    price: impl FnOnce(T, PricingArm) -> Result<T, rust_decimal::Error>,
) -> Result<String, String>
where
    T: DeserializeOwned + Serialize,
{
    let view: T = serde_json::from_str(list_body).map_err(|e| e.to_string())?;
    let view = price(view, arm).map_err(|e| e.to_string())?;
    serde_json::to_string(&view).map_err(|e| e.to_string())
}

/// The validated query of `GET /pets`. Unknown parameters are ignored (and so never split
/// the cache); an empty value counts as absent; a malformed value is a 400 and an
/// out-of-range one a 422, each naming the parameter. Inconsistent parameters (`min_age_months`
/// above `max_age_months`, a cursor of another sort) are a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListQuery {
    filter: PetFilter,
    sort: PetSort,
    after: Option<Cursor>,
    limit: usize,
    /// The parameters given that need [`PREMIUM_FILTERS`], in [`PREMIUM_PARAMETERS`] order.
    premium: Vec<&'static str>,
}

impl ListQuery {
    fn parse(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut q = Self {
            filter: PetFilter::default(),
            sort: PetSort::default(),
            after: None,
            limit: DEFAULT_LIMIT,
            premium: Vec::new(),
        };
        let (mut seen, mut given) = (Vec::new(), Vec::new());
        let mut cursor = None;
        for (name, value) in pairs {
            let Some(name) = PARAMETERS.into_iter().find(|p| *p == name) else { continue };
            if seen.contains(&name) {
                return Err(ApiError::bad_request(format!("query parameter `{name}` is given more than once")));
            }
            seen.push(name);
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            given.push(name);
            match name {
                "category" => q.filter.category = Some(parse_name("category", value, MAX_CATEGORY)?),
                "breed" => q.filter.breed = Some(parse_name("breed", value, MAX_BREED)?),
                "max_price" => q.filter.max_price = Some(parse_max_price(value)?),
                "available" => q.filter.available = Some(parse_available(value)?),
                "min_age_months" => q.filter.min_age_months = Some(parse_age(name, value)?),
                "max_age_months" => q.filter.max_age_months = Some(parse_age(name, value)?),
                "sort" => q.sort = parse_sort(value)?,
                "limit" => q.limit = parse_limit(value)?,
                _ => cursor = Some(decode_cursor(value)?),
            }
        }
        if let (Some(min), Some(max)) = (q.filter.min_age_months, q.filter.max_age_months)
            && min > max
        {
            return Err(ApiError::bad_request(format!(
                "query parameter `min_age_months` ({min}) must not exceed `max_age_months` ({max})"
            )));
        }
        if let Some(cursor) = &cursor
            && cursor.sort() != q.sort
        {
            return Err(ApiError::bad_request(format!(
                "query parameter `cursor` pages a listing sorted by `{}`, not by `{}`: a cursor works only \
                 with the sort it came from",
                cursor.sort().as_str(),
                q.sort.as_str()
            )));
        }
        q.after = cursor;
        q.premium = PREMIUM_PARAMETERS.into_iter().filter(|p| given.contains(p)).collect();
        Ok(q)
    }

    /// The cache key of the page: every parameter in one canonical form, so `max_price=50`
    /// and `max_price=50.00&foo=1` share an entry.
    fn cache_key(&self) -> String {
        let f = &self.filter;
        let key = (
            &f.category,
            f.max_price.map(|p| p.normalize().to_string()),
            f.available,
            &f.breed,
            f.min_age_months,
            f.max_age_months,
            self.sort.as_str(),
            self.limit,
            self.after.as_ref().map(Cursor::to_text),
        );
        serde_json::to_string(&key).unwrap_or_default()
    }
}

/// `value` of the parameter `name` (`category`, `breed`) when it has at most `max`
/// characters, all letters, digits, spaces or `-`.
fn parse_name(name: &str, value: &str, max: usize) -> Result<String, ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::validation(format!("query parameter `{name}` is longer than {max} characters")));
    }
    if !value.chars().all(|c| c.is_alphanumeric() || c == ' ' || c == '-') {
        return Err(ApiError::bad_request(format!(
            "query parameter `{name}` may hold only letters, digits, spaces and `-`"
        )));
    }
    Ok(value.to_owned())
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

/// An age bound (`min_age_months`, `max_age_months`): an integer from 0 to the oldest age the
/// catalog takes.
fn parse_age(name: &str, value: &str) -> Result<i32, ApiError> {
    let max = CatalogEntry::MAX_AGE_MONTHS;
    let why = format!("query parameter `{name}` must be an integer from 0 to {max}");
    let age: i64 = value.parse().map_err(|_| ApiError::bad_request(why.clone()))?;
    i32::try_from(age).ok().filter(|a| (0..=max).contains(a)).ok_or_else(|| ApiError::validation(why))
}

fn parse_sort(value: &str) -> Result<PetSort, ApiError> {
    PetSort::parse(value).ok_or_else(|| {
        let names: Vec<String> = PetSort::ALL.iter().map(|s| format!("`{}`", s.as_str())).collect();
        ApiError::bad_request(format!("query parameter `sort` must be one of {}", names.join(", ")))
    })
}

fn parse_limit(value: &str) -> Result<usize, ApiError> {
    let why = format!("query parameter `limit` must be an integer from 1 to {MAX_LIMIT}");
    let limit: i64 = value.parse().map_err(|_| ApiError::bad_request(why.clone()))?;
    usize::try_from(limit).ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| ApiError::validation(why))
}

fn encode_cursor(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(cursor.to_text())
}

fn decode_cursor(value: &str) -> Result<Cursor, ApiError> {
    let refused = || ApiError::bad_request("query parameter `cursor` is not a cursor returned by this API");
    if value.len() > MAX_CURSOR.div_ceil(3) * 4 {
        return Err(refused());
    }
    URL_SAFE_NO_PAD
        .decode(value)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|text| text.len() <= MAX_CURSOR)
        .and_then(|text| Cursor::parse(&text))
        .filter(|cursor| cursor.pet_id().len() <= MAX_PET_ID)
        .ok_or_else(refused)
}

/// The 403 for a caller `premium_filters` is off for who used `parameters`, naming them and
/// the flag.
fn premium_refused(parameters: &[&str]) -> ApiError {
    let names: Vec<String> = parameters.iter().map(|p| format!("`{p}`")).collect();
    let verb = if names.len() == 1 { "needs" } else { "need" };
    ApiError::forbidden(format!(
        "{} {verb} the `{PREMIUM_FILTERS}` feature, which is not enabled for you",
        names.join(", ")
    ))
}

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|_| ApiError::bad_request("the query string is malformed"))?;
        Self::parse(pairs)
    }
}

/// A JSON answer with its `X-Cache`, and `X-Pricing-Arm` when an arm priced it.
fn json_response(body: String, cache: &'static str, arm: Option<PricingArm>) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (X_CACHE, HeaderValue::from_static(cache)),
        ],
        body,
    )
        .into_response();
    if let Some(arm) = arm {
        response.headers_mut().insert(X_PRICING_ARM, HeaderValue::from_static(arm.as_str()));
    }
    response
}

/// A cache hit as the caller sees it (its arm applied), or `Err` with the [`Lookup`] to carry
/// on with when the cached value cannot be priced (logged: storage answers then, and the entry
/// is left to its TTL).
fn hit<T>(
    json: String,
    arm: Option<PricingArm>,
    price: impl FnOnce(T, PricingArm) -> Result<T, rust_decimal::Error>,
) -> Result<Response, Lookup>
where
    T: DeserializeOwned + Serialize,
{
    let Some(repricing) = reprices(arm) else { return Ok(json_response(json, "HIT", arm)) };
    match reprice(&json, repricing, price) {
        Ok(body) => Ok(json_response(body, "HIT", arm)),
        Err(error) => {
            tracing::warn!(error, "a cached catalog entry cannot be priced; reading storage");
            Err(Lookup::Unavailable)
        }
    }
}

/// The problem for a storage failure: an outage is a 503 to retry, anything else a 500.
pub(crate) fn storage_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Database(_) => ApiError::unavailable("the catalog is unavailable; try again shortly", 1, e),
        other => ApiError::internal(other),
    }
}

/// The catalog, filtered and sorted, in pages (keyset-paged by the sort key and the pet id),
/// through the catalog cache. `breed`, `min_age_months`, `max_age_months` and `sort` need the
/// `premium_filters` flag; a signed-in caller sees the prices of their `pricing_experiment` arm.
#[utoipa::path(
    get,
    path = "/pets",
    params(
        ("category" = Option<String>, Query, max_length = 64,
         description = "Only pets of this category, e.g. `dog`: letters, digits, spaces and `-`."),
        ("max_price" = Option<String>, Query, pattern = r"^[0-9]+(\.[0-9]+)?$",
         description = "Only pets whose catalog (list) price is at most this, a decimal of at least 0, e.g. `250.00`."),
        ("available" = Option<bool>, Query, description = "Only pets that can (`true`) or cannot (`false`) be ordered."),
        ("breed" = Option<String>, Query, max_length = 100,
         description = "Only pets of exactly this breed, e.g. `Golden Retriever`: letters, digits, spaces and `-`. \
                        Needs the `premium_filters` feature."),
        ("min_age_months" = Option<i64>, Query, minimum = 0, maximum = 1200,
         description = "Only pets at least this many months old. Needs the `premium_filters` feature."),
        ("max_age_months" = Option<i64>, Query, minimum = 0, maximum = 1200,
         description = "Only pets at most this many months old (not below `min_age_months`). Needs the \
                        `premium_filters` feature."),
        ("sort" = Option<String>, Query, pattern = r"^(id|-?price|-?age)$",
         description = "The order: `id` (the default), `price` (cheapest first), `-price` (dearest first), `age` \
                        (youngest first) or `-age` (oldest first); ties go by pet id. Needs the `premium_filters` \
                        feature."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Page size (default 20)."),
        ("cursor" = Option<String>, Query,
         description = "`next_cursor` of the previous page, with the same `sort` (a cursor of another sort is a 400)."),
    ),
    responses(
        (status = 200, description = "A page of pets.", body = PageView,
         headers(
             ("X-Cache" = String, description = "`HIT` when the page came from the catalog cache, `MISS` when not, `BYPASS` when the `redis_caching` flag is off for the caller."),
             ("X-Pricing-Arm" = String, description = "For a signed-in caller: the `pricing_experiment` arm whose prices the page shows (`control`, `discount_10` or `premium_plus_5`). Absent for anonymous callers, who see list prices."),
         )),
        (status = 400, response = docs::BadRequest),
        (status = 403, description = "A parameter needing the `premium_filters` feature was given by a caller it is \
                                      not enabled for (anonymous callers included); the detail names the parameters \
                                      and the flag.",
         body = Problem, content_type = "application/problem+json"),
        (status = 422, response = docs::Unprocessable),
        (status = 503, response = docs::Unavailable),
    )
)]
async fn list_pets(
    State(state): State<AppState>,
    caller: Option<Principal>,
    query: ListQuery,
) -> Result<Response, ApiError> {
    let caller = caller.as_ref();
    if !query.premium.is_empty() && !state.flags.enabled(PREMIUM_FILTERS, &context_of(caller)) {
        return Err(premium_refused(&query.premium));
    }
    let arm = state.pricing_arm(caller);
    let lookup = match state.lookup(caller, state.cache.listing(&query.cache_key())).await {
        Lookup::Hit(json) => match hit(json, arm, PageView::priced) {
            Ok(response) => return Ok(response),
            Err(lookup) => lookup,
        },
        lookup => lookup,
    };
    let mut pets = state
        .store
        .list(&query.filter, query.sort, query.after.as_ref(), query.limit + 1)
        .await
        .map_err(storage_error)?;
    let next_cursor = if pets.len() > query.limit {
        pets.truncate(query.limit);
        pets.last().map(|p| encode_cursor(&Cursor::after(query.sort, p)))
    } else {
        None
    };
    let page = PageView { items: pets.iter().map(PetView::from).collect(), next_cursor };
    let list_body = serde_json::to_string(&page).map_err(ApiError::internal)?;
    let header = lookup.header();
    if let Lookup::Miss(slot) = lookup {
        state.cache.fill(slot, &list_body).await;
    }
    let body = match reprices(arm) {
        None => list_body,
        Some(arm) => {
            serde_json::to_string(&page.priced(arm).map_err(ApiError::internal)?).map_err(ApiError::internal)?
        }
    };
    Ok(json_response(body, header, arm))
}

/// One pet, through the catalog cache; a signed-in caller sees the price of their
/// `pricing_experiment` arm.
#[utoipa::path(
    get,
    path = "/pets/{pet_id}",
    params(("pet_id" = String, Path, description = "The pet's id, e.g. `golden-retriever-001`.")),
    responses(
        (status = 200, description = "The pet.", body = PetView,
         headers(
             ("X-Cache" = String, description = "`HIT` when the pet came from the catalog cache, `MISS` when not, `BYPASS` when the `redis_caching` flag is off for the caller."),
             ("X-Pricing-Arm" = String, description = "For a signed-in caller: the `pricing_experiment` arm whose price the pet shows (`control`, `discount_10` or `premium_plus_5`). Absent for anonymous callers, who see the list price."),
         )),
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
    let caller = caller.as_ref();
    let arm = state.pricing_arm(caller);
    let lookup = match state.lookup(caller, state.cache.pet(&pet_id)).await {
        Lookup::Hit(json) => match hit(json, arm, PetView::priced) {
            Ok(response) => return Ok(response),
            Err(lookup) => lookup,
        },
        lookup => lookup,
    };
    let pet = state.store.get(&pet_id).await.map_err(storage_error)?.ok_or_else(|| not_found(&pet_id))?;
    let view = PetView::from(&pet);
    let list_body = serde_json::to_string(&view).map_err(ApiError::internal)?;
    let header = lookup.header();
    if let Lookup::Miss(slot) = lookup {
        state.cache.fill(slot, &list_body).await;
    }
    let body = match reprices(arm) {
        None => list_body,
        Some(arm) => {
            serde_json::to_string(&view.priced(arm).map_err(ApiError::internal)?).map_err(ApiError::internal)?
        }
    };
    Ok(json_response(body, header, arm))
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use axum::{
        body::Body,
        http::{Request, StatusCode},
    };
    use http_body_util::BodyExt as _;
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

    use super::*;
    use crate::store::CatalogState;

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
            ("", "sort="),
            ("sort=-age&breed=Koi", "breed=Koi&sort=-age&min_age_months="),
            ("min_age_months=3&max_age_months=9", "max_age_months=09&min_age_months=3"),
        ];
        for (a, b) in same {
            let (ka, kb) = (parse(a).expect(a).cache_key(), parse(b).expect(b).cache_key());
            assert_eq!(ka, kb, "`{a}` and `{b}`");
        }
        let different = [
            ("limit=5", "limit=6"),
            ("sort=price", "sort=-price"),
            ("sort=age", ""),
            ("breed=Koi", "breed=Betta"),
            ("min_age_months=3", "max_age_months=3"),
        ];
        for (a, b) in different {
            assert_ne!(parse(a).expect(a).cache_key(), parse(b).expect(b).cache_key(), "`{a}` and `{b}`");
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let pet = crate::seed::catalog().expect("seed").remove(0);
        let legacy = URL_SAFE_NO_PAD.encode("golden-retriever-001");
        let id = parse(&format!("cursor={legacy}")).expect("an id cursor as cursors always were");
        assert_eq!(id.after.as_ref().map(Cursor::pet_id), Some("golden-retriever-001"));
        for sort in PetSort::ALL {
            let cursor = Cursor::after(sort, &pet);
            let query = format!("sort={}&cursor={}", sort.as_str(), encode_cursor(&cursor));
            assert_eq!(parse(&query).expect(&query).after, Some(cursor), "{query}");
        }
        let forged =
            ["price:abc:x", "price:-1:x", "age:1.5:x", "age:-1:x", "price:5:", "id:5:x", "bogus:5:x", "price:5"];
        let forged = forged.iter().map(|text| format!("cursor={}", URL_SAFE_NO_PAD.encode(text)));
        let long = format!("cursor={}", URL_SAFE_NO_PAD.encode("a".repeat(MAX_PET_ID + 1)));
        for bad in
            ["cursor=!!!".to_owned(), "cursor=%FF".to_owned(), "cursor=wA".to_owned(), long].into_iter().chain(forged)
        {
            let err = parse(&bad).expect_err(&bad);
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}: {err}");
            assert!(err.to_string().contains("`cursor`"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_cursor_of_one_sort_is_refused_with_another() {
        let pet = crate::seed::catalog().expect("seed").remove(0);
        for from in PetSort::ALL {
            let cursor = encode_cursor(&Cursor::after(from, &pet));
            for with in PetSort::ALL.into_iter().filter(|s| *s != from) {
                let query = format!("sort={}&cursor={cursor}", with.as_str());
                let err = parse(&query).expect_err(&query);
                assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{query}: {err}");
                assert!(err.to_string().contains("`cursor`"), "{query}: {err}");
            }
        }
        // Without `sort`, the listing is sorted by id: a price cursor does not page it.
        let price = encode_cursor(&Cursor::after(PetSort::Price, &pet));
        assert_eq!(parse(&format!("cursor={price}")).expect_err("id sort").status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_premium_parameters_are_validated_and_named() {
        let cases = [
            ("min_age_months=7&max_age_months=6", StatusCode::BAD_REQUEST, "min_age_months"),
            ("max_age_months=0&min_age_months=1", StatusCode::BAD_REQUEST, "min_age_months"),
            ("min_age_months=-1", StatusCode::UNPROCESSABLE_ENTITY, "min_age_months"),
            ("max_age_months=1201", StatusCode::UNPROCESSABLE_ENTITY, "max_age_months"),
            ("max_age_months=99999999999", StatusCode::UNPROCESSABLE_ENTITY, "max_age_months"),
            ("min_age_months=ten", StatusCode::BAD_REQUEST, "min_age_months"),
            ("max_age_months=1.5", StatusCode::BAD_REQUEST, "max_age_months"),
            ("sort=name", StatusCode::BAD_REQUEST, "sort"),
            ("sort=PRICE", StatusCode::BAD_REQUEST, "sort"),
            ("sort=%2Bprice", StatusCode::BAD_REQUEST, "sort"),
            ("sort=price&sort=age", StatusCode::BAD_REQUEST, "sort"),
            ("breed=Golden%20Retriever%3B", StatusCode::BAD_REQUEST, "breed"),
            ("breed=%27or%201%3D1", StatusCode::BAD_REQUEST, "breed"),
        ];
        for (query, status, parameter) in cases {
            let err = parse(query).expect_err(query);
            assert_eq!(err.status(), status, "{query}: {err}");
            assert!(err.to_string().contains(&format!("`{parameter}`")), "{query}: {err}");
        }
        let long = format!("breed={}", "b".repeat(MAX_BREED + 1));
        assert_eq!(parse(&long).expect_err("long").status(), StatusCode::UNPROCESSABLE_ENTITY);

        let q = parse("sort=-age&min_age_months=3&max_age_months=3&breed=Peach-faced%20Lovebird").expect("valid");
        assert_eq!(q.sort, PetSort::AgeDesc);
        assert_eq!((q.filter.min_age_months, q.filter.max_age_months), (Some(3), Some(3)));
        assert_eq!(q.filter.breed.as_deref(), Some("Peach-faced Lovebird"));
        assert_eq!(q.premium, ["breed", "min_age_months", "max_age_months", "sort"], "named in a fixed order");
        assert!(parse("category=dog&sort=&breed=").expect("empty").premium.is_empty(), "empty values are absent");
        assert_eq!(parse("sort=id").expect("id").premium, ["sort"], "a premium parameter given, even the default");
    }

    #[test]
    fn the_refusal_names_the_parameters_and_the_flag() {
        let detail = |parameters: &[&str]| premium_refused(parameters).to_string();
        assert_eq!(
            detail(&["breed", "sort"]),
            "403 Forbidden `breed`, `sort` need the `premium_filters` feature, which is not enabled for you"
        );
        assert_eq!(
            detail(&["sort"]),
            "403 Forbidden `sort` needs the `premium_filters` feature, which is not enabled for you"
        );
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
        pet.price = Decimal::new(19999, 2);
        let priced = |arm| PetView::from(&pet).priced(arm).expect("priced").price;
        assert_eq!(priced(PricingArm::Control), "199.99");
        assert_eq!(priced(PricingArm::Discount10), "179.99");
        assert_eq!(priced(PricingArm::PremiumPlus5), "209.99");
    }

    /// The catalog router on the seed catalog, in memory, with `flags`.
    fn app(flags: &str) -> axum::Router {
        let pets = crate::seed::catalog().expect("seed");
        let storage =
            persistence::Storage::Memory(Arc::new(persistence::memory::MemoryStore::new(CatalogState::new(pets))));
        let state = AppState {
            store: InventoryStore::new(storage, Duration::from_secs(60)),
            cache: CatalogCache::memory(crate::Keyspace::new("test:", Duration::from_secs(60))),
            source: "/petstore/inventory".into(),
            flags: Flags::from_json(flags).expect("flags"),
        };
        crate::router(state)
    }

    /// The project's flag file.
    const PROJECT_FLAGS: &str = include_str!("../../../config/flags.json");

    /// The project's flags with `pricing_experiment` serving `variant` to everyone.
    fn pricing_for_everyone(variant: &str) -> String {
        let mut doc: Value = serde_json::from_str(PROJECT_FLAGS).expect("config/flags.json");
        let flag = &mut doc["flags"][contracts::pricing::FLAG];
        flag["variants"][variant] = json!(variant);
        flag["defaultVariant"] = json!(variant);
        flag.as_object_mut().expect("a flag").remove("targeting");
        doc.to_string()
    }

    fn customer(subject: &str, tier: Option<&str>) -> Option<Principal> {
        Some(Principal::new(subject.to_owned(), vec!["customer".to_owned()], tier.map(str::to_owned)))
    }

    struct Answer {
        status: StatusCode,
        x_cache: Option<String>,
        arm: Option<String>,
        content_type: String,
        body: Value,
    }

    impl Answer {
        fn ids(&self) -> Vec<String> {
            let items = self.body["items"].as_array().unwrap_or_else(|| panic!("not a page: {}", self.body));
            items.iter().map(|p| p["pet_id"].as_str().expect("pet_id").to_owned()).collect()
        }

        fn prices(&self) -> Vec<String> {
            let items = self.body["items"].as_array().unwrap_or_else(|| panic!("not a page: {}", self.body));
            items.iter().map(|p| p["price"].as_str().expect("price").to_owned()).collect()
        }
    }

    /// `GET uri` as `caller` (as the gate leaves a valid token's principal).
    async fn get(app: &axum::Router, uri: &str, caller: Option<Principal>) -> Answer {
        let mut request = Request::get(uri).body(Body::empty()).expect("request");
        if let Some(principal) = caller {
            request.extensions_mut().insert(principal);
        }
        let response = app.clone().oneshot(request).await.expect("infallible");
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (status, x_cache, arm) = (response.status(), header("x-cache"), header("x-pricing-arm"));
        let content_type = header("content-type").unwrap_or_default();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, x_cache, arm, content_type, body }
    }

    /// Every page of `query` (with `limit`) as `caller`, following `next_cursor`: the ids in
    /// the order served.
    async fn every_page(app: &axum::Router, query: &str, limit: usize, caller: &Option<Principal>) -> Vec<String> {
        let mut ids = Vec::new();
        let mut uri = format!("/pets?{query}&limit={limit}");
        for _ in 0..=40 {
            let page = get(app, &uri, caller.clone()).await;
            assert_eq!(page.status, StatusCode::OK, "{uri}: {}", page.body);
            assert!(page.ids().len() <= limit, "{uri}");
            ids.extend(page.ids());
            match page.body["next_cursor"].as_str() {
                Some(cursor) => {
                    assert_eq!(page.ids().len(), limit, "{uri}: only the last page is short");
                    uri = format!("/pets?{query}&limit={limit}&cursor={cursor}");
                }
                None => return ids,
            }
        }
        panic!("{query}: paging does not end");
    }

    #[tokio::test]
    async fn every_sort_pages_through_the_filtered_catalog_exactly_once_in_order() {
        let app = app(PROJECT_FLAGS);
        let premium = customer("pat", Some("premium"));
        let catalog = crate::seed::catalog().expect("seed");
        // The expected orders, written independently of `PetSort`.
        let expected = |keep: &dyn Fn(&Pet) -> bool, sort: &str| {
            let mut pets: Vec<&Pet> = catalog.iter().filter(|p| keep(p)).collect();
            match sort {
                "price" => pets.sort_by_key(|p| (p.price, p.pet_id.clone())),
                "-price" => pets.sort_by_key(|p| (std::cmp::Reverse(p.price), p.pet_id.clone())),
                "age" => pets.sort_by_key(|p| (p.age_months, p.pet_id.clone())),
                "-age" => pets.sort_by_key(|p| (std::cmp::Reverse(p.age_months), p.pet_id.clone())),
                _ => pets.sort_by_key(|p| p.pet_id.clone()),
            }
            pets.into_iter().map(|p| p.pet_id.clone()).collect::<Vec<_>>()
        };
        let age_ties =
            catalog.iter().filter(|p| catalog.iter().any(|q| q.pet_id != p.pet_id && q.age_months == p.age_months));
        assert!(age_ties.count() >= 4, "the seed has pets of the same age: ties cross pages");
        for sort in ["id", "price", "-price", "age", "-age"] {
            for limit in [1, 3, 7, 100] {
                let all = every_page(&app, &format!("sort={sort}"), limit, &premium).await;
                assert_eq!(all, expected(&|_| true, sort), "sort={sort}, limit={limit}");
            }
            let query = format!("sort={sort}&min_age_months=8&max_age_months=24&max_price=1000");
            let keep = |p: &Pet| (8..=24).contains(&p.age_months) && p.price <= Decimal::new(1000, 0);
            assert_eq!(every_page(&app, &query, 2, &premium).await, expected(&keep, sort), "{query}");
            let query = format!("sort={sort}&category=dog&breed=Beagle");
            assert_eq!(every_page(&app, &query, 2, &premium).await, ["beagle-008"], "{query}");
        }
        let empty = get(&app, "/pets?breed=Unicorn&sort=age", premium).await;
        assert_eq!((empty.status, empty.ids().len()), (StatusCode::OK, 0));
        assert!(empty.body["next_cursor"].is_null());
    }

    #[tokio::test]
    async fn a_cursor_from_another_sort_is_a_400_naming_it() {
        let app = app(PROJECT_FLAGS);
        let premium = customer("pat", Some("premium"));
        let page = get(&app, "/pets?sort=price&limit=2", premium.clone()).await;
        let cursor = page.body["next_cursor"].as_str().expect("a next page").to_owned();
        for uri in [format!("/pets?sort=age&cursor={cursor}"), format!("/pets?sort=-price&cursor={cursor}")] {
            let refused = get(&app, &uri, premium.clone()).await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(refused.content_type, "application/problem+json");
            assert!(refused.body["detail"].as_str().is_some_and(|d| d.contains("`cursor`")), "{}", refused.body);
        }
        // Without `sort` (a caller without the feature may page by id), still refused.
        let anonymous = get(&app, &format!("/pets?cursor={cursor}"), None).await;
        assert_eq!(anonymous.status, StatusCode::BAD_REQUEST, "{}", anonymous.body);
    }

    #[tokio::test]
    async fn the_premium_parameters_are_a_403_naming_the_flag_for_everyone_else() {
        let app = app(PROJECT_FLAGS);
        let cases = [
            ("/pets?breed=Beagle&sort=price", customer("sam", None), "`breed`, `sort` need"),
            ("/pets?sort=-age", customer("sam", Some("standard")), "`sort` needs"),
            ("/pets?min_age_months=3", None, "`min_age_months` needs"),
            ("/pets?max_age_months=30&category=dog", None, "`max_age_months` needs"),
        ];
        for (uri, caller, starts) in cases {
            let refused = get(&app, uri, caller).await;
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{uri}: {}", refused.body);
            assert_eq!(refused.content_type, "application/problem+json", "{uri}");
            assert!(refused.body["type"].as_str().is_some_and(|t| t.ends_with("/forbidden")), "{}", refused.body);
            let detail = refused.body["detail"].as_str().unwrap_or_default();
            assert!(detail.starts_with(starts), "{uri}: {detail}");
            assert!(detail.ends_with("the `premium_filters` feature, which is not enabled for you"), "{uri}: {detail}");
        }
        let premium = get(&app, "/pets?breed=Beagle&sort=price", customer("pat", Some("premium"))).await;
        assert_eq!((premium.status, premium.ids()), (StatusCode::OK, vec!["beagle-008".to_owned()]));
        let plain = get(&app, "/pets?category=dog&sort=&breed=", None).await;
        assert_eq!(plain.status, StatusCode::OK, "empty premium parameters are absent: {}", plain.body);
    }

    #[tokio::test]
    async fn a_customer_sees_their_arms_prices_through_the_shared_cache() {
        let shared = app(&pricing_for_everyone("discount_10"));
        let list: Vec<String> = {
            let first = get(&shared, "/pets?category=cat", None).await;
            assert_eq!((first.x_cache.as_deref(), first.arm.as_deref()), (Some("MISS"), None), "anonymous: no arm");
            first.prices()
        };
        let discounted: Vec<String> =
            list.iter().map(|p| money(PricingArm::Discount10.price(p.parse().expect("a decimal")))).collect();
        assert!(list.iter().zip(&discounted).all(|(l, d)| l != d), "every price changes: {list:?} {discounted:?}");

        let seen = get(&shared, "/pets?category=cat", customer("carol", None)).await;
        assert_eq!(seen.x_cache.as_deref(), Some("HIT"), "the page cached for the anonymous caller");
        assert_eq!(seen.arm.as_deref(), Some("discount_10"));
        assert_eq!(seen.prices(), discounted);

        // The other way round: the customer's miss caches list prices.
        let seen = get(&shared, "/pets/persian-cat-002", customer("carol", None)).await;
        assert_eq!((seen.x_cache.as_deref(), seen.arm.as_deref()), (Some("MISS"), Some("discount_10")));
        assert_eq!(seen.body["price"], "720.00");
        let anonymous = get(&shared, "/pets/persian-cat-002", None).await;
        assert_eq!((anonymous.x_cache.as_deref(), anonymous.arm), (Some("HIT"), None));
        assert_eq!(anonymous.body["price"], "800.00");
        let again = get(&shared, "/pets/persian-cat-002", customer("dave", None)).await;
        assert_eq!((again.x_cache.as_deref(), again.body["price"].as_str()), (Some("HIT"), Some("720.00")));
        let listed = get(&shared, "/pets?sort=price&limit=3", customer("pat", Some("premium"))).await;
        assert_eq!(listed.prices(), ["4.50", "13.50", "22.50"], "premium filters and pricing together");

        let unknown = app(&pricing_for_everyone("gold"));
        let seen = get(&unknown, "/pets/persian-cat-002", customer("carol", None)).await;
        assert_eq!((seen.body["price"].as_str(), seen.arm), (Some("800.00"), None), "no arm: the list price");
    }

    #[tokio::test]
    async fn with_the_project_flags_customers_in_different_arms_see_different_prices() {
        let app = app(PROJECT_FLAGS);
        let flags = Flags::from_json(PROJECT_FLAGS).expect("flags");
        let arm_of = |subject: &str| {
            let evaluation = flags
                .evaluate(contracts::pricing::FLAG, &context_of(customer(subject, None).as_ref()))
                .expect("evaluated");
            PricingArm::from_variant(&evaluation.variant).expect("an arm")
        };
        let subjects: Vec<String> = (1..200).map(|i| format!("customer-{i}")).collect();
        let find = |arm| subjects.iter().find(|s| arm_of(s) == arm).expect("a customer in each arm").clone();
        let (discounted, surcharged) = (find(PricingArm::Discount10), find(PricingArm::PremiumPlus5));

        let uri = "/pets/golden-retriever-001";
        let anonymous = get(&app, uri, None).await;
        assert_eq!((anonymous.body["price"].as_str(), anonymous.arm), (Some("1200.00"), None));
        let seen = get(&app, uri, customer(&discounted, None)).await;
        assert_eq!((seen.body["price"].as_str(), seen.arm.as_deref()), (Some("1080.00"), Some("discount_10")));
        let seen = get(&app, uri, customer(&surcharged, None)).await;
        assert_eq!((seen.body["price"].as_str(), seen.arm.as_deref()), (Some("1260.00"), Some("premium_plus_5")));
        for _ in 0..3 {
            let same = get(&app, uri, customer(&surcharged, None)).await;
            assert_eq!(same.body["price"], "1260.00", "a customer stays in their arm");
        }
        // The first dog by id: beagle-008, listed at 700.00.
        let page = get(&app, "/pets?category=dog&limit=1", customer(&discounted, None)).await;
        assert_eq!((page.prices(), page.arm.as_deref()), (vec!["630.00".to_owned()], Some("discount_10")));
    }
}
