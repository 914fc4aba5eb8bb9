//! Configuration that changes at run time. The files a configuration was read from (the
//! `config/<PETSTORE_ENV>.yaml` overlay and the `PETSTORE_CONFIG` file) are watched; when one
//! changes, every layer is read and validated again:
//!
//! - invalid: the error is logged naming the key and the reason, counted in
//!   `petstore_config_reload_failures_total`, and the configuration in force stays;
//! - valid: the keys of [`LIVE_KEYS`] that changed are put in force (logged at info), and
//!   every other changed key is logged as a warning naming it — it needs a restart.
//!
//! The settings in force are published on a `tokio::sync::watch` channel
//! ([`LiveSettings`]): they are the start-up settings with the live keys as last reloaded,
//! so a value read from them is always one that applies. Components subscribe: the rate
//! limits rebuild their limiters, the log filter is swapped, and breakers and the payment
//! provider read their settings through a [`Live`] value at each call.

use std::{collections::BTreeSet, sync::Arc};

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{ConfigError, Settings};

/// The keys (and sections) applied without a restart.
pub const LIVE_KEYS: [&str; 4] =
    ["log.level", "rate_limits", "resilience.circuit_breaker", "services.payment.provider"];

/// Whether `key` (dotted) is one of [`LIVE_KEYS`] or inside one of their sections.
pub fn is_live(key: &str) -> bool {
    LIVE_KEYS.iter().any(|live| key == *live || key.strip_prefix(live).is_some_and(|rest| rest.starts_with('.')))
}

/// How long the watcher lets a writer finish before it reads the files.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// The settings in force, shared by every component of a process. Cheap to clone.
#[derive(Clone)]
pub struct LiveSettings {
    rx: watch::Receiver<Arc<Settings>>,
}

impl std::fmt::Debug for LiveSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSettings").field("sources", &self.current().sources()).finish_non_exhaustive()
    }
}

impl LiveSettings {
    /// Settings that never change.
    pub fn fixed(settings: Arc<Settings>) -> Self {
        let (_, rx) = watch::channel(settings);
        Self { rx }
    }

    /// `settings`, reloaded whenever one of the files they were read from changes, until
    /// `shutdown`. Settings not read from files ([`Settings::with_overrides`]) never change.
    pub fn watch(settings: Arc<Settings>, shutdown: &CancellationToken) -> Result<Self, ConfigError> {
        let files = settings.sources().map(crate::config::ConfigSources::files).unwrap_or_default();
        let (tx, rx) = watch::channel(settings);
        crate::watch::on_change(&files, SETTLE, shutdown, move || reload(&tx))
            .map_err(|e| ConfigError(format!("configuration files: {e}")))?;
        Ok(Self { rx })
    }

    /// The settings in force now.
    pub fn current(&self) -> Arc<Settings> {
        Arc::clone(&self.rx.borrow())
    }

    /// A receiver that sees every reload that applied something.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Settings>> {
        self.rx.clone()
    }

    /// The value `project` reads from the settings in force, read again at every
    /// [`Live::get`].
    pub fn section<T>(&self, project: impl Fn(&Settings) -> T + Send + Sync + 'static) -> Live<T> {
        Live(Source::Derived { settings: self.rx.clone(), project: Arc::new(project) })
    }

    /// Calls `apply` with what `project` reads from the settings in force each time a reload
    /// changes it (not with the value at the start), until `shutdown`.
    pub fn follow<T, P, A>(&self, shutdown: &CancellationToken, project: P, mut apply: A)
    where
        T: PartialEq + Send + 'static,
        P: Fn(&Settings) -> T + Send + 'static,
        A: FnMut(&T) + Send + 'static,
    {
        let mut rx = self.rx.clone();
        let mut last = project(&rx.borrow_and_update());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = rx.changed() => if changed.is_err() { return },
                }
                let next = project(&rx.borrow_and_update());
                if next != last {
                    apply(&next);
                    last = next;
                }
            }
        });
    }
}

/// A setting that may change at run time: fixed, or read from the [`LiveSettings`] in force
/// at each [`Live::get`]. Cheap to clone.
pub struct Live<T>(Source<T>);

type Projection<T> = Arc<dyn Fn(&Settings) -> T + Send + Sync>;

enum Source<T> {
    Fixed(T),
    Derived { settings: watch::Receiver<Arc<Settings>>, project: Projection<T> },
}

impl<T: Clone> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(match &self.0 {
            Source::Fixed(value) => Source::Fixed(value.clone()),
            Source::Derived { settings, project } => {
                Source::Derived { settings: settings.clone(), project: Arc::clone(project) }
            }
        })
    }
}

impl<T: Clone> Live<T> {
    /// A value that never changes.
    pub fn fixed(value: T) -> Self {
        Self(Source::Fixed(value))
    }

    /// The value in force now.
    pub fn get(&self) -> T {
        match &self.0 {
            Source::Fixed(value) => value.clone(),
            Source::Derived { settings, project } => project(&settings.borrow()),
        }
    }
}

impl<T: Clone + std::fmt::Debug> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Live").field(&self.get()).finish()
    }
}

