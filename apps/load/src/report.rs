//! What a run reports: latency percentiles from HdrHistograms, counts and rates, as a text
//! table (stdout) and as JSON with stable keys (`--json`).

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// The longest latency a histogram holds (longer ones are recorded as this): an hour, in µs.
const LONGEST_US: u64 = 3_600_000_000;
/// Significant digits the histograms keep.
const SIGNIFICANT_DIGITS: u8 = 3;
/// The percentiles reported, with their labels and JSON key suffixes.
const QUANTILES: [(&str, &str, f64); 4] =
    [("p50", "p50", 0.50), ("p90", "p90", 0.90), ("p99", "p99", 0.99), ("p99.9", "p999", 0.999)];

/// An empty latency histogram: microseconds, 1 µs to an hour, 3 significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LONGEST_US, SIGNIFICANT_DIGITS).context("a latency histogram")
}

/// Records `latency` in `histogram` (in µs; an hour or more as an hour).
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// p50, p90, p99 and p99.9, in [`QUANTILES`] order.
    pub percentiles: [f64; 4],
    /// The longest.
    pub max: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds; `None` when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1e3;
        Some(Self {
            percentiles: QUANTILES.map(|(_, _, q)| ms(histogram.value_at_quantile(q))),
            max: ms(histogram.max()),
        })
    }

    /// The figures with their table labels, max last.
    fn labelled(&self) -> impl Iterator<Item = (&'static str, &'static str, f64)> + '_ {
        let percentiles = QUANTILES.iter().zip(self.percentiles).map(|((label, key, _), ms)| (*label, *key, ms));
        percentiles.chain([("max", "max", self.max)])
    }

    /// `<prefix>p50_ms` … `<prefix>max_ms` (null when nothing was measured).
    fn insert_json(latency: Option<&Self>, prefix: &str, into: &mut Map<String, Value>) {
        let keys = QUANTILES.iter().map(|(_, key, _)| *key).chain(["max"]);
        for (i, key) in keys.enumerate() {
            let ms = latency.map(|l| l.percentiles.get(i).copied().unwrap_or(l.max));
            into.insert(format!("{prefix}{key}_ms"), json!(ms.map(round_us)));
        }
    }
}

/// Milliseconds rounded to the microsecond (what the histograms resolve).
fn round_us(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e3
}

/// Errors by kind (`POST 409`, `status 503`, `transport`, …), each with its first detail.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Errors {
    kinds: BTreeMap<String, (u64, String)>,
}

impl Errors {
    /// Counts one error of `kind`; `detail` is kept for the first of each kind.
    pub fn add(&mut self, kind: &str, detail: impl FnOnce() -> String) {
        match self.kinds.get_mut(kind) {
            Some((count, _)) => *count += 1,
            None => {
                self.kinds.insert(kind.to_owned(), (1, detail()));
            }
        }
    }

    /// How many errors there were.
    pub fn total(&self) -> u64 {
        self.kinds.values().map(|(count, _)| count).sum()
    }

    /// `{ kind: count }`.
    fn json(&self) -> Value {
        self.kinds.iter().map(|(kind, (count, _))| (kind.clone(), json!(count))).collect::<Map<_, _>>().into()
    }

    /// One line per kind: its count and first detail.
    fn text(&self) -> String {
        if self.kinds.is_empty() {
            return "errors: none\n".into();
        }
        let mut text = format!("errors: {}\n", self.total());
        for (kind, (count, first)) in &self.kinds {
            let _ = writeln!(text, "  {kind:<16} {count:>8}   first: {first}");
        }
        text
    }
}

/// Rows of text in columns: the first left-aligned, the others right-aligned, each as wide
/// as its widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells = row.iter().zip(&widths).enumerate().map(|(c, (cell, width))| match c {
            0 => format!("{cell:<width$}"),
            _ => format!("{cell:>width$}"),
        });
        let _ = writeln!(text, "{}", cells.collect::<Vec<_>>().join("   ").trim_end());
    }
    text
}

/// The latency table: one row per measure, `-` where nothing was measured.
fn latency_table(rows: &[(&str, Option<&Latency>)]) -> String {
    let mut header = vec!["latency (ms)".to_owned()];
    header.extend(QUANTILES.iter().map(|(label, _, _)| (*label).to_owned()).chain(["max".to_owned()]));
    let mut lines = vec![header];
    for (name, latency) in rows {
        let mut line = vec![(*name).to_owned()];
        match latency {
            Some(latency) => line.extend(latency.labelled().map(|(_, _, ms)| format!("{ms:.1}"))),
            None => line.extend(std::iter::repeat_n("-".to_owned(), QUANTILES.len() + 1)),
        }
        lines.push(line);
    }
    table(&lines)
}

