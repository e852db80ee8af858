//! A link's read side (its socket's read half, the read buffer, the
//! decoder and the read path's state machine), shared by the link's task
//! and the link's reading handles.
//!
//! A handle ([`Connection`](crate::Connection)) that finds nothing queued
//! reads the socket itself, under the read side's lock (taken with
//! `try_lock`: a handle never waits for the link's task), and hands out
//! the messages it decodes at once: no hop from the link's task to the
//! reader's on the way in. From then on the socket's readiness wakes the
//! handles, not the link's task, which waits to be asked back: by a handle
//! that decoded a frame only the link's task can act on (an envelope for
//! messaging, a verdict, the end), by a handle going away, or by the node's
//! ticker when a handle was woken for the socket (or left frames unread)
//! and has not read for a tick (see [`Duty::look`]). So a reader that stops
//! polling leaves its socket unread for a tick or two at most, and
//! heartbeats, stall and silence detection hold.
//!
//! Order and bounds: the link's task hands what it decodes to the receive
//! queue only under the lock, and a handle reads the socket only when the
//! queue and what the link's task decoded but has not queued yet are both
//! empty, so messages come out in the order they came in. A handle decodes
//! at most a delivery batch at a time (what the link's task holds before
//! it queues), and reads nothing while it holds messages: a reader that is
//! slow leaves the bytes in the socket, and TCP pushes back on the sender.
//!
//! Both decode through [`Intake::pass`]'s one loop, and both act on the
//! read state machine's effects the same way: heartbeat stamps, pings and
//! pongs at once ([`local`]), the rest through the link's task.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures::task::AtomicWaker;
use futures::Stream;
use tokio_util::codec::FramedRead;

use crate::link::connection::{Link, Waiting};
use crate::link::counters::frame_bytes;
use crate::link::outbox::{OutTx, Turn};
use crate::link::queue;
use crate::link::read::{Effect, ReadState};
use crate::link::socket::Shared;
use crate::link::watchdog::Silence;
use crate::sync::lock;
use crate::wire::frame::{self, Frame};
use crate::wire::secure::Opener;

/// Most received messages decoded before they are handed on (to the receive
/// queue by the link's task, out of `poll_next` by a handle) ...
const DELIVER_BATCH: usize = 64;
/// ... and most bytes of them: so a batch adds little to what the receive
/// queue bounds (a frame larger than this is handed on at once).
const DELIVER_BYTES: usize = 64 * 1024;

/// Frames read off the socket.
pub(crate) type Frames = FramedRead<Counted, Opener>;

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Intake")
    }
}

/// A link's read side (see the module docs).
pub(crate) struct Intake {
    state: Mutex<Reading>,
    duty: Arc<Duty>,
    /// `duty` as a waker: what a handle leaves on the socket.
    handles_waker: Waker,
    /// Given back to the senders whenever something was read.
    turn: Arc<Turn>,
    /// Frames other than heartbeats received (the close's progress).
    moved: Arc<AtomicU64>,
}

struct Reading {
    frames: Frames,
    read: ReadState,
    /// Messages the link's task decoded and has not queued yet (the queue
    /// was full).
    pending: VecDeque<Bytes>,
    /// What a handle decoded that only the link's task acts on.
    parked: Option<Effect>,
    tally: Tally,
    /// The link's task has stopped reading: the handles must not read.
    done: bool,
}

/// Who reads the socket now, shared with the node's ticker.
#[derive(Default)]
pub(crate) struct Duty {
    /// The handles read the socket; the link's task waits to be asked back.
    handles: AtomicBool,
    /// A handle was woken for the socket, or left frames unread, and has
    /// not read since.
    owed: AtomicBool,
    /// Reads by handles, so the ticker can tell whether one came.
    reads: AtomicU64,
    /// The link's task, waiting to be asked back.
    task: AtomicWaker,
    /// The link's handles waiting for messages.
    waiting: OnceLock<Arc<Waiting>>,
}

impl Duty {
    /// The handles give the socket back to the link's task.
    pub(crate) fn take_back(&self) {
        if self.handles.swap(false, Ordering::AcqRel) {
            self.task.wake();
        }
    }

    /// The ticker's look, once a tick: a handle owes a read and none came
    /// since the last look (`seen`): the link's task reads again.
    pub(crate) fn look(&self, seen: &mut u64) {
        let reads = self.reads.load(Ordering::Relaxed);
        if reads == *seen && self.owed.load(Ordering::Acquire) {
            self.take_back();
        }
        *seen = reads;
    }
}

