//! Who is calling: bearer JWTs checked on every request (signature, `exp`, `nbf`, `iss`,
//! `aud`), the caller's roles, and the extractors handlers ask for ([`Principal`],
//! [`Customer`], [`Admin`]).
//!
//! Keys come from one of two sources, fixed by configuration:
//! - an OIDC issuer (`auth.oidc_issuer_url`): its discovery document names its JWKS, whose
//!   RS256 and ES256 keys are cached and refreshed ([`jwks`]);
//! - a shared HS256 secret (`auth.hs256_secret`), for development and the all-in-one mode.
//!
//! Each key allows exactly one algorithm, so a token cannot choose how it is checked: `none`
//! does not exist here, an HS256 token against an RSA key is refused, and `jku`, `x5u` or an
//! embedded `jwk` in a token's header are never looked at — only its `kid` is.

pub mod jwks;
mod principal;
mod token;

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use principal::{Admin, Customer, Principal, Role, only, require_role};
pub use token::{TokenRequest, mint};

use crate::config::{AuthSettings, ConfigError};

/// Why a request was not let in. Its [`reason`](AuthError::reason) is the label of
/// `petstore_auth_rejections_total`; its text is what the client reads, and names nothing
/// internal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header on a protected route.
    #[error("this route needs a bearer token (`Authorization: Bearer <token>`)")]
    Missing,
    /// The header or the token is not a well-formed bearer JWT.
    #[error("the bearer token is malformed")]
    Malformed,
    /// The token's signature does not verify.
    #[error("the token's signature is not valid")]
    BadSignature,
    /// The token names an algorithm its key does not allow.
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still ahead.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the token was issued by an issuer this service does not trust")]
    WrongIssuer,
    /// `aud` does not include this API.
    #[error("the token is not meant for this API")]
    WrongAudience,
    /// A claim the API needs (`sub`, `exp`, `iss`, `aud`) is missing or mistyped.
    #[error("the token lacks a required claim")]
    MissingClaim,
    /// No key of the issuer has the token's `kid`, even after looking again.
    #[error("the token was signed with a key this service does not know")]
    UnknownKey,
    /// The issuer's keys could not be fetched yet: the service cannot check any token.
    #[error("the identity provider is unreachable; try again shortly")]
    IssuerUnavailable,
}

impl AuthError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Algorithm => "algorithm",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim => "missing_claim",
            Self::UnknownKey => "unknown_key",
            Self::IssuerUnavailable => "issuer_unavailable",
        }
    }

    fn from_jwt(e: &jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                Self::Algorithm
            }
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) | ErrorKind::InvalidSubject => {
                Self::MissingClaim
            }
            _ => Self::Malformed,
        }
    }
}

/// The claims the API reads. Anything else in a token is ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
    /// Keycloak puts realm roles here.
    #[serde(default)]
    realm_access: Option<RealmAccess>,
    #[serde(default)]
    tier: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RealmAccess {
    #[serde(default)]
    roles: Vec<String>,
}

/// Where verification keys come from.
enum Keys {
    /// One shared HS256 secret (development).
    Shared(DecodingKey),
    /// An OIDC issuer's JWKS.
    Oidc(jwks::Jwks),
}

struct Inner {
    keys: Keys,
    /// `iss` every token must carry.
    issuer: String,
    audience: String,
    leeway: Duration,
}

/// Checks bearer tokens against the configured key source. Cheap to clone; one per process.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.inner.keys {
            Keys::Shared(_) => "hs256",
            Keys::Oidc(_) => "oidc",
        };
        f.debug_struct("Authenticator").field("source", &source).field("issuer", &self.inner.issuer).finish()
    }
}

impl Authenticator {
    /// Builds the configured key source. With an OIDC issuer this starts fetching its keys
    /// in the background (and refreshing them until `shutdown`): the service starts even
    /// while the issuer is down, and answers 503 on protected routes until the keys arrive.
    pub fn from_settings(settings: &AuthSettings, shutdown: &CancellationToken) -> Result<Self, ConfigError> {
        let (keys, issuer) = if settings.oidc_issuer_url.is_empty() {
            let key = DecodingKey::from_secret(settings.hs256_secret.as_bytes())
                .map_err(|e| ConfigError(format!("auth.hs256_secret: {e}")))?;
            (Keys::Shared(key), settings.issuer.clone())
        } else {
            let jwks = jwks::Jwks::new(jwks::JwksConfig {
                issuer_url: settings.oidc_issuer_url.trim_end_matches('/').to_owned(),
                refresh: settings.jwks_refresh,
                refetch_cooldown: settings.jwks_refetch_cooldown,
                timeout: settings.jwks_timeout,
            });
            jwks.spawn_refresh(shutdown.clone());
            (Keys::Oidc(jwks), settings.oidc_issuer_url.trim_end_matches('/').to_owned())
        };
        Ok(Self {
            inner: Arc::new(Inner { keys, issuer, audience: settings.audience.clone(), leeway: settings.leeway }),
        })
    }

    /// Verifies `token` and says who it names.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let (key, algorithm) = match &self.inner.keys {
            Keys::Shared(key) => (key.clone(), Algorithm::HS256),
            Keys::Oidc(jwks) => {
                let kid = header.kid.as_deref().ok_or(AuthError::UnknownKey)?;
                jwks.key(kid).await?
            }
        };
        if header.alg != algorithm {
            return Err(AuthError::Algorithm);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation(algorithm))
            .map_err(|e| AuthError::from_jwt(&e))?
            .claims;
        if claims.sub.trim().is_empty() || claims.sub.len() > 128 {
            return Err(AuthError::MissingClaim);
        }
        let mut roles = claims.roles;
        roles.extend(claims.realm_access.into_iter().flat_map(|r| r.roles));
        Ok(Principal::new(claims.sub, roles, claims.tier))
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = self.inner.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_audience(&[&self.inner.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation
    }
}
