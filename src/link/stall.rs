//! The progress check: a peer that takes nothing of what is queued for
//! it, and (the same count) an application that reads nothing of a full
//! receive queue.
//!
//! A peer that stops reading its socket while its link stays up (it still
//! sends heartbeats) would hold its link's share of the node's room for
//! ever, and every sender waiting for room on it (a broadcast waits on
//! every link) with it. So the node's ticker looks, at every tick, whether
//! the link has something to write (frames queued, or a write under way)
//! and whether any byte went to its socket since the last look. A link
//! that has had something to write and written nothing for the heartbeat
//! timeout is stalled: it is closed with
//! [`CloseReason::Stalled`](crate::CloseReason::Stalled).
//!
//! The time is counted as [`Patience`] counts it: a tick that fired late
//! is this node's starvation (its writer may not have run either), not the
//! peer's, and the count is given once more. A peer that reads slowly but
//! reads takes bytes at every look and is never stalled.
//!
//! The same count, of the ticks at which the application had read a
//! message while the link's receive queue was full, finds a link this
//! node's application does not read, against its own bound
//! ([`Settings::unread_timeout`](crate::Settings::unread_timeout), see
//! [`crate::link::watchdog`]).
//!
//! [`Stall`] is the pure count (no clocks, no sockets), tested below.

use std::time::Duration;

use crate::link::patience::Patience;

/// Whether a link that waits on something is getting anywhere, a tick at
/// a time: its writes (bytes written to its socket while it has something
/// to write), or its reader (messages read by the application while its
/// receive queue is full).
#[derive(Debug, Clone)]
pub(crate) struct Stall {
    patience: Patience,
    /// Progress when last looked at.
    seen: u64,
    /// The last look found the link waiting: the count runs from it.
    waiting: bool,
}

impl Stall {
    /// A link is stalled after `timeout` without progress, looked at every
    /// `tick`.
    pub(crate) fn new(timeout: Duration, tick: Duration) -> Self {
        Stall {
            patience: Patience::sliced(timeout, tick),
            seen: 0,
            waiting: false,
        }
    }

    /// A tick's look, its timer `lateness` late: `waiting` says the link
    /// waits on progress (has something to write; has a full receive
    /// queue), `progress` how much it has made in all, a count that only
    /// grows (bytes written to its socket; ticks at which the application
    /// had read one of its messages since the tick before). True once it
    /// has waited with no progress for the timeout.
    pub(crate) fn look(&mut self, waiting: bool, progress: u64, lateness: Duration) -> bool {
        // A wait first seen now began at some time since the last look:
        // the count starts here, not a tick ago.
        if !waiting || !self.waiting || progress != self.seen {
            self.seen = progress;
            self.waiting = waiting;
            self.patience.reset();
            return false;
        }
        self.patience.slice_passed(lateness)
    }

    /// How long the link has waited without progress (lateness included).
    pub(crate) fn waited(&self) -> Duration {
        self.patience.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON_TIME: Duration = Duration::ZERO;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A 400 ms timeout, looked at every 100 ms.
    fn stall() -> Stall {
        Stall::new(ms(400), ms(100))
    }

    #[test]
    fn a_link_with_nothing_to_write_is_never_stalled() {
        let mut s = stall();
        for _ in 0..100 {
            assert!(!s.look(false, 0, ON_TIME));
        }
    }

    #[test]
    fn nothing_written_for_the_timeout_is_a_stall() {
        let mut s = stall();
        assert!(
            !s.look(true, 10, ON_TIME),
            "first seen waiting: the count starts"
        );
        for _ in 0..3 {
            assert!(!s.look(true, 10, ON_TIME));
        }
        assert!(s.look(true, 10, ON_TIME));
        assert_eq!(s.waited(), ms(400));
    }

    #[test]
    fn any_byte_written_starts_the_count_over() {
        let mut s = stall();
        for written in 0..100 {
            assert!(!s.look(true, written, ON_TIME));
            assert!(!s.look(true, written, ON_TIME));
        }
    }

    #[test]
    fn a_moment_with_nothing_to_write_starts_the_count_over() {
        let mut s = stall();
        for _ in 0..20 {
            for _ in 0..4 {
                assert!(!s.look(true, 7, ON_TIME));
            }
            assert!(!s.look(false, 7, ON_TIME));
        }
    }

    /// A late tick is this node's starvation: the count is given once
    /// more (see `Patience`), and the stall is still found.
    #[test]
    fn this_nodes_starvation_is_not_the_peers_stall() {
        let mut s = stall();
        assert!(!s.look(true, 0, ON_TIME));
        assert!(!s.look(true, 0, ms(300)), "starved for 300 ms");
        for _ in 0..3 {
            assert!(!s.look(true, 0, ON_TIME));
        }
        for _ in 0..3 {
            assert!(!s.look(true, 0, ON_TIME), "the count given once more");
        }
        assert!(s.look(true, 0, ON_TIME));
        assert_eq!(s.waited(), ms(800 + 300));
    }
}
