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

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::actor::{Command, Ctx};
use crate::connection::{request_close, CloseReason, Connection, LinkState, Shared};
use crate::error::Error;
use crate::frame::{self, CodecError, Frame, FrameCodec};
use crate::hello::{Hello, Refusal, MAX_HELLO};
use crate::id::NodeId;
use crate::mesh::{decides, LinkId, Verdict};

/// How long a closing link may go without moving a frame, while it flushes
/// and waits for the peer's end of stream, before its socket is dropped.
pub(crate) const CLOSE_IDLE: Duration = Duration::from_millis(1500);
/// Most frames written between two flushes.
const BATCH: usize = 256;

/// Runs an accepted TCP link from hello to close.
pub(crate) async fn accepted(ctx: Arc<Ctx>, stream: TcpStream, remote: SocketAddr) {
    if let Some(link) = handshake(&ctx, stream, remote).await {
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
pub(crate) async fn dialed(ctx: Arc<Ctx>, stream: TcpStream, remote: SocketAddr, peer: NodeId) {
    let link = handshake(&ctx, stream, remote).await;
    if let Some(l) = link.as_ref().filter(|l| l.shared.peer != peer) {
        tracing::debug!(dialed = %peer, answered = %l.shared.peer, %remote, "a different node answered");
    }
    ctx.send(Command::DialEnded { peer });
    if let Some(link) = link {
        link.run(&ctx).await;
    }
}

/// A link whose hellos checked out, registered with the actor.
struct Link {
    id: LinkId,
    shared: Arc<Shared>,
    stream: TcpStream,
    out_rx: mpsc::Receiver<Frame>,
    in_tx: mpsc::Sender<Bytes>,
    awaiting_verdict: bool,
    deadline: Instant,
}

/// Exchanges and checks hellos, bounded by the handshake timeout and by the
/// service closing; reports failures as error events. On success the link is
/// registered with the actor ([`Command::Handshaken`]).
async fn handshake(ctx: &Ctx, mut stream: TcpStream, remote: SocketAddr) -> Option<Link> {
    let remote = canonical(remote);
    let deadline = Instant::now() + ctx.handshake_timeout;
    let _ = stream.set_nodelay(true);
    let hello = tokio::select! {
        _ = ctx.cancel.cancelled() => return None,
        r = tokio::time::timeout_at(deadline, checked_hello(ctx, &mut stream, remote)) => {
            r.unwrap_or_else(|_| Err(Some(Error::Handshake {
                remote,
                reason: format!("no hello within {:?}", ctx.handshake_timeout),
            })))
        }
    };
    let hello = match hello {
        Ok(h) => h,
        Err(Some(e)) => {
            ctx.error(e);
            return None;
        }
        Err(None) => return None,
    };

    let id = ctx.next_link_id();
    let (out_tx, out_rx) = mpsc::channel(ctx.queue_len);
    let (in_tx, in_rx) = mpsc::channel(ctx.queue_len);
    let shared = Arc::new(Shared {
        peer: hello.id.clone(),
        remote,
        local: canonical(stream.local_addr().unwrap_or(remote)),
        max_frame_len: ctx.max_frame_len,
        state: watch::channel(LinkState::Up).0,
        inbound: Mutex::new(in_rx),
    });
    let conn = Connection::new(shared.clone(), out_tx);
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
        in_tx,
        awaiting_verdict: !decides(ctx.id(), &hello.id),
        deadline,
    })
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
) -> Result<Hello, Option<Error>> {
    let refuse = |reason: String| Some(Error::Handshake { remote, reason });
    let hello = exchange_hello(stream, &ctx.hello).await.map_err(refuse)?;
    match hello.check(&ctx.hello) {
        Ok(()) => {}
        Err(Refusal::SelfLink) => {
            tracing::debug!(%remote, "dropped a link to ourselves");
            return Err(None);
        }
        Err(Refusal::IdConflict) => {
            let id = hello.id.to_string();
            return Err(Some(Error::IdConflict { remote, id }));
        }
        Err(Refusal::Mismatch(reason)) => return Err(refuse(reason)),
    }
    Ok(hello)
}

impl Link {
    /// Runs the link until it closes, then records why and tells the actor.
    async fn run(self, ctx: &Ctx) {
        let Link {
            id,
            shared,
            stream,
            out_rx,
            in_tx,
            awaiting_verdict,
            deadline,
        } = self;
        let (rd, wr) = stream.into_split();
        let reason = drive(
            ctx,
            id,
            &shared,
            rd,
            wr,
            out_rx,
            &in_tx,
            awaiting_verdict,
            deadline,
        )
        .await;
        ctx.hub().finished(id, &shared, reason.clone());
        // The receive stream ends only now, so a reader that sees it end
        // finds the reason already set.
        drop(in_tx);
        ctx.send(Command::LinkClosed { link: id, reason });
    }
}

