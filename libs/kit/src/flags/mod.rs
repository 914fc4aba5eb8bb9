//! Feature flags at run time: the flagd definitions of `flags.file` (default
//! `config/flags.json`), with the overrides administrators set through `/admin/flags`
//! ([`admin`]) laid over them, evaluated in-process for the caller of the request. The set is
//! rebuilt when the file changes and when an override changes (announced over the bus to every
//! instance). An invalid edit is refused whole: the last good set stays in force, with an
//! error log naming the key and `petstore_flag_reload_failures_total`.
//!
//! Every evaluation is counted in `petstore_flag_evaluations_total{flag, variant}` and marks
//! the current span with OpenTelemetry's `feature_flag.key` and `feature_flag.result.variant`.

pub mod admin;
pub mod faults;
mod store;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
pub use flags::{Evaluation, EvaluationContext, FlagSet, FlagValue, Reason};
use serde_json::Value;
pub use store::{FlagOverride, FlagStore, MemoryFlagStore};
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
    /// What the set in force is built from; held while a new set is built, so that changes
    /// from the file and from administrators apply one at a time.
    layers: Mutex<Layers>,
    file: Option<PathBuf>,
}

/// The definitions of the file and the administrators' overrides laid over them.
struct Layers {
    /// The flag document as read from the file (or the embedded copy).
    file: Value,
    /// When the file was last read successfully.
    file_read_at: DateTime<Utc>,
    /// Overrides by flag key.
    overrides: BTreeMap<String, FlagOverride>,
}

impl Layers {
    fn new(file: Value) -> Self {
        Self { file, file_read_at: Utc::now(), overrides: BTreeMap::new() }
    }

    /// The set the file and `overrides` make together. An override replaces the file's
    /// definition of its flag whole.
    fn compose<'a>(
        file: &Value,
        overrides: impl IntoIterator<Item = (&'a String, &'a Value)>,
    ) -> Result<FlagSet, flags::FlagError> {
        let mut document = file.clone();
        for (key, definition) in overrides {
            if let Some(flags) = document.get_mut("flags").and_then(Value::as_object_mut) {
                flags.insert(key.clone(), definition.clone());
            }
        }
        FlagSet::from_value(&document)
    }
}

/// Where the definition of a flag in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlagSource {
    /// The flag file (or the copy built into the binary).
    File,
    /// An administrator's override (`PUT /admin/flags/{flag}`).
    Admin,
}

/// One flag in force, as `GET /admin/flags` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct FlagInfo {
    /// The flag's key.
    pub flag: String,
    /// Its flagd definition in force.
    #[schema(value_type = Object)]
    pub definition: Value,
    /// Where the definition comes from.
    pub source: FlagSource,
    /// Who set the override; `null` for the file's definition.
    pub changed_by: Option<String>,
    /// When the override was set, or when the file was last read.
    pub changed_at: DateTime<Utc>,
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flags").field("file", &self.inner.file).finish_non_exhaustive()
    }
}

/// Where the definitions are looked for when `flags.file` is not set.
pub const DEFAULT_FILE: &str = "config/flags.json";

/// The definitions shipped with the binary, used when no file is.
const EMBEDDED: &str = include_str!("../../../../config/flags.json");

impl Flags {
    /// Reads and validates the configured definitions; a start-up error names the file, the
    /// key path inside it and the reason.
    pub fn load(settings: &FlagSettings) -> Result<Self, ConfigError> {
        let file = settings.file.clone().or_else(|| {
            let default = PathBuf::from(DEFAULT_FILE);
            default.exists().then_some(default)
        });
        let (document, set) = match &file {
            None => parse(EMBEDDED).map_err(|e| ConfigError(format!("flags (embedded): {e}")))?,
            Some(path) => read(path).map_err(|e| ConfigError(format!("flags.file: {e}")))?,
        };
        Ok(Self::with(document, set, file))
    }

