//! `/admin/flags`: administrators change a flag without a restart, in every instance.
//!
//! `PUT /admin/flags/{flag}` with one flag's flagd definition validates it against the set in
//! force (refused whole, naming the key, when it does not fit), stores it durably with its audit
//! entry in one transaction, puts it in force here and announces it on `flag-events`. Every
//! instance of every service subscribes to that channel as itself ([`Bus::subscribe_broadcast`])
//! and reads the stored overrides again when an announcement comes; it also reads them when it
//! starts and every [`RESYNC`], so an instance that missed an announcement (the bus was down)
//! still converges. `DELETE /admin/flags/{flag}` puts the file's definition back.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use contracts::{channels, flags::FlagChanged};
use messaging::{Bus, Envelope, Handler, HandlerError, MessageContext};
use serde_json::Value;
use utoipa::OpenApi;

use super::{FlagCheckError, FlagInfo, FlagOverride, FlagStore, Flags};
use crate::{
    Service, ServiceContext, StartError,
    audit::{AuditDraft, RecordedInTransaction},
    auth::{Admin, Role},
    http::{ApiError, CorrelationId, Json, docs},
};

/// How often every instance reads the stored overrides even without an announcement.
pub const RESYNC: Duration = Duration::from_secs(30);

/// The service name the flag administration is audited and served under.
pub const SERVICE: &str = "flags";

#[derive(Clone)]
struct AppState {
    flags: Flags,
    store: Arc<dyn FlagStore>,
    bus: Bus,
}

/// Puts the stored overrides in force over the context's flags, keeps them current (the
/// `flag-events` announcements and a periodic re-read), and returns the `/admin/flags` routes as
/// a service. Start it once per process, beside the services the process runs.
pub async fn start(ctx: &ServiceContext, store: Arc<dyn FlagStore>) -> Result<Service, StartError> {
    let flags = ctx.flags.clone();
    let bus = Bus::new(&ctx.backends, &ctx.settings.messaging, SERVICE, ctx.shutdown.clone())
        .await
        .map_err(StartError::at(SERVICE, "joining the bus"))?;
    ctx.close_on_shutdown(&bus);
    let sync = Sync { flags: flags.clone(), store: store.clone() };
    // Listening first, reading second: a change stored between the two is announced to a
    // subscriber that is already there.
    bus.subscribe_broadcast(channels::FLAG_EVENTS, sync.clone())
        .await
        .map_err(StartError::at(SERVICE, "subscribing to flag announcements"))?;
    // Overrides that do not fit the file are logged and counted; the file's flags serve then.
    sync.pull().await.map_err(StartError::at(SERVICE, "reading the flag overrides"))?;
    let shutdown = ctx.shutdown.clone();
    ctx.tasks.spawn(async move {
        let mut every = tokio::time::interval(RESYNC);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Err(e) = sync.pull().await {
                tracing::warn!(error = %e, "could not read the flag overrides; the flags in force stay");
            }
        }
    });
    let audit = store.audit_log();
    let router = router(AppState { flags, store, bus });
    Ok(Service { name: SERVICE, router, openapi: Api::openapi(), readiness: Vec::new(), audit })
}

/// Reads the stored overrides into the flags: on every announcement and every [`RESYNC`].
#[derive(Clone)]
struct Sync {
    flags: Flags,
    store: Arc<dyn FlagStore>,
}

impl Sync {
    async fn pull(&self) -> Result<(), String> {
        let overrides = self.store.overrides().await?;
        // Overrides that do not fit the file are logged and counted; nothing to retry.
        let _ = self.flags.apply_overrides(overrides);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for Sync {
    async fn handle(&self, message: Envelope) -> Result<(), HandlerError> {
        let changed = message.decode::<FlagChanged>().map_err(|e| HandlerError::fatal(e.to_string()))?;
        tracing::debug!(flag = %changed.flag, by = %changed.changed_by, "flag change announced");
        self.pull().await.map_err(HandlerError::retriable)
    }
}

fn router(state: AppState) -> Router {
    let routes =
        Router::new().route("/admin/flags", get(list)).route("/admin/flags/{flag}", get(show).put(set).delete(remove));
    crate::auth::only(Role::Admin, routes).with_state(state)
}

#[derive(OpenApi)]
#[openapi(paths(list, show, set, remove), components(schemas(FlagInfo, super::FlagSource)))]
struct Api;

/// The flags in force, each with its definition, where it comes from and its last change
/// (the `admin` role).
#[utoipa::path(
    get,
    path = "/admin/flags",
    operation_id = "list_flags",
    tag = "flags",
    responses(
        (status = 200, description = "Every flag in force, by key.", body = Vec<FlagInfo>),
        (status = 403, response = docs::Forbidden),
    )
)]
async fn list(State(app): State<AppState>, _: Admin) -> Json<Vec<FlagInfo>> {
    Json(app.flags.listing())
}

