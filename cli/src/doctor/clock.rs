//! Clock hints. A tcpnet node's incarnation is its wall-clock start time: a
//! node restarted after its clock was set back by more than its downtime
//! looks older than its stale self, and is refused as an id conflict until
//! the stale link times out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::report::Finding;

/// What the kernel says of the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    /// Kept in sync (by NTP or alike), with this maximum error.
    Synced(Duration),
    /// Not synchronized.
    Unsynced,
    /// The kernel would not say.
    Unknown,
}

/// Asks the kernel (`adjtimex`, read-only) whether the clock is synchronized.
pub(crate) fn kernel_sync() -> Sync {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: adjtimex with modes = 0 only reads the kernel's state into
        // the zeroed struct it is given.
        let (state, maxerror) = unsafe {
            let mut tx: libc::timex = std::mem::zeroed();
            let state = libc::adjtimex(&mut tx);
            (state, tx.maxerror)
        };
        match state {
            libc::TIME_ERROR => Sync::Unsynced,
            s if s >= 0 => Sync::Synced(Duration::from_micros(maxerror.max(0) as u64)),
            _ => Sync::Unknown,
        }
    }
    #[cfg(not(target_os = "linux"))]
    Sync::Unknown
}

/// The hints for `now` and the kernel's word.
pub(crate) fn check(now: SystemTime, sync: Sync) -> Vec<Finding> {
    const WHY: &str = "a node's start time (its incarnation) is wall-clock time: \
                       a node restarted after its clock went back by more than its \
                       downtime is refused as an id conflict until its stale link times out";
    let mut out = Vec::new();
    // 2024-01-01: a clock before that has never been set.
    let floor = UNIX_EPOCH + Duration::from_secs(1_704_067_200);
    if now < floor {
        out.push(Finding::problem(
            "the clock is before 2024: it has never been set",
            format!("set the clock (run an NTP client such as chrony or systemd-timesyncd); {WHY}"),
        ));
    }
    out.push(match sync {
        Sync::Synced(err) => Finding::ok(format!(
            "the kernel says the clock is synchronized (maximum error {} ms)",
            err.as_millis()
        )),
        Sync::Unsynced => Finding::hint(
            "the kernel says the clock is not synchronized (no NTP client keeps it)",
            format!("run an NTP client (chrony, systemd-timesyncd); {WHY}"),
        ),
        Sync::Unknown => Finding::hint(
            "cannot tell whether the clock is synchronized",
            format!("make sure an NTP client keeps it; {WHY}"),
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Level;

    #[test]
    fn an_unset_clock_is_a_problem_an_unsynced_one_a_hint() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let f = check(now, Sync::Synced(Duration::from_millis(3)));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Ok);
        assert_eq!(check(now, Sync::Unsynced)[0].level, Level::Hint);
        let f = check(UNIX_EPOCH + Duration::from_secs(86_400), Sync::Unsynced);
        assert_eq!(f[0].level, Level::Problem);
    }
}
