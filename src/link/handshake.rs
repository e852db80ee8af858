//! A new link's handshake: the hellos, then the Noise handshake that proves
//! each end's identity (and, with a cluster secret, that both hold it); on
//! success the link is registered with its node.
//!
//! Both ends send their hello, read the other's (bounded in size and time),
//! and check it (see [`crate::wire::hello`]). A dial of ours that reached
//! ourselves is dropped quietly. Then the dialer leads the three Noise
//! messages (see [`crate::wire::noise`]); each end checks that the key the
//! other proved is the one of the id its hello claims, and a dialer that
//! expected another node gives up before its last message. With a secret,
//! the acceptor's first sealed record confirms the keys to the dialer.
//! Anything refused is an error event naming the remote address.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Error;
use crate::id::NodeId;
use crate::link::accepting::Accepted;
use crate::link::connection::{Connection, Inbound, Link, LinkState};
use crate::link::outbox::{OutRx, OutTx};
use crate::link::patience::patient_while;
use crate::link::timing::Timing;
use crate::link::{canonical, queue, Event, Links, Owner};
use crate::stats::Failure;
use crate::sync::lock;
use crate::wire::frame::{self, Frame, FrameCodec};
use crate::wire::hello::{Hello, Refusal, MAX_HELLO};
use crate::wire::noise::{self, prologue, Bad, Handshake, Mode, Proven};
use crate::wire::record::Record;
use crate::wire::secure::{KeyId, Keys, Suite};
use crate::wire::verdict::decides;

/// While the handshake slots are crowded, an accepted connection that sends
/// nothing for this part of the handshake time is dropped.
const SILENT_PART: u32 = 4;

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
    /// An accepted link counts its peer as accepting until it ends.
    pub accepted: Option<Accepted>,
}

