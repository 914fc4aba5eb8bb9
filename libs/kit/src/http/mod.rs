//! HTTP conventions shared by every service (ARCHITECTURE.md §5).

mod correlation;
mod customer;
mod error;
mod json;
mod observe;

pub use correlation::{CORRELATION_HEADER, CorrelationId, current_correlation_id};
pub use customer::{CUSTOMER_HEADER, CustomerId};
pub use error::{ApiError, ProblemType};
pub use json::Json;
pub use observe::{TRACE_ID_HEADER, layers, ops_router};
