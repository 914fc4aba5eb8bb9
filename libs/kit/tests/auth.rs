//! The gate in front of every service, against a test OIDC issuer on a loopback port: which
//! tokens get in, how the issuer's keys are fetched, rotated, and waited for, rate limits and
//! body limits.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use kit::{
    ServiceContext,
    auth::{Admin, AuthError, Principal},
    http::Json,
    testing::{Issuer, hostile_cases},
};
use serde::Deserialize;
use serde_json::{Value, json};

/// A small API behind the real gate: a public route, a route for anyone with a token, an
/// admin route and a route with a strict JSON body.
async fn serve(ctx: &ServiceContext) -> String {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Note {
        text: String,
    }
    let api = Router::new()
        .route("/pets", get(|| async { "catalog" }))
        .route("/me", get(|caller: Principal| async move { caller.subject().to_owned() }))
        .route("/admin/things", get(|Admin(caller): Admin| async move { caller.subject().to_owned() }))
        .route("/notes", axum::routing::post(|Json(note): Json<Note>| async move { note.text }));
    let app = kit::http::layers(api, &ctx.gate);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await });
    url
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(method: reqwest::Method, url: &str, authorization: Option<&str>, body: Option<String>) -> Reply {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    Reply { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

async fn get_with(url: &str, token: Option<&str>) -> Reply {
    call(reqwest::Method::GET, url, token.map(|t| format!("Bearer {t}")).as_deref(), None).await
}

/// Every message a 401/503 may carry: the client learns what is wrong with its token and
/// nothing about the service's insides.
fn known_details() -> Vec<String> {
    use AuthError::*;
    [
        Missing,
        Malformed,
        BadSignature,
        Algorithm,
        Expired,
        NotYetValid,
        WrongIssuer,
        WrongAudience,
        MissingClaim,
        UnknownKey,
        IssuerUnavailable,
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn hostile_tokens_get_a_401_problem_that_names_no_internals() {
    let issuer = Issuer::start().await;
    let ctx = kit::testing::context(&issuer.overrides(60_000)).await;
    let url = serve(&ctx).await;
    let known = known_details();
    for case in hostile_cases(&issuer) {
        let reply = call(reqwest::Method::GET, &format!("{url}/me"), case.authorization.as_deref(), None).await;
        assert_eq!(reply.status, 401, "{}: {}", case.name, reply.body);
        let content_type = reply.headers.get("content-type").and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("application/problem+json"), "{}", case.name);
        let challenge = reply.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{}: WWW-Authenticate `{challenge}`", case.name);
        let detail = reply.body["detail"].as_str().unwrap_or_default().to_owned();
        assert!(known.contains(&detail), "{}: detail `{detail}` is not one of the documented ones", case.name);
        assert!(reply.body["correlation_id"].is_string(), "{}: {}", case.name, reply.body);
    }
    // The same tokens on a public route: a bad token is refused there too, none is fine.
    let reply = get_with(&format!("{url}/pets"), Some("not.a.jwt")).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(get_with(&format!("{url}/pets"), None).await.status, 200);
}

#[tokio::test]
async fn rs256_and_es256_tokens_are_accepted_and_roles_are_enforced() {
    let issuer = Issuer::start().await;
    let ctx = kit::testing::context(&issuer.overrides(60_000)).await;
    let url = serve(&ctx).await;
    let rsa = issuer.sign("rsa-1", &issuer.claims("alice", &["customer"]));
    let ec = issuer.sign("ec-1", &issuer.claims("bob", &["admin"]));

    let me = get_with(&format!("{url}/me"), Some(&rsa)).await;
    assert_eq!((me.status, me.body.as_str()), (200, Some("alice")));
    assert_eq!(me.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    assert_eq!(get_with(&format!("{url}/me"), Some(&ec)).await.body, "bob");

    let forbidden = get_with(&format!("{url}/admin/things"), Some(&rsa)).await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.body);
    assert_eq!(forbidden.body["detail"], "this route needs the `admin` role");
    assert_eq!(get_with(&format!("{url}/admin/things"), Some(&ec)).await.status, 200);

    // Keycloak's realm roles count as roles.
    let mut keycloak = issuer.claims("carol", &[]);
    keycloak["realm_access"] = json!({ "roles": ["admin", "offline_access"] });
    assert_eq!(get_with(&format!("{url}/admin/things"), Some(&issuer.sign("rsa-1", &keycloak))).await.status, 200);
    // The leeway forgives a clock a little behind, not more.
    let mut just_expired = issuer.claims("dave", &[]);
    just_expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 10);
    assert_eq!(get_with(&format!("{url}/me"), Some(&issuer.sign("rsa-1", &just_expired))).await.status, 200);
}

#[tokio::test]
async fn a_rotated_key_is_fetched_when_a_token_first_names_it() {
    let issuer = Issuer::start().await;
    let ctx = kit::testing::context(&issuer.overrides(200)).await;
    let url = serve(&ctx).await;
    assert_eq!(get_with(&format!("{url}/me"), Some(&issuer.token("alice", &[]))).await.status, 200);

    issuer.rotate();
    let rotated = issuer.sign("rsa-2", &issuer.claims("alice", &[]));
    // The first try may fall within the cooldown of the start-up fetch; past it, the unknown
    // kid makes the service look again and find the new key.
    eventually("the rotated key to be accepted", Duration::from_secs(10), || async {
        get_with(&format!("{url}/me"), Some(&rotated)).await.status == 200
    })
    .await;
}

#[tokio::test]
async fn a_flood_of_unknown_key_ids_fetches_the_keys_at_most_once_per_cooldown() {
    const COOLDOWN: Duration = Duration::from_secs(2);
    let issuer = Issuer::start().await;
    let ctx = kit::testing::context(&issuer.overrides(COOLDOWN.as_millis() as u64)).await;
    let url = serve(&ctx).await;
    assert_eq!(get_with(&format!("{url}/me"), Some(&issuer.token("alice", &[]))).await.status, 200);
    // Let the cooldown of the start-up fetch pass, so that the flood may cause one fetch.
    tokio::time::sleep(COOLDOWN).await;
    let before = issuer.fetches();

    let claims = issuer.claims("mallory", &[]);
    let started = Instant::now();
    let flood = (0..200).map(|i| {
        let token = issuer.sign_as("rsa-1", &format!("made-up-{i}"), &claims);
        let url = url.clone();
        tokio::spawn(async move { get_with(&format!("{url}/me"), Some(&token)).await.status })
    });
    let statuses = futures_statuses(flood.collect()).await;
    let took = started.elapsed();

    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let fetched = issuer.fetches() - before;
    let allowed = 1 + (took.as_millis() / COOLDOWN.as_millis()) as usize;
    assert!(
        (1..=allowed).contains(&fetched),
        "{fetched} fetches for 200 unknown kids in {took:?} (cooldown {COOLDOWN:?}: at most {allowed})"
    );
}

async fn futures_statuses(handles: Vec<tokio::task::JoinHandle<u16>>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for handle in handles {
        statuses.push(handle.await.expect("request task"));
    }
    statuses
}

#[tokio::test]
async fn while_the_issuer_is_down_protected_routes_answer_503_and_recover_when_it_returns() {
    let issuer = Issuer::start().await;
    issuer.set_up(false);
    let ctx = kit::testing::context(&issuer.overrides(300)).await;
    let url = serve(&ctx).await;
    let token = issuer.token("alice", &[]);

    let down = get_with(&format!("{url}/me"), Some(&token)).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(down.headers.contains_key("retry-after"), "{:?}", down.headers);
    // The public catalog does not depend on the issuer.
    assert_eq!(get_with(&format!("{url}/pets"), Some(&token)).await.status, 200);

    issuer.set_up(true);
    eventually("the service to accept tokens once the issuer is back", Duration::from_secs(10), || async {
        get_with(&format!("{url}/me"), Some(&token)).await.status == 200
    })
    .await;
}

#[tokio::test]
async fn the_request_over_the_quota_gets_429_with_retry_after_and_another_user_is_unaffected() {
    let overrides = "rate_limits: { routes: { 'GET /me': { requests: 3, per: 1m, burst: 3 } } }";
    let ctx = kit::testing::context(overrides).await;
    let url = serve(&ctx).await;
    let alice = kit::testing::token(&ctx.settings, "alice", &["customer"]);
    let bob = kit::testing::token(&ctx.settings, "bob", &["customer"]);

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let reply = get_with(&format!("{url}/me"), Some(&alice)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.headers.get("x-ratelimit-limit").and_then(|v| v.to_str().ok()), Some("3"));
        remaining.push(reply.headers.get("x-ratelimit-remaining").and_then(|v| v.to_str().ok()).map(str::to_owned));
    }
    assert_eq!(remaining, [Some("2".to_owned()), Some("1".to_owned()), Some("0".to_owned())]);

    let refused = get_with(&format!("{url}/me"), Some(&alice)).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
    let retry_after: u64 =
        refused.headers.get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).expect("Retry-After");
    assert!((1..=20).contains(&retry_after), "one request every 20 s: Retry-After {retry_after}");
    assert_eq!(refused.headers.get("x-ratelimit-remaining").and_then(|v| v.to_str().ok()), Some("0"));

    assert_eq!(get_with(&format!("{url}/me"), Some(&bob)).await.status, 200, "bob has his own quota");
}

