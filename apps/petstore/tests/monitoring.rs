//! The monitoring in `monitoring/` against the services it watches: every metric a Grafana
//! dashboard or a Prometheus rule queries is one the services export (checked on a running
//! cluster after a completed and a compensated saga and two refused callers), the dashboards
//! are well-formed Grafana JSON, every alert says how bad and what happened, and promtool
//! accepts the configuration, the rules and the alerts' unit tests.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Cluster, SERVICES};

/// Every metric the services export, histograms by their base name. A dashboard or rule may
/// query only these, recording rules, and [`BUILT_IN`].
const CATALOGUE: &[&str] = &[
    // HTTP (kit)
    "petstore_http_requests_total",
    "petstore_http_request_duration_seconds",
    // orders
    "petstore_orders_created_total",
    // saga (orchestrator)
    "petstore_sagas_started_total",
    "petstore_sagas_ended_total",
    "petstore_saga_duration_seconds",
    "petstore_saga_step_duration_seconds",
    "petstore_saga_timeouts_total",
    // dead letters (orchestrator, 0 per channel from the start)
    "petstore_dead_letters",
    "petstore_dead_letter_oldest_age_seconds",
    // bus (messaging)
    "petstore_messages_published_total",
    "petstore_messages_consumed_total",
    "petstore_message_handler_duration_seconds",
    "petstore_messages_retried_total",
    "petstore_messages_dead_lettered_total",
    "petstore_messages_deduplicated_total",
    "petstore_messages_malformed_total",
    "petstore_requests_expired_total",
    "petstore_requests_fallback_total",
    "petstore_consumer_lag_messages",
    "petstore_dlq_depth_messages",
    // outbox (persistence)
    "petstore_outbox_backlog_messages",
    "petstore_outbox_relayed_total",
    "petstore_outbox_relay_latency_seconds",
    // circuit breakers (kit; inventory's catalog_cache, order's inventory_queries, payment's
    // payment_provider)
    "petstore_circuit_breaker_state",
    "petstore_circuit_breaker_transitions_total",
    "petstore_circuit_breaker_rejections_total",
    // idempotency (order)
    "petstore_idempotent_replays_total",
    // payment provider (payment)
    "petstore_payment_provider_calls_total",
    // reservations (inventory)
    "petstore_reservations_expired_total",
    // catalog cache (inventory)
    "petstore_cache_requests_total",
    "petstore_cache_errors_total",
    "petstore_cache_up",
    // authentication and rate limits (kit): refusals by reason (`missing_role` is the 403 of a
    // valid token without the route's role, `issuer_unavailable` a 503, every other reason a
    // 401), 429s by route template, and the fetches of an OIDC issuer's keys by outcome
    "petstore_auth_rejections_total",
    "petstore_rate_limited_total",
    "petstore_jwks_fetches_total",
    // configuration live reload (kit): changed configuration files refused
    "petstore_config_reload_failures_total",
    // feature flags (kit): evaluations by flag and variant, refused flag files or overrides,
    // admin changes not announced, and failures injected by fault_handler_failure_rate
    "petstore_flag_evaluations_total",
    "petstore_flag_reload_failures_total",
    "petstore_flag_announcements_failed_total",
    "petstore_faults_injected_total",
];

/// Metrics a healthy run does not export: each appears on its first increment, that is when
/// something goes wrong (or, for the JWKS fetches, only with an OIDC issuer, which the test
/// cluster does not use), so the cluster test cannot expect to have seen them.
const ABSENT_WHEN_HEALTHY: &[&str] = &[
    "petstore_messages_dead_lettered_total",      // a handler gave up on a message
    "petstore_messages_retried_total",            // a handler failed and is tried again
    "petstore_messages_deduplicated_total",       // a message was delivered twice
    "petstore_messages_malformed_total",          // a backend received something that is not an envelope
    "petstore_requests_expired_total",            // a reply came after its caller gave up
    "petstore_requests_fallback_total",           // a request's backend failed; it took the fallback
    "petstore_cache_errors_total",                // a Redis operation failed
    "petstore_saga_timeouts_total",               // a participant did not reply in time
    "petstore_circuit_breaker_transitions_total", // a breaker opened
    "petstore_circuit_breaker_rejections_total",  // an open breaker refused a call
    "petstore_idempotent_replays_total",          // a client repeated an Idempotency-Key
    "petstore_reservations_expired_total",        // a saga held a pet past its reservation's TTL
    "petstore_rate_limited_total",                // a caller went over its route's quota (429)
    "petstore_jwks_fetches_total",                // keys fetched from an OIDC issuer (the cluster signs HS256)
    "petstore_config_reload_failures_total",      // a changed configuration file was invalid
    "petstore_flag_reload_failures_total",        // a flag file edit or stored override was refused
    "petstore_flag_announcements_failed_total",   // an admin flag change could not be announced
    "petstore_faults_injected_total",             // a fault drill failed a handler on purpose
];