/// Exchanges and checks hellos, then runs the Noise handshake, bounded by
/// the handshake timeout counted from its last step (see
/// [`crate::link::patience`]) and by the node closing; reports failures as
/// error events. A dial to a known peer names it in `expect`: another node
/// answering is a failure. With `hurry` (the handshake slots are crowded), a
/// peer that says nothing for a quarter of the handshake time is dropped
/// then. On success the link is registered with the node
/// ([`Event::Handshaken`]).
pub(crate) async fn handshake(
    links: &Links,
    owner: &dyn Owner,
    mut stream: TcpStream,
    remote: SocketAddr,
    role: Role,
    expect: Option<&NodeId>,
    hurry: bool,
) -> Option<Handshaken> {
    let cfg = &links.config;
    let remote = canonical(remote);
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
    // Our hello, with our metadata as it is now, encoded once: the Noise
    // handshake binds these very bytes.
    let mut ours = cfg.hello.clone();
    (ours.meta_version, ours.meta) = owner.hello_meta();
    // With a secret, the key this dial uses is the primary key now.
    ours.key = cfg.keys.as_ref().map(|ring| lock(ring).primary().id());
    let ours = Ours {
        raw: ours.encode(),
        hello: ours,
    };
    // Messages received: each starts the handshake's time over.
    let steps = AtomicU32::new(0);
    let greeted = tokio::select! {
        _ = links.cancel.cancelled() => return None,
        r = greet(links, &ours, &mut stream, remote, role, expect, hurry, &steps) => r,
        // Counted so that neither this node's own starvation nor a peer
        // slowed down by the same load fails it.
        _ = patient_while(cfg.handshake_timeout, &steps) => Err(Some(links.failed(Failure::Timeout, Error::Handshake {
            remote,
            reason: format!(
                "no hello and handshake within {:?} (of its last step)",
                cfg.handshake_timeout
            ),
        }))),
    };
    let (hello, keys, key, accepted) = match greeted {
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
    let node = Some(links.counters.queued.clone());
    let (out_tx, out_rx) = queue::within(cfg.queue_len, cfg.queue_bytes, node.clone());
    let (in_tx, in_rx) = queue::within(cfg.queue_len, cfg.queue_bytes, node);
    let link = Arc::new(Link {
        id,
        peer: hello.id.clone(),
        remote,
        local: canonical(stream.local_addr().unwrap_or(remote)),
        listens: hello.port,
        max_frame_len: cfg.max_frame_len,
        state: watch::channel(LinkState::Up).0,
        inbound: Inbound::new(in_rx),
        up: AtomicBool::new(true),
        timing: Mutex::new(Timing::new(std::time::Instant::now())),
        counters: Default::default(),
        key,
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
        accepted,
    })
}

/// Our hello for one handshake, and its encoding.
struct Ours {
    hello: Hello,
    raw: Bytes,
}

/// The hellos, then the Noise handshake bound to both (see
/// [`crate::wire::noise`]); the checked hello and, with a secret, the
/// link's keys; an accepted connection's peer counted as accepting (see
/// [`crate::link::accepting`]) from its hello on. `steps` counts the
/// messages received whole.
#[allow(clippy::too_many_arguments)]
async fn greet(
    links: &Links,
    ours: &Ours,
    stream: &mut TcpStream,
    remote: SocketAddr,
    role: Role,
    expect: Option<&NodeId>,
    hurry: bool,
    steps: &AtomicU32,
) -> Result<(Hello, Option<Keys>, Option<KeyId>, Option<Accepted>), Option<Error>> {
    let step = || {
        steps.fetch_add(1, Ordering::Relaxed);
    };
    let cfg = &links.config;
    // What fails from here on is the Noise handshake: with a secret, most
    // likely another secret.
    let why = if cfg.keys.is_some() {
        Failure::Secret
    } else {
        Failure::Malformed
    };
    let refuse = |reason: String| Some(links.failed(why, Error::Handshake { remote, reason }));
    let (hello, theirs) = checked_hello(links, ours, stream, remote, role, hurry).await?;
    step();
    let accepted = (role == Role::Acceptor).then(|| links.accepting.enter(&hello.id));
    // Only a dial that reached the node it meant to: one that reached
    // another node goes on, to fail on that node's proof.
    if expect == Some(&hello.id) && moot(links, role, &hello.id) {
        tracing::debug!(%remote, peer = %hello.id, "dial moot: the decider's dial reached us");
        return Err(None);
    }
    let dialer = role == Role::Dialer;
    let prologue = if dialer {
        prologue(&ours.raw, &theirs)
    } else {
        prologue(&theirs, &ours.raw)
    };
    // The handshake uses the dialer's key, which its hello names: found in
    // our keyring by that name, without trying any.
    let dialers = if dialer { ours.hello.key } else { hello.key };
    let psk = match &cfg.keys {
        None => None,
        Some(ring) => match dialers.and_then(|id| lock(ring).get(id).cloned()) {
            Some(psk) => Some(psk),
            None => {
                return Err(refuse(format!(
                    "the dialer's cluster key {} is not in our keyring (another secret?)",
                    dialers.map_or("none".into(), |k| k.to_string()),
                )))
            }
        },
    };
    let mode = match &psk {
        None => Mode::Open,
        Some(psk) => Mode::Secret {
            psk,
            suite: Suite::agreed(cfg.hello.aes, hello.aes),
        },
    };
    let mut hs = Handshake::new(&mode, dialer, &prologue, &cfg.static_key).map_err(refuse)?;
    let check = |proven: &Proven| check_proven(links, &hello, proven, expect, remote);
    // A message that opens with a wrong proof of identity in it.
    let bad = |e: Bad| match e {
        Bad::Message(reason) => refuse(reason),
        Bad::Proof(reason) => {
            Some(links.failed(Failure::Identity, Error::Handshake { remote, reason }))
        }
    };
    if dialer {
        write_noise(stream, &hs.first().map_err(refuse)?)
            .await
            .map_err(refuse)?;
        let msg = read_noise(stream).await.map_err(|e| match &mode {
            // An acceptor refuses a dialer of another secret by hanging up.
            Mode::Secret { .. } if e.ends_with(HUNG_UP) => {
                refuse(format!("{e} (it holds another cluster secret?)"))
            }
            _ => refuse(e),
        })?;
        step();
        // Checked before our last message: a node that is not the one its
        // hello (or our record) names gets nothing more from us.
        check(&hs.read_second(&msg).map_err(bad)?)?;
        write_noise(stream, &hs.third().map_err(refuse)?)
            .await
            .map_err(refuse)?;
    } else {
        let msg = match read_noise(stream).await {
            Ok(msg) => msg,
            // A follower hangs up here when our dial reached it first.
            Err(e) if e.ends_with(HUNG_UP) && decides(links.id(), &hello.id) => {
                tracing::debug!(%remote, "the dialer hung up after the hellos");
                return Err(None);
            }
            Err(e) => return Err(refuse(e)),
        };
        step();
        hs.read_first(&msg).map_err(refuse)?;
        write_noise(stream, &hs.second().map_err(refuse)?)
            .await
            .map_err(refuse)?;
        let msg = match read_noise(stream).await {
            Ok(msg) => msg,
            // A dialer that hangs up on our proof wanted another node (its
            // record was stale, or named a node it is not): its business.
            Err(e) if e.ends_with(HUNG_UP) => {
                tracing::debug!(%remote, "the dialer hung up on our proof");
                return Err(None);
            }
            Err(e) => return Err(refuse(e)),
        };
        check(&hs.read_third(&msg).map_err(bad)?)?;
    }
    let mut keys = hs.finish().map_err(refuse)?;
    // A key removed while the handshake ran links nothing: the peer gets
    // no confirmation, and redials under a key still installed.
    let key = dialers.filter(|_| psk.is_some());
    if !links.key_installed(key) {
        return Err(refuse(format!(
            "the cluster key {} was removed during the handshake",
            key.map_or("none".into(), |k| k.to_string()),
        )));
    }
    if let Some(k) = &mut keys {
        // The dialer learns the acceptor holds the secret from the
        // acceptor's first record; nothing counts before it.
        if dialer {
            confirm_read(stream, k).await.map_err(refuse)?;
        } else {
            confirm_write(stream, k).await.map_err(refuse)?;
        }
    }
    Ok((hello, keys, key, accepted))
}

/// True if our dial to `peer`, past the hellos, is moot: we are not the
/// pair's decider, and the decider's own dial has reached us past its
/// hello (see [`crate::link::accepting`]). The decider's dial goes on, so
/// the pair keeps one of the two; as the hellos are not yet proven, a
/// stranger claiming the decider's id can hold our dial back only while
/// its connection lasts, and not the decider's.
pub(crate) fn moot(links: &Links, role: Role, peer: &NodeId) -> bool {
    role == Role::Dialer && !decides(links.id(), peer) && links.accepting.from(peer)
}

/// Checks the identity the peer proved against what its hello claims and
/// whom we dialed.
fn check_proven(
    links: &Links,
    hello: &Hello,
    proven: &Proven,
    expect: Option<&NodeId>,
    remote: SocketAddr,
) -> Result<(), Option<Error>> {
    let refuse =
        |reason: String| Some(links.failed(Failure::Identity, Error::Handshake { remote, reason }));
    if &proven.id == links.id() {
        // Our own key, held by another live node.
        return Err(Some(Error::IdConflict {
            remote,
            id: proven.id.clone(),
        }));
    }
    if proven.id != hello.id {
        return Err(refuse(format!(
            "its hello claims id {}, and it proved the key of {}",
            hello.id, proven.id
        )));
    }
    match expect {
        Some(want) if want != &proven.id => {
            Err(refuse(format!("dialed {want}, and {} answered", proven.id)))
        }
        _ => Ok(()),
    }
}

async fn write_noise(stream: &mut TcpStream, msg: &[u8]) -> Result<(), String> {
    let mut out = BytesMut::with_capacity(msg.len() + 5);
    tokio_util::codec::Encoder::encode(
        &mut FrameCodec {
            max: noise::MAX_MSG,
        },
        Frame {
            kind: frame::NOISE,
            payload: Bytes::copy_from_slice(msg),
        },
        &mut out,
    )
    .map_err(|e| e.to_string())?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("writing the handshake: {e}"))
}

