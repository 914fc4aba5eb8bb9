//! `petstore-load saga`: orders placed and followed to the end of their sagas.
//!
//! Each order borrows a distinct available pet, is placed (`POST /orders`) by one of the
//! customers in turn, paid as the mix says, and followed with the orchestrator's long poll
//! (`GET /orders/{id}/status?wait=…`, asked again while the saga runs) until its saga ends or
//! `--deadline` after it was placed passes (then it is lost). A compensated saga released its
//! pet, so the pet is lent again.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use contracts::{Address, PaymentMethod};
use hdrhistogram::Histogram;
use reqwest::{
    StatusCode,
    header::{AUTHORIZATION, HeaderValue},
};
use saga::SagaStatus;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    cli::SagaArgs,
    client,
    drive::{self, Pace, Span},
    mix::Mix,
    pets::{self, Lent, Pool},
    progress::{Live, Progress},
    report::{self, Errors, Latency, SagaReport},
};

/// A `404` on the status route answered sooner than this (or than half the wait asked)
/// means there is no such order for the caller: for an order whose saga has not started
/// yet, the orchestrator holds the answer up to 2 s.
const HELD_404: Duration = Duration::from_secs(1);

/// The body of `POST /orders`.
#[derive(Serialize)]
struct PlaceOrder<'a> {
    pet_id: &'a str,
    payment_method: PaymentMethod,
    shipping_address: &'a Address,
}

/// What `POST /orders` answers (only what the load needs).
#[derive(Deserialize)]
struct Receipt {
    order_id: String,
}

/// What `GET /orders/{id}/status` answers (only what the load needs).
#[derive(Debug, Deserialize)]
struct SagaView {
    status: SagaStatus,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
}

impl SagaView {
    /// How long the saga ran, as the orchestrator recorded it; `None` while it runs.
    fn duration(&self) -> Option<Duration> {
        (self.ended_at? - self.started_at).to_std().ok()
    }
}

/// How a saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    Compensated,
    Failed,
}

impl Outcome {
    /// The end a status is, `None` while the saga still runs. Every status is named, so
    /// that a new one has to be placed here.
    fn of(status: SagaStatus) -> Option<Self> {
        match status {
            SagaStatus::Completed => Some(Self::Completed),
            SagaStatus::Compensated => Some(Self::Compensated),
            SagaStatus::Failed => Some(Self::Failed),
            SagaStatus::Running | SagaStatus::Compensating => None,
        }
    }
}

/// Why an order did not reach an end the load could see.
#[derive(Debug)]
struct OrderError {
    /// `POST 409`, `status 500`, `transport`, …
    kind: String,
    /// What went wrong, for the report.
    detail: String,
    /// Whether the pet is certainly still free (the order was not placed).
    pet_free: bool,
}

impl OrderError {
    /// A request that got no answer: the order may or may not have been placed.
    fn transport(what: &str, error: reqwest::Error) -> Self {
        Self { kind: "transport".into(), detail: format!("{what}: {:#}", anyhow::Error::from(error)), pet_free: false }
    }

    /// An answer the load did not expect.
    async fn refused(what: &str, response: reqwest::Response, pet_free: bool) -> Self {
        let kind = format!("{what} {}", response.status().as_u16());
        Self { kind, detail: client::problem(response).await, pet_free }
    }
}

/// How one order ended, for the load.
#[derive(Debug)]
enum End {
    /// Its saga ended.
    Ended { outcome: Outcome, saga: Option<Duration> },
    /// It was accepted and its saga had not ended by the deadline.
    Lost,
    /// It failed before the load saw its saga end.
    Error(OrderError),
}

/// An accepted order.
struct Placed {
    order_id: String,
    /// When the `POST` that placed it was sent.
    posted: Instant,
}

/// Counters the progress bar reads while the run goes on.
#[derive(Debug, Default)]
struct Counters {
    placed: AtomicU64,
    completed: AtomicU64,
    compensated: AtomicU64,
    failed: AtomicU64,
    lost: AtomicU64,
    errors: AtomicU64,
    retries_429: AtomicU64,
    pet_waits: AtomicU64,
}

