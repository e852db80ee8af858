//! One timer per node that watches every link for a silent peer and sends
//! the heartbeats of the links that have nothing else to send.
//!
//! Each link counts the bytes it receives; the node's ticker wakes once a
//! tick (a quarter of the heartbeat interval or of the timeout, whichever is
//! shorter) and visits every link:
//!
//! - a link that received something starts its count over, a quiet one has
//!   a tick counted, with how late the tick fired (a late tick is this
//!   node's starvation, not the peer's silence, see [`Patience`]). The
//!   link's task is woken only when the count says something: the peer has
//!   been silent (see [`silent_after`]), or for all of the timeout;
//! - a link that has sent nothing (no frame handed to its send queue) for
//!   long enough that the next tick would leave it silent for more than the
//!   heartbeat interval is given a heartbeat now. On a link in the clear
//!   whose task waits, the ticker writes it to the socket itself, without
//!   waking the task (see [`crate::link::outbox`]); otherwise it is queued.
//!   Idle links beat on beat ticks, every `beat_every`-th tick of the
//!   system clock, so that they all beat in one pass (see `Watch::beat`);
//! - a link that has had something to write and written nothing to its
//!   socket for the timeout is closed as stalled: its peer stopped reading
//!   (see [`crate::link::stall`]);
//! - a link whose reader has waited on a full receive queue while its
//!   handles handed out no message for the unread timeout
//!   ([`Settings::unread_timeout`](crate::Settings::unread_timeout), its
//!   own bound, counted in the same ticks) is closed as unread
//!   ([`CloseReason::Unread`]): this node's application does not read it,
//!   and the link, reading nothing more from its socket, would otherwise
//!   carry nothing else from the peer (its envelopes, its goodbye) for as
//!   long as it lives, while holding its queue's share of the node's cap;
//! - the buffers a link keeps for large frames go at a tick in which no
//!   large frame came, or that finds the node short of room (see
//!   [`Pool::tick`]).
//!
//! So an idle link costs the node a few atomic reads and, once an interval,
//! one write: not a timer, and no wake of its task for what it sends.
//! Ticks fall on multiples of the tick on the system clock, the same
//! instants on every node whose clock agrees: the heartbeats of many links
//! leave together and arrive together, so one wake-up of a worker thread
//! serves many links.
//!
//! The ticker's task runs while some link is watched and ends with the last.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::CloseReason;
use crate::link::connection::Link;
use crate::link::intake::Duty;
use crate::link::outbox::OutTx;
use crate::link::patience::Patience;
use crate::link::queue::Store;
use crate::link::stall::Stall;
use crate::sync::lock;
use crate::wire::decoder::Pool;
use crate::wire::frame::{self, Frame};

/// The links of one node being watched, and the timer that visits them.
pub(crate) struct Ticker {
    timeout: Duration,
    /// How long a full receive queue may go with no message read.
    unread_timeout: Duration,
    /// A peer quiet for this many ticks is reported silent.
    silent_ticks: u32,
    tick: Duration,
    /// Ticks per heartbeat interval.
    beat_every: u32,
    state: Arc<Mutex<Watched>>,
}

#[derive(Default)]
struct Watched {
    links: Vec<Weak<Watch>>,
    /// The ticker's task is running.
    running: bool,
}

impl Ticker {
    /// A ticker for links whose peers time out after `timeout` of silence,
    /// which send a heartbeat after `interval` with nothing to send, and
    /// which are closed as unread after `unread_timeout` with a full
    /// receive queue and no message read.
    pub(crate) fn new(timeout: Duration, interval: Duration, unread_timeout: Duration) -> Ticker {
        let tick = (timeout.min(interval) / 4).max(Duration::from_millis(1));
        let beat_every = (interval.as_nanos() / tick.as_nanos()).clamp(1, u32::MAX as u128) as u32;
        Ticker {
            timeout,
            unread_timeout,
            silent_ticks: silent_after(interval, timeout)
                .as_nanos()
                .div_ceil(tick.as_nanos())
                .clamp(1, u32::MAX as u128) as u32,
            tick,
            beat_every,
            state: Arc::default(),
        }
    }

