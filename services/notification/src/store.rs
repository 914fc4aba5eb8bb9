//! Where notifications live: the `notification` schema, or memory. Each command runs in one
//! transaction with its inbox entry and its reply.

use contracts::notification::{NotificationKind, SendCancellationNotice, SendConfirmation};
use messaging::{Envelope, MessageContext};
use persistence::{Records, Storage, StoreError};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::{
    SERVICE,
    domain::{self, Notification, NotificationChannel},
};

/// How many notifications a customer listing returns at most.
const CUSTOMER_LIMIT: usize = 100;

/// Notifications in the order they were sent, for the in-memory store.
#[derive(Debug, Default)]
pub struct NotificationState {
    sent: Vec<Notification>,
}

/// The notification store.
#[derive(Clone)]
pub struct NotificationStore(Storage<NotificationState>);

/// One notification of each kind per saga.
struct Notifications;

impl Records for Notifications {
    type Key = (Uuid, NotificationKind);
    type Record = Notification;
    type State = NotificationState;

    fn get(state: &NotificationState, &(saga_id, kind): &(Uuid, NotificationKind)) -> Option<Notification> {
        state.sent.iter().find(|n| n.saga_id == saga_id && n.kind == kind).cloned()
    }

    fn put(state: &mut NotificationState, notification: Notification) {
        state.sent.push(notification);
    }

    async fn load(
        conn: &mut PgConnection,
        &(saga_id, kind): &(Uuid, NotificationKind),
    ) -> Result<Option<Notification>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE saga_id = $1 AND kind = $2 FOR UPDATE")))
            .bind(saga_id)
            .bind(domain::kind_name(kind))
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn save(conn: &mut PgConnection, n: &Notification) -> Result<(), StoreError> {
        save(conn, n).await
    }
}

impl NotificationStore {
    /// Wraps the configured storage.
    pub fn new(storage: Storage<NotificationState>) -> Self {
        Self(storage)
    }

    /// Handles `SendConfirmation` once; returns the confirmation when this call stored it
    /// (so the caller sends it), `None` when it had been sent before.
    pub async fn confirm(
        &self,
        message: &Envelope,
        cmd: &SendConfirmation,
        source: &str,
        ctx: &MessageContext,
    ) -> Result<Option<Notification>, StoreError> {
        let key = (cmd.saga.saga_id, NotificationKind::Confirmation);
        let (cmd, source, ctx) = (cmd.clone(), source.to_owned(), ctx.clone());
        let decide = move |existing| domain::confirm(existing, &cmd, &source, &ctx);
        self.0.decide_once::<Notifications>(SERVICE, message, &key, decide).await
    }

    /// Handles `SendCancellationNotice` once; returns the notice when this call stored it.
    pub async fn notify_cancellation(
        &self,
        message: &Envelope,
        cmd: &SendCancellationNotice,
        source: &str,
        ctx: &MessageContext,
    ) -> Result<Option<Notification>, StoreError> {
        let key = (cmd.saga.saga_id, NotificationKind::CancellationNotice);
        let (cmd, source, ctx) = (cmd.clone(), source.to_owned(), ctx.clone());
        let decide = move |existing| domain::notify_cancellation(existing, &cmd, &source, &ctx);
        self.0.decide_once::<Notifications>(SERVICE, message, &key, decide).await
    }

    /// A customer's notifications, newest first (at most 100).
    pub async fn for_customer(&self, customer_id: &str) -> Result<Vec<Notification>, StoreError> {
        match &self.0 {
            Storage::Memory(memory) => Ok(memory.read(|s| {
                s.sent.iter().rev().filter(|n| n.customer_id == customer_id).take(CUSTOMER_LIMIT).cloned().collect()
            })),
            Storage::Postgres { pool, .. } => {
                let sql = format!(
                    "{SELECT} WHERE customer_id = $1 ORDER BY sent_at DESC, notification_id DESC LIMIT {CUSTOMER_LIMIT}"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(customer_id).fetch_all(pool).await?;
                rows.iter().map(decode).collect()
            }
        }
    }

    /// The notifications sent about an order, newest first.
    pub async fn for_order(&self, order_id: Uuid) -> Result<Vec<Notification>, StoreError> {
        match &self.0 {
            Storage::Memory(memory) => {
                Ok(memory.read(|s| s.sent.iter().rev().filter(|n| n.order_id == order_id).cloned().collect()))
            }
            Storage::Postgres { pool, .. } => {
                let sql = format!("{SELECT} WHERE order_id = $1 ORDER BY sent_at DESC, notification_id DESC");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(order_id).fetch_all(pool).await?;
                rows.iter().map(decode).collect()
            }
        }
    }
}

const SELECT: &str =
    "SELECT notification_id, saga_id, order_id, customer_id, kind, channel, subject, body, sent_at FROM notifications";

async fn save(conn: &mut PgConnection, n: &Notification) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO notifications (notification_id, saga_id, order_id, customer_id, kind, channel, subject, body, sent_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(n.notification_id)
    .bind(n.saga_id)
    .bind(n.order_id)
    .bind(&n.customer_id)
    .bind(domain::kind_name(n.kind))
    .bind(n.channel.as_str())
    .bind(&n.subject)
    .bind(&n.body)
    .bind(n.sent_at)
    .execute(conn)
    .await?;
    Ok(())
}

fn decode(row: &sqlx::postgres::PgRow) -> Result<Notification, StoreError> {
    let kind: String = row.try_get("kind")?;
    let channel: String = row.try_get("channel")?;
    Ok(Notification {
        notification_id: row.try_get("notification_id")?,
        saga_id: row.try_get("saga_id")?,
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        kind: domain::parse_kind(&kind)
            .ok_or_else(|| StoreError::Codec(format!("unknown notification kind {kind}")))?,
        channel: NotificationChannel::parse(&channel)
            .ok_or_else(|| StoreError::Codec(format!("unknown notification channel {channel}")))?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        sent_at: row.try_get("sent_at")?,
    })
}
