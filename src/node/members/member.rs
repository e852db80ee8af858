//! What the user sees of the cluster's members: [`Member`], its state, and
//! the [`MemberEvent`]s that say how it changed.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::id::NodeId;
use crate::meta::Meta;

/// A node of the cluster as this node sees it: itself, a peer it is linked
/// to, one it reaches only through others (relayed), or one that left a
/// moment ago.
///
/// ```no_run
/// # fn demo(service: tcpnet::Service) {
/// for m in service.members() {
///     print!("{} {:?} {}", m.id, m.state, m.meta);
///     if let Some(l) = &m.link {
///         print!(
///             " linked for {:?}, {} frames in, {} out, {} queued",
///             l.age, l.frames_in, l.frames_out, l.send_queue
///         );
///     }
///     println!();
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// Its id.
    pub id: NodeId,
    /// Its start time, in nanoseconds since the Unix epoch: a node that
    /// restarts with the same id comes back with a larger one.
    pub incarnation: u64,
    /// Where it listens, as far as this node knows: its own listen
    /// addresses for this node; the address of the link and the port the
    /// peer listens on for a linked peer; none for a relayed one.
    pub addrs: Vec<SocketAddr>,
    /// Its metadata.
    pub meta: Meta,
    /// How this node sees it.
    pub state: MemberState,
    /// The link to it, while linked (or suspect). `None` while its link is
    /// lost and it is held for the leave grace (it keeps the state it had
    /// until it relinks or leaves; see
    /// [`Settings::leave_grace`](crate::Settings::leave_grace)).
    pub link: Option<LinkInfo>,
}

impl Member {
    /// When it started (its incarnation as a time).
    pub fn started(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.incarnation)
    }

    /// True for the member that is this node.
    pub fn is_local(&self) -> bool {
        self.state == MemberState::Local
    }
}

/// How this node sees a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberState {
    /// This node.
    Local,
    /// Linked, and heard from lately.
    Linked,
    /// Linked, but silent for longer than a late heartbeat (the rule is at
    /// [`Settings::heartbeat`](crate::Settings::heartbeat)): it may be gone.
    Suspect,
    /// Not linked to this node, but reached through a node that relays (a
    /// segment joined by a static link).
    Relayed,
    /// Gone, for this reason; kept for a while (see
    /// [`LEFT_KEPT`](crate::limits::LEFT_KEPT)).
    Left(LeaveReason),
}

/// Why a member left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It said goodbye: its service closed.
    Goodbye,
    /// Its link closed without a goodbye (its process died, a socket error,
    /// a protocol error, the link closed by hand), or, for a relayed member,
    /// no path to it is left.
    LinkLost,
    /// It was silent for the whole heartbeat timeout.
    Timeout,
    /// Another live node claims its id.
    IdConflict,
    /// It restarted: a newer incarnation took its place (and joins as a new
    /// member).
    Restarted,
}

impl fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaveReason::Goodbye => "goodbye",
            LeaveReason::LinkLost => "link lost",
            LeaveReason::Timeout => "timeout",
            LeaveReason::IdConflict => "id conflict",
            LeaveReason::Restarted => "restarted",
        })
    }
}

/// The link to a linked member.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkInfo {
    /// The peer's end of the link.
    pub remote: SocketAddr,
    /// This end.
    pub local: SocketAddr,
    /// How long the link has been open.
    pub age: Duration,
    /// The link's smoothed round-trip time (TCP's SRTT, RFC 6298), from
    /// the stamps its heartbeats echo and from pings; `None` before the
    /// first round trip was measured. Heartbeats go only on a direction
    /// with nothing else to send, so on a link busy both ways it is the
    /// last measured while it was idle.
    pub srtt: Option<Duration>,
    /// How much the round-trip time varies (TCP's RTTVAR).
    pub rttvar: Option<Duration>,
    /// Frames received on the link, every kind, as
    /// [`LinkStats::frames_in`](crate::LinkStats::frames_in) counts them:
    /// read from the link when the member is read.
    pub frames_in: u64,
    /// Their bytes, as [`LinkStats::bytes_in`](crate::LinkStats::bytes_in).
    pub bytes_in: u64,
    /// Frames sent on the link, every kind, as
    /// [`LinkStats::frames_out`](crate::LinkStats::frames_out).
    pub frames_out: u64,
    /// Their bytes, as [`LinkStats::bytes_out`](crate::LinkStats::bytes_out).
    pub bytes_out: u64,
    /// Frames waiting in the link's send queue when the member was read.
    pub send_queue: usize,
}

/// A change of one member, from [`Service::on_member`](crate::Service::on_member).
///
/// `seq` numbers the events of one service from 1, without gaps: with
/// [`Service::watch_members`](crate::Service::watch_members) (a snapshot and
/// the events after it, taken together) a consumer can follow the whole
/// view without missing or repeating a change. A stream that falls too far
/// behind ends instead of skipping a change
/// ([`Events::fell_behind`](crate::Events::fell_behind)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberEvent {
    /// This event's number.
    pub seq: u64,
    /// What changed.
    pub change: MemberChange,
    /// The member as it is after the change.
    pub member: Member,
}

/// What changed about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberChange {
    /// It joined the view: linked, or reached through a relay.
    Joined,
    /// Its metadata changed, or the way it is reached (linked or relayed).
    Updated,
    /// Its link went silent (see [`MemberState::Suspect`]).
    Suspect,
    /// A suspect member spoke again.
    Alive,
    /// It left. A member whose link was lost (`Timeout`, `LinkLost`) leaves
    /// only once it has been away for the leave grace
    /// ([`Settings::leave_grace`](crate::Settings::leave_grace), 2 s by
    /// default), so this comes that much after the link closed.
    Left(LeaveReason),
    /// Its link was lost (a timeout, a lost link) and a link to the same run
    /// of it (same incarnation) opened within the leave grace: it did not
    /// leave, and no `Left` was shown, but it was unreachable for `away`,
    /// and what either side sent meanwhile (flooded or direct) was not
    /// delivered: resync with it.
    Relinked {
        /// How long it had no link to this node.
        away: Duration,
    },
    /// It left for a lost link or a timeout (after the leave grace, so a
    /// `Left` was shown), and is linked again, the same run of it (same
    /// incarnation): it was cut off or frozen, not restarted. What either
    /// side sent while it was gone (flooded or direct) was not delivered:
    /// resync with it.
    Rejoined,
}

impl MemberChange {
    /// True for the changes after which the application should resync with
    /// the member: it was unreachable, and missed what was sent meanwhile
    /// ([`Relinked`](Self::Relinked), [`Rejoined`](Self::Rejoined)), or it
    /// is new ([`Joined`](Self::Joined)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tcpnet::MemberChange;
    /// assert!(MemberChange::Relinked { away: Duration::from_millis(40) }.needs_resync());
    /// assert!(!MemberChange::Alive.needs_resync());
    /// ```
    pub fn needs_resync(&self) -> bool {
        matches!(
            self,
            MemberChange::Joined | MemberChange::Relinked { .. } | MemberChange::Rejoined
        )
    }
}

impl fmt::Display for MemberChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberChange::Joined => f.write_str("joined"),
            MemberChange::Updated => f.write_str("updated"),
            MemberChange::Suspect => f.write_str("suspect"),
            MemberChange::Alive => f.write_str("alive"),
            MemberChange::Left(r) => write!(f, "left ({r})"),
            MemberChange::Relinked { away } => write!(f, "relinked after {away:?} away"),
            MemberChange::Rejoined => f.write_str("rejoined"),
        }
    }
}
