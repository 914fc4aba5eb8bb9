//! Saga benchmark: drives a running pet store over HTTP and prints throughput and saga
//! durations.
//!
//! ```text
//! cargo run --release -p petstore --example saga_bench -- [BASE_URL] [ORDERS] [CONCURRENCY]
//! ```
//!
//! Phase 1 places ORDERS (default 1000) orders paid with the test card `declined_card`,
//! CONCURRENCY (default 32) in flight at a time, cycling over the available pets: each saga
//! reserves, fails at payment, releases and sends a cancellation notice. Phase 2 buys every pet
//! still available, all at once: each saga runs all five steps. For each phase it prints the
//! throughput (first order placed to last saga seen ended) and p50/p90/p99/max of the saga
//! duration the orchestrator recorded (`started_at` → `ended_at`), and of the time a client
//! waits from `POST /orders` to seeing the saga ended. Phase 2 sells the catalog: restart the
//! all-in-one binary (or use a fresh database) before running it again.
//!
//! Each customer's token is signed with the configuration this command loads (the same
//! `PETSTORE_ENV` / `PETSTORE_CONFIG` / `PETSTORE__…` as the pet store it drives).

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use serde_json::{Value, json};

/// A customer token the driven pet store accepts.
fn token(customer: &str) -> String {
    static SETTINGS: std::sync::OnceLock<kit::Settings> = std::sync::OnceLock::new();
    let settings = SETTINGS.get_or_init(|| kit::Settings::load().expect("configuration"));
    let request = kit::auth::TokenRequest {
        subject: customer.to_owned(),
        roles: vec!["customer".into()],
        tier: None,
        ttl: Duration::from_secs(3600),
    };
    kit::auth::mint(&settings.auth, &request).expect("sign a token")
}

struct Sample {
    saga_ms: f64,
    client_ms: f64,
}

async fn run_order(
    http: &reqwest::Client,
    base: &str,
    customer: &str,
    pet: &str,
    method: &str,
) -> Result<Sample, String> {
    let started = Instant::now();
    let body = json!({
        "pet_id": pet,
        "payment_method": method,
        "shipping_address": { "street": "1 Main St", "city": "Springfield", "postal_code": "49007", "country": "US" },
    });
    let placed: Value = http
        .post(format!("{base}/orders"))
        .bearer_auth(token(customer))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let order_id = placed["order_id"].as_str().ok_or_else(|| format!("order refused: {placed}"))?.to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = http.get(format!("{base}/orders/{order_id}/status")).bearer_auth(token(customer)).send().await;
        if let Ok(r) = response
            && let Ok(saga) = r.json::<Value>().await
            && matches!(saga["status"].as_str(), Some("completed" | "compensated" | "failed"))
        {
            let time = |k: &str| saga[k].as_str().and_then(chrono_like_millis);
            let saga_ms = match (time("started_at"), time("ended_at")) {
                (Some(a), Some(b)) => b - a,
                _ => f64::NAN,
            };
            return Ok(Sample { saga_ms, client_ms: started.elapsed().as_secs_f64() * 1e3 });
        }
        if Instant::now() > deadline {
            return Err(format!("saga of order {order_id} did not end in 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC timestamp (`2026-11-24T01:02:03.456789Z`).
fn chrono_like_millis(t: &str) -> Option<f64> {
    let (date, rest) = t.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let rest = rest.trim_end_matches('Z');
    let mut hms = rest.split(':');
    let (h, min) = (hms.next()?.parse::<i64>().ok()?, hms.next()?.parse::<i64>().ok()?);
    let sec: f64 = hms.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3_600 + min * 60) as f64 + sec) * 1e3)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, samples: &[Sample], wall: Duration) {
    if samples.is_empty() {
        println!("{name}: no sagas");
        return;
    }
    let stats = |f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        (percentile(&v, 0.5), percentile(&v, 0.9), percentile(&v, 0.99), v[v.len() - 1])
    };
    let (s50, s90, s99, smax) = stats(|s| s.saga_ms);
    let (c50, c90, c99, cmax) = stats(|s| s.client_ms);
    println!(
        "{name:<28} {:>5} sagas in {:>6.2} s = {:>7.1} sagas/s\n  saga duration ms   p50 {s50:>7.1}  p90 {s90:>7.1}  p99 {s99:>7.1}  max {smax:>7.1}\n  POST→ended ms      p50 {c50:>7.1}  p90 {c90:>7.1}  p99 {c99:>7.1}  max {cmax:>7.1}",
        samples.len(),
        wall.as_secs_f64(),
        samples.len() as f64 / wall.as_secs_f64(),
    );
}

async fn phase(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    jobs: Vec<(String, String)>,
    method: &str,
    concurrency: usize,
) {
    let started = Instant::now();
    let results: Vec<Result<Sample, String>> = stream::iter(jobs)
        .map(|(customer, pet)| async move { run_order(http, base, &customer, &pet, method).await })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = started.elapsed();
    let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    for e in failed.iter().take(3) {
        if let Err(e) = e {
            eprintln!("  failed: {e}");
        }
    }
    let samples: Vec<Sample> = ok.into_iter().flatten().collect();
    report(name, &samples, wall);
    if !failed.is_empty() {
        println!("  {} orders failed", failed.len());
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let base = args.first().cloned().unwrap_or_else(|| "http://localhost:8080".into());
    let orders: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let concurrency: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(32);
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency * 2).build().expect("HTTP client");
    let catalog: Value = match http.get(format!("{base}/pets?available=true&limit=100")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(e) => {
            eprintln!("cannot reach {base}: {e}");
            std::process::exit(1);
        }
    };
    let pets: Vec<String> = catalog["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["pet_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if pets.is_empty() {
        eprintln!("no available pets at {base}: restart the pet store to reset its catalog");
        std::process::exit(1);
    }
    println!(
        "petstore saga benchmark: {base}, {orders} declined orders at concurrency {concurrency}, then {} purchases",
        pets.len()
    );
    let declined = (0..orders).map(|i| (format!("bench-{}", i % concurrency), pets[i % pets.len()].clone())).collect();
    phase(&http, &base, "compensated (declined_card)", declined, "declined_card", concurrency).await;
    let bought = pets.iter().enumerate().map(|(i, p)| (format!("buyer-{i}"), p.clone())).collect();
    phase(&http, &base, "completed (all five steps)", bought, "credit_card", pets.len()).await;
}
