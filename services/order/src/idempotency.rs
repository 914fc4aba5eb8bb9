//! `Idempotency-Key` on `POST /orders`: a client that retries a request (after a timeout, a
//! dropped connection) with the same key gets the first answer again instead of a second
//! order. Keys are scoped per customer and remembered for [`KEY_RETENTION`]; what is
//! remembered is written with the order itself (see `OrderStore::place`).

use std::fmt::Write as _;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, TimeDelta, Utc};
use kit::http::{ApiError, Json, Problem};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Order, OrderStatus};

/// The request header naming a retry-safe request.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The response header marking an answer replayed for a key seen before.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// How long a key is remembered. A retry within it replays the first answer; after it the
/// key is free again and the same request places a new order.
pub const KEY_RETENTION: TimeDelta = TimeDelta::hours(24);

const MAX_KEY_LEN: usize = 255;

/// The request's optional `Idempotency-Key`: one header of 1 to 255 visible ASCII characters;
/// anything else is answered 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
        let Some(first) = values.next() else { return Ok(Self(None)) };
        let key = first
            .to_str()
            .ok()
            .filter(|k| (1..=MAX_KEY_LEN).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
        match key {
            Some(key) if values.next().is_none() => Ok(Self(Some(key.to_owned()))),
            _ => Err(ApiError::bad_request(format!(
                "Idempotency-Key: send at most one, of 1 to {MAX_KEY_LEN} visible ASCII characters"
            ))),
        }
    }
}

/// A request that wants to use a key: whose key it is and what the request was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyClaim {
    /// The customer; keys of different customers never meet.
    pub customer_id: String,
    /// The `Idempotency-Key`.
    pub key: String,
    /// SHA-256 (hex) of the request's canonical JSON: same request, same fingerprint.
    pub fingerprint: String,
}

impl KeyClaim {
    /// The claim of `customer_id` on `key` for `request`, which should be validated and
    /// normalized: its serialization (fields in declaration order, no whitespace) is the
    /// canonical form, so the client's formatting and key order do not matter.
    pub fn new(customer_id: &str, key: String, request: &impl Serialize) -> Result<Self, serde_json::Error> {
        let canonical = serde_json::to_vec(request)?;
        let mut fingerprint = String::with_capacity(64);
        for byte in Sha256::digest(&canonical).iter() {
            let _ = write!(fingerprint, "{byte:02x}");
        }
        Ok(Self { customer_id: customer_id.to_owned(), key, fingerprint })
    }

    /// The answer to this request when its key was used before: the same 202 for the same
    /// request, 422 for a different one.
    pub fn answer_again(&self, earlier: &RememberedKey) -> Response {
        if earlier.fingerprint == self.fingerprint {
            metrics::counter!("petstore_idempotent_replays_total", "outcome" => "replayed").increment(1);
            tracing::info!(order_id = %earlier.receipt.order_id, "order request replayed for its Idempotency-Key");
            earlier.receipt.accepted(true)
        } else {
            metrics::counter!("petstore_idempotent_replays_total", "outcome" => "conflict").increment(1);
            key_reused(&self.key)
        }
    }
}

/// The body of a `202 Accepted` to `POST /orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Receipt {
    /// The order.
    pub order_id: Uuid,
    /// Its saga.
    pub saga_id: Uuid,
    /// Its status when it was placed.
    pub status: OrderStatus,
    /// The correlation id of the request that placed it.
    pub correlation_id: String,
}

impl Receipt {
    /// The receipt for `order`, placed by the request `correlation_id`.
    pub fn new(order: &Order, correlation_id: &str) -> Self {
        Self {
            order_id: order.details.order_id,
            saga_id: order.saga_id,
            status: order.status,
            correlation_id: correlation_id.to_owned(),
        }
    }

    /// 202 with this body and `Location`; `replayed` adds `Idempotent-Replayed: true`.
    pub fn accepted(&self, replayed: bool) -> Response {
        let mut headers = HeaderMap::new();
        if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", self.order_id)) {
            headers.insert(header::LOCATION, location);
        }
        if replayed {
            headers.insert(HeaderName::from_static(REPLAYED_HEADER), HeaderValue::from_static("true"));
        }
        (StatusCode::ACCEPTED, headers, Json(self)).into_response()
    }
}

/// What a key was used for: the request's fingerprint and the answer it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberedKey {
    /// The fingerprint of the request that used the key first.
    pub fingerprint: String,
    /// What it was answered.
    pub receipt: Receipt,
    /// When; the key expires [`KEY_RETENTION`] later.
    pub created_at: DateTime<Utc>,
}

/// The problem type of a key reused for another request; kit's [`ProblemType`]s are the
/// ones every service shares, this one is the order service's own.
///
/// [`ProblemType`]: kit::http::ProblemType
pub const KEY_REUSED_TYPE: &str = "https://petstore.example.com/problems/idempotency-key-reused";

/// 422 [`KEY_REUSED_TYPE`], in the problem+json shape of [`ApiError`].
fn key_reused(key: &str) -> Response {
    Problem::new(
        KEY_REUSED_TYPE.to_owned(),
        "Idempotency key reused",
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "Idempotency-Key `{key}` was already used for a different order request; send a new key for a new order"
        ),
    )
    .into_response()
}