    /// Starts watching a link whose buffers for large frames are `pool`,
    /// and sending its heartbeats on `out`; it is watched until the
    /// returned handle is dropped, or its peer timed out. Call from within
    /// the runtime.
    pub(crate) fn watch(&self, pool: Arc<Pool>, link: Arc<Link>, out: OutTx) -> Arc<Watch> {
        let w = Arc::new(Watch {
            received: Arc::default(),
            delivering: AtomicBool::new(false),
            written: Arc::default(),
            writing: AtomicBool::new(false),
            silence: Arc::default(),
            duty: Arc::default(),
            pool,
            link,
            out,
            count: Mutex::new(Count {
                patience: Patience::sliced(self.timeout, self.tick),
                seen: 0,
                fresh: true,
                silent: false,
                unheard: 0,
                ended: None,
                sent_seen: 0,
                quiet: 0,
                beat_was_last: false,
                stall: Stall::new(self.timeout, self.tick),
                unread: Stall::new(self.unread_timeout, self.tick),
                reading_ticks: 0,
                handle_reads: 0,
            }),
            wake: Notify::new(),
        });
        let mut s = lock(&self.state);
        s.links.push(Arc::downgrade(&w));
        if !s.running {
            s.running = true;
            tokio::spawn(tick(
                Arc::downgrade(&self.state),
                self.tick,
                self.silent_ticks,
                self.beat_every,
            ));
        }
        w
    }
}

/// How long a peer may say nothing before it is reported silent (its
/// member turns suspect): an interval and a half, a heartbeat late by half
/// an interval, or half the timeout if that is longer. Heartbeats come an
/// interval apart at most, so with an interval longer than a third of the
/// timeout an idle peer is never reported silent for being idle; with a
/// short one a late heartbeat or two is not news. A peer silent for the
/// whole timeout is closed before it is reported silent if this is as long.
/// It is counted in the ticker's ticks, not on the clock: a tick that comes
/// late because this node was starved counts one tick, as the peer's
/// heartbeats, sent a number of ticks apart, would have come late too.
pub(crate) fn silent_after(interval: Duration, timeout: Duration) -> Duration {
    (interval + interval / 2).max(timeout / 2)
}

/// The next multiple of `tick` on the system clock, as a timer's instant.
fn next_tick(tick: Duration) -> Instant {
    let now = Instant::now();
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let tick_ns = tick.as_nanos().max(1);
    let to_next = tick_ns - since_epoch % tick_ns;
    now + Duration::from_nanos(to_next as u64)
}

/// The number of the multiple of `tick` on the system clock nearest now.
fn tick_number(tick: Duration) -> u128 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let tick_ns = tick.as_nanos().max(1);
    (since_epoch + tick_ns / 2) / tick_ns
}

/// The ticker's task: a tick at a time, visits every watched link.
async fn tick(state: Weak<Mutex<Watched>>, tick: Duration, silent_ticks: u32, beat_every: u32) {
    let mut due = next_tick(tick);
    loop {
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        let lateness = now.saturating_duration_since(due);
        let Some(state) = state.upgrade() else {
            return;
        };
        // Visited outside the list's lock: a heartbeat written takes the
        // link's send queue's lock, and new links may be listed meanwhile.
        let links: Vec<Arc<Watch>> = {
            let mut s = lock(&state);
            let mut live = Vec::with_capacity(s.links.len());
            s.links.retain(|w| match w.upgrade() {
                Some(w) => {
                    live.push(w);
                    true
                }
                None => false,
            });
            if live.is_empty() {
                s.running = false;
                return;
            }
            live
        };
        // Every `beat_every`-th tick of the system clock: the same ticks on
        // every node whose clock agrees.
        let beat_tick = tick_number(tick) % u128::from(beat_every) == 0;
        let done: Vec<usize> = links
            .iter()
            .filter(|w| !w.visit(lateness, silent_ticks, beat_every, beat_tick))
            .map(|w| Arc::as_ptr(w) as usize)
            .collect();
        if !done.is_empty() {
            lock(&state)
                .links
                .retain(|w| !done.contains(&(w.as_ptr() as usize)));
        }
        drop(links);
        // The tick after this one on the clock; a tick missed while this
        // node was not scheduled is not made up for.
        due = next_tick(tick).max(due + tick / 2);
    }
}

