//! A link's send queue, holding frames already encoded.
//!
//! A frame is encoded by the task that sends it, under the queue's lock, into
//! a buffer, the next one once [`WRITE_QUEUED`] bytes are queued in it; the
//! link's task takes everything queued at once, each buffer whole, writes
//! it, and gives back the buffers of that size for the next frames (see
//! [`Outbox::recycle`]), so a stream of frames cycles through a few buffers
//! instead of taking fresh memory. A batch of a few frames goes in a buffer
//! of its own, grown as it is encoded and freed once written: an idle link
//! holds none. So the
//! link's task does no work per frame, and the sender's payload is released
//! where it was made (a payload dropped on another thread costs a cache miss
//! on its reference count, per frame). A payload of at least [`ZERO_COPY`]
//! bytes, or a state of at least [`SHARED_STATE`] bytes that many links are
//! told alike, is not copied: the buffer is cut after its header and the
//! payload queued as it is, to be written by a vectored write.
//!
//! Order is the order of the pushes, across all senders.
//!
//! # Writing at once
//!
//! On a link in the clear, a small frame sent while the queue is empty and
//! the link's task is idle, waiting for frames, is written to the socket
//! there and then, by the sending task, under the queue's lock (so no other
//! write can come between), and the link's task is left asleep: a round
//! trip wakes no link task on the way out. If the kernel takes only part of
//! it, the rest is queued; if it takes none, the frame is queued as any
//! other. While the link's task writes (or has frames queued) nobody else
//! does, so the order holds.
//!
//! One frame is written at once per [`Turn`]: the next one, sent before
//! anything came from the peer, is queued for the link's task (and wakes
//! it), and so are those sent while it writes. So a burst goes out in
//! batches, one system call for many frames, while a request and its
//! answer, or a message now and then (the peer's heartbeats give the turn
//! back), go straight to the socket.
//!
//! # Writing what is queued
//!
//! A burst sent frame by frame with `send` is written by its senders too:
//! the sender whose frame brings the small frames queued to
//! [`WRITE_QUEUED`] bytes writes them (that and the frame at most), under
//! the queue's lock, while the link's task holds no frames it took (it is
//! idle, or woken and has not taken yet; once it has taken frames, nobody
//! else writes until it comes back for more, so the order holds). That is
//! the careful writer's batch, written where it fills, on the sender's
//! thread: the link's task, running beside a streaming sender on the other
//! thread, would take a few dozen frames per system call. What is left of
//! a burst under the mark goes out through the link's task, woken by the
//! burst's first frame. Frames that reach the mark while no sender may
//! write them (the link's task holds what it took, or the socket is full)
//! are cut off as they are and left to the link's task, which takes them
//! with the rest; a sender tries again only once all of it is written. A
//! sender that writes spends a unit of its task's budget each time, as a
//! write to a tokio socket does, so that a sender whose queue never fills
//! still lets its thread's other tasks run. Frames
//! queued without waiting (`try_send`, a `Sink`'s `start_send`, the
//! node's own) and runs of a [`Batch`](crate::link::batch::Batch) leave
//! the writing of what is queued to the link's task; so do sealed links,
//! which do not share their socket: their task seals and writes
//! everything.
//!
//! Whatever senders write counts as the link's progress, as the link's
//! task's writes do (see [`crate::link::stall`]).
//!
//! Heartbeats come from the node's ticker (see [`crate::link::watchdog`])
//! through the same queue, only when nothing is queued
//! ([`put_if_empty`](crate::link::queue::Sender::put_if_empty)): so a frame
//! a sender wrote in part, whose rest is queued, goes out whole first. A
//! heartbeat is written at once whenever the link's task is idle, without
//! taking the turn, and leaves the task asleep.

