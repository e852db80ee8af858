//! What a node counts: the snapshot [`Service::stats`](crate::Service::stats)
//! returns ([`Stats`], a [`LinkStats`] per link), and the node-wide
//! [`Counters`] its layers add to as things happen.
//!
//! Counting is a relaxed atomic add where the event already is (a dial, a
//! refused handshake, a duplicate message); per-link figures live with the
//! link (its frames in and out, its queues) and are read when the snapshot
//! is taken. Nothing here waits or allocates on the paths it counts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::id::NodeId;

/// A snapshot of what a node has counted since it was created.
///
/// ```no_run
/// # fn demo(service: tcpnet::Service) {
/// let stats = service.stats();
/// for l in &stats.links {
///     println!(
///         "{}: {} frames in, {} out, {} queued to send, srtt {:?}",
///         l.peer, l.frames_in, l.frames_out, l.send_queue, l.srtt
///     );
/// }
/// println!("{} dials, {} redials", stats.dials, stats.redials);
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Each open link, in the order they opened.
    pub links: Vec<LinkStats>,
    /// Connection attempts started (a dial to several addresses of one
    /// node counts once).
    pub dials: u64,
    /// Of those, the ones made again after a link broke or a dial failed.
    pub redials: u64,
    /// Handshakes that failed, and connections refused at once, by cause.
    pub handshake_failures: HandshakeFailures,
    /// Messages from linked peers dropped unread, by cause.
    pub refused_messages: RefusedMessages,
    /// mDNS records of this cluster's service type that were refused as
    /// malformed ([`Error::BadRecord`](crate::Error::BadRecord)).
    pub bad_mdns_records: u64,
    /// Copies of flooded messages (broadcasts, events, publications) this
    /// node passed on to other links, where the mesh is not full.
    pub relayed: u64,
    /// Copies not passed on because the next link's send queue was full.
    pub relay_dropped: u64,
    /// Flooded messages that arrived again by another path and were
    /// dropped as copies.
    pub deduplicated: u64,
    /// Dials to where peers said a member listens that nothing answered
    /// ([`Error::Hint`](crate::Error::Hint)).
    pub unanswered_hints: u64,
    /// Links closed because their peer took nothing of what this node had
    /// to send it for the heartbeat timeout
    /// ([`CloseReason::Stalled`](crate::CloseReason::Stalled)).
    pub stalled_links: u64,
    /// Links closed because this node's application took none of their
    /// messages, their receive queue full, for the
    /// [`unread_timeout`](crate::Settings::unread_timeout)
    /// ([`CloseReason::Unread`](crate::CloseReason::Unread)).
    pub unread_links: u64,
    /// Errors that error streams too slow to read them did not get (each
    /// such stream is told with an [`Error::Missed`](crate::Error::Missed)).
    pub missed_errors: u64,
    /// Messages and events that came while the node was young (see
    /// [`HOLD_EARLY`](crate::limits::HOLD_EARLY)) for a stream not made
    /// yet, and that no stream got: past what is held
    /// ([`MAX_HELD`](crate::limits::MAX_HELD) items,
    /// [`MAX_HELD_BYTES`](crate::limits::MAX_HELD_BYTES)), or still held
    /// when the node grew up. (Calls are answered
    /// [`NoProcedure`](crate::CallError::NoProcedure) instead.)
    pub early_dropped: u64,
    /// Payload bytes the node's links hold now, in all their queues and in
    /// the writes under way, and the room of the spare buffers their send
    /// queues keep to encode into and their read sides keep to read large
    /// frames into, as counted against
    /// [`Settings::max_queued_bytes`](crate::Settings::max_queued_bytes)
    /// (each queue's last part under 16 KiB is not counted).
    pub queued_bytes: usize,
}

/// Failed handshakes, and connections refused before one, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeFailures {
    /// No hello and handshake within the handshake timeout.
    pub timeout: u64,
    /// A tcpnet node this one does not link with: another cluster or id
    /// length, or a cluster secret on one end only.
    pub refused: u64,
    /// A tcpnet node of another protocol version.
    pub version: u64,
    /// Not a tcpnet node: a first frame that is no hello, a hello that does
    /// not decode, the connection lost during the hellos (an end of stream
    /// or a reset alike: the peer hung up), or (without a secret) a Noise
    /// handshake that failed.
    pub malformed: u64,
    /// With a cluster secret, the Noise handshake failed (another secret,
    /// a dialer naming a key this node does not hold, or a key removed
    /// while the handshake ran).
    pub secret: u64,
    /// The peer's proof of identity failed: its signature of its handshake
    /// key is wrong, or the key it proved is not that of the id its hello
    /// claims, or not that of the node dialed.
    pub identity: u64,
    /// Refused or dropped for lack of a handshake slot (see
    /// [`limits`](crate::limits)).
    pub no_slot: u64,
    /// Closed at once for a cap on links
    /// ([`Error::TooManyLinks`](crate::Error::TooManyLinks)).
    pub too_many_links: u64,
}

