use axum::{extract::FromRequestParts, http::request::Parts};

use crate::http::{ApiError, ProblemType};

/// A role the API knows. Roles a token carries that are not here are kept (for logs) but
/// grant nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Places orders and reads its own.
    Customer,
    /// Operates the store: sagas, dead letters, audit trail, catalog changes, any order.
    Admin,
}

impl Role {
    /// The role's name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }
}

/// The authenticated caller of a request: the token's subject, roles and tier. Handlers of
/// protected routes take it (or [`Customer`] / [`Admin`]) as an extractor; the
/// authentication layer has already verified the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    subject: String,
    roles: Vec<String>,
    tier: Option<String>,
}

impl Principal {
    /// A caller with these claims.
    pub fn new(subject: String, mut roles: Vec<String>, tier: Option<String>) -> Self {
        roles.sort();
        roles.dedup();
        Self { subject, roles, tier }
    }

    /// The token's `sub`: for a customer, the customer id.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Every role the token carries.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// The `tier` claim, when the token has one.
    pub fn tier(&self) -> Option<&str> {
        self.tier.as_deref()
    }

    /// Whether the caller has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|r| r == role.as_str())
    }

    /// Whether the caller may see something `owner` owns: its owner, or an admin.
    pub fn may_see(&self, owner: &str) -> bool {
        self.subject == owner || self.has(Role::Admin)
    }

    /// `Ok` when the caller has `role`, else the 403 to answer (counted as a rejection).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.has(role) {
            return Ok(());
        }
        metrics::counter!("petstore_auth_rejections_total", "reason" => "missing_role").increment(1);
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            ProblemType::Forbidden,
            format!("this route needs the `{}` role", role.as_str()),
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Absent only on a public route whose handler asks for a caller anyway: treat it as
        // any request without a token.
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| crate::http::unauthenticated(&super::AuthError::Missing))
    }
}

/// On a public route: the caller when it sent a valid token, else `None`.
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

/// A caller with the `customer` role; its subject is the customer id.
#[derive(Debug, Clone)]
pub struct Customer(pub Principal);

impl Customer {
    /// The customer id (the token's subject).
    pub fn id(&self) -> &str {
        self.0.subject()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        principal.require(Role::Customer)?;
        Ok(Self(principal))
    }
}

/// A caller with the `admin` role.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        principal.require(Role::Admin)?;
        Ok(Self(principal))
    }
}

/// Middleware for a router whose every route needs `role`: add it with
/// `router.route_layer(axum::middleware::from_fn_with_state(Role::Admin, kit::auth::require_role))`.
pub async fn require_role(
    axum::extract::State(role): axum::extract::State<Role>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let allowed = match request.extensions().get::<Principal>() {
        Some(principal) => principal.require(role),
        None => Err(crate::http::unauthenticated(&super::AuthError::Missing)),
    };
    match allowed {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// A router whose every route needs `role` (checked after authentication, before the
/// handler runs).
pub fn only<S: Clone + Send + Sync + 'static>(role: Role, router: axum::Router<S>) -> axum::Router<S> {
    router.route_layer(axum::middleware::from_fn_with_state(role, require_role))
}