    /// Flags from a definition document (tests, tools).
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let (document, set) = parse(json).map_err(|e| ConfigError(format!("flags: {e}")))?;
        Ok(Self::with(document, set, None))
    }

    fn with(document: Value, set: FlagSet, file: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(set)),
                layers: Mutex::new(Layers::new(document)),
                file,
            }),
        }
    }

    fn layers(&self) -> std::sync::MutexGuard<'_, Layers> {
        // Layers are replaced whole, never left half-changed: a poisoned lock holds a good value.
        self.inner.layers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Reads the file again: the new set (with the overrides over it) is in force, or — when
    /// it does not parse or validate, or an override no longer fits it — the last good one
    /// stays, and the error is logged and counted.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.inner.file else { return Ok(()) };
        let mut layers = self.layers();
        let composed = read(path).and_then(|(document, _)| {
            let set = Layers::compose(&document, layers.overrides.iter().map(|(k, o)| (k, &o.definition)))
                .map_err(|e| format!("{}: with the admin overrides over it: {e}", path.display()))?;
            Ok((document, set))
        });
        match composed {
            Ok((document, set)) => {
                layers.file = document;
                layers.file_read_at = Utc::now();
                self.replace(set);
                tracing::info!(file = %path.display(), "feature flags reloaded");
                Ok(())
            }
            Err(e) => Err(refused("feature flag file refused", e)),
        }
    }

    /// Puts `overrides` (all of them, as stored) in force over the file's definitions. When
    /// they do not fit the file, the set in force stays and the error is logged and counted.
    pub fn apply_overrides(&self, overrides: Vec<FlagOverride>) -> Result<(), String> {
        let mut layers = self.layers();
        let overrides: BTreeMap<String, FlagOverride> = overrides.into_iter().map(|o| (o.flag.clone(), o)).collect();
        if overrides == layers.overrides {
            return Ok(());
        }
        match Layers::compose(&layers.file, overrides.iter().map(|(k, o)| (k, &o.definition))) {
            Ok(set) => {
                let changed: Vec<&String> = overrides.keys().chain(layers.overrides.keys()).collect();
                tracing::info!(flags = ?changed, "feature flag overrides applied");
                layers.overrides = overrides;
                self.replace(set);
                Ok(())
            }
            Err(e) => Err(refused("stored feature flag overrides refused", e.to_string())),
        }
    }

    /// Checks that `definition` may override `flag`: it must be a flag of the set, and the
    /// set with it in place must validate. The error names the offending key.
    pub fn check_override(&self, flag: &str, definition: &Value) -> Result<(), FlagCheckError> {
        let layers = self.layers();
        if self.current().flag(flag).is_none() {
            return Err(FlagCheckError::Unknown(flag.to_owned()));
        }
        let others = layers.overrides.iter().filter(|(k, _)| *k != flag).map(|(k, o)| (k, &o.definition));
        let key = flag.to_owned();
        Layers::compose(&layers.file, others.chain(std::iter::once((&key, definition))))
            .map(drop)
            .map_err(|e| FlagCheckError::Invalid(e.to_string()))
    }

    /// Every flag in force, by key, with where its definition comes from.
    pub fn listing(&self) -> Vec<FlagInfo> {
        let layers = self.layers();
        let set = self.current();
        let mut flags: Vec<FlagInfo> = set
            .document()
            .flags()
            .keys()
            .map(|key| match layers.overrides.get(key) {
                Some(o) => FlagInfo {
                    flag: key.clone(),
                    definition: o.definition.clone(),
                    source: FlagSource::Admin,
                    changed_by: Some(o.changed_by.clone()),
                    changed_at: o.changed_at,
                },
                None => FlagInfo {
                    flag: key.clone(),
                    definition: layers.file["flags"][key].clone(),
                    source: FlagSource::File,
                    changed_by: None,
                    changed_at: layers.file_read_at,
                },
            })
            .collect();
        flags.sort_by(|a, b| a.flag.cmp(&b.flag));
        flags
    }

    /// Reloads whenever the file changes (an edit in place, or an editor's rename over it),
    /// until `shutdown`. Events within [`SETTLE`] of each other make one reload.
    pub fn watch(&self, shutdown: &CancellationToken) -> Result<(), ConfigError> {
        let Some(path) = self.inner.file.clone() else { return Ok(()) };
        let flags = self.clone();
        crate::watch::on_change(&[path], SETTLE, shutdown, move || {
            let _ = flags.reload();
        })
        .map_err(|e| ConfigError(format!("flags.file: {e}")))
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

/// Why an override was refused.
#[derive(Debug, thiserror::Error)]
pub enum FlagCheckError {
    /// The set has no such flag.
    #[error("no flag `{0}`; the flag file defines the flags")]
    Unknown(String),
    /// The definition does not validate; the message names the key.
    #[error("{0}")]
    Invalid(String),
}

/// Logs and counts a refused change; returns its error.
fn refused(what: &str, error: String) -> String {
    metrics::counter!("petstore_flag_reload_failures_total").increment(1);
    tracing::error!(%error, "{what}; the previous flags stay in force");
    error
}

fn parse(json: &str) -> Result<(Value, FlagSet), String> {
    let document: Value = serde_json::from_str(json).map_err(|e| flags::FlagError::from(e).to_string())?;
    let set = FlagSet::from_value(&document).map_err(|e| e.to_string())?;
    Ok((document, set))
}

fn read(path: &Path) -> Result<(Value, FlagSet), String> {
    let json = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&json).map_err(|e| format!("{}: {e}", path.display()))
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
