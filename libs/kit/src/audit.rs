//! The audit trail: who did what, when, with which correlation id, and how it ended — one
//! entry for every state-changing request and every admin action, kept in the service's own
//! schema (or memory) and read by admins through `GET /admin/audit`.
//!
//! The [`audited`] layer records an entry once the handler has answered, so the outcome (the
//! status) is known. A handler that changes state in a transaction of its own can write the
//! entry inside it instead and mark its response with [`RecordedInTransaction`]; the layer
//! then records nothing more.

use std::{collections::VecDeque, sync::Arc};

use async_trait::async_trait;
use axum::{
    Router,
    extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State},
    http::{Method, header},
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::{Admin, Principal, Role},
    http::{ApiError, CorrelationId, Json},
};

/// One audited request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Entry id (UUIDv7: ordered by time).
    pub id: Uuid,
    /// When the request was answered.
    pub at: DateTime<Utc>,
    /// The service that served it.
    pub service: String,
    /// The token's subject.
    pub actor: String,
    /// The token's roles.
    pub roles: Vec<String>,
    /// `<METHOD> <route>`, e.g. `POST /orders` or `POST /admin/dlq/{id}/replay`.
    pub action: String,
    /// What it acted on: the route's path parameters, or the resource it created.
    pub target: Option<String>,
    /// The request's correlation id.
    pub correlation_id: String,
    /// The HTTP status it was answered with.
    pub status: u16,
}

/// The filters of `GET /admin/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this actor's entries.
    pub actor: Option<String>,
    /// Only this action (`POST /orders`).
    pub action: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries older than this position (the previous page's last entry).
    pub before: Option<(DateTime<Utc>, Uuid)>,
    /// At most this many, newest first.
    pub limit: usize,
}

impl AuditQuery {
    /// Whether `entry` passes the filters.
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == entry.actor)
            && self.action.as_ref().is_none_or(|a| *a == entry.action)
            && self.since.is_none_or(|s| entry.at >= s)
            && self.before.is_none_or(|b| (entry.at, entry.id) < b)
    }
}

/// Where a service keeps its audit trail.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends `entry`.
    async fn record(&self, entry: &AuditEntry) -> Result<(), String>;
    /// The entries matching `query`, newest first.
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, String>;
}

/// The audit trail in process memory (the all-in-one mode): the newest [`MEMORY_CAPACITY`]
/// entries.
#[derive(Default)]
pub struct MemoryAuditLog {
    entries: std::sync::Mutex<VecDeque<AuditEntry>>,
}

/// How many entries the memory trail keeps; older ones are dropped.
pub const MEMORY_CAPACITY: usize = 100_000;

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn record(&self, entry: &AuditEntry) -> Result<(), String> {
        let mut entries = self.entries.lock().map_err(|_| "audit trail lock poisoned".to_owned())?;
        if entries.len() == MEMORY_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry.clone());
        Ok(())
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, String> {
        let entries = self.entries.lock().map_err(|_| "audit trail lock poisoned".to_owned())?;
        let mut found: Vec<AuditEntry> = entries.iter().filter(|e| query.matches(e)).cloned().collect();
        found.sort_by_key(|e| std::cmp::Reverse((e.at, e.id)));
        found.truncate(query.limit);
        Ok(found)
    }
}

/// Now, to the microsecond: what PostgreSQL keeps and what a cursor holds.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Put in a response's extensions by a handler that wrote its audit entry in its own
/// transaction (see [`AuditEntry`] and the service's store).
#[derive(Debug, Clone, Copy)]
pub struct RecordedInTransaction;

/// The audit entry of the request being handled, for a handler that writes it in its own
/// transaction: fill in the outcome with [`AuditDraft::finish`], write it with the change, and
/// mark the response with [`RecordedInTransaction`]. `None` inside when the request is not
/// audited (not a state change, no caller).
#[derive(Debug, Clone)]
pub struct AuditDraft(pub Option<AuditEntry>);

impl AuditDraft {
    /// The entry as answered with `status`, about `target`.
    pub fn finish(&self, status: u16, target: impl Into<String>) -> Option<AuditEntry> {
        self.0.clone().map(|entry| AuditEntry { status, target: Some(target.into()), at: now(), ..entry })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditDraft {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<Draft>().map(|d| d.0.clone())))
    }
}

/// The draft the audit layer leaves in the request for the handler.
#[derive(Clone)]
struct Draft(AuditEntry);

/// Whether a request is audited: every state-changing method, and every admin route.
pub fn is_audited(method: &Method, route: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || route.starts_with("/admin/")
        || route.starts_with("/sagas/")
}

#[derive(Clone)]
struct Audit {
    service: &'static str,
    log: Arc<dyn AuditLog>,
}

/// `router` with every audited request of it recorded in `log` as done by `service`.
pub fn audited(router: Router, service: &'static str, log: Arc<dyn AuditLog>) -> Router {
    if !router.has_routes() {
        return router;
    }
    router.route_layer(middleware::from_fn_with_state(Audit { service, log }, record))
}

