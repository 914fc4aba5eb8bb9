//! Administrators change a flag through `/admin/flags` and every instance of every service acts
//! on it within a second — in the all-in-one process and across the processes of the
//! distributed deployment (stored in PostgreSQL, announced over Kafka). An invalid definition
//! is refused naming the key while the previous one keeps working, a restarted instance keeps
//! the change, and the audit trail says who made it.

use std::time::{Duration, Instant};

use crate::support::Cluster;
use serde_json::{Value, json};

/// The longest a change may take to reach every instance.
const PROPAGATION: Duration = Duration::from_secs(1);

/// `redis_caching` served as `variant` for everyone.
fn caching(variant: &str) -> Value {
    json!({ "state": "ENABLED", "variants": { "on": true, "off": false }, "defaultVariant": variant })
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn x_cache(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.expect("GET /pets");
    assert_eq!(response.status(), 200);
    response.headers().get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// Polls the catalog until its `X-Cache` answer satisfies `wanted`; how long that took.
async fn until_cache(http: &reqwest::Client, url: &str, wanted: impl Fn(&str) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let seen = x_cache(http, url).await;
        if wanted(&seen) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the catalog still answers X-Cache: {seen}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_all_in_one_process_an_admin_change_acts_at_once_and_a_delete_restores_the_file() {
    let ctx = kit::testing::context("").await;
    let services =
        vec![inventory::start(&ctx).await.expect("inventory"), persistence::flags::start(&ctx).await.expect("flags")];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (gate, shutdown) = (ctx.gate.clone(), ctx.shutdown.clone());
    tokio::spawn(async move { kit::serve(listener, services, &gate, shutdown).await });
    let http = reqwest::Client::new();
    let pets = format!("{base}/pets?limit=5");
    let flag = format!("{base}/admin/flags/redis_caching");
    let admin = kit::testing::bearer("ops", &["admin"]);
    let customer = kit::testing::bearer("alice", &["customer"]);

    assert_ne!(x_cache(&http, &pets).await, "BYPASS");
    let (status, body) = send(http.put(&flag).header("authorization", &admin).json(&caching("off"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["source"].as_str(), body["changed_by"].as_str()), (Some("admin"), Some("ops")), "{body}");
    assert_eq!(x_cache(&http, &pets).await, "BYPASS", "in force as soon as the PUT is answered");

    // Refused whole, naming the key; the override in force keeps working.
    let (status, body) = send(http.put(&flag).header("authorization", &admin).json(&caching("maybe"))).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("flags.redis_caching.defaultVariant")), "{body}");
    assert_eq!(x_cache(&http, &pets).await, "BYPASS");
    let (status, body) = send(
        http.put(&flag).header("authorization", &admin).header("content-type", "application/json").body("{\"state\":"),
    )
    .await;
    assert_eq!(status, 400, "not JSON: {body}");
    let (status, body) =
        send(http.put(format!("{base}/admin/flags/no_such_flag")).header("authorization", &admin).json(&caching("on")))
            .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = send(http.put(&flag).header("authorization", &customer).json(&caching("on"))).await;
    assert_eq!(status, 403, "customers may not change flags");
    let (status, _) = send(http.put(&flag).json(&caching("on"))).await;
    assert_eq!(status, 401);

    let (status, listing) = send(http.get(format!("{base}/admin/flags")).header("authorization", &admin)).await;
    assert_eq!(status, 200, "{listing}");
    let listing = listing.as_array().expect("a list");
    assert_eq!(listing.len(), 9, "every flag of config/flags.json: {listing:?}");
    let sources: Vec<(&str, &str)> =
        listing.iter().filter_map(|f| Some((f["flag"].as_str()?, f["source"].as_str()?))).collect();
    assert!(sources.contains(&("redis_caching", "admin")) && sources.contains(&("premium_filters", "file")));

    let (status, trail) =
        send(http.get(format!("{base}/admin/audit?service=flags")).header("authorization", &admin)).await;
    assert_eq!(status, 200, "{trail}");
    let entries: Vec<(&str, &str, u64)> = trail["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| Some((e["actor"].as_str()?, e["target"].as_str()?, e["status"].as_u64()?)))
        .collect();
    assert!(entries.contains(&("ops", "redis_caching", 200)), "the change: {trail}");
    assert!(entries.contains(&("ops", "redis_caching", 422)), "the refusal: {trail}");

    let (status, body) = send(http.delete(&flag).header("authorization", &admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "file", "{body}");
    assert_ne!(x_cache(&http, &pets).await, "BYPASS", "the file's definition is in force again");
    let (status, _) = send(http.delete(&flag).header("authorization", &admin)).await;
    assert_eq!(status, 404, "no override left to remove");
    ctx.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_processes_a_change_reaches_every_instance_within_a_second_and_survives_a_restart() {
    let mut cluster = Cluster::start().await;
    let http = reqwest::Client::new();
    let admin = cluster.token("ops", &["admin"]);
    let pets = cluster.url("inventory", "/pets?limit=5");
    assert_ne!(x_cache(&http, &pets).await, "BYPASS");

    // Changed through the order process; the inventory process acts on it.
    let (status, body) =
        send(http.put(cluster.url("order", "/admin/flags/redis_caching")).bearer_auth(&admin).json(&caching("off")))
            .await;
    assert_eq!(status, 200, "{body}");
    let took = until_cache(&http, &pets, |c| c == "BYPASS").await;
    assert!(took < PROPAGATION, "the inventory process took {took:?} to act on the change");
    for service in ["payment", "delivery", "notification", "orchestrator"] {
        let (status, flag) = cluster.get_admin_json(service, "/admin/flags/redis_caching").await;
        assert_eq!((status, flag["source"].as_str()), (200, Some("admin")), "{service}: {flag}");
        assert_eq!(flag["definition"]["defaultVariant"], "off", "{service}: {flag}");
    }

    // An invalid definition sent to another process is refused; the change stays in force.
    let (status, body) = send(
        http.put(cluster.url("payment", "/admin/flags/redis_caching")).bearer_auth(&admin).json(&caching("maybe")),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("flags.redis_caching.defaultVariant")), "{body}");
    assert_eq!(x_cache(&http, &pets).await, "BYPASS");

    // A restarted instance reads the stored change before it serves.
    cluster.restart("inventory").await;
    let pets = cluster.url("inventory", "/pets?limit=5");
    assert_eq!(x_cache(&http, &pets).await, "BYPASS", "the change survived the restart");

    let (status, trail) = cluster.get_admin_json("delivery", "/admin/audit?service=flags").await;
    assert_eq!(status, 200, "{trail}");
    let change = trail["items"]
        .as_array()
        .and_then(|items| items.iter().find(|e| e["status"] == 200 && e["action"] == "PUT /admin/flags/{flag}"));
    let change = change.unwrap_or_else(|| panic!("the change is in the audit trail: {trail}"));
    assert_eq!((change["actor"].as_str(), change["target"].as_str()), (Some("ops"), Some("redis_caching")));

    // Back to the file's definition, everywhere.
    let (status, body) =
        send(http.delete(cluster.url("orchestrator", "/admin/flags/redis_caching")).bearer_auth(&admin)).await;
    assert_eq!(status, 200, "{body}");
    let took = until_cache(&http, &pets, |c| c != "BYPASS").await;
    assert!(took < PROPAGATION, "the inventory process took {took:?} to put the file's definition back");
}