/// The rates, two decimals each, after the offered rate when there is one (an open loop).
fn rate_table(offered: (&str, Option<f64>), achieved: &[(&str, f64)]) -> String {
    let offered = offered.1.map(|rate| (offered.0, rate));
    let rows: Vec<Vec<String>> =
        offered.iter().chain(achieved).map(|(name, rate)| vec![(*name).to_owned(), format!("{rate:.2}")]).collect();
    table(&rows)
}

/// `count / elapsed`, 0 for an empty run.
fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

/// A rate as the reports show it: two decimals.
fn rounded(rate: f64) -> f64 {
    (rate * 100.0).round() / 100.0
}

/// How starts were paced, for the report's first line.
fn pace_text(offered_per_s: Option<f64>, options: &Value) -> String {
    match offered_per_s {
        Some(rate) => format!("open loop at {rate}/s"),
        None => format!("closed loop, concurrency {}", options["concurrency"]),
    }
}

/// What `petstore-load saga` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaReport {
    /// The pet store driven.
    pub url: String,
    /// The command's options (see `SagaArgs::options_json`).
    pub options: Value,
    /// From the first start due to the last order's end.
    pub elapsed: Duration,
    /// The open loop's rate; `None` for a closed loop.
    pub offered_per_s: Option<f64>,
    /// Orders accepted (`202`).
    pub placed: u64,
    /// Sagas that ended completed.
    pub completed: u64,
    /// Sagas that ended compensated.
    pub compensated: u64,
    /// Sagas that ended failed.
    pub failed: u64,
    /// Orders accepted whose saga had not ended by the deadline.
    pub lost: u64,
    /// `429`s waited out.
    pub retries_429: u64,
    /// Orders that had to wait for a pet to come back.
    pub pet_waits: u64,
    /// Whether the run stopped early because no pet was left.
    pub pool_dry: bool,
    /// Errors by kind.
    pub errors: Errors,
    /// `POST /orders` (when due) to seeing the saga's end.
    pub post_to_end: Option<Latency>,
    /// The saga's own duration (`ended_at - started_at`).
    pub saga: Option<Latency>,
}

impl SagaReport {
    /// Sagas that ended, whichever way.
    fn terminal(&self) -> u64 {
        self.completed + self.compensated + self.failed
    }

    /// Whether the run passed: nothing lost, no error, pets enough.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.errors.total() == 0 && !self.pool_dry
    }

    /// The report as text.
    pub fn text(&self) -> String {
        let mut text = format!(
            "petstore-load saga: {}, {}, mix {}\nelapsed {:.2} s, placed {}\n\n",
            self.url,
            pace_text(self.offered_per_s, &self.options),
            self.options["mix"].as_str().unwrap_or("?"),
            self.elapsed.as_secs_f64(),
            self.placed,
        );
        let outcomes = [
            ("completed", self.completed),
            ("compensated", self.compensated),
            ("failed", self.failed),
            ("lost", self.lost),
        ];
        let mut rows = vec![vec!["outcome".to_owned(), "sagas".to_owned()]];
        rows.extend(outcomes.iter().map(|(name, count)| vec![(*name).to_owned(), count.to_string()]));
        text.push_str(&table(&rows));
        text.push('\n');
        text.push_str(&latency_table(&[("POST → end", self.post_to_end.as_ref()), ("saga", self.saga.as_ref())]));
        text.push('\n');
        let rates = [
            ("completed sagas/s", per_second(self.completed, self.elapsed)),
            ("terminal sagas/s", per_second(self.terminal(), self.elapsed)),
        ];
        text.push_str(&rate_table(("offered orders/s", self.offered_per_s), &rates));
        text.push('\n');
        text.push_str(&self.errors.text());
        let _ = writeln!(text, "429s waited out: {}", self.retries_429);
        if self.pet_waits > 0 {
            let _ = writeln!(text, "orders that waited for a pet to come back: {}", self.pet_waits);
        }
        if self.pool_dry {
            text.push_str("stopped early: no available pet left (petstore seed-pets --count N lists more)\n");
        }
        text.trim_end().to_owned()
    }

    /// The report as JSON, with stable keys.
    pub fn json(&self) -> Value {
        let mut json = Map::new();
        json.insert("mode".into(), json!("saga"));
        json.insert("url".into(), json!(self.url));
        json.insert("elapsed_s".into(), json!(round_us(self.elapsed.as_secs_f64())));
        json.insert("offered_per_s".into(), json!(self.offered_per_s));
        for (key, count) in [
            ("placed", self.placed),
            ("completed", self.completed),
            ("compensated", self.compensated),
            ("failed", self.failed),
            ("lost", self.lost),
            ("retries_429", self.retries_429),
            ("pet_waits", self.pet_waits),
        ] {
            json.insert(key.into(), json!(count));
        }
        json.insert("pool_dry".into(), json!(self.pool_dry));
        json.insert("errors".into(), self.errors.json());
        json.insert("completed_per_s".into(), json!(rounded(per_second(self.completed, self.elapsed))));
        json.insert("terminal_per_s".into(), json!(rounded(per_second(self.terminal(), self.elapsed))));
        Latency::insert_json(self.post_to_end.as_ref(), "", &mut json);
        Latency::insert_json(self.saga.as_ref(), "saga_", &mut json);
        json.insert("options".into(), self.options.clone());
        json.into()
    }
}

