//! Every bound and default a user can see, in one place.
//!
//! The defaults are what [`Settings::new`](crate::Settings::new) starts from;
//! the `MAX_` bounds are fixed and keep what a peer (or a flood of bogus
//! input) can make a node hold in check.

use std::time::Duration;

/// Default largest user frame: 8 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 * 1024 * 1024;
/// Default time a new link has to complete its handshake: 3 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default depth of each link's send and receive queues, in frames.
pub const DEFAULT_QUEUE_LEN: usize = 1024;
/// Default bound on the payload bytes in each of a link's queues: 4 MiB.
pub const DEFAULT_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Default most bytes all of a node's links may hold queued, both ways
/// together: 32 MiB (8 links' full send queues). With the budgets of the
/// tables peers fill ([`MAX_INTEREST_BYTES`], [`MAX_NEIGHBOR_BYTES`]), what
/// peers can make a node hold stays under 64 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
/// Default most connections others may hold open to a node (in their
/// handshake or linked): 1024, as many as the peers it tracks.
pub const DEFAULT_MAX_LINKS: usize = 1024;
/// Default most connections from one network (an IPv4 /24, an IPv6 /64)
/// a node holds: 256, a whole IPv4 /24.
pub const DEFAULT_MAX_LINKS_PER_PREFIX: usize = 256;
/// Default heartbeat interval: an idle link sends a heartbeat this often.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default silence after which a link is dropped: 3 s.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default time a link's receive queue may stay full with none of its
/// messages read before the link is closed as unread: 30 s (see
/// [`Settings::unread_timeout`](crate::Settings::unread_timeout)).
pub const DEFAULT_UNREAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest node id, in hex digits: one DNS label, since the id is also
/// the mDNS instance name and part of the node's mDNS host name.
pub const MAX_ID_LEN: usize = 63;
/// Most peers advertised over mDNS that a node tracks at once: a flood of
/// bogus records cannot grow its state (or its dialing) past this. Peers over
/// the limit are ignored with [`Error::TooManyPeers`](crate::Error::TooManyPeers).
pub const MAX_PEERS: usize = 1024;
/// Most unread errors each [`Service::on_error`](crate::Service::on_error)
/// stream holds; more are counted and reported as one
/// [`Error::Missed`](crate::Error::Missed).
pub const MAX_QUEUED_ERRORS: usize = 1024;
/// Most unread changes each member stream
/// ([`Service::on_member`](crate::Service::on_member),
/// [`Service::watch_members`](crate::Service::watch_members)) holds past the
/// members it starts with: four for each of [`MAX_PEERS`] members. A peer
/// makes one change for each new version of its metadata it sends, so a
/// stream that falls this far behind is ended instead
/// ([`Events::fell_behind`](crate::Events::fell_behind)): watch again.
pub const MAX_QUEUED_MEMBER_EVENTS: usize = 4 * MAX_PEERS;
/// Longest event, topic or procedure name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Longest metadata key, in bytes (see [`Meta`](crate::Meta)).
pub const MAX_META_KEY_LEN: usize = 32;
/// Longest metadata value, in bytes: with the key (at most
/// [`MAX_META_KEY_LEN`]), its `m.` prefix and the `=`, a pair fits one
/// DNS-SD TXT string (at most 255 bytes).
pub const MAX_META_VALUE_LEN: usize = 220;
/// Most metadata pairs a node carries.
pub const MAX_META_PAIRS: usize = 16;
/// Most bytes of metadata, keys and values together.
pub const MAX_META_BYTES: usize = 1024;
/// How long after `listen` a node is young, by default (see
/// [`Settings::hold_early`](crate::Settings::hold_early)): until then, a request for a
/// procedure that no stream serves, and an event or message that no stream
/// takes, is held for the first stream made for it (see
/// [`Service::procedure`](crate::Service::procedure)), and a call is
/// answered [`NoProcedure`](crate::CallError::NoProcedure) only when no
/// stream came by then. Long enough for a stream made after
/// [`Service::ready`](crate::Service::ready) (about 1 s); short, because a
/// call to a name this node never serves waits that long for its
/// `NoProcedure` while the node is young.
pub const HOLD_EARLY: Duration = Duration::from_secs(2);
/// Most items held for streams not made yet while the node is young.
/// Messages past it (or [`MAX_HELD_BYTES`]) are dropped, and counted in
/// [`Stats::early_dropped`](crate::Stats::early_dropped); calls past it
/// are answered [`NoProcedure`](crate::CallError::NoProcedure).
pub const MAX_HELD: usize = 1024;
/// Most bytes of data held for streams not made yet while the node is young.
pub const MAX_HELD_BYTES: usize = 4 * 1024 * 1024;
/// How long a member whose link was lost (a timeout, a lost link) is held
/// before it is reported as left, by default: a link of the same run within
/// that time is one [`Relinked`](crate::MemberChange::Relinked) instead of a
/// leave and a rejoin. It delays every such `Left` by as much (see
/// [`Settings::leave_grace`](crate::Settings::leave_grace)).
pub const LEAVE_GRACE: Duration = Duration::from_secs(2);
/// How long a member that left stays in [`Service::members`](crate::Service::members),
/// with the reason it left.
pub const LEFT_KEPT: Duration = Duration::from_secs(60);
/// Most members that left kept at once (the oldest go first).
pub const MAX_LEFT: usize = 64;
/// With mDNS, how long a node heard of only through a peer may take to
/// link before it is shown as a relayed member: it may be on this LAN and
/// about to link, and a relayed moment would cost two events.
pub const RELAYED_GRACE: Duration = Duration::from_secs(3);

