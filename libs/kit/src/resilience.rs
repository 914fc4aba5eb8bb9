//! Circuit breakers: stop calling a dependency that keeps failing, so callers fail fast (or
//! degrade) instead of queueing behind timeouts, and probe it again after a pause.
//!
//! Closed → (`failure_threshold` failures in a row) → open: calls are refused for
//! `open_for` → half-open: up to `half_open_probes` calls go through; one success closes the
//! breaker, one failure opens it again. The state is the gauge
//! `petstore_circuit_breaker_state{breaker}` (0 closed, 1 half-open, 2 open), every change
//! counts in `petstore_circuit_breaker_transitions_total{breaker, to}`, every refused call in
//! `petstore_circuit_breaker_rejections_total{breaker}`, and `/ready` shows it (a breaker is
//! a soft check: open means degraded, not unready).
//!
//! A breaker made with [`CircuitBreaker::live`] reads its settings at every call, so a change
//! of `resilience.circuit_breaker` in a watched configuration file applies to it at once (an
//! open breaker keeps the pause it opened with).

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{Readiness, live::Live};

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before it lets probes through.
    pub open_for: Duration,
    /// Calls let through at once while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(10), half_open_probes: 1 }
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// A few probe calls go through.
    HalfOpen,
    /// Calls are refused.
    Open,
}

impl BreakerState {
    /// The name in `/ready` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }

    fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

/// Why a call through a breaker did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker is open: the call was not made. Try again after `retry_after`.
    #[error("circuit breaker `{breaker}` is open; retry in {retry_after:?}")]
    Open {
        /// The breaker.
        breaker: &'static str,
        /// When it lets a probe through.
        retry_after: Duration,
    },
    /// The call was made and failed.
    #[error(transparent)]
    Failed(E),
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probes: u32 },
}

/// A circuit breaker around one dependency; clones share the state.
#[derive(Clone)]
pub struct CircuitBreaker {
    name: &'static str,
    settings: Live<BreakerSettings>,
    state: Arc<Mutex<State>>,
}

impl CircuitBreaker {
    /// A closed breaker named `name` (the `breaker` label and the `/ready` key).
    pub fn new(name: &'static str, settings: BreakerSettings) -> Self {
        Self::live(name, Live::fixed(settings))
    }

    /// A closed breaker named `name` whose settings are read from `settings` at every call
    /// (`ServiceContext::breaker_settings` follows the configuration in force).
    pub fn live(name: &'static str, settings: Live<BreakerSettings>) -> Self {
        metrics::gauge!("petstore_circuit_breaker_state", "breaker" => name).set(0.0);
        Self { name, settings, state: Arc::new(Mutex::new(State::Closed { failures: 0 })) }
    }

    /// The settings it works with now.
    pub fn settings(&self) -> BreakerSettings {
        self.settings.get()
    }

    /// The breaker's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its state now (an open breaker whose pause is over reads half-open).
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Runs `call` unless the breaker is open; a failure (`Err`) counts against the
    /// dependency. Use [`CircuitBreaker::call_judged`] when only some errors should count.
    pub async fn call<T, E>(&self, call: impl Future<Output = Result<T, E>>) -> Result<T, BreakerError<E>> {
        self.call_judged(call, |_| true).await
    }

