//! The wall clock as the wire uses it: nanoseconds since the Unix epoch
//! (incarnations, and the numbers and versions that start at them).

/// Now, in nanoseconds since the Unix epoch (1 if the clock is before it).
pub(crate) fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
