//! A link's run loop, from the handshake's end to the close.
//!
//! - the reader decodes frames and acts on them as the read path's state
//!   machine says (see [`crate::link::read`]): user data goes to the link's
//!   receive queue (waiting when it is full, which stops reading the socket
//!   and lets TCP push back on the sender), envelopes to messaging, the
//!   verdict to the node; while the link's handles read the socket
//!   themselves (see [`crate::link::intake`]) it acts only on what they
//!   leave it, and reads again when asked back;
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
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::error::{CloseReason, Error};
use crate::link::connection::{request_close, Link, LinkState};
use crate::link::handshake::Handshaken;
use crate::link::intake::{local, Counted, Ends, Intake, Step};
use crate::link::outbox::{OutRx, OutTx, Turn};
use crate::link::patience::patient_timeout;
use crate::link::queue;
use crate::link::read::{Effect, ReadState};
use crate::link::socket::Shared;
use crate::link::watchdog::Watch;
use crate::link::writer::FrameWriter;
use crate::link::{Event, Links, Owner};
use crate::stats::Queued;
use crate::wire::decoder::{FrameDecoder, Pool, IDLE_ROOM};
use crate::wire::frame::{CodecError, FrameCodec};
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
        // The handles read the socket no more: it closes with the link.
        link.set_intake(None);
        match reason {
            CloseReason::Stalled(_) => links.counters.stalled_link(),
            CloseReason::Unread(_) => links.counters.unread_link(),
            _ => {}
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
    // Senders may write small frames, and what is queued once it is worth a
    // system call, to a link in the clear themselves (see `crate::link::outbox`),
    // through a handle on the socket that they give up when the send queue
    // closes, as the link ends.
    let turn = Arc::new(Turn::default());
    let socket = Shared::new(stream);
    let (rd, wr) = (socket.clone(), socket.clone());
    let cfg = &links.config;
    let max = cfg.max_frame_len;
    let pool = Arc::new(Pool::within(links.counters.queued.clone()));
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
    if !sealed {
        let written = progress.watch.written.clone();
        out_rx.with_store(|o| o.share_socket(socket, turn.clone(), written));
    }
    let rd = Counted {
        inner: rd,
        bytes: progress.watch.received.clone(),
        silence: progress.watch.silence.clone(),
    };
    // In the clear, small until a read comes full (see
    // `crate::wire::decoder`); sealed records have a buffer of their own.
    let frames = FramedRead::with_capacity(rd, opener, if sealed { 8 * 1024 } else { IDLE_ROOM });
    let intake = Intake::new(
        frames,
        ReadState::new(awaiting_verdict, sealed),
        progress.watch.duty.clone(),
        link.waiting_handles(),
        turn,
        progress.frames.clone(),
    );
    link.set_intake(Some(intake.clone()));
    let reader = read_loop(
        Reader {
            links,
            owner,
            link: &link,
            out_tx: &out_tx,
            progress: &progress,
        },
        &intake,
        &in_tx,
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

/// Writing failed: whatever was still queued is lost, so it is a failure.
fn write_failed(e: std::io::Error) -> CloseReason {
    CloseReason::Io(Arc::new(e))
}

/// What the read path needs besides its frames.
struct Reader<'a> {
    links: &'a Links,
    owner: &'a dyn Owner,
    link: &'a Link,
    out_tx: &'a OutTx,
    progress: &'a Progress,
}

/// Reads frames until the link ends, while the link's reading handles
/// do not (see [`crate::link::intake`]); user messages go to the receive
/// queue in batches: those decoded from what one read brought, under one
/// lock.
async fn read_loop(
    r: Reader<'_>,
    intake: &Intake,
    in_tx: &queue::Sender<VecDeque<Bytes>>,
) -> CloseReason {
    let reason = read_frames(&r, intake, in_tx).await;
    // Whatever ended the link, what arrived before it is delivered.
    intake.finish(in_tx, &r.progress.watch.delivering).await;
    reason
}

async fn read_frames(
    r: &Reader<'_>,
    intake: &Intake,
    in_tx: &queue::Sender<VecDeque<Bytes>>,
) -> CloseReason {
    let ends = Ends {
        link: r.link,
        out: r.out_tx,
    };
    // Envelopes, and their bytes, acted on since this task last let
    // others run.
    let (mut acted, mut acted_bytes) = (0, 0);
    loop {
        let turn = poll_fn(|cx| intake.poll_task(cx, ends, in_tx));
        let step = if intake.awaiting_verdict() {
            // The verdict is the handshake's last step: it gets the
            // handshake's time, counted from the step before (the decider
            // may still be reading our last message).
            tokio::select! {
                s = turn => s,
                _ = patient_timeout(r.links.config.handshake_timeout) => {
                    return CloseReason::Protocol(
                        "no verdict within the handshake timeout".into(),
                    )
                }
            }
        } else {
            turn.await
        };
        match step {
            // The receive queue is full: the socket is not read meanwhile,
            // so TCP pushes back on the sender.
            Step::Full(weight) => {
                r.progress.watch.delivering.store(true, Ordering::Relaxed);
                // A closed queue drops what waits for it at the next turn.
                let _ = in_tx.room_for(weight).await;
                r.progress.watch.delivering.store(false, Ordering::Relaxed);
            }
            Step::Effect(Effect::Message(payload)) => {
                acted += 1;
                acted_bytes += payload.len();
                let inbound = &r.links.inbound;
                if let Err(reason) = inbound.message(&r.link.peer, payload, r.out_tx) {
                    return CloseReason::Protocol(format!("bad message: {reason}"));
                }
                if acted >= ACT_ENVELOPES || acted_bytes >= ACT_BYTES {
                    (acted, acted_bytes) = (0, 0);
                    tokio::task::yield_now().await;
                }
            }
            Step::Effect(Effect::Verdict { verdict, end }) => {
                let link = r.link.id;
                r.owner.report(Event::Verdict { link, verdict });
                if let Some(reason) = end {
                    return ended(r, reason);
                }
            }
            Step::Effect(Effect::End(reason)) => return ended(r, reason),
            Step::Effect(Effect::Twin) => r.owner.error(Error::IdConflict {
                remote: r.link.remote,
                id: r.links.id().clone(),
            }),
            // Acted on where they were decoded.
            Step::Effect(other) => {
                local(other, ends);
            }
        }
    }
}

/// Envelopes, or bytes of them, that a link's task acts on before it lets
/// the other tasks of its thread run, and its own writer. Acting on an envelope is work
/// done right here (a signature checked, a subscription's topics counted,
/// a flood relayed), and tokio's budget counts reads of the socket, not
/// bytes: a peer that keeps sending large envelopes would otherwise keep
/// the task in one poll for up to 128 reads of a frame each, tens of
/// megabytes. Meanwhile this link writes nothing (its heartbeats and
/// answers wait: the ticker takes the link for stalled), and a task woken
/// on this thread (another link's, in the slot tokio runs next and no
/// other thread takes from) waits too, so that link's peer hears nothing
/// and times it out: a starved machine stretches such a poll to seconds.
/// As many as a delivery batch of user messages holds at most (64
/// messages or 64 KiB).
const ACT_ENVELOPES: usize = 64;
/// See [`ACT_ENVELOPES`].
const ACT_BYTES: usize = 64 * 1024;

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
                give_back(&mut out_rx, &mut w);
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
        // Nothing more is encoded: the buffers go.
        w.done().clear();
        progress.frames.fetch_add(1, Ordering::Relaxed);
    }
    w.flush().await?;
    progress.watch.writing.store(false, Ordering::Relaxed);
    // Everything is with the kernel; a failed shutdown (the peer already
    // gone) loses nothing.
    let _ = w.shutdown().await;
    Ok(())
}

/// Hands the send queue's encoding buffers that the writer is done with
/// back to it, to be used again (one lock per batch written).
fn give_back(out_rx: &mut OutRx, w: &mut FrameWriter) {
    let done = w.done();
    if !done.is_empty() {
        out_rx.with_room(|o, room| o.recycle(done, room));
        done.clear();
    }
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
