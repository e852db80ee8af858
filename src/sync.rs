//! The one lock helper every layer uses.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, shrugging off poisoning: every critical section in the
/// crate is a short push, retain, swap or clone that leaves the data
/// consistent even if a panic ends it half-way.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
