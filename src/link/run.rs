//! A link's run loop, from the handshake's end to the close.
//!
//! - the reader decodes frames and acts on them as the read path's state
//!   machine says (see [`crate::link::read`]): user data goes to the link's
//!   receive queue (waiting when it is full, which stops reading the socket
//!   and lets TCP push back on the sender), envelopes to messaging, the
//!   verdict to the node;
//! - the writer drains the send queue in batches, one flush per batch.
//!
//! Reader and writer run concurrently in this one task, so a link never
//! deadlocks with both ends blocked writing. A close, asked for on this end or
//! signalled by the peer's end of stream, first flushes what `send` accepted,
//! then shuts down the socket's write side and waits for the peer's end of
//! stream. A close that moves no frame for [`CLOSE_IDLE`] drops the socket
//! (a peer that stopped reading cannot hold a close forever) and, if frames
//! were still queued, is reported as a failure. A protocol or socket error
//! ends the link at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::error::{CloseReason, Error};
use crate::link::connection::{request_close, Link, LinkState};
use crate::link::counters::frame_bytes;
use crate::link::handshake::Handshaken;
use crate::link::outbox::{OutRx, OutTx, Turn};
use crate::link::patience::patient_timeout;
use crate::link::queue;
use crate::link::read::{Effect, ReadState};
use crate::link::socket::Shared;
use crate::link::watchdog::{Silence, Watch};
use crate::link::writer::FrameWriter;
use crate::link::{Event, Links, Owner};
use crate::stats::Queued;
use crate::sync::lock;
use crate::wire::decoder::{FrameDecoder, Pool, IDLE_ROOM};
use crate::wire::frame::{self, CodecError, Frame, FrameCodec};
use crate::wire::secure::{Opener, Sealer};

/// How long a closing link may go without moving a frame, while it flushes
/// and waits for the peer's end of stream, before its socket is dropped.
pub(crate) const CLOSE_IDLE: Duration = Duration::from_millis(1500);

impl Handshaken {
    /// Runs the link until it closes, then records why and tells the node.
    pub(crate) async fn run(self, links: &Links, owner: &dyn Owner) {
        let started = Instant::now();
        let (link, in_tx) = (self.link.clone(), self.in_tx.clone());
        let reason = drive(links, owner, self).await;
        if let CloseReason::Stalled(_) = reason {
            links.counters.stalled_link();
        }
        links.open.finished(&link, reason.clone());
        // The receive stream ends only now, so a reader that sees it end
        // finds the reason already set.
        drop(in_tx);
        owner.report(Event::Closed {
            link: link.id,
            reason,
            lived: started.elapsed(),
        });
    }
}

/// Progress counters shared by the parts of one link's task.
struct Progress {
    /// What the node's watchdog sees of the link: bytes received, and
    /// whether the reader waits on a full receive queue.
    watch: Arc<Watch>,
    /// Frames other than heartbeats received, and batches written; a
    /// closing link that moves none of these nor a byte is stuck.
    frames: Arc<AtomicU64>,
}

impl Progress {
    /// What the link has moved so far: frames received, and batches and
    /// bytes written.
    fn moved(&self) -> u64 {
        self.frames.load(Ordering::Relaxed) + self.watch.written.load(Ordering::Relaxed)
    }
}