#[tokio::test]
async fn anonymous_callers_are_limited_by_address_and_forwarded_for_is_believed_only_from_trusted_proxies() {
    let overrides = "rate_limits: { anonymous: { requests: 2, per: 1m, burst: 2 }, trusted_proxies: ['127.0.0.1'] }";
    let ctx = kit::testing::context(overrides).await;
    let url = serve(&ctx).await;
    let from = |client: &str| {
        reqwest::Client::new().get(format!("{url}/pets")).header("x-forwarded-for", format!("203.0.113.9, {client}"))
    };
    for _ in 0..2 {
        assert_eq!(from("198.51.100.1").send().await.expect("GET").status(), 200);
    }
    assert_eq!(from("198.51.100.1").send().await.expect("GET").status(), 429, "the third from one client");
    assert_eq!(from("198.51.100.2").send().await.expect("GET").status(), 200, "another client behind the proxy");

    // From a peer that is not a trusted proxy the header is ignored: the peer's address counts.
    let untrusted = kit::testing::context("rate_limits: { anonymous: { requests: 2, per: 1m, burst: 2 } }").await;
    let url = serve(&untrusted).await;
    for (i, client) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"].iter().enumerate() {
        let status = reqwest::Client::new()
            .get(format!("{url}/pets"))
            .header("x-forwarded-for", *client)
            .send()
            .await
            .expect("GET")
            .status();
        assert_eq!(status.as_u16(), if i < 2 { 200 } else { 429 }, "request {i} claiming to be {client}");
    }
}

