//! The payment provider: who says yes or no to a charge.
//!
//! A charge is *authorized* by the provider before the payment is recorded, and *captured* by
//! recording it (in the same transaction as the reply). The provider is called outside that
//! transaction, so an authorization whose record loses a race (a refund voided the saga
//! meanwhile, or a redelivery recorded it first) is never captured and lapses, as uncaptured
//! card authorizations do.
//!
//! [`GuardedProvider`] puts every call behind a timeout, bounded retries with exponential
//! backoff and jitter, and the `payment_provider` circuit breaker. While the provider cannot
//! be reached the charge is declined at once with a clear reason, so the saga compensates in
//! seconds and releases the pet instead of waiting out its step deadline.
//!
//! Started by the service, both read `services.payment.provider` in force at every charge: a
//! change in a watched configuration file (timeout, attempts, simulated latency and failure
//! rate) applies to the next charge without a restart.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use contracts::{PaymentMethod, channels, payment::ProcessPayment};
use kit::{
    config::ProviderSettings,
    flags::{EvaluationContext, Flags},
    live::Live,
    resilience::{BreakerError, CircuitBreaker},
};
use messaging::RetryPolicy;
use tracing::warn;

/// What the provider says about a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The money may be taken.
    Approved,
    /// Refused, with the reason told to the customer.
    Declined(String),
}

/// The provider could not give an answer (down, failing, or too slow).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// A payment provider. Implementations must be idempotent per saga: the same saga may be
/// authorized again after a crash.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Asks whether `charge` may be taken.
    async fn authorize(&self, charge: &ProcessPayment) -> Result<Verdict, Unavailable>;
}

/// The built-in provider: declines the `declined_card` test card, approves everything else,
/// and can be made slow (`latency_ms`) or flaky (`failure_rate`) by configuration — or live,
/// for the resilience demo, by the fault flags `fault_payment_latency_ms` (added to the
/// latency) and `fault_payment_failure_rate` (the larger of it and the configured rate),
/// evaluated per charge for its customer. The faults act here, inside the provider, so the
/// guard's timeout, retries and circuit breaker meet them as they would a real outage.
pub struct SimulatedProvider {
    settings: Live<ProviderSettings>,
    flags: Option<Flags>,
}

impl SimulatedProvider {
    /// The provider `services.payment.provider` describes, without fault flags.
    pub fn new(settings: &ProviderSettings) -> Self {
        Self::live(Live::fixed(settings.clone()))
    }

    /// The provider the settings in force describe at each charge (see
    /// `kit::live::LiveSettings::section`), without fault flags.
    pub fn live(settings: Live<ProviderSettings>) -> Self {
        Self { settings, flags: None }
    }

    /// The same provider, also obeying the fault flags of `flags`.
    #[must_use]
    pub fn with_fault_flags(mut self, flags: Flags) -> Self {
        self.flags = Some(flags);
        self
    }

    /// The latency and failure rate in force for `charge`.
    fn faults(&self, charge: &ProcessPayment) -> (Duration, f64) {
        let settings = self.settings.get();
        let (latency, failure_rate) = (Duration::from_millis(settings.latency_ms), settings.failure_rate);
        let Some(flags) = &self.flags else { return (latency, failure_rate) };
        let context =
            EvaluationContext::for_key(charge.customer_id.as_str()).with("channel", channels::PAYMENT_COMMANDS);
        let extra_ms = flags.number("fault_payment_latency_ms", &context).clamp(0.0, 60_000.0);
        let rate = flags.number("fault_payment_failure_rate", &context).clamp(0.0, 1.0);
        (latency + Duration::from_millis(extra_ms as u64), failure_rate.max(rate))
    }
}

#[async_trait]
impl PaymentProvider for SimulatedProvider {
    async fn authorize(&self, charge: &ProcessPayment) -> Result<Verdict, Unavailable> {
        let (latency, failure_rate) = self.faults(charge);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if failure_rate > 0.0 && rand::random_bool(failure_rate) {
            return Err(Unavailable("simulated provider outage".into()));
        }
        Ok(match charge.payment_method {
            PaymentMethod::DeclinedCard => Verdict::Declined("card declined by the payment provider".into()),
            _ => Verdict::Approved,
        })
    }
}

/// A provider behind a timeout, bounded retries and a circuit breaker.
#[derive(Clone)]
pub struct GuardedProvider {
    provider: Arc<dyn PaymentProvider>,
    breaker: CircuitBreaker,
    settings: Live<ProviderSettings>,
}

/// The start of the reason a charge is declined with when the provider cannot be reached.
pub const UNAVAILABLE: &str = "payment provider unavailable";