/// One flag in force (the `admin` role).
#[utoipa::path(
    get,
    path = "/admin/flags/{flag}",
    operation_id = "get_flag",
    tag = "flags",
    params(("flag" = String, Path, description = "The flag's key, e.g. `pricing_experiment`.")),
    responses(
        (status = 200, description = "The flag.", body = FlagInfo),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
    )
)]
async fn show(State(app): State<AppState>, _: Admin, Path(flag): Path<String>) -> Result<Json<FlagInfo>, ApiError> {
    info(&app.flags, &flag).map(Json)
}

fn info(flags: &Flags, flag: &str) -> Result<FlagInfo, ApiError> {
    flags
        .listing()
        .into_iter()
        .find(|f| f.flag == flag)
        .ok_or_else(|| ApiError::not_found(format!("no flag `{flag}`; the flag file defines the flags")))
}

/// Overrides a flag with a flagd definition, in every instance within a second (the `admin`
/// role). The change and who made it are recorded in the audit trail.
#[utoipa::path(
    put,
    path = "/admin/flags/{flag}",
    operation_id = "set_flag",
    tag = "flags",
    params(("flag" = String, Path, description = "The flag's key, e.g. `pricing_experiment`.")),
    request_body(content = Object, description = "The flag's flagd definition: `state`, `variants`, \
        `defaultVariant` and optionally `targeting` (JsonLogic with `fractional`, `sem_ver`, `starts_with`, \
        `ends_with`) and `metadata`."),
    responses(
        (status = 200, description = "The flag as now in force.", body = FlagInfo),
        (status = 400, response = docs::BadRequest),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 422, response = docs::Unprocessable),
        (status = 503, response = docs::Unavailable),
    )
)]
async fn set(
    State(app): State<AppState>,
    Admin(admin): Admin,
    CorrelationId(correlation_id): CorrelationId,
    audit: AuditDraft,
    Path(flag): Path<String>,
    Json(definition): Json<Value>,
) -> Result<Response, ApiError> {
    app.flags.check_override(&flag, &definition).map_err(|e| match e {
        FlagCheckError::Unknown(_) => ApiError::not_found(e.to_string()),
        FlagCheckError::Invalid(reason) => ApiError::validation(reason),
    })?;
    let value = FlagOverride {
        flag: flag.clone(),
        definition,
        changed_by: admin.subject().to_owned(),
        changed_at: crate::audit::now(),
    };
    let entry = audit.finish(StatusCode::OK.as_u16(), flag.clone());
    app.store.put(&value, entry.as_ref()).await.map_err(|e| stored_nothing(&e))?;
    changed(&app, &flag, admin.subject(), &correlation_id, entry.is_some()).await
}

/// Removes an administrator's override: the flag file's definition is in force again, in every
/// instance within a second (the `admin` role).
#[utoipa::path(
    delete,
    path = "/admin/flags/{flag}",
    operation_id = "reset_flag",
    tag = "flags",
    params(("flag" = String, Path, description = "The flag's key.")),
    responses(
        (status = 200, description = "The flag as now in force: the file's definition.", body = FlagInfo),
        (status = 403, response = docs::Forbidden),
        (status = 404, response = docs::NotFound),
        (status = 503, response = docs::Unavailable),
    )
)]
async fn remove(
    State(app): State<AppState>,
    Admin(admin): Admin,
    CorrelationId(correlation_id): CorrelationId,
    audit: AuditDraft,
    Path(flag): Path<String>,
) -> Result<Response, ApiError> {
    let entry = audit.finish(StatusCode::OK.as_u16(), flag.clone());
    if !app.store.remove(&flag, entry.as_ref()).await.map_err(|e| stored_nothing(&e))? {
        return Err(ApiError::not_found(format!("flag `{flag}` has no administrator's override")));
    }
    changed(&app, &flag, admin.subject(), &correlation_id, entry.is_some()).await
}

fn stored_nothing(e: &str) -> ApiError {
    ApiError::unavailable("the flag store is not answering; nothing was changed", 2, e)
}

/// Puts the stored change in force here, tells every other instance, and answers with the flag
/// as now in force (marked as audited when its entry was written with the change). An
/// announcement that cannot be sent is not an error for the caller: the change is stored, and
/// the other instances read it at their next re-read.
async fn changed(
    app: &AppState,
    flag: &str,
    by: &str,
    correlation_id: &str,
    audited: bool,
) -> Result<Response, ApiError> {
    if let Err(e) = (Sync { flags: app.flags.clone(), store: app.store.clone() }).pull().await {
        tracing::warn!(error = %e, flag, "could not read the overrides back; the announcement will apply it");
    }
    let announcement = FlagChanged { flag: flag.to_owned(), changed_by: by.to_owned() };
    let sent = Envelope::from_message(app.bus.source(), &announcement, &MessageContext::correlated(correlation_id))
        .map_err(|e| e.to_string());
    let sent = match sent {
        Ok(envelope) => app.bus.publish(channels::FLAG_EVENTS, &envelope).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        metrics::counter!("petstore_flag_announcements_failed_total").increment(1);
        tracing::warn!(error = %e, flag, resync = ?RESYNC,
            "could not announce the flag change; other instances apply it at their next re-read");
    }
    let mut response = Json(info(&app.flags, flag)?).into_response();
    if audited {
        response.extensions_mut().insert(RecordedInTransaction);
    }
    Ok(response)
}