/// Messages from linked peers dropped unread, by cause; each is also an
/// error event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusedMessages {
    /// In another node's name, without that node's signature or with a
    /// signature that is not its
    /// ([`Error::Refused`](crate::Error::Refused)).
    pub signature: u64,
    /// Numbered further ahead of this node's clock than
    /// [`MAX_AHEAD`](crate::limits::MAX_AHEAD)
    /// ([`Error::Refused`](crate::Error::Refused)).
    pub ahead: u64,
    /// Over a byte budget: topics or lists of links
    /// ([`Error::OverBudget`](crate::Error::OverBudget)).
    pub over_budget: u64,
    /// Flooded in the name of a node that is not a member, once the table
    /// of message numbers holds all the origins it may, each heard from
    /// within [`NUMBERS_KEPT`](crate::limits::NUMBERS_KEPT) (a peer making
    /// up keys to push members' numbers out, or replaying a node that left)
    /// ([`Error::Refused`](crate::Error::Refused)).
    pub unknown: u64,
}

/// One open link's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// The peer.
    pub peer: NodeId,
    /// The peer's end of the link.
    pub remote: SocketAddr,
    /// Frames received: every kind (user messages, messaging envelopes,
    /// heartbeats, the verdict), as decoded.
    pub frames_in: u64,
    /// Their bytes: length prefix, kind and payload (before sealing, on a
    /// link with a cluster secret).
    pub bytes_in: u64,
    /// Frames sent (handed to the send queue, or written at once), every
    /// kind; a frame still queued when the link fails counts, as accepted.
    pub frames_out: u64,
    /// Their bytes, as for `bytes_in`.
    pub bytes_out: u64,
    /// Frames waiting in the send queue now ...
    pub send_queue: usize,
    /// ... and their payload bytes.
    pub send_queue_bytes: usize,
    /// Messages received and not yet read by the application.
    pub receive_queue: usize,
    /// Answers the node gives by itself (a call's refusal, a pong) dropped
    /// because the send queue was full and enough of them waited beside it.
    pub dropped: u64,
    /// The smoothed round-trip time (see
    /// [`LinkInfo::srtt`](crate::LinkInfo::srtt)).
    pub srtt: Option<Duration>,
    /// Its variation.
    pub rttvar: Option<Duration>,
}

/// Why a handshake failed, for [`HandshakeFailures`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Timeout,
    Refused,
    Malformed,
    Secret,
    NoSlot,
    Version,
    Identity,
    TooManyLinks,
}

/// Why a peer's message was dropped, for [`RefusedMessages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Signature,
    Ahead,
    OverBudget,
    Unknown,
}

/// The bytes all the links of one node hold (queued each way, or in a
/// write under way, and the room of their send queues' spare encoding
/// buffers and of the buffers their read sides keep for large frames),
/// against the node's cap: a queue takes an item only if
/// the node is under its cap, or if the queue is empty (so that every link
/// still moves, one frame at a time, while others hold the node's room).
///
/// A queue charges what it holds in whole [`SLAB`]s, so the shared count is
/// written when a queue crosses a slab's bound, not on every push and take:
/// an uncontended lock per frame stays the only cost of a push.
#[derive(Debug)]
pub(crate) struct Queued {
    used: AtomicUsize,
    max: AtomicUsize,
}

/// The unit in which a queue charges its bytes to the node's cap.
pub(crate) const SLAB: usize = 16 * 1024;

