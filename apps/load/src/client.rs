//! The HTTP side shared by the commands: one pooled client, bearer tokens minted once,
//! `Retry-After`, and the problem detail of a refusal.

use std::time::Duration;

use anyhow::Context;
use reqwest::header::{self, HeaderMap, HeaderValue};

/// How long a request may take beyond what it asks the server to wait.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a token minted for the load stays valid: longer than any run.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long to wait on a `429` without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The shortest and longest wait a `Retry-After` is held to.
const RETRY_AFTER_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(60));
/// How many `429`s a setup request (the pet listing) waits out before giving up.
const SETUP_RETRIES: usize = 30;

/// One client for the whole run, keeping up to `connections` idle connections so that the
/// load does not pay for connecting again (no overall timeout: status requests are held by
/// the server; each request sets its own).
pub fn build(connections: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("HTTP client")
}

/// How many idle connections to keep for a run: its workers, or one second of starts.
pub fn connections_for(pace: crate::drive::Pace) -> usize {
    match pace {
        crate::drive::Pace::Concurrency(workers) => workers,
        crate::drive::Pace::Rate(rate) => rate.ceil().clamp(8.0, 1024.0) as usize,
    }
}

/// The configuration this process loads, the same layers as the pet store's.
pub fn settings() -> anyhow::Result<kit::Settings> {
    kit::Settings::load().context("loading the configuration to sign tokens with (PETSTORE_ENV, PETSTORE_CONFIG)")
}

/// `Authorization: Bearer …` for `subject` with `role`, signed as `settings` accept.
pub fn bearer(settings: &kit::Settings, subject: &str, role: &str) -> anyhow::Result<HeaderValue> {
    let request = kit::auth::TokenRequest {
        subject: subject.to_owned(),
        roles: vec![role.to_owned()],
        tier: None,
        ttl: TOKEN_TTL,
    };
    let token = kit::auth::mint(&settings.auth, &request).map_err(anyhow::Error::msg).context("signing a token")?;
    let mut value = HeaderValue::try_from(format!("Bearer {token}")).context("the token is not a header value")?;
    value.set_sensitive(true);
    Ok(value)
}

/// How long a `429` asks to wait (`Retry-After` in seconds), held to a sane range.
pub fn retry_after(headers: &HeaderMap) -> Duration {
    let asked = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs);
    asked.clamp(RETRY_AFTER_RANGE.0, RETRY_AFTER_RANGE.1)
}

/// Sends the request `build` makes (`what`, for errors), again after each `429` as
/// `Retry-After` says: for setup requests, whose timing is not measured.
pub async fn send_waiting_out_429(
    what: &str,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> anyhow::Result<reqwest::Response> {
    for _ in 0..SETUP_RETRIES {
        let sent = build().timeout(REQUEST_TIMEOUT).send().await;
        let response = sent.with_context(|| format!("{what}: is the pet store running?"))?;
        if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Ok(response);
        }
        tokio::time::sleep(retry_after(response.headers())).await;
    }
    anyhow::bail!("still over the pet store's request quota after {SETUP_RETRIES} tries")
}

/// The `detail` (else `title`, else the text) of an error response, on one line.
pub async fn problem(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    problem_detail(&text)
}

/// The `detail` (else `title`, else the text) of a problem+json body, on one line.
fn problem_detail(text: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let detail = json["detail"].as_str().or(json["title"].as_str()).unwrap_or(text.trim());
    let detail = if detail.is_empty() { "no detail" } else { detail };
    detail.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_and_held_to_a_sane_range() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_str(value).expect("header"));
            retry_after(&headers)
        };
        assert_eq!(with("3"), Duration::from_secs(3));
        assert_eq!(with("0"), Duration::from_millis(100));
        assert_eq!(with("86400"), Duration::from_secs(60));
        assert_eq!(with("Wed, 21 Oct 2015 07:28:00 GMT"), DEFAULT_RETRY_AFTER);
        assert_eq!(retry_after(&HeaderMap::new()), DEFAULT_RETRY_AFTER);
    }

    #[test]
    fn a_problem_says_its_detail_on_one_line() {
        assert_eq!(problem_detail(r#"{"title":"Conflict","detail":"pet `x` is\nsold"}"#), "pet `x` is sold");
        assert_eq!(problem_detail(r#"{"title":"Not Found"}"#), "Not Found");
        assert_eq!(problem_detail("plain text\n"), "plain text");
        assert_eq!(problem_detail(""), "no detail");
    }
}
