//! The live view of a run: a progress bar on stderr (to the count, or over the seconds of
//! the duration) with the run's counters, redrawn a few times a second.

use std::{sync::Arc, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::{task::JoinHandle, time::Instant};

use crate::drive::Stop;

/// How often the bar is redrawn.
const TICK: Duration = Duration::from_millis(250);

/// What the bar shows of a run.
pub trait Live: Send + Sync + 'static {
    /// Units that have ended (the bar's position in count mode).
    fn ended(&self) -> u64;
    /// The counters, on one line, `elapsed` into the run.
    fn line(&self, elapsed: Duration) -> String;
}

/// A progress bar kept up to date until [`Progress::finish`].
pub struct Progress {
    bar: ProgressBar,
    ticker: JoinHandle<()>,
}

impl Progress {
    /// Starts showing `live` (nothing with `quiet`, or when stderr is not a terminal).
    pub fn start(stop: Stop, quiet: bool, start: Instant, live: Arc<dyn Live>) -> Self {
        let (length, unit) = match stop {
            Stop::Count(count) => (count, ""),
            Stop::After(duration) => (duration.as_secs().max(1), "s"),
        };
        let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(length) };
        let template = format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}}{unit} {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let ticker = tokio::spawn(tick(bar.clone(), stop, start, live));
        Self { bar, ticker }
    }

    /// Stops redrawing and clears the bar, so that the report follows on a clean screen.
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// Redraws `bar` every [`TICK`].
async fn tick(bar: ProgressBar, stop: Stop, start: Instant, live: Arc<dyn Live>) {
    let mut ticks = tokio::time::interval(TICK);
    loop {
        ticks.tick().await;
        let elapsed = start.elapsed();
        let position = match stop {
            Stop::Count(_) => live.ended(),
            Stop::After(_) => elapsed.as_secs(),
        };
        bar.set_position(position.min(bar.length().unwrap_or(u64::MAX)));
        bar.set_message(live.line(elapsed));
    }
}