impl Default for Queued {
    fn default() -> Self {
        Queued {
            used: AtomicUsize::new(0),
            max: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Queued {
    /// Sets the cap.
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// True if `weight` more bytes keep the node within its cap.
    pub(crate) fn has_room(&self, weight: usize) -> bool {
        let used = self.used.load(Ordering::Relaxed);
        used.saturating_add(weight) <= self.max.load(Ordering::Relaxed)
    }

    /// True if the node has used three quarters of its cap or more: what
    /// its queues keep for later (spare buffers) then goes, so that the
    /// cap is left to what is queued.
    pub(crate) fn short(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        self.room() < max / 4
    }

    /// True if `weight` more bytes kept for later (spare buffers) leave
    /// the node a quarter of its cap: what is kept never makes the node
    /// short (see [`short`](Self::short)) by itself.
    pub(crate) fn can_keep(&self, weight: usize) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        self.room() >= weight.saturating_add(max / 4)
    }

    /// Bytes the node may still take before it reaches its cap.
    pub(crate) fn room(&self) -> usize {
        let used = self.used.load(Ordering::Relaxed);
        self.max.load(Ordering::Relaxed).saturating_sub(used)
    }

    /// Changes what one holder is charged from `was` to what `bytes` count
    /// (whole slabs); returns the new charge.
    pub(crate) fn recharge(&self, was: usize, bytes: usize) -> usize {
        let now = bytes - bytes % SLAB;
        if now > was {
            self.used.fetch_add(now - was, Ordering::Relaxed);
        } else if now < was {
            self.used.fetch_sub(was - now, Ordering::Relaxed);
        }
        now
    }

    /// Bytes charged now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// The node-wide counters, shared by the layers that add to them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// What the links hold, against the node's cap.
    pub(crate) queued: std::sync::Arc<Queued>,
    dials: AtomicU64,
    redials: AtomicU64,
    handshakes: [AtomicU64; 8],
    refused: [AtomicU64; 4],
    bad_mdns_records: AtomicU64,
    relayed: AtomicU64,
    relay_dropped: AtomicU64,
    deduplicated: AtomicU64,
    stalled_links: AtomicU64,
    unanswered_hints: AtomicU64,
    unread_links: AtomicU64,
    missed_errors: AtomicU64,
    early_dropped: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Counters {
    pub(crate) fn dial(&self, redial: bool) {
        add(&self.dials, 1);
        if redial {
            add(&self.redials, 1);
        }
    }

    pub(crate) fn handshake_failed(&self, why: Failure) {
        add(&self.handshakes[why as usize], 1);
    }

    pub(crate) fn refused_message(&self, why: Refused) {
        add(&self.refused[why as usize], 1);
    }

    pub(crate) fn bad_mdns_record(&self) {
        add(&self.bad_mdns_records, 1);
    }

    pub(crate) fn relayed(&self) {
        add(&self.relayed, 1);
    }

    pub(crate) fn relay_dropped(&self) {
        add(&self.relay_dropped, 1);
    }

    pub(crate) fn deduplicated(&self) {
        add(&self.deduplicated, 1);
    }

    pub(crate) fn stalled_link(&self) {
        add(&self.stalled_links, 1);
    }

    pub(crate) fn unanswered_hint(&self) {
        add(&self.unanswered_hints, 1);
    }

    pub(crate) fn unread_link(&self) {
        add(&self.unread_links, 1);
    }

    pub(crate) fn missed_errors(&self, n: u64) {
        add(&self.missed_errors, n);
    }

    pub(crate) fn early_dropped(&self, n: u64) {
        add(&self.early_dropped, n);
    }

    /// The node-wide figures, with `links` for the per-link ones.
    pub(crate) fn snapshot(&self, links: Vec<LinkStats>) -> Stats {
        let h = |why: Failure| get(&self.handshakes[why as usize]);
        let r = |why: Refused| get(&self.refused[why as usize]);
        Stats {
            links,
            dials: get(&self.dials),
            redials: get(&self.redials),
            handshake_failures: HandshakeFailures {
                timeout: h(Failure::Timeout),
                refused: h(Failure::Refused),
                malformed: h(Failure::Malformed),
                secret: h(Failure::Secret),
                no_slot: h(Failure::NoSlot),
                version: h(Failure::Version),
                identity: h(Failure::Identity),
                too_many_links: h(Failure::TooManyLinks),
            },
            refused_messages: RefusedMessages {
                signature: r(Refused::Signature),
                ahead: r(Refused::Ahead),
                over_budget: r(Refused::OverBudget),
                unknown: r(Refused::Unknown),
            },
            bad_mdns_records: get(&self.bad_mdns_records),
            relayed: get(&self.relayed),
            relay_dropped: get(&self.relay_dropped),
            deduplicated: get(&self.deduplicated),
            stalled_links: get(&self.stalled_links),
            unanswered_hints: get(&self.unanswered_hints),
            unread_links: get(&self.unread_links),
            missed_errors: get(&self.missed_errors),
            early_dropped: get(&self.early_dropped),
            queued_bytes: self.queued.used(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_by_cause() {
        let c = Counters::default();
        c.dial(false);
        c.dial(true);
        c.handshake_failed(Failure::Secret);
        c.handshake_failed(Failure::Secret);
        c.handshake_failed(Failure::NoSlot);
        c.handshake_failed(Failure::TooManyLinks);
        c.refused_message(Refused::Ahead);
        c.relayed();
        c.relayed();
        c.relay_dropped();
        let s = c.snapshot(vec![]);
        assert_eq!(
            (s.dials, s.redials, s.relayed, s.relay_dropped),
            (2, 1, 2, 1)
        );
        assert_eq!(s.handshake_failures.secret, 2);
        assert_eq!(s.handshake_failures.no_slot, 1);
        assert_eq!(s.handshake_failures.timeout, 0);
        assert_eq!(s.handshake_failures.too_many_links, 1);
        assert_eq!(
            s.refused_messages,
            RefusedMessages {
                ahead: 1,
                ..Default::default()
            }
        );
    }
}
