//! Notification service: tells the customer their order is confirmed (`SendConfirmation`)
//! or cancelled and why (`SendCancellationNotice`), once per saga and kind. Sending is
//! simulated: the stored record is the sent email, and it is logged. Customers read their
//! notifications at `GET /notifications`. Replies go to `notification-events`.

mod domain;
mod store;

use std::sync::Arc;

use async_trait::async_trait;
use axum::{Router, extract::State};
use chrono::{DateTime, Utc};
use contracts::{
    channels,
    notification::{NotificationKind, SendCancellationNotice, SendConfirmation},
};
use kit::{
    Service, ServiceContext, StartError,
    auth::Customer,
    http::{ApiError, Json, docs},
};
use messaging::{Envelope, Handler, HandlerError, MessageContext};
use persistence::open_service;
use serde::Serialize;
use tracing::info;
use utoipa::{ToSchema, openapi::OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub use domain::{Notification, NotificationChannel};
pub use store::{NotificationState, NotificationStore};

/// The service's name: its schema, consumer group and CloudEvents source.
pub const SERVICE: &str = "notification";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../db/notification");

/// Opens storage, starts the outbox relay and the command consumer.
pub async fn start(ctx: &ServiceContext) -> Result<Service, StartError> {
    let (storage, bus) = open_service(ctx, SERVICE, SERVICE, &MIGRATOR, Default::default).await?;
    let store = NotificationStore::new(storage.clone());
    let handler = CommandHandler { store: store.clone(), source: bus.source().to_owned() };
    bus.subscribe(channels::NOTIFICATION_COMMANDS, SERVICE, handler)
        .await
        .map_err(StartError::at(SERVICE, "subscribing to commands"))?;
    let (router, openapi) = api(store);
    Ok(Service {
        name: SERVICE,
        router,
        openapi,
        readiness: vec![storage.readiness(), Arc::new(ctx.backends.clone())],
        audit: storage.audit_log(),
    })
}

/// The service's HTTP API: `GET /notifications` lists what the calling customer was sent.
pub fn router(store: NotificationStore) -> Router {
    api(store).0
}

/// The service's routes and their OpenAPI description.
pub fn api(store: NotificationStore) -> (Router, OpenApi) {
    OpenApiRouter::new().routes(routes!(list_notifications)).with_state(store).split_for_parts()
}

/// A notification as the customer sees it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Notification)]
struct NotificationItem {
    /// The notification.
    notification_id: Uuid,
    /// The order it is about.
    order_id: Uuid,
    /// Confirmation or cancellation notice.
    kind: NotificationKind,
    /// How it was sent.
    channel: NotificationChannel,
    /// Its subject line.
    subject: String,
    /// Its text.
    body: String,
    /// When it was sent.
    sent_at: DateTime<Utc>,
}

impl From<Notification> for NotificationItem {
    fn from(n: Notification) -> Self {
        Self {
            notification_id: n.notification_id,
            order_id: n.order_id,
            kind: n.kind,
            channel: n.channel,
            subject: n.subject,
            body: n.body,
            sent_at: n.sent_at,
        }
    }
}

/// The body of `GET /notifications`.
#[derive(Debug, Serialize, ToSchema)]
struct NotificationList {
    /// Newest first.
    items: Vec<NotificationItem>,
}

/// The calling customer's notifications, newest first.
#[utoipa::path(
    get,
    path = "/notifications",
    responses(
        (status = 200, description = "The caller's notifications, newest first.", body = NotificationList),
        (status = 403, response = docs::Forbidden),
    )
)]
async fn list_notifications(
    State(store): State<NotificationStore>,
    customer: Customer,
) -> Result<Json<NotificationList>, ApiError> {
    let sent = store.for_customer(customer.id()).await.map_err(ApiError::internal)?;
    Ok(Json(NotificationList { items: sent.into_iter().map(NotificationItem::from).collect() }))
}

/// The simulated email provider: the notification is "delivered" by logging it.
fn send_email(n: &Notification) {
    info!(
        notification_id = %n.notification_id,
        customer_id = %n.customer_id,
        kind = ?n.kind,
        channel = n.channel.as_str(),
        subject = %n.subject,
        "notification sent"
    );
}

struct CommandHandler {
    store: NotificationStore,
    source: String,
}

