//! Request quotas per route (`rate_limits` in configuration), keyed by the token's subject
//! when the caller is authenticated and by the client's address otherwise.
//!
//! Built on `governor` (the GCRA limiter `tower_governor` wraps) rather than on
//! `tower_governor`'s layer: that layer carries one quota, so per-route quotas from
//! configuration would need a layer on every route of every service, while one middleware
//! here looks the route's quota up. Limits are per instance: two instances of a service
//! let twice the traffic through.
//!
//! A change of `rate_limits` in a watched configuration file ([`crate::live`]) rebuilds the
//! limiters with the new quotas: callers start again with a full burst.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode},
};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use tokio_util::sync::CancellationToken;

use super::{ApiError, ProblemType};
use crate::{
    auth::Principal,
    config::{RateLimit, RateLimitSettings},
    live::LiveSettings,
};

type Limiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// `X-RateLimit-Limit`: the burst the caller's quota allows.
pub const LIMIT_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: requests left in the burst.
pub const REMAINING_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-remaining");

struct Policy {
    limiter: Limiter,
    burst: NonZeroU32,
}

impl Policy {
    fn new(limit: &RateLimit) -> Self {
        // One request every `per / requests`, up to `burst` at once. (Not governor's
        // `per_second(n)`, which would mean one request every n seconds.)
        let interval = limit.per / limit.requests.get();
        let quota = Quota::with_period(interval.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(limit.requests))
            .allow_burst(limit.burst);
        Self { limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(), burst: limit.burst }
    }
}

/// Every quota of this process. Clones share the quotas, and a change ([`RateLimits::update`])
/// applies to every clone.
#[derive(Clone)]
pub struct RateLimits {
    inner: Arc<RwLock<Arc<Inner>>>,
}

struct Inner {
    routes: HashMap<(Method, String), Policy>,
    authenticated: Policy,
    anonymous: Policy,
    trusted_proxies: Vec<IpAddr>,
}

impl Inner {
    fn new(settings: &RateLimitSettings) -> Self {
        let routes = settings
            .routes
            .iter()
            .filter_map(|(route, limit)| {
                let (method, path) = route.split_once(' ')?;
                Some(((Method::from_bytes(method.as_bytes()).ok()?, path.to_owned()), Policy::new(limit)))
            })
            .collect();
        Self {
            routes,
            authenticated: Policy::new(&settings.authenticated),
            anonymous: Policy::new(&settings.anonymous),
            trusted_proxies: settings.trusted_proxies.clone(),
        }
    }
}

impl RateLimits {
    /// The quotas of `settings`; forgets idle callers every minute until `shutdown`.
    pub fn new(settings: &RateLimitSettings, shutdown: &CancellationToken) -> Self {
        let limits = Self { inner: Arc::new(RwLock::new(Arc::new(Inner::new(settings)))) };
        let sweeping = Arc::downgrade(&limits.inner);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                let Some(limits) = sweeping.upgrade() else { return };
                let inner = Self { inner: limits }.current();
                for policy in inner.routes.values().chain([&inner.authenticated, &inner.anonymous]) {
                    policy.limiter.retain_recent();
                    policy.limiter.shrink_to_fit();
                }
            }
        });
        limits
    }

    /// Puts the quotas of `settings` in force, with new limiters: every caller starts again
    /// with the full burst of its new quota.
    pub fn update(&self, settings: &RateLimitSettings) {
        let inner = Arc::new(Inner::new(settings));
        match self.inner.write() {
            Ok(mut current) => *current = inner,
            Err(poisoned) => *poisoned.into_inner() = inner,
        }
        tracing::info!("rate limits changed");
    }

    /// Applies every change of `rate_limits` in `live`, until `shutdown`.
    pub fn follow(&self, live: &LiveSettings, shutdown: &CancellationToken) {
        let limits = self.clone();
        live.follow(shutdown, |s| s.rate_limits.clone(), move |quotas| limits.update(quotas));
    }

    /// The quotas in force.
    fn current(&self) -> Arc<Inner> {
        // Replaced whole, never left half-changed: a poisoned lock holds a good value.
        match self.inner.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Who the request counts against: `sub:<subject>`, or `ip:<client address>`.
    pub fn key(&self, request: &Request, principal: Option<&Principal>) -> String {
        match principal {
            Some(p) => format!("sub:{}", p.subject()),
            None => format!("ip:{}", self.client_ip(request).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())),
        }
    }

    /// The client's address: the socket's peer, or — when the peer is a trusted proxy — the
    /// nearest address in `X-Forwarded-For` that is not one of the trusted proxies.
    fn client_ip(&self, request: &Request) -> Option<IpAddr> {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())?;
        let inner = self.current();
        let trusted = |ip: &IpAddr| inner.trusted_proxies.contains(ip);
        if !trusted(&peer) {
            return Some(peer);
        }
        let forwarded = request.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let hops: Vec<IpAddr> = forwarded.flat_map(|v| v.split(',')).filter_map(|h| h.trim().parse().ok()).collect();
        Some(hops.into_iter().rev().find(|ip| !trusted(ip)).unwrap_or(peer))
    }

    /// Takes one request from `key`'s quota for this route: the headers to add to the
    /// response, or the 429 to answer.
    pub fn check(
        &self,
        method: &Method,
        route: Option<&str>,
        authenticated: bool,
        key: &String,
    ) -> Result<[(HeaderName, HeaderValue); 2], ApiError> {
        let inner = self.current();
        let policy = route
            .and_then(|r| inner.routes.get(&(method.clone(), r.to_owned())))
            .unwrap_or(if authenticated { &inner.authenticated } else { &inner.anonymous });
        let limit = HeaderValue::from(policy.burst.get());
        match policy.limiter.check_key(key) {
            Ok(state) => {
                Ok([(LIMIT_HEADER, limit), (REMAINING_HEADER, HeaderValue::from(state.remaining_burst_capacity()))])
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let route = route.unwrap_or("unmatched").to_owned();
                metrics::counter!("petstore_rate_limited_total", "route" => route).increment(1);
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ProblemType::RateLimited,
                    format!("rate limit of this route reached; retry in {} s", secs.max(1)),
                )
                .retry_after(secs.max(1))
                .with_header(LIMIT_HEADER, limit)
                .with_header(REMAINING_HEADER, HeaderValue::from(0)))
            }
        }
    }
}
