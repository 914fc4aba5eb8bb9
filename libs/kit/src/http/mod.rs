//! HTTP conventions shared by every service: problem+json errors, correlation ids, the gate
//! (authentication, rate limits, body limits), security headers, ops routes and the API
//! description.

mod body;
mod correlation;
pub mod docs;
mod error;
mod guard;
mod json;
mod limits;
mod observe;

pub use body::{BodyLimits, too_large};
pub use correlation::{CORRELATION_HEADER, CorrelationId, current_correlation_id};
pub use error::{ApiError, Problem, ProblemType};
pub use guard::{Gate, PUBLIC_ROUTES, is_public, unauthenticated};
pub use json::Json;
pub use limits::{LIMIT_HEADER, REMAINING_HEADER, RateLimits};
pub use observe::{TRACE_ID_HEADER, layers, ops_router};
