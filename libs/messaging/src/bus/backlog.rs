//! Backlog sampling: every `messaging.lag_interval` a bus measures the backlog of each group
//! it consumes (`petstore_consumer_lag_messages`) and of their channels' dead letters
//! (`petstore_dlq_depth_messages`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Bus, Inner, Route, dead_letter_channel};
use crate::Backend;

/// How often a backlog that keeps failing to sample is logged at `warn` (in between, `debug`).
const SAMPLE_FAILURE_WARN_EVERY: Duration = Duration::from_secs(300);

/// What the backlog sampler measures: the groups this bus consumes and the dead-letter
/// groups of their channels, with the gauges resolved once.
#[derive(Default)]
pub(super) struct Watches {
    /// (logical channel, logical group) of live subscriptions.
    groups: BTreeMap<(String, String), GroupWatch>,
    /// Logical channel → its dead-letter depth gauge, kept once resolved.
    dead_letters: HashMap<String, metrics::Gauge>,
    /// Whether the sampler task runs (it starts with the first subscription).
    sampling: bool,
}

struct GroupWatch {
    /// Live subscriptions of this bus in the group (competing consumers of one process).
    subscriptions: usize,
    lag: metrics::Gauge,
}

/// Keeps a group in the sampler's list while its subscription runs.
pub(super) struct Watching {
    inner: Weak<Inner>,
    key: (String, String),
}

impl Drop for Watching {
    fn drop(&mut self) {
        let Some(inner) = self.inner.upgrade() else { return };
        let mut watches = inner.watches();
        if let Some(watch) = watches.groups.get_mut(&self.key) {
            watch.subscriptions -= 1;
            if watch.subscriptions == 0 {
                watches.groups.remove(&self.key);
            }
        }
    }
}

/// One backlog to measure: where to ask, and the gauge that shows it.
struct Sample {
    /// `<channel>/<group>` or `<channel>.dlq`, for logs.
    name: String,
    backend: Arc<dyn Backend>,
    physical: String,
    group: String,
    gauge: metrics::Gauge,
}

impl Sample {
    /// Sets the gauge to the backlog, or keeps its last value when the backend fails;
    /// `failing` holds, per failing sample, when its failure was last logged at `warn`.
    async fn take(&self, failing: &mut HashMap<String, Instant>) {
        match self.backend.backlog(&self.physical, &self.group).await {
            Ok(Some(n)) => self.gauge.set(n as f64),
            Ok(None) => debug!(backlog = %self.name, "the backend cannot tell this backlog now"),
            Err(error) => {
                let now = Instant::now();
                match failing.get(&self.name) {
                    Some(warned) if now.duration_since(*warned) < SAMPLE_FAILURE_WARN_EVERY => {
                        debug!(backlog = %self.name, %error, "backlog sample failed again");
                    }
                    _ => {
                        warn!(backlog = %self.name, %error, "backlog sample failed; the gauge keeps its last value");
                        failing.insert(self.name.clone(), now);
                    }
                }
                return;
            }
        }
        if failing.remove(&self.name).is_some() {
            info!(backlog = %self.name, "backlog sampling recovered");
        }
    }
}

/// Samples, every `every`, the backlog of each group the bus consumes and of each of their
/// channels' dead-letter group, until `shutdown` fires or the bus is gone. A failing sample
/// keeps the gauge's last value and is logged at `warn` when it starts failing and every
/// [`SAMPLE_FAILURE_WARN_EVERY`] while it goes on.
async fn sample_backlogs(inner: Weak<Inner>, every: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(samples) = inner.upgrade().map(|inner| inner.samples()) else { return };
        let pass = async {
            for sample in &samples {
                sample.take(&mut failing).await;
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = pass => {}
        }
    }
}

impl Inner {
    fn watches(&self) -> std::sync::MutexGuard<'_, Watches> {
        // Single inserts and removals: the map stays consistent even after a panic.
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What to sample now: every watched group, and the dead-letter group of its channel.
    fn samples(&self) -> Vec<Sample> {
        let watches = self.watches();
        let mut samples = Vec::new();
        let mut last_channel = None;
        for ((channel, group), watch) in &watches.groups {
            let Some(route) = self.routes.get(channel) else { continue };
            samples.push(Sample {
                name: format!("{channel}/{group}"),
                backend: route.backend.clone(),
                physical: route.physical.clone(),
                group: self.physical_group(group),
                gauge: watch.lag.clone(),
            });
            // The map is sorted by channel: one dead-letter sample per channel.
            if last_channel != Some(channel)
                && let Some(depth) = watches.dead_letters.get(channel)
            {
                samples.push(Sample {
                    name: format!("{channel}.dlq"),
                    backend: route.backend.clone(),
                    physical: dead_letter_channel(&route.physical),
                    group: self.physical_group(crate::DLQ_GROUP),
                    gauge: depth.clone(),
                });
            }
            last_channel = Some(channel);
        }
        samples
    }
}

impl Bus {
    /// Adds a subscription's group (and its channel's dead letters) to what the backlog
    /// sampler measures, resolving their gauges the first time; starts the sampler with the
    /// first subscription. The group leaves the list when the returned guard drops.
    pub(super) fn watch(&self, route: &Route, group: &str) -> Watching {
        let key = (route.channel.clone(), group.to_owned());
        let backend = route.backend.name();
        let start = {
            let mut watches = self.inner.watches();
            watches
                .groups
                .entry(key.clone())
                .or_insert_with(|| GroupWatch {
                    subscriptions: 0,
                    lag: metrics::gauge!("petstore_consumer_lag_messages",
                        "channel" => route.channel.clone(), "group" => group.to_owned(), "backend" => backend),
                })
                .subscriptions += 1;
            watches.dead_letters.entry(route.channel.clone()).or_insert_with(|| {
                metrics::gauge!("petstore_dlq_depth_messages", "channel" => route.channel.clone(), "backend" => backend)
            });
            !std::mem::replace(&mut watches.sampling, true)
        };
        if start {
            let sampler =
                sample_backlogs(Arc::downgrade(&self.inner), self.inner.lag_interval, self.inner.shutdown.clone());
            self.inner.tasks.spawn(sampler.instrument(info_span!("backlog_sampler", service = %self.inner.service)));
        }
        Watching { inner: Arc::downgrade(&self.inner), key }
    }
}
