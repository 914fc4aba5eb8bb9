//! `petstore-load catalog`: GET requests to one path (by default a page of `GET /pets`),
//! anonymous or signed in, each read to its last byte.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use reqwest::{
    StatusCode,
    header::{AUTHORIZATION, HeaderValue},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    cli::CatalogArgs,
    client,
    drive::{self, Pace, Span},
    progress::{Live, Progress},
    report::{self, CatalogReport, Errors, Latency},
};

/// How long one request may spend waiting out `429`s before the `429` counts as its answer.
const LONGEST_429_WAIT: Duration = Duration::from_secs(60);

/// Counters the progress bar reads while the run goes on.
#[derive(Debug, Default)]
struct Counters {
    ended: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    retries_429: AtomicU64,
}

/// What is recorded per request, under one lock.
struct Recorded {
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: Errors,
}

/// One catalog run.
struct Run {
    http: reqwest::Client,
    /// The URL requested.
    target: String,
    auth: Option<HeaderValue>,
    span: Span,
    counters: Counters,
    recorded: Mutex<Recorded>,
}

/// Runs `petstore-load catalog`: the report of what was done.
pub async fn run(args: &CatalogArgs) -> anyhow::Result<CatalogReport> {
    let (pace, stop) = (args.load.pace()?, args.load.stop()?);
    let auth = match &args.token_sub {
        Some(subject) => Some(client::bearer(&client::settings()?, subject, "customer")?),
        None => None,
    };
    let http = client::build(client::connections_for(pace))?;
    let target = format!("{}{}", args.load.url, args.path);
    // One request before the clock starts: a pet store that is not there fails the command
    // at once, rather than as a run of transport errors.
    let what = format!("GET {target}");
    client::send_waiting_out_429(&what, || match &auth {
        Some(auth) => http.get(&target).header(AUTHORIZATION, auth.clone()),
        None => http.get(&target),
    })
    .await?;
    let recorded = Recorded { latency: report::histogram()?, statuses: BTreeMap::new(), errors: Errors::default() };
    let run = Arc::new(Run {
        http,
        target,
        auth,
        span: Span::new(Instant::now()),
        counters: Counters::default(),
        recorded: Mutex::new(recorded),
    });
    let cancel = CancellationToken::new();
    let ctrl_c = drive::cancel_on_ctrl_c(cancel.clone());
    let progress = Progress::start(stop, args.load.quiet, run.span.start(), run.clone());
    let request = {
        let run = run.clone();
        move |_: u64, due: Instant| run.clone().get(due)
    };
    let driven = drive::run(pace, stop, run.span.start(), &cancel, request).await;
    progress.finish();
    ctrl_c.abort();
    driven?;
    Ok(run.report(args, pace))
}

/// How one request ended.
enum Answer {
    /// A status, with the problem's detail when it is not a success.
    Status(StatusCode, String),
    /// No (whole) answer.
    Transport(String),
}

impl Run {
    /// One GET, due at `due`: sent (again after each `429`), read, recorded.
    async fn get(self: Arc<Self>, due: Instant) {
        let answer = self.answer().await;
        self.span.mark_end();
        let c = &self.counters;
        c.ended.fetch_add(1, Ordering::Relaxed);
        let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        match answer {
            Answer::Status(status, detail) => {
                *recorded.statuses.entry(status.as_u16()).or_default() += 1;
                if status.is_success() {
                    c.ok.fetch_add(1, Ordering::Relaxed);
                    report::record(&mut recorded.latency, due.elapsed());
                } else {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    recorded.errors.add(&format!("status {}", status.as_u16()), || detail);
                }
            }
            Answer::Transport(detail) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                recorded.errors.add("transport", || detail);
            }
        }
    }

    /// Sends the request until it is answered with something other than a `429` (or has
    /// waited [`LONGEST_429_WAIT`]), and reads the answer.
    async fn answer(&self) -> Answer {
        let first = Instant::now();
        loop {
            let mut request = self.http.get(&self.target).timeout(client::REQUEST_TIMEOUT);
            if let Some(auth) = &self.auth {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            let mut response = match request.send().await {
                Ok(response) => response,
                Err(e) => return Answer::Transport(format!("{:#}", anyhow::Error::from(e))),
            };
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = client::retry_after(response.headers());
                if first.elapsed() + wait <= LONGEST_429_WAIT {
                    self.counters.retries_429.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            if !status.is_success() {
                return Answer::Status(status, client::problem(response).await);
            }
            // Read to the end without keeping it: the latency includes the whole body.
            loop {
                match response.chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Answer::Status(status, String::new()),
                    Err(e) => return Answer::Transport(format!("reading the body: {:#}", anyhow::Error::from(e))),
                }
            }
        }
    }

    /// The report of the run so far.
    fn report(&self, args: &CatalogArgs, pace: Pace) -> CatalogReport {
        let recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        CatalogReport {
            url: args.load.url.clone(),
            options: args.options_json(),
            elapsed: self.span.elapsed(),
            offered_per_s: match pace {
                Pace::Rate(rate) => Some(rate),
                Pace::Concurrency(_) => None,
            },
            statuses: recorded.statuses.clone(),
            retries_429: self.counters.retries_429.load(Ordering::Relaxed),
            errors: recorded.errors.clone(),
            latency: Latency::of(&recorded.latency),
        }
    }
}

impl Live for Run {
    fn ended(&self) -> u64 {
        self.counters.ended.load(Ordering::Relaxed)
    }

    fn line(&self, elapsed: Duration) -> String {
        let c = &self.counters;
        let ok = c.ok.load(Ordering::Relaxed);
        format!(
            "ok {ok} errors {} 429s waited {} | {:.1} ok/s",
            c.errors.load(Ordering::Relaxed),
            c.retries_429.load(Ordering::Relaxed),
            ok as f64 / elapsed.as_secs_f64().max(1e-3),
        )
    }
}