/// Series Prometheus makes itself rather than scrapes.
const BUILT_IN: &[&str] = &["up"];

/// The data sources provisioned in `monitoring/grafana/provisioning/datasources`.
const DATASOURCE_UIDS: &[&str] = &["prometheus", "jaeger"];

/// The units a panel may display: seconds, rates, ratios and plain counts.
const UNITS: &[&str] = &["s", "reqps", "mps", "ops", "percentunit", "short"];

/// PromQL words that are not metric names: aggregations, operators and literals.
const PROMQL_WORDS: &str = "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk \
    limit_ratio by without on ignoring group_left group_right and or unless bool offset atan2 inf nan";

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The `monitoring/` folder of the repository.
fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../monitoring")
}

/// The files of `dir` whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *{suffix} in {}", dir.display());
    found
}

/// A path relative to the repository root, for messages.
fn shown(path: &Path) -> String {
    let root = monitoring().join("..");
    let (path, root) = (path.canonicalize().unwrap_or(path.to_owned()), root.canonicalize().unwrap_or(root));
    path.strip_prefix(&root).unwrap_or(&path).display().to_string()
}

/// A file's text.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every Grafana dashboard, parsed.
fn dashboards() -> Vec<(PathBuf, Value)> {
    let parse =
        |path: &Path| serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not JSON: {e}", shown(path)));
    let files = files(&monitoring().join("grafana/dashboards"), ".json");
    files.into_iter().map(|path| (path.clone(), parse(&path))).collect()
}

/// A YAML file, parsed into a JSON value.
fn yaml(path: &Path) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not YAML: {e}", shown(path)))
}

/// Every Prometheus rule file, parsed.
fn rule_files() -> Vec<(PathBuf, Value)> {
    let files = files(&monitoring().join("rules"), ".yml");
    files.into_iter().map(|path| (path.clone(), yaml(&path))).collect()
}

/// The rules of a parsed rule file.
fn rules(file: &Value) -> impl Iterator<Item = &Value> {
    let groups = file["groups"].as_array().map(Vec::as_slice).unwrap_or_default();
    groups.iter().flat_map(|g| g["rules"].as_array().map(Vec::as_slice).unwrap_or_default())
}

/// The names of the recording rules, which dashboards and alerts may query like metrics.
fn recording_rules() -> BTreeSet<String> {
    let files = rule_files();
    files.iter().flat_map(|(_, f)| rules(f).filter_map(|r| r["record"].as_str().map(str::to_owned))).collect()
}

/// Every PromQL query in `value`: `expr` fields at any depth, and the metric of a Grafana
/// `label_values(metric, label)` variable.
fn queries(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => found.push(expr.clone()),
                    ("definition", Value::String(def)) => {
                        if let Some(args) = def.strip_prefix("label_values(").and_then(|a| a.strip_suffix(')')) {
                            found.push(args.rsplit_once(',').map_or(args, |(metric, _)| metric).to_owned());
                        }
                    }
                    _ => queries(v, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, found)),
        _ => {}
    }
}

/// The index just past the bracket that closes the one at `start`, skipping quoted strings.
fn skip_group(chars: &[char], start: usize, close: char) -> usize {
    let open = chars[start];
    let (mut depth, mut i) = (0usize, start);
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i) - 1,
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