/// The socket's readiness, while the handles read it: wakes the handles
/// waiting for messages, or, if none waits, gives the socket back to the
/// link's task.
impl Wake for Duty {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.owed.store(true, Ordering::Release);
        if !self.waiting.get().is_some_and(|w| w.wake_all()) {
            self.take_back();
        }
    }
}

/// What the link's task does next, besides reading.
pub(crate) enum Step {
    /// Acts on an effect only it can act on (an envelope, a verdict, the
    /// end, a twin).
    Effect(Effect),
    /// Waits for room in the receive queue for a message of this many
    /// bytes.
    Full(usize),
}

/// What one decoding pass ended with.
enum Pass {
    /// The socket has nothing more now; the waker given is registered.
    Drained,
    /// A batch's worth decoded.
    Full,
    /// An effect for the link's task.
    Effect(Effect),
}

/// The link's ends that the read path acts on: its shared state (timing,
/// counters) and its send queue (answers to pings).
#[derive(Clone, Copy)]
pub(crate) struct Ends<'a> {
    pub link: &'a Link,
    pub out: &'a OutTx,
}

impl Intake {
    /// The read side of a link whose frames come from `frames`, its read
    /// path at `read`; `waiting` are the link's handles waiting for
    /// messages.
    pub(crate) fn new(
        frames: Frames,
        read: ReadState,
        duty: Arc<Duty>,
        waiting: Arc<Waiting>,
        turn: Arc<Turn>,
        moved: Arc<AtomicU64>,
    ) -> Arc<Intake> {
        let _ = duty.waiting.set(waiting);
        Arc::new(Intake {
            state: Mutex::new(Reading {
                frames,
                read,
                pending: VecDeque::new(),
                parked: None,
                tally: Tally::default(),
                done: false,
            }),
            handles_waker: Waker::from(duty.clone()),
            duty,
            turn,
            moved,
        })
    }

    /// Who reads the socket, for the ticker and for the handles.
    pub(crate) fn duty(&self) -> &Arc<Duty> {
        &self.duty
    }

    /// True until the decider's verdict has come (on the follower's side).
    pub(crate) fn awaiting_verdict(&self) -> bool {
        lock(&self.state).read.awaiting_verdict()
    }

    /// A handle with nothing queued reads: moves what the receive queue
    /// `rx` holds, or what the link's task decoded and has not queued, or
    /// what it decodes from the socket now, into `taken` (empty); how many.
    /// 0 if the link's task holds the read side, or is the one to read
    /// now; the socket's readiness then wakes the waiting handles if it
    /// is theirs (`all` is their waker).
    pub(crate) fn read_for_handle(
        &self,
        ends: Ends<'_>,
        rx: &mut queue::Receiver<VecDeque<Bytes>>,
        all: &mut Context<'_>,
        taken: &mut VecDeque<Bytes>,
    ) -> usize {
        let Ok(mut guard) = self.state.try_lock() else {
            // Held by the link's task (or another handle reading). If the
            // socket's readiness woke this handle, that wake is spent: the
            // link's task reads instead, not the ticker a tick later.
            if self.duty.owed.load(Ordering::Acquire) {
                self.duty.take_back();
            }
            return 0;
        };
        let rd = &mut *guard;
        if rd.done || rd.parked.is_some() || !rd.read.takes_data() {
            return 0;
        }
        // What the link's task queued comes first (it queues only under
        // this lock, so nothing arrives there while it is held), then what
        // it decoded and could not queue.
        if let Poll::Ready(n) = rx.poll_recv_many(all, taken, TAKE_QUEUED) {
            return n;
        }
        if !rd.pending.is_empty() {
            taken.append(&mut rd.pending);
            return taken.len();
        }
        let duty = &self.duty;
        duty.handles.store(true, Ordering::Release);
        add_locked(&duty.reads, 1);
        // Cleared before reading: a wake from now on is for bytes this
        // read may not see.
        duty.owed.store(false, Ordering::Release);
        let mut cx = Context::from_waker(&self.handles_waker);
        let mut bytes = 0;
        match self.pass(rd, &mut cx, ends, taken, &mut bytes) {
            Pass::Drained => {}
            // More may be buffered, or waiting in the socket: owed, unless
            // the socket says it has nothing (then its readiness wakes the
            // handles, as after a pass that drained it).
            Pass::Full => {
                let socket = &rd.frames.get_ref().inner;
                if !rd.frames.read_buffer().is_empty() || socket.poll_read_ready(&mut cx).is_ready()
                {
                    duty.owed.store(true, Ordering::Release);
                }
            }
            Pass::Effect(e) => {
                rd.parked = Some(e);
                duty.take_back();
            }
        }
        rd.tally.flush(self, ends.link);
        taken.len()
    }

