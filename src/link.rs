//! One TCP link: the hello exchange, then a reader and a writer.
//!
//! Every link, dialed or accepted, goes through [`handshake`]: both ends send
//! their hello, read the other's (bounded in size and time), and check it.
//! The link is then handed to the service's actor, which applies the one-link
//! rule (see [`crate::mesh`]), while this task keeps running the link:
//!
//! - the reader decodes frames; user data goes to the link's receive queue
//!   (waiting when it is full, which stops reading the socket and lets TCP
//!   push back on the sender), the verdict goes to the actor;
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
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{watch, SemaphorePermit};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::actor::{Command, Ctx};
use crate::connection::{request_close, CloseReason, Connection, Inbound, LinkState, Shared};
use crate::error::Error;
use crate::frame::{self, CodecError, Frame, FrameCodec};
use crate::gate::Ticket;
use crate::hello::{Hello, Refusal, MAX_HELLO};
use crate::mesh::{decides, DialEnd, LinkId, Target, Verdict};
use crate::outbox::{OutRx, OutTx};
use crate::queue;
use crate::reader::{FrameReader, Pool};
use crate::secure::{self, Keys, Opener, Sealer};
use crate::writer::FrameWriter;

/// How long a closing link may go without moving a frame, while it flushes
/// and waits for the peer's end of stream, before its socket is dropped.
pub(crate) const CLOSE_IDLE: Duration = Duration::from_millis(1500);

/// Runs an accepted TCP link from hello to close.
/// `ticket` holds its handshake slot (see [`crate::gate`]) until then.
pub(crate) async fn accepted(ctx: Arc<Ctx>, stream: TcpStream, remote: SocketAddr, ticket: Ticket) {
    let evicted = ticket.evicted.clone();
    let link = tokio::select! {
        l = handshake(&ctx, stream, remote, false) => l,
        _ = evicted.cancelled() => {
            ctx.error(Error::Handshake {
                remote: canonical(remote),
                reason: "dropped to make room: the handshake slots are full and this \
                         address holds the most"
                    .into(),
            });
            None
        }
    };
    drop(ticket);
    if let Some(link) = link {
        link.run(&ctx).await;
    }
}

/// Runs a TCP link we dialed to `peer` from hello to close. Tells the actor
/// when the dial has ended: right after the link is registered, so the peer is
/// never seen as neither dialing nor linked, or when the handshake failed.
///
/// The node that answers may not be `peer` (a stale record whose port another
/// node now uses). It is still a node of our cluster, so the link counts as a
/// link to whoever answered, and the one-link rule applies to it as to any
/// other; refusing it on this end only would leave the other end holding a
/// link we dropped.
/// `permit` (a dial slot) is held until the handshake is over.
pub(crate) async fn dialed(
    ctx: Arc<Ctx>,
    stream: TcpStream,
    remote: SocketAddr,
    target: Target,
    permit: SemaphorePermit<'_>,
) {
    // A connection accepted from our own dial's address is this very dial
    // reaching ourselves (see `checked_hello`). The accepting side may look
    // after this side is done, so the entry outlives the handshake; old ones
    // are swept here.
    if let Ok(local) = stream.local_addr() {
        let now = Instant::now();
        let mut own = ctx.own_dials();
        own.retain(|_, at| now.duration_since(*at) < 2 * ctx.handshake_timeout);
        own.insert(canonical(local), now);
    }
    let link = handshake(&ctx, stream, remote, true).await;
    drop(permit);
    if let (Some(l), Target::Peer(peer)) = (&link, &target) {
        if &l.shared.peer != peer {
            tracing::debug!(dialed = %peer, answered = %l.shared.peer, %remote, "a different node answered");
        }
    }
    let end = match &link {
        Some(l) => DialEnd::Linked(l.shared.peer.clone()),
        None => DialEnd::Failed,
    };
    ctx.send(Command::DialEnded { target, end });
    if let Some(link) = link {
        link.run(&ctx).await;
    }
}