/// The index just past the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The metric names a PromQL expression selects: the identifiers outside strings, label
/// matchers, ranges and grouping lists that are neither functions nor PromQL words.
fn selected_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '}');
        } else if c == '[' {
            i = skip_group(&chars, i, ']');
        } else if c == '#' {
            i = chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |n| i + n);
        } else if c.is_ascii_digit() || c == '.' || c == '$' {
            // A number, a duration or a Grafana variable: not a name.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.')) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':')) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().position(|c| !c.is_whitespace()).map(|n| i + n);
            let opens = next.is_some_and(|n| chars[n] == '(');
            if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                if let Some(n) = next.filter(|_| opens) {
                    i = skip_group(&chars, n, ')');
                }
            } else if !opens && !PROMQL_WORDS.split_whitespace().any(|w| w.eq_ignore_ascii_case(&word)) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// A histogram's series name reduced to the histogram's name.
fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

/// The metrics each dashboard and rule file queries (histograms by their base name), by file,
/// without recording rules and built-in series. Fails on a name that is none of these nor a
/// `petstore_` metric, so a typo cannot pass as "some other metric".
fn queried_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let recorded = recording_rules();
    let mut by_file = BTreeMap::new();
    let mut unknown = Vec::new();
    for (path, json) in dashboards().into_iter().chain(rule_files()) {
        let mut exprs = Vec::new();
        queries(&json, &mut exprs);
        assert!(!exprs.is_empty(), "{} queries nothing", shown(&path));
        let mut metrics = BTreeSet::new();
        for name in exprs.iter().flat_map(|e| selected_names(e)) {
            if recorded.contains(&name) || BUILT_IN.contains(&name.as_str()) {
                continue;
            }
            if name.starts_with("petstore_") {
                metrics.insert(base_name(&name).to_owned());
            } else {
                unknown.push(format!("{}: {name}", shown(&path)));
            }
        }
        by_file.insert(shown(&path), metrics);
    }
    assert!(unknown.is_empty(), "names that are no metric, recording rule or built-in series:\n{}", unknown.join("\n"));
    by_file
}

/// The metric names in a Prometheus text exposition, histograms by their base name.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| match line.strip_prefix("# TYPE ") {
            Some(declared) => declared.split_whitespace().next(),
            None if line.starts_with('#') || line.trim().is_empty() => None,
            None => line.split(['{', ' ']).next(),
        })
        .map(|name| base_name(name).to_owned())
        .collect()
}

/// `names` by file, one line per file, for failure messages.
fn by_file_report(missing: &BTreeMap<String, BTreeSet<String>>) -> String {
    let lines = missing
        .iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(file, names)| format!("  {file}: {}", names.iter().map(String::as_str).collect::<Vec<_>>().join(", ")));
    lines.collect::<Vec<_>>().join("\n")
}

/// Runs promtool from the repository root; fails with its output unless it succeeds.
fn promtool(args: &[String]) -> String {
    let output =
        Command::new("promtool").args(args).current_dir(monitoring().join("..")).output().unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): dev/infra.sh installs it (Debian package `prometheus`)")
        });
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {} failed:\n{text}", args.join(" "));
    text
}

#[test]
fn names_are_read_from_promql_where_metrics_stand() {
    let cases: &[(&str, &[&str])] = &[
        ("up{job=~\"order|payment\"} == 0", &["up"]),
        ("sum by (job, le) (rate(petstore_a_bucket{route!~\"/metrics\"}[$__rate_interval]))", &["petstore_a_bucket"]),
        ("histogram_quantile(0.95, sum by (step, action, le) (rate(petstore_b_bucket[5m])))", &["petstore_b_bucket"]),
        (
            "sum by (outcome) (increase(a_total[10m])) / on () group_left sum(increase(b_total[10m]))",
            &["a_total", "b_total"],
        ),
        ("clamp_min((sum(a) or vector(0)) - (sum(b) or vector(0)), 0)", &["a", "b"]),
        (
            "job:x:ratio_rate1h > (14.4 * 0.005)\nand\njob:x:ratio_rate5m > 1e-3",
            &["job:x:ratio_rate1h", "job:x:ratio_rate5m"],
        ),
        ("deriv(lag[10m]) > 0 and lag > 100 # a comment naming no_metric", &["lag"]),
        ("max by (channel) (depth{channel=~\"$channel\", x=\"a}b\"}) offset 5m", &["depth"]),
        ("sum(rate(c[$__range])) / count without (instance) (d)", &["c", "d"]),
    ];
    for (expr, expected) in cases {
        let names = selected_names(expr);
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(names, expected, "{expr}");
    }
}

