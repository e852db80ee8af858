//! Links: one TCP connection to one peer, from the hello to the close.
//!
//! A link's task runs the [`handshake`] (hellos, then the Noise handshake
//! that proves both ends' keys), registers the link with its node, and then
//! [`run`]s it: a reader and a writer in one task, and the close (the read
//! side is shared with the link's handles, which read the socket themselves
//! when nothing is queued: see [`intake`]); one timer
//! per node, the [`watchdog`]'s ticker, watches every link for a silent
//! peer and sends the heartbeats of idle links. What the reader
//! does with each frame is decided by a small pure state machine ([`read`]),
//! so the per-link protocol is unit-tested without sockets.
//!
//! A link knows nothing of the node above it. It reports to it through an
//! [`Owner`] and typed [`Event`]s (handshaken, verdict, closed); it hands
//! messaging envelopes up through [`Inbound`]; and it lists itself in, and
//! takes itself out of, the node's [`OpenLinks`] table. The
//! node answers by queueing frames on the link and asking it to close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::error::{CloseReason, Error};
use crate::id::NodeId;
use crate::stats::{Counters, Failure};
use crate::sync::lock;
use crate::wire::hello::Hello;
use crate::wire::noise::StaticKey;
use crate::wire::record::Record;
use crate::wire::secure::{KeyId, Keyring};
use crate::wire::verdict::Verdict;

pub(crate) mod accepting;
pub(crate) mod aside;
pub(crate) mod batch;
pub(crate) mod connection;
pub(crate) mod counters;
pub(crate) mod handshake;
pub(crate) mod intake;
pub(crate) mod open;
pub(crate) mod outbox;
pub(crate) mod patience;
pub(crate) mod queue;
pub(crate) mod read;
pub(crate) mod run;
pub(crate) mod socket;
pub(crate) mod stall;
pub(crate) mod timing;
pub(crate) mod watchdog;
pub(crate) mod writer;

use connection::Connection;
use open::OpenLinks;
use outbox::OutTx;
use watchdog::Ticker;

/// A link's number, unique within one node.
pub(crate) type LinkId = u64;

/// What a link tells its node.
pub(crate) enum Event {
    /// The hellos and the handshake checked out: the node applies the
    /// one-link rule to the link. `record` is what the peer's hello said of
    /// it (proven by the peer's key: the hellos are the handshake's prologue).
    Handshaken { conn: Connection, record: Record },
    /// The decider's verdict arrived on the link.
    Verdict { link: LinkId, verdict: Verdict },
    /// Nothing came on the link for a while (`silent`, see
    /// `watchdog::silent_after`), or something came after such a silence
    /// (`!silent`).
    Silence { link: LinkId, silent: bool },
    /// The link's task has ended.
    Closed {
        link: LinkId,
        reason: CloseReason,
        /// How long the link's task ran.
        lived: Duration,
    },
}

/// The node a link belongs to, as the link sees it.
pub(crate) trait Owner: Send + Sync {
    /// Reports an event; false once the node has stopped.
    fn report(&self, event: Event) -> bool;
    /// Reports a non-fatal error.
    fn error(&self, e: Error);
    /// The node's metadata for its hello, as it is now: its version and
    /// its encoding.
    fn hello_meta(&self) -> (u64, Bytes);
}

/// Where a link hands the messaging envelopes it receives.
pub(crate) trait Inbound: Send + Sync {
    /// A `MSG` frame from `peer`, on a link whose send queue is `reply`. An
    /// error is a malformed envelope: the link closes with a protocol error.
    fn message(&self, peer: &NodeId, payload: Bytes, reply: &OutTx) -> Result<(), String>;
}

/// A link's settings.
pub(crate) struct Config {
    /// Our hello.
    pub hello: Hello,
    /// Our Noise static key, vouched for by our identity.
    pub static_key: StaticKey,
    /// The cluster's keys, when it has a secret (shared with the service,
    /// which installs and removes keys while links run).
    pub keys: Option<Arc<Mutex<Keyring>>>,
    pub max_frame_len: usize,
    pub handshake_timeout: Duration,
    pub queue_len: usize,
    pub queue_bytes: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// How long a full receive queue may go with none of its messages read.
    pub unread_timeout: Duration,
}

/// What the links of one node share.
pub(crate) struct Links {
    pub config: Config,
    /// The links that are open.
    pub open: Arc<OpenLinks>,
    /// Where messaging envelopes go.
    pub inbound: Arc<dyn Inbound>,
    /// Local addresses of our recent dials, to tell a dial of ours that
    /// reached ourselves.
    pub own_dials: handshake::OwnDials,
    /// The peers whose dials reached us (see [`accepting`]).
    pub accepting: Arc<accepting::Accepting>,
    /// Cancelled when the node closes: stops handshakes in progress (open
    /// links are closed gracefully instead).
    pub cancel: CancellationToken,
    /// The node's counters (failed handshakes, here).
    pub counters: Arc<Counters>,
    /// Watches every open link for a silent peer.
    pub ticker: Ticker,
    next_link: AtomicU64,
}

impl Links {
    pub(crate) fn new(
        config: Config,
        open: Arc<OpenLinks>,
        inbound: Arc<dyn Inbound>,
        cancel: CancellationToken,
        counters: Arc<Counters>,
    ) -> Links {
        Links {
            ticker: Ticker::new(
                config.heartbeat_timeout,
                config.heartbeat_interval,
                config.unread_timeout,
            ),
            config,
            open,
            inbound,
            own_dials: Default::default(),
            accepting: Default::default(),
            cancel,
            counters,
            next_link: AtomicU64::new(1),
        }
    }

    /// This node's id.
    pub(crate) fn id(&self) -> &NodeId {
        &self.config.hello.id
    }

    /// Counts a failed handshake by its cause; returns its error.
    pub(crate) fn failed(&self, why: Failure, e: Error) -> Error {
        self.counters.handshake_failed(why);
        e
    }

    /// False if a link made under `key` must not count any more: its
    /// cluster key has been removed from the keyring (see
    /// [`Service::remove_key`](crate::Service::remove_key)). Always true
    /// without a secret.
    pub(crate) fn key_installed(&self, key: Option<KeyId>) -> bool {
        match (&self.config.keys, key) {
            (Some(ring), Some(key)) => lock(ring).get(key).is_some(),
            _ => true,
        }
    }

    fn next_link_id(&self) -> LinkId {
        self.next_link.fetch_add(1, Ordering::Relaxed)
    }
}

/// IPv4 peers of a dual-stack socket show as plain IPv4 addresses.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