    /// Like [`CircuitBreaker::call`], counting only the errors `is_failure` says are the
    /// dependency's fault (a declined card is an answer, not an outage).
    pub async fn call_judged<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
        is_failure: impl FnOnce(&E) -> bool,
    ) -> Result<T, BreakerError<E>> {
        self.acquire()?;
        let result = call.await;
        let failed = result.as_ref().err().is_some_and(is_failure);
        self.record(!failed);
        result.map_err(BreakerError::Failed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acquire<E>(&self) -> Result<(), BreakerError<E>> {
        let settings = self.settings.get();
        let mut state = self.lock();
        let now = Instant::now();
        let refused = match &mut *state {
            State::Closed { .. } => None,
            State::Open { until } if now >= *until => {
                *state = State::HalfOpen { probes: 1 };
                self.changed(BreakerState::HalfOpen);
                None
            }
            State::Open { until } => Some(*until - now),
            State::HalfOpen { probes } if *probes < settings.half_open_probes => {
                *probes += 1;
                None
            }
            // Probes are out; the next is let through when one of them comes back.
            State::HalfOpen { .. } => Some(Duration::from_millis(100)),
        };
        match refused {
            None => Ok(()),
            Some(retry_after) => {
                metrics::counter!("petstore_circuit_breaker_rejections_total", "breaker" => self.name).increment(1);
                Err(BreakerError::Open { breaker: self.name, retry_after })
            }
        }
    }

    fn record(&self, success: bool) {
        let settings = self.settings.get();
        let mut state = self.lock();
        match (&mut *state, success) {
            (State::Closed { failures }, true) => *failures = 0,
            (State::Closed { failures }, false) => {
                *failures += 1;
                if *failures >= settings.failure_threshold {
                    *state = State::Open { until: Instant::now() + settings.open_for };
                    self.changed(BreakerState::Open);
                }
            }
            (State::HalfOpen { .. }, true) => {
                *state = State::Closed { failures: 0 };
                self.changed(BreakerState::Closed);
            }
            (State::HalfOpen { .. }, false) => {
                *state = State::Open { until: Instant::now() + settings.open_for };
                self.changed(BreakerState::Open);
            }
            // A call that started before the breaker opened: its outcome changes nothing.
            (State::Open { .. }, _) => {}
        }
    }

    fn changed(&self, to: BreakerState) {
        match to {
            BreakerState::Open => tracing::warn!(breaker = self.name, "circuit breaker opened"),
            _ => tracing::info!(breaker = self.name, state = to.as_str(), "circuit breaker changed"),
        }
        metrics::gauge!("petstore_circuit_breaker_state", "breaker" => self.name).set(to.gauge_value());
        metrics::counter!("petstore_circuit_breaker_transitions_total", "breaker" => self.name, "to" => to.as_str())
            .increment(1);
    }
}

#[async_trait]
impl Readiness for CircuitBreaker {
    fn name(&self) -> &'static str {
        self.name
    }

    fn required(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<(), String> {
        match self.state() {
            BreakerState::Closed => Ok(()),
            other => Err(format!("circuit breaker {}", other.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(
            "test",
            BreakerSettings { failure_threshold: 3, open_for: Duration::from_secs(5), half_open_probes: 1 },
        )
    }

    async fn fail(b: &CircuitBreaker) -> Result<(), BreakerError<&'static str>> {
        b.call(async { Err::<(), _>("down") }).await
    }

    async fn succeed(b: &CircuitBreaker) -> Result<(), BreakerError<&'static str>> {
        b.call(async { Ok::<(), &'static str>(()) }).await
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_the_breaker_and_calls_are_refused_without_running() {
        let b = breaker();
        for _ in 0..3 {
            assert!(matches!(fail(&b).await, Err(BreakerError::Failed("down"))));
        }
        assert_eq!(b.state(), BreakerState::Open);
        let ran = std::sync::atomic::AtomicBool::new(false);
        let refused = b
            .call(async {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok::<(), &str>(())
            })
            .await;
        assert!(
            matches!(refused, Err(BreakerError::Open { retry_after, .. }) if retry_after == Duration::from_secs(5))
        );
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "an open breaker does not call");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_between_failures_keeps_it_closed() {
        let b = breaker();
        for _ in 0..5 {
            let _ = fail(&b).await;
            let _ = fail(&b).await;
            succeed(&b).await.expect("closed");
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_pause_one_probe_goes_through_and_its_outcome_decides() {
        let b = breaker();
        for _ in 0..3 {
            let _ = fail(&b).await;
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // A failing probe opens it again for another pause.
        assert!(matches!(fail(&b).await, Err(BreakerError::Failed(_))));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(succeed(&b).await, Err(BreakerError::Open { .. })));
        tokio::time::advance(Duration::from_secs(5)).await;
        // A succeeding probe closes it.
        succeed(&b).await.expect("probe");
        assert_eq!(b.state(), BreakerState::Closed);
        succeed(&b).await.expect("closed");
    }

    #[tokio::test(start_paused = true)]
    async fn while_a_probe_is_out_other_calls_are_refused() {
        let b = breaker();
        for _ in 0..3 {
            let _ = fail(&b).await;
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let (probe_tx, probe_rx) = tokio::sync::oneshot::channel::<()>();
        let probing = b.clone();
        let probe = tokio::spawn(async move { probing.call(async { probe_rx.await.map_err(|_| "dropped") }).await });
        tokio::task::yield_now().await;
        assert!(matches!(succeed(&b).await, Err(BreakerError::Open { .. })), "one probe at a time");
        probe_tx.send(()).expect("probe waiting");
        probe.await.expect("joined").expect("probe succeeded");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn only_failures_the_judge_blames_on_the_dependency_count() {
        let b = breaker();
        for _ in 0..10 {
            let declined = b.call_judged(async { Err::<(), _>("declined") }, |e| *e != "declined").await;
            assert!(matches!(declined, Err(BreakerError::Failed("declined"))));
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