    /// The link's task's turn: acts on what a handle left it, queues what
    /// it decoded, and reads the socket unless the handles do.
    /// `Pending` once the socket has nothing more (or the handles read it).
    pub(crate) fn poll_task(
        &self,
        cx: &mut Context<'_>,
        ends: Ends<'_>,
        in_tx: &queue::Sender<VecDeque<Bytes>>,
    ) -> Poll<Step> {
        self.duty.task.register(cx.waker());
        // The handles read the socket (so nothing is parked or pending:
        // both hand it back first): nothing to do until they hand it back.
        if self.duty.handles.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        let mut guard = lock(&self.state);
        let rd = &mut *guard;
        if let Some(e) = rd.parked.take() {
            return Poll::Ready(Step::Effect(e));
        }
        loop {
            if let Some(weight) = deliver(rd, in_tx) {
                return Poll::Ready(Step::Full(weight));
            }
            if self.duty.handles.load(Ordering::Acquire) {
                return Poll::Pending;
            }
            // `deliver` left nothing pending: the pass starts a new batch
            // (in the same allocation).
            let mut pending = std::mem::take(&mut rd.pending);
            let pass = self.pass(rd, cx, ends, &mut pending, &mut 0);
            rd.pending = pending;
            rd.tally.flush(self, ends.link);
            match pass {
                Pass::Full => {}
                Pass::Drained => {
                    return match deliver(rd, in_tx) {
                        None => Poll::Pending,
                        Some(weight) => Poll::Ready(Step::Full(weight)),
                    };
                }
                Pass::Effect(e) => return Poll::Ready(Step::Effect(e)),
            }
        }
    }

    /// The link's task has stopped reading: the handles read no more, and
    /// what it decoded goes to the receive queue (waiting for room; the
    /// actor holds a handle, so the queue outlives the link).
    pub(crate) async fn finish(&self, in_tx: &queue::Sender<VecDeque<Bytes>>, watch: &AtomicBool) {
        let mut pending = {
            let mut rd = lock(&self.state);
            rd.done = true;
            std::mem::take(&mut rd.pending)
        };
        if pending.is_empty() {
            return;
        }
        watch.store(true, Ordering::Relaxed);
        let _ = in_tx.send_many(&mut pending).await;
        watch.store(false, Ordering::Relaxed);
    }

    /// Decodes into `out` (its messages weighing `bytes`) until the socket
    /// has nothing more, a batch is full, or an effect needs the link's
    /// task; heartbeats, pings and pongs are acted on here.
    fn pass(
        &self,
        rd: &mut Reading,
        cx: &mut Context<'_>,
        ends: Ends<'_>,
        out: &mut VecDeque<Bytes>,
        bytes: &mut usize,
    ) -> Pass {
        let full = |out: &VecDeque<Bytes>, bytes: usize| {
            out.len() >= DELIVER_BATCH || bytes >= DELIVER_BYTES
        };
        loop {
            if full(out, *bytes) {
                return Pass::Full;
            }
            // A run of small user messages in the clear is cut off the read
            // buffer directly; the first frame of each read, and any other,
            // come through the decoder below.
            if rd.read.takes_data()
                && cut_messages(&mut rd.frames, &mut rd.tally, |p| {
                    *bytes += p.len();
                    out.push_back(p);
                    !full(out, *bytes)
                })
            {
                continue;
            }
            let next = match std::pin::Pin::new(&mut rd.frames).poll_next(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => return Pass::Drained,
            };
            // A heartbeat says the peer is there, not that the link is
            // getting anywhere: it is not counted as moving.
            if let Some(Ok(f)) = &next {
                rd.tally.count(f);
            }
            match rd.read.handle(next) {
                Effect::Data(payload) => {
                    *bytes += payload.len();
                    out.push_back(payload);
                }
                e => {
                    if let Some(e) = local(e, ends) {
                        // Nothing is read after the end, by anyone.
                        let end =
                            matches!(e, Effect::End(_) | Effect::Verdict { end: Some(_), .. });
                        rd.done |= end;
                        return Pass::Effect(e);
                    }
                }
            }
        }
    }
}

