//! A link's round-trip time: the stamps its heartbeats carry, the smoothed
//! estimate they feed (as TCP's, RFC 6298), and the pings waiting for their
//! answer. Pure: the time comes with each call.
//!
//! Each heartbeat says when it went and echoes the peer's last stamp with
//! how long it was held here; the echo, when it comes back, is one round
//! trip less that hold. Heartbeats go only on a direction with nothing else
//! to send, so a link busy both ways adds no frame to be timed and keeps
//! its last estimate; [`Service::ping`](crate::Service::ping) measures on
//! demand.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::wire::timing::Beat;

/// The smoothed round-trip time and its variation (RFC 6298, section 2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
    samples: u64,
}

impl Rtt {
    /// Takes one measured round trip.
    pub(crate) fn sample(&mut self, r: Duration) {
        self.samples += 1;
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                // RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'|, then
                // SRTT <- 7/8 SRTT + 1/8 R'.
                let diff = srtt.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + r) / 8);
            }
        }
    }

    /// The smoothed round-trip time; `None` before the first sample.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Its variation; `None` before the first sample.
    pub(crate) fn rttvar(&self) -> Option<Duration> {
        self.srtt.map(|_| self.rttvar)
    }

    /// Round trips measured so far.
    #[cfg(test)]
    pub(crate) fn samples(&self) -> u64 {
        self.samples
    }
}

/// One link's clock, the peer's last stamp, the estimate, and its pings.
#[derive(Debug)]
pub(crate) struct Timing {
    /// Stamps count from here.
    epoch: Instant,
    /// The peer's last stamp, and when it came.
    peer: Option<(u64, Instant)>,
    /// Our last stamp the peer echoed: each is timed once.
    echoed: u64,
    rtt: Rtt,
    /// Pings waiting for their pong: number, when it went, who waits.
    pings: Vec<(u64, Instant, oneshot::Sender<Duration>)>,
    next_ping: u64,
}

impl Timing {
    pub(crate) fn new(epoch: Instant) -> Timing {
        Timing {
            epoch,
            peer: None,
            echoed: 0,
            rtt: Rtt::default(),
            pings: Vec::new(),
            next_ping: 1,
        }
    }

    pub(crate) fn rtt(&self) -> Rtt {
        self.rtt
    }

    /// This end's clock as a stamp: microseconds from 1.
    fn clock(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64 + 1
    }

    /// The stamps of a heartbeat going now.
    pub(crate) fn stamp(&self, now: Instant) -> Beat {
        let (echo, held) = match self.peer {
            Some((sent, at)) => {
                let held = now.saturating_duration_since(at).as_micros();
                (sent, held.min(u32::MAX as u128) as u32)
            }
            None => (0, 0),
        };
        Beat {
            sent: self.clock(now),
            echo,
            held,
        }
    }

    /// A heartbeat's stamps arrived now; returns the round trip it timed,
    /// if any (an echo not seen before, of a stamp this end made).
    pub(crate) fn beat(&mut self, beat: Beat, now: Instant) -> Option<Duration> {
        if self.peer.is_none_or(|(sent, _)| beat.sent > sent) {
            self.peer = Some((beat.sent, now));
        }
        if beat.echo <= self.echoed || beat.echo > self.clock(now) {
            return None;
        }
        self.echoed = beat.echo;
        let went = self.epoch + Duration::from_micros(beat.echo - 1);
        let held = Duration::from_micros(beat.held.into());
        let r = now.saturating_duration_since(went).saturating_sub(held);
        self.rtt.sample(r);
        Some(r)
    }

    /// A ping goes now: its number, and where its round trip will come.
    /// Pings whose callers gave up are forgotten here, so those waiting are
    /// as many as the callers waiting.
    pub(crate) fn ping(&mut self, now: Instant) -> (u64, oneshot::Receiver<Duration>) {
        self.pings.retain(|(_, _, tx)| !tx.is_closed());
        let n = self.next_ping;
        self.next_ping += 1;
        let (tx, rx) = oneshot::channel();
        self.pings.push((n, now, tx));
        (n, rx)
    }

    /// The pong of ping `n` arrived now: its round trip goes to the one
    /// waiting, and into the estimate. A pong of no ping is ignored.
    pub(crate) fn pong(&mut self, n: u64, now: Instant) {
        let Some(at) = self.pings.iter().position(|(p, _, _)| *p == n) else {
            return;
        };
        let (_, went, tx) = self.pings.swap_remove(at);
        let r = now.saturating_duration_since(went);
        self.rtt.sample(r);
        let _ = tx.send(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_estimate_follows_rfc_6298() {
        let mut r = Rtt::default();
        assert_eq!((r.srtt(), r.rttvar()), (None, None));
        r.sample(ms(100));
        assert_eq!((r.srtt(), r.rttvar()), (Some(ms(100)), Some(ms(50))));
        r.sample(ms(200));
        // RTTVAR = 3/4 * 50 + 1/4 * 100 = 62.5; SRTT = 7/8 * 100 + 1/8 * 200.
        assert_eq!(r.rttvar(), Some(Duration::from_micros(62_500)));
        assert_eq!(r.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(r.samples(), 2);
    }

    /// Two ends a fixed delay apart each way, stamping and echoing: each
    /// measures the round trip, less what the other held the stamp.
    #[test]
    fn an_echo_times_one_round_trip_less_the_hold() {
        let t0 = Instant::now();
        let mut a = Timing::new(t0);
        // The other end's clock starts elsewhere: only its own stamps are
        // read against it.
        let mut b = Timing::new(t0 + ms(5000));
        let one_way = ms(20);

        let beat = a.stamp(t0 + ms(10));
        assert_eq!(beat.echo, 0);
        assert_eq!(b.beat(beat, t0 + ms(10) + one_way), None);
        // b sends its own heartbeat 300 ms after a's came.
        let back = b.stamp(t0 + ms(330));
        assert_eq!(back.held, 300_000);
        assert_eq!(a.beat(back, t0 + ms(350)), Some(ms(40)));
        assert_eq!(a.rtt().srtt(), Some(ms(40)));
        // The same echo again (b heard nothing new) times nothing.
        let again = b.stamp(t0 + ms(1330));
        assert_eq!(a.beat(again, t0 + ms(1350)), None);
        assert_eq!(a.rtt().samples(), 1);
    }

    #[test]
    fn an_echo_of_a_stamp_not_made_yet_is_ignored() {
        let t0 = Instant::now();
        let mut a = Timing::new(t0);
        let forged = Beat {
            sent: 1,
            echo: 10_000_000,
            held: 0,
        };
        assert_eq!(a.beat(forged, t0 + ms(1)), None);
        assert_eq!(a.rtt().srtt(), None);
    }

    #[test]
    fn a_pong_answers_its_ping_once() {
        let t0 = Instant::now();
        let mut a = Timing::new(t0);
        let (n, mut rx) = a.ping(t0);
        let (m, _rx2) = a.ping(t0 + ms(1));
        assert_ne!(n, m);
        a.pong(n + 100, t0 + ms(3));
        assert!(rx.try_recv().is_err());
        a.pong(n, t0 + ms(7));
        assert_eq!(rx.try_recv(), Ok(ms(7)));
        a.pong(n, t0 + ms(9));
        assert_eq!(a.rtt().samples(), 1);
    }

    #[test]
    fn pings_given_up_are_forgotten() {
        let t0 = Instant::now();
        let mut a = Timing::new(t0);
        let waiting: Vec<_> = (0..10).map(|_| a.ping(t0)).collect();
        drop(waiting);
        let _kept = a.ping(t0);
        assert_eq!(a.pings.len(), 1);
    }
}