/// Writes our hello and reads the peer's: one frame of at most
/// [`MAX_HELLO`] bytes, read exactly, so nothing after it is consumed.
async fn exchange_hello(stream: &mut TcpStream, ours: &Hello) -> Result<Hello, String> {
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

    let mut len = [0u8; frame::LEN_BYTES];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| format!("reading hello: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len - 1 > MAX_HELLO {
        return Err(format!(
            "not a tcpnet node (first frame length {len}, a hello is at most {})",
            MAX_HELLO + 1
        ));
    }
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("reading hello: {e}"))?;
    if body[0] != frame::HELLO {
        return Err(format!(
            "not a tcpnet node (first frame kind {:#04x})",
            body[0]
        ));
    }
    Hello::decode(&body[1..])
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    ctx: &Ctx,
    link: LinkId,
    shared: &Shared,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    out_rx: mpsc::Receiver<Frame>,
    in_tx: &mpsc::Sender<Bytes>,
    awaiting_verdict: bool,
    deadline: Instant,
) -> CloseReason {
    let codec = FrameCodec {
        max: ctx.max_frame_len,
    };
    // Frames moved either way; a closing link that stops moving any is stuck.
    let progress = AtomicU64::new(0);
    let reader = read_loop(
        ctx,
        link,
        FramedRead::new(rd, codec.clone()),
        in_tx,
        awaiting_verdict,
        deadline,
        &progress,
    );
    let writer = write_loop(
        FramedWrite::new(wr, codec),
        out_rx,
        shared.state.subscribe(),
        &progress,
    );
    let mut state = shared.state.subscribe();
    let stalled = async {
        closing(&mut state).await;
        loop {
            let seen = progress.load(Ordering::Relaxed);
            tokio::time::sleep(CLOSE_IDLE).await;
            if progress.load(Ordering::Relaxed) == seen {
                return;
            }
        }
    };
    tokio::pin!(reader, writer, stalled);
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
                    request_close(shared, CloseReason::PeerClosed);
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

async fn read_loop(
    ctx: &Ctx,
    link: LinkId,
    mut frames: FramedRead<OwnedReadHalf, FrameCodec>,
    in_tx: &mpsc::Sender<Bytes>,
    mut awaiting_verdict: bool,
    deadline: Instant,
    progress: &AtomicU64,
) -> CloseReason {
    loop {
        let next = if awaiting_verdict {
            match tokio::time::timeout_at(deadline, frames.next()).await {
                Ok(n) => n,
                Err(_) => {
                    return CloseReason::Protocol("no verdict within the handshake timeout".into())
                }
            }
        } else {
            frames.next().await
        };
        let frame = match next {
            None => return CloseReason::PeerClosed,
            Some(Ok(f)) => {
                progress.fetch_add(1, Ordering::Relaxed);
                f
            }
            Some(Err(CodecError::TooLarge { len, max })) => {
                return CloseReason::FrameTooLarge { len, max }
            }
            Some(Err(CodecError::Empty)) => {
                return CloseReason::Protocol("frame of length 0".into())
            }
            Some(Err(CodecError::Io(e))) => return read_failed(e),
        };
        match frame.kind {
            frame::DATA if !awaiting_verdict => {
                // Waits while the receive queue is full: the socket is not
                // read meanwhile, so TCP pushes back on the sender. (The
                // actor holds a handle, so the queue outlives the link.)
                let _ = in_tx.send(frame.payload).await;
            }
            frame::ACCEPT | frame::REJECT if awaiting_verdict => {
                awaiting_verdict = false;
                let verdict = if frame.kind == frame::ACCEPT {
                    Verdict::Accept
                } else {
                    Verdict::Reject
                };
                ctx.send(Command::Verdict { link, verdict });
                if verdict == Verdict::Reject {
                    return CloseReason::Duplicate;
                }
            }
            k if k >= frame::FIRST_OPTIONAL => {
                tracing::trace!(link, kind = k, "ignored an optional frame kind");
            }
            k => {
                return CloseReason::Protocol(format!(
                    "unexpected frame kind {k:#04x}{}",
                    if awaiting_verdict {
                        " before the verdict"
                    } else {
                        ""
                    }
                ))
            }
        }
    }
}

/// Drains the send queue until a close is asked for; then refuses further
/// sends, flushes everything accepted, and shuts the write side down.
/// Returns `Ok` once all of it was handed to the kernel.
async fn write_loop(
    mut sink: FramedWrite<OwnedWriteHalf, FrameCodec>,
    mut out_rx: mpsc::Receiver<Frame>,
    mut state: watch::Receiver<LinkState>,
    progress: &AtomicU64,
) -> std::io::Result<()> {
    loop {
        tokio::select! {
            biased;
            frame = out_rx.recv() => {
                let Some(frame) = frame else { break };
                sink.feed(frame).await?;
                for _ in 1..BATCH {
                    match out_rx.try_recv() {
                        Ok(f) => sink.feed(f).await?,
                        Err(_) => break,
                    }
                }
                sink.flush().await?;
                progress.fetch_add(1, Ordering::Relaxed);
            }
            _ = closing(&mut state) => break,
        }
    }
    // `recv` until `None`, not `try_recv` until empty: a sender that had
    // already reserved a slot may still deliver after `close`.
    out_rx.close();
    while let Some(frame) = out_rx.recv().await {
        sink.feed(frame).await?;
        progress.fetch_add(1, Ordering::Relaxed);
    }
    sink.flush().await?;
    // Everything is with the kernel; a failed shutdown (the peer already
    // gone) loses nothing.
    let _ = sink.get_mut().shutdown().await;
    Ok(())
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
    })
}