use std::collections::VecDeque;
use std::io::{IoSlice, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::link::aside::{Aside, StateKey};
use crate::link::counters::frame_bytes;
use crate::link::queue::{self, Runs, Store, Taken, Weighed};
use crate::wire::frame::{Frame, HEARTBEAT, LEN_BYTES};

/// Payloads at least this large are written from where they are.
pub(crate) const ZERO_COPY: usize = 16 * 1024;

/// A state the node tells many links alike (its list of links, member
/// records, topics) is queued as it is from this many payload bytes on,
/// not copied into each link's encoding buffer: the links share one copy.
/// While a mesh forms, every change of this node's links tells all of
/// them a list of a few KiB, and copies of it would make every link's
/// buffer that large at once, to be freed a moment later between the
/// allocations that stay.
const SHARED_STATE: usize = 256;

/// The sending end of a link's send queue.
pub(crate) type OutTx = queue::Sender<Outbox>;
/// The link task's end of its send queue.
pub(crate) type OutRx = queue::Receiver<Outbox>;

/// Largest payload written at once by its sender.
const WRITE_AT_ONCE: usize = 4096;

/// Bytes of small frames queued that a sender writes itself, with the
/// one it queues, while the link's task is not writing: the careful
/// writer's batch.
const WRITE_QUEUED: usize = crate::link::batch::BATCH_BYTES;

/// An encoding buffer's room: a batch of [`WRITE_QUEUED`] bytes and the
/// small frame that brings it there.
const TAIL_ROOM: usize = WRITE_QUEUED + ZERO_COPY + LEN_BYTES + 1;

/// Encoding buffers kept once the link's task has written them, for the
/// next frames: a stream of small frames cycles through the same few
/// buffers, which stay in the processor's caches, instead of taking fresh
/// memory (which the kernel maps page by page) for every batch. About what
/// the default send queue's 1,024 frames of 1 KiB fill.
///
/// Each is [`TAIL_ROOM`] to twice that (80 to 160 KiB), so a link keeps
/// at most 16 × 160 KiB; what they hold room for counts against the
/// node's cap on queued bytes
/// ([`Settings::max_queued_bytes`](crate::Settings::max_queued_bytes)) as
/// queued bytes do. A buffer is kept only while the node has room for it
/// under the cap; a sender that finds only the node's cap in its way lets
/// its link's spares go before it waits for room; and the node's ticker
/// lets them go at the first tick that finds nothing handed to the queue
/// since the tick before, or that finds the node with under a quarter of
/// its cap left (see [`crate::link::watchdog`]), so that busy links'
/// spares do not keep the cap from other links' frames.
const SPARE: usize = 16;

/// Whether a sender may write a frame at once (see the module docs): taken
/// by a frame written at once, given back when the link's read loop hears
/// from the peer.
#[derive(Debug)]
pub(crate) struct Turn(AtomicBool);

impl Default for Turn {
    fn default() -> Self {
        Turn(AtomicBool::new(true))
    }
}

impl Turn {
    /// Something came from the peer.
    pub(crate) fn heard(&self) {
        // Read first: the line is written only when the turn was taken.
        if !self.0.load(Ordering::Relaxed) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    /// Takes the turn, if it is there (under the queue's lock: only the
    /// read loop sets it concurrently).
    fn take(&self) -> bool {
        let ours = self.0.load(Ordering::Relaxed);
        if ours {
            self.0.store(false, Ordering::Relaxed);
        }
        ours
    }
}

/// User messages a [`Batch`](crate::link::batch::Batch) encoded, in
/// order, handed over as one.
pub(crate) struct Run {
    pub encoded: Bytes,
    /// Frames in it, and their payload bytes (what the queue bounds).
    pub frames: usize,
    pub payload: usize,
}

impl Weighed for Run {
    fn weight(&self) -> usize {
        self.payload
    }
    fn items(&self) -> usize {
        self.frames
    }
}

/// Runs shorter than this are copied after the frames queued; longer ones
/// are queued as they are.
const COPY_RUN: usize = 4096;

/// Encoded frames waiting to be written.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Cut pieces of encoded frames, and large payloads, in order.
    segs: VecDeque<Bytes>,
    /// Frames encoded after the last cut.
    tail: BytesMut,
    /// Encoding buffers the link's task has written (see [`SPARE`]), and
    /// the room they hold in all.
    spare: Vec<BytesMut>,
    spare_bytes: usize,
    frames: usize,
    bytes: usize,
    /// The frame put next is a state (see [`SHARED_STATE`]).
    state_next: bool,
    /// The link's socket, for its senders to write to (links in the
    /// clear).
    socket: Option<SharedSocket>,
    /// Frames the node sends by itself, waiting beside the full queue.
    aside: Aside,
    /// Frames handed over to be sent (queued, written at once, or taken
    /// from beside the queue), and their bytes.
    pub(crate) sent: u64,
    pub(crate) sent_bytes: u64,
    /// Answers dropped beside the full queue.
    pub(crate) dropped: u64,
}

/// The link's socket as its senders share it.
struct SharedSocket {
    socket: Box<dyn Write + Send>,
    /// Whether a sender may write a frame at once.
    turn: Arc<Turn>,
    /// Bytes the link has handed to the kernel: its progress, which the
    /// node's watchdog looks at.
    written: Arc<AtomicU64>,
}

impl SharedSocket {
    /// Writes what the kernel takes of `parts` now, and counts it: 0 if the
    /// socket is full, or failed (the link's task finds out and reports it).
    fn write(&mut self, parts: &[IoSlice<'_>]) -> usize {
        let n = self.socket.write_vectored(parts).unwrap_or(0);
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        n
    }
}

impl Outbox {
    /// Lets senders write to `socket` (the link's, shared): a small frame
    /// at once while the link's task is idle, in `turn`, and what is
    /// queued once it is worth a system call while the link's task is not
    /// writing; what they write is counted in `written`.
    pub(crate) fn share_socket(
        &mut self,
        socket: impl Write + Send + 'static,
        turn: Arc<Turn>,
        written: Arc<AtomicU64>,
    ) {
        self.socket = Some(SharedSocket {
            socket: Box::new(socket),
            turn,
            written,
        });
    }

    /// Keeps what the link's task has written, of what it took, as spare
    /// encoding buffers (see [`SPARE`]): those no one else refers to any
    /// more, of an encoding buffer's size (a segment written in parts was
    /// advanced past its start, which is reclaimed), while their room
    /// fits in `room`, the bytes the node's cap has left.
    pub(crate) fn recycle(&mut self, written: &mut Vec<Bytes>, room: usize) {
        let mut room = room;
        for seg in written.drain(..) {
            if self.spare.len() == SPARE {
                continue;
            }
            if let Ok(mut buf) = seg.try_into_mut() {
                buf.clear();
                if buf.try_reclaim(TAIL_ROOM) && buf.capacity() <= room.min(2 * TAIL_ROOM) {
                    let size = buf.capacity();
                    room -= size;
                    self.spare_bytes += size;
                    self.spare.push(buf);
                }
            }
        }
    }

    /// A spare encoding buffer, if one is kept.
    fn take_spare(&mut self) -> Option<BytesMut> {
        let buf = self.spare.pop()?;
        self.spare_bytes -= buf.capacity();
        Some(buf)
    }

    /// Counts a frame of `len` payload bytes as sent.
    fn count(&mut self, len: usize) {
        self.sent += 1;
        self.sent_bytes += frame_bytes(len);
    }

    /// Encodes `frame` after those queued; a payload of at least `shared`
    /// bytes is queued as it is.
    #[inline]
    fn encode(&mut self, frame: Frame, shared: usize) {
        let len = frame.payload.len();
        if len >= shared {
            self.tail.reserve(LEN_BYTES + 1);
            self.tail.put_u32(len as u32 + 1);
            self.tail.put_u8(frame.kind);
            self.segs.push_back(self.tail.split().freeze());
            self.segs.push_back(frame.payload);
        } else {
            let need = LEN_BYTES + 1 + len;
            if self.tail.len() >= WRITE_QUEUED {
                // Nobody wrote it at the mark (the link's task holds what
                // it took, or the socket is full): it goes to the link's
                // task as it is, and the next frames go to a buffer of
                // their own, one the link's task has written before if
                // there is one.
                let next = self
                    .take_spare()
                    .unwrap_or_else(|| BytesMut::with_capacity(TAIL_ROOM));
                self.segs
                    .push_back(std::mem::replace(&mut self.tail, next).freeze());
            }
            self.tail.reserve(need);
            self.tail.put_u32(len as u32 + 1);
            self.tail.put_u8(frame.kind);
            self.tail.extend_from_slice(&frame.payload);
        }
    }

    /// Writes `frame` to the socket: `None` if all of it went, else how
    /// much did, and its header (nothing, if the kernel took nothing).
    fn write_now(socket: &mut SharedSocket, frame: &Frame) -> Option<(usize, [u8; 5])> {
        let len = frame.payload.len();
        let mut header = [0u8; LEN_BYTES + 1];
        header[..LEN_BYTES].copy_from_slice(&(len as u32 + 1).to_be_bytes());
        header[LEN_BYTES] = frame.kind;
        let n = socket.write(&[IoSlice::new(&header), IoSlice::new(&frame.payload)]);
        (n < header.len() + len).then_some((n, header))
    }
}

impl Store for Outbox {
    type Item = Frame;

    #[inline]
    fn put(&mut self, frame: Frame, idle: bool) -> bool {
        // Sizes were checked by the senders (at most `max_frame_len`, which
        // is below `u32::MAX`).
        let len = frame.payload.len();
        self.count(len);
        let shared = match std::mem::take(&mut self.state_next) {
            true => SHARED_STATE,
            false => ZERO_COPY,
        };
        let at_once = match &mut self.socket {
            Some(socket)
                if idle
                    && len <= WRITE_AT_ONCE
                    && (frame.kind == HEARTBEAT || socket.turn.take()) =>
            {
                Some(socket)
            }
            _ => None,
        };
        if let Some(socket) = at_once {
            match Self::write_now(socket, &frame) {
                None => return false,
                Some((0, _)) => {}
                Some((written, header)) => {
                    // The kernel took part of it: the rest goes first.
                    let rest = written.saturating_sub(header.len());
                    self.tail
                        .extend_from_slice(&header[written.min(header.len())..]);
                    self.tail.extend_from_slice(&frame.payload[rest..]);
                    self.frames += 1;
                    self.bytes += len;
                    return true;
                }
            }
        }
        self.frames += 1;
        self.bytes += len;
        self.encode(frame, shared);
        true
    }

    /// Writes what is queued once it is [`WRITE_QUEUED`] bytes or more of
    /// small frames, all in the buffer they were encoded into, with nothing
    /// waiting beside the queue (that goes after it, through the link's
    /// task). What was cut off before (large payloads, frames nobody wrote
    /// at the mark) is left to the link's task, which takes all of it at
    /// once: so a sender never writes more than the mark and a frame under
    /// the queue's lock, and once the socket is full it stops trying until
    /// the link's task has written what was queued. If the kernel takes
    /// less than all, the rest stays queued, counted whole.
    fn write_queued(&mut self) -> bool {
        let Some(socket) = &mut self.socket else {
            return false;
        };
        if self.tail.len() < WRITE_QUEUED || !self.segs.is_empty() || !self.aside.is_empty() {
            return false;
        }
        let written = socket.write(&[IoSlice::new(&self.tail)]);
        if written < self.tail.len() {
            self.tail.advance(written);
            return false;
        }
        // Kept for the next frames: nothing refers to it.
        self.tail.clear();
        self.frames = 0;
        self.bytes = 0;
        true
    }

    /// The socket is shared no more, and nothing more will be encoded: the
    /// link is closing or gone.
    fn closed(&mut self) {
        self.socket = None;
        self.release();
    }

    /// Frees the spare encoding buffers, and the encoding buffer's and the
    /// segments' allocations when they hold nothing: a quiet link keeps no
    /// room for frames it does not send.
    fn trim(&mut self) {
        if self.tail.is_empty() {
            self.tail = BytesMut::new();
        }
        self.release();
        if self.segs.is_empty() {
            self.segs = VecDeque::new();
        }
    }

    /// The room the spare encoding buffers hold (see [`SPARE`]).
    fn kept(&self) -> usize {
        self.spare_bytes
    }

    /// Frees the spare encoding buffers.
    fn release(&mut self) {
        self.spare = Vec::new();
        self.spare_bytes = 0;
    }
}

/// A run is written at once by its sender whenever the link's task is
/// idle: it is a batch already, so it needs no turn.
impl Runs for Outbox {
    type Run = Run;

    fn put_run(&mut self, run: Run, idle: bool) -> bool {
        self.sent += run.frames as u64;
        self.sent_bytes += run.encoded.len() as u64;
        let mut rest = run.encoded;
        if let (true, Some(socket)) = (idle, &mut self.socket) {
            let written = socket.write(&[IoSlice::new(&rest)]);
            if written == rest.len() {
                return false;
            }
            rest.advance(written);
        }
        self.frames += run.frames;
        self.bytes += run.payload;
        if rest.len() < COPY_RUN {
            self.tail.extend_from_slice(&rest);
        } else {
            if !self.tail.is_empty() {
                self.segs.push_back(self.tail.split().freeze());
            }
            self.segs.push_back(rest);
        }
        true
    }
}

impl OutTx {
    /// Sends a frame stating something anew (a node's topics, its links)
    /// without waiting: if the queue is full, it waits beside it (see
    /// [`crate::link::aside`]), replacing any older state under `key` not yet
    /// written. False if the link has closed.
    pub(crate) fn send_state(&self, key: StateKey, frame: Frame) -> bool {
        self.send_with(frame, |o, frame, fits| {
            // An older one waiting apart is replaced there, so that no
            // older state goes out after this one.
            if fits && !o.aside.holds(&key) {
                o.state_next = true;
                return Some(frame);
            }
            o.aside.put_state(key, frame);
            None
        })
        .is_ok()
    }

    /// Sends an answer the node gives by itself without waiting: if the
    /// queue is full, it waits beside it, up to
    /// [`MAX_ANSWERS`](crate::link::aside::MAX_ANSWERS); false if it was
    /// dropped for that, or the link has closed.
    pub(crate) fn send_answer(&self, frame: Frame) -> bool {
        let mut kept = true;
        let queued = self.send_with(frame, |o, frame, fits| {
            if fits {
                return Some(frame);
            }
            kept = o.aside.put_answer(frame);
            o.dropped += u64::from(!kept);
            None
        });
        queued.is_ok() && kept
    }
}

impl OutRx {
    /// Moves everything queued, encoded, to the back of `out`. Ready with
    /// the number of frames, or 0 once the queue has ended.
    pub(crate) fn poll_take_all(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut VecDeque<Bytes>,
    ) -> Poll<usize> {
        self.poll_take(cx, |o| {
            let taken = Taken {
                items: std::mem::take(&mut o.frames),
                bytes: std::mem::take(&mut o.bytes),
            };
            // What waited beside the queue goes with it, after it (and
            // outside its bounds, which it never counted in).
            let aside: Vec<Frame> = o.aside.take().collect();
            // States and answers: shared as states are.
            for frame in aside {
                o.count(frame.payload.len());
                o.encode(frame, SHARED_STATE);
            }
            out.append(&mut o.segs);
            if !o.tail.is_empty() {
                // Whole, so that it can come back as a spare once written.
                let next = o.take_spare().unwrap_or_default();
                out.push_back(std::mem::replace(&mut o.tail, next).freeze());
            }
            taken
        })
    }

    /// Waits for frames and moves all of them, encoded, to `out`; 0 once the
    /// queue has ended.
    pub(crate) async fn take_all(&mut self, out: &mut VecDeque<Bytes>) -> usize {
        std::future::poll_fn(|cx| self.poll_take_all(cx, out)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{FrameCodec, DATA, HEARTBEAT};
    use futures::FutureExt;
    use tokio_util::codec::Encoder;

    /// Small, large and empty frames from two senders come out as the codec
    /// would have encoded them, in the order they were pushed, with large
    /// payloads not copied.
    #[tokio::test]
    async fn encodes_in_order_without_copying_large_payloads() {
        let (tx, mut rx) = queue::channel::<Outbox>(100, usize::MAX);
        let tx2 = tx.clone();
        let big: Bytes = vec![7u8; ZERO_COPY].into();
        let frames = [
            Frame::data(Bytes::from_static(b"one")),
            Frame::control(HEARTBEAT),
            Frame::data(big.clone()),
            Frame::data(Bytes::new()),
            Frame {
                kind: DATA,
                payload: vec![1u8; ZERO_COPY - 1].into(),
            },
        ];
        for (i, f) in frames.iter().enumerate() {
            let to = if i % 2 == 0 { &tx } else { &tx2 };
            to.try_send(f.clone()).unwrap();
        }
        let mut out = VecDeque::new();
        assert_eq!(rx.take_all(&mut out).await, frames.len());
        assert!(out.iter().any(|s| s.as_ptr() == big.as_ptr()), "not copied");
        let got: Vec<u8> = out.iter().flat_map(|s| s.iter().copied()).collect();
        let mut want = BytesMut::new();
        for f in frames {
            FrameCodec { max: 1 << 20 }.encode(f, &mut want).unwrap();
        }
        assert_eq!(got, want.to_vec());
        drop((tx, tx2));
        assert_eq!(rx.take_all(&mut out).await, 0, "ended");
    }

    /// Beside a full queue, a state waits as its latest version only, and
    /// answers in order; all of it goes out with the next batch, after the
    /// frames queued, and the queue's bounds are the users' again.
    #[tokio::test]
    async fn states_and_answers_wait_beside_a_full_queue() {
        let (tx, mut rx) = queue::channel::<Outbox>(1, usize::MAX);
        let key = (1, crate::id::NodeId::parse("0a").unwrap());
        let data = |b: &'static [u8]| Frame::data(Bytes::from_static(b));
        assert!(tx.send_state(key.clone(), data(b"state 0")), "room: queued");
        for i in 1..=100u8 {
            let state = Frame::data(Bytes::from(format!("state {i}")));
            assert!(tx.send_state(key.clone(), state));
        }
        assert!(tx.send_answer(data(b"answer 1")) && tx.send_answer(data(b"answer 2")));
        let mut out = VecDeque::new();
        assert_eq!(rx.take_all(&mut out).await, 1, "the queue's own count");
        let mut got = BytesMut::from_iter(out.iter().flat_map(|s| s.iter().copied()));
        let mut codec = FrameCodec { max: 1 << 20 };
        let mut payloads = Vec::new();
        while let Some(f) = tokio_util::codec::Decoder::decode(&mut codec, &mut got).unwrap() {
            payloads.push(f.payload);
        }
        assert_eq!(
            payloads,
            ["state 0", "answer 1", "answer 2", "state 100"].map(|s| Bytes::from(s.as_bytes()))
        );
        // Nothing waits apart any more: the next one is queued.
        assert!(tx.send_state(key, data(b"state 101")));
        assert!(matches!(
            tx.try_send(data(b"x")),
            Err(queue::TrySendError::Full(_))
        ));
    }

    /// A socket that takes at most `budget` bytes in all, then is full.
    struct Trickle {
        wire: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.budget);
            if n == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            self.budget -= n;
            self.wire.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The link's task is idle; a sender writes a frame at once and the
    /// kernel takes part of it; the heartbeat falls due at that moment. The
    /// ticker may not send it then (the rest of the frame is queued): the
    /// rest goes first, and a heartbeat only once nothing is queued, so it
    /// never lands inside the frame; written at once, it wakes nobody.
    #[test]
    fn a_heartbeat_never_lands_inside_a_frame_written_in_part() {
        let wire = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, mut rx) = queue::channel::<Outbox>(100, usize::MAX);
        let socket = Trickle {
            wire: wire.clone(),
            budget: 3,
        };
        rx.with_store(|o| o.share_socket(socket, Arc::default(), Arc::default()));
        let woken = std::sync::Arc::new(Woken::default());
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = VecDeque::new();
        assert!(rx.poll_take_all(&mut cx, &mut out).is_pending(), "idle");
        let frame = Frame::data(Bytes::from(vec![9u8; 100]));
        tx.try_send(frame.clone()).unwrap();
        assert_eq!(wire.lock().unwrap().len(), 3, "written in part");
        let beat = || Frame::control(HEARTBEAT);
        assert!(
            !tx.put_if_empty(beat),
            "the rest of the frame must go first"
        );
        assert!(rx.poll_take_all(&mut cx, &mut out).is_ready());
        let mut got = BytesMut::from(&wire.lock().unwrap()[..]);
        out.iter().for_each(|s| got.extend_from_slice(s));
        let mut want = BytesMut::new();
        FrameCodec { max: 1 << 20 }
            .encode(frame, &mut want)
            .unwrap();
        assert_eq!(got, want);

        // Idle again, with room in the socket: the heartbeat is written at
        // once, and the link's task is not woken for it.
        assert!(rx.poll_take_all(&mut cx, &mut out).is_pending(), "idle");
        let woken_before = woken.0.load(std::sync::atomic::Ordering::Relaxed);
        rx.with_store(|o| {
            o.share_socket(
                Trickle {
                    wire: wire.clone(),
                    budget: 100,
                },
                Arc::new(Turn(AtomicBool::new(false))),
                Arc::default(),
            )
        });
        assert!(tx.put_if_empty(beat));
        assert_eq!(&wire.lock().unwrap()[3..], b"\0\0\0\x01\x04", "written");
        assert_eq!(
            woken.0.load(std::sync::atomic::Ordering::Relaxed),
            woken_before
        );
        assert!(
            rx.poll_take_all(&mut cx, &mut out).is_pending(),
            "nothing queued"
        );
    }

    /// A run of three frames and single frames: the run counts as its
    /// frames against the queue's bound; handed over while the link's task
    /// is idle it is written at once, the rest of it queued first when the
    /// kernel takes only part; with room in the socket, all of it goes and
    /// the task stays asleep.
    #[test]
    fn runs_count_as_their_frames_and_are_written_at_once_while_idle() {
        let wire = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, mut rx) = queue::channel::<Outbox>(4, usize::MAX);
        let run = |payloads: &[&'static [u8]]| {
            let mut encoded = BytesMut::new();
            for p in payloads {
                let f = Frame::data(Bytes::from_static(p));
                FrameCodec { max: 1 << 20 }.encode(f, &mut encoded).unwrap();
            }
            Run {
                encoded: encoded.freeze(),
                frames: payloads.len(),
                payload: payloads.iter().map(|p| p.len()).sum(),
            }
        };
        // No turn: single frames are queued.
        let socket = Trickle {
            wire: wire.clone(),
            budget: 7,
        };
        rx.with_store(|o| {
            o.share_socket(
                socket,
                Arc::new(Turn(AtomicBool::new(false))),
                Arc::default(),
            )
        });
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut out = VecDeque::new();
        assert!(rx.poll_take_all(&mut cx, &mut out).is_pending(), "idle");
        tx.try_send_run(run(&[b"one", b"two", b"three"])).unwrap();
        assert_eq!(wire.lock().unwrap().len(), 7, "written in part");
        tx.try_send(Frame::data(Bytes::from_static(b"four")))
            .unwrap();
        assert!(
            matches!(
                tx.try_send_run(run(&[b"x"])),
                Err(queue::TrySendError::Full(_))
            ),
            "three frames and one: the queue is full"
        );
        assert_eq!(rx.poll_take_all(&mut cx, &mut out), Poll::Ready(4));
        let mut got = BytesMut::from(&wire.lock().unwrap()[..]);
        out.iter().for_each(|s| got.extend_from_slice(s));
        let mut want = BytesMut::new();
        for p in [&b"one"[..], b"two", b"three", b"four"] {
            let f = Frame::data(Bytes::copy_from_slice(p));
            FrameCodec { max: 1 << 20 }.encode(f, &mut want).unwrap();
        }
        assert_eq!(got, want);
        assert_eq!(tx.inspect(|o, _, _| o.sent), 4);
        // A run larger than the queue's bound goes into an empty queue.
        tx.try_send_run(run(&[b"a", b"b", b"c", b"d", b"e"]))
            .unwrap();
        assert_eq!(rx.poll_take_all(&mut cx, &mut out), Poll::Ready(5));

        // Idle, with room in the socket: all of it goes, nothing queued.
        assert!(rx.poll_take_all(&mut cx, &mut out).is_pending(), "idle");
        let wire = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let socket = Trickle {
            wire: wire.clone(),
            budget: 1000,
        };
        rx.with_store(|o| o.share_socket(socket, Arc::default(), Arc::default()));
        let r = run(&[b"six", b"seven"]);
        let encoded = r.encoded.clone();
        tx.try_send_run(r).unwrap();
        assert_eq!(wire.lock().unwrap()[..], encoded[..]);
        assert!(
            rx.poll_take_all(&mut cx, &mut out).is_pending(),
            "nothing queued"
        );
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Woken {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A frame sent while the link's task waits goes straight to the
    /// socket, and leaves the task asleep; the next one, sent before the
    /// peer was heard from, is queued and wakes it, as is one sent while it
    /// has not looked yet; once the peer is heard from, a frame goes
    /// straight out again; once the queue is closed, nothing is written at
    /// once any more.
    #[test]
    fn written_at_once_while_idle_once_per_turn() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nonblocking(true).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let (tx, mut rx) = queue::channel::<Outbox>(100, usize::MAX);
        let turn = Arc::new(Turn::default());
        rx.with_store(|o| o.share_socket(client, turn.clone(), Arc::default()));
        let woken = Arc::new(Woken::default());
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let wakes = || woken.0.load(Ordering::Relaxed);
        let mut out = VecDeque::new();
        let idle = |rx: &mut OutRx, out: &mut VecDeque<Bytes>, cx: &mut Context<'_>| {
            assert!(rx.poll_take_all(cx, out).is_pending());
        };
        let send = |payload: &'static [u8]| tx.try_send(Frame::data(Bytes::from_static(payload)));
        let mut got = [0u8; 8];

        idle(&mut rx, &mut out, &mut cx);
        send(b"now").unwrap();
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\0\0\0\x04\x10now");
        assert_eq!(wakes(), 0, "the link's task sleeps on");

        // The turn is taken: queued, and the task is woken for it.
        send(b"later").unwrap();
        assert_eq!(wakes(), 1);
        // Not waiting (woken, it has not looked yet): queued too.
        send(b"also").unwrap();
        assert_eq!(rx.poll_take_all(&mut cx, &mut out), Poll::Ready(2));
        let queued: Vec<u8> = out.drain(..).flat_map(|s| s.to_vec()).collect();
        assert_eq!(queued, b"\0\0\0\x06\x10later\0\0\0\x05\x10also");

        // Idle, the peer heard from: straight out again.
        idle(&mut rx, &mut out, &mut cx);
        turn.heard();
        send(b"yes").unwrap();
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\0\0\0\x04\x10yes");
        assert_eq!(wakes(), 1);

        idle(&mut rx, &mut out, &mut cx);
        rx.close();
        assert!(tx.try_send(Frame::data(Bytes::from_static(b"x"))).is_err());
        rx.with_store(|o| assert!(o.socket.is_none(), "the socket is given up"));
    }

    /// Encodes `frames` as the codec would.
    fn encoded(frames: &[Frame]) -> BytesMut {
        let mut want = BytesMut::new();
        for f in frames {
            FrameCodec { max: 1 << 20 }
                .encode(f.clone(), &mut want)
                .unwrap();
        }
        want
    }

    /// Frames queued while the link's task holds frames it took (it is
    /// writing them) are left to it, however many, and so are frames
    /// queued without waiting for room; once it holds none,
    /// the sender whose frame brings what is queued to [`WRITE_QUEUED`]
    /// bytes writes all of it, counts it as the link's progress and leaves
    /// the queue empty; if the kernel takes only part, the rest stays
    /// queued and goes out through the link's task. What reaches the wire
    /// is every frame once, in order.
    #[test]
    fn a_sender_writes_what_is_queued_once_it_is_worth_a_system_call() {
        let wire = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, mut rx) = queue::channel::<Outbox>(10_000, usize::MAX);
        let written = Arc::new(AtomicU64::new(0));
        let no_turn = || Arc::new(Turn(AtomicBool::new(false)));
        let socket = |budget| Trickle {
            wire: wire.clone(),
            budget,
        };
        rx.with_store(|o| o.share_socket(socket(usize::MAX), no_turn(), written.clone()));
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut out = VecDeque::new();
        let frame = |i: usize| Frame::data(Bytes::from(vec![i as u8; 1000]));
        let per_frame = 1000 + LEN_BYTES + 1;
        let to_write = WRITE_QUEUED.div_ceil(per_frame);
        let mut sent = Vec::new();
        // With `send` (waiting for room), or without waiting.
        let mut put = |i: usize, wait: bool| {
            sent.push(frame(i));
            if wait {
                let queued = tx.send(frame(i)).now_or_never().expect("room");
                assert!(queued.is_ok());
            } else {
                tx.try_send(frame(i)).unwrap();
            }
        };
        let on_wire = |out: &mut VecDeque<Bytes>| {
            let mut w = wire.lock().unwrap();
            out.drain(..).for_each(|s| w.extend_from_slice(&s));
        };

        // The link's task took a frame and writes it: nobody else writes.
        put(0, true);
        assert_eq!(rx.poll_take_all(&mut cx, &mut out), Poll::Ready(1));
        for i in 1..=2 * to_write {
            put(i, true);
        }
        assert!(wire.lock().unwrap().is_empty(), "left to the link's task");
        on_wire(&mut out);
        assert_eq!(
            rx.poll_take_all(&mut cx, &mut out),
            Poll::Ready(2 * to_write)
        );
        on_wire(&mut out);

        // Idle; queued without waiting for room: left to the link's task.
        let taken = wire.lock().unwrap().len();
        assert!(rx.poll_take_all(&mut cx, &mut out).is_pending(), "idle");
        for i in 0..2 * to_write {
            put(i, false);
        }
        assert_eq!(wire.lock().unwrap().len(), taken, "left to the link's task");
        assert_eq!(
            rx.poll_take_all(&mut cx, &mut out),
            Poll::Ready(2 * to_write)
        );
        on_wire(&mut out);
        let before = wire.lock().unwrap().len();

        // Idle: the sender that brings the queue to the mark writes it all.
        assert!(rx.poll_take_all(&mut cx, &mut out).is_pending(), "idle");
        for i in 0..to_write - 1 {
            put(i, true);
        }
        assert_eq!(wire.lock().unwrap().len(), before, "not yet worth it");
        put(to_write, true);
        let after = wire.lock().unwrap().len();
        assert_eq!(
            after - before,
            to_write * per_frame,
            "written by the sender"
        );
        assert_eq!(
            written.load(Ordering::Relaxed),
            (to_write * per_frame) as u64
        );
        assert_eq!(rx.depth(), 0);
        assert!(rx.poll_take_all(&mut cx, &mut out).is_pending(), "empty");

        // Frames piled up without waiting past the mark are cut off for
        // the link's task, in pieces of the mark and a frame at most: a
        // sender writes none of them.
        for i in 0..3 * to_write {
            put(i, false);
        }
        put(0, true);
        assert_eq!(wire.lock().unwrap().len(), after, "left to the link's task");
        assert_eq!(rx.depth(), 3 * to_write + 1, "counted whole until taken");
        assert_eq!(
            rx.poll_take_all(&mut cx, &mut out),
            Poll::Ready(3 * to_write + 1)
        );
        assert!(out.len() > 1, "cut");
        assert!(out.iter().all(|s| s.len() < WRITE_QUEUED + per_frame));
        on_wire(&mut out);
        let after = wire.lock().unwrap().len();
        assert!(rx.poll_take_all(&mut cx, &mut out).is_pending(), "empty");

        // The kernel takes part: the rest is queued, in order.
        rx.with_store(|o| o.share_socket(socket(1000), no_turn(), written.clone()));
        for i in 0..to_write {
            put(i, true);
        }
        assert_eq!(wire.lock().unwrap().len(), after + 1000, "part of it");
        assert_eq!(rx.depth(), to_write, "counted whole until taken");
        assert_eq!(rx.poll_take_all(&mut cx, &mut out), Poll::Ready(to_write));
        on_wire(&mut out);
        assert_eq!(wire.lock().unwrap()[..], encoded(&sent)[..]);
    }

    /// Queues `n` frames of 1000 bytes without waiting.
    fn fill(tx: &OutTx, n: usize) {
        for _ in 0..n {
            tx.try_send(Frame::data(Bytes::from(vec![3u8; 1000])))
                .unwrap();
        }
    }

    /// A stream of frames queued while the link's task writes cycles
    /// through the encoding buffers it gives back: the frames that follow
    /// a cut go to one it has written, not to fresh memory; a buffer still
    /// referred to elsewhere is not kept, and a quiet queue lets them go.
    #[test]
    fn written_buffers_are_used_again() {
        let (tx, mut rx) = queue::channel::<Outbox>(10_000, usize::MAX);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut out = VecDeque::new();
        let per_frame = 1000 + LEN_BYTES + 1;
        let fill = |n: usize| fill(&tx, n);
        // Two cuts and what follows them: three buffers.
        fill(2 * WRITE_QUEUED.div_ceil(per_frame) + 1);
        assert!(rx.poll_take_all(&mut cx, &mut out).is_ready());
        assert_eq!(out.len(), 3);
        let firsts: Vec<*const u8> = out.iter().map(|s| s.as_ptr()).collect();
        // Written (the second in parts): all come back, but one still
        // referred to elsewhere.
        let held = out[0].clone();
        out[1].advance(1000);
        let mut written: Vec<Bytes> = out.drain(..).collect();
        rx.with_room(|o, room| o.recycle(&mut written, room));
        assert!(written.is_empty());
        rx.with_store(|o| assert_eq!(o.spare.len(), 2, "the first is held"));
        drop(held);
        // The next cut's frames go to a spare, and so do the frames after
        // the next take.
        fill(WRITE_QUEUED.div_ceil(per_frame) + 1);
        assert!(rx.poll_take_all(&mut cx, &mut out).is_ready());
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].as_ptr(), firsts[2], "used again");
        rx.with_store(|o| {
            assert_eq!(o.tail.as_ptr(), firsts[1], "used again, from its start");
            assert!(o.spare.is_empty());
            let mut written: Vec<Bytes> = out.drain(..).collect();
            o.recycle(&mut written, usize::MAX);
            assert_eq!(o.spare.len(), 2);
        });
        tx.trim();
        rx.with_store(|o| assert_eq!(o.spare.capacity(), 0, "let go"));
    }

    /// The spare encoding buffers count against the node's cap as queued
    /// bytes do: a link keeps them only while the node has room for them,
    /// and a sender that finds the node at its cap lets its link's spares
    /// go before it waits for room.
    #[test]
    fn spares_count_against_the_nodes_cap() {
        let node = Arc::new(crate::stats::Queued::default());
        node.set_max(64 << 20);
        let (tx, mut rx) = queue::within::<Outbox>(10_000, usize::MAX, Some(node.clone()));
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut out = VecDeque::new();
        let frame = || Frame::data(Bytes::from(vec![5u8; 1000]));
        let per_frame = 1000 + LEN_BYTES + 1;
        let fill = |n: usize| fill(&tx, n);
        let kept = |rx: &mut OutRx| {
            let mut kept = 0;
            rx.with_store(|o| kept = o.kept());
            kept
        };
        let charged = |bytes: usize| bytes - bytes % crate::stats::SLAB;
        // Taken and written: the buffers come back, and count.
        fill(3 * WRITE_QUEUED.div_ceil(per_frame) + 1);
        assert!(rx.poll_take_all(&mut cx, &mut out).is_ready());
        let mut written: Vec<Bytes> = out.drain(..).collect();
        rx.with_room(|o, room| o.recycle(&mut written, room));
        let spares = kept(&mut rx);
        assert!(spares >= 2 * TAIL_ROOM, "kept: {spares}");
        assert_eq!(node.used(), charged(spares), "counted");

        // Frames queued after a cut are in a spare: it counts as what it
        // holds from then on.
        fill(WRITE_QUEUED.div_ceil(per_frame) + 1);
        let queued = (WRITE_QUEUED.div_ceil(per_frame) + 1) * 1000;
        assert!(kept(&mut rx) < spares, "one taken");
        assert_eq!(node.used(), charged(queued + kept(&mut rx)));
        assert!(rx.poll_take_all(&mut cx, &mut out).is_ready());
        assert_eq!(node.used(), charged(kept(&mut rx)));

        // The node has room for less than one buffer: none is kept.
        let before = kept(&mut rx);
        node.set_max(node.used() + TAIL_ROOM / 2);
        let mut written: Vec<Bytes> = out.drain(..).collect();
        assert!(!written.is_empty());
        rx.with_room(|o, room| o.recycle(&mut written, room));
        assert_eq!(kept(&mut rx), before, "no room: not kept");

        // At the cap, with a frame queued: the sender lets the spares go
        // and queues its frame instead of waiting.
        tx.try_send(frame()).unwrap();
        node.set_max(node.used() + 500);
        assert!(before > 0);
        assert!(tx.try_send(frame()).is_ok(), "room made by the spares");
        assert_eq!(kept(&mut rx), 0, "let go");
        assert_eq!(node.used(), charged(2000));
        // Nothing kept is left to let go: the next one waits.
        node.set_max(node.used());
        assert!(matches!(
            tx.try_send(frame()),
            Err(queue::TrySendError::Full(_))
        ));
        drop((tx, rx));
        assert_eq!(node.used(), 0, "all uncharged");
    }

    /// A socket that takes everything, counting it.
    struct Sink(Arc<AtomicU64>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A send that yields for its task's budget has queued nothing, so a
    /// caller that drops it then (a timeout) has not sent its message.
    #[tokio::test]
    async fn a_send_that_yields_has_sent_nothing() {
        let (tx, mut rx) = queue::channel::<Outbox>(1 << 20, usize::MAX);
        let sunk = Arc::new(AtomicU64::new(0));
        let no_turn = Arc::new(Turn(AtomicBool::new(false)));
        rx.with_store(|o| o.share_socket(Sink(sunk.clone()), no_turn, Arc::default()));
        let frame = || Frame::data(Bytes::from(vec![0u8; ZERO_COPY - 1]));
        let mut yielded = 0;
        for _ in 0..100_000 {
            let (depth, written) = (rx.depth(), sunk.load(Ordering::Relaxed));
            let mut send = std::pin::pin!(tx.send(frame()));
            if futures::poll!(send.as_mut()).is_pending() {
                assert_eq!(
                    (rx.depth(), sunk.load(Ordering::Relaxed)),
                    (depth, written),
                    "a send that yields queued or wrote its frame"
                );
                yielded += 1;
                if yielded == 3 {
                    return;
                }
                // Dropped: as a timeout would; the next poll of the task
                // comes with its budget back.
                tokio::task::yield_now().await;
            }
        }
        panic!("no send yielded: the budget was never spent");
    }

    /// A sender whose queue never fills, because it writes what is queued
    /// itself, still lets the other tasks of its thread run now and then:
    /// each write spends a unit of its task's budget, as a write to a
    /// tokio socket does.
    #[tokio::test]
    async fn a_sender_that_keeps_writing_yields_now_and_then() {
        let (tx, mut rx) = queue::channel::<Outbox>(1024, usize::MAX);
        let sunk = Arc::new(AtomicU64::new(0));
        let no_turn = Arc::new(Turn(AtomicBool::new(false)));
        rx.with_store(|o| o.share_socket(Sink(sunk.clone()), no_turn, Arc::default()));
        let other_ran = Arc::new(AtomicBool::new(false));
        let frames = 1000 * WRITE_QUEUED / 1005;
        let sender = tokio::spawn({
            let other_ran = other_ran.clone();
            async move {
                let mut seen_at = None;
                for i in 0..frames {
                    let frame = Frame::data(Bytes::from(vec![0u8; 1000]));
                    tx.send(frame).await.unwrap();
                    if seen_at.is_none() && other_ran.load(Ordering::Relaxed) {
                        seen_at = Some(i);
                    }
                }
                seen_at
            }
        });
        tokio::spawn(async move { other_ran.store(true, Ordering::Relaxed) });
        let seen_at = sender.await.unwrap();
        assert!(
            seen_at.is_some_and(|i| i < frames / 2),
            "the other task ran only at {seen_at:?} of {frames}"
        );
        assert!(sunk.load(Ordering::Relaxed) > 0);
        drop(rx);
    }
}