/// Messages a handle takes from the receive queue at once (it then holds
/// them as if the queue were this much longer).
pub(crate) const TAKE_QUEUED: usize = 32;

/// Hands what the link's task decoded to the receive queue as far as it
/// fits; if some is left (the queue is full), the size of the next one.
fn deliver(rd: &mut Reading, in_tx: &queue::Sender<VecDeque<Bytes>>) -> Option<usize> {
    if rd.pending.is_empty() {
        return None;
    }
    if in_tx.try_send_many(&mut rd.pending).is_err() {
        // The queue closed: nobody will read them.
        rd.pending.clear();
    }
    rd.pending.front().map(Bytes::len)
}

/// Acts on an effect that needs only the link itself (its timing, its
/// send queue); gives back those that need the link's task.
pub(crate) fn local(effect: Effect, ends: Ends<'_>) -> Option<Effect> {
    match effect {
        Effect::None => {}
        Effect::Beat(beat) => {
            lock(&ends.link.timing).beat(beat, std::time::Instant::now());
        }
        Effect::Ping(n) => {
            let pong = Frame {
                kind: frame::PONG,
                payload: Bytes::copy_from_slice(&n.to_be_bytes()),
            };
            // Dropped when the answers waiting beside a full queue are
            // at their bound: the ping goes unanswered, as if lost.
            ends.out.send_answer(pong);
        }
        Effect::Pong(n) => lock(&ends.link.timing).pong(n, std::time::Instant::now()),
        other => return Some(other),
    }
    None
}

/// Frames read and not yet added to the link's shared counters: they are
/// added once per batch, not per frame, since each addition is an atomic
/// operation on a line other threads read (about a tenth of the read
/// path's time at 64 B messages, measured).
#[derive(Default)]
struct Tally {
    /// Frames, and their bytes on the wire.
    frames: u64,
    bytes: u64,
    /// Frames other than heartbeats.
    moved: u64,
}

impl Tally {
    fn count(&mut self, f: &Frame) {
        self.add(f.payload.len(), f.kind != frame::HEARTBEAT);
    }

    /// A frame whose payload is `len` bytes; `moved` unless a heartbeat.
    fn add(&mut self, len: usize, moved: bool) {
        self.frames += 1;
        self.bytes += frame_bytes(len);
        self.moved += u64::from(moved);
    }

    /// Adds what was counted to the link's counters, and gives the
    /// senders their turn to write at once (the peer was heard from):
    /// before anything read is handed on, and before waiting for the
    /// socket.
    fn flush(&mut self, intake: &Intake, link: &Link) {
        if self.frames == 0 {
            return;
        }
        intake.turn.heard();
        let c = &link.counters;
        add_locked(&c.frames_in, self.frames);
        add_locked(&c.bytes_in, self.bytes);
        // The writer counts its batches here too.
        if self.moved > 0 {
            intake.moved.fetch_add(self.moved, Ordering::Relaxed);
        }
        *self = Tally::default();
    }
}

/// Adds `n` to a counter that only the read side's lock holder writes
/// (others only read it): a load and a store, not a locked addition.
fn add_locked(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// Moves whole small user messages from the front of the read buffer (of
/// a link in the clear) to `push` while it says there is room and no other
/// kind of frame comes; true if it moved any.
fn cut_messages(
    frames: &mut Frames,
    tally: &mut Tally,
    mut push: impl FnMut(Bytes) -> bool,
) -> bool {
    let Some(under) = frames.decoder().plain().and_then(|d| d.small_under()) else {
        return false;
    };
    let buf = frames.read_buffer_mut();
    let mut cut = 0;
    while let Some(payload) = frame::cut_small(buf, frame::DATA, under) {
        cut += frame_bytes(payload.len());
        tally.add(payload.len(), true);
        if !push(payload) {
            break;
        }
    }
    if let Some(d) = frames.decoder_mut().plain_mut() {
        d.cut(cut as usize);
    }
    cut > 0
}

/// A link's socket as its read side reads it: counting the bytes it
/// reads, and telling the watchdog when a silent peer is heard again.
pub(crate) struct Counted {
    pub inner: Shared,
    pub bytes: Arc<AtomicU64>,
    pub silence: Arc<Silence>,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.bytes.fetch_add(read as u64, Ordering::Relaxed);
            if self.silence.silent.load(Ordering::Relaxed) {
                self.silence.heard.notify_one();
            }
        }
        polled
    }
}