#[test]
fn dashboards_are_grafana_json_with_unique_panel_ids_known_datasources_and_units() {
    let mut uids = BTreeSet::new();
    for (path, dashboard) in dashboards() {
        let file = shown(&path);
        let uid = dashboard["uid"].as_str().unwrap_or_else(|| panic!("{file}: no uid"));
        assert!(uids.insert(uid.to_owned()), "{file}: uid {uid} is another dashboard's too");
        assert!(dashboard["title"].is_string() && dashboard["schemaVersion"].is_u64(), "{file}: title, schemaVersion");
        // Panels, and the panels of collapsed rows.
        let mut panels: Vec<&Value> = Vec::new();
        let mut stack: Vec<&Value> = dashboard["panels"].as_array().into_iter().flatten().collect();
        while let Some(panel) = stack.pop() {
            stack.extend(panel["panels"].as_array().into_iter().flatten());
            panels.push(panel);
        }
        assert!(!panels.is_empty(), "{file}: no panels");
        let mut ids = BTreeSet::new();
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            let id = panel["id"].as_u64().unwrap_or_else(|| panic!("{file}: panel {title:?} has no numeric id"));
            assert!(ids.insert(id), "{file}: panel id {id} ({title:?}) is used twice");
            if panel["type"] == "row" {
                continue;
            }
            let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
            assert!(!targets.is_empty(), "{file}: panel {title:?} has no query");
            for source in std::iter::once(&panel["datasource"]).chain(targets.iter().map(|t| &t["datasource"])) {
                let uid = source["uid"].as_str().unwrap_or_default();
                assert!(DATASOURCE_UIDS.contains(&uid), "{file}: panel {title:?} uses data source {source}");
            }
            let unit = panel["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or_default();
            assert!(UNITS.contains(&unit), "{file}: panel {title:?} has unit {unit:?}, not one of {UNITS:?}");
        }
        for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
            let uid = variable["datasource"]["uid"].as_str().unwrap_or_default();
            assert!(DATASOURCE_UIDS.contains(&uid), "{file}: variable {} uses data source {uid:?}", variable["name"]);
        }
    }
}

#[test]
fn grafana_provisions_the_data_sources_the_dashboards_use() {
    let provisioned = yaml(&monitoring().join("grafana/provisioning/datasources/datasources.yml"));
    let uids: BTreeSet<&str> =
        provisioned["datasources"].as_array().into_iter().flatten().filter_map(|d| d["uid"].as_str()).collect();
    assert_eq!(uids, DATASOURCE_UIDS.iter().copied().collect(), "{provisioned}");
}

#[test]
fn prometheus_scrapes_every_service_under_its_own_name() {
    let config = yaml(&monitoring().join("prometheus.yml"));
    let jobs: BTreeMap<&str, Vec<&str>> = config["scrape_configs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|job| {
            let targets = job["static_configs"].as_array().into_iter().flatten();
            let targets = targets.flat_map(|c| c["targets"].as_array().into_iter().flatten()).filter_map(Value::as_str);
            (job["job_name"].as_str().unwrap_or_default(), targets.collect())
        })
        .collect();
    assert_eq!(jobs.keys().copied().collect::<BTreeSet<_>>(), SERVICES.into_iter().collect(), "{config}");
    for (job, targets) in jobs {
        assert!(
            !targets.is_empty() && targets.iter().all(|t| t.starts_with(&format!("{job}:"))),
            "job {job} scrapes {targets:?}, not the compose service {job}"
        );
    }
}

#[test]
fn every_alert_says_how_severe_it_is_and_what_happened() {
    for (path, file) in rule_files() {
        for alert in rules(&file).filter(|r| r["alert"].is_string()) {
            let name = &alert["alert"];
            let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
            assert!(matches!(severity, "critical" | "warning"), "{}: {name} has severity {severity:?}", shown(&path));
            for annotation in ["summary", "description"] {
                let text = alert["annotations"][annotation].as_str().unwrap_or_default();
                assert!(!text.trim().is_empty(), "{}: {name} has no {annotation}", shown(&path));
            }
        }
    }
}

