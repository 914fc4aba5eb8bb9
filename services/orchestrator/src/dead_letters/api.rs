//! `GET /admin/dlq`, `GET /admin/dlq/{id}` and `POST /admin/dlq/{id}/replay`: the `admin`
//! role only.

use axum::{
    Router,
    extract::{Path, Query, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use kit::{
    auth::Role,
    http::{ApiError, Json, docs},
};
use persistence::StoreError;
use serde::Serialize;
use tracing::info;
use utoipa::{ToSchema, openapi::OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    refresh_after_change,
    store::{DeadLetterStore, Filter, Replay, ReplayError, ReplayOutcome, StoredLetter},
};

/// Page size when `limit` is not given.
const DEFAULT_LIMIT: usize = 20;
/// Largest page a client may ask for.
const MAX_LIMIT: usize = 100;

/// The dead-letter routes (the `admin` role only) and their OpenAPI description.
pub fn api(store: DeadLetterStore) -> (Router, OpenApi) {
    let (routes, openapi) = OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one))
        .routes(routes!(replay))
        .with_state(store)
        .split_for_parts();
    (kit::auth::only(Role::Admin, routes), openapi)
}

/// A page of `GET /admin/dlq`.
#[derive(Serialize, ToSchema)]
#[schema(as = DeadLetterPage)]
struct Page {
    /// Dead letters, newest first.
    items: Vec<StoredLetter>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// The query parameters of `uri`; a parameter given twice is refused, an empty value counts
/// as absent, unknown ones are ignored.
fn parameters<'a>(uri: &Uri, known: &[&'a str]) -> Result<Vec<(&'a str, String)>, ApiError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|_| ApiError::bad_request("the query string is malformed"))?;
    let mut found: Vec<(&str, String)> = Vec::new();
    for (name, value) in pairs {
        let Some(name) = known.iter().copied().find(|k| *k == name) else { continue };
        if found.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::bad_request(format!("query parameter `{name}` is given more than once")));
        }
        let value = value.trim();
        if !value.is_empty() {
            found.push((name, value.to_owned()));
        }
    }
    Ok(found)
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::bad_request(format!("query parameter `{name}` must be `true` or `false`"))),
    }
}

fn parse_limit(value: &str) -> Result<usize, ApiError> {
    let why = format!("query parameter `limit` must be an integer from 1 to {MAX_LIMIT}");
    let limit: i64 = value.parse().map_err(|_| ApiError::bad_request(why.clone()))?;
    usize::try_from(limit).ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| ApiError::validation(why))
}

/// A cursor: the position of a page's last letter, `<microseconds>_<id>`.
fn encode_cursor((at, id): (DateTime<Utc>, Uuid)) -> String {
    format!("{}_{}", at.timestamp_micros(), id.simple())
}

fn decode_cursor(value: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    value
        .split_once('_')
        .and_then(|(micros, id)| {
            let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
            Some((at, Uuid::try_parse(id).ok()?))
        })
        .ok_or_else(|| ApiError::bad_request("query parameter `cursor` is not a cursor returned by this API"))
}

fn storage_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Database(_) => ApiError::unavailable("the dead letters are unavailable; try again shortly", 1, e),
        other => ApiError::internal(other),
    }
}

/// A letter id from the path; anything that is not one names no letter.
fn letter_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(id).map_err(|_| ApiError::not_found(format!("no dead letter {id}")))
}

/// Dead letters of every channel, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/admin/dlq",
    operation_id = "list_dead_letters",
    params(
        ("channel" = Option<String>, Query, description = "Only letters of this contract channel, e.g. `payment-commands`."),
        ("replayed" = Option<bool>, Query, description = "Only letters replayed (`true`) or still waiting (`false`)."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Page size (default 20)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of dead letters.", body = Page,
         links(
             ("GetDeadLetter" = (operation_id = "get_dead_letter", parameters(("id" = "$response.body#/items/0/id")))),
             ("ReplayDeadLetter" = (operation_id = "replay_dead_letter", parameters(("id" = "$response.body#/items/0/id")))),
         )),
        (status = 400, response = docs::BadRequest),
        (status = 403, response = docs::Forbidden),
        (status = 422, response = docs::Unprocessable),
        (status = 503, response = docs::Unavailable),
    )
)]
async fn list(State(store): State<DeadLetterStore>, uri: Uri) -> Result<Json<Page>, ApiError> {
    let mut filter = Filter::default();
    let mut limit = DEFAULT_LIMIT;
    for (name, value) in parameters(&uri, &["channel", "replayed", "limit", "cursor"])? {
        match name {
            "channel" if !store.has_channel(&value) => {
                return Err(ApiError::validation(format!("query parameter `channel`: no channel `{value}`")));
            }
            "channel" => filter.channel = Some(value),
            "replayed" => filter.replayed = Some(parse_bool(name, &value)?),
            "limit" => limit = parse_limit(&value)?,
            _ => filter.after = Some(decode_cursor(&value)?),
        }
    }
    let mut items = store.list(&filter, limit + 1).await.map_err(storage_error)?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|l| encode_cursor(l.position()))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// One dead letter, with the original message.
#[utoipa::path(
    get,
    path = "/admin/dlq/{id}",
    operation_id = "get_dead_letter",
    params(("id" = Uuid, Path, description = "The dead-lettered message's id.")),
    responses(
        (status = 200, description = "The dead letter.", body = StoredLetter),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 503, response = docs::Unavailable),
    )
)]
async fn get_one(State(store): State<DeadLetterStore>, Path(id): Path<String>) -> Result<Json<StoredLetter>, ApiError> {
    let uuid = letter_id(&id)?;
    store
        .get(uuid)
        .await
        .map_err(storage_error)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no dead letter {id}")))
}

/// Sends a dead letter's message back to its channel.
///
/// 202 when the message is on its way back to its channel; 200 with the earlier replay when
/// it had been replayed since it was dead-lettered (`?force=true` replays it again).
#[utoipa::path(
    post,
    path = "/admin/dlq/{id}/replay",
    operation_id = "replay_dead_letter",
    params(
        ("id" = Uuid, Path, description = "The dead-lettered message's id."),
        ("force" = Option<bool>, Query, description = "Replay even if it was replayed since it was dead-lettered."),
    ),
    responses(
        (status = 202, description = "The message is on its way back to its channel.", body = Replay),
        (status = 200, description = "It had been replayed already; nothing was sent again.", body = Replay),
        (status = 400, response = docs::BadRequest),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 409, response = docs::Conflict),
        (status = 503, response = docs::Unavailable),
    )
)]
async fn replay(State(store): State<DeadLetterStore>, Path(id): Path<String>, uri: Uri) -> Result<Response, ApiError> {
    let uuid = letter_id(&id)?;
    let mut force = false;
    for (name, value) in parameters(&uri, &["force"])? {
        force = parse_bool(name, &value)?;
    }
    let outcome = store.replay(uuid, force).await.map_err(|e| match e {
        ReplayError::NotFound(_) => ApiError::not_found(e.to_string()),
        ReplayError::NotReplayable { .. } => ApiError::conflict(e.to_string()),
        ReplayError::Store(e) => storage_error(e),
    })?;
    Ok(match outcome {
        ReplayOutcome::Replayed(replay) => {
            info!(dead_letter = %uuid, force, replay_count = replay.replay_count, "dead letter replayed through the outbox");
            refresh_after_change(&store).await;
            (StatusCode::ACCEPTED, Json(replay)).into_response()
        }
        ReplayOutcome::AlreadyReplayed(replay) => (StatusCode::OK, Json(replay)).into_response(),
    })
}