#[tokio::test]
async fn bodies_are_bounded_and_strict() {
    let ctx = kit::testing::context("http: { body_limit: 1024 }").await;
    let url = serve(&ctx).await;
    let token = format!("Bearer {}", kit::testing::token(&ctx.settings, "alice", &["customer"]));
    let notes = format!("{url}/notes");
    let post = |body: String| call(reqwest::Method::POST, &notes, Some(&token), Some(body));

    let ok = post(r#"{"text":"hi"}"#.into()).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, Some("hi")));
    // Small and large: the client sees the 413 even when its body is far larger than the
    // socket buffers (the refused body is read and dropped, not cut off mid-write).
    for size in [4096, 512 * 1024] {
        let oversized = post(json!({ "text": "x".repeat(size) }).to_string()).await;
        assert_eq!(oversized.status, 413, "{size} bytes: {}", oversized.body);
        assert_eq!(oversized.body["status"], 413);
    }
    let malformed = post("{\"text\":".into()).await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    let unknown = post(r#"{"text":"hi","admin":true}"#.into()).await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert!(unknown.body["detail"].as_str().is_some_and(|d| d.contains("unknown field `admin`")), "{}", unknown.body);

    // A body streamed without a length is cut off at the limit too.
    let chunks = futures_stream_of(vec![vec![b' '; 700], vec![b' '; 700]]);
    let streamed = reqwest::Client::new()
        .post(format!("{url}/notes"))
        .header("authorization", &token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("POST");
    assert_eq!(streamed.status().as_u16(), 413);
}

fn futures_stream_of(chunks: Vec<Vec<u8>>) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::iter(chunks.into_iter().map(Ok))
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let ctx = kit::testing::context("").await;
    let url = serve(&ctx).await;
    let reply = get_with(&format!("{url}/pets"), None).await;
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(reply.headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{name}");
    }
    assert!(reply.headers.get("cache-control").is_none(), "an anonymous catalog read may be cached");
}

#[tokio::test]
async fn cors_answers_preflights_from_configured_origins_only() {
    let ctx = kit::testing::context("http: { cors: { allowed_origins: ['https://shop.example.com'] } }").await;
    let url = serve(&ctx).await;
    let preflight = |origin: &'static str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("{url}/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://shop.example.com").await.expect("preflight");
    let allow_origin = allowed.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok());
    assert_eq!(allow_origin, Some("https://shop.example.com"));
    let allow_headers = allowed.headers().get("access-control-allow-headers").and_then(|v| v.to_str().ok());
    assert!(allow_headers.is_some_and(|h| h.contains("authorization")), "{allow_headers:?}");
    let other = preflight("https://evil.example").await.expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none(), "no CORS for an origin not listed");

    // Without configured origins, no CORS headers at all.
    let closed = kit::testing::context("").await;
    let url = serve(&closed).await;
    let response =
        reqwest::Client::new().get(format!("{url}/pets")).header("origin", "https://shop.example.com").send();
    assert!(response.await.expect("GET").headers().get("access-control-allow-origin").is_none());
}
