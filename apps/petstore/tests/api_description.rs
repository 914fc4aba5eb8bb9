//! The API description of the all-in-one pet store (`GET /openapi.json`): it lists exactly the
//! routes the process serves, every operation but the public ones requires the bearer scheme,
//! and it is a valid OpenAPI 3.1 document whose references all resolve.

use std::collections::BTreeSet;

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt as _;
use kit::{Service, ServiceContext, http::PUBLIC_ROUTES};
use serde_json::Value;
use tower::ServiceExt as _;

/// Every route the all-in-one process serves, besides Swagger UI's own pages (`/docs`,
/// `/docs/{*path}`), which are not API operations.
const ROUTES: [(&str, &str); 20] = [
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/pets"),
    ("POST", "/pets"),
    ("GET", "/pets/{pet_id}"),
    ("PUT", "/pets/{pet_id}"),
    ("POST", "/orders"),
    ("GET", "/orders/{order_id}"),
    ("GET", "/orders/{order_id}/events"),
    ("GET", "/orders/{order_id}/status"),
    ("GET", "/sagas/{saga_id}"),
    ("GET", "/admin/dlq"),
    ("GET", "/admin/dlq/{id}"),
    ("POST", "/admin/dlq/{id}/replay"),
    ("GET", "/admin/audit"),
    ("GET", "/notifications"),
    ("GET", "/docs"),
    ("GET", "/docs/{*path}"),
];

/// The methods an OpenAPI path item can hold, as its keys spell them.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/// The six services, started in memory on one context.
async fn services() -> (ServiceContext, Vec<Service>) {
    let ctx = kit::testing::context("").await;
    let services = vec![
        inventory::start(&ctx).await.expect("inventory starts"),
        order::start(&ctx).await.expect("order starts"),
        payment::start(&ctx).await.expect("payment starts"),
        delivery::start(&ctx).await.expect("delivery starts"),
        notification::start(&ctx).await.expect("notification starts"),
        orchestrator::start(&ctx).await.expect("orchestrator starts"),
    ];
    (ctx, services)
}

/// The six services in one process, in memory, as `petstore` runs them.
async fn all_in_one() -> (ServiceContext, Router) {
    let (ctx, services) = services().await;
    let app = kit::app(services, &ctx.gate);
    (ctx, app)
}

async fn call(app: &Router, method: Method, path: &str, body: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, kit::testing::bearer("api-description", &["customer", "admin"]));
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Body::from(body.unwrap_or_default().to_owned())).expect("request");
    let response = app.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn description(app: &Router) -> Value {
    let (status, document) = call(app, Method::GET, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK, "GET /openapi.json");
    document
}

/// `(METHOD, path, operation)` of every operation in `document`.
fn operations(document: &Value) -> Vec<(String, String, &Value)> {
    let paths = document["paths"].as_object().expect("paths");
    let mut found = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((method.to_uppercase(), path.clone(), operation));
            }
        }
    }
    found
}

fn is_public(method: &str, path: &str) -> bool {
    PUBLIC_ROUTES.iter().any(|(m, p)| *m == method && *p == path)
}

/// Whether the answer is the router's own (no such route, or not this method) rather than a
/// handler's.
fn unrouted(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::METHOD_NOT_ALLOWED || (status == StatusCode::NOT_FOUND && body["detail"] == "no such route")
}