/// The entry a request makes, before its outcome is known: who, what, which correlation id.
/// `None` for requests that are not audited or have no authenticated caller.
fn entry_for(request: &Request, service: &str) -> Option<AuditEntry> {
    let route = request.extensions().get::<MatchedPath>()?.as_str();
    if !is_audited(request.method(), route) {
        return None;
    }
    let principal = request.extensions().get::<Principal>()?;
    let correlation_id = request.extensions().get::<CorrelationId>().map(|c| c.0.clone()).unwrap_or_default();
    Some(AuditEntry {
        id: Uuid::now_v7(),
        at: now(),
        service: service.to_owned(),
        actor: principal.subject().to_owned(),
        roles: principal.roles().to_vec(),
        action: format!("{} {route}", request.method()),
        target: None,
        correlation_id,
        status: 0,
    })
}

async fn record(State(audit): State<Audit>, request: Request, next: Next) -> Response {
    let Some(mut entry) = entry_for(&request, audit.service) else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(Draft(entry.clone()));
    let params = RawPathParams::from_request_parts(&mut parts, &()).await.ok();
    let target: Vec<String> = params.iter().flat_map(|p| p.iter().map(|(_, v)| v.to_owned())).collect();
    let response = next.run(Request::from_parts(parts, body)).await;
    if response.extensions().get::<RecordedInTransaction>().is_some() {
        return response;
    }
    let created = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.rsplit('/').next())
        .map(str::to_owned);
    entry.target = if target.is_empty() { created } else { Some(target.join("/")) };
    entry.status = response.status().as_u16();
    entry.at = now();
    if let Err(e) = audit.log.record(&entry).await {
        metrics::counter!("petstore_audit_write_failures_total").increment(1);
        tracing::error!(error = %e, action = %entry.action, actor = %entry.actor, "could not write the audit entry");
    }
    response
}

/// Page size when `limit` is not given.
const DEFAULT_LIMIT: usize = 50;
/// Largest page.
const MAX_LIMIT: usize = 200;

/// A page of `GET /admin/audit`.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditPage)]
struct Page {
    /// Entries, newest first.
    items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    service: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /admin/audit?service=&actor=&action=&since=&limit=&cursor=` (admins): the entries of
/// every log in `logs` (one per service this process serves), newest first, in pages.
/// `service` keeps one service's entries (the gateway routes on it, as each service keeps
/// its own trail).
pub fn router(logs: Vec<Arc<dyn AuditLog>>) -> Router {
    let routes = Router::new().route("/admin/audit", get(list));
    crate::auth::only(Role::Admin, routes).with_state(Arc::new(logs))
}

/// The OpenAPI description of [`router`]'s route.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(list))]
    struct Api;
    <Api as utoipa::OpenApi>::openapi()
}

fn parse_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = cursor.split_once('_')?;
    Some((DateTime::from_timestamp_micros(micros.parse().ok()?)?, Uuid::parse_str(id).ok()?))
}

/// The audit trail, newest first, in pages (the `admin` role).
///
/// Every service this process serves keeps its own; this reads all of them.
#[utoipa::path(
    get,
    path = "/admin/audit",
    operation_id = "list_audit_entries",
    tag = "audit",
    params(
        ("service" = Option<String>, Query, max_length = 200, description = "Only this service's entries, e.g. `order`."),
        ("actor" = Option<String>, Query, max_length = 200, description = "Only this token subject's entries."),
        ("action" = Option<String>, Query, max_length = 200, description = "Only this action, e.g. `POST /orders`."),
        ("since" = Option<String>, Query, format = DateTime, description = "Only entries at or after this RFC 3339 time."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of audit entries.", body = Page),
        (status = 400, response = crate::http::docs::BadRequest),
        (status = 403, response = crate::http::docs::Forbidden),
        (status = 503, response = crate::http::docs::Unavailable),
    )
)]
async fn list(
    State(logs): State<Arc<Vec<Arc<dyn AuditLog>>>>,
    _: Admin,
    query: Result<axum::extract::Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let axum::extract::Query(params) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let bounded = |name: &str, value: Option<String>| match value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    {
        Some(v) if v.len() > 200 => Err(ApiError::bad_request(format!("query parameter `{name}` is too long"))),
        other => Ok(other),
    };
    let since = bounded("since", params.since)?
        .map(|s| {
            DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                ApiError::bad_request("query parameter `since` must be an RFC 3339 time, e.g. 2026-12-07T10:00:00Z")
            })
        })
        .transpose()?;
    let limit = match bounded("limit", params.limit)? {
        None => DEFAULT_LIMIT,
        Some(l) => l.parse::<usize>().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| {
            ApiError::bad_request(format!("query parameter `limit` must be an integer from 1 to {MAX_LIMIT}"))
        })?,
    };
    let before = bounded("cursor", params.cursor)?
        .map(|c| {
            parse_cursor(&c)
                .ok_or_else(|| ApiError::bad_request("query parameter `cursor` is not a cursor this API gave"))
        })
        .transpose()?;
    let query = AuditQuery {
        actor: bounded("actor", params.actor)?,
        action: bounded("action", params.action)?,
        since,
        before,
        limit: limit + 1,
    };
    let service = bounded("service", params.service)?;
    let mut items = Vec::new();
    for log in logs.iter() {
        items.extend(
            log.query(&query).await.map_err(|e| ApiError::unavailable("the audit trail is unavailable", 2, e))?,
        );
    }
    items.retain(|e| service.as_ref().is_none_or(|s| *s == e.service));
    items.sort_by_key(|e| std::cmp::Reverse((e.at, e.id)));
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor =
        more.then(|| items.last().map(|e| format!("{}_{}", e.at.timestamp_micros(), e.id.simple()))).flatten();
    Ok(Json(Page { items, next_cursor }))
}
