//! Clock hints. A tcpnet node's incarnation is its wall-clock start time: a
//! node restarted after its clock was set back by more than its downtime
//! looks older than its stale self, and is refused as an id conflict until
//! the stale link times out. This host's clock is checked against the
//! kernel's word and against the start times the cluster's nodes announce
//! in their hellos: a start time in this host's future means one of the
//! two clocks is wrong.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tcpnet::NodeId;

use super::report::Finding;
use crate::table::span;

/// Why the clock matters, said with every clock finding that has a fix.
const WHY: &str = "a node's start time (its incarnation) is wall-clock time: \
                   a node restarted after its clock went back by more than its \
                   downtime is refused as an id conflict until its stale link times out";

/// How far in this host's future a node's start time may be before it
/// counts: clocks kept by NTP agree within milliseconds, and a start time
/// is taken before the node is announced.
pub(crate) const AHEAD: Duration = Duration::from_secs(2);

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

/// Compares the start times of the cluster's nodes (`started`, as their
/// hellos said) with this host's clock at `now`: a start time more than
/// [`AHEAD`] in the future is a problem. When most nodes are ahead, this
/// host's clock is the one behind.
pub(crate) fn peers(now: SystemTime, started: &[(NodeId, SystemTime)]) -> Vec<Finding> {
    if started.is_empty() {
        return Vec::new();
    }
    let ahead: Vec<(&NodeId, Duration)> = started
        .iter()
        .filter_map(|(id, t)| {
            let by = t.duration_since(now).ok()?;
            (by > AHEAD).then_some((id, by))
        })
        .collect();
    if ahead.is_empty() {
        return vec![Finding::ok(format!(
            "the start times of {} are in this host's past: no clock far ahead",
            crate::table::count(started.len(), "node")
        ))];
    }
    if started.len() > 1 && ahead.len() * 2 > started.len() {
        let least = ahead.iter().map(|(_, by)| *by).min().unwrap_or_default();
        return vec![Finding::problem(
            format!(
                "{} of {} nodes started in this host's future (by {} or more): \
                 this host's clock is behind",
                ahead.len(),
                started.len(),
                span(least)
            ),
            format!(
                "set this host's clock and keep it with NTP (chrony, systemd-timesyncd); {WHY}"
            ),
        )];
    }
    ahead
        .into_iter()
        .map(|(id, by)| {
            Finding::problem(
                format!(
                    "{id} started {} in this host's future: its clock is ahead \
                     (or this host's behind)",
                    span(by)
                ),
                format!(
                    "set the clock of {id}'s host and keep it with NTP (chrony, \
                     systemd-timesyncd); when its clock is set back, a restart of it \
                     looks older than its stale self; {WHY}"
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Level;

    fn node(n: u8) -> NodeId {
        NodeId::parse(&format!("{n:02x}").repeat(16)).unwrap()
    }

    #[test]
    fn a_node_far_ahead_is_named_and_a_host_behind_everyone_is_this_one() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let past = now - Duration::from_secs(30);
        assert!(peers(now, &[]).is_empty());
        let fine = peers(
            now,
            &[(node(1), past), (node(2), now + Duration::from_secs(1))],
        );
        assert_eq!(fine.len(), 1);
        assert_eq!(fine[0].level, Level::Ok);

        let one = peers(
            now,
            &[(node(1), past), (node(2), now + Duration::from_secs(600))],
        );
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].level, Level::Problem);
        assert!(one[0]
            .what
            .starts_with(&format!("{} started 10m in this host's future", node(2))));
        assert!(one[0]
            .fix
            .as_ref()
            .unwrap()
            .contains(&format!("set the clock of {}", node(2))));

        let all = peers(
            now,
            &[
                (node(1), now + Duration::from_secs(90)),
                (node(2), now + Duration::from_secs(95)),
                (node(3), past),
            ],
        );
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0].what,
            "2 of 3 nodes started in this host's future (by 1m or more): this host's clock is behind"
        );
    }

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