/// One link as the ticker sees it, shared with the link's task.
pub(crate) struct Watch {
    /// Bytes received (a large frame counts while it arrives).
    pub(crate) received: Arc<AtomicU64>,
    /// Set while the reader waits on a full receive queue: the peer's
    /// silence then is our consumer's slowness, not the peer's absence;
    /// but if the link's handles hand out no message for the unread
    /// timeout, the link is closed as unread.
    pub(crate) delivering: AtomicBool,
    /// Bytes handed to the socket, by the link's task or its senders.
    pub(crate) written: Arc<AtomicU64>,
    /// Set while the link's task writes a batch (it may wait for the
    /// socket).
    pub(crate) writing: AtomicBool,
    /// Set while the peer is reported silent: a read then wakes the link's
    /// task at once, to report the peer speaking again.
    pub(crate) silence: Arc<Silence>,
    /// Who reads the link's socket: a reading handle that owes a read and
    /// has not come for a tick gives it back to the link's task.
    pub(crate) duty: Arc<Duty>,
    /// The buffers kept for large frames, let go at a tick in which no
    /// large frame came or that finds the node short of room (see
    /// [`Pool::tick`]).
    pool: Arc<Pool>,
    /// The link (its round-trip stamps) and its send queue, for heartbeats.
    link: Arc<Link>,
    out: OutTx,
    count: Mutex<Count>,
    /// Wakes the link's task when `count` has news for it.
    wake: Notify,
}

/// The peer has been reported silent; a read wakes the link's task.
#[derive(Default)]
pub(crate) struct Silence {
    pub(crate) silent: AtomicBool,
    pub(crate) heard: Notify,
}

struct Count {
    patience: Patience,
    /// `received` when last looked at.
    seen: u64,
    /// Not visited yet: the first visit only starts the count, so that a
    /// link that has just opened gets whole slices.
    fresh: bool,
    /// Silent for [`silent_after`], and not heard from since.
    silent: bool,
    /// Ticks since the peer was last heard.
    unheard: u32,
    /// The peer timed out.
    ended: Option<CloseReason>,
    /// Frames handed to the send queue when last looked at.
    sent_seen: u64,
    /// Ticks since something was seen sent.
    quiet: u32,
    /// What was seen sent last is a heartbeat of the ticker's, sent right
    /// at a tick (anything else was sent some time since the tick before).
    beat_was_last: bool,
    /// Whether the link's writes get anywhere.
    stall: Stall,
    /// Whether the link's handles hand out any message while its receive
    /// queue is full (the same count, of `reading_ticks`).
    unread: Stall,
    /// Ticks before which the link's handles had handed out a message
    /// since the tick before.
    reading_ticks: u64,
    /// Reads by the link's handles when last looked at.
    handle_reads: u64,
}

