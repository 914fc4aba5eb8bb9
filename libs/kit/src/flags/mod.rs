//! Feature flags at run time: the flagd definitions of `flags.file` (default
//! `config/flags.json`), evaluated in-process for the caller of the request, reloaded when the
//! file changes. An invalid edit is refused whole: the last good set stays in force, with an
//! error log naming the key and `petstore_flag_reload_failures_total`.
//!
//! Every evaluation is counted in `petstore_flag_evaluations_total{flag, variant}` and marks
//! the current span with OpenTelemetry's `feature_flag.key` and `feature_flag.result.variant`.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

pub use flags::{Evaluation, EvaluationContext, FlagSet, FlagValue, Reason};
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{ConfigError, auth::Principal, config::FlagSettings};

/// The flags in force, shared by every service of a process. Cheap to clone.
#[derive(Clone)]
pub struct Flags {
    inner: Arc<Inner>,
}

struct Inner {
    current: RwLock<Arc<FlagSet>>,
    file: Option<PathBuf>,
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flags").field("file", &self.inner.file).finish_non_exhaustive()
    }
}

/// Where the definitions are looked for when `flags.file` is not set.
pub const DEFAULT_FILE: &str = "config/flags.json";

/// The definitions shipped with the binary, used when no file is.
const EMBEDDED: &str = include_str!("../../../config/flags.json");

impl Flags {
    /// Reads and validates the configured definitions; a start-up error names the file, the
    /// key path inside it and the reason.
    pub fn load(settings: &FlagSettings) -> Result<Self, ConfigError> {
        let file = settings.file.clone().or_else(|| {
            let default = PathBuf::from(DEFAULT_FILE);
            default.exists().then_some(default)
        });
        let set = match &file {
            None => FlagSet::parse(EMBEDDED).map_err(|e| ConfigError(format!("flags (embedded): {e}")))?,
            Some(path) => read(path).map_err(|e| ConfigError(format!("flags.file: {e}")))?,
        };
        Ok(Self { inner: Arc::new(Inner { current: RwLock::new(Arc::new(set)), file }) })
    }

    /// Flags from a definition document (tests, tools).
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let set = FlagSet::parse(json).map_err(|e| ConfigError(format!("flags: {e}")))?;
        Ok(Self { inner: Arc::new(Inner { current: RwLock::new(Arc::new(set)), file: None }) })
    }

    /// The set in force.
    pub fn current(&self) -> Arc<FlagSet> {
        match self.inner.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts `set` in force.
    pub fn replace(&self, set: FlagSet) {
        match self.inner.current.write() {
            Ok(mut current) => *current = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
    }

    /// Reads the file again: the new set is in force, or — when it does not parse or
    /// validate — the last good one stays, and the error is logged and counted.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.inner.file else { return Ok(()) };
        match read(path) {
            Ok(set) => {
                self.replace(set);
                tracing::info!(file = %path.display(), "feature flags reloaded");
                Ok(())
            }
            Err(e) => {
                metrics::counter!("petstore_flag_reload_failures_total").increment(1);
                tracing::error!(error = %e, "feature flag file refused; the previous flags stay in force");
                Err(e)
            }
        }
    }

    /// Reloads whenever the file changes (an edit in place, or an editor's rename over it),
    /// until `shutdown`. Events within [`SETTLE`] of each other make one reload.
    pub fn watch(&self, shutdown: &CancellationToken) -> Result<(), ConfigError> {
        use notify::Watcher as _;
        let Some(path) = self.inner.file.clone() else { return Ok(()) };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        let name = path.file_name().map(ToOwned::to_owned);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && event.paths.iter().any(|p| p.file_name() == name.as_deref())
            {
                let _ = tx.send(());
            }
        })
        .map_err(|e| ConfigError(format!("flags.file: cannot watch {}: {e}", dir.display())))?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| ConfigError(format!("flags.file: cannot watch {}: {e}", dir.display())))?;
        let flags = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _watcher = watcher; // watches as long as this task lives
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = rx.recv() => if changed.is_none() { return },
                }
                // Let the writer finish: editors write in several steps.
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
                let _ = flags.reload();
            }
        });
        Ok(())
    }

    /// Evaluates `key` for `context`, counting it and marking the current span. A flag the
    /// set does not define serves `None` (logged: code and definitions disagree).
    pub fn evaluate(&self, key: &str, context: &EvaluationContext) -> Option<Evaluation> {
        match self.current().evaluate(key, context) {
            Ok(evaluation) => {
                let labels = [("flag", key.to_owned()), ("variant", evaluation.variant.clone())];
                metrics::counter!("petstore_flag_evaluations_total", &labels).increment(1);
                let span = tracing::Span::current();
                span.set_attribute("feature_flag.key", key.to_owned());
                span.set_attribute("feature_flag.result.variant", evaluation.variant.clone());
                if let Some(error) = &evaluation.error {
                    tracing::warn!(flag = key, error = %error, "flag targeting failed; its default variant is served");
                }
                Some(evaluation)
            }
            Err(e) => {
                tracing::error!(flag = key, error = %e, "feature flag evaluation failed");
                None
            }
        }
    }

    /// A boolean flag; `false` when it cannot be evaluated as one.
    pub fn enabled(&self, key: &str, context: &EvaluationContext) -> bool {
        matches!(self.evaluate(key, context).map(|e| e.value), Some(FlagValue::Bool(true)))
    }

    /// A number flag; `0.0` when it cannot be evaluated as one.
    pub fn number(&self, key: &str, context: &EvaluationContext) -> f64 {
        match self.evaluate(key, context).map(|e| e.value) {
            Some(FlagValue::Number(n)) => n.as_f64().unwrap_or_default(),
            _ => 0.0,
        }
    }
}

/// How long the watcher waits after a change before reading the file.
pub const SETTLE: Duration = Duration::from_millis(50);

fn read(path: &Path) -> Result<FlagSet, String> {
    let json = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    FlagSet::parse(&json).map_err(|e| format!("{}: {e}", path.display()))
}

/// The evaluation context of a request: `targetingKey` is the caller's subject (the customer
/// id), with its `roles` and `tier`; anonymous callers have none.
pub fn context_of(principal: Option<&Principal>) -> EvaluationContext {
    match principal {
        None => EvaluationContext::new(),
        Some(p) => {
            let mut context = EvaluationContext::for_key(p.subject()).with("roles", p.roles().to_vec());
            if let Some(tier) = p.tier() {
                context = context.with("tier", tier);
            }
            context
        }
    }
}
