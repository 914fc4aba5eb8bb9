//! The six services in this test process, each on its own port as in the distributed
//! deployment, sharing a fresh PostgreSQL database and an in-process bus, and trusting a test
//! OIDC issuer: every service checks tokens and evaluates flags itself; `/admin/flags` is served
//! on a port of its own (`flags`).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use kit::{ServiceContext, testing::Issuer};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::SERVICES;

pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Stack {
    pub ctx: ServiceContext,
    pub urls: HashMap<&'static str, String>,
    pub issuer: Arc<Issuer>,
    pub db: PgPool,
    pub http: reqwest::Client,
}

impl Stack {
    /// Starts the services with `overrides` (YAML) on top of the issuer's and PostgreSQL's.
    pub async fn start(overrides: &str) -> Self {
        let issuer = Issuer::start().await;
        let (ctx, url) = kit::testing::postgres_context(&format!("{}\n{overrides}", issuer.overrides(60_000))).await;
        let mut urls = HashMap::new();
        for name in SERVICES {
            let service = match name {
                "inventory" => inventory::start(&ctx).await,
                "order" => order::start(&ctx).await,
                "payment" => payment::start(&ctx).await,
                "delivery" => delivery::start(&ctx).await,
                "notification" => notification::start(&ctx).await,
                _ => orchestrator::start(&ctx).await,
            }
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address: SocketAddr = listener.local_addr().expect("address");
            urls.insert(name, format!("http://{address}"));
            let (gate, shutdown) = (ctx.gate.clone(), ctx.shutdown.clone());
            tokio::spawn(async move { kit::serve(listener, vec![service], &gate, shutdown).await });
        }
        // The flag administration, as every process of the deployment serves it.
        let flags = persistence::flags::start(&ctx).await.expect("the flag service starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        urls.insert("flags", format!("http://{}", listener.local_addr().expect("address")));
        let (gate, shutdown) = (ctx.gate.clone(), ctx.shutdown.clone());
        tokio::spawn(async move { kit::serve(listener, vec![flags], &gate, shutdown).await });
        let db = PgPool::connect(&url).await.expect("connect");
        Self { ctx, urls, issuer, db, http: reqwest::Client::new() }
    }

    pub fn url(&self, service: &str, path: &str) -> String {
        format!("{}{path}", self.urls[service])
    }

    pub fn customer(&self, subject: &str) -> String {
        self.issuer.token(subject, &["customer"])
    }

    pub fn admin(&self) -> String {
        // An ES256 key, to show both key types work across the services.
        self.issuer.sign("ec-1", &self.issuer.claims("ops", &["admin"]))
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, service: &str, path: &str, token: &str) -> (u16, Value) {
        let (status, _, body) = self.send(self.http.get(self.url(service, path)).bearer_auth(token)).await;
        (status, body)
    }

    pub async fn place(&self, token: &str, pet_id: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let body = json!({
            "pet_id": pet_id,
            "shipping_address": { "street": "1 Main St", "city": "Springfield", "postal_code": "49007", "country": "US" },
            "payment_method": "credit_card",
        });
        self.send(self.http.post(self.url("order", "/orders")).bearer_auth(token).json(&body)).await
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&self.db).await.expect(sql)
    }

    /// Places an order for `customer` and waits for its saga to complete; the order id.
    pub async fn completed_order(&self, customer: &str, pet_id: &str) -> String {
        let (order_id, saga) = self.ended_order(customer, pet_id, "credit_card").await;
        assert_eq!(saga["status"], "completed", "{saga}");
        order_id
    }

    /// Places an order for `customer` and waits for its saga to end; the order id and the
    /// saga.
    pub async fn ended_order(&self, customer: &str, pet_id: &str, payment_method: &str) -> (String, Value) {
        let token = self.customer(customer);
        let body = json!({
            "pet_id": pet_id,
            "shipping_address": { "street": "1 Main St", "city": "Springfield", "postal_code": "49007", "country": "US" },
            "payment_method": payment_method,
        });
        let (status, _, placed) =
            self.send(self.http.post(self.url("order", "/orders")).bearer_auth(&token).json(&body)).await;
        assert_eq!(status, 202, "{placed}");
        let order_id = placed["order_id"].as_str().expect("order_id").to_owned();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, saga) = self.get("orchestrator", &format!("/orders/{order_id}/status"), &token).await;
            if status == 200 && matches!(saga["status"].as_str(), Some("completed" | "compensated" | "failed")) {
                return (order_id, saga);
            }
            assert!(Instant::now() < deadline, "the saga did not end: {saga}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
    }
}
