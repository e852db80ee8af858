//! A new link's handshake: the hellos, then, with a cluster secret, the
//! secret's handshake; on success the link is registered with its node.
//!
//! Both ends send their hello, read the other's (bounded in size and time),
//! and check it (see [`crate::wire::hello`]). A dial of ours that reached
//! ourselves is dropped quietly; anything else refused is an error event.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Error;
use crate::link::connection::{Connection, Inbound, Link, LinkState};
use crate::link::outbox::{OutRx, OutTx};
use crate::link::patience::patient_timeout;
use crate::link::timing::Timing;
use crate::link::{canonical, queue, Event, Links, Owner};
use crate::stats::Failure;
use crate::sync::lock;
use crate::wire::frame::{self, Frame, FrameCodec};
use crate::wire::hello::{Hello, Refusal, MAX_HELLO};
use crate::wire::record::Record;
use crate::wire::secure::{self, Keys};
use crate::wire::verdict::decides;

/// Which end of the TCP connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Dialer,
    Acceptor,
}

/// Local addresses of our recent dials, and when they were made: a
/// connection accepted from one of them is a dial of ours that reached us.
#[derive(Default)]
pub(crate) struct OwnDials(Mutex<HashMap<SocketAddr, Instant>>);

/// A link whose hellos checked out, registered with its node: ready to run.
pub(crate) struct Handshaken {
    pub link: Arc<Link>,
    pub stream: TcpStream,
    pub out_rx: OutRx,
    /// For the messaging layer's answers on this link.
    pub out_tx: OutTx,
    pub in_tx: queue::Sender<VecDeque<Bytes>>,
    pub keys: Option<Keys>,
    pub awaiting_verdict: bool,
    /// The handshake's deadline, which the verdict must also meet.
    pub deadline: Instant,
}

/// Exchanges and checks hellos, bounded by the handshake timeout and by the
/// node closing; reports failures as error events. On success the link is
/// registered with the node ([`Event::Handshaken`]).
pub(crate) async fn handshake(
    links: &Links,
    owner: &dyn Owner,
    mut stream: TcpStream,
    remote: SocketAddr,
    role: Role,
) -> Option<Handshaken> {
    let cfg = &links.config;
    let remote = canonical(remote);
    let deadline = Instant::now() + cfg.handshake_timeout;
    if role == Role::Dialer {
        // A connection accepted from our own dial's address is this very
        // dial reaching ourselves (see `checked_hello`). The accepting side
        // may look after this side is done, so the entry outlives the
        // handshake; old ones are swept here.
        if let Ok(local) = stream.local_addr() {
            let now = Instant::now();
            let mut own = lock(&links.own_dials.0);
            own.retain(|_, at| now.duration_since(*at) < 2 * cfg.handshake_timeout);
            own.insert(canonical(local), now);
        }
    }
    let _ = stream.set_nodelay(true);
    // Our hello, with our metadata as it is now, encoded once: the secret's
    // handshake binds these very bytes.
    let mut ours = cfg.hello.clone();
    (ours.meta_version, ours.meta) = owner.hello_meta();
    let ours = Ours {
        raw: ours.encode(),
        hello: ours,
    };
    let greeted = tokio::select! {
        _ = links.cancel.cancelled() => return None,
        r = greet(links, &ours, &mut stream, remote, role) => r,
        // Counted so that this node's own starvation does not fail it.
        _ = patient_timeout(cfg.handshake_timeout) => Err(Some(links.failed(Failure::Timeout, Error::Handshake {
            remote,
            reason: if cfg.psk.is_some() {
                format!("no hello and secret handshake within {:?}", cfg.handshake_timeout)
            } else {
                format!("no hello within {:?}", cfg.handshake_timeout)
            },
        }))),
    };
    let (hello, keys) = match greeted {
        // The node started closing while the hellos went back and forth.
        Ok(_) if links.cancel.is_cancelled() => return None,
        Ok(h) => h,
        Err(Some(e)) => {
            owner.error(e);
            return None;
        }
        Err(None) => return None,
    };

    let id = links.next_link_id();
    let (out_tx, out_rx) = queue::channel(cfg.queue_len, cfg.queue_bytes);
    let (in_tx, in_rx) = queue::channel(cfg.queue_len, cfg.queue_bytes);
    let link = Arc::new(Link {
        id,
        peer: hello.id.clone(),
        remote,
        local: canonical(stream.local_addr().unwrap_or(remote)),
        max_frame_len: cfg.max_frame_len,
        state: watch::channel(LinkState::Up).0,
        inbound: Inbound::new(in_rx),
        up: AtomicBool::new(true),
        timing: Mutex::new(Timing::new(std::time::Instant::now())),
        counters: Default::default(),
    });
    let conn = Connection::new(link.clone(), out_tx.clone());
    let (record, bad) = Record::of_hello(&hello);
    if let Some(error) = bad {
        owner.error(Error::BadMeta {
            peer: hello.id.clone(),
            carrier: "hello",
            error,
        });
    }
    let registered = owner.report(Event::Handshaken { conn, record });
    if !registered {
        return None; // the node has closed
    }
    tracing::debug!(link = id, peer = %hello.id, %remote, "hello exchanged");
    Some(Handshaken {
        link,
        stream,
        out_rx,
        out_tx,
        in_tx,
        keys,
        awaiting_verdict: !decides(links.id(), &hello.id),
        deadline,
    })
}

