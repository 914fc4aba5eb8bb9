//! The API description. Each service documents its own routes (`#[utoipa::path]` on its
//! handlers, in [`Service::openapi`](crate::Service)); [`document`] merges the descriptions
//! of the services one process serves into one OpenAPI 3.1 document and adds what every route
//! shares: the `bearer` scheme on every route but the [public](super::PUBLIC_ROUTES) ones, the
//! problem responses the gate and the JSON extractor give, and the routes every process
//! serves (ops, `GET /admin/audit`, this document). [`router`] serves it at
//! `GET /openapi.json`, with Swagger UI at `/docs`.
//!
//! Handlers name the problems only they give with the reusable responses here, e.g.
//! `(status = 404, response = kit::http::docs::NotFound)`.

use std::sync::Arc;

use axum::{
    Router,
    extract::Path,
    http::{HeaderValue, Method, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use utoipa::{
    OpenApi, ToResponse,
    openapi::{
        self, Components, ContentBuilder, Ref, RefOr, ResponseBuilder,
        header::{Header, HeaderBuilder},
        path::{Operation, PathItem},
        schema::{ObjectBuilder, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};
use utoipa_swagger_ui::Config;

use super::{ApiError, is_public};
use crate::Service;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/docs";
/// The security scheme every protected operation requires: a JWT as bearer token.
pub const BEARER_SCHEME: &str = "bearer";
/// The media type of every problem response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What the document is about; the per-route parts come from the services.
const DESCRIPTION: &str = "The pet store: a catalog, orders processed by a saga (inventory, \
payment, delivery, notification) and the operators' views of sagas and dead letters.\n\n\
Every route but the catalog reads, the probes and this description needs `Authorization: Bearer \
<JWT>` (`petstore token --sub alice --role customer` prints one in development). Errors are \
`application/problem+json` (schema `Problem`); every response carries `X-Correlation-Id`.";

fn header(description: &str, schema: Type) -> Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(schema).build()))
        .description(Some(description))
        .build()
}

fn retry_after() -> (&'static str, Header) {
    ("Retry-After", header("Seconds to wait before trying again.", Type::Integer))
}

/// A problem response: `description`, a [`Problem`](super::Problem) body, and `headers`.
fn problem(description: &str, headers: impl IntoIterator<Item = (&'static str, Header)>) -> openapi::Response {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    let response = ResponseBuilder::new().description(description).content(PROBLEM_JSON, content);
    headers.into_iter().fold(response, |r, (name, h)| r.header(name, h)).build()
}

/// Declares reusable problem responses: a unit type per response, implementing
/// [`ToResponse`], and the list of all of them for the document's components.
macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident = $description:literal $([$($header:expr),*])?;)+) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl<'s> ToResponse<'s> for $name {
                fn response() -> (&'s str, RefOr<openapi::Response>) {
                    (stringify!($name), problem($description, [$($($header),*)?]).into())
                }
            }
        )+

        /// Every reusable problem response, named.
        fn problem_responses() -> Vec<(&'static str, RefOr<openapi::Response>)> {
            vec![$(<$name as ToResponse>::response()),+]
        }
    };
}

problem_responses! {
    /// 400: the request is malformed (bad JSON, an unknown field, a bad header or query).
    BadRequest = "The request is malformed: bad JSON syntax, an unknown field, a malformed header or query parameter.";
    /// 401: no valid bearer token.
    Unauthorized = "No valid bearer token: missing on a protected route, or malformed, expired or not signed by a \
        trusted key."
        [("WWW-Authenticate", header("`Bearer realm=\"petstore\"`, with `error=\"invalid_token\"` for a bad token.", Type::String))];
    /// 403: the caller's token lacks the role the route needs.
    Forbidden = "The token is valid but lacks the role this route needs.";
    /// 404: no such resource (or one the caller may not see).
    NotFound = "No such resource, or one the caller may not see.";
    /// 409: the request conflicts with the resource's state.
    Conflict = "The request conflicts with the current state of the resource.";
    /// 413: the body is larger than the route accepts.
    PayloadTooLarge = "The body is larger than this route accepts.";
    /// 415: the body is not `application/json`.
    UnsupportedMediaType = "The body is not sent as `Content-Type: application/json`.";
    /// 422: the request is well-formed but its content is invalid.
    Unprocessable = "The request is well-formed but its content is invalid (a missing or mistyped field, a value \
        out of range).";
    /// 429: the caller's rate limit for this route is spent.
    TooManyRequests = "The rate limit of this route is reached."
        [retry_after(),
         ("X-RateLimit-Limit", header("The burst the caller's quota allows.", Type::Integer)),
         ("X-RateLimit-Remaining", header("Requests left in the burst (0).", Type::Integer))];
    /// 503: a dependency (storage, another service, the token issuer) is unavailable.
    Unavailable = "A dependency (storage, another service, the token issuer) is unavailable; try again after \
        `Retry-After` seconds."
        [retry_after()];
}

