//! Timeouts that do not blame a peer for this node's own starvation.
//!
//! When many nodes share few cores (a mass start of a hundred processes on
//! two), a node's tasks may not run for hundreds of milliseconds at a time:
//! a peer's hello or heartbeat then sits unread, or the peer, as starved,
//! sends it late. A plain timeout would drop the link, the pair would dial
//! again, and the extra handshakes would starve everyone further.
//!
//! So a timeout is counted in slices (a quarter of it, or shorter ones),
//! and each slice's timer says how late it fired. A slice that fired more
//! than a sixteenth of the timeout late means this node was not being
//! scheduled; a timeout that runs out after such a slice is given once
//! more, in full. A peer that is really
//! gone is still dropped, after at most twice the timeout (plus a slice).
//!
//! A handshake is a few messages each way, and each needs the other end to
//! be scheduled: under such load every step can take a good part of the
//! timeout. So a handshake's time is counted from its last step
//! ([`patient_while`]): a peer whose side keeps moving is never cut off,
//! one that stops is dropped a timeout (or two) after its last step, and
//! as a handshake has a fixed number of steps, its whole time stays
//! bounded.
//!
//! A wait that must outlast such timeouts (one for the dials it waits
//! for, say) counts the same way: [`scheduled_sleep`] counts only the time
//! this node was scheduled, so the starvation that stretches the timeouts
//! stretches it too.
//!
//! [`Patience`] is the pure count (no clocks, tested below);
//! [`patient_timeout`] and [`patient_while`] drive it with tokio's timer.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How much of a timeout has passed, in slices, and whether this node was
/// late while it passed.
#[derive(Debug, Clone)]
pub(crate) struct Patience {
    timeout: Duration,
    slice: Duration,
    /// Counted towards the timeout since the last reset or extension.
    waited: Duration,
    /// All of it since the last reset (what a timeout reports).
    total: Duration,
    /// A slice of the current count fired late.
    late: bool,
    /// The one extension has been given.
    extended: bool,
}

impl Patience {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self::sliced(timeout, timeout / 4)
    }

    /// Counted in slices of `slice` (at least 1 ms) instead of quarters.
    pub(crate) fn sliced(timeout: Duration, slice: Duration) -> Self {
        Patience {
            timeout,
            slice: slice.max(Duration::from_millis(1)),
            waited: Duration::ZERO,
            total: Duration::ZERO,
            late: false,
            extended: false,
        }
    }

    /// How long to wait for the next slice.
    pub(crate) fn slice(&self) -> Duration {
        self.slice
    }

    /// A slice has passed; its timer fired `lateness` after it was due.
    /// True once the timeout has run out.
    pub(crate) fn slice_passed(&mut self, lateness: Duration) -> bool {
        self.late |= lateness > self.timeout / 16;
        self.waited += self.slice;
        self.total += self.slice + lateness;
        if self.waited < self.timeout {
            return false;
        }
        if self.late && !self.extended {
            self.extended = true;
            self.late = false;
            self.waited = Duration::ZERO;
            return false;
        }
        true
    }

    /// The peer was heard from: the count starts over, extension included.
    pub(crate) fn reset(&mut self) {
        self.waited = Duration::ZERO;
        self.total = Duration::ZERO;
        self.late = false;
        self.extended = false;
    }

    /// How long the current count has run (lateness included).
    pub(crate) fn total(&self) -> Duration {
        self.total
    }
}

/// Resolves once `timeout` has run out as [`Patience`] counts it.
pub(crate) async fn patient_timeout(timeout: Duration) {
    patient_while(timeout, &AtomicU32::new(0)).await
}

/// Resolves once `timeout` has run out as [`Patience`] counts it since
/// `steps` last changed: each step (a whole message received) starts the
/// count over.
pub(crate) async fn patient_while(timeout: Duration, steps: &AtomicU32) {
    let mut p = Patience::new(timeout);
    let mut seen = steps.load(Ordering::Relaxed);
    let mut due = Instant::now() + p.slice();
    loop {
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        let now_at = steps.load(Ordering::Relaxed);
        if now_at != seen {
            seen = now_at;
            p.reset();
        } else if p.slice_passed(now.saturating_duration_since(due)) {
            return;
        }
        due = now + p.slice();
    }
}

