//! Feature flags defined in the [flagd](https://flagd.dev) JSON format and evaluated in-process:
//! no flagd daemon, no network hop, and the same answers a flagd provider would give, so the
//! definitions stay portable to flagd itself.
//!
//! ```
//! use flags::{EvaluationContext, FlagSet, Reason};
//!
//! let flags = FlagSet::parse(r#"{
//!   "flags": {
//!     "premium_filters": {
//!       "state": "ENABLED",
//!       "variants": { "on": true, "off": false },
//!       "defaultVariant": "off",
//!       "targeting": { "if": [{ "==": [{ "var": "tier" }, "premium"] }, "on", null] }
//!     }
//!   }
//! }"#)?;
//! let customer = EvaluationContext::for_key("c-42").with("tier", "premium");
//! let evaluation = flags.evaluate("premium_filters", &customer)?;
//! assert_eq!(evaluation.reason, Reason::TargetingMatch);
//! assert!(flags.bool("premium_filters", &customer)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Loading.** [`FlagSet::parse`] reads `{"$schema"?, "flags": {…}, "$evaluators"?, "metadata"?}`
//! and refuses the whole document on the first problem, naming its key path
//! (`flags.pricing_experiment.defaultVariant: `gold` is not one of the variants`): unknown keys or
//! states, a default variant that is not a variant, variants of mixed types, unknown JsonLogic
//! operators or wrong argument counts, malformed `fractional` or `sem_ver`, and `$ref`s to
//! missing evaluators or in a loop.
//!
//! **Evaluating.** [`FlagSet::evaluate`] follows flagd: `DISABLED`, `STATIC`, `TARGETING_MATCH`,
//! `DEFAULT`, or `ERROR` when targeting fails or names no variant — the default variant is served
//! then too, with the error beside it. Rules see the [`EvaluationContext`] plus
//! `$flagd.flagKey` and `$flagd.timestamp`, which flagd injects.
//!
//! **JsonLogic.** Rules run on [`datalogic_rs`], a maintained JsonLogic engine that compiles a
//! rule once for many evaluations. flagd's operators — `fractional`, `sem_ver`, `starts_with`,
//! `ends_with` — are implemented here as its custom operators rather than taken from its `flagd`
//! feature: this crate's tests then pin `fractional` to current flagd's bucketing (which the Rust
//! flagd engine 0.0.x/0.2.x does not match), and the operators keep flagd's answers on odd input
//! (non-string variants in buckets, null for non-strings). 5.4 is the newest release that builds
//! on this workspace's Rust.

mod definition;
mod error;
mod evaluation;
mod flag_set;
mod fractional;
mod jsonlogic;
mod sem_ver;
mod string_ops;

pub use definition::{Flag, FlagDocument, FlagKind, FlagState, FlagValue};
pub use error::{FlagError, KeyPath, Problem};
pub use evaluation::{Evaluation, EvaluationContext, EvaluationError, Reason, TargetingError};
pub use flag_set::FlagSet;
