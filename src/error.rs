//! Why things fail: the crate's [`Error`], and why a link closed
//! ([`CloseReason`]).
//!
//! Every cause has its own variant so callers can match on it, and every
//! message names what was wrong (the argument, the remote address, the peer).
//! Peers are named by their [`NodeId`]; an error that has an operating
//! system error behind it keeps it as its [`source`](std::error::Error::source)
//! (shared, so that the type is `Clone`: the same error can be handed to
//! every subscriber of [`Service::on_error`](crate::Service::on_error)). The
//! outcomes of a call to a peer's procedure are one variant, [`Error::Call`],
//! with a [`CallError`] saying which.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::id::NodeId;

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

    /// A node id given to [`NodeId::parse`] is empty, too long, or not hex.
    #[error("invalid node id {id:?}: {reason}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A node's key pair could not be read or stored: a key file that is
    /// not a PKCS#8 Ed25519 key, or that cannot be read or created.
    #[error("{key}: {reason}")]
    Key {
        /// The key: its file, or the bytes given.
        key: String,
        /// What is wrong with it.
        reason: String,
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
    #[error("mDNS: {reason}{}", Cause(source))]
    Mdns {
        /// What failed.
        reason: String,
        /// The mDNS library's error, when it gave one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },

    /// A record of the tcpnet service type could not be used (missing or bad
    /// TXT fields, no address, port 0, a bad instance name).
    #[error("bad mDNS record {instance:?}: {reason}")]
    BadRecord {
        /// The mDNS instance full name.
        instance: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Connecting to a peer failed: a discovered one (`peer` is its id) or
    /// a static one (`peer` is `None`).
    #[error("cannot dial {} at {addrs:?}: {source}", DialTarget(peer))]
    Dial {
        /// The peer's id, when it was discovered with one.
        peer: Option<NodeId>,
        /// The addresses tried.
        addrs: Vec<SocketAddr>,
        /// The last failure (`TimedOut` when no answer came in time).
        #[source]
        source: Arc<io::Error>,
    },

    /// Nothing answered where peers said a member listens: a dial of a
    /// member known only from peers' lists of links (hints), to the
    /// addresses they gave, was refused or got no answer in time. The
    /// member left since, or the peers' word is stale or false. (A node
    /// that answers there but fails the handshake is an
    /// [`Error::Handshake`].) A peer's hints stop counting after a few
    /// such failures, so a lying peer causes a few of these at most.
    #[error(
        "cannot dial {member} at {addrs:?}, where {} said it listens: {source}",
        TellerList(tellers)
    )]
    Hint {
        /// The member dialed.
        member: NodeId,
        /// The peers whose hints gave the addresses tried.
        tellers: Vec<NodeId>,
        /// The addresses tried.
        addrs: Vec<SocketAddr>,
        /// The last failure (`TimedOut` when no answer came in time).
        #[source]
        source: Arc<io::Error>,
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
        id: NodeId,
    },

    /// mDNS advertised more peers than a node tracks at once
    /// ([`MAX_PEERS`](crate::limits::MAX_PEERS)); this one was ignored.
    #[error("ignored peer {peer}: already tracking the most peers, {max}")]
    TooManyPeers {
        /// The peer's id.
        peer: NodeId,
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

    /// A peer broke the wire protocol after the handshake; the link was
    /// closed with `reason` ([`CloseReason::Protocol`] or
    /// [`CloseReason::FrameTooLarge`]).
    #[error("protocol error from peer {peer} at {remote}: {reason}")]
    Protocol {
        /// The peer's id.
        peer: NodeId,
        /// The remote socket address.
        remote: SocketAddr,
        /// Why the link closed.
        reason: CloseReason,
    },

    /// An established link failed; it was closed with `reason`
    /// ([`CloseReason::Io`], whose error is this one's source,
    /// [`CloseReason::Timeout`], [`CloseReason::Stalled`] or
    /// [`CloseReason::Unread`]).
    #[error("link to peer {peer} at {remote} failed: {reason}")]
    Link {
        /// The peer's id.
        peer: NodeId,
        /// The remote socket address.
        remote: SocketAddr,
        /// Why the link closed.
        #[source]
        reason: CloseReason,
    },

    /// A connection to this node was closed at once: this node already
    /// holds as many connections from others as
    /// [`Settings::max_links`](crate::Settings::max_links) allows, in all
    /// or from the connection's network.
    #[error("refused a connection from {remote}: already {max} links {scope}")]
    TooManyLinks {
        /// The remote socket address.
        remote: SocketAddr,
        /// The cap it met.
        max: usize,
        /// Which cap: `"in all"` or `"from its network"`.
        scope: &'static str,
    },

    /// A peer passed on a message in another node's name that this node
    /// does not believe, and dropped: without that node's signature,
    /// numbered (or versioned) further ahead of this node's clock than
    /// [`MAX_AHEAD`](crate::limits::MAX_AHEAD), or numbered by a node that
    /// is not a member once this node remembers the numbers of as many
    /// origins as it may (see
    /// [`RefusedMessages`](crate::RefusedMessages)). The link stays open.
    #[error("refused a message from peer {peer} in the name of {origin}: {reason}")]
    Refused {
        /// The peer it came from.
        peer: NodeId,
        /// The node it claims to come from.
        origin: NodeId,
        /// Why it was refused.
        reason: String,
    },

    /// A peer sent more than this node holds for it, and it was dropped:
    /// a node's topics or a peer's list of links over its byte budget (see
    /// [`MAX_INTEREST_BYTES_PER_NODE`](crate::limits::MAX_INTEREST_BYTES_PER_NODE),
    /// [`MAX_INTEREST_BYTES`](crate::limits::MAX_INTEREST_BYTES),
    /// [`MAX_NEIGHBOR_BYTES`](crate::limits::MAX_NEIGHBOR_BYTES)). The link
    /// stays open.
    #[error("refused the {what} of {origin} from peer {peer}: {bytes} bytes, over the budget of {budget}")]
    OverBudget {
        /// The peer it came from.
        peer: NodeId,
        /// The node it is about.
        origin: NodeId,
        /// What the budget is for.
        what: &'static str,
        /// The bytes it would take (in all, for a budget of all).
        bytes: usize,
        /// The budget.
        budget: usize,
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
        peer: NodeId,
    },

    /// A ping ([`Service::ping`](crate::Service::ping)) got no answer
    /// within `after` (the heartbeat timeout): the peer is stalled, or
    /// runs a version that does not answer pings.
    #[error("peer {peer} did not answer a ping within {after:?}")]
    PingTimeout {
        /// The peer's id.
        peer: NodeId,
        /// How long the ping waited.
        after: Duration,
    },

    /// One of this node's message streams was not read fast enough and
    /// dropped `count` messages (its queue held
    /// [`Settings::queue_len`](crate::Settings::queue_len) messages, or
    /// [`Settings::queue_bytes`](crate::Settings::queue_bytes) of data
    /// with no room for the next).
    /// On the error stream at the first drop, then at most once a second
    /// per stream, each report counting the drops since the last (those a
    /// report left out go with the stream's next message after the second
    /// is up). Typed streams (the `typed` feature) also yield it in place.
    /// What was dropped is gone: resynchronize (see the README's guide).
    #[error("{stream} dropped {count} messages: it was not read fast enough")]
    Dropped {
        /// The stream: `messages`, `event NAME` or `topic NAME`.
        stream: String,
        /// How many were dropped.
        count: u64,
    },

    /// A value could not be encoded (a type the format does not support,
    /// such as a map with non-string keys in JSON).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// The value's type.
        what: &'static str,
        /// The encoder's message.
        reason: String,
    },

    /// A message, request or answer from `from` did not decode as the type
    /// expected (nodes running different versions of the application, or
    /// another format). The stream it came on goes on.
    #[error("{name:?} from {from} is not a {what}: {reason}")]
    Decode {
        /// The sender.
        from: NodeId,
        /// The event, topic or procedure name (empty for direct messages).
        name: String,
        /// The type expected.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },

    /// Metadata given to [`Settings::meta`](crate::Settings::meta) or
    /// [`Service::set_meta`](crate::Service::set_meta) breaks a bound; the
    /// [`MetaError`] names which.
    #[error("invalid metadata: {0}")]
    InvalidMeta(#[from] MetaError),

    /// A peer's metadata broke a bound or was malformed, in its mDNS record,
    /// its hello or an update; it was ignored (the peer keeps the metadata it
    /// had, and is otherwise linked and discovered as usual).
    #[error("bad metadata from {peer} in its {carrier}: {error}")]
    BadMeta {
        /// The peer's id.
        peer: NodeId,
        /// What carried it: `"mDNS record"`, `"hello"` or `"update"`.
        carrier: &'static str,
        /// What is wrong with it.
        #[source]
        error: MetaError,
    },

    /// A call to `procedure` on `peer` ([`Service::request`](crate::Service::request))
    /// did not get an answer; `error` says why.
    #[error("{procedure} on {peer}: {error}")]
    Call {
        /// The peer called.
        peer: NodeId,
        /// The procedure called.
        procedure: String,
        /// What happened.
        #[source]
        error: CallError,
    },
}

/// What an error means for whoever watches a node: the caller's mistake,
/// the ordinary coming and going of nodes, a fault worth a look, or input
/// from something that is not a well-behaved node of this cluster. From
/// [`Error::kind`].
///
/// The error stream ([`Service::on_error`](crate::Service::on_error)) can
/// be shown to an operator as it is by leaving out [`Churn`](Self::Churn):
///
/// ```no_run
/// use futures::StreamExt;
/// use tcpnet::ErrorKind;
/// # async fn demo(service: tcpnet::Service) {
/// let mut errors = service.on_error();
/// while let Some(e) = errors.next().await {
///     match e.kind() {
///         ErrorKind::Churn => {} // a peer left, a dead peer's port refused a redial, ...
///         kind => eprintln!("{kind}: {e}"),
///     }
/// }
/// # }
/// ```
///
/// The node logs churn at `debug` level and the other kinds on the error
/// stream at `warn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The call was wrong: a bad name, address or setting, a frame too
    /// large, a value that does not encode, a procedure the peer does not
    /// serve, the handler's own error answer. Returned, never on the error
    /// stream.
    Usage,
    /// Nodes coming and going, which a cluster expects: a link closed
    /// because its peer's process ended (reset by the peer), a redial
    /// refused because nothing listens there any more (the node died and its
    /// record is being verified away), a send to a peer no longer linked, a
    /// call interrupted by a closing link.
    Churn,
    /// Something is wrong here or on the network, and worth a look: no
    /// interface to announce on, a port in use, a peer silent past the
    /// heartbeat timeout or unreachable, two live nodes with one id, a
    /// stream or error subscriber too slow to keep up (messages dropped), a
    /// call that timed out or found every handler busy, a payload that does
    /// not decode (nodes running different versions of the application).
    Fault,
    /// Input that no well-behaved node of this cluster and protocol version
    /// sends: a stranger or a wrong secret at the handshake, garbage, a
    /// malformed or foreign-version mDNS record, a flood of records or
    /// connections, a peer breaking the wire protocol (a tampered record, a
    /// message claiming another sender). An attack, or a misconfigured
    /// neighbour.
    Foreign,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Usage => "usage",
            ErrorKind::Churn => "churn",
            ErrorKind::Fault => "fault",
            ErrorKind::Foreign => "foreign",
        })
    }
}

