//! `petstore seed-pets`: lists generated pets in a running pet store through its catalog API
//! (`POST /pets`, the `admin` role), so that a load test can keep completing sagas — the seed
//! catalog has 30 pets, each sold once.
//!
//! petstore seed-pets --count N [--prefix P] [--concurrency C] [--url URL] [--token T]
//!
//! Pet `n` is `<prefix>-<n>` (six digits) with a category, breed, age and price derived from
//! `n`, so running the command again lists only what is missing (`409` for the others). A
//! `429` (the admin's quota) is waited out as `Retry-After` says and the pet sent again.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::dlq::{Options, client};

/// Usage of `petstore seed-pets`.
pub const USAGE: &str = "petstore seed-pets --count N [--prefix P] [--concurrency C] [--url URL] [--token T] \
                         (an admin token: --token or PETSTORE_TOKEN)";

/// Breeds by category, for generated pets.
const KINDS: [(&str, &[&str]); 5] = [
    ("dog", &["Beagle", "Border Collie", "Dachshund", "Labrador Retriever"]),
    ("cat", &["Maine Coon", "Ragdoll", "Siamese"]),
    ("bird", &["Budgerigar", "Canary", "Cockatiel"]),
    ("fish", &["Betta", "Goldfish", "Koi"]),
    ("reptile", &["Corn Snake", "Leopard Gecko"]),
];

/// Runs `petstore seed-pets <args>`: prints how many pets were listed.
pub async fn run(args: &[&str]) -> anyhow::Result<()> {
    let options = Options::read(args, &["--count", "--prefix", "--concurrency"], false, USAGE)?;
    let value = |name: &str| options.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let count: usize = value("count")
        .with_context(|| format!("--count is required; usage: {USAGE}"))?
        .parse()
        .with_context(|| format!("--count must be a whole number; usage: {USAGE}"))?;
    let prefix = value("prefix").unwrap_or("load").to_owned();
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        bail!("--prefix may hold only a-z, 0-9 and `-`; usage: {USAGE}");
    }
    let concurrency: usize = match value("concurrency") {
        None => 8,
        Some(c) => c.parse().ok().filter(|c| (1..=64).contains(c)).context("--concurrency must be 1 to 64")?,
    };
    let http = client(&options)?;
    let url = format!("{}/pets", options.url);
    let started = std::time::Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let (listed, existing) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(count.max(1)) {
        let (http, url, prefix, next) = (http.clone(), url.clone(), prefix.clone(), next.clone());
        let (listed, existing) = (listed.clone(), existing.clone());
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                let pet = generated(&prefix, n);
                loop {
                    let response = http.post(&url).json(&pet).send().await.with_context(|| format!("POST {url}"))?;
                    match response.status().as_u16() {
                        201 => listed.fetch_add(1, Ordering::Relaxed),
                        409 => existing.fetch_add(1, Ordering::Relaxed),
                        // Over the admin's quota: wait as told, then send the same pet again.
                        429 => {
                            let retry_after = response
                                .headers()
                                .get(reqwest::header::RETRY_AFTER)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok())
                                .unwrap_or(1);
                            tokio::time::sleep(std::time::Duration::from_secs(retry_after.clamp(1, 10))).await;
                            continue;
                        }
                        status => {
                            let body: Value = response.json().await.unwrap_or(Value::Null);
                            let detail = body["detail"].as_str().or(body["title"].as_str()).unwrap_or("no detail");
                            bail!("POST {url} ({}): {status}: {detail}", pet["pet_id"]);
                        }
                    };
                    break;
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a seeding task")??;
    }
    println!(
        "{} pets listed, {} already there ({prefix}-000000 to {prefix}-{:06}) in {:.1} s",
        listed.load(Ordering::Relaxed),
        existing.load(Ordering::Relaxed),
        count.saturating_sub(1),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Pet `n` of the generated catalog: the same pet for the same `n` every time.
fn generated(prefix: &str, n: usize) -> Value {
    let (category, breeds) = KINDS[n % KINDS.len()];
    let breed = breeds[(n / KINDS.len()) % breeds.len()];
    json!({
        "pet_id": format!("{prefix}-{n:06}"),
        "name": format!("{breed} {n}"),
        "category": category,
        "breed": breed,
        "age_months": 2 + (n * 7) % 178,
        "price": format!("{}.{:02}", 20 + (n * 37) % 1980, (n * 13) % 100),
        "currency": "USD",
        "description": "Generated for load tests by petstore seed-pets.",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pet_is_the_same_every_time_and_fits_the_catalog() {
        assert_eq!(generated("load", 7), generated("load", 7));
        let pet = generated("load", 123_456);
        assert_eq!(pet["pet_id"], "load-123456");
        let price = pet["price"].as_str().expect("price");
        assert!(price.split_once('.').is_some_and(|(_, cents)| cents.len() == 2), "{price}");
        assert!((2..180).contains(&pet["age_months"].as_u64().expect("age")));
        assert_ne!(generated("load", 1)["category"], generated("load", 2)["category"]);
    }
}