/// What is recorded per order, under one lock.
struct Recorded {
    post_to_end: Histogram<u64>,
    saga: Histogram<u64>,
    errors: Errors,
}

/// One saga run: what every order needs, and what they record.
struct Run {
    http: reqwest::Client,
    url: String,
    orders_url: String,
    /// `Authorization` of each customer.
    customers: Vec<HeaderValue>,
    mix: Mix,
    address: Address,
    wait: Duration,
    deadline: Duration,
    pool: Pool,
    span: Span,
    cancel: CancellationToken,
    /// Whether an order found no pet to buy.
    dry: AtomicBool,
    counters: Counters,
    recorded: Mutex<Recorded>,
}

/// Runs `petstore-load saga`: the report of what was done (also when the pets ran out).
pub async fn run(args: &SagaArgs) -> anyhow::Result<SagaReport> {
    let (pace, stop) = (args.load.pace()?, args.load.stop()?);
    let url = args.load.url.clone();
    let settings = client::settings()?;
    let customers = (0..args.customers)
        .map(|i| client::bearer(&settings, &format!("load-customer-{i}"), "customer"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let http = client::build(client::connections_for(pace))?;
    let pets = pets::available(&http, &url).await?;
    if !args.load.quiet {
        eprintln!("petstore-load: {} available pets at {url}", pets.len());
    }
    let recorded =
        Recorded { post_to_end: report::histogram()?, saga: report::histogram()?, errors: Errors::default() };
    let run = Arc::new(Run {
        http,
        orders_url: format!("{url}/orders"),
        url,
        customers,
        mix: args.mix.clone(),
        address: Address {
            street: "1 Load Test Way".into(),
            city: "Springfield".into(),
            postal_code: "49007".into(),
            country: "US".into(),
        },
        wait: args.wait,
        deadline: args.deadline,
        pool: Pool::new(pets),
        span: Span::new(Instant::now()),
        cancel: CancellationToken::new(),
        dry: AtomicBool::new(false),
        counters: Counters::default(),
        recorded: Mutex::new(recorded),
    });
    let ctrl_c = drive::cancel_on_ctrl_c(run.cancel.clone());
    let progress = Progress::start(stop, args.load.quiet, run.span.start(), run.clone());
    let order = {
        let run = run.clone();
        move |n: u64, due: Instant| run.clone().order(n, due)
    };
    let driven = drive::run(pace, stop, run.span.start(), &run.cancel, order).await;
    progress.finish();
    ctrl_c.abort();
    driven?;
    if run.dry.load(Ordering::Relaxed) {
        eprintln!(
            "petstore-load: no available pet left at {}: the run stopped early. List more pets first, e.g. \
             PETSTORE_TOKEN=$(petstore token --sub ops --role admin) petstore seed-pets --count 1000 --url {}",
            run.url, run.url
        );
    }
    Ok(run.report(args, pace))
}

impl Run {
    /// Order `n`, due at `due`: borrows a pet, places the order, follows it, records the end.
    async fn order(self: Arc<Self>, n: u64, due: Instant) {
        let pet = match self.pool.lend().await {
            Lent::Now(pet) => pet,
            Lent::AfterWaiting(pet) => {
                self.counters.pet_waits.fetch_add(1, Ordering::Relaxed);
                pet
            }
            Lent::Dry => {
                if !self.dry.swap(true, Ordering::Relaxed) {
                    self.cancel.cancel();
                }
                return;
            }
        };
        if self.cancel.is_cancelled() {
            self.pool.give_back(pet);
            return;
        }
        let customer = &self.customers[(n % self.customers.len() as u64) as usize];
        let end = match self.place(customer, &pet, self.mix.pick(n)).await {
            Ok(placed) => {
                self.counters.placed.fetch_add(1, Ordering::Relaxed);
                self.follow(customer, &placed).await
            }
            Err(error) => End::Error(error),
        };
        self.settle(pet, due, end);
    }

    /// `POST /orders`, again after each `429` while the deadline allows.
    async fn place(&self, customer: &HeaderValue, pet: &str, method: PaymentMethod) -> Result<Placed, OrderError> {
        let body = PlaceOrder { pet_id: pet, payment_method: method, shipping_address: &self.address };
        let first = Instant::now();
        loop {
            let posted = Instant::now();
            let request = self.http.post(&self.orders_url).header(AUTHORIZATION, customer.clone()).json(&body);
            let sent = request.timeout(client::REQUEST_TIMEOUT).send().await;
            let response = sent.map_err(|e| OrderError::transport("POST /orders", e))?;
            let status = response.status();
            if status.is_success() {
                return match response.json::<Receipt>().await {
                    Ok(receipt) => Ok(Placed { order_id: receipt.order_id, posted }),
                    Err(e) => Err(OrderError::transport("POST /orders: reading the receipt", e)),
                };
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = client::retry_after(response.headers());
                if posted + wait < first + self.deadline {
                    self.counters.retries_429.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            // Refused: placed nothing, so the pet is still free, unless it is sold (409) or
            // not one the API takes (other 4xx).
            let pet_free = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
            return Err(OrderError::refused("POST", response, pet_free).await);
        }
    }

    /// Asks for the order's saga status, held by the server, until it has ended or the
    /// deadline has passed.
    async fn follow(&self, customer: &HeaderValue, placed: &Placed) -> End {
        let deadline = placed.posted + self.deadline;
        let status_url = format!("{}/orders/{}/status?wait=", self.url, placed.order_id);
        loop {
            let asked = self.wait.min(deadline.saturating_duration_since(Instant::now()));
            if asked < Duration::from_millis(1) {
                return End::Lost;
            }
            let sent = Instant::now();
            let request =
                self.http.get(format!("{status_url}{}ms", asked.as_millis())).header(AUTHORIZATION, customer.clone());
            let response = match request.timeout(asked + client::REQUEST_TIMEOUT).send().await {
                Ok(response) => response,
                Err(e) => return End::Error(OrderError::transport("GET status", e)),
            };
            match response.status() {
                StatusCode::OK => match response.json::<SagaView>().await {
                    Ok(saga) => {
                        if let Some(outcome) = Outcome::of(saga.status) {
                            return End::Ended { outcome, saga: saga.duration() };
                        }
                    }
                    Err(e) => return End::Error(OrderError::transport("GET status: reading the saga", e)),
                },
                // The saga has not started yet: the server held the answer, ask again.
                StatusCode::NOT_FOUND if sent.elapsed() >= HELD_404.min(asked / 2) => {}
                StatusCode::TOO_MANY_REQUESTS => {
                    self.counters.retries_429.fetch_add(1, Ordering::Relaxed);
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(client::retry_after(response.headers()).min(left)).await;
                }
                _ => return End::Error(OrderError::refused("status", response, false).await),
            }
        }
    }

    /// Records how order `due` ended, and returns its pet to the pool if it is free again.
    fn settle(&self, pet: String, due: Instant, end: End) {
        self.span.mark_end();
        let c = &self.counters;
        let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        let pet_free = match end {
            End::Ended { outcome, saga } => {
                let counter = match outcome {
                    Outcome::Completed => &c.completed,
                    Outcome::Compensated => &c.compensated,
                    Outcome::Failed => &c.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                report::record(&mut recorded.post_to_end, due.elapsed());
                if let Some(saga) = saga {
                    report::record(&mut recorded.saga, saga);
                }
                // Compensating released the pet; completing sold it; a failed saga left it
                // in a state the load cannot know.
                outcome == Outcome::Compensated
            }
            End::Lost => {
                c.lost.fetch_add(1, Ordering::Relaxed);
                false
            }
            End::Error(error) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                recorded.errors.add(&error.kind, || error.detail);
                error.pet_free
            }
        };
        drop(recorded);
        if pet_free { self.pool.give_back(pet) } else { self.pool.write_off() }
    }

    /// The report of the run so far.
    fn report(&self, args: &SagaArgs, pace: Pace) -> SagaReport {
        let c = &self.counters;
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        SagaReport {
            url: self.url.clone(),
            options: args.options_json(),
            elapsed: self.span.elapsed(),
            offered_per_s: match pace {
                Pace::Rate(rate) => Some(rate),
                Pace::Concurrency(_) => None,
            },
            placed: count(&c.placed),
            completed: count(&c.completed),
            compensated: count(&c.compensated),
            failed: count(&c.failed),
            lost: count(&c.lost),
            retries_429: count(&c.retries_429),
            pet_waits: count(&c.pet_waits),
            pool_dry: self.dry.load(Ordering::Relaxed),
            errors: recorded.errors.clone(),
            post_to_end: Latency::of(&recorded.post_to_end),
            saga: Latency::of(&recorded.saga),
        }
    }
}

impl Live for Run {
    fn ended(&self) -> u64 {
        let c = &self.counters;
        [&c.completed, &c.compensated, &c.failed, &c.lost, &c.errors].iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    fn line(&self, elapsed: Duration) -> String {
        let c = &self.counters;
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let completed = count(&c.completed);
        format!(
            "placed {} completed {completed} compensated {} lost {} errors {} | {:.1} completed/s",
            count(&c.placed),
            count(&c.compensated),
            count(&c.lost),
            count(&c.errors),
            completed as f64 / elapsed.as_secs_f64().max(1e-3),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status body as the orchestrator sends it (trimmed to the fields around the ones read).
    fn status(status: &str, ended_at: Option<&str>) -> SagaView {
        let body = serde_json::json!({
            "saga_id": "0190a000-0000-7000-8000-000000000000",
            "status": status,
            "reason": null,
            "steps": [],
            "started_at": "2026-01-01T00:00:00.250Z",
            "updated_at": "2026-01-01T00:00:01Z",
            "ended_at": ended_at,
        });
        serde_json::from_value(body).expect("a saga status")
    }

    #[test]
    fn only_completed_compensated_and_failed_are_ends() {
        let end = Some("2026-01-01T00:00:01.5Z");
        assert_eq!(Outcome::of(status("completed", end).status), Some(Outcome::Completed));
        assert_eq!(Outcome::of(status("compensated", end).status), Some(Outcome::Compensated));
        assert_eq!(Outcome::of(status("failed", end).status), Some(Outcome::Failed));
        assert_eq!(Outcome::of(status("running", None).status), None);
        assert_eq!(Outcome::of(status("compensating", None).status), None);
        assert!(serde_json::from_value::<SagaView>(serde_json::json!({"status": "done"})).is_err());
    }

    #[test]
    fn the_saga_duration_is_its_end_minus_its_start() {
        assert_eq!(status("completed", Some("2026-01-01T00:00:01.5Z")).duration(), Some(Duration::from_millis(1250)));
        assert_eq!(status("running", None).duration(), None);
        // A clock that went backwards gives no duration rather than a wrong one.
        assert_eq!(status("completed", Some("2026-01-01T00:00:00Z")).duration(), None);
    }

    #[test]
    fn the_order_body_is_what_the_api_takes() {
        let address = Address { street: "s".into(), city: "c".into(), postal_code: "p".into(), country: "US".into() };
        let body = PlaceOrder {
            pet_id: "load-000001",
            payment_method: PaymentMethod::DeclinedCard,
            shipping_address: &address,
        };
        assert_eq!(
            serde_json::to_value(&body).expect("serializes"),
            serde_json::json!({"pet_id": "load-000001", "payment_method": "declined_card",
                "shipping_address": {"street": "s", "city": "c", "postal_code": "p", "country": "US"}})
        );
    }
}