impl Error {
    /// What this error means: see [`ErrorKind`].
    ///
    /// ```
    /// use tcpnet::{Error, ErrorKind};
    /// let e = tcpnet::tcpnet("no_underscores").unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::Usage);
    /// assert_eq!(Error::Closed.kind(), ErrorKind::Churn);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind::*;
        match self {
            Error::InvalidName { .. }
            | Error::InvalidId { .. }
            | Error::InvalidSetting { .. }
            | Error::Key { .. }
            | Error::InvalidAddress { .. }
            | Error::AlreadyListening
            | Error::FrameTooLarge { .. }
            | Error::BadName { .. }
            | Error::InvalidMeta(_)
            | Error::Encode { .. } => Usage,
            Error::Closed | Error::NotLinked { .. } => Churn,
            Error::Bind { .. } | Error::Mdns { .. } | Error::IdConflict { .. } => Fault,
            Error::Missed { .. } | Error::Dropped { .. } | Error::Decode { .. } => Fault,
            Error::PingTimeout { .. } => Fault,
            // Nothing listens there: the node has gone (and its record is
            // being verified away). Anything else (no route, no answer) is
            // the network's doing.
            Error::Dial { source, .. } | Error::Hint { source, .. }
                if source.kind() == io::ErrorKind::ConnectionRefused =>
            {
                Churn
            }
            Error::Dial { .. } | Error::Hint { .. } => Fault,
            Error::BadRecord { .. }
            | Error::Handshake { .. }
            | Error::TooManyPeers { .. }
            | Error::BadMeta { .. }
            | Error::Refused { .. }
            | Error::TooManyLinks { .. }
            | Error::OverBudget { .. }
            | Error::Protocol { .. } => Foreign,
            Error::Link { reason, .. } => reason.kind(),
            Error::Call { error, .. } => error.kind(),
        }
    }
}

