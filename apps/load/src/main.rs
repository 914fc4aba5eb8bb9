//! `petstore-load`: drives a running pet store over HTTP and reports what it can sustain.
//!
//! ```text
//! petstore-load saga    [--url URL] (--rate R | --concurrency C) (--duration 60s | --count N)
//!                       [--mix credit_card=0.9,declined_card=0.1] [--customers 1000]
//!                       [--wait 30s] [--deadline 60s] [--json FILE] [--quiet]
//! petstore-load catalog [--url URL] (--rate R | --concurrency C) (--duration 60s | --count N)
//!                       [--path '/pets?limit=20'] [--token-sub S] [--json FILE] [--quiet]
//! ```
//!
//! `saga` places orders (`POST /orders`, each for a distinct available pet, as one of
//! `--customers` customers) and learns how each saga ended from the orchestrator's long poll
//! (`GET /orders/{id}/status?wait=…`), never by polling. `catalog` reads `GET --path`.
//!
//! - `--rate R` is an open loop: start `n` is due `n / R` seconds after the first, whatever
//!   happened to the earlier ones, and latency is measured from when it was due, so a stalled
//!   server shows up in the percentiles instead of slowing the load down (no coordinated
//!   omission). `--concurrency C` is a closed loop: C workers, each starting the next request
//!   when its last one has ended.
//! - The report (stdout) has p50/p90/p99/p99.9/max latencies (HdrHistogram, microseconds, 3
//!   significant digits), outcome and error counts and throughput; `--json FILE` writes the
//!   same figures with stable keys. A progress bar on stderr shows the run (`--quiet` hides it).
//! - Exit status: 0 when every order ended (or every read succeeded); 1 when an order was
//!   lost, an error occurred or the pets ran out; 2 when the run could not be made (bad
//!   options, no pet store at `--url`).
//!
//! Tokens are signed with the configuration this command loads, as `petstore token` does
//! (`PETSTORE_ENV`, `PETSTORE_CONFIG`, `PETSTORE__…`): point it at the same configuration as
//! the pet store it drives. The pet store's request quotas apply to the load too (per
//! customer for orders, per client address for anonymous catalog reads): a `429` is waited
//! out as its `Retry-After` says and counted, its wait included in the latency.

mod catalog;
mod cli;
mod client;
mod drive;
mod mix;
mod pets;
mod progress;
mod report;
mod saga;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("petstore-load: starting the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("petstore-load: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the chosen command: prints its report, writes `--json`, and says whether the run
/// passed (nothing lost, no error).
async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Saga(args) => {
            let report = saga::run(&args).await?;
            println!("{}", report.text());
            cli::write_json(args.load.json.as_deref(), &report.json())?;
            Ok(report.passed())
        }
        Command::Catalog(args) => {
            let report = catalog::run(&args).await?;
            println!("{}", report.text());
            cli::write_json(args.load.json.as_deref(), &report.json())?;
            Ok(report.passed())
        }
    }
}