/// Resolves once `span` of this node's scheduled time has passed: `span`
/// is counted in ticks of `tick` (at least 1 ms), and a tick counts as
/// `tick` however late its timer fired. A timeout counted by [`Patience`]
/// loses, in each slice that fires late, about what this count loses in
/// the tick that fires late at the same time; so with ticks no longer than
/// its slices, this count stretches at least as much, give or take a tick.
pub(crate) async fn scheduled_sleep(span: Duration, tick: Duration) {
    let tick = tick.max(Duration::from_millis(1));
    let mut left = span;
    while !left.is_zero() {
        let step = tick.min(left);
        tokio::time::sleep(step).await;
        left -= step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON_TIME: Duration = Duration::ZERO;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn on_time_it_runs_out_after_four_slices() {
        let mut p = Patience::new(ms(400));
        assert_eq!(p.slice(), ms(100));
        for _ in 0..3 {
            assert!(!p.slice_passed(ON_TIME));
        }
        assert!(p.slice_passed(ON_TIME));
        assert_eq!(p.total(), ms(400));
    }

    #[test]
    fn a_late_slice_extends_it_once() {
        let mut p = Patience::new(ms(400));
        assert!(!p.slice_passed(ms(300)), "starved for 300 ms");
        for _ in 0..2 {
            assert!(!p.slice_passed(ON_TIME));
        }
        assert!(!p.slice_passed(ON_TIME), "extended, not run out");
        // Late again during the extension: no second one.
        assert!(!p.slice_passed(ms(500)));
        for _ in 0..2 {
            assert!(!p.slice_passed(ON_TIME));
        }
        assert!(p.slice_passed(ON_TIME));
        assert_eq!(p.total(), ms(800 + 300 + 500));
    }

    #[test]
    fn a_little_lateness_is_not_starvation() {
        let mut p = Patience::new(ms(400));
        for _ in 0..3 {
            assert!(!p.slice_passed(ms(20)));
        }
        assert!(p.slice_passed(ms(25)));
    }

    #[test]
    fn hearing_from_the_peer_starts_over_and_allows_another_extension() {
        let mut p = Patience::new(ms(400));
        assert!(!p.slice_passed(ms(300)));
        for _ in 0..3 {
            assert!(!p.slice_passed(ON_TIME));
        }
        p.reset();
        assert_eq!(p.total(), Duration::ZERO);
        assert!(!p.slice_passed(ms(300)));
        for _ in 0..3 {
            assert!(!p.slice_passed(ON_TIME));
        }
        for _ in 0..3 {
            assert!(!p.slice_passed(ON_TIME));
        }
        assert!(p.slice_passed(ON_TIME));
    }

    #[tokio::test]
    async fn the_timer_never_runs_out_early() {
        let t0 = Instant::now();
        patient_timeout(ms(40)).await;
        assert!(t0.elapsed() >= ms(40), "after {:?}", t0.elapsed());
    }

    /// Time this node is not scheduled does not count: with the runtime's
    /// one thread blocked most of the time, the wait takes far longer than
    /// its span on the clock, while a plain sleep would not.
    #[tokio::test]
    async fn a_scheduled_sleep_does_not_count_time_the_node_was_not_run() {
        let t0 = Instant::now();
        let hog = tokio::spawn(async {
            loop {
                // Blocks the runtime's only thread, as a starved node's
                // threads are off the cores.
                std::thread::sleep(ms(20));
                tokio::time::sleep(ms(1)).await;
            }
        });
        scheduled_sleep(ms(100), ms(10)).await;
        hog.abort();
        // Each of the 10 ticks fires about 20 ms late (a plain sleep of
        // 100 ms would be late once, and end by about 120 ms).
        assert!(t0.elapsed() >= ms(150), "after {:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn a_scheduled_sleep_never_runs_out_early() {
        let t0 = Instant::now();
        scheduled_sleep(ms(45), ms(10)).await;
        assert!(t0.elapsed() >= ms(45), "after {:?}", t0.elapsed());
    }

    /// Steps keep it waiting; once they stop, it runs out a timeout after
    /// the last one (at the earliest).
    #[tokio::test]
    async fn each_step_starts_the_count_over() {
        let steps = AtomicU32::new(0);
        let t0 = Instant::now();
        let stepping = async {
            for _ in 0..4 {
                tokio::time::sleep(ms(30)).await;
                steps.fetch_add(1, Ordering::Relaxed);
            }
            Instant::now()
        };
        let (last, ()) = tokio::join!(stepping, patient_while(ms(40), &steps));
        assert!(
            last.elapsed() >= ms(40) && t0.elapsed() >= ms(160),
            "ran out {:?} after the last step, {:?} in all",
            last.elapsed(),
            t0.elapsed()
        );
    }
}