/// How a call to a peer's procedure failed (see [`Error::Call`]).
///
/// ```no_run
/// # use std::time::Duration;
/// use tcpnet::{CallError, Error};
/// # async fn demo(service: tcpnet::Service, peer: tcpnet::NodeId) {
/// match service.request(&peer, "upper", "hi", Duration::from_secs(1)).await {
///     Ok(answer) => println!("{answer:?}"),
///     Err(Error::Call { error: CallError::Remote { name, message }, .. }) => {
///         eprintln!("the handler said {name}: {message}")
///     }
///     Err(Error::Call { error: CallError::Timeout(after), .. }) => {
///         eprintln!("no answer within {after:?}")
///     }
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The peer's handler answered with an error.
    #[error("failed: {name}: {message}")]
    Remote {
        /// The error's name, as the handler gave it.
        name: String,
        /// The error's message.
        message: String,
    },

    /// The peer has no handler for this procedure.
    #[error("no such procedure")]
    NoProcedure,

    /// The peer's handler dropped the request without answering it.
    #[error("the handler dropped the request unanswered")]
    Unanswered,

    /// Every handler of the procedure on the peer had a full queue.
    #[error("every handler is busy")]
    Busy,

    /// No answer came within the call's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),

    /// The link to the peer closed before the answer came, for this reason
    /// ([`CloseReason::Shutdown`] when this node closed).
    #[error("the link closed mid-call ({0})")]
    Interrupted(CloseReason),
}