/// A link whose hellos checked out, registered with the actor.
struct Link {
    id: LinkId,
    shared: Arc<Shared>,
    stream: TcpStream,
    out_rx: OutRx,
    /// For the messaging layer's answers on this link.
    out_tx: OutTx,
    in_tx: queue::Sender<VecDeque<Bytes>>,
    keys: Option<Keys>,
    awaiting_verdict: bool,
    deadline: Instant,
}

/// Exchanges and checks hellos, bounded by the handshake timeout and by the
/// service closing; reports failures as error events. On success the link is
/// registered with the actor ([`Command::Handshaken`]).
async fn handshake(
    ctx: &Ctx,
    mut stream: TcpStream,
    remote: SocketAddr,
    dialer: bool,
) -> Option<Link> {
    let remote = canonical(remote);
    let deadline = Instant::now() + ctx.handshake_timeout;
    let _ = stream.set_nodelay(true);
    let greeted = tokio::select! {
        _ = ctx.cancel.cancelled() => return None,
        r = tokio::time::timeout_at(deadline, greet(ctx, &mut stream, remote, dialer)) => {
            r.unwrap_or_else(|_| Err(Some(Error::Handshake {
                remote,
                reason: if ctx.psk.is_some() {
                    format!("no hello and secret handshake within {:?}", ctx.handshake_timeout)
                } else {
                    format!("no hello within {:?}", ctx.handshake_timeout)
                },
            })))
        }
    };
    let (hello, keys) = match greeted {
        // The node started closing while the hellos went back and forth.
        Ok(_) if ctx.cancel.is_cancelled() => return None,
        Ok(h) => h,
        Err(Some(e)) => {
            ctx.error(e);
            return None;
        }
        Err(None) => return None,
    };

    let id = ctx.next_link_id();
    let (out_tx, out_rx) = queue::channel(ctx.queue_len, ctx.queue_bytes);
    let (in_tx, in_rx) = queue::channel(ctx.queue_len, ctx.queue_bytes);
    let shared = Arc::new(Shared {
        peer: hello.id.clone(),
        remote,
        local: canonical(stream.local_addr().unwrap_or(remote)),
        max_frame_len: ctx.max_frame_len,
        state: watch::channel(LinkState::Up).0,
        inbound: Inbound::new(in_rx),
        up: AtomicBool::new(true),
    });
    let conn = Connection::new(shared.clone(), out_tx.clone());
    let registered = ctx.send(Command::Handshaken {
        link: id,
        conn,
        incarnation: hello.incarnation,
    });
    if !registered {
        return None; // the service has closed
    }
    tracing::debug!(link = id, peer = %hello.id, %remote, "hello exchanged");
    Some(Link {
        id,
        shared,
        stream,
        out_rx,
        out_tx,
        in_tx,
        keys,
        awaiting_verdict: !decides(ctx.id(), &hello.id),
        deadline,
    })
}

/// The hellos, then, with a cluster secret, the secret handshake (see
/// [`crate::secure`]) bound to both hellos.
async fn greet(
    ctx: &Ctx,
    stream: &mut TcpStream,
    remote: SocketAddr,
    dialer: bool,
) -> Result<(Hello, Option<Keys>), Option<Error>> {
    let (hello, theirs) = checked_hello(ctx, stream, remote, dialer).await?;
    let Some(psk) = &ctx.psk else {
        return Ok((hello, None));
    };
    let ours = ctx.hello.encode();
    // Both hellos, the dialer's first, each after its length.
    let (first, second): (&[u8], &[u8]) = if dialer {
        (&ours, &theirs)
    } else {
        (&theirs, &ours)
    };
    let mut prologue = Vec::with_capacity(4 + first.len() + second.len());
    for h in [first, second] {
        prologue.extend_from_slice(&(h.len() as u16).to_be_bytes());
        prologue.extend_from_slice(h);
    }
    let suite = secure::Suite::agreed(ctx.hello.aes, hello.aes);
    match secure::handshake(stream, psk, suite, dialer, &prologue).await {
        Ok(keys) => Ok((hello, Some(keys))),
        Err(reason) => Err(Some(Error::Handshake { remote, reason })),
    }
}