#[tokio::test]
async fn the_description_lists_exactly_the_routes_the_process_serves() {
    let (ctx, app) = all_in_one().await;
    let document = description(&app).await;

    let documented: BTreeSet<(String, String)> =
        operations(&document).into_iter().map(|(method, path, _)| (method, path)).collect();
    let ui_pages = ["/docs", "/docs/{*path}"];
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|(_, path)| !ui_pages.contains(path))
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(
        documented,
        expected,
        "documented but not in the list: {:?}; in the list but not documented: {:?}",
        documented.difference(&expected).collect::<Vec<_>>(),
        expected.difference(&documented).collect::<Vec<_>>()
    );

    // Every listed route reaches a handler; no other method does on a documented path.
    let id = uuid::Uuid::now_v7().to_string();
    for (method, route) in ROUTES {
        let path = route.replace("{*path}", "index.html");
        let path = path.split('/').map(|s| if s.starts_with('{') { id.as_str() } else { s }).collect::<Vec<_>>();
        let path = path.join("/");
        let body = matches!(method, "POST" | "PUT").then_some("{}");
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let (status, answer) = call(&app, method.clone(), &path, body).await;
        assert!(!unrouted(status, &answer), "{method} {route} ({path}) is not served: {status} {answer}");
        if ui_pages.contains(&route) {
            continue;
        }
        for other in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            if ROUTES.contains(&(other.as_str(), route)) {
                continue;
            }
            let (status, answer) = call(&app, other.clone(), &path, None).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{other} {route} is served but not documented: {answer}"
            );
        }
    }
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn every_operation_but_the_public_ones_requires_a_bearer_token() {
    let (ctx, app) = all_in_one().await;
    let document = description(&app).await;

    let scheme = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")), "{scheme}");
    assert_eq!(scheme["bearerFormat"], "JWT");
    let bearer = serde_json::json!([{ "bearer": [] }]);
    let mut operation_ids = BTreeSet::new();
    for (method, path, operation) in operations(&document) {
        let responses = operation["responses"].as_object().expect("responses");
        let has = |status: &str| responses.contains_key(status);
        if is_public(&method, &path) {
            assert!(
                operation.get("security").is_none(),
                "{method} {path} is public but requires {}",
                operation["security"]
            );
        } else {
            assert_eq!(operation["security"], bearer, "{method} {path}");
            assert!(has("401") && has("429") && has("503"), "{method} {path} lacks 401/429/503: {responses:?}");
        }
        if operation.get("requestBody").is_some() {
            for status in ["400", "413", "415", "422"] {
                assert!(has(status), "{method} {path} takes a body but does not document {status}");
            }
        }
        let id = operation["operationId"].as_str().unwrap_or_default().to_owned();
        assert!(
            !id.is_empty() && operation_ids.insert(id.clone()),
            "{method} {path}: operationId `{id}` missing or taken"
        );
    }
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn the_description_is_valid_openapi_3_1_with_every_reference_resolved() {
    let (ctx, app) = all_in_one().await;
    let document = description(&app).await;

    assert_eq!(document["openapi"], "3.1.0");
    let spec = oas3::from_json(document.to_string()).expect("an OpenAPI 3.1 document");
    assert_eq!(spec.info.title, "Petstore API");
    assert!(!spec.paths.unwrap_or_default().is_empty(), "no paths");

    let mut references = Vec::new();
    collect_references(&document, &mut references);
    assert!(!references.is_empty(), "the document uses no reusable components");
    for reference in references {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("external reference {reference}"));
        assert!(document.pointer(pointer).is_some(), "{reference} does not resolve");
    }
    // The problem body every error shares, as `ApiError` writes it.
    let problem = &document["components"]["schemas"]["Problem"]["properties"];
    for member in ["type", "title", "status", "detail", "correlation_id"] {
        assert!(problem.get(member).is_some(), "Problem lacks `{member}`");
    }
    ctx.shutdown.cancel();
}

#[tokio::test]
async fn no_two_services_give_one_schema_name_two_meanings() {
    // Merging keeps the first schema of a name: a second meaning would silently describe
    // another service's bodies with the wrong schema.
    let (ctx, services) = services().await;
    let shared = kit::http::docs::document(&[]);
    let mut seen: std::collections::BTreeMap<String, (&str, Value)> = std::collections::BTreeMap::new();
    let descriptions = services.iter().map(|s| (s.name, &s.openapi)).chain([("kit", &shared)]);
    for (owner, openapi) in descriptions {
        for (name, schema) in openapi.components.iter().flat_map(|c| &c.schemas) {
            let schema = serde_json::to_value(schema).expect("schema as JSON");
            match seen.get(name) {
                Some((first, earlier)) => {
                    assert_eq!(earlier, &schema, "`{name}` means one thing in {first}, another in {owner}")
                }
                None => {
                    seen.insert(name.clone(), (owner, schema));
                }
            }
        }
    }
    ctx.shutdown.cancel();
}

fn collect_references(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                match (key.as_str(), member) {
                    ("$ref", Value::String(reference)) => into.push(reference.clone()),
                    _ => collect_references(member, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_references(item, into)),
        _ => {}
    }
}