/// Why metadata was refused (see [`Meta`](crate::Meta) for the bounds).
///
/// ```
/// let settings = tcpnet::Settings::new("lab").meta("Role", "web");
/// match tcpnet::Service::new(settings) {
///     Err(tcpnet::Error::InvalidMeta(tcpnet::MetaError::KeyChars { key, found })) => {
///         assert_eq!((key.as_str(), found), ("Role", 'R'));
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// A key is empty or longer than [`MAX_META_KEY_LEN`](crate::limits::MAX_META_KEY_LEN) bytes.
    #[error("key {key:?} has {} bytes, not 1 to {}", key.len(), crate::limits::MAX_META_KEY_LEN)]
    KeyLength {
        /// The key.
        key: String,
    },
    /// A key has a character other than `a-z`, `0-9`, `.`, `_` and `-`.
    #[error("key {key:?} has {found:?}; keys use only a-z, 0-9, '.', '_' and '-'")]
    KeyChars {
        /// The key.
        key: String,
        /// The first character not allowed.
        found: char,
    },
    /// A value is longer than [`MAX_META_VALUE_LEN`](crate::limits::MAX_META_VALUE_LEN) bytes.
    #[error(
        "the value of {key:?} has {len} bytes, over {}",
        crate::limits::MAX_META_VALUE_LEN
    )]
    ValueLength {
        /// The key.
        key: String,
        /// The value's length.
        len: usize,
    },
    /// More than [`MAX_META_PAIRS`](crate::limits::MAX_META_PAIRS) pairs.
    #[error("{count} pairs, over {}", crate::limits::MAX_META_PAIRS)]
    TooManyPairs {
        /// How many there would be.
        count: usize,
    },
    /// Keys and values together over [`MAX_META_BYTES`](crate::limits::MAX_META_BYTES) bytes.
    #[error(
        "{bytes} bytes of keys and values, over {}",
        crate::limits::MAX_META_BYTES
    )]
    TooLarge {
        /// How many there would be.
        bytes: usize,
    },
    /// Bytes from a peer that are not metadata: cut short, not UTF-8, a key
    /// given twice.
    #[error("malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
}

/// An error's cause, after its own message.
struct Cause<'a>(&'a Option<Arc<dyn std::error::Error + Send + Sync>>);

impl fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(e) => write!(f, ": {e}"),
            None => Ok(()),
        }
    }
}

/// How a dial's target reads in its error.
struct DialTarget<'a>(&'a Option<NodeId>);

impl fmt::Display for DialTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(peer) => write!(f, "peer {peer}"),
            None => f.write_str("static peer"),
        }
    }
}

/// How the peers that gave a hint read in its error.
struct TellerList<'a>(&'a [NodeId]);

