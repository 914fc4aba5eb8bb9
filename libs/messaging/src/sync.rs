//! Poison-tolerant locking for the backends' small shared maps.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`. No code path panics while holding these locks; should one ever do, the data is
/// still consistent (single inserts and removals), so it is recovered rather than propagated.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