impl GuardedProvider {
    /// Guards `provider` as `settings` say, with `breaker` in front of it.
    pub fn new(provider: Arc<dyn PaymentProvider>, settings: &ProviderSettings, breaker: CircuitBreaker) -> Self {
        Self::live(provider, Live::fixed(settings.clone()), breaker)
    }

    /// Guards `provider` as the settings in force at each charge say, with `breaker` in front
    /// of it.
    pub fn live(provider: Arc<dyn PaymentProvider>, settings: Live<ProviderSettings>, breaker: CircuitBreaker) -> Self {
        Self { provider, breaker, settings }
    }

    /// The breaker, for `/ready`.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The provider's verdict on `charge`. A provider that cannot answer within the attempts
    /// allowed, or whose breaker is open, declines the charge with a reason starting with
    /// [`UNAVAILABLE`]: nothing is taken and the customer may order again.
    pub async fn authorize(&self, charge: &ProcessPayment) -> Verdict {
        let settings = self.settings.get();
        let timeout = Duration::from_millis(settings.timeout_ms);
        let retry = RetryPolicy { max_attempts: settings.max_attempts, initial_backoff_ms: 100, max_backoff_ms: 2_000 };
        let mut attempt = 1;
        loop {
            let call = async {
                tokio::time::timeout(timeout, self.provider.authorize(charge))
                    .await
                    .unwrap_or_else(|_| Err(Unavailable(format!("no answer within {timeout:?}"))))
            };
            let error = match self.breaker.call(call).await {
                Ok(verdict) => {
                    count(verdict_outcome(&verdict));
                    return verdict;
                }
                Err(BreakerError::Open { .. }) => {
                    count("rejected");
                    return Verdict::Declined(format!("{UNAVAILABLE} (circuit breaker open)"));
                }
                Err(BreakerError::Failed(e)) => e,
            };
            count("failed");
            if attempt >= retry.max_attempts {
                return Verdict::Declined(format!("{UNAVAILABLE}: {error}"));
            }
            let backoff = retry.backoff(attempt);
            warn!(saga_id = %charge.saga.saga_id, attempt, %error, ?backoff, "payment provider call failed; retrying");
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }
}

fn verdict_outcome(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Approved => "approved",
        Verdict::Declined(_) => "declined",
    }
}

/// One provider call (or refusal) in `petstore_payment_provider_calls_total{outcome}`.
fn count(outcome: &'static str) {
    metrics::counter!("petstore_payment_provider_calls_total", "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tests::charge;

    fn settings(failure_rate: f64) -> ProviderSettings {
        ProviderSettings { timeout_ms: 100, max_attempts: 3, latency_ms: 0, failure_rate }
    }

    #[tokio::test]
    async fn the_simulated_provider_declines_only_the_test_card() {
        let provider = SimulatedProvider::new(&settings(0.0));
        assert_eq!(provider.authorize(&charge(PaymentMethod::CreditCard)).await.expect("answer"), Verdict::Approved);
        let declined = provider.authorize(&charge(PaymentMethod::DeclinedCard)).await.expect("answer");
        assert!(matches!(declined, Verdict::Declined(_)), "{declined:?}");
    }

    #[tokio::test]
    async fn a_provider_that_keeps_failing_declines_after_the_attempts_allowed() {
        let breaker = CircuitBreaker::new("test_provider", kit::resilience::BreakerSettings::default());
        let provider = Arc::new(SimulatedProvider::new(&settings(1.0)));
        let guarded = GuardedProvider::new(provider, &settings(1.0), breaker.clone());
        let Verdict::Declined(reason) = guarded.authorize(&charge(PaymentMethod::CreditCard)).await else {
            panic!("an unreachable provider approves nothing");
        };
        assert!(reason.starts_with(UNAVAILABLE), "{reason}");
        assert!(reason.contains("simulated provider outage"), "{reason}");
    }

    #[tokio::test]
    async fn a_provider_slower_than_the_timeout_counts_as_unavailable() {
        let slow = ProviderSettings { latency_ms: 5_000, max_attempts: 1, ..settings(0.0) };
        let breaker = CircuitBreaker::new("test_provider", kit::resilience::BreakerSettings::default());
        let guarded = GuardedProvider::new(Arc::new(SimulatedProvider::new(&slow)), &slow, breaker);
        let started = std::time::Instant::now();
        let Verdict::Declined(reason) = guarded.authorize(&charge(PaymentMethod::CreditCard)).await else {
            panic!("a provider that does not answer approves nothing");
        };
        assert!(reason.contains("no answer within"), "{reason}");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }
}
