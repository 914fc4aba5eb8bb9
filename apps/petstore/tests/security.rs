//! Security end to end: the six services, each on its own port as in the distributed
//! deployment, share a PostgreSQL database and an in-process bus, and trust a test OIDC issuer
//! (RS256/ES256 keys from its JWKS). Every service checks tokens itself: hostile tokens get
//! 401 on every protected route of the order and orchestrator services, roles give 403,
//! another customer's order is 404, the rate limit answers 429, hostile input is refused and
//! stores nothing, and every state-changing request is in the audit trail.

mod support;

use kit::testing::hostile_cases;
use serde_json::{Value, json};
use support::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_are_refused_by_every_protected_route_of_the_order_and_orchestrator_services() {
    let stack = Stack::start("").await;
    let order_id = stack.completed_order("alice", "beagle-008").await;
    let (_, saga) = stack.get("orchestrator", &format!("/orders/{order_id}/status"), &stack.customer("alice")).await;
    let saga_id = saga["saga_id"].as_str().expect("saga_id");
    let routes = [
        ("order", "GET", format!("/orders/{order_id}")),
        ("order", "GET", format!("/orders/{order_id}/events")),
        ("order", "POST", "/orders".to_owned()),
        ("orchestrator", "GET", format!("/orders/{order_id}/status")),
        ("orchestrator", "GET", format!("/sagas/{saga_id}")),
        ("orchestrator", "GET", "/admin/dlq".to_owned()),
        ("orchestrator", "GET", "/admin/audit".to_owned()),
        ("notification", "GET", "/notifications".to_owned()),
    ];
    for case in hostile_cases(&stack.issuer) {
        for (service, method, path) in &routes {
            let mut request = stack.http.request(method.parse().expect("method"), stack.url(service, path));
            if let Some(value) = &case.authorization {
                request = request.header("authorization", value);
            }
            if *method == "POST" {
                request = request.json(&json!({}));
            }
            let (status, headers, body) = stack.send(request).await;
            let what = format!("{}: {method} {service}{path}", case.name);
            assert_eq!(status, 401, "{what}: {body}");
            assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
            assert!(headers.contains_key("www-authenticate"), "{what}");
            let detail = body["detail"].as_str().unwrap_or_default();
            for internal in ["jsonwebtoken", "ErrorKind", "RS256", "kid", "JWKS", "panicked"] {
                assert!(!detail.contains(internal), "{what}: `{detail}` names `{internal}`");
            }
        }
    }
    assert_eq!(stack.count("SELECT count(*) FROM orders.orders").await, 1, "no hostile request placed an order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_ownership_decide_who_sees_what() {
    let stack = Stack::start("").await;
    let order_id = stack.completed_order("alice", "beagle-008").await;
    let (alice, bob, admin) = (stack.customer("alice"), stack.customer("bob"), stack.admin());
    let (_, saga) = stack.get("orchestrator", &format!("/orders/{order_id}/status"), &alice).await;
    let saga_path = format!("/sagas/{}", saga["saga_id"].as_str().expect("saga_id"));

    let table: [(&str, String, &str, &String, u16); 14] = [
        ("order", format!("/orders/{order_id}"), "owner", &alice, 200),
        ("order", format!("/orders/{order_id}"), "another customer", &bob, 404),
        ("order", format!("/orders/{order_id}"), "admin", &admin, 200),
        ("order", format!("/orders/{order_id}/events"), "another customer", &bob, 404),
        ("order", format!("/orders/{order_id}/events"), "admin", &admin, 200),
        ("orchestrator", format!("/orders/{order_id}/status"), "another customer", &bob, 404),
        ("orchestrator", format!("/orders/{order_id}/status"), "admin", &admin, 200),
        ("orchestrator", saga_path.clone(), "customer", &alice, 403),
        ("orchestrator", saga_path.clone(), "admin", &admin, 200),
        ("orchestrator", "/admin/dlq".into(), "customer", &alice, 403),
        ("orchestrator", "/admin/dlq".into(), "admin", &admin, 200),
        ("inventory", "/admin/audit".into(), "customer", &alice, 403),
        ("notification", "/notifications".into(), "owner", &alice, 200),
        ("notification", "/notifications".into(), "admin without the customer role", &admin, 403),
    ];
    for (service, path, who, token, expected) in table {
        let (status, body) = stack.get(service, &path, token).await;
        assert_eq!(status, expected, "{who}: GET {service}{path}: {body}");
        if status >= 400 {
            assert_eq!(body["status"], expected, "problem+json: {body}");
        }
    }
    let (_, listed) = stack.get("notification", "/notifications", &bob).await;
    assert_eq!(listed["items"], json!([]), "bob sees none of alice's notifications");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placing_orders_beyond_the_quota_gets_429_and_other_customers_are_unaffected() {
    let stack = Stack::start("rate_limits: { routes: { 'POST /orders': { requests: 2, per: 1m, burst: 2 } } }").await;
    let alice = stack.customer("alice");
    for pet in ["beagle-008", "koi-022"] {
        let (status, headers, body) = stack.place(&alice, pet).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(headers.get("x-ratelimit-limit").and_then(|v| v.to_str().ok()), Some("2"));
    }
    let (status, headers, body) = stack.place(&alice, "canary-019").await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).is_some_and(|s| s >= 1));
    assert_eq!(body["type"], "https://petstore.example.com/problems/rate-limited");
    let (status, _, body) = stack.place(&stack.customer("bob"), "canary-019").await;
    assert_eq!(status, 202, "bob has his own quota: {body}");
    assert_eq!(stack.count("SELECT count(*) FROM orders.orders").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_and_stores_nothing() {
    let stack = Stack::start("").await;
    let alice = stack.customer("alice");
    let pets_before = stack.count("SELECT count(*) FROM inventory.pets").await;
    let orders = stack.url("order", "/orders");
    let post = |body: String| {
        stack.http.post(&orders).bearer_auth(&alice).header("content-type", "application/json").body(body)
    };
    let address = json!({ "street": "1 Main St", "city": "Springfield", "postal_code": "49007", "country": "US" });
    let order = |pet: &str| json!({ "pet_id": pet, "shipping_address": address, "payment_method": "credit_card" });
    let mut unknown = order("beagle-008");
    unknown["discount"] = json!(100);
    let mut long_instructions = order("beagle-008");
    long_instructions["special_instructions"] = json!("x".repeat(10_000));

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("oversized body", post(format!("{{\"pet_id\":\"{}\"}}", "x".repeat(100_000))), 413, "larger than"),
        ("malformed JSON", post("{\"pet_id\": ".into()), 400, "malformed JSON"),
        ("unknown field", post(unknown.to_string()), 400, "unknown field `discount`"),
        ("SQL in the pet id", post(order("beagle-008' OR '1'='1").to_string()), 422, "pet_id"),
        ("10 kB pet id", post(order(&"p".repeat(10_000)).to_string()), 422, "pet_id"),
        ("10 kB instructions", post(long_instructions.to_string()), 422, "special_instructions"),
    ];
    for (name, request, expected, says) in cases {
        let (status, headers, body) = stack.send(request).await;
        assert_eq!(status, expected, "{name}: {body}");
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{name}"
        );
        assert!(body["detail"].as_str().is_some_and(|d| d.contains(says)), "{name}: {body}");
    }

    let sql = "'; DROP TABLE orders.orders; --";
    let long = "y".repeat(10_000);
    let reads = [
        ("inventory", format!("/pets?category={}", urlencode(sql))),
        ("inventory", format!("/pets?category={long}")),
        ("inventory", format!("/pets?max_price={}", urlencode(sql))),
        ("inventory", format!("/pets?cursor={}", urlencode(sql))),
        ("inventory", format!("/pets/{}", urlencode(sql))),
        ("inventory", format!("/pets/{long}")),
        ("order", format!("/orders/{}", urlencode(sql))),
        ("order", format!("/orders/{long}")),
        ("orchestrator", format!("/orders/{}/status", urlencode(sql))),
        ("orchestrator", format!("/admin/dlq?channel={}", urlencode(sql))),
        ("orchestrator", format!("/admin/audit?actor={long}")),
        ("orchestrator", format!("/admin/audit?since={}", urlencode(sql))),
    ];
    let admin = stack.admin();
    for (service, path) in reads {
        let token = if path.starts_with("/admin") { &admin } else { &alice };
        let (status, body) = stack.get(service, &path, token).await;
        let shown = &path[..path.len().min(60)];
        assert!((400..500).contains(&status), "GET {service}{shown}: {status} {body}");
    }

    assert_eq!(stack.count("SELECT count(*) FROM orders.orders").await, 0, "no order stored");
    assert_eq!(stack.count("SELECT count(*) FROM orders.order_events").await, 0, "no order event stored");
    assert_eq!(stack.count("SELECT count(*) FROM inventory.pets").await, pets_before, "the catalog is intact");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_and_admin_actions_are_in_the_audit_trail() {
    let stack = Stack::start("").await;
    let alice = stack.customer("alice");
    let (status, headers, placed) = stack
        .send(stack.http.post(stack.url("order", "/orders")).bearer_auth(&alice).header("x-correlation-id", "audit-1").json(
            &json!({
                "pet_id": "beagle-008",
                "shipping_address": { "street": "1 Main St", "city": "Springfield", "postal_code": "49007", "country": "US" },
                "payment_method": "credit_card",
            }),
        ))
        .await;
    assert_eq!(status, 202, "{placed} {headers:?}");
    let order_id = placed["order_id"].as_str().expect("order_id");
    // A refused admin action is recorded too, with its outcome.
    assert_eq!(stack.get("orchestrator", "/admin/dlq", &alice).await.0, 403);

    let admin = stack.admin();
    let (status, page) = stack.get("order", "/admin/audit?actor=alice", &admin).await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "the order service recorded its own request: {page}");
    let entry = &items[0];
    assert_eq!(entry["action"], "POST /orders");
    assert_eq!(entry["target"], order_id);
    assert_eq!(entry["status"], 202);
    assert_eq!(entry["correlation_id"], "audit-1");
    assert_eq!(entry["roles"], json!(["customer"]));
    assert_eq!(entry["service"], "order");

    let (_, page) = stack.get("orchestrator", "/admin/audit?actor=alice&action=GET%20/admin/dlq", &admin).await;
    assert_eq!(page["items"][0]["status"], 403, "{page}");
    assert_eq!(
        stack.count("SELECT count(*) FROM orders.audit_trail WHERE actor = 'alice'").await,
        1,
        "in the order schema"
    );

    // Paging: newest first, a cursor to the next page, and the admin's own reads are audited.
    for _ in 0..3 {
        stack.get("orchestrator", "/admin/dlq", &admin).await;
    }
    let (_, first) = stack.get("orchestrator", "/admin/audit?actor=ops&limit=2", &admin).await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) =
        stack.get("orchestrator", &format!("/admin/audit?actor=ops&limit=2&cursor={cursor}"), &admin).await;
    let ids: Vec<&Value> =
        first["items"].as_array().into_iter().chain(second["items"].as_array()).flatten().map(|e| &e["id"]).collect();
    let unique: std::collections::HashSet<String> = ids.iter().map(|v| v.to_string()).collect();
    assert!(ids.len() >= 3 && unique.len() == ids.len(), "pages do not overlap: {first} {second}");
    let (status, _) = stack.get("orchestrator", "/admin/audit?since=yesterday", &admin).await;
    assert_eq!(status, 400);
}
