//! An OIDC issuer's signing keys: the discovery document
//! (`<issuer>/.well-known/openid-configuration`) names the JWKS, whose keys are cached by
//! `kid`, refreshed periodically, and fetched again when a token names a `kid` the cache does
//! not have — at most once per cooldown, so a flood of tokens with made-up `kid`s cannot make
//! the service hammer the issuer.
//!
//! Written here rather than taken from a crate: `jsonwebtoken` parses a JWKS but neither
//! fetches nor caches it, and the axum JWT crates either lag axum's version or do not refetch
//! on an unknown `kid`.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::AuthError;

/// How the key cache talks to the issuer.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// The issuer's URL, without a trailing `/`; tokens' `iss` must equal it.
    pub issuer_url: String,
    /// How often the keys are fetched again while all is well.
    pub refresh: Duration,
    /// The least time between two fetches caused by unknown `kid`s (or by retrying an issuer
    /// that is down).
    pub refetch_cooldown: Duration,
    /// Longest one HTTP request to the issuer may take.
    pub timeout: Duration,
}

/// The cached keys of one issuer. Cheap to clone.
#[derive(Clone)]
pub struct Jwks {
    inner: Arc<Inner>,
}

struct Inner {
    config: JwksConfig,
    http: reqwest::Client,
    /// `None` until the first successful fetch.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching, so concurrent misses make one fetch; remembers when the last
    /// fetch started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

/// Keys by `kid`, each with the one algorithm it may verify.
type KeySet = HashMap<String, (DecodingKey, Algorithm)>;

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

/// Why the keys could not be fetched (logged, never shown to clients).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The issuer could not be reached or answered an error status.
    #[error("{what}: {source}")]
    Http {
        /// Which document.
        what: &'static str,
        /// The HTTP failure.
        #[source]
        source: reqwest::Error,
    },
    /// The discovery document names another issuer.
    #[error("the discovery document names issuer `{found}`, not `{expected}`")]
    IssuerMismatch {
        /// What the configuration says.
        expected: String,
        /// What the issuer says.
        found: String,
    },
    /// The JWKS holds no RS256 or ES256 signing key.
    #[error("the JWKS has no usable signing key (RS256 or ES256 with a kid)")]
    NoKeys,
}

impl Jwks {
    /// A cache with no keys yet; [`Jwks::spawn_refresh`] or the first token fills it.
    pub fn new(config: JwksConfig) -> Self {
        let http =
            reqwest::Client::builder().timeout(config.timeout).build().unwrap_or_else(|_| reqwest::Client::new());
        Self {
            inner: Arc::new(Inner { config, http, keys: RwLock::new(None), fetching: tokio::sync::Mutex::new(None) }),
        }
    }

    /// Fetches the keys now and then every `refresh` (every `refetch_cooldown` while the
    /// issuer fails), until `shutdown`.
    pub fn spawn_refresh(&self, shutdown: CancellationToken) {
        let jwks = self.clone();
        tokio::spawn(async move {
            loop {
                let pause = match jwks.fetch().await {
                    Ok(()) => jwks.inner.config.refresh,
                    Err(_) => jwks.inner.config.refetch_cooldown,
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        });
    }

    /// The key with `kid` and its algorithm. An unknown `kid` triggers one fetch unless one
    /// happened within the cooldown; with no keys at all the issuer is unavailable.
    pub async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        if let Some(found) = self.cached(kid) {
            return Ok(found);
        }
        self.fetch_unless_recent().await;
        if let Some(found) = self.cached(kid) {
            return Ok(found);
        }
        if self.current().is_none() { Err(AuthError::IssuerUnavailable) } else { Err(AuthError::UnknownKey) }
    }

    /// Whether keys have been fetched at least once.
    pub fn ready(&self) -> bool {
        self.current().is_some()
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.inner.keys.read().map_or(None, |k| k.clone())
    }

    fn cached(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        self.current().and_then(|keys| keys.get(kid).cloned())
    }

    /// Fetches unless another fetch started within the cooldown (waiting for a fetch in
    /// progress instead of starting a second one).
    async fn fetch_unless_recent(&self) {
        let mut last = self.inner.fetching.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.inner.config.refetch_cooldown) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.load().await {
            tracing::warn!(issuer = %self.inner.config.issuer_url, error = %e, "could not fetch the issuer's keys");
        }
    }

    /// Fetches now (the periodic refresh), recording the attempt for the cooldown.
    async fn fetch(&self) -> Result<(), FetchError> {
        let mut last = self.inner.fetching.lock().await;
        *last = Some(Instant::now());
        let loaded = self.load().await;
        if let Err(e) = &loaded {
            tracing::warn!(issuer = %self.inner.config.issuer_url, error = %e, "could not fetch the issuer's keys");
        }
        loaded
    }

    async fn load(&self) -> Result<(), FetchError> {
        let outcome = self.download().await;
        let label = if outcome.is_ok() { "ok" } else { "error" };
        metrics::counter!("petstore_jwks_fetches_total", "outcome" => label).increment(1);
        let keys = outcome?;
        tracing::info!(issuer = %self.inner.config.issuer_url, keys = keys.len(), "fetched the issuer's signing keys");
        if let Ok(mut current) = self.inner.keys.write() {
            *current = Some(Arc::new(keys));
        }
        Ok(())
    }

    async fn download(&self) -> Result<KeySet, FetchError> {
        let expected = &self.inner.config.issuer_url;
        let discovery: Discovery =
            self.get_json("discovery document", &format!("{expected}/.well-known/openid-configuration")).await?;
        if discovery.issuer.trim_end_matches('/') != expected {
            return Err(FetchError::IssuerMismatch { expected: expected.clone(), found: discovery.issuer });
        }
        let raw: RawKeySet = self.get_json("JWKS", &discovery.jwks_uri).await?;
        let keys: KeySet = raw.keys.into_iter().filter_map(usable).collect();
        if keys.is_empty() {
            return Err(FetchError::NoKeys);
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, what: &'static str, url: &str) -> Result<T, FetchError> {
        let http = |source| FetchError::Http { what, source };
        self.inner
            .http
            .get(url)
            .send()
            .await
            .map_err(http)?
            .error_for_status()
            .map_err(http)?
            .json()
            .await
            .map_err(http)
    }
}

/// A signing key this API verifies with: RSA (RS256) or EC P-256 (ES256), with a `kid`, not
/// marked for encryption. Anything else in the set (encryption keys, other algorithms) is
/// skipped, not an error.
fn usable(raw: serde_json::Value) -> Option<(String, (DecodingKey, Algorithm))> {
    let jwk: Jwk = serde_json::from_value(raw).ok()?;
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256)) if p.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, (key, algorithm)))
}
