//! One timer per node that watches every link for a silent peer.
//!
//! Each link counts the bytes it receives; the node's ticker wakes once a
//! slice (a quarter of the heartbeat timeout, as [`Patience`] counts it) and
//! visits every link: a link that received something starts its count over,
//! a quiet one has a slice counted, with how late the tick fired (a late
//! tick is this node's starvation, not the peer's silence). The link's task
//! is woken only when the count says something: the peer has been silent for
//! half the timeout, or for all of it. So an idle link costs the node a few
//! atomic reads a slice, not a timer and a wake of its task.
//!
//! The ticker's task runs while some link is watched and ends with the last.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::CloseReason;
use crate::link::patience::Patience;
use crate::sync::lock;
use crate::wire::decoder::Pool;

/// The links of one node being watched, and the timer that visits them.
pub(crate) struct Ticker {
    timeout: Duration,
    state: Arc<Mutex<Watched>>,
}

#[derive(Default)]
struct Watched {
    links: Vec<Weak<Watch>>,
    /// The ticker's task is running.
    running: bool,
}

impl Ticker {
    /// A ticker for links whose peers time out after `timeout` of silence.
    pub(crate) fn new(timeout: Duration) -> Ticker {
        Ticker {
            timeout,
            state: Arc::default(),
        }
    }

    /// Starts watching a link whose buffers for large frames are `pool`;
    /// it is watched until the returned handle is dropped, or its peer
    /// timed out. Call from within the runtime.
    pub(crate) fn watch(&self, pool: Arc<Pool>) -> Arc<Watch> {
        let w = Arc::new(Watch {
            received: Arc::default(),
            delivering: AtomicBool::new(false),
            silence: Arc::default(),
            pool,
            count: Mutex::new(Count {
                patience: Patience::new(self.timeout),
                seen: 0,
                fresh: true,
                silent: false,
                ended: None,
            }),
            wake: Notify::new(),
        });
        let mut s = lock(&self.state);
        s.links.push(Arc::downgrade(&w));
        if !s.running {
            s.running = true;
            let slice = Patience::new(self.timeout).slice();
            tokio::spawn(tick(Arc::downgrade(&self.state), slice, self.timeout));
        }
        w
    }
}

/// The ticker's task: a slice at a time, visits every watched link.
async fn tick(state: Weak<Mutex<Watched>>, slice: Duration, timeout: Duration) {
    let mut due = Instant::now() + slice;
    loop {
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        let lateness = now.saturating_duration_since(due);
        let Some(state) = state.upgrade() else {
            return;
        };
        let mut s = lock(&state);
        s.links.retain(|w| match w.upgrade() {
            Some(w) => w.visit(lateness, timeout),
            None => false,
        });
        if s.links.is_empty() {
            s.running = false;
            return;
        }
        drop(s);
        due = now + slice;
    }
}

/// One link as the ticker sees it, shared with the link's task.
pub(crate) struct Watch {
    /// Bytes received (a large frame counts while it arrives).
    pub(crate) received: Arc<AtomicU64>,
    /// Set while the reader waits on a full receive queue: the peer's
    /// silence then is our consumer's slowness, not the peer's absence.
    pub(crate) delivering: AtomicBool,
    /// Set while the peer is reported silent: a read then wakes the link's
    /// task at once, to report the peer speaking again.
    pub(crate) silence: Arc<Silence>,
    /// A quiet slice frees the buffers kept for large frames: an idle link
    /// holds none.
    pool: Arc<Pool>,
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
    /// Silent for half the timeout, and not heard from since.
    silent: bool,
    /// The peer timed out.
    ended: Option<CloseReason>,
}

impl Watch {
    /// The ticker's visit, a slice after the last, its timer `lateness`
    /// late. False once the link needs watching no more.
    fn visit(&self, lateness: Duration, timeout: Duration) -> bool {
        let mut c = lock(&self.count);
        let received = self.received.load(Ordering::Relaxed);
        if c.fresh || received != c.seen || self.delivering.load(Ordering::Relaxed) {
            c.fresh = false;
            c.seen = received;
            c.patience.reset();
            // A silent peer heard again is the link task's to report (the
            // read woke it); it starts the count over then.
            return true;
        }
        self.pool.trim();
        if c.patience.slice_passed(lateness) {
            c.ended = Some(CloseReason::Timeout(c.patience.total()));
            drop(c);
            self.wake.notify_one();
            return false;
        }
        if !c.silent && c.patience.total() >= timeout / 2 {
            c.silent = true;
            self.silence.silent.store(true, Ordering::Relaxed);
            drop(c);
            self.wake.notify_one();
        }
        true
    }

    /// Resolves when the peer has been silent for the timeout while the
    /// reader was ready for it; on the way, calls `silence(true)` once it
    /// has been silent for half the timeout, and `silence(false)` as soon
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