async fn drive(links: &Links, owner: &dyn Owner, link: Handshaken) -> CloseReason {
    let Handshaken {
        link,
        stream,
        mut out_rx,
        out_tx,
        in_tx,
        keys,
        awaiting_verdict,
        // Counted until the link ends.
        accepted: _accepted,
    } = link;
    // Senders may write small frames to a link in the clear themselves
    // (see `crate::outbox`), through a handle on the socket that they give
    // up when the send queue closes, as the link ends.
    let turn = Arc::new(Turn::default());
    let socket = Shared::new(stream);
    if keys.is_none() {
        out_rx.with_store(|o| o.write_at_once(socket.clone(), turn.clone()));
    }
    let (rd, wr) = (socket.clone(), socket);
    let cfg = &links.config;
    let max = cfg.max_frame_len;
    let pool = Arc::new(Pool::default());
    let (opener, sealer) = match &keys {
        Some(k) => (
            Opener::Sealed(k.decoder(max, pool.clone())),
            Sealer::Sealed(k.encoder(max)),
        ),
        None => (
            Opener::Plain(FrameDecoder::new(max, pool.clone())),
            Sealer::Plain(FrameCodec { max }),
        ),
    };
    let sealed = keys.is_some();
    drop(keys);
    let progress = Progress {
        watch: links.ticker.watch(pool, link.clone(), out_tx.clone()),
        frames: Arc::default(),
    };
    let rd = Counted {
        inner: rd,
        bytes: progress.watch.received.clone(),
        silence: progress.watch.silence.clone(),
    };
    let reader = read_loop(
        Reader {
            links,
            owner,
            link: &link,
            out_tx: &out_tx,
            turn: &turn,
            progress: &progress,
        },
        // In the clear, small until a read comes full (see
        // `crate::wire::decoder`); sealed records have a buffer of their own.
        FramedRead::with_capacity(rd, opener, if sealed { 8 * 1024 } else { IDLE_ROOM }),
        &in_tx,
        ReadState::new(awaiting_verdict, sealed),
    );
    let writer = write_loop(
        FrameWriter::new(wr, sealer, progress.watch.written.clone()),
        out_rx,
        &link,
        &progress,
        &links.counters.queued,
    );
    let silence = |silent| {
        owner.report(Event::Silence {
            link: link.id,
            silent,
        });
    };
    let silent = progress.watch.timed_out(silence);
    let mut state = link.state.subscribe();
    let stalled = async {
        closing(&mut state).await;
        loop {
            let seen = progress.moved();
            tokio::time::sleep(CLOSE_IDLE).await;
            if progress.moved() == seen {
                return;
            }
        }
    };
    tokio::pin!(reader, writer, stalled, silent);
    let stuck = || {
        let why = format!("close stalled for {CLOSE_IDLE:?}: the peer stopped reading");
        CloseReason::Io(Arc::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            why,
        )))
    };
    let mut flushed = false;
    let ended = loop {
        tokio::select! {
            r = &mut reader => match r {
                // The peer closed its side; flush what we accepted for it
                // (it reads until it sees our end of stream), then end.
                CloseReason::PeerClosed if !flushed => {
                    request_close(&link, CloseReason::PeerClosed);
                    break tokio::select! {
                        w = &mut writer => w.err().map_or(CloseReason::PeerClosed, write_failed),
                        _ = &mut stalled => stuck(),
                    };
                }
                r => break r,
            },
            w = &mut writer, if !flushed => match w {
                // Our side is flushed and shut down; wait for the peer's.
                Ok(()) => flushed = true,
                Err(e) => break write_failed(e),
            },
            // Flushed, and the peer never closed its side: nothing was lost.
            _ = &mut stalled => break if flushed { CloseReason::PeerClosed } else { stuck() },
            r = &mut silent => break r,
        }
    };
    // A clean end keeps the reason the close was asked for; a failure keeps
    // its own, so that it is reported.
    let state = link.state.borrow().clone();
    match state {
        LinkState::Closing(r) if !ended.is_failure() => r,
        _ => ended,
    }
}

/// A read half that counts the bytes it reads.
struct Counted {
    inner: Shared,
    bytes: Arc<AtomicU64>,
    silence: Arc<Silence>,
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

/// Writing failed: whatever was still queued is lost, so it is a failure.
fn write_failed(e: std::io::Error) -> CloseReason {
    CloseReason::Io(Arc::new(e))
}

/// Most received messages held before they are handed to the receive
/// queue (waiting there while it is full) ...
const DELIVER_BATCH: usize = 64;
/// ... and most bytes of them: so the batch adds little to what the receive
/// queue bounds (a frame larger than this is handed over at once).
const DELIVER_BYTES: usize = 64 * 1024;

/// What the read path needs besides its frames.
struct Reader<'a> {
    links: &'a Links,
    owner: &'a dyn Owner,
    link: &'a Link,
    out_tx: &'a OutTx,
    /// Given back to the senders whenever something was read.
    turn: &'a Turn,
    progress: &'a Progress,
}

/// Reads frames until the link ends; user messages go to the receive queue
/// in batches: those decoded from what one read brought, under one lock.
async fn read_loop(
    r: Reader<'_>,
    frames: FramedRead<Counted, Opener>,
    in_tx: &queue::Sender<VecDeque<Bytes>>,
    state: ReadState,
) -> CloseReason {
    let mut batch = Batch {
        in_tx,
        pending: VecDeque::new(),
        bytes: 0,
    };
    let reason = read_frames(&r, frames, &mut batch, state).await;
    // Whatever ended the link, what arrived before it is delivered.
    batch.deliver(r.progress).await;
    reason
}