/// Most bytes one other node's topics may take in a node's table of who
/// subscribes to what (accounted: each name twice, as a set and as the
/// announcement given to new peers, plus a fixed share per topic and per
/// node). A larger set is refused with
/// [`Error::OverBudget`](crate::Error::OverBudget): about 5,000 topics of
/// 50 bytes fit.
pub const MAX_INTEREST_BYTES_PER_NODE: usize = 1024 * 1024;
/// Most bytes all other nodes' topics may take together. Past it, a peer
/// this node is linked to takes the room of nodes it only hears of through
/// relays (least recently changed first); any other newcomer is refused
/// with [`Error::OverBudget`](crate::Error::OverBudget).
pub const MAX_INTEREST_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes the peers' lists of their own links may take together (8
/// bytes per id, plus a share per peer; one peer's list holds at most
/// [`MAX_PEERS`] ids). A list over either bound is refused with
/// [`Error::OverBudget`](crate::Error::OverBudget), and the node relays for
/// that peer as if it had no list (more copies, each dropped as a
/// duplicate).
pub const MAX_NEIGHBOR_BYTES: usize = 8 * 1024 * 1024;
/// How far ahead of a node's clock a flooded message's number or a
/// subscription version may be. Both start at the origin's start time in
/// nanoseconds and grow by one per message or change, so they never pass
/// the origin's clock; one further ahead is refused with
/// [`Error::Refused`](crate::Error::Refused), so no message can make an
/// origin's later ones look old. Nodes whose clocks differ by more than this
/// refuse each other's relayed and flooded messages.
pub const MAX_AHEAD: Duration = Duration::from_secs(3600);
/// How long a node that is not a member (linked, or known to the
/// membership view) must have been silent before the numbers seen from it
/// are forgotten to make room for another such node's, once a node
/// remembers the numbers of as many nodes as it can (4096). Made-up nodes
/// fill that table for at most this long; until then, flooded messages of
/// nodes not yet in the view (heard through a relay before their record)
/// are refused. Long against a node's quiet spells, so a node's numbers
/// outlast its silences while it is heard from.
pub const NUMBERS_KEPT: Duration = Duration::from_secs(600);
