use std::time::Duration;

/// Errors of the bus and its backends.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The configuration is invalid; the message names the offending key.
    #[error("invalid messaging configuration: {0}")]
    Config(String),
    /// The channel is not declared in the configuration.
    #[error("unknown channel `{0}`: declare it under messaging.channels")]
    UnknownChannel(String),
    /// The backend cannot serve this pattern.
    #[error("backend `{backend}` does not support {pattern} (channel `{channel}`)")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// The pattern asked for.
        pattern: &'static str,
        /// The channel.
        channel: String,
    },
    /// The backend failed; `retriable` says whether trying again may help.
    #[error("{backend} backend: {message}")]
    Backend {
        /// The backend.
        backend: &'static str,
        /// What went wrong.
        message: String,
        /// Whether a retry may succeed.
        retriable: bool,
    },
    /// A request got no reply in time.
    #[error("no reply on `{channel}` within {timeout:?}")]
    Timeout {
        /// The channel the request went to.
        channel: String,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// A message could not be encoded or decoded.
    #[error("malformed message: {0}")]
    Codec(String),
    /// The bus is shutting down.
    #[error("the bus is shutting down")]
    Closed,
}

impl BusError {
    /// A backend failure that may go away on retry (a connection drop, a broker restart).
    pub fn transient(backend: &'static str, message: impl ToString) -> Self {
        Self::Backend { backend, message: message.to_string(), retriable: true }
    }

    /// A backend failure that will not go away by retrying.
    pub fn permanent(backend: &'static str, message: impl ToString) -> Self {
        Self::Backend { backend, message: message.to_string(), retriable: false }
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Backend { retriable: true, .. } | Self::Timeout { .. })
    }
}

/// What a message handler reports when it cannot process a message.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Try again later (a database or network hiccup): retried with backoff, then dead-lettered.
    #[error("{0}")]
    Retriable(String),
    /// The message can never be processed (malformed, unknown type): dead-lettered at once.
    #[error("{0}")]
    Fatal(String),
}

impl HandlerError {
    /// A retriable failure from any error.
    pub fn retriable(e: impl std::fmt::Display) -> Self {
        Self::Retriable(e.to_string())
    }

    /// A fatal failure from any error.
    pub fn fatal(e: impl std::fmt::Display) -> Self {
        Self::Fatal(e.to_string())
    }
}

impl From<BusError> for HandlerError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Codec(m) => Self::Fatal(m),
            other => Self::Retriable(other.to_string()),
        }
    }
}
