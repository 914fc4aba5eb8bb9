//! A test OIDC issuer: serves a discovery document and a JWKS on a loopback port, signs
//! tokens with its keys (RS256 and ES256), and can rotate keys, go down and come back, and
//! count how often its keys were fetched.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};

/// The audience test tokens are for (the default configuration's `auth.audience`).
pub const AUDIENCE: &str = "petstore-api";

/// A signing key the issuer has.
#[derive(Clone)]
struct Key {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    public: Value,
}

/// The issuer's state, shared with its HTTP routes.
pub struct Issuer {
    /// Its URL (`http://127.0.0.1:<port>`): `auth.oidc_issuer_url` of the service under test.
    pub url: String,
    published: Mutex<Vec<Key>>,
    up: AtomicBool,
    fetches: AtomicUsize,
}

/// The test keys: two RSA keys (for rotation) and one EC P-256 key.
pub const RSA_1: &str = include_str!("keys/rsa-1.pem");
/// The second RSA key.
pub const RSA_2: &str = include_str!("keys/rsa-2.pem");
/// The EC P-256 key.
pub const EC_1: &str = include_str!("keys/ec-1.pem");
/// The public half of [`RSA_1`], as PEM: what an attacker signing HS256 with it would use.
pub const RSA_1_PUBLIC: &str = include_str!("keys/rsa-1.pub.pem");

fn key(kid: &str, algorithm: Algorithm, pem: &str) -> Key {
    let encoding = match algorithm {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("test key");
    let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).expect("public JWK");
    jwk.common.key_id = Some(kid.to_owned());
    let mut public = serde_json::to_value(&jwk).expect("JWK as JSON");
    public["use"] = json!("sig");
    Key { kid: kid.to_owned(), algorithm, encoding, public }
}

impl Issuer {
    /// Starts an issuer publishing `rsa-1` (RS256) and `ec-1` (ES256), up.
    pub async fn start() -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the test issuer");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let issuer = Arc::new(Self {
            url,
            published: Mutex::new(vec![key("rsa-1", Algorithm::RS256, RSA_1), key("ec-1", Algorithm::ES256, EC_1)]),
            up: AtomicBool::new(true),
            fetches: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(issuer.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        issuer
    }

    /// The configuration overrides (YAML) that make a service trust this issuer, with a
    /// refetch cooldown of `cooldown_ms`.
    pub fn overrides(&self, cooldown_ms: u64) -> String {
        format!(
            "auth: {{ oidc_issuer_url: \"{}\", jwks_refetch_cooldown: {cooldown_ms}ms, jwks_refresh: 1h, jwks_timeout: 2s }}",
            self.url
        )
    }

    /// Publishes `rsa-2` too (a key rotation).
    pub fn rotate(&self) {
        self.published.lock().expect("keys").push(key("rsa-2", Algorithm::RS256, RSA_2));
    }

    /// Takes the issuer down (its routes answer 503) or brings it back.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// How many times its JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Valid claims for `subject` with `roles`, for an hour from now.
    pub fn claims(&self, subject: &str, roles: &[&str]) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({ "sub": subject, "roles": roles, "iss": self.url, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 3600 })
    }

    /// `claims` signed with the key `kid` (`rsa-1`, `rsa-2` or `ec-1`), its header naming
    /// `header_kid` (normally the same kid).
    pub fn sign_as(&self, kid: &str, header_kid: &str, claims: &Value) -> String {
        let all = [
            key("rsa-1", Algorithm::RS256, RSA_1),
            key("rsa-2", Algorithm::RS256, RSA_2),
            key("ec-1", Algorithm::ES256, EC_1),
        ];
        let key = all.into_iter().find(|k| k.kid == kid).expect("a test key id");
        let mut header = Header::new(key.algorithm);
        header.kid = Some(header_kid.to_owned());
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
    }

    /// `claims` signed with the key `kid`.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        self.sign_as(kid, kid, claims)
    }

    /// A valid token for `subject` with `roles`, signed with `rsa-1`.
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        self.sign("rsa-1", &self.claims(subject, roles))
    }
}

/// An unsigned token (`alg: none`) with `claims`.
pub fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

/// `claims` signed HS256 with `secret` (e.g. an RSA public key, the classic confusion attack),
/// naming `kid`.
pub fn hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret).expect("secret")).expect("sign")
}

async fn discovery(State(issuer): State<Arc<Issuer>>) -> impl IntoResponse {
    if !issuer.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({ "issuer": issuer.url, "jwks_uri": format!("{}/jwks", issuer.url) })).into_response()
}

async fn jwks(State(issuer): State<Arc<Issuer>>) -> impl IntoResponse {
    if !issuer.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    issuer.fetches.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = issuer.published.lock().expect("keys").iter().map(|k| k.public.clone()).collect();
    Json(json!({ "keys": keys })).into_response()
}

/// One row of the table of tokens every protected route must refuse: a name, the
/// `Authorization` header to send (`None`: no header), and the status expected.
pub struct HostileCase {
    /// What the case is.
    pub name: &'static str,
    /// The `Authorization` header value, if any.
    pub authorization: Option<String>,
}

/// The tokens a service trusting `issuer` must answer 401 to on a protected route.
pub fn hostile_cases(issuer: &Issuer) -> Vec<HostileCase> {
    let now = jsonwebtoken::get_current_timestamp();
    let valid = issuer.claims("alice", &["customer", "admin"]);
    let with = |field: &str, value: Value| {
        let mut claims = valid.clone();
        claims[field] = value;
        claims
    };
    let without = |field: &str| {
        let mut claims = valid.clone();
        claims.as_object_mut().expect("object").remove(field);
        claims
    };
    let good = issuer.sign("rsa-1", &valid);
    let (head, _) = good.rsplit_once('.').expect("a JWT");
    let bearer = |t: String| Some(format!("Bearer {t}"));
    vec![
        HostileCase { name: "missing", authorization: None },
        HostileCase { name: "not a bearer token", authorization: Some("Basic YWxpY2U6c2VjcmV0".into()) },
        HostileCase { name: "malformed", authorization: bearer("not.a.jwt".into()) },
        HostileCase { name: "empty bearer", authorization: Some("Bearer ".into()) },
        HostileCase { name: "wrong signature", authorization: bearer(issuer.sign_as("rsa-2", "rsa-1", &valid)) },
        HostileCase { name: "tampered signature", authorization: bearer(format!("{head}.AAAA")) },
        HostileCase { name: "alg none", authorization: bearer(unsigned(&valid)) },
        HostileCase { name: "expired", authorization: bearer(issuer.sign("rsa-1", &with("exp", json!(now - 120)))) },
        HostileCase {
            name: "not yet valid",
            authorization: bearer(issuer.sign("rsa-1", &with("nbf", json!(now + 120)))),
        },
        HostileCase {
            name: "wrong issuer",
            authorization: bearer(issuer.sign("rsa-1", &with("iss", json!("https://evil.example")))),
        },
        HostileCase {
            name: "wrong audience",
            authorization: bearer(issuer.sign("rsa-1", &with("aud", json!("another-api")))),
        },
        HostileCase { name: "no subject", authorization: bearer(issuer.sign("rsa-1", &without("sub"))) },
        HostileCase { name: "no expiry", authorization: bearer(issuer.sign("rsa-1", &without("exp"))) },
        HostileCase { name: "unknown kid", authorization: bearer(issuer.sign_as("rsa-1", "no-such-key", &valid)) },
        HostileCase {
            name: "HS256 signed with the RSA public key",
            authorization: bearer(hs256(RSA_1_PUBLIC.as_bytes(), "rsa-1", &valid)),
        },
    ]
}