/// What `petstore-load catalog` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogReport {
    /// The pet store driven.
    pub url: String,
    /// The command's options (see `CatalogArgs::options_json`).
    pub options: Value,
    /// From the first start due to the last answer.
    pub elapsed: Duration,
    /// The open loop's rate; `None` for a closed loop.
    pub offered_per_s: Option<f64>,
    /// Final answers by status (after waiting out `429`s).
    pub statuses: BTreeMap<u16, u64>,
    /// `429`s waited out.
    pub retries_429: u64,
    /// Errors by kind.
    pub errors: Errors,
    /// Request (when due) to the whole answer read, of the successful ones.
    pub latency: Option<Latency>,
}

impl CatalogReport {
    /// Requests answered, with any status.
    fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Requests answered with a 2xx.
    fn ok(&self) -> u64 {
        self.statuses.iter().filter(|(status, _)| (200..300).contains(*status)).map(|(_, n)| n).sum()
    }

    /// Whether the run passed: no error.
    pub fn passed(&self) -> bool {
        self.errors.total() == 0
    }

    /// The report as text.
    pub fn text(&self) -> String {
        let mut text = format!(
            "petstore-load catalog: GET {}{}, {}\nelapsed {:.2} s, answered {}\n\n",
            self.url,
            self.options["path"].as_str().unwrap_or(""),
            pace_text(self.offered_per_s, &self.options),
            self.elapsed.as_secs_f64(),
            self.answered(),
        );
        let mut rows = vec![vec!["status".to_owned(), "answers".to_owned()]];
        rows.extend(self.statuses.iter().map(|(status, count)| vec![status.to_string(), count.to_string()]));
        text.push_str(&table(&rows));
        text.push('\n');
        text.push_str(&latency_table(&[("GET (2xx)", self.latency.as_ref())]));
        text.push('\n');
        let rates = [
            ("answered requests/s", per_second(self.answered(), self.elapsed)),
            ("2xx requests/s", per_second(self.ok(), self.elapsed)),
        ];
        text.push_str(&rate_table(("offered requests/s", self.offered_per_s), &rates));
        text.push('\n');
        text.push_str(&self.errors.text());
        let _ = write!(text, "429s waited out: {}", self.retries_429);
        text
    }

