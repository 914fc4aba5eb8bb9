//! The command line: what each command takes, checked before anything is sent.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use clap::{ArgGroup, Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::{
    drive::{Pace, Stop},
    mix::Mix,
};

/// The longest `?wait=` the orchestrator accepts on `GET /orders/{id}/status`.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// `petstore-load`: its commands.
#[derive(Debug, Parser)]
#[command(
    name = "petstore-load",
    version,
    about = "Drives a running pet store over HTTP and reports latency and throughput"
)]
pub struct Cli {
    /// What to drive.
    #[command(subcommand)]
    pub command: Command,
}

/// The kinds of load.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Place orders and wait for each saga to end (completed, compensated or failed).
    Saga(SagaArgs),
    /// Read the catalog (or any GET route).
    Catalog(CatalogArgs),
}

/// Options every command takes: where, how fast, how long, where the report goes.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("pace").required(true).args(["rate", "concurrency"])))]
#[command(group(ArgGroup::new("stop").required(true).args(["duration", "count"])))]
pub struct LoadArgs {
    /// The pet store's base URL (the all-in-one binary or the gateway).
    #[arg(long, default_value = "http://localhost:8080", value_parser = parse_url)]
    pub url: String,
    /// Open loop: start this many per second, on schedule whatever the answers.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Closed loop: this many workers, each starting again when its last one ended.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
    /// Stop starting after this long, e.g. `60s` (what has started is still followed to its end).
    #[arg(long, value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many starts.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    /// `--rate` or `--concurrency` (clap requires exactly one).
    pub fn pace(&self) -> anyhow::Result<Pace> {
        match (self.rate, self.concurrency) {
            (Some(rate), None) => Ok(Pace::Rate(rate)),
            (None, Some(workers)) => Ok(Pace::Concurrency(usize::from(workers))),
            _ => anyhow::bail!("give one of --rate and --concurrency"),
        }
    }

    /// `--duration` or `--count` (clap requires exactly one).
    pub fn stop(&self) -> anyhow::Result<Stop> {
        match (self.duration, self.count) {
            (Some(duration), None) => Ok(Stop::After(duration)),
            (None, Some(count)) => Ok(Stop::Count(count)),
            _ => anyhow::bail!("give one of --duration and --count"),
        }
    }

    /// The options as the JSON report records them.
    fn json(&self) -> Value {
        json!({
            "rate": self.rate,
            "concurrency": self.concurrency,
            "duration_s": self.duration.map(|d| d.as_secs_f64()),
            "count": self.count,
        })
    }
}

/// `petstore-load saga`.
#[derive(Debug, Args)]
pub struct SagaArgs {
    /// Where, how fast, how long.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Shares of payment methods, e.g. `credit_card=0.9,declined_card=0.1` (`declined_card`
    /// always compensates; credit_card, debit_card and paypal complete).
    #[arg(long, default_value = "credit_card=0.9,declined_card=0.1")]
    pub mix: Mix,
    /// How many customers place the orders (`load-customer-0` …), in turn.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub customers: u32,
    /// How long one status request may be held by the server (at most 30s).
    #[arg(long, default_value = "30s", value_parser = parse_wait)]
    pub wait: Duration,
    /// An order accepted whose saga has not ended this long after it was placed is lost.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub deadline: Duration,
}

impl SagaArgs {
    /// The options as the JSON report records them.
    pub fn options_json(&self) -> Value {
        let mut options = self.load.json();
        options["mix"] = json!(self.mix.to_string());
        options["customers"] = json!(self.customers);
        options["wait_s"] = json!(self.wait.as_secs_f64());
        options["deadline_s"] = json!(self.deadline.as_secs_f64());
        options
    }
}

/// `petstore-load catalog`.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Where, how fast, how long.
    #[command(flatten)]
    pub load: LoadArgs,
    /// The path (and query) to GET.
    #[arg(long, default_value = "/pets?limit=20", value_parser = parse_path)]
    pub path: String,
    /// Read signed in as this subject (role `customer`) instead of anonymously.
    #[arg(long, value_name = "S")]
    pub token_sub: Option<String>,
}

impl CatalogArgs {
    /// The options as the JSON report records them.
    pub fn options_json(&self) -> Value {
        let mut options = self.load.json();
        options["path"] = json!(self.path);
        options["token_sub"] = json!(self.token_sub);
        options
    }
}

/// Writes `report` to `path` as pretty JSON, when a path is given.
pub fn write_json(path: Option<&Path>, report: &Value) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let text = serde_json::to_string_pretty(report).context("the JSON report")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// An `http(s)://` URL, without a trailing `/`.
fn parse_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// A rate above zero (per second).
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|_| format!("`{text}` is not a number"))?;
    if !rate.is_finite() || rate <= 0.0 {
        return Err("must be above zero".into());
    }
    Ok(rate)
}

/// A duration above zero, e.g. `10s`, `500ms`, `2m`.
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration like 60s: {e}"))?;
    if duration.is_zero() {
        return Err("must be above zero".into());
    }
    Ok(duration)
}

/// A status wait: at least a millisecond, at most what the orchestrator accepts.
fn parse_wait(text: &str) -> Result<Duration, String> {
    let wait = parse_positive_duration(text)?;
    if wait < Duration::from_millis(1) || wait > MAX_WAIT {
        return Err(format!("must be from 1ms to {}s", MAX_WAIT.as_secs()));
    }
    Ok(wait)
}

/// A path starting with `/`.
fn parse_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err("must start with `/`, e.g. /pets?limit=20".into());
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("petstore-load").chain(args.iter().copied()))
    }

    #[test]
    fn pace_and_stop_are_each_required_once() {
        let cli = parse(&["saga", "--rate", "50", "--duration", "10s", "--url", "http://h:1/"]).expect("valid");
        let Command::Saga(saga) = cli.command else { panic!("a saga command") };
        assert_eq!(saga.load.pace().expect("pace"), Pace::Rate(50.0));
        assert_eq!(saga.load.stop().expect("stop"), Stop::After(Duration::from_secs(10)));
        assert_eq!(saga.load.url, "http://h:1");
        assert_eq!(saga.wait, Duration::from_secs(30));
        for bad in [
            &["saga", "--duration", "10s"][..],
            &["saga", "--rate", "5"],
            &["saga", "--rate", "5", "--concurrency", "2", "--count", "1"],
            &["saga", "--rate", "5", "--count", "1", "--duration", "1s"],
            &["saga", "--rate", "0", "--count", "1"],
            &["saga", "--concurrency", "0", "--count", "1"],
            &["saga", "--rate", "5", "--count", "1", "--wait", "31s"],
            &["catalog", "--rate", "5", "--count", "1", "--path", "pets"],
            &["catalog", "--rate", "5", "--count", "1", "--url", "ftp://h"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_options_are_recorded_for_the_json_report() {
        let cli = parse(&["catalog", "--concurrency", "8", "--count", "100", "--token-sub", "bob"]).expect("valid");
        let Command::Catalog(catalog) = cli.command else { panic!("a catalog command") };
        let options = catalog.options_json();
        assert_eq!(options["concurrency"], 8);
        assert_eq!(options["count"], 100);
        assert_eq!(options["rate"], Value::Null);
        assert_eq!(options["path"], "/pets?limit=20");
        assert_eq!(options["token_sub"], "bob");
    }
}