/// What the kit documents itself: the ops routes and this document's route (the audit
/// trail's route is described in [`crate::audit`]).
#[derive(OpenApi)]
#[openapi(
    info(title = "Petstore API", description = DESCRIPTION),
    paths(super::observe::health, super::observe::ready, super::observe::render_metrics, openapi_json),
    components(schemas(super::Problem)),
    tags(
        (name = "ops", description = "Probes, metrics and this description."),
        (name = "inventory", description = "The pet catalog."),
        (name = "order", description = "Placing and reading orders."),
        (name = "orchestrator", description = "Sagas, order status and dead letters."),
        (name = "notification", description = "What customers were told."),
        (name = "audit", description = "Who did what: every state-changing request and admin action."),
    )
)]
struct Shared;

/// The document of a process serving `services`: theirs merged, with the shared parts.
pub fn document(services: &[Service]) -> openapi::OpenApi {
    let mut doc = Shared::openapi();
    doc.merge(crate::audit::openapi());
    for service in services {
        let mut own = service.openapi.clone();
        for (_, item) in own.paths.paths.iter_mut() {
            for (_, operation) in operations(item) {
                if operation.tags.as_ref().is_none_or(Vec::is_empty) {
                    operation.tags = Some(vec![service.name.to_owned()]);
                }
            }
        }
        doc.merge(own);
    }
    let components = doc.components.get_or_insert_with(Components::default);
    components.responses.extend(problem_responses().into_iter().map(|(name, r)| (name.to_owned(), r)));
    let bearer = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("JWT")
        .description(Some("A JWT from the configured issuer (HS256 in development: `petstore token`)."))
        .build();
    components.security_schemes.insert(BEARER_SCHEME.to_owned(), SecurityScheme::Http(bearer).into());
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, operation) in operations(item) {
            add_shared_responses(operation, is_public(&method, Some(path)));
        }
    }
    doc
}

/// Every operation of `item` with its method.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::PATCH, &mut item.patch),
        (Method::HEAD, &mut item.head),
        (Method::OPTIONS, &mut item.options),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation.as_mut()?)))
}

/// What the gate adds to every route (401 for a bad token, 429; on protected routes the
/// bearer requirement and 503 when the issuer cannot be reached) and the JSON extractor to
/// every route with a body (400, 413, 415, 422), where the handler did not say more.
fn add_shared_responses(operation: &mut Operation, public: bool) {
    let mut shared = vec![("401", Unauthorized::response()), ("429", TooManyRequests::response())];
    if !public {
        operation.security = Some(vec![SecurityRequirement::new(BEARER_SCHEME, Vec::<String>::new())]);
        shared.push(("503", Unavailable::response()));
    }
    if operation.request_body.is_some() {
        shared.extend([
            ("400", BadRequest::response()),
            ("413", PayloadTooLarge::response()),
            ("415", UnsupportedMediaType::response()),
            ("422", Unprocessable::response()),
        ]);
    }
    for (status, (name, _)) in shared {
        operation.responses.responses.entry(status.to_owned()).or_insert_with(|| Ref::from_response_name(name).into());
    }
}

/// `GET /openapi.json` and Swagger UI (`/docs`, which redirects to `/docs/index.html`).
pub fn router(document: openapi::OpenApi) -> Router {
    let json: Arc<str> = document.to_json().unwrap_or_default().into();
    // Keeps the token entered under "Authorize" across page reloads.
    let config = Arc::new(Config::new([OPENAPI_PATH]).persist_authorization(true));
    Router::new()
        .route(OPENAPI_PATH, get(move || openapi_json(json.clone())))
        .route(DOCS_PATH, get(|| async { Redirect::to(&format!("{DOCS_PATH}/index.html")) }))
        .route(&format!("{DOCS_PATH}/{{*path}}"), get(move |Path(path): Path<String>| swagger_ui(path, config.clone())))
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    responses((status = 200, description = "This OpenAPI 3.1 document.", body = Object, content_type = "application/json"))
)]
async fn openapi_json(json: Arc<str>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json.to_string()).into_response()
}

/// A file of Swagger UI (bundled into the binary: the `vendored` feature).
async fn swagger_ui(path: String, config: Arc<Config<'static>>) -> Response {
    match utoipa_swagger_ui::serve(&path, config) {
        Ok(Some(file)) => {
            let content_type = HeaderValue::from_str(&file.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let mut response = ([(header::CONTENT_TYPE, content_type)], file.bytes.into_owned()).into_response();
            if file.gzpipped {
                response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            response
        }
        Ok(None) => ApiError::not_found(format!("no file {path} in the API documentation")).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}