#[async_trait]
impl Handler for CommandHandler {
    async fn handle(&self, message: Envelope) -> Result<(), HandlerError> {
        let ctx = MessageContext::caused_by(&message);
        let sent = if message.is::<SendConfirmation>() {
            let command = message.decode::<SendConfirmation>()?;
            self.store.confirm(&message, &command, &self.source, &ctx).await
        } else if message.is::<SendCancellationNotice>() {
            let command = message.decode::<SendCancellationNotice>()?;
            self.store.notify_cancellation(&message, &command, &self.source, &ctx).await
        } else {
            return Err(HandlerError::fatal(format!("notification does not handle {}", message.event_type)));
        };
        if let Some(n) = sent.map_err(HandlerError::retriable)? {
            send_email(&n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{
        body::Body,
        http::{Request, StatusCode, header},
    };
    use contracts::SagaRef;
    use http_body_util::BodyExt;
    use persistence::memory::MemoryStore;
    use rust_decimal::Decimal;
    use tower::ServiceExt;

    fn memory_store() -> NotificationStore {
        NotificationStore::new(persistence::Storage::Memory(Arc::new(MemoryStore::default())))
    }

    async fn confirm(store: &NotificationStore, customer_id: &str) -> Notification {
        let cmd = SendConfirmation {
            saga: SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() },
            customer_id: customer_id.into(),
            pet_id: "pet-1".into(),
            amount: Decimal::new(5000, 2),
        };
        let message = Envelope::from_message("/t", &cmd, &MessageContext::default()).expect("envelope");
        store.confirm(&message, &cmd, "/t", &MessageContext::default()).await.expect("stored").expect("newly sent")
    }

    async fn get(store: NotificationStore, customer: Option<&str>) -> (StatusCode, Option<String>, serde_json::Value) {
        let ctx = kit::testing::context("").await;
        let app = kit::http::layers(router(store), &ctx.gate);
        let mut request = Request::get("/notifications");
        if let Some(c) = customer {
            request = request.header(header::AUTHORIZATION, kit::testing::bearer(c, &["customer"]));
        }
        let response = app.oneshot(request.body(Body::empty()).expect("request")).await.expect("response");
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.into_body().collect().await.expect("body").to_bytes();
        (status, content_type, serde_json::from_slice(&body).expect("JSON body"))
    }

    #[tokio::test]
    async fn a_customer_lists_only_their_notifications_newest_first() {
        let store = memory_store();
        let older = confirm(&store, "alice").await;
        confirm(&store, "bob").await;
        let newer = confirm(&store, "alice").await;

        let (status, _, body) = get(store, Some("alice")).await;

        assert_eq!(status, StatusCode::OK);
        let ids: Vec<&str> =
            body["items"].as_array().expect("items").iter().filter_map(|i| i["notification_id"].as_str()).collect();
        assert_eq!(ids, [newer.notification_id.to_string(), older.notification_id.to_string()]);
        let first = &body["items"][0];
        assert_eq!(first["kind"], "confirmation");
        assert_eq!(first["channel"], "email");
        assert_eq!(first["order_id"], newer.order_id.to_string());
        assert_eq!(first["subject"], newer.subject);
        assert!(first.get("customer_id").is_none(), "the listing does not repeat the customer");
    }

    #[tokio::test]
    async fn listing_without_a_customer_is_refused_as_a_problem() {
        let (status, content_type, body) = get(memory_store(), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
        assert_eq!(body["status"], 401);
    }

    #[tokio::test]
    async fn a_repeated_confirmation_is_not_sent_again() {
        let store = memory_store();
        let cmd = SendConfirmation {
            saga: SagaRef { saga_id: Uuid::now_v7(), order_id: Uuid::now_v7() },
            customer_id: "carol".into(),
            pet_id: "pet-1".into(),
            amount: Decimal::new(5000, 2),
        };
        let ctx = MessageContext::default();
        let first = Envelope::from_message("/t", &cmd, &ctx).expect("envelope");
        let redelivered = Envelope::from_message("/t", &cmd, &ctx).expect("envelope");
        assert!(store.confirm(&first, &cmd, "/t", &ctx).await.expect("stored").is_some());
        assert!(
            store.confirm(&redelivered, &cmd, "/t", &ctx).await.expect("stored").is_none(),
            "a new command id, same saga"
        );
        assert!(store.confirm(&first, &cmd, "/t", &ctx).await.expect("stored").is_none(), "the same message again");
        assert_eq!(store.for_order(cmd.saga.order_id).await.expect("read").len(), 1);
    }
}
