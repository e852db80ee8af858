//! Why things fail: the crate's [`Error`], and why a link closed
//! ([`CloseReason`]).
//!
//! Every cause has its own variant so callers can match on it, and every
//! message names what was wrong (the argument, the remote address, the peer).
//! The type is `Clone` because the same error can be handed to every
//! subscriber of [`Service::on_error`](crate::Service::on_error).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Result alias used throughout tcpnet.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tcpnet.
///
/// Errors returned from a call (`listen`, `send`, …) are about that call.
/// Errors delivered on [`Service::on_error`](crate::Service::on_error) are
/// non-fatal: the service keeps running and keeps linking other peers.
///
/// ```
/// match tcpnet::tcpnet("no_underscores") {
///     Err(tcpnet::Error::InvalidName { name, reason }) => {
///         assert_eq!(name, "no_underscores");
///         println!("{reason}");
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cluster name is empty, longer than 63 bytes, or has a character
    /// other than ASCII letters, digits and `-`.
    #[error("invalid cluster name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A node id given in the settings is empty, too long, or not hex.
    #[error("invalid node id {id:?}: {reason}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A setting other than the name or the id is out of range.
    #[error("invalid setting {setting}: {reason}")]
    InvalidSetting {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The listen address is not an IP address and could not be resolved as a host name.
    #[error("invalid listen address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Binding the listening socket failed (port in use, address not on this host, …).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The socket address we tried to bind.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// `listen` was called on a service that is already listening.
    #[error("the service is already listening")]
    AlreadyListening,

    /// The service (or the link) is closed: `listen` after `close`, or a send
    /// on a link that has closed.
    #[error("closed")]
    Closed,

    /// The mDNS daemon failed or could not announce the node.
    #[error("mDNS: {0}")]
    Mdns(String),

    /// A record of the tcpnet service type could not be used (missing or bad
    /// TXT fields, no address, port 0, a bad instance name).
    #[error("bad mDNS record {instance:?}: {reason}")]
    BadRecord {
        /// The mDNS instance full name.
        instance: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Connecting to a discovered peer failed.
    #[error("cannot dial peer {peer} at {addrs:?}: {reason}")]
    Dial {
        /// The peer's id.
        peer: String,
        /// The addresses tried.
        addrs: Vec<SocketAddr>,
        /// The last failure.
        reason: String,
    },

    /// The opening handshake with a remote address failed: it is not a
    /// tcpnet node, speaks another version, belongs to another cluster, uses
    /// ids of another length, or took too long.
    #[error("handshake with {remote} failed: {reason}")]
    Handshake {
        /// The remote socket address.
        remote: SocketAddr,
        /// Why it failed.
        reason: String,
    },

    /// Two live nodes claim one id: a node at `remote` claims ours, or the
    /// peer at `remote` holds a link from a newer node with the id we link
    /// it as (ours, or a peer's). The older node does not redial.
    #[error("node id {id} is used by two live nodes (seen on the link with {remote})")]
    IdConflict {
        /// The remote socket address.
        remote: SocketAddr,
        /// The id both claim.
        id: String,
    },

    /// mDNS advertised more peers than a node tracks at once
    /// ([`MAX_PEERS`](crate::limits::MAX_PEERS)); this one was ignored.
    #[error("ignored peer {peer}: already tracking the most peers, {max}")]
    TooManyPeers {
        /// The peer's id.
        peer: String,
        /// The limit.
        max: usize,
    },

    /// This error stream fell behind: `count` error events were dropped
    /// (each subscriber holds at most [`MAX_QUEUED_ERRORS`](crate::limits::MAX_QUEUED_ERRORS)
    /// unread errors, so a flood of bad input cannot grow memory).
    #[error("{count} error events dropped: the subscriber fell behind")]
    Missed {
        /// How many were dropped.
        count: u64,
    },

    /// `send` was given a frame larger than the maximum frame length; it is
    /// refused and the link stays open. (A peer that sends one has its link
    /// closed, reported as [`Error::Protocol`] with
    /// [`CloseReason::FrameTooLarge`].)
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A peer broke the wire protocol after the handshake; the link was closed.
    #[error("protocol error from peer {peer} at {remote}: {reason}")]
    Protocol {
        /// The peer's id.
        peer: String,
        /// The remote socket address.
        remote: SocketAddr,
        /// What it sent.
        reason: String,
    },

    /// An I/O error on an established link; the link was closed.
    #[error("link to peer {peer} at {remote} failed: {reason}")]
    Link {
        /// The peer's id.
        peer: String,
        /// The remote socket address.
        remote: SocketAddr,
        /// The operating system's error.
        reason: String,
    },

    /// An event, topic or procedure name is empty or longer than 255 bytes.
    #[error("invalid name {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// There is no open link to this peer (a direct message, event or
    /// request names a node this one is not linked to).
    #[error("not linked to peer {peer}")]
    NotLinked {
        /// The peer's id.
        peer: String,
    },

    /// The peer's handler answered the call with an error.
    #[error("{procedure} on {peer} failed: {name}: {message}")]
    Remote {
        /// The peer's id.
        peer: String,
        /// The procedure called.
        procedure: String,
        /// The error's name, as the handler gave it.
        name: String,
        /// The error's message.
        message: String,
    },

    /// The peer has no handler for this procedure.
    #[error("peer {peer} has no procedure {procedure:?}")]
    NoProcedure {
        /// The peer's id.
        peer: String,
        /// The procedure called.
        procedure: String,
    },

    /// The peer's handler dropped the request without answering it.
    #[error("{procedure} on {peer}: the handler dropped the request unanswered")]
    Unanswered {
        /// The peer's id.
        peer: String,
        /// The procedure called.
        procedure: String,
    },

    /// Every handler of the procedure on the peer had a full queue.
    #[error("{procedure} on {peer}: every handler is busy")]
    Busy {
        /// The peer's id.
        peer: String,
        /// The procedure called.
        procedure: String,
    },

    /// No answer came within the call's timeout.
    #[error("{procedure} on {peer}: no answer within {after:?}")]
    Timeout {
        /// The peer's id.
        peer: String,
        /// The procedure called.
        procedure: String,
        /// The timeout.
        after: std::time::Duration,
    },

    /// The link to the peer closed before the answer came.
    #[error("{procedure} on {peer}: the link closed mid-call ({reason})")]
    Interrupted {
        /// The peer's id.
        peer: String,
        /// The procedure called.
        procedure: String,
        /// Why the link closed.
        reason: String,
    },
}

/// Why a link closed.
///
/// ```no_run
/// # async fn demo(conn: tcpnet::Connection) {
/// match conn.closed().await {
///     tcpnet::CloseReason::PeerClosed => println!("{} left", conn.peer_id()),
///     reason if reason.is_failure() => eprintln!("link failed: {reason}"),
///     reason => println!("closed: {reason}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`Connection::close`](crate::Connection::close) was called on this end.
    Local,
    /// This end's service closed.
    Shutdown,
    /// The peer closed the link (or its process ended).
    PeerClosed,
    /// The peer restarted with the same id and its new link replaced this one.
    Replaced,
    /// The pair already had a link; this one was a duplicate. Only links that
    /// never opened close for this reason, so users do not see it.
    Duplicate,
    /// The peer sent a frame larger than the maximum frame length.
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Nothing arrived from the peer (not even a heartbeat) for this long,
    /// while this end was ready to read: the peer is gone or cut off.
    Timeout(std::time::Duration),
    /// The pair's decider or the peer says another live node, newer than
    /// this one's side of the link, uses the same node id. Reported as
    /// [`Error::IdConflict`]; the link is not redialed.
    IdConflict,
    /// The peer broke the wire protocol.
    Protocol(String),
    /// The socket failed.
    Io(String),
}

impl CloseReason {
    /// True for the reasons that mean something went wrong (and may have
    /// lost queued frames): these are also reported on the error stream.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            CloseReason::FrameTooLarge { .. }
                | CloseReason::Protocol(_)
                | CloseReason::Io(_)
                | CloseReason::Timeout(_)
                | CloseReason::IdConflict
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed by this end"),
            CloseReason::Shutdown => f.write_str("service closed"),
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::Replaced => f.write_str("replaced by a newer link to the same peer"),
            CloseReason::Duplicate => f.write_str("duplicate link"),
            CloseReason::FrameTooLarge { len, max } => {
                write!(
                    f,
                    "peer sent a frame of {len} bytes, over the maximum of {max}"
                )
            }
            CloseReason::Timeout(t) => write!(f, "nothing heard from the peer for {t:?}"),
            CloseReason::IdConflict => {
                f.write_str("another live node uses the same node id (id conflict)")
            }
            CloseReason::Protocol(s) => write!(f, "protocol error: {s}"),
            CloseReason::Io(s) => write!(f, "i/o error: {s}"),
        }
    }
}
