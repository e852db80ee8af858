//! The clocks: the wall clock as the wire uses it, nanoseconds since the
//! Unix epoch (incarnations, and the numbers and versions that start at
//! them), and a monotonic one for how long ago something happened here.

use std::sync::OnceLock;
use std::time::Instant;

/// Now, in nanoseconds since the Unix epoch (1 if the clock is before it).
pub(crate) fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Now, in nanoseconds of a monotonic clock since this process first
/// asked: for ages (how long since an origin was heard), which a step of
/// the wall clock must not change.
pub(crate) fn mono_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}