impl Watch {
    /// The ticker's visit, a tick after the last, its timer `lateness`
    /// late; a peer quiet for `silent_ticks` ticks is reported silent;
    /// `beat_tick`: a tick on which idle links beat (see
    /// [`beat`](Self::beat)). False once the link needs watching no more.
    fn visit(
        &self,
        lateness: Duration,
        silent_ticks: u32,
        beat_every: u32,
        beat_tick: bool,
    ) -> bool {
        self.pool.tick();
        let queued = self.beat(beat_every, beat_tick);
        let waiting = queued || self.writing.load(Ordering::Relaxed);
        let written = self.written.load(Ordering::Relaxed);
        let delivering = self.delivering.load(Ordering::Relaxed);
        let handed_out = self.link.counters.take_handed_out();
        let mut c = lock(&self.count);
        c.reading_ticks += u64::from(handed_out);
        self.duty.look(&mut c.handle_reads);
        if c.stall.look(waiting, written, lateness) {
            c.ended = Some(CloseReason::Stalled(c.stall.waited()));
            drop(c);
            self.wake.notify_one();
            return false;
        }
        let reading_ticks = c.reading_ticks;
        if c.unread.look(delivering, reading_ticks, lateness) {
            c.ended = Some(CloseReason::Unread(c.unread.waited()));
            drop(c);
            self.wake.notify_one();
            return false;
        }
        let received = self.received.load(Ordering::Relaxed);
        if c.fresh || received != c.seen || delivering {
            c.fresh = false;
            c.seen = received;
            c.unheard = 0;
            c.patience.reset();
            // A silent peer heard again is the link task's to report (the
            // read woke it); it starts the count over then.
            return true;
        }
        if c.patience.slice_passed(lateness) {
            c.ended = Some(CloseReason::Timeout(c.patience.total()));
            drop(c);
            self.wake.notify_one();
            return false;
        }
        c.unheard = c.unheard.saturating_add(1);
        if !c.silent && c.unheard >= silent_ticks {
            c.silent = true;
            self.silence.silent.store(true, Ordering::Relaxed);
            drop(c);
            self.wake.notify_one();
        }
        true
    }

    /// Sends a heartbeat if the link would otherwise have sent nothing for
    /// longer than `beat_every` ticks by the next tick, or, on a
    /// `beat_tick`, if it has sent nothing for half that. True if frames
    /// are queued (they go before any heartbeat).
    ///
    /// The second rule puts idle links in step: a link whose last frame was
    /// a heartbeat, or that has sent nothing for half an interval, beats on
    /// the next beat tick (early, once), and from then on on every beat
    /// tick, one interval apart; a link that sends something at least every
    /// half interval gets no heartbeat. So a node's idle links beat on the same ticks, and,
    /// the beat ticks being the same on every node whose clock agrees, so
    /// do its peers': heartbeats leave together and arrive together, and
    /// wake a node about once an interval, not once a tick.
    fn beat(&self, beat_every: u32, beat_tick: bool) -> bool {
        let (sent, queued, spares) = self
            .out
            .inspect(|o, len, _| (o.sent, len > 0, o.kept() > 0));
        let mut c = lock(&self.count);
        if sent != c.sent_seen {
            c.sent_seen = sent;
            c.quiet = 0;
            c.beat_was_last = false;
            drop(c);
            if spares {
                // A link that keeps sending is never quiet at a tick: its
                // spares go when the node needs their room.
                self.out.release_if_short();
            }
            return queued;
        }
        c.quiet = c.quiet.saturating_add(1);
        if c.quiet == 1 || spares {
            // Nothing sent for a tick: the send queue's buffers may go,
            // and so may the spares that the link's task, still writing
            // at the tick before, gave back since.
            self.out.trim();
        }
        // Something sent at an unknown time since the tick before it was
        // seen may be a tick older than the count says.
        let due = if c.beat_was_last {
            c.quiet >= beat_every
        } else {
            c.quiet + 1 >= beat_every
        } || (beat_tick && (c.beat_was_last || c.quiet >= (beat_every / 2).max(1)));
        if !due {
            return queued;
        }
        let stamp = lock(&self.link.timing).stamp(std::time::Instant::now());
        let frame = || Frame {
            kind: frame::HEARTBEAT,
            payload: stamp.encode(),
        };
        // Nothing queued is the only case left: frames waiting to go are
        // what the peer will hear.
        if self.out.put_if_empty(frame) {
            c.sent_seen = sent + 1;
            c.quiet = 0;
            c.beat_was_last = true;
        }
        queued
    }