    /// The report as JSON, with stable keys.
    pub fn json(&self) -> Value {
        let mut json = Map::new();
        json.insert("mode".into(), json!("catalog"));
        json.insert("url".into(), json!(self.url));
        json.insert("elapsed_s".into(), json!(round_us(self.elapsed.as_secs_f64())));
        json.insert("offered_per_s".into(), json!(self.offered_per_s));
        json.insert("requests".into(), json!(self.answered()));
        json.insert("ok".into(), json!(self.ok()));
        json.insert("requests_per_s".into(), json!(rounded(per_second(self.answered(), self.elapsed))));
        json.insert("ok_per_s".into(), json!(rounded(per_second(self.ok(), self.elapsed))));
        let statuses: Map<String, Value> = self.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect();
        json.insert("statuses".into(), statuses.into());
        json.insert("retries_429".into(), json!(self.retries_429));
        json.insert("errors".into(), self.errors.json());
        Latency::insert_json(self.latency.as_ref(), "", &mut json);
        json.insert("options".into(), self.options.clone());
        json.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 ms, 2 ms, … 1000 ms.
    fn one_to_a_thousand_ms() -> Histogram<u64> {
        let mut h = histogram().expect("histogram");
        for ms in 1..=1000 {
            record(&mut h, Duration::from_millis(ms));
        }
        h
    }

    fn close(got: f64, expected: f64) -> bool {
        // 3 significant digits: within 0.1 %.
        (got - expected).abs() <= expected * 1e-3
    }

    #[test]
    fn percentiles_come_from_the_histogram_in_milliseconds() {
        let latency = Latency::of(&one_to_a_thousand_ms()).expect("measured");
        for (got, expected) in latency.percentiles.iter().zip([500.0, 900.0, 990.0, 999.0]) {
            assert!(close(*got, expected), "{got} for {expected}: {latency:?}");
        }
        assert!(close(latency.max, 1000.0), "{latency:?}");
        assert_eq!(Latency::of(&histogram().expect("histogram")), None);
    }

    #[test]
    fn a_latency_past_the_histogram_is_recorded_as_its_longest() {
        let mut h = histogram().expect("histogram");
        record(&mut h, Duration::from_secs(10 * 3600));
        let latency = Latency::of(&h).expect("measured");
        assert!(close(latency.max, 3_600_000.0), "{latency:?}");
    }

    fn saga_report() -> SagaReport {
        let mut errors = Errors::default();
        errors.add("POST 409", || "pet `a` is already sold".into());
        errors.add("POST 409", || unreachable!("only the first detail is kept"));
        errors.add("transport", || "connection refused".into());
        SagaReport {
            url: "http://localhost:8080".into(),
            options: json!({"rate": 50.0, "concurrency": null, "mix": "credit_card=1"}),
            elapsed: Duration::from_secs(10),
            offered_per_s: Some(50.0),
            placed: 500,
            completed: 480,
            compensated: 15,
            failed: 1,
            lost: 4,
            retries_429: 2,
            pet_waits: 0,
            pool_dry: false,
            errors,
            post_to_end: Latency::of(&one_to_a_thousand_ms()),
            saga: None,
        }
    }

    #[test]
    fn the_saga_json_has_its_stable_keys_and_figures() {
        let json = saga_report().json();
        for key in [
            "mode",
            "url",
            "elapsed_s",
            "placed",
            "completed",
            "compensated",
            "failed",
            "lost",
            "errors",
            "completed_per_s",
            "terminal_per_s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
            "saga_p50_ms",
            "saga_p99_ms",
            "saga_max_ms",
            "options",
        ] {
            assert!(json.get(key).is_some(), "no `{key}` in {json}");
        }
        assert_eq!(json["mode"], "saga");
        assert_eq!(json["completed_per_s"], 48.0);
        assert_eq!(json["terminal_per_s"], 49.6);
        assert_eq!(json["errors"], json!({"POST 409": 2, "transport": 1}));
        assert!(close(json["p99_ms"].as_f64().expect("a number"), 990.0), "{json}");
        assert_eq!(json["saga_p50_ms"], Value::Null, "nothing measured is null, not 0");
        assert_eq!(json["options"]["mix"], "credit_card=1");
    }

    #[test]
    fn the_saga_text_shows_the_table_errors_and_verdict() {
        let report = saga_report();
        let text = report.text();
        assert!(text.contains("open loop at 50/s, mix credit_card=1"), "{text}");
        let latency = text.lines().find(|l| l.starts_with("POST → end")).expect("a latency row");
        let cells: Vec<&str> = latency.split_whitespace().skip(3).collect();
        assert_eq!(cells.len(), 5, "p50 p90 p99 p99.9 max: {latency}");
        assert!(cells[0].starts_with("50") && cells[4].starts_with("100"), "{latency}");
        let saga = text.lines().find(|l| l.starts_with("saga ")).expect("a saga row");
        assert_eq!(saga.split_whitespace().filter(|c| *c == "-").count(), 5, "{saga}");
        assert!(text.contains("POST 409") && text.contains("first: pet `a` is already sold"), "{text}");
        assert!(text.contains("completed sagas/s   48.00"), "{text}");
        assert!(!report.passed(), "lost orders and errors fail the run");
        let clean = SagaReport { lost: 0, errors: Errors::default(), ..report };
        assert!(clean.passed());
        assert!(!SagaReport { pool_dry: true, ..clean }.passed());
    }

    #[test]
    fn the_table_lines_up_its_columns() {
        let text = table(&[vec!["a".into(), "1".into()], vec!["longer".into(), "1000".into()]]);
        assert_eq!(text, "a           1\nlonger   1000\n");
    }

    #[test]
    fn the_catalog_report_counts_statuses_and_rates() {
        let mut errors = Errors::default();
        errors.add("status 503", || "the catalog is unavailable".into());
        let report = CatalogReport {
            url: "http://localhost:8080".into(),
            options: json!({"concurrency": 8, "path": "/pets?limit=20"}),
            elapsed: Duration::from_secs(4),
            offered_per_s: None,
            statuses: BTreeMap::from([(200, 399), (503, 1)]),
            retries_429: 0,
            errors,
            latency: Latency::of(&one_to_a_thousand_ms()),
        };
        let json = report.json();
        assert_eq!(json["requests"], 400);
        assert_eq!(json["ok"], 399);
        assert_eq!(json["requests_per_s"], 100.0);
        assert_eq!(json["statuses"], json!({"200": 399, "503": 1}));
        assert_eq!(json["offered_per_s"], Value::Null);
        let text = report.text();
        assert!(text.contains("GET http://localhost:8080/pets?limit=20, closed loop, concurrency 8"), "{text}");
        assert!(!text.contains("offered") && text.contains("answered requests/s   100.00"), "{text}");
        assert!(!report.passed());
    }
}