/// Reads the layers of the settings in force again and publishes the live keys that changed;
/// a refused configuration is logged and counted.
fn reload(tx: &watch::Sender<Arc<Settings>>) {
    let current = Arc::clone(&tx.borrow());
    let Some(sources) = current.sources() else { return };
    let loaded = match sources.load() {
        Ok(loaded) => loaded,
        Err(e) => {
            metrics::counter!("petstore_config_reload_failures_total").increment(1);
            let (key, reason) = e.0.split_once(": ").unwrap_or(("", e.0.as_str()));
            tracing::error!(
                key,
                reason,
                files = ?sources.files(),
                "configuration change refused: {key}: {reason}; the configuration in force stays"
            );
            return;
        }
    };
    let (applied, ignored): (Vec<String>, Vec<String>) =
        changed_keys(&current.origin.raw, &loaded.origin.raw).into_iter().partition(|key| is_live(key));
    for key in &ignored {
        tracing::warn!(key = key.as_str(), "{key} changed; it needs a restart to apply");
    }
    if applied.is_empty() {
        tracing::info!("configuration reloaded; no key to apply");
    } else {
        tx.send_replace(Arc::new(with_live_keys(&current, &loaded)));
        tracing::info!(keys = ?applied, "configuration reloaded; applied {}", applied.join(", "));
    }
}

/// `current` with the live keys of `loaded`.
fn with_live_keys(current: &Settings, loaded: &Settings) -> Settings {
    let mut next = current.clone();
    next.log.level.clone_from(&loaded.log.level);
    next.rate_limits = loaded.rate_limits.clone();
    next.resilience.circuit_breaker = loaded.resilience.circuit_breaker;
    next.services.payment.provider = loaded.services.payment.provider.clone();
    let mut raw = (*current.origin.raw).clone();
    for key in LIVE_KEYS {
        let path: Vec<&str> = key.split('.').collect();
        replace_at(&mut raw, &path, lookup(&loaded.origin.raw, &path).cloned());
    }
    next.origin.raw = Arc::new(raw);
    next
}

fn lookup<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Puts `new` at `path` in `root` (removes what is there when `None`).
fn replace_at(root: &mut Value, path: &[&str], new: Option<Value>) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = root;
    for key in parents {
        let Some(map) = node.as_object_mut() else { return };
        node = map.entry(*key).or_insert_with(|| Value::Object(Default::default()));
    }
    let Some(map) = node.as_object_mut() else { return };
    match new {
        Some(value) => {
            map.insert((*last).to_owned(), value);
        }
        None => {
            map.remove(*last);
        }
    }
}

/// The dotted keys whose values differ between `old` and `new` (leaves; a list is one value).
fn changed_keys(old: &Value, new: &Value) -> Vec<String> {
    fn walk(path: &mut Vec<String>, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<String>) {
        match (old, new) {
            (Some(Value::Object(a)), Some(Value::Object(b))) => {
                let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in keys {
                    path.push(key.clone());
                    walk(path, a.get(key), b.get(key), out);
                    path.pop();
                }
            }
            (Some(Value::Object(map)), None) | (None, Some(Value::Object(map))) => {
                for (key, value) in map {
                    path.push(key.clone());
                    let (old, new) = if old.is_some() { (Some(value), None) } else { (None, Some(value)) };
                    walk(path, old, new, out);
                    path.pop();
                }
            }
            (a, b) if a == b => {}
            _ => out.push(path.join(".")),
        }
    }
    let mut out = Vec::new();
    walk(&mut Vec::new(), Some(old), Some(new), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_keys_are_the_sections_and_what_is_inside_them() {
        for key in ["log.level", "rate_limits.routes.POST /orders.burst", "services.payment.provider.failure_rate"] {
            assert!(is_live(key), "{key}");
        }
        for key in ["log.format", "rate_limits_x", "database.url", "services.payment.port", "resilience"] {
            assert!(!is_live(key), "{key}");
        }
    }

    #[test]
    fn changed_keys_name_every_changed_added_and_removed_leaf() {
        let old = serde_json::json!({"a": {"b": 1, "c": [1, 2], "gone": {"x": 1}}, "d": "x"});
        let new = serde_json::json!({"a": {"b": 2, "c": [1, 2], "new": {"y": 1}}, "d": "x"});
        assert_eq!(changed_keys(&old, &new), ["a.b", "a.gone.x", "a.new.y"]);
        assert!(changed_keys(&old, &old).is_empty());
    }

    #[test]
    fn only_the_live_keys_are_taken_from_a_reloaded_configuration() {
        let current = Settings::with_overrides("database: { url: 'postgres://old' }").expect("current");
        let loaded = Settings::with_overrides(
            "database: { url: 'postgres://new' }\nlog: { level: debug }\n\
             services: { payment: { provider: { failure_rate: 1.0 } } }",
        )
        .expect("loaded");
        let next = with_live_keys(&current, &loaded);
        assert_eq!((next.log.level.as_str(), next.database.url.as_str()), ("debug", "postgres://old"));
        assert_eq!(next.services.payment.provider.failure_rate, 1.0);
        // What is in force now differs from the file only by the key that needs a restart.
        assert_eq!(changed_keys(&next.origin.raw, &loaded.origin.raw), ["database.url"]);
    }

    #[test]
    fn a_live_value_reads_the_settings_in_force() {
        let (tx, rx) = watch::channel(Arc::new(Settings::with_overrides("{}").expect("defaults")));
        let live = LiveSettings { rx };
        let level = live.section(|s| s.log.level.clone());
        assert_eq!(level.get(), "info");
        tx.send_replace(Arc::new(Settings::with_overrides("log: { level: warn }").expect("warn")));
        assert_eq!((level.get().as_str(), live.current().log.level.as_str()), ("warn", "warn"));
        assert_eq!(Live::fixed(3).get(), 3);
    }
}
