//! `fault_handler_failure_rate`: a bus middleware that fails that share of message-handling
//! attempts, evaluated per message with the message's `channel` in the context — so a drill
//! targets one channel (`{"==": [{"var": "channel"}, "payment-commands"]}`) and leaves the
//! others alone. The failure is a retriable handler error, raised where the handler would run:
//! the bus retries it with backoff and dead-letters what keeps failing, exactly as it does a
//! real failure.

use async_trait::async_trait;
use messaging::{Delivered, Envelope, HandlerError, Middleware, Next};

use super::{EvaluationContext, Flags};

/// The flag.
pub const FLAG: &str = "fault_handler_failure_rate";

/// The middleware; add it to a service's bus with `Bus::add_middleware` before subscribing.
pub struct HandlerFaults {
    flags: Flags,
}

impl HandlerFaults {
    /// Injects failures as `flags` say.
    pub fn new(flags: Flags) -> Self {
        Self { flags }
    }
}

#[async_trait]
impl Middleware for HandlerFaults {
    async fn call(&self, message: Envelope, delivered: &Delivered<'_>, next: Next<'_>) -> Result<(), HandlerError> {
        let context = EvaluationContext::new().with("channel", delivered.channel);
        let rate = self.flags.number(FLAG, &context).clamp(0.0, 1.0);
        if rate > 0.0 && rand::random_bool(rate) {
            metrics::counter!("petstore_faults_injected_total", "flag" => FLAG, "channel" => delivered.channel.to_owned())
                .increment(1);
            tracing::debug!(channel = delivered.channel, message = %message.id, rate, "handler failure injected");
            return Err(HandlerError::retriable(format!("{FLAG} injected a handler failure (rate {rate})")));
        }
        next.run(message, delivered).await
    }
}