/// How [`read_noise`]'s error ends when the peer closed before the frame.
const HUNG_UP: &str = "the peer hung up";

/// The peer closed the connection: at the end of its stream, or with a
/// reset, which is how its kernel closes a socket that still holds unread
/// bytes (an acceptor refusing our hello may not have read our first
/// handshake message yet); a write then finds the pipe broken.
fn hung_up(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
    )
}

/// What failed, `doing` what: a hang-up (an end of stream or a reset,
/// whichever the peer's kernel sent) reads the same either way.
fn io_failed(doing: &str, e: &std::io::Error) -> String {
    match hung_up(e) {
        true => format!("{doing}: {HUNG_UP}"),
        false => format!("{doing}: {e}"),
    }
}

/// Reads one handshake frame exactly, refused from its length if it is
/// over [`noise::MAX_MSG`].
async fn read_noise(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let f = frame::read_one(stream, noise::MAX_MSG)
        .await
        .map_err(|e| match e {
            Ok(len) => format!(
                "handshake frame length {len}, over the most a handshake message takes ({})",
                noise::MAX_MSG + 1
            ),
            Err(e) => io_failed("reading the handshake", &e),
        })?;
    if f.kind != frame::NOISE {
        return Err(format!(
            "expected a handshake message, got frame kind {:#04x}",
            f.kind
        ));
    }
    Ok(f.payload.to_vec())
}

