//! Pacing: when each unit of work (an order, a read) starts, and when the run stops starting.
//!
//! An open loop ([`Pace::Rate`]) starts unit `n` at the moment it is due, `n / rate` after
//! the run began, without waiting for earlier units; a unit that could not start on time
//! (the scheduler was late) starts at once and is still measured from when it was due. A
//! closed loop ([`Pace::Concurrency`]) keeps a fixed number of units in flight.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

/// How units are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Open loop: this many starts per second, on schedule.
    Rate(f64),
    /// Closed loop: this many workers, each starting its next unit when its last one ended.
    Concurrency(usize),
}

/// When the run stops starting units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// No start due this long (or longer) after the run began.
    After(Duration),
    /// No more than this many starts.
    Count(u64),
}

impl Stop {
    /// Whether start `n` (from 0), due `since_start` after the run began, belongs to the run.
    pub fn admits(self, n: u64, since_start: Duration) -> bool {
        match self {
            Self::After(duration) => since_start < duration,
            Self::Count(count) => n < count,
        }
    }
}

/// When start `n` of an open loop at `rate` per second is due.
pub fn due(start: Instant, rate: f64, n: u64) -> Instant {
    start + Duration::from_secs_f64(n as f64 / rate)
}

/// Runs `unit(n, due)` for each start the pace and stop allow, until `cancel` fires; returns
/// once every unit started has ended. `due` is the moment the unit was meant to start.
pub async fn run<U, F>(
    pace: Pace,
    stop: Stop,
    start: Instant,
    cancel: &CancellationToken,
    unit: U,
) -> anyhow::Result<()>
where
    U: Fn(u64, Instant) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    match pace {
        Pace::Rate(rate) => open_loop(rate, stop, start, cancel, unit).await,
        Pace::Concurrency(workers) => closed_loop(workers, stop, start, cancel, unit).await,
    }
}

/// Starts each unit when it is due, each in its own task.
async fn open_loop<U, F>(
    rate: f64,
    stop: Stop,
    start: Instant,
    cancel: &CancellationToken,
    unit: U,
) -> anyhow::Result<()>
where
    U: Fn(u64, Instant) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut units = JoinSet::new();
    for n in 0.. {
        let due = due(start, rate, n);
        if !stop.admits(n, due.duration_since(start)) {
            break;
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(due) => {}
        }
        units.spawn(unit(n, due));
        // Reap what has ended, so a long run does not keep every finished task.
        while let Some(ended) = units.try_join_next() {
            ended.context("a load task failed")?;
        }
    }
    while let Some(ended) = units.join_next().await {
        ended.context("a load task failed")?;
    }
    Ok(())
}

/// `workers` tasks, each running one unit after another.
async fn closed_loop<U, F>(
    workers: usize,
    stop: Stop,
    start: Instant,
    cancel: &CancellationToken,
    unit: U,
) -> anyhow::Result<()>
where
    U: Fn(u64, Instant) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (unit, next, cancel) = (unit.clone(), next.clone(), cancel.clone());
        tasks.spawn(async move {
            while !cancel.is_cancelled() {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if !stop.admits(n, now.duration_since(start)) {
                    break;
                }
                unit(n, now).await;
            }
        });
    }
    while let Some(ended) = tasks.join_next().await {
        ended.context("a load worker failed")?;
    }
    Ok(())
}

/// When a run began and when its last unit ended, for the elapsed time of the report.
#[derive(Debug)]
pub struct Span {
    start: Instant,
    /// Microseconds from `start` to the latest end marked; 0 while none is.
    last_end_us: AtomicU64,
}

impl Span {
    /// A run beginning at `start`.
    pub fn new(start: Instant) -> Self {
        Self { start, last_end_us: AtomicU64::new(0) }
    }

    /// When the run began (the first start was due).
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Marks that a unit ended now.
    pub fn mark_end(&self) {
        let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_end_us.fetch_max(us, Ordering::Relaxed);
    }

    /// From the first start due to the last end; until something ended, the time so far.
    pub fn elapsed(&self) -> Duration {
        match self.last_end_us.load(Ordering::Relaxed) {
            0 => self.start.elapsed(),
            us => Duration::from_micros(us),
        }
    }
}

/// Cancels `cancel` on the first Ctrl-C (no new starts; what is in flight is followed to its
/// end and reported); a second Ctrl-C exits at once.
pub fn cancel_on_ctrl_c(cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("\npetstore-load: stopping: nothing new starts; waiting for what is in flight (Ctrl-C again quits)");
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_stop_admits_what_it_should() {
        assert!(Stop::Count(3).admits(2, Duration::from_secs(99)));
        assert!(!Stop::Count(3).admits(3, Duration::ZERO));
        assert!(Stop::After(Duration::from_secs(1)).admits(999, Duration::from_millis(999)));
        assert!(!Stop::After(Duration::from_secs(1)).admits(0, Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_loop_starts_on_schedule_without_waiting_for_slow_units() {
        let start = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let seen = starts.clone();
        let unit = move |n: u64, due: Instant| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock").push((n, due.duration_since(start), Instant::now().duration_since(start)));
                // Far slower than the rate: a closed loop would fall behind.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        let cancel = CancellationToken::new();
        run(Pace::Rate(10.0), Stop::After(Duration::from_millis(500)), start, &cancel, unit).await.expect("runs");
        let starts = starts.lock().expect("lock").clone();
        assert_eq!(starts.len(), 5, "{starts:?}");
        for (n, due, started) in starts {
            assert_eq!(due, Duration::from_millis(100 * n), "unit {n}");
            assert_eq!(started, due, "unit {n} started late");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_loop_keeps_its_workers_busy_until_the_count() {
        let start = Instant::now();
        let started = Arc::new(AtomicU64::new(0));
        let counted = started.clone();
        let unit = move |_: u64, _: Instant| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let cancel = CancellationToken::new();
        run(Pace::Concurrency(4), Stop::Count(10), start, &cancel, unit).await.expect("runs");
        assert_eq!(started.load(Ordering::Relaxed), 10);
        // 10 units of 100 ms on 4 workers: three rounds.
        assert_eq!(Instant::now().duration_since(start), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_run_starts_nothing_more() {
        let cancel = CancellationToken::new();
        let started = Arc::new(AtomicU64::new(0));
        let (counted, canceller) = (started.clone(), cancel.clone());
        let unit = move |n: u64, _: Instant| {
            let (counted, canceller) = (counted.clone(), canceller.clone());
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
                if n == 2 {
                    canceller.cancel();
                }
            }
        };
        run(Pace::Rate(100.0), Stop::Count(1000), Instant::now(), &cancel, unit).await.expect("runs");
        assert_eq!(started.load(Ordering::Relaxed), 3);
    }
}