/// IPv4 peers of a dual-stack socket show as plain IPv4 addresses.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The peer's hello, if it is one we link with. `Err(None)`: drop the link
/// quietly (we reached ourselves); `Err(Some(e))`: refuse it with `e`.
async fn checked_hello(
    ctx: &Ctx,
    stream: &mut TcpStream,
    remote: SocketAddr,
    dialer: bool,
) -> Result<(Hello, Vec<u8>), Option<Error>> {
    let refuse = |reason: String| Some(Error::Handshake { remote, reason });
    let raw = exchange_hello(stream, &ctx.hello).await.map_err(refuse)?;
    let hello = Hello::decode(&raw).map_err(refuse)?;
    match hello.check(&ctx.hello) {
        Ok(()) => {}
        // Our own id and incarnation: a dial of ours that reached us (a
        // record of ours, or a stale one, pointed here), unless it comes
        // from a socket that is not one of our dials: then someone echoed
        // our hello back, which is a claim to our id like any other.
        Err(Refusal::SelfLink) if dialer || ctx.own_dials().remove(&remote).is_some() => {
            tracing::debug!(%remote, "dropped a link to ourselves");
            return Err(None);
        }
        Err(Refusal::SelfLink) => {
            let id = hello.id.to_string();
            return Err(Some(Error::IdConflict { remote, id }));
        }
        Err(Refusal::IdConflict) => {
            let id = hello.id.to_string();
            return Err(Some(Error::IdConflict { remote, id }));
        }
        Err(Refusal::Mismatch(reason)) => return Err(refuse(reason)),
    }
    Ok((hello, raw))
}

impl Link {
    /// Runs the link until it closes, then records why and tells the actor.
    async fn run(self, ctx: &Ctx) {
        let started = Instant::now();
        let (id, shared, in_tx) = (self.id, self.shared.clone(), self.in_tx.clone());
        let reason = drive(ctx, self).await;
        ctx.hub().finished(id, &shared, reason.clone());
        // The receive stream ends only now, so a reader that sees it end
        // finds the reason already set.
        drop(in_tx);
        ctx.send(Command::LinkClosed {
            link: id,
            reason,
            lived: started.elapsed(),
        });
    }
}

/// Writes our hello and reads the peer's: one frame of at most
/// [`MAX_HELLO`] bytes, read exactly, so nothing after it is consumed.
/// Returns the peer's hello payload, not yet decoded.
async fn exchange_hello(stream: &mut TcpStream, ours: &Hello) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    let payload = ours.encode();
    tokio_util::codec::Encoder::encode(
        &mut FrameCodec { max: MAX_HELLO },
        Frame {
            kind: frame::HELLO,
            payload,
        },
        &mut out,
    )
    .map_err(|e| e.to_string())?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("writing hello: {e}"))?;

    let first = frame::read_one(stream, MAX_HELLO)
        .await
        .map_err(|e| match e {
            Ok(len) => format!(
                "not a tcpnet node (first frame length {len}, a hello is at most {})",
                MAX_HELLO + 1
            ),
            Err(e) => format!("reading hello: {e}"),
        })?;
    if first.kind != frame::HELLO {
        return Err(format!(
            "not a tcpnet node (first frame kind {:#04x})",
            first.kind
        ));
    }
    Ok(first.payload.to_vec())
}

/// Progress counters shared by the parts of one link's task.
#[derive(Default)]
struct Progress {
    /// Frames other than heartbeats received, plus bytes written; a closing
    /// link that moves none is stuck.
    frames: Arc<AtomicU64>,
    /// Bytes received (a large frame counts while it arrives); the watchdog
    /// looks for silence in it.
    received: Arc<AtomicU64>,
    /// Set while the reader waits on a full receive queue: the peer's
    /// silence then is our consumer's slowness, not the peer's absence.
    delivering: AtomicBool,
}