/// The acceptor's key confirmation: record 0, an empty `NOISE` frame.
async fn confirm_write(stream: &mut TcpStream, keys: &mut Keys) -> Result<(), String> {
    let mut out = BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut keys.encoder(usize::MAX),
        Frame::control(frame::NOISE),
        &mut out,
    )
    .map_err(|e| e.to_string())?;
    keys.sent_one();
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("writing the key confirmation: {e}"))
}

/// Reads the acceptor's key confirmation exactly (nothing after it may be
/// consumed here).
async fn confirm_read(stream: &mut TcpStream, keys: &mut Keys) -> Result<(), String> {
    let refused = "the peer holds another cluster secret (or the hellos were altered)";
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| format!("reading the key confirmation: {e} ({refused}?)"))?;
    let mut record = BytesMut::zeroed(2 + u16::from_be_bytes(len) as usize);
    record[..2].copy_from_slice(&len);
    stream
        .read_exact(&mut record[2..])
        .await
        .map_err(|e| format!("reading the key confirmation: {e}"))?;
    let mut dec = keys.decoder(usize::MAX, Arc::default());
    match tokio_util::codec::Decoder::decode(&mut dec, &mut record) {
        Ok(Some(f)) if f.kind == frame::NOISE && f.payload.is_empty() => {}
        Ok(_) => return Err("bad key confirmation".into()),
        Err(_) => return Err(refused.into()),
    }
    keys.received_one();
    Ok(())
}