/// Our hello for one handshake, and its encoding.
struct Ours {
    hello: Hello,
    raw: Bytes,
}

/// The hellos, then, with a cluster secret, the secret handshake (see
/// [`crate::wire::secure`]) bound to both hellos.
async fn greet(
    links: &Links,
    ours: &Ours,
    stream: &mut TcpStream,
    remote: SocketAddr,
    role: Role,
) -> Result<(Hello, Option<Keys>), Option<Error>> {
    let cfg = &links.config;
    let (hello, theirs) = checked_hello(links, ours, stream, remote, role).await?;
    let Some(psk) = &cfg.psk else {
        return Ok((hello, None));
    };
    let dialer = role == Role::Dialer;
    // Both hellos, the dialer's first, each after its length.
    let (first, second): (&[u8], &[u8]) = if dialer {
        (&ours.raw, &theirs)
    } else {
        (&theirs, &ours.raw)
    };
    let mut prologue = Vec::with_capacity(4 + first.len() + second.len());
    for h in [first, second] {
        prologue.extend_from_slice(&(h.len() as u16).to_be_bytes());
        prologue.extend_from_slice(h);
    }
    let suite = secure::Suite::agreed(cfg.hello.aes, hello.aes);
    match secure::handshake(stream, psk, suite, dialer, &prologue).await {
        Ok(keys) => Ok((hello, Some(keys))),
        Err(reason) => Err(Some(
            links.failed(Failure::Secret, Error::Handshake { remote, reason }),
        )),
    }
}

/// The peer's hello, if it is one we link with. `Err(None)`: drop the link
/// quietly (we reached ourselves); `Err(Some(e))`: refuse it with `e`.
async fn checked_hello(
    links: &Links,
    ours: &Ours,
    stream: &mut TcpStream,
    remote: SocketAddr,
    role: Role,
) -> Result<(Hello, Vec<u8>), Option<Error>> {
    let refuse = |why: Failure| {
        move |reason: String| Some(links.failed(why, Error::Handshake { remote, reason }))
    };
    let raw = exchange_hello(stream, &ours.raw)
        .await
        .map_err(refuse(Failure::Malformed))?;
    let hello = Hello::decode(&raw).map_err(refuse(Failure::Malformed))?;
    let own_dial = || lock(&links.own_dials.0).remove(&remote).is_some();
    match hello.check(&ours.hello) {
        Ok(()) => {}
        // Our own id and incarnation: a dial of ours that reached us (a
        // record of ours, or a stale one, pointed here), unless it comes
        // from a socket that is not one of our dials: then someone echoed
        // our hello back, which is a claim to our id like any other.
        Err(Refusal::SelfLink) if role == Role::Dialer || own_dial() => {
            tracing::debug!(%remote, "dropped a link to ourselves");
            return Err(None);
        }
        Err(Refusal::SelfLink) | Err(Refusal::IdConflict) => {
            let id = hello.id.clone();
            return Err(Some(Error::IdConflict { remote, id }));
        }
        Err(Refusal::Mismatch(reason)) => return Err(refuse(Failure::Refused)(reason)),
    }
    Ok((hello, raw))
}

/// Writes our hello and reads the peer's: one frame of at most
/// [`MAX_HELLO`] bytes, read exactly, so nothing after it is consumed.
/// Returns the peer's hello payload, not yet decoded.
async fn exchange_hello(stream: &mut TcpStream, ours: &Bytes) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    let payload = ours.clone();
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