async fn drive(ctx: &Ctx, link: Link) -> CloseReason {
    let Link {
        id,
        shared,
        stream,
        mut out_rx,
        out_tx,
        in_tx,
        keys,
        awaiting_verdict,
        deadline,
    } = link;
    // Senders may write small frames to a link in the clear themselves
    // (see `crate::outbox`), through a second handle on the socket; it is
    // given up when the send queue closes, as the link ends.
    #[cfg(unix)]
    if keys.is_none() {
        use std::os::fd::AsFd;
        if let Ok(fd) = stream.as_fd().try_clone_to_owned() {
            out_rx.with_store(|o| o.write_at_once(std::net::TcpStream::from(fd)));
        }
    }
    let (rd, wr) = stream.into_split();
    let max = ctx.max_frame_len;
    let pool = Arc::new(Pool::default());
    let (opener, sealer) = match &keys {
        Some(k) => (
            Opener::Sealed(k.decoder(max, pool.clone())),
            Sealer::Sealed(k.encoder(max)),
        ),
        None => (
            Opener::Plain(FrameReader::new(max, pool.clone())),
            Sealer::Plain(FrameCodec { max }),
        ),
    };
    drop(keys);
    let progress = Progress::default();
    let rd = Counted {
        inner: rd,
        bytes: progress.received.clone(),
    };
    let reader = read_loop(
        ctx,
        id,
        &shared,
        &out_tx,
        FramedRead::new(rd, opener),
        &in_tx,
        awaiting_verdict,
        deadline,
        &progress,
    );
    let writer = write_loop(
        FrameWriter::new(wr, sealer, progress.frames.clone()),
        out_rx,
        shared.state.subscribe(),
        ctx.heartbeat_interval,
        &progress,
    );
    let silent = watchdog(ctx.heartbeat_timeout, &progress, &pool);
    let mut state = shared.state.subscribe();
    let stalled = async {
        closing(&mut state).await;
        loop {
            let seen = progress.frames.load(Ordering::Relaxed);
            tokio::time::sleep(CLOSE_IDLE).await;
            if progress.frames.load(Ordering::Relaxed) == seen {
                return;
            }
        }
    };
    tokio::pin!(reader, writer, stalled, silent);
    let stuck = || {
        CloseReason::Io(format!(
            "close stalled for {CLOSE_IDLE:?}: the peer stopped reading"
        ))
    };
    let mut flushed = false;
    let ended = loop {
        tokio::select! {
            r = &mut reader => match r {
                // The peer closed its side; flush what we accepted for it
                // (it reads until it sees our end of stream), then end.
                CloseReason::PeerClosed if !flushed => {
                    request_close(&shared, CloseReason::PeerClosed);
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
    let state = shared.state.borrow().clone();
    match state {
        LinkState::Closing(r) if !ended.is_failure() => r,
        _ => ended,
    }
}

/// A read half that counts the bytes it reads.
struct Counted {
    inner: OwnedReadHalf,
    bytes: Arc<AtomicU64>,
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
        }
        polled
    }
}

/// Resolves when the peer has been silent for `timeout` while the reader was
/// ready for it. Checks four times per timeout, so it fires between `timeout`
/// and 1.25 x `timeout` of silence. A quiet tick also frees the buffers kept
/// for large frames: an idle link holds none.
async fn watchdog(timeout: Duration, progress: &Progress, pool: &Pool) -> CloseReason {
    let tick = timeout / 4;
    let mut seen = progress.received.load(Ordering::Relaxed);
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        let now = progress.received.load(Ordering::Relaxed);
        if now != seen || progress.delivering.load(Ordering::Relaxed) {
            seen = now;
            quiet = Duration::ZERO;
        } else {
            quiet += tick;
            pool.trim();
            if quiet >= timeout {
                return CloseReason::Timeout(quiet);
            }
        }
    }
}

/// The peer says a newer live node holds our id.
fn told_conflict(ctx: &Ctx, remote: SocketAddr) -> CloseReason {
    ctx.error(Error::IdConflict {
        remote,
        id: ctx.id().to_string(),
    });
    CloseReason::IdConflict
}

/// Writing failed: whatever was still queued is lost, so it is a failure.
fn write_failed(e: std::io::Error) -> CloseReason {
    CloseReason::Io(format!("write failed: {e}"))
}

/// A read error; the ones that mean the peer went away are a peer close.
fn read_failed(e: std::io::Error) -> CloseReason {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => CloseReason::PeerClosed,
        _ => CloseReason::Io(e.to_string()),
    }
}