/// The peer's hello, if it is one we link with. `Err(None)`: drop the link
/// quietly (we reached ourselves); `Err(Some(e))`: refuse it with `e`.
async fn checked_hello(
    links: &Links,
    ours: &Ours,
    stream: &mut TcpStream,
    remote: SocketAddr,
    role: Role,
    hurry: bool,
) -> Result<(Hello, Vec<u8>), Option<Error>> {
    let refuse = |why: Failure| {
        move |reason: String| Some(links.failed(why, Error::Handshake { remote, reason }))
    };
    let silent = hurry.then(|| links.config.handshake_timeout / SILENT_PART);
    let raw = exchange_hello(stream, &ours.raw, silent)
        .await
        .map_err(refuse(Failure::Malformed))?;
    let hello = Hello::decode(&raw).map_err(|reason| {
        let why = match Hello::of_another_version(&raw) {
            true => Failure::Version,
            false => Failure::Malformed,
        };
        refuse(why)(reason)
    })?;
    let own_dial = || lock(&links.own_dials.0).remove(&remote).is_some();
    match hello.check(&ours.hello) {
        Ok(()) => {}
        // Our own id and incarnation: a dial of ours that reached us (a
        // record of ours, or a stale one, pointed here), unless it comes
        // from a socket that is not one of our dials: then someone echoed
        // our hello back, a claim to our id like any other, which the
        // handshake settles.
        Err(Refusal::SelfLink) if role == Role::Dialer || own_dial() => {
            tracing::debug!(%remote, "dropped a link to ourselves");
            return Err(None);
        }
        Err(Refusal::SelfLink) => {}
        Err(Refusal::Mismatch(reason)) => return Err(refuse(Failure::Refused)(reason)),
    }
    Ok((hello, raw))
}

/// Writes our hello and reads the peer's: one frame of at most
/// [`MAX_HELLO`] bytes, read exactly, so nothing after it is consumed.
/// Returns the peer's hello payload, not yet decoded. Both ends send their
/// hello at once, so a peer that sends nothing within `silent`, if given, is
/// dropped then, not when the handshake time runs out.
async fn exchange_hello(
    stream: &mut TcpStream,
    ours: &Bytes,
    silent: Option<Duration>,
) -> Result<Vec<u8>, String> {
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
        .map_err(|e| io_failed("writing hello", &e))?;

    if let Some(silent) = silent {
        if tokio::time::timeout(silent, stream.peek(&mut [0u8; 1]))
            .await
            .is_err()
        {
            return Err(format!("not a word within {silent:?}"));
        }
    }
    let first = frame::read_one(stream, MAX_HELLO)
        .await
        .map_err(|e| match e {
            Ok(len) => format!(
                "not a tcpnet node (first frame length {len}, a hello is at most {})",
                MAX_HELLO + 1
            ),
            Err(e) => io_failed("reading hello", &e),
        })?;
    if first.kind != frame::HELLO {
        return Err(format!(
            "not a tcpnet node (first frame kind {:#04x})",
            first.kind
        ));
    }
    Ok(first.payload.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A peer that reads our hello, then ends its stream (`reset` false)
    /// or resets the connection: our hello reader says the same of both,
    /// that the peer hung up (and the node counts both alike).
    async fn hello_read_when_the_peer(reset: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut ours = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut theirs, _) = listener.accept().await.unwrap();
        let hello = Bytes::from_static(b"a hello");
        let peer = tokio::spawn(async move {
            // Our hello, read whole: nothing is left unread when it closes.
            let mut buf = [0u8; 4 + 1 + 7];
            theirs.read_exact(&mut buf).await.unwrap();
            if reset {
                theirs.set_zero_linger().unwrap();
            }
            drop(theirs);
        });
        let e = exchange_hello(&mut ours, &hello, None)
            .await
            .expect_err("no hello came");
        peer.await.unwrap();
        e
    }

    #[tokio::test]
    async fn a_reset_during_the_hello_is_a_hang_up_as_an_end_of_stream_is() {
        let eof = hello_read_when_the_peer(false).await;
        let reset = hello_read_when_the_peer(true).await;
        assert_eq!(eof, format!("reading hello: {HUNG_UP}"));
        assert_eq!(reset, eof);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!io_failed("dialing", &refused).ends_with(HUNG_UP));
    }
}
