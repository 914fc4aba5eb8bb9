//! `petstore dlq`: the dead letters of a running pet store, through its HTTP API
//! (`GET /admin/dlq`, `POST /admin/dlq/{id}/replay`).
//!
//! ```text
//! petstore dlq list [--url URL] [--token T] [--channel CHANNEL] [--replayed true|false] [--limit N] [--cursor C]
//! petstore dlq replay <id> [--url URL] [--token T] [--force]
//! ```
//!
//! The routes need an `admin` token: `--token`, else `PETSTORE_TOKEN` (for instance
//! `PETSTORE_TOKEN=$(petstore token --sub ops --role admin)`).

use anyhow::{Context, bail};
use serde_json::Value;

/// Where the pet store answers unless `--url` says otherwise.
const DEFAULT_URL: &str = "http://localhost:8080";

/// How `petstore dlq` is used.
pub const USAGE: &str = "petstore dlq list [--url URL] [--token T] [--channel CHANNEL] [--replayed true|false] \
                         [--limit N] [--cursor C] | petstore dlq replay <id> [--url URL] [--token T] [--force] \
                         (an admin token: --token or PETSTORE_TOKEN)";

/// Longest error shown in the listing (the whole error is in `GET /admin/dlq/{id}`).
const ERROR_WIDTH: usize = 60;

/// Runs `petstore dlq <args>`: prints the result, or fails with the API's problem detail.
pub async fn run(args: &[&str]) -> anyhow::Result<()> {
    match args {
        ["list", options @ ..] => {
            let options = Options::read(options, &["--channel", "--replayed", "--limit", "--cursor"], false, USAGE)?;
            list(&options).await
        }
        ["replay", id, options @ ..] if !id.starts_with("--") => {
            let options = Options::read(options, &[], true, USAGE)?;
            replay(&options, id).await
        }
        _ => bail!("usage: {USAGE}"),
    }
}

/// The options of a command that calls the pet store's API (`petstore dlq`, `petstore
/// seed-pets`).
#[derive(Debug, PartialEq)]
pub(crate) struct Options {
    /// `--url`, without a trailing `/`.
    pub(crate) url: String,
    /// The command's own options, as `name=value` pairs (for `dlq`, those of the request).
    pub(crate) query: Vec<(String, String)>,
    /// `--force`.
    force: bool,
    /// `--token`, else `PETSTORE_TOKEN`.
    token: Option<String>,
}

impl Options {
    /// `--url`, `--token`, the options named in `query` and `--force` (when `force` allows
    /// it); anything else is an error showing `usage`.
    pub(crate) fn read(options: &[&str], query: &[&str], force: bool, usage: &str) -> anyhow::Result<Self> {
        let token = std::env::var("PETSTORE_TOKEN").ok().filter(|t| !t.trim().is_empty());
        let mut read = Self { url: DEFAULT_URL.to_owned(), query: Vec::new(), force: false, token };
        let mut rest = options.iter();
        while let Some(&option) = rest.next() {
            match option {
                "--force" if force => read.force = true,
                "--token" => {
                    let token = rest.next().with_context(|| format!("--token needs a value; usage: {usage}"))?;
                    read.token = Some((*token).to_owned());
                }
                "--url" => {
                    let url = rest.next().with_context(|| format!("--url needs a value; usage: {usage}"))?;
                    read.url = url.trim_end_matches('/').to_owned();
                }
                name if query.contains(&name) => {
                    let value = rest.next().with_context(|| format!("{name} needs a value; usage: {usage}"))?;
                    read.query.push((name.trim_start_matches("--").to_owned(), (*value).to_owned()));
                }
                other => bail!("unknown option `{other}`; usage: {usage}"),
            }
        }
        Ok(read)
    }
}

/// The response body as JSON, or an error naming the status and the problem's detail.
async fn body(what: &str, response: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status();
    let text = response.text().await.with_context(|| format!("{what}: reading the response"))?;
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = json["detail"].as_str().or(json["title"].as_str()).unwrap_or(text.trim());
        bail!("{what}: {status}: {detail}");
    }
    Ok((status.as_u16(), json))
}

/// `url` + `path`, with the query string when there is one.
fn endpoint(url: &str, path: &str, query: &[(String, String)]) -> anyhow::Result<reqwest::Url> {
    let mut endpoint =
        reqwest::Url::parse(&format!("{url}{path}")).with_context(|| format!("--url {url} is not a URL"))?;
    if !query.is_empty() {
        endpoint.query_pairs_mut().extend_pairs(query);
    }
    Ok(endpoint)
}