impl fmt::Display for TellerList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.len() == 1 { "peer " } else { "peers " })?;
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
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
#[derive(Debug, Clone)]
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
    /// The peer sent a frame larger than the maximum frame length.
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Nothing arrived from the peer (not even a heartbeat) for this long,
    /// while this end was ready to read: the peer is gone or cut off.
    Timeout(Duration),
    /// The peer took nothing of what this end had to send it for this long
    /// (the heartbeat timeout, or longer where this node was starved): no
    /// byte went to the socket while frames waited. A peer that stops
    /// reading, or whose application takes none of its messages, would
    /// otherwise hold its share of the node's room
    /// ([`Settings::max_queued_bytes`](crate::Settings::max_queued_bytes))
    /// and every sender waiting on its link (a broadcast waits on every
    /// link) for as long as its heartbeats keep the link up. Counted in
    /// [`Stats::stalled_links`](crate::Stats::stalled_links).
    Stalled(Duration),
    /// This end's application took none of the peer's messages for this
    /// long ([`Settings::unread_timeout`](crate::Settings::unread_timeout),
    /// 30 s by default, or longer where this node was starved; not the
    /// heartbeat timeout, so that an application slow to handle a message
    /// is not taken for a network failure) while the link's receive queue
    /// was full: the link read nothing more
    /// from its socket meanwhile, so nothing else the peer sent (broadcasts,
    /// replies, member records, its goodbye) got through, and the queue
    /// held its share of the node's room
    /// ([`Settings::max_queued_bytes`](crate::Settings::max_queued_bytes)).
    /// What the queue holds can still be read. An application that does not
    /// read a peer's messages (one that uses messaging only) sees this when
    /// that peer sends it more than a receive queue holds
    /// ([`Settings::queue_len`](crate::Settings::queue_len),
    /// [`Settings::queue_bytes`](crate::Settings::queue_bytes)). Counted in
    /// [`Stats::unread_links`](crate::Stats::unread_links).
    Unread(Duration),
    /// The pair's decider or the peer says another live node, newer than
    /// this one's side of the link, uses the same node id. Reported as
    /// [`Error::IdConflict`]; the link is not redialed.
    IdConflict,
    /// This end removed the cluster key the link was made under
    /// ([`Service::remove_key`](crate::Service::remove_key)); the link is
    /// redialed at once under the primary key.
    KeyRemoved,
    /// The peer broke the wire protocol.
    Protocol(String),
    /// The socket failed (or a close stalled: the peer stopped reading).
    Io(Arc<io::Error>),
}

/// Two `Io` reasons are equal when they are the same error, or errors of
/// the same kind and message.
impl PartialEq for CloseReason {
    fn eq(&self, other: &Self) -> bool {
        use CloseReason::*;
        match (self, other) {
            (Local, Local)
            | (Shutdown, Shutdown)
            | (PeerClosed, PeerClosed)
            | (Replaced, Replaced)
            | (IdConflict, IdConflict)
            | (KeyRemoved, KeyRemoved) => true,
            (FrameTooLarge { len: a, max: m }, FrameTooLarge { len: b, max: n }) => {
                a == b && m == n
            }
            (Timeout(a), Timeout(b)) | (Stalled(a), Stalled(b)) | (Unread(a), Unread(b)) => a == b,
            (Protocol(a), Protocol(b)) => a == b,
            (Io(a), Io(b)) => {
                Arc::ptr_eq(a, b) || (a.kind() == b.kind() && a.to_string() == b.to_string())
            }
            _ => false,
        }
    }
}

impl Eq for CloseReason {}

/// The operating system's error behind an [`Io`](CloseReason::Io) close.
impl std::error::Error for CloseReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CloseReason::Io(e) => Some(&**e),
            _ => None,
        }
    }
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
                | CloseReason::Stalled(_)
                | CloseReason::Unread(_)
                | CloseReason::IdConflict
        )
    }
}

impl CallError {
    /// What this outcome means (see [`ErrorKind`]): the handler's own
    /// error and a missing procedure are the caller's business, an
    /// interruption is churn, the rest are faults.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CallError::Remote { .. } | CallError::NoProcedure => ErrorKind::Usage,
            CallError::Interrupted(_) => ErrorKind::Churn,
            CallError::Unanswered | CallError::Busy | CallError::Timeout(_) => ErrorKind::Fault,
        }
    }
}

