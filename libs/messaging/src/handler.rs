use std::{future::Future, time::Duration};

use async_trait::async_trait;

use crate::{Envelope, HandlerError, StartFrom};

/// Processes one message. Called again for the same message after a retriable error or a
/// redelivery, so it must be idempotent (the services use an inbox).
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles `message`; `Ok` acknowledges it.
    async fn handle(&self, message: Envelope) -> Result<(), HandlerError>;
}

#[async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(Envelope) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn handle(&self, message: Envelope) -> Result<(), HandlerError> {
        self(message).await
    }
}

/// Answers a request with a reply envelope.
#[async_trait]
pub trait Responder: Send + Sync + 'static {
    /// Builds the reply to `request`.
    async fn respond(&self, request: Envelope) -> Result<Envelope, HandlerError>;
}

#[async_trait]
impl<F, Fut> Responder for F
where
    F: Fn(Envelope) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Envelope, HandlerError>> + Send + 'static,
{
    async fn respond(&self, request: Envelope) -> Result<Envelope, HandlerError> {
        self(request).await
    }
}

/// Processes a batch of messages from a stream; messages of one key come in order.
#[async_trait]
pub trait BatchProcessor: Send + Sync + 'static {
    /// Processes the batch; `Ok` acknowledges all of it.
    async fn process(&self, batch: Vec<Envelope>) -> Result<(), HandlerError>;
}

#[async_trait]
impl<F, Fut> BatchProcessor for F
where
    F: Fn(Vec<Envelope>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn process(&self, batch: Vec<Envelope>) -> Result<(), HandlerError> {
        self(batch).await
    }
}

/// How [`crate::Bus::process_stream`] batches a stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Largest batch handed to the processor.
    pub batch_size: usize,
    /// How long to wait for a batch to fill once its first message is there.
    pub max_wait: Duration,
    /// Where a new group starts.
    pub start: StartFrom,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self { batch_size: 100, max_wait: Duration::from_millis(50), start: StartFrom::Earliest }
    }
}