/// A client that sends the options' token on every request.
pub(crate) fn client(options: &Options) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &options.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .context("the token is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .default_headers(headers)
        .build()
        .context("HTTP client")
}

async fn list(options: &Options) -> anyhow::Result<()> {
    let (url, query) = (&options.url, &options.query);
    let what = format!("GET {url}/admin/dlq");
    let response =
        client(options)?.get(endpoint(url, "/admin/dlq", query)?).send().await.with_context(|| what.clone())?;
    let (_, page) = body(&what, response).await?;
    let items = page["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    println!("{}", table(items));
    if let Some(cursor) = page["next_cursor"].as_str() {
        println!("\nmore: petstore dlq list --url {url} --cursor {cursor} (with the same filters)");
    }
    Ok(())
}

/// The letters as a table, one line each, columns padded to their widest cell.
fn table(items: &[Value]) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let header = ["ID", "CHANNEL", "GROUP", "ATTEMPTS", "DEAD-LETTERED", "REPLAYED", "REPLAYS", "TYPE", "ERROR"];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    for item in items {
        let mut error = text(&item["error"]).replace('\n', " ");
        if error.chars().count() > ERROR_WIDTH {
            error = error.chars().take(ERROR_WIDTH - 1).chain(['…']).collect();
        }
        rows.push(vec![
            text(&item["id"]),
            text(&item["channel"]),
            text(&item["group"]),
            text(&item["attempts"]),
            text(&item["dead_lettered_at"]),
            text(&item["replayed_at"]),
            text(&item["replay_count"]),
            text(&item["message_type"]),
            error,
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let lines = rows.iter().map(|row| {
        let cells = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}"));
        cells.collect::<Vec<_>>().join("  ").trim_end().to_owned()
    });
    lines.collect::<Vec<_>>().join("\n")
}

async fn replay(options: &Options, id: &str) -> anyhow::Result<()> {
    let url = &options.url;
    let what = format!("POST {url}/admin/dlq/{id}/replay");
    let query = if options.force { vec![("force".to_owned(), "true".to_owned())] } else { Vec::new() };
    let endpoint = endpoint(url, &format!("/admin/dlq/{id}/replay"), &query)?;
    let response = client(options)?.post(endpoint).send().await.with_context(|| what.clone())?;
    let (status, replay) = body(&what, response).await?;
    let (at, count) = (replay["replayed_at"].as_str().unwrap_or("?"), &replay["replay_count"]);
    if status == 202 {
        println!("replayed {id} at {at} (replay {count}): back on its channel through the outbox");
    } else {
        println!("{id} was already replayed at {at} (replay {count}); nothing sent again (--force sends it again)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_and_strangers_refused() {
        let options =
            Options::read(&["--channel", "payment-commands", "--url", "http://h:1/"], &["--channel"], false, USAGE)
                .expect("valid");
        let query = vec![("channel".to_owned(), "payment-commands".to_owned())];
        assert_eq!(options, Options { url: "http://h:1".into(), query, force: false, token: options.token.clone() });
        let with_token = Options::read(&["--token", "t0k"], &[], false, USAGE).expect("valid");
        assert_eq!(with_token.token.as_deref(), Some("t0k"));
        assert!(Options::read(&["--force"], &[], true, USAGE).expect("valid").force);
        for bad in [&["--force"][..], &["--url"], &["--channel", "x"]] {
            let err = Options::read(bad, &[], false, USAGE).expect_err("refused");
            assert!(err.to_string().contains("usage"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_table_lines_up_and_cuts_long_errors() {
        let long = "x".repeat(100);
        let items = [
            serde_json::json!({"id": "a", "channel": "payment-commands", "group": "payment", "attempts": 1,
                "dead_lettered_at": "2026-01-01T00:00:00Z", "replayed_at": null, "replay_count": 0,
                "message_type": "t", "error": long}),
            serde_json::json!({"id": "bb", "channel": "c", "group": "g", "attempts": 5,
                "dead_lettered_at": "2026-01-01T00:00:01Z", "replayed_at": "2026-01-01T00:00:02Z",
                "replay_count": 1, "message_type": "t", "error": "e"}),
        ];
        let table = table(&items);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        // The id column is as wide as `bb`: the channel column starts at 4 on every line.
        assert!(lines[0][4..].starts_with("CHANNEL") && lines[1][4..].starts_with("payment-commands"), "{table}");
        assert!(lines[2][4..].starts_with("c "), "{table}");
        assert!(lines[1].ends_with('…') && lines[1].chars().filter(|&c| c == 'x').count() == ERROR_WIDTH - 1);
        assert!(lines[1].contains("  -  "), "a letter not replayed shows `-`: {table}");
    }
}