/// Received messages not yet handed to the receive queue.
struct Batch<'a> {
    in_tx: &'a queue::Sender<VecDeque<Bytes>>,
    pending: VecDeque<Bytes>,
    bytes: usize,
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
        self.frames += 1;
        self.bytes += frame_bytes(f.payload.len());
        self.moved += u64::from(f.kind != frame::HEARTBEAT);
    }

    /// A user message of `len` bytes.
    fn data(&mut self, len: usize) {
        self.frames += 1;
        self.bytes += frame_bytes(len);
        self.moved += 1;
    }

    /// Adds what was counted to the link's counters, and gives the
    /// senders their turn to write at once (the peer was heard from):
    /// before anything read is handed on, and before waiting for the
    /// socket.
    fn flush(&mut self, r: &Reader<'_>) {
        if self.frames == 0 {
            return;
        }
        r.turn.heard();
        let c = &r.link.counters;
        c.frames_in.fetch_add(self.frames, Ordering::Relaxed);
        c.bytes_in.fetch_add(self.bytes, Ordering::Relaxed);
        if self.moved > 0 {
            r.progress.frames.fetch_add(self.moved, Ordering::Relaxed);
        }
        *self = Tally::default();
    }
}

impl Batch<'_> {
    fn push(&mut self, payload: Bytes) {
        self.bytes += payload.len();
        self.pending.push_back(payload);
    }

    /// Holds as much as it may: hand it over before reading on.
    fn is_full(&self) -> bool {
        self.pending.len() >= DELIVER_BATCH || self.bytes >= DELIVER_BYTES
    }

    /// Hands the batch to the receive queue, waiting while it is full: the
    /// socket is not read meanwhile, so TCP pushes back on the sender. (The
    /// actor holds a handle, so the queue outlives the link.)
    async fn deliver(&mut self, progress: &Progress) {
        self.bytes = 0;
        let pending = &mut self.pending;
        if pending.is_empty() {
            return;
        }
        if self.in_tx.try_send_many(pending).is_ok() && pending.is_empty() {
            return;
        }
        progress.watch.delivering.store(true, Ordering::Relaxed);
        let _ = self.in_tx.send_many(pending).await;
        progress.watch.delivering.store(false, Ordering::Relaxed);
        pending.clear(); // the queue closed: nobody will read them
    }
}

async fn read_frames(
    r: &Reader<'_>,
    mut frames: FramedRead<Counted, Opener>,
    batch: &mut Batch<'_>,
    mut state: ReadState,
) -> CloseReason {
    let mut tally = Tally::default();
    let reason = read_counted(r, &mut frames, batch, &mut state, &mut tally).await;
    tally.flush(r);
    reason
}

async fn read_counted(
    r: &Reader<'_>,
    frames: &mut FramedRead<Counted, Opener>,
    batch: &mut Batch<'_>,
    state: &mut ReadState,
    tally: &mut Tally,
) -> CloseReason {
    loop {
        // A run of small user messages in the clear is cut off the read
        // buffer directly; the first frame of each read, and any other,
        // come through the decoder below.
        if state.takes_data() && cut_messages(frames, batch, tally) && batch.is_full() {
            tally.flush(r);
            batch.deliver(r.progress).await;
            continue;
        }
        // A frame already buffered is taken at once; before waiting for the
        // socket, what was decoded so far is counted and delivered.
        let next = match frames.next().now_or_never() {
            Some(next) => next,
            None => {
                tally.flush(r);
                batch.deliver(r.progress).await;
                if state.awaiting_verdict() {
                    // The verdict is the handshake's last step: it gets the
                    // handshake's time, counted from the step before (the
                    // decider may still be reading our last message).
                    tokio::select! {
                        n = frames.next() => n,
                        _ = patient_timeout(r.links.config.handshake_timeout) => {
                            return CloseReason::Protocol(
                                "no verdict within the handshake timeout".into(),
                            )
                        }
                    }
                } else {
                    frames.next().await
                }
            }
        };
        // A heartbeat says the peer is there, not that the link is getting
        // anywhere: it is not counted as moving.
        if let Some(Ok(f)) = &next {
            tally.count(f);
        }
        match state.handle(next) {
            Effect::None => {}
            Effect::Beat(beat) => {
                lock(&r.link.timing).beat(beat, std::time::Instant::now());
            }
            Effect::Ping(n) => {
                let pong = Frame {
                    kind: frame::PONG,
                    payload: Bytes::copy_from_slice(&n.to_be_bytes()),
                };
                // Dropped when the answers waiting beside a full queue are
                // at their bound: the ping goes unanswered, as if lost.
                r.out_tx.send_answer(pong);
            }
            Effect::Pong(n) => lock(&r.link.timing).pong(n, std::time::Instant::now()),
            Effect::Data(payload) => batch.push(payload),
            Effect::Message(payload) => {
                tally.flush(r);
                let inbound = &r.links.inbound;
                if let Err(reason) = inbound.message(&r.link.peer, payload, r.out_tx) {
                    return CloseReason::Protocol(format!("bad message: {reason}"));
                }
            }
            Effect::Verdict { verdict, end } => {
                let link = r.link.id;
                r.owner.report(Event::Verdict { link, verdict });
                if let Some(reason) = end {
                    return ended(r, reason);
                }
            }
            Effect::End(reason) => return ended(r, reason),
            Effect::Twin => r.owner.error(Error::IdConflict {
                remote: r.link.remote,
                id: r.links.id().clone(),
            }),
        }
        if batch.is_full() {
            tally.flush(r);
            batch.deliver(r.progress).await;
        }
    }
}

