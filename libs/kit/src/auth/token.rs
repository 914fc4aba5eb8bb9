use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::config::AuthSettings;

/// What `petstore token` is asked for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `sub`: for a customer, the customer id.
    pub subject: String,
    /// `roles`.
    pub roles: Vec<String>,
    /// `tier`, when given.
    pub tier: Option<String>,
    /// How long the token is valid from now.
    pub ttl: Duration,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<&'a str>,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// Signs a token the configured development key source accepts (HS256 with
/// `auth.hs256_secret`, `auth.issuer` and `auth.audience`). With an OIDC issuer configured
/// there is no secret to sign with: tokens come from the issuer, and this says so.
pub fn mint(settings: &AuthSettings, request: &TokenRequest) -> Result<String, String> {
    if !settings.oidc_issuer_url.is_empty() {
        return Err(format!(
            "auth.oidc_issuer_url is set ({}): tokens come from that issuer, not from this command",
            settings.oidc_issuer_url
        ));
    }
    if request.subject.trim().is_empty() {
        return Err("the subject (--sub) must not be empty".into());
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: &request.subject,
        roles: &request.roles,
        tier: request.tier.as_deref(),
        iss: &settings.issuer,
        aud: &settings.audience,
        iat: now,
        nbf: now,
        exp: now.saturating_add(request.ttl.as_secs()),
    };
    let key =
        EncodingKey::from_secret(settings.hs256_secret.as_bytes()).map_err(|e| format!("auth.hs256_secret: {e}"))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(|e| format!("signing the token: {e}"))
}