    /// Resolves when the peer has been silent for the timeout while the
    /// reader was ready for it, or has taken nothing of what the link had
    /// to write for the timeout, or when this node's application has read
    /// nothing while the link's receive queue was full for the unread
    /// timeout; on
    /// the way, calls `silence(true)` once it
    /// has been silent for [`silent_after`], and `silence(false)` as soon
    /// as it speaks again.
    pub(crate) async fn timed_out(&self, silence: impl Fn(bool)) -> CloseReason {
        let mut reported = false;
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.silence.heard.notified(), if reported => {}
            }
            let mut c = lock(&self.count);
            if let Some(r) = c.ended.clone() {
                return r;
            }
            let received = self.received.load(Ordering::Relaxed);
            if c.silent && received != c.seen {
                c.seen = received;
                c.unheard = 0;
                c.patience.reset();
                c.silent = false;
                self.silence.silent.store(false, Ordering::Relaxed);
            }
            let silent = c.silent;
            drop(c);
            if silent != reported {
                reported = silent;
                silence(silent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::connection::tests::handles;
    use crate::link::outbox::OutRx;
    use bytes::Bytes;
    use std::collections::VecDeque;
    use std::task::Context;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A link `ticker` watches, its handles (to be kept), and the far end
    /// of its send queue.
    fn watched(ticker: &Ticker) -> (Arc<Watch>, impl Sized, OutRx) {
        let (conn, in_tx, out_rx) = handles();
        let w = ticker.watch(
            Arc::default(),
            conn.link().clone(),
            conn.sender_queue().clone(),
        );
        (w, (conn, in_tx), out_rx)
    }

    /// `conn`'s link, as `ticker` watches it.
    fn watched_as(ticker: &Ticker, conn: &crate::link::connection::Connection) -> Arc<Watch> {
        ticker.watch(
            Arc::default(),
            conn.link().clone(),
            conn.sender_queue().clone(),
        )
    }

    /// Takes what the ticker queued: true if it was a heartbeat (a 5-byte
    /// header and its stamps), false if nothing.
    fn beat_taken(out_rx: &mut OutRx, cx: &mut Context<'_>, segs: &mut VecDeque<Bytes>) -> bool {
        segs.clear();
        match out_rx.poll_take_all(cx, segs) {
            std::task::Poll::Ready(n) => {
                assert_eq!(n, 1);
                assert_eq!(segs[0][4], frame::HEARTBEAT);
                true
            }
            std::task::Poll::Pending => false,
        }
    }

    /// On beat ticks (every 4th here) an idle link falls in step: its
    /// first heartbeat comes by the interval, the next on the beat tick
    /// after it, then one on each beat tick; a link that sends every tick
    /// gets none; one quiet for half an interval beats on the next beat
    /// tick.
    #[tokio::test]
    async fn idle_links_fall_in_step_on_the_beat_ticks() {
        let (conn, _in_tx, mut out_rx) = handles();
        let ticker = Ticker::new(ms(3000), ms(1000), ms(30_000));
        let out = conn.sender_queue().clone();
        let w = ticker.watch(Arc::default(), conn.link().clone(), out);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut segs = VecDeque::new();
        // Tick `n`, a message sent (and taken to be written) first if
        // `send`: true if a heartbeat went out.
        let mut tick = |n: usize, send: bool| {
            if send {
                conn.sender_queue()
                    .try_send(Frame::data(Bytes::from_static(b"x")))
                    .unwrap();
                assert!(out_rx.poll_take_all(&mut cx, &mut segs).is_ready());
            }
            // The peer is heard from on every tick: the link stays up.
            w.received.fetch_add(1, Ordering::Relaxed);
            assert!(w.visit(Duration::ZERO, 6, 4, n % 4 == 0));
            beat_taken(&mut out_rx, &mut cx, &mut segs)
        };
        let beats: Vec<usize> = (1..=12).filter(|&n| tick(n, false)).collect();
        assert_eq!(beats, [3, 4, 8, 12]);
        assert!((13..=20).all(|n| !tick(n, true)), "a busy link beats");
        assert!(!tick(21, false) && !tick(22, true) && !tick(23, false));
        let beats: Vec<usize> = (24..=32).filter(|&n| tick(n, false)).collect();
        assert_eq!(beats, [24, 28, 32]);
    }

    /// A peer is reported silent an interval and a half after it was last
    /// heard, or half the timeout after if that is longer: with an interval
    /// over a third of the timeout, an idle peer beating once an interval
    /// is never reported silent, and a peer gone quiet is still closed
    /// after the timeout.
    #[tokio::test]
    async fn silence_is_reported_an_interval_and_a_half_after_the_peer_was_heard() {
        assert_eq!(silent_after(ms(1000), ms(3000)), ms(1500));
        assert_eq!(silent_after(ms(250), ms(4000)), ms(2000));
        assert_eq!(silent_after(ms(2000), ms(3000)), ms(3000));
        assert_eq!(silent_after(ms(5000), ms(15_000)), ms(7500));
        for (interval, timeout) in [
            (ms(1000), ms(3000)),
            (ms(2000), ms(3000)),
            (ms(5000), ms(15_000)),
        ] {
            let ticker = Ticker::new(timeout, interval, ms(30_000));
            let (tick, beat_every, silent_ticks) =
                (ticker.tick, ticker.beat_every, ticker.silent_ticks);
            let silent_after = silent_after(interval, timeout);
            assert_eq!(tick * silent_ticks, silent_after);
            let (w, _handles, mut out_rx) = watched(&ticker);
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            let mut segs = VecDeque::new();
            // A tick, the heartbeats it queued taken to be written.
            let mut visit = |n: u32| {
                let open = w.visit(
                    Duration::ZERO,
                    silent_ticks,
                    beat_every,
                    n % beat_every == 0,
                );
                beat_taken(&mut out_rx, &mut cx, &mut segs);
                open
            };
            // The peer heard once an interval: never silent.
            for n in 1..=10 * beat_every {
                if n % beat_every == 0 {
                    w.received.fetch_add(1, Ordering::Relaxed);
                }
                assert!(visit(n), "closed at tick {n}");
                assert!(
                    !w.silence.silent.load(Ordering::Relaxed),
                    "silent at tick {n}"
                );
            }
            // Then quiet: silent once the ticks add up to `silent_after`
            // (unless that is the timeout), closed after the timeout.
            let mut n = 10 * beat_every;
            let mut quiet = Duration::ZERO;
            while visit(n + 1) {
                n += 1;
                quiet += tick;
                let silent = w.silence.silent.load(Ordering::Relaxed);
                assert_eq!(silent, quiet >= silent_after, "after {quiet:?} of quiet");
                assert!(quiet < timeout, "open after {quiet:?}");
            }
            assert_eq!(quiet + tick, timeout, "closed after the timeout");
            assert!(matches!(
                lock(&w.count).ended,
                Some(CloseReason::Timeout(_))
            ));
        }
    }

    /// Silence is counted in ticks: a tick that came late (this node was
    /// starved) counts one, so it does not make the peer silent sooner;
    /// the timeout, counted as `Patience` counts it, is given once more.
    #[tokio::test]
    async fn a_late_tick_does_not_make_the_peer_silent_sooner() {
        let ticker = Ticker::new(ms(3000), ms(1000), ms(30_000));
        assert_eq!(ticker.silent_ticks, 6);
        let (w, _handles, mut out_rx) = watched(&ticker);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut segs = VecDeque::new();
        let mut visit = |lateness| {
            let open = w.visit(lateness, 6, 4, false);
            beat_taken(&mut out_rx, &mut cx, &mut segs);
            (open, w.silence.silent.load(Ordering::Relaxed))
        };
        assert_eq!(visit(Duration::ZERO), (true, false), "the count starts");
        assert_eq!(visit(ms(1000)), (true, false), "a tick a second late");
        let mut ticks = 1;
        loop {
            let (open, silent) = visit(Duration::ZERO);
            if !open {
                break;
            }
            ticks += 1;
            assert_eq!(silent, ticks >= 6, "after {ticks} ticks");
        }
        assert_eq!(ticks + 1, 24, "timed out after twice the timeout's ticks");
    }

    /// The send queue's spare encoding buffers go at the first tick that
    /// finds nothing sent since the tick before, even those the link's
    /// task gives back after such a tick, having been writing through it.
    #[tokio::test]
    async fn spares_go_once_the_queue_has_been_quiet_for_a_tick() {
        let (conn, _in_tx, _out_rx) = handles();
        let (out, mut out_rx) = crate::link::queue::channel(10_000, usize::MAX);
        let ticker = Ticker::new(ms(3000), ms(1000), ms(30_000));
        let w = ticker.watch(Arc::default(), conn.link().clone(), out.clone());
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut segs = VecDeque::new();
        let kept = || out.inspect(|o, _, _| o.kept());
        let tick = || assert!(w.visit(Duration::ZERO, 6, 4, false));
        // A burst: the link's task takes it, and writes it through the
        // first quiet tick.
        let per_frame = 1000 + 5;
        for _ in 0..3 * crate::link::batch::BATCH_BYTES.div_ceil(per_frame) {
            out.try_send(Frame::data(Bytes::from(vec![1u8; 1000])))
                .unwrap();
        }
        tick();
        assert!(out_rx.poll_take_all(&mut cx, &mut segs).is_ready());
        assert!(segs.len() > 1);
        tick();
        // Written: its buffers come back as spares.
        let mut written: Vec<Bytes> = segs.drain(..).collect();
        out_rx.with_room(|o, room| o.recycle(&mut written, room));
        assert!(kept() > 0);
        tick();
        assert_eq!(kept(), 0, "kept past a quiet tick");
    }

    /// A link that sends something at every tick is never quiet: its
    /// spares stay while the node has room, and go at the first tick
    /// that finds the node short of it.
    #[tokio::test]
    async fn a_busy_links_spares_go_when_the_node_is_short_of_room() {
        let (conn, _in_tx, _out_rx) = handles();
        let node = Arc::new(crate::stats::Queued::default());
        node.set_max(64 << 20);
        let (out, mut out_rx) = crate::link::queue::within::<crate::link::outbox::Outbox>(
            10_000,
            usize::MAX,
            Some(node.clone()),
        );
        let ticker = Ticker::new(ms(3000), ms(1000), ms(30_000));
        let w = ticker.watch(Arc::default(), conn.link().clone(), out.clone());
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut segs = VecDeque::new();
        let kept = || out.inspect(|o, _, _| o.kept());
        let frame = || Frame::data(Bytes::from(vec![1u8; 1000]));
        for _ in 0..3 * crate::link::batch::BATCH_BYTES.div_ceil(1000 + 5) {
            out.try_send(frame()).unwrap();
        }
        assert!(out_rx.poll_take_all(&mut cx, &mut segs).is_ready());
        let mut written: Vec<Bytes> = segs.drain(..).collect();
        out_rx.with_room(|o, room| o.recycle(&mut written, room));
        assert!(kept() > 0);
        // Something sent, taken and written before every tick (so no
        // sender waits for room, which would let the spares go too).
        let mut busy_tick = || {
            out.try_send(frame()).unwrap();
            assert!(out_rx.poll_take_all(&mut cx, &mut segs).is_ready());
            let mut written: Vec<Bytes> = segs.drain(..).collect();
            out_rx.with_room(|o, room| o.recycle(&mut written, room));
            w.visit(Duration::ZERO, 6, 4, false);
        };
        busy_tick();
        busy_tick();
        assert!(kept() > 0, "the node has room: kept");
        // Other queues of the node take most of its cap.
        node.recharge(0, 60 << 20);
        busy_tick();
        assert_eq!(kept(), 0, "the node is short of room: let go");
    }

    /// A link with a 3 s heartbeat timeout and `unread_timeout` (ticks of
    /// 250 ms) whose reader waits on a full receive queue, read by a handle
    /// that takes a message every `read_every` ticks, `reads` times, and
    /// then nothing: the ticks from the last read until the link closes,
    /// and why it closed. Panics if it closes while read.
    fn read_then_stop(unread_timeout: Duration, read_every: u32, reads: u32) -> (u32, CloseReason) {
        use futures::{FutureExt, StreamExt};
        let (mut conn, in_tx, mut out_rx) = handles();
        let ticker = Ticker::new(ms(3000), ms(1000), unread_timeout);
        let w = watched_as(&ticker, &conn);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut segs = VecDeque::new();
        // A tick; its heartbeat, if any, is taken to be written.
        let mut visit = || {
            let open = w.visit(Duration::ZERO, 6, 4, false);
            beat_taken(&mut out_rx, &mut cx, &mut segs);
            open
        };
        let fill = || while in_tx.try_send(Bytes::from_static(b"m")).is_ok() {};
        fill();
        // The link's task finds the queue full and waits for room.
        w.delivering.store(true, Ordering::Relaxed);
        // The first read takes the whole queue, the next ones come from
        // what the handle took (nothing is taken from the queue).
        for n in 1..=read_every * reads {
            if n % read_every == 0 {
                assert!(conn.next().now_or_never().flatten().is_some());
                fill();
            }
            assert!(visit(), "closed at tick {n}");
        }
        let mut ticks = 1;
        while visit() {
            ticks += 1;
            assert!(ticks < 1000, "still open");
        }
        let ended = lock(&w.count).ended.clone().expect("closed");
        (ticks, ended)
    }

    /// A link whose reader waits on a full receive queue is closed as
    /// unread once its handles have handed out no message for the unread
    /// timeout (here 2 s, not the heartbeat timeout's 3 s); a handle that
    /// reads now and then keeps it open, even while it hands out messages
    /// it took from the queue earlier.
    #[tokio::test]
    async fn a_full_receive_queue_nobody_reads_closes_the_link_as_unread() {
        // A message read every 4 ticks (1 s), then none: closed once 8
        // ticks (2 s) found nothing read since the tick before.
        let (ticks, ended) = read_then_stop(ms(2000), 4, 12);
        assert_eq!(ticks, 8);
        assert_eq!(ended, CloseReason::Unread(ms(2000)));
    }

    /// A reader that takes seconds over each message (a message every 5 s,
    /// slower than the 3 s heartbeat timeout) keeps its link under the
    /// default 30 s unread timeout: its slowness is not a network failure.
    /// It is closed only once it has read nothing for the 30 s.
    #[tokio::test]
    async fn a_reader_slower_than_the_heartbeat_timeout_keeps_its_link() {
        let (ticks, ended) = read_then_stop(crate::limits::DEFAULT_UNREAD_TIMEOUT, 20, 8);
        assert_eq!(ticks, 120);
        assert_eq!(ended, CloseReason::Unread(ms(30_000)));
    }

    /// With a 1 s interval and a 3 s timeout the ticker ticks every 250 ms:
    /// an idle link gets a heartbeat every 4 ticks (the interval); after
    /// something else was sent, at some time within the tick before it was
    /// seen, one comes 3 ticks after it was seen; a link sending a message
    /// every tick gets none.
    #[tokio::test]
    async fn heartbeats_go_once_an_interval_where_nothing_else_was_sent() {
        let (conn, _in_tx, mut out_rx) = handles();
        let ticker = Ticker::new(ms(3000), ms(1000), ms(30_000));
        assert_eq!((ticker.tick, ticker.beat_every), (ms(250), 4));
        let out = conn.sender_queue().clone();
        let w = ticker.watch(Arc::default(), conn.link().clone(), out);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut segs = VecDeque::new();
        // One tick: true if a heartbeat went out, nothing else being sent.
        let mut tick = || {
            assert!(w.visit(Duration::ZERO, 6, 4, false));
            beat_taken(&mut out_rx, &mut cx, &mut segs)
        };
        // Nothing seen sent yet (as after something sent): 3 ticks.
        let beats: Vec<bool> = (0..11).map(|_| tick()).collect();
        let want = [false, false, true, false, false, false, true];
        assert_eq!(beats[..7], want);
        assert_eq!(beats[7..], [false, false, false, true]);
        for _ in 0..8 {
            conn.sender_queue()
                .try_send(Frame::data(Bytes::from_static(b"x")))
                .unwrap();
            w.visit(Duration::ZERO, 6, 4, false);
            segs.clear();
            assert_eq!(
                out_rx.poll_take_all(&mut cx, &mut segs),
                1.into(),
                "no beat"
            );
        }
    }
}