/// Moves whole small user messages from the front of the read buffer (of
/// a link in the clear) to `batch` until it is full or another kind of
/// frame comes; true if it moved any.
fn cut_messages(
    frames: &mut FramedRead<Counted, Opener>,
    batch: &mut Batch<'_>,
    tally: &mut Tally,
) -> bool {
    let Some(under) = frames.decoder().plain().and_then(|d| d.small_under()) else {
        return false;
    };
    let buf = frames.read_buffer_mut();
    let mut cut = 0;
    while !batch.is_full() {
        let Some(payload) = frame::cut_small(buf, frame::DATA, under) else {
            break;
        };
        cut += frame_bytes(payload.len());
        tally.data(payload.len());
        batch.push(payload);
    }
    if let Some(d) = frames.decoder_mut().plain_mut() {
        d.cut(cut as usize);
    }
    cut > 0
}

/// The read path ends the link. A conflict there is the peer saying a newer
/// live node holds our id: an error event too.
fn ended(r: &Reader<'_>, reason: CloseReason) -> CloseReason {
    if reason == CloseReason::IdConflict {
        r.owner.error(Error::IdConflict {
            remote: r.link.remote,
            id: r.links.id().clone(),
        });
    }
    reason
}

/// Drains the send queue until a close is asked for; then refuses further
/// sends, flushes everything accepted, and shuts the write side down.
/// Returns `Ok` once all of it was handed to the kernel. (Heartbeats come
/// through the send queue too, from the node's ticker: see
/// [`crate::link::watchdog`].)
async fn write_loop(
    mut w: FrameWriter,
    mut out_rx: OutRx,
    link: &Link,
    progress: &Progress,
    queued: &Queued,
) -> std::io::Result<()> {
    let mut state = link.state.subscribe();
    // Made once, not on every turn of the loop: each one subscribes anew.
    let close_asked = closing(&mut state);
    tokio::pin!(close_asked);
    let mut segs = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            n = out_rx.take_all(&mut segs) => {
                if n == 0 {
                    break;
                }
                let held = Held::new(queued, &segs);
                progress.watch.writing.store(true, Ordering::Relaxed);
                w.put_encoded(&mut segs).map_err(into_io)?;
                w.flush().await?;
                progress.watch.writing.store(false, Ordering::Relaxed);
                drop(held);
                progress.frames.fetch_add(1, Ordering::Relaxed);
            }
            _ = &mut close_asked => break,
        }
    }
    // What was accepted before the close still goes out; pushes are whole
    // under the queue's lock, so nothing can arrive after this.
    out_rx.close();
    progress.watch.writing.store(true, Ordering::Relaxed);
    while out_rx.take_all(&mut segs).await > 0 {
        let _held = Held::new(queued, &segs);
        w.put_encoded(&mut segs).map_err(into_io)?;
        w.flush().await?;
        progress.frames.fetch_add(1, Ordering::Relaxed);
    }
    w.flush().await?;
    progress.watch.writing.store(false, Ordering::Relaxed);
    // Everything is with the kernel; a failed shutdown (the peer already
    // gone) loses nothing.
    let _ = w.shutdown().await;
    Ok(())
}

/// What a write under way holds, counted against the node's cap as it was
/// while queued (a peer that stops reading keeps its last batch here).
struct Held<'a> {
    queued: &'a Queued,
    charged: usize,
}

impl<'a> Held<'a> {
    fn new(queued: &'a Queued, segs: &VecDeque<Bytes>) -> Self {
        let bytes = segs.iter().map(Bytes::len).sum();
        Held {
            queued,
            charged: queued.recharge(0, bytes),
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.queued.recharge(self.charged, 0);
    }
}

/// Encoding a frame we send fails only on I/O, or on a sealing error that
/// cannot happen with records under the size limit; both end the link.
fn into_io(e: CodecError) -> std::io::Error {
    match e {
        CodecError::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

/// Resolves once a close has been asked for (or the link is gone).
async fn closing(state: &mut watch::Receiver<LinkState>) {
    let _ = state.wait_for(|s| *s != LinkState::Up).await;
}
