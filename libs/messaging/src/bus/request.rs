//! Request/reply: a request carries the requester's private reply channel and a deadline;
//! replies are matched to waiting requesters by causation id. Serving answers through a
//! [`Responder`] at the end of the usual middleware chain.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::{sync::oneshot, time::Instant};
use tracing::{debug, warn};
use uuid::Uuid;

use super::{Bus, Route, Subscription};
use crate::{Backend, BusError, Envelope, Handler, HandlerError, Pattern, Responder, StartFrom, SubscribeOptions};

/// Answers a request through a responder and sends the reply where the request asks: the
/// handler at the end of a `serve` subscription's middleware chain.
struct Answer {
    backend: Arc<dyn Backend>,
    channel: String,
    responder: Arc<dyn Responder>,
}

#[async_trait::async_trait]
impl Handler for Answer {
    async fn handle(&self, request: Envelope) -> Result<(), HandlerError> {
        let reply_to =
            request.reply_to.as_deref().ok_or_else(|| HandlerError::fatal("request without a `replyto` attribute"))?;
        let expired = request
            .extensions
            .get(crate::REQUEST_DEADLINE)
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
            .is_some_and(|d| d < chrono::Utc::now());
        if expired {
            debug!(request = %request.id, "request expired before it was answered; skipped");
            metrics::counter!("petstore_requests_expired_total", "channel" => self.channel.clone()).increment(1);
            return Ok(());
        }
        let mut reply = self.responder.respond(request.clone()).await?;
        reply.causation_id = Some(request.id.to_string());
        reply.correlation_id.clone_from(&request.correlation_id);
        self.backend.publish(reply_to, &reply).await.map_err(HandlerError::from)
    }
}

impl Bus {
    /// Sends a request and waits up to `timeout` for its reply. When the channel's backend
    /// fails (the request cannot be sent, or not within half of `timeout`) and a fallback
    /// backend is configured, the request goes there with the time that is left; a request
    /// that was sent but got no reply is not sent again.
    pub async fn request(&self, channel: &str, envelope: Envelope, timeout: Duration) -> Result<Envelope, BusError> {
        let route = self.route(channel, &[Pattern::RequestResponse], "request")?;
        let Some(fallback) = route.fallback.as_deref() else {
            return self.request_on(route, envelope, timeout, timeout).await;
        };
        let started = Instant::now();
        match self.request_on(route, envelope.clone(), timeout, timeout / 2).await {
            Err(error @ BusError::Backend { .. }) => {
                let left = timeout.saturating_sub(started.elapsed());
                warn!(channel, from = route.backend.name(), to = fallback.backend.name(), %error,
                    "request failed on its backend; sending it through the fallback");
                metrics::counter!("petstore_requests_fallback_total",
                    "channel" => channel.to_owned(), "from" => route.backend.name(), "to" => fallback.backend.name())
                .increment(1);
                self.request_on(fallback, envelope, left, left).await
            }
            other => other,
        }
    }

    /// Sends a request on `route` (giving up on sending after `send_limit`) and waits for
    /// its reply until `timeout` has passed since the call.
    async fn request_on(
        &self,
        route: &Route,
        mut envelope: Envelope,
        timeout: Duration,
        send_limit: Duration,
    ) -> Result<Envelope, BusError> {
        let started = Instant::now();
        let unsent =
            |what: &str| BusError::transient(route.backend.name(), format!("{what} not done within {send_limit:?}"));
        envelope.reply_to = Some(
            tokio::time::timeout(send_limit, self.reply_channel(route))
                .await
                .map_err(|_| unsent("opening the reply channel"))??,
        );
        // Responders skip a request whose requester has stopped waiting (one that sat in a
        // queue while the responder was down, say).
        let deadline = chrono::Utc::now() + timeout.saturating_sub(started.elapsed());
        envelope
            .extensions
            .insert(crate::REQUEST_DEADLINE.to_owned(), deadline.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let (tx, rx) = oneshot::channel();
        let id = envelope.id;
        self.pending().insert(id, tx);
        let result = async {
            let send_left = send_limit.saturating_sub(started.elapsed());
            tokio::time::timeout(send_left, Self::publish_on(route, &route.physical, &envelope))
                .await
                .map_err(|_| unsent("publishing the request"))??;
            match tokio::time::timeout(timeout.saturating_sub(started.elapsed()), rx).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) => Err(BusError::Closed),
                Err(_) => Err(BusError::Timeout { channel: route.channel.clone(), timeout }),
            }
        }
        .await;
        self.pending().remove(&id);
        result
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Envelope>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The private reply channel of this bus on the route's backend, started on first use.
    async fn reply_channel(&self, route: &Route) -> Result<String, BusError> {
        let mut channels = self.inner.reply_channels.lock().await;
        if let Some(name) = channels.get(&route.kind) {
            return Ok(name.clone());
        }
        let name = format!("{}replies.{}.{}", self.inner.prefix, self.inner.service, Uuid::now_v7().simple());
        route.backend.declare(&name, 1).await?;
        let mut consumer =
            route.backend.subscribe(&name, SubscribeOptions { group: None, start: StartFrom::Earliest }).await?;
        let bus = self.clone();
        let cancel = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            loop {
                let batch = tokio::select! {
                    () = cancel.cancelled() => break,
                    batch = consumer.receive(64, Duration::ZERO) => batch,
                };
                match batch {
                    Ok(deliveries) => {
                        for d in deliveries {
                            bus.complete_request(&d.envelope);
                            let _ = consumer.ack(&d).await;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "reply consumer failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            consumer.close().await;
        });
        channels.insert(route.kind, name.clone());
        Ok(name)
    }

    fn complete_request(&self, reply: &Envelope) {
        let waiter = reply
            .causation_id
            .as_deref()
            .and_then(|c| Uuid::parse_str(c).ok())
            .and_then(|id| self.pending().remove(&id));
        match waiter {
            Some(tx) => {
                let _ = tx.send(reply.clone());
            }
            None => debug!(reply = %reply.id, "reply to a request nobody waits for any more"),
        }
    }

    /// Answers requests on a request/response channel; the reply goes back to the
    /// requester's reply channel with the request's id as its causation id. With a fallback
    /// backend configured the channel is served on it as well, so that requests that fall
    /// back are answered.
    pub async fn serve(&self, channel: &str, group: &str, responder: impl Responder) -> Result<Subscription, BusError> {
        let route = self.route(channel, &[Pattern::RequestResponse], "serve")?.clone();
        let responder: Arc<dyn Responder> = Arc::new(responder);
        let mut consumers = Vec::new();
        for route in std::iter::once(route.clone()).chain(route.fallback.as_deref().cloned()) {
            let answer =
                Answer { backend: route.backend.clone(), channel: route.channel.clone(), responder: responder.clone() };
            let plan = self.durable(route, group, None, Arc::new(answer), self.inner.retry);
            let subscription = self.spawn(plan).await;
            match subscription {
                Ok(s) => consumers.extend(s.consumers),
                Err(e) => {
                    Subscription { consumers }.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(Subscription { consumers })
    }
}