/// Most received messages held before they are handed to the receive
/// queue (waiting there while it is full) ...
const DELIVER_BATCH: usize = 64;
/// ... and most bytes of them: so the batch adds little to what the receive
/// queue bounds (a frame larger than this is handed over at once).
const DELIVER_BYTES: usize = 64 * 1024;

/// Reads frames until the link ends; user messages go to the receive queue
/// in batches: those decoded from what one read brought, under one lock.
#[allow(clippy::too_many_arguments)]
async fn read_loop(
    ctx: &Ctx,
    link: LinkId,
    shared: &Shared,
    out_tx: &OutTx,
    frames: FramedRead<Counted, Opener>,
    in_tx: &queue::Sender<VecDeque<Bytes>>,
    awaiting_verdict: bool,
    deadline: Instant,
    progress: &Progress,
) -> CloseReason {
    let mut batch = Batch {
        in_tx,
        pending: VecDeque::new(),
        bytes: 0,
    };
    let reason = read_frames(
        ctx,
        link,
        shared,
        out_tx,
        frames,
        &mut batch,
        awaiting_verdict,
        deadline,
        progress,
    )
    .await;
    // Whatever ended the link, what arrived before it is delivered.
    batch.deliver(progress).await;
    reason
}

/// Received messages not yet handed to the receive queue.
struct Batch<'a> {
    in_tx: &'a queue::Sender<VecDeque<Bytes>>,
    pending: VecDeque<Bytes>,
    bytes: usize,
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
        progress.delivering.store(true, Ordering::Relaxed);
        let _ = self.in_tx.send_many(pending).await;
        progress.delivering.store(false, Ordering::Relaxed);
        pending.clear(); // the queue closed: nobody will read them
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_frames(
    ctx: &Ctx,
    link: LinkId,
    shared: &Shared,
    out_tx: &OutTx,
    mut frames: FramedRead<Counted, Opener>,
    batch: &mut Batch<'_>,
    mut awaiting_verdict: bool,
    deadline: Instant,
    progress: &Progress,
) -> CloseReason {
    loop {
        // A frame already buffered is taken at once; before waiting for the
        // socket, what was decoded so far is delivered.
        let next = match frames.next().now_or_never() {
            Some(next) => next,
            None => {
                batch.deliver(progress).await;
                if awaiting_verdict {
                    match tokio::time::timeout_at(deadline, frames.next()).await {
                        Ok(n) => n,
                        Err(_) => {
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
        let verdict = &mut awaiting_verdict;
        if let Some(reason) = handle(ctx, link, shared, out_tx, next, batch, verdict, progress) {
            return reason;
        }
        if batch.is_full() {
            batch.deliver(progress).await;
        }
    }
}

/// Acts on one frame (or the stream's end, or a decoding error); user
/// messages are added to `batch`. `Some` ends the link.
#[allow(clippy::too_many_arguments)]
fn handle(
    ctx: &Ctx,
    link: LinkId,
    shared: &Shared,
    out_tx: &OutTx,
    next: Option<Result<Frame, CodecError>>,
    batch: &mut Batch<'_>,
    awaiting_verdict: &mut bool,
    progress: &Progress,
) -> Option<CloseReason> {
    let frame = match next {
        None => return Some(CloseReason::PeerClosed),
        Some(Ok(f)) => {
            // A heartbeat says the peer is there, not that the link is
            // getting anywhere.
            if f.kind != frame::HEARTBEAT {
                progress.frames.fetch_add(1, Ordering::Relaxed);
            }
            f
        }
        Some(Err(CodecError::TooLarge { len, max })) => {
            return Some(CloseReason::FrameTooLarge { len, max })
        }
        Some(Err(CodecError::Empty)) => {
            return Some(CloseReason::Protocol("frame of length 0".into()))
        }
        Some(Err(CodecError::Crypto(reason))) => return Some(CloseReason::Protocol(reason)),
        Some(Err(CodecError::Io(e))) => return Some(read_failed(e)),
    };
    match frame.kind {
        frame::DATA if !*awaiting_verdict => batch.push(frame.payload),
        frame::MSG if !*awaiting_verdict => {
            if let Err(reason) = ctx.messaging.inbound(&shared.peer, frame.payload, out_tx) {
                return Some(CloseReason::Protocol(format!("bad message: {reason}")));
            }
        }
        frame::HEARTBEAT => {}
        frame::ACCEPT | frame::REJECT | frame::CONFLICT if *awaiting_verdict => {
            *awaiting_verdict = false;
            let verdict = match frame.kind {
                frame::ACCEPT => Verdict::Accept,
                frame::REJECT => Verdict::Reject,
                _ => Verdict::Conflict,
            };
            ctx.send(Command::Verdict { link, verdict });
            match verdict {
                Verdict::Reject => return Some(CloseReason::Duplicate),
                Verdict::Conflict => return Some(told_conflict(ctx, shared.remote)),
                Verdict::Accept => {}
            }
        }
        // The follower refuses the link we accepted: a newer node holds
        // our id.
        frame::CONFLICT => return Some(told_conflict(ctx, shared.remote)),
        k if k >= frame::FIRST_OPTIONAL => {
            tracing::trace!(link, kind = k, "ignored an optional frame kind");
        }
        k => {
            return Some(CloseReason::Protocol(format!(
                "unexpected frame kind {k:#04x}{}",
                if *awaiting_verdict {
                    " before the verdict"
                } else {
                    ""
                }
            )))
        }
    }
    None
}

/// Drains the send queue until a close is asked for; then refuses further
/// sends, flushes everything accepted, and shuts the write side down.
/// Returns `Ok` once all of it was handed to the kernel. Sends a heartbeat
/// whenever it has written nothing for `heartbeat`.
async fn write_loop(
    mut w: FrameWriter,
    mut out_rx: OutRx,
    mut state: watch::Receiver<LinkState>,
    heartbeat: Duration,
    progress: &Progress,
) -> std::io::Result<()> {
    let idle = tokio::time::sleep(heartbeat);
    // Made once, not on every turn of the loop: each one subscribes anew.
    let close_asked = closing(&mut state);
    tokio::pin!(idle, close_asked);
    let mut segs = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            n = out_rx.take_all(&mut segs) => {
                if n == 0 {
                    break;
                }
                w.put_encoded(&mut segs).map_err(into_io)?;
                w.flush().await?;
                progress.frames.fetch_add(1, Ordering::Relaxed);
                idle.as_mut().reset(Instant::now() + heartbeat);
            }
            _ = &mut close_asked => break,
            _ = &mut idle => {
                // Senders must not write while this does.
                out_rx.busy();
                w.feed(Frame::control(frame::HEARTBEAT)).map_err(into_io)?;
                w.flush().await?;
                idle.as_mut().reset(Instant::now() + heartbeat);
            }
        }
    }
    // What was accepted before the close still goes out; pushes are whole
    // under the queue's lock, so nothing can arrive after this.
    out_rx.close();
    while out_rx.take_all(&mut segs).await > 0 {
        w.put_encoded(&mut segs).map_err(into_io)?;
        w.flush().await?;
        progress.frames.fetch_add(1, Ordering::Relaxed);
    }
    w.flush().await?;
    // Everything is with the kernel; a failed shutdown (the peer already
    // gone) loses nothing.
    let _ = w.shutdown().await;
    Ok(())
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

/// Encodes a verdict as its control frame.
pub(crate) fn verdict_frame(verdict: Verdict) -> Frame {
    Frame::control(match verdict {
        Verdict::Accept => frame::ACCEPT,
        Verdict::Reject => frame::REJECT,
        Verdict::Conflict => frame::CONFLICT,
    })
}