impl CloseReason {
    /// What a link closing for this reason means (see [`ErrorKind`]): a
    /// socket reset or cut short by the peer's end is its process ending
    /// (churn); silence past the heartbeat timeout and other socket errors
    /// are faults; a broken protocol is foreign; the orderly reasons
    /// (closed by either end, replaced) are churn.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CloseReason::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof
                ) =>
            {
                ErrorKind::Churn
            }
            CloseReason::Io(_)
            | CloseReason::Timeout(_)
            | CloseReason::Stalled(_)
            | CloseReason::Unread(_)
            | CloseReason::IdConflict => ErrorKind::Fault,
            CloseReason::FrameTooLarge { .. } | CloseReason::Protocol(_) => ErrorKind::Foreign,
            CloseReason::Local
            | CloseReason::Shutdown
            | CloseReason::PeerClosed
            | CloseReason::Replaced
            | CloseReason::KeyRemoved => ErrorKind::Churn,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed by this end"),
            CloseReason::Shutdown => f.write_str("service closed"),
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::Replaced => f.write_str("replaced by a newer link to the same peer"),
            CloseReason::FrameTooLarge { len, max } => {
                write!(
                    f,
                    "peer sent a frame of {len} bytes, over the maximum of {max}"
                )
            }
            CloseReason::Timeout(t) => write!(f, "nothing heard from the peer for {t:?}"),
            CloseReason::Stalled(t) => {
                write!(f, "the peer took nothing of what was sent to it for {t:?}")
            }
            CloseReason::Unread(t) => write!(
                f,
                "this end read none of the peer's messages for {t:?}, its receive queue full"
            ),
            CloseReason::IdConflict => {
                f.write_str("another live node uses the same node id (id conflict)")
            }
            CloseReason::KeyRemoved => f.write_str("its cluster key was removed"),
            CloseReason::Protocol(s) => write!(f, "protocol error: {s}"),
            CloseReason::Io(s) => write!(f, "i/o error: {s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: io::ErrorKind) -> Arc<io::Error> {
        Arc::new(io::Error::new(kind, "test"))
    }

    #[test]
    fn churn_is_told_apart_from_faults_and_foreign_input() {
        let peer = NodeId::parse("0a").unwrap();
        let remote: SocketAddr = "10.99.0.2:7".parse().unwrap();
        let dial = |kind| Error::Dial {
            peer: Some(peer.clone()),
            addrs: vec![remote],
            source: io(kind),
        };
        let link = |reason| Error::Link {
            peer: peer.clone(),
            remote,
            reason,
        };
        // What a kill -9 of a peer causes on the survivors.
        assert_eq!(
            dial(io::ErrorKind::ConnectionRefused).kind(),
            ErrorKind::Churn
        );
        assert_eq!(
            link(CloseReason::Io(io(io::ErrorKind::ConnectionReset))).kind(),
            ErrorKind::Churn
        );
        // Silence, an unreachable peer: the network's doing.
        assert_eq!(dial(io::ErrorKind::TimedOut).kind(), ErrorKind::Fault);
        // Where peers said a member listens, alike.
        let hint = |kind| Error::Hint {
            member: peer.clone(),
            tellers: vec![NodeId::parse("0b").unwrap()],
            addrs: vec![remote],
            source: io(kind),
        };
        assert_eq!(
            hint(io::ErrorKind::ConnectionRefused).kind(),
            ErrorKind::Churn
        );
        assert_eq!(hint(io::ErrorKind::TimedOut).kind(), ErrorKind::Fault);
        assert_eq!(
            hint(io::ErrorKind::TimedOut).to_string(),
            "cannot dial 0a at [10.99.0.2:7], where peer 0b said it listens: test"
        );
        assert_eq!(
            link(CloseReason::Timeout(Duration::from_secs(3))).kind(),
            ErrorKind::Fault
        );
        // A peer that takes nothing: a fault worth a look, not churn.
        assert_eq!(
            link(CloseReason::Stalled(Duration::from_secs(3))).kind(),
            ErrorKind::Fault
        );
        let handshake = Error::Handshake {
            remote,
            reason: "not a tcpnet node".into(),
        };
        assert_eq!(handshake.kind(), ErrorKind::Foreign);
        let protocol = Error::Protocol {
            peer: peer.clone(),
            remote,
            reason: CloseReason::Protocol("a tampered record".into()),
        };
        assert_eq!(protocol.kind(), ErrorKind::Foreign);
        let call = |error| Error::Call {
            peer: peer.clone(),
            procedure: "p".into(),
            error,
        };
        assert_eq!(call(CallError::NoProcedure).kind(), ErrorKind::Usage);
        assert_eq!(
            call(CallError::Interrupted(CloseReason::PeerClosed)).kind(),
            ErrorKind::Churn
        );
        assert_eq!(call(CallError::Busy).kind(), ErrorKind::Fault);
    }
}