#[test]
fn dashboards_and_rules_query_only_catalogued_metrics() {
    let uncatalogued: BTreeMap<String, BTreeSet<String>> = queried_metrics()
        .into_iter()
        .map(|(file, names)| (file, names.into_iter().filter(|n| !CATALOGUE.contains(&n.as_str())).collect()))
        .collect();
    let report = by_file_report(&uncatalogued);
    assert!(report.is_empty(), "metrics missing from CATALOGUE (add them when a service exports them):\n{report}");
}

#[test]
fn the_absent_when_healthy_list_names_only_catalogued_metrics() {
    let stale: Vec<&&str> = ABSENT_WHEN_HEALTHY.iter().filter(|n| !CATALOGUE.contains(n)).collect();
    assert!(stale.is_empty(), "ABSENT_WHEN_HEALTHY names metrics not in CATALOGUE: {stale:?}");
}

#[test]
fn promtool_accepts_the_configuration_and_rules_and_the_alerts_behave() {
    let relative = |p: PathBuf| shown(&p);
    promtool(&["check".into(), "config".into(), "monitoring/prometheus.yml".into()]);
    let mut check = vec!["check".to_owned(), "rules".to_owned()];
    check.extend(files(&monitoring().join("rules"), ".yml").into_iter().map(relative));
    promtool(&check);
    let mut test = vec!["test".to_owned(), "rules".to_owned()];
    test.extend(files(&monitoring().join("tests"), ".yml").into_iter().map(relative));
    promtool(&test);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboards_and_rules_query_is_exported_after_a_completed_and_a_compensated_saga() {
    let queried = queried_metrics();
    let cluster = Cluster::start().await;

    // A catalog read (cache lookups), then one saga that completes and one that compensates.
    let (status, _) = cluster.get_json("inventory", "/pets?category=dog", "grace").await;
    assert_eq!(status, 200);
    let (status, completed) = cluster.place_order("grace", "golden-retriever-001", "credit_card").await;
    assert_eq!(status, 202, "{completed}");
    let (status, compensated) = cluster.place_order("heidi", "cockatiel-003", "declined_card").await;
    assert_eq!(status, 202, "{compensated}");
    let order = |body: &Value| body["order_id"].as_str().map(str::to_owned).unwrap_or_default();
    let (completed_id, compensated_id) = (order(&completed), order(&compensated));
    let limit = Duration::from_secs(90);
    let (completed, compensated) = tokio::join!(
        cluster.wait_for_saga_end(&completed_id, "grace", limit),
        cluster.wait_for_saga_end(&compensated_id, "heidi", limit),
    );
    assert_eq!(completed["status"], "completed", "{completed}");
    assert_eq!(compensated["status"], "compensated", "{compensated}");

    // Refused callers, which petstore_auth_rejections_total counts: an order without a token
    // (401, reason `missing`) and a customer at an admin route (403, reason `missing_role`).
    let refused = cluster.http.post(cluster.url("order", "/orders")).json(&serde_json::json!({})).send().await;
    assert_eq!(refused.expect("POST /orders").status(), 401, "an order without a token");
    let (status, body) = cluster.get_json("orchestrator", "/admin/dlq", "grace").await;
    assert_eq!(status, 403, "a customer at GET /admin/dlq: {body}");

    // Metrics of what follows a saga's end (the order's confirmation, the relays' next round)
    // may lag it a little: scrape until nothing is missing, for at most 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let missing = loop {
        let mut exported = BTreeSet::new();
        for service in SERVICES {
            let response = cluster.http.get(cluster.url(service, "/metrics")).send().await;
            let text = match response {
                Ok(r) if r.status() == 200 => r.text().await.unwrap_or_default(),
                other => panic!("GET {service}/metrics: {other:?}"),
            };
            exported.extend(exported_names(&text));
        }
        let missing: BTreeMap<String, BTreeSet<String>> = queried
            .iter()
            .map(|(file, names)| {
                let absent = names
                    .iter()
                    .filter(|n| !exported.contains(*n) && !ABSENT_WHEN_HEALTHY.contains(&n.as_str()))
                    .cloned()
                    .collect();
                (file.clone(), absent)
            })
            .collect();
        if missing.values().all(BTreeSet::is_empty) || Instant::now() >= deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let report = by_file_report(&missing);
    assert!(report.is_empty(), "metrics queried by the monitoring that no service exports:\n{report}");
}
