//! Feature flags: the announcement that an administrator changed one, so that every instance
//! of every service puts the change in force at once.

use serde::{Deserialize, Serialize};

use crate::{channels, message};

/// An administrator set (`PUT /admin/flags/{flag}`) or removed (`DELETE`) the override of a
/// flag. The stored overrides are the truth: a receiver reads them again rather than trusting
/// the order announcements arrive in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagChanged {
    /// The flag.
    pub flag: String,
    /// Who changed it (the token subject).
    pub changed_by: String,
}
message!(FlagChanged, "petstore.flags.flag-changed.v1", channels::FLAG_EVENTS, |m| m.flag.clone());
