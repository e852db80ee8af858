//! The membership view as a pure state machine: links opening and closing,
//! links going silent and speaking again, member records (metadata, a
//! goodbye) in, the changes they make out. No sockets, no clocks: the time
//! comes with each input, so the tests replay any sequence exactly.
//!
//! # The rules
//!
//! - A peer **joins** when the pair's one link opens, with the record its
//!   hello carried (incarnation, listen port, metadata and its version).
//! - Its record changes only for a newer version of the same incarnation:
//!   copies that arrive late change nothing. A change of metadata is an
//!   **update**; a record saying the node is leaving is its **goodbye**,
//!   and it leaves at once (its link closes right after, and adds nothing).
//! - Its link going silent (nothing heard for longer than a late
//!   heartbeat: see [`Settings::heartbeat`](crate::Settings::heartbeat))
//!   makes it **suspect**; the link speaking again makes it **alive**. Each takes a
//!   change of state, so a silence costs at most these two.
//! - Its link closing makes it **leave**, for a reason that follows the
//!   link's: a timeout, an id conflict, or else a lost link. A timeout or a
//!   lost link may be a blip, so the member is first held **away** for the
//!   view's grace, without a change: a link of the same run within the
//!   grace makes one change, **relinked** (how long it was away: what was
//!   sent meanwhile was lost); at the end of the grace ([`View::tick`]) it
//!   leaves, with the reason. A member that left for a timeout or a lost
//!   link and links again as the same incarnation while still in the view
//!   **rejoins**: it was cut off, not restarted, and missed what was sent
//!   meanwhile. A link replaced
//!   by a newer one of the same peer changes nothing (or, when the newer one
//!   comes from a newer incarnation, the old member leaves as restarted and
//!   the new one joins).
//! - A node this one is not linked to **joins** as relayed when its record
//!   arrives through a peer that relays (segments joined by a static link;
//!   see [`crate::messaging`]) and it is still not linked a grace period
//!   later (with mDNS: it may be on this LAN and about to link, which would
//!   make a relayed moment two events of noise); its updates and its
//!   goodbye come the same way. Linked later, it is **updated** (the way
//!   it is reached changed). It **leaves** as a lost link when the link it
//!   was heard through closes, or when that peer, having said it was
//!   linked to it, says it is no longer; a link of its own that closes
//!   makes it leave as any linked member does.
//! - A member that left stays in the view for [`LEFT_KEPT`], at most
//!   [`MAX_LEFT`] of them, so a reader sees why it went.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::error::CloseReason;
use crate::id::NodeId;
use crate::limits::{LEAVE_GRACE, LEFT_KEPT, MAX_LEFT, MAX_PEERS};
use crate::link::LinkId;
use crate::messaging::router::neighbors::LinkList;
use crate::meta::Meta;
use crate::node::members::member::{LeaveReason, MemberChange};
use crate::wire::frame::Frame;
use crate::wire::record::Record;

/// What the view knows of one other node.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub incarnation: u64,
    pub port: u16,
    pub version: u64,
    pub meta: Meta,
    /// Its record of this version as it signed it, ready to pass on (see
    /// [`crate::messaging`]); `None` when it came unsigned.
    pub signed: Option<Frame>,
    pub route: Route,
}

/// How a member is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Linked {
        link: LinkId,
        remote: SocketAddr,
        local: SocketAddr,
        since: Instant,
        suspect: bool,
    },
    /// Its link was lost at `since` (a timeout, a lost link); it leaves
    /// for `reason` unless a link of the same run opens within the grace.
    /// What it was before (where it was linked from, whether suspect) is
    /// what the user still sees meanwhile.
    Away {
        reason: LeaveReason,
        since: Instant,
        remote: SocketAddr,
        suspect: bool,
    },
    /// Not linked: its records come through `via`, a linked peer;
    /// `vouched` once `via` said it is linked to it.
    Relayed {
        via: NodeId,
        vouched: bool,
    },
    Left {
        reason: LeaveReason,
        at: Instant,
    },
}

/// This node's own record.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    pub incarnation: u64,
    pub version: u64,
    pub meta: Meta,
}

/// One node's view of the cluster's members.
#[derive(Debug)]
pub(crate) struct View {
    me: NodeId,
    local: Local,
    /// How long a member whose link was lost is held away before it leaves.
    grace: Duration,
    members: BTreeMap<NodeId, Entry>,
    /// Records of nodes not in the view, newest per node: taken when the
    /// node's link opens (one that came on a link before the view heard it
    /// open, the link's reader running ahead of the node's actor, so a
    /// change sent at once on a new link is not lost to that race), or,
    /// heard through a peer, made a relayed member after `relayed_grace`.
    /// At most [`MAX_WAITING`].
    waiting: BTreeMap<NodeId, Waiting>,
    /// How long a node heard of through a peer may take to link before it
    /// is made a relayed member.
    relayed_grace: Duration,
    /// The nodes each linked peer last said it is linked to, as the router
    /// took them, shared with it (a node of a mesh of N holds N - 1 lists of
    /// N - 1 ids), only ever asked whether an id is in one. A newer list
    /// the router refuses leaves the last one it took here.
    lists: HashMap<NodeId, LinkList>,
}

/// Records of nodes not (yet) in the view that it keeps.
const MAX_WAITING: usize = MAX_PEERS;

/// A record of a node not in the view.
#[derive(Debug)]
struct Waiting {
    record: Record,
    signed: Option<Frame>,
    /// The peer it was heard through, if it was heard only through peers
    /// (else it is kept for its link only).
    via: Option<NodeId>,
    /// When it was first heard of.
    since: Instant,
}

/// The changes one input made, in order.
pub(crate) type Changes = Vec<(NodeId, MemberChange)>;

/// A link that opened, as the view needs it.
#[derive(Debug, Clone)]
pub(crate) struct Opened {
    pub link: LinkId,
    pub peer: NodeId,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// What its hello said.
    pub record: Record,
}

impl View {
    /// The view of node `me`, which started at `incarnation` with `meta`.
    pub(crate) fn new(me: NodeId, incarnation: u64, meta: Meta) -> View {
        View {
            me,
            grace: LEAVE_GRACE,
            local: Local {
                incarnation,
                version: incarnation,
                meta,
            },
            members: BTreeMap::new(),
            waiting: BTreeMap::new(),
            relayed_grace: Duration::ZERO,
            lists: HashMap::new(),
        }
    }

    /// Makes a node heard of through a peer a relayed member only if it
    /// has not linked `grace` later (zero: at once).
    pub(crate) fn with_relayed_grace(mut self, grace: Duration) -> View {
        self.relayed_grace = grace;
        self
    }

    /// Holds a member whose link was lost for `grace` before it leaves
    /// (zero: it leaves at once).
    pub(crate) fn with_grace(mut self, grace: Duration) -> View {
        self.grace = grace;
        self
    }

    pub(crate) fn me(&self) -> &NodeId {
        &self.me
    }

    pub(crate) fn local(&self) -> &Local {
        &self.local
    }

    /// Every other node in the view (left ones included), by id.
    pub(crate) fn members(&self) -> impl Iterator<Item = (&NodeId, &Entry)> {
        self.members.iter()
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.members.get(id)
    }

    /// True if `id` is a member that has not left, or a node whose record
    /// waits for its link or the grace: at most [`MAX_PEERS`] relayed
    /// members and [`MAX_WAITING`] records, beside the linked ones.
    pub(crate) fn knows(&self, id: &NodeId) -> bool {
        self.members.get(id).is_some_and(|e| !e.left()) || self.waiting.contains_key(id)
    }

    /// This node's metadata changed: a new version of its record.
    pub(crate) fn set_local_meta(&mut self, meta: Meta) -> Changes {
        if meta == self.local.meta {
            return vec![];
        }
        self.local.meta = meta;
        self.local.version += 1;
        vec![(self.me.clone(), MemberChange::Updated)]
    }

    /// The pair's one link to `o.peer` opened.
    pub(crate) fn opened(&mut self, o: Opened, now: Instant) -> Changes {
        self.expire(now);
        let mut changes = Vec::new();
        let route = Route::Linked {
            link: o.link,
            remote: o.remote,
            local: o.local,
            since: now,
            suspect: false,
        };
        // An early record of the same run at least as new as the hello
        // stands for it, and brings its signed copy.
        let (r, signed) = match self.waiting.remove(&o.peer) {
            Some(w)
                if w.record.incarnation == o.record.incarnation
                    && w.record.version >= o.record.version =>
            {
                (w.record, w.signed)
            }
            _ => (o.record, None),
        };
        match self.members.get_mut(&o.peer) {
            Some(e) if e.incarnation == r.incarnation && e.away().is_some() => {
                // Back within the grace: one change, that says for how long
                // it was away.
                let away = now.saturating_duration_since(e.away().expect("away"));
                e.route = route;
                let updated = e.apply(&r);
                if e.version == r.version && signed.is_some() {
                    e.signed = signed;
                }
                changes.push((o.peer.clone(), MemberChange::Relinked { away }));
                if updated {
                    changes.push((o.peer, MemberChange::Updated));
                }
                return changes;
            }
            Some(e) if e.incarnation == r.incarnation && !e.left() => {
                // Another link of the same run (the one before went stale),
                // or a first one to a relayed member: the member stays; a
                // suspicion ends.
                let was_suspect = e.suspect();
                let was_relayed = matches!(e.route, Route::Relayed { .. });
                e.route = route;
                if e.apply(&r) || was_relayed {
                    changes.push((o.peer.clone(), MemberChange::Updated));
                }
                if e.version == r.version && signed.is_some() {
                    e.signed = signed;
                }
                if was_suspect {
                    changes.push((o.peer, MemberChange::Alive));
                }
                return changes;
            }
            Some(e) if e.incarnation > r.incarnation && !e.left() => {
                // The one-link rule opens no link of an older run.
                return changes;
            }
            Some(e) if !e.left() => {
                e.route = Route::Left {
                    reason: LeaveReason::Restarted,
                    at: now,
                };
                changes.push((o.peer.clone(), MemberChange::Left(LeaveReason::Restarted)));
            }
            _ => {}
        }
        let back = self.members.get(&o.peer).is_some_and(|e| {
            e.incarnation == r.incarnation
                && matches!(
                    e.route,
                    Route::Left {
                        reason: LeaveReason::Timeout | LeaveReason::LinkLost,
                        ..
                    }
                )
        });
        let entry = Entry {
            incarnation: r.incarnation,
            port: r.port,
            version: r.version,
            meta: r.meta.unwrap_or_default(),
            signed,
            route,
        };
        self.members.insert(o.peer.clone(), entry);
        let change = if back {
            MemberChange::Rejoined
        } else {
            MemberChange::Joined
        };
        changes.push((o.peer, change));
        changes
    }

    /// A link to `peer` closed for `reason`. Only the member's own link
    /// counts; a closing that comes from this node's shutdown says nothing
    /// about the peer.
    pub(crate) fn closed(
        &mut self,
        link: LinkId,
        peer: &NodeId,
        reason: &CloseReason,
        now: Instant,
    ) -> Changes {
        self.expire(now);
        let Some(e) = self.members.get_mut(peer) else {
            return vec![];
        };
        if e.link() != Some(link) || *reason == CloseReason::Shutdown {
            return vec![];
        }
        let reason = match reason {
            CloseReason::Timeout(_) => LeaveReason::Timeout,
            CloseReason::IdConflict => LeaveReason::IdConflict,
            _ => LeaveReason::LinkLost,
        };
        match &e.route {
            Route::Linked {
                remote, suspect, ..
            } if reason != LeaveReason::IdConflict && !self.grace.is_zero() => {
                e.route = Route::Away {
                    reason,
                    since: now,
                    remote: *remote,
                    suspect: *suspect,
                };
                vec![]
            }
            _ => {
                e.route = Route::Left { reason, at: now };
                let mut changes = vec![(peer.clone(), MemberChange::Left(reason))];
                self.lose_path(peer, now, &mut changes);
                changes
            }
        }
    }

    /// `peer` is gone: what was heard only through it has no path left
    /// that this node knows of.
    fn lose_path(&mut self, peer: &NodeId, now: Instant, changes: &mut Changes) {
        self.lists.remove(peer);
        self.waiting.retain(|_, w| w.via.as_ref() != Some(peer));
        for (id, e) in self.members.iter_mut() {
            if matches!(&e.route, Route::Relayed { via, .. } if via == peer) {
                e.route = Route::Left {
                    reason: LeaveReason::LinkLost,
                    at: now,
                };
                changes.push((id.clone(), MemberChange::Left(LeaveReason::LinkLost)));
            }
        }
    }

    /// The members held away for the whole grace by `now` leave, with the
    /// reason their link closed. Returns their changes (by id), and when
    /// the next one held is due, if any.
    pub(crate) fn tick(&mut self, now: Instant) -> (Changes, Option<Instant>) {
        let mut changes = Vec::new();
        let mut next: Option<Instant> = None;
        let mut gone = Vec::new();
        for (id, e) in &mut self.members {
            let Route::Away { reason, since, .. } = e.route else {
                continue;
            };
            let due = since + self.grace;
            if due <= now {
                e.route = Route::Left { reason, at: due };
                changes.push((id.clone(), MemberChange::Left(reason)));
                gone.push((id.clone(), due));
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        // What was heard through them has no path left now.
        for (id, due) in gone {
            self.lose_path(&id, due, &mut changes);
        }
        (changes, next)
    }

    /// `peer` said which nodes it is linked to, `list` (as the router took
    /// it): a relayed member it had vouched for and no longer lists has
    /// lost its path.
    pub(crate) fn neighbors(&mut self, peer: &NodeId, list: &LinkList, now: Instant) -> Changes {
        if self.members.get(peer).is_some_and(Entry::linked) {
            self.lists.insert(peer.clone(), list.clone());
        }
        let mut changes = Vec::new();
        for (id, e) in self.members.iter_mut() {
            let Route::Relayed { via, vouched } = &mut e.route else {
                continue;
            };
            if via != peer {
                continue;
            }
            if list.names(id.as_str()) {
                *vouched = true;
            } else if *vouched {
                e.route = Route::Left {
                    reason: LeaveReason::LinkLost,
                    at: now,
                };
                changes.push((id.clone(), MemberChange::Left(LeaveReason::LinkLost)));
            }
        }
        changes
    }

    /// The link has gone silent (see `link::watchdog::silent_after`).
    pub(crate) fn silent(&mut self, link: LinkId, peer: &NodeId) -> Changes {
        self.suspect(link, peer, true)
    }

    /// The silent link spoke again.
    pub(crate) fn heard(&mut self, link: LinkId, peer: &NodeId) -> Changes {
        self.suspect(link, peer, false)
    }

    fn suspect(&mut self, link: LinkId, peer: &NodeId, now_suspect: bool) -> Changes {
        let Some(e) = self.members.get_mut(peer) else {
            return vec![];
        };
        match &mut e.route {
            Route::Linked {
                link: l, suspect, ..
            } if *l == link && *suspect != now_suspect => {
                *suspect = now_suspect;
                let change = if now_suspect {
                    MemberChange::Suspect
                } else {
                    MemberChange::Alive
                };
                vec![(peer.clone(), change)]
            }
            _ => vec![],
        }
    }

    /// `origin`'s record arrived on `peer`'s link, `signed` by its origin
    /// if it came so (as a frame to pass on). Returns whether this copy is
    /// one to pass on (news: a newer version of a member's record, or the
    /// first signed copy of the version the view holds), and the changes
    /// it made.
    ///
    /// A record of a node this one is not linked to, newer than what it
    /// knows, makes that node a relayed member, reached through `peer`;
    /// unless `direct`: this node is about to link to it (it sees it
    /// advertised on its own LAN), which would make the relayed member a
    /// moment's noise, joined then updated as the link opens.
    pub(crate) fn record(
        &mut self,
        peer: &NodeId,
        origin: &NodeId,
        r: Record,
        signed: Option<Frame>,
        direct: bool,
        now: Instant,
    ) -> (bool, Changes) {
        self.expire(now);
        if origin == &self.me {
            return (false, vec![]);
        }
        let known_run = self
            .members
            .get(origin)
            .is_some_and(|e| !e.left() && e.incarnation == r.incarnation);
        if !known_run && !r.leaving && (peer == origin || direct) {
            // A record sent at once on a link this view has not heard open
            // yet (the link's reader runs ahead of the node's actor), or
            // one of a node about to be linked: kept for that link.
            self.wait(origin, r, signed, None, now);
            return (false, vec![]);
        }
        let mut changes = Vec::new();
        let newer = |e: &Entry| (e.incarnation, e.version) < (r.incarnation, r.version);
        let joins = match self.members.get_mut(origin) {
            None => true,
            Some(e) if e.left() => newer(e),
            // A relayed member that restarted: the old run leaves.
            Some(e) if !e.linked() && e.incarnation < r.incarnation => {
                e.route = Route::Left {
                    reason: LeaveReason::Restarted,
                    at: now,
                };
                changes.push((origin.clone(), MemberChange::Left(LeaveReason::Restarted)));
                true
            }
            Some(_) => false,
        };
        if joins {
            // The goodbye of a node this one never knew is nobody's news
            // (nor is what it said while waiting).
            if r.leaving {
                self.waiting.remove(origin);
                return (false, changes);
            }
            if !self.relayed_grace.is_zero() {
                let news = self.wait(origin, r, signed, Some(peer), now);
                return (news, changes);
            }
            changes.push(self.join_relayed(origin, r, signed, peer.clone()));
            return (true, changes);
        }
        let e = self.members.get_mut(origin).expect("present");
        if e.incarnation != r.incarnation || r.version < e.version {
            return (false, changes);
        }
        if r.version == e.version {
            // The same version again: its first copy signed by its origin
            // is kept, and passed on.
            let first = e.signed.is_none() && signed.is_some() && !e.left();
            if first {
                e.signed = signed;
            }
            return (first, changes);
        }
        if r.leaving {
            e.signed = signed;
            e.version = r.version;
            e.route = Route::Left {
                reason: LeaveReason::Goodbye,
                at: now,
            };
            changes.push((origin.clone(), MemberChange::Left(LeaveReason::Goodbye)));
            self.lose_path(origin, now, &mut changes);
            return (true, changes);
        }
        let changed = e.apply(&r);
        e.signed = signed;
        let changes = if changed {
            vec![(origin.clone(), MemberChange::Updated)]
        } else {
            vec![]
        };
        (true, changes)
    }

    /// False if `origin`'s record `r` (`signed` or not) would change
    /// nothing here: the view holds it, or a newer one, signed if `signed`
    /// (see [`View::record`], which decides).
    pub(crate) fn fresh(&self, origin: &NodeId, r: &Record, signed: bool) -> bool {
        if origin == &self.me {
            return false;
        }
        let key = (r.incarnation, r.version);
        let held =
            |k: (u64, u64), has_signed: bool| k > key || (k == key && (has_signed || !signed));
        let in_view = self
            .members
            .get(origin)
            .is_some_and(|e| held((e.incarnation, e.version), e.signed.is_some() || e.left()));
        let waiting = self
            .waiting
            .get(origin)
            .is_some_and(|w| held((w.record.incarnation, w.record.version), w.signed.is_some()));
        !(in_view || waiting)
    }

    /// Keeps `origin`'s record, heard through `via` (or on its own link,
    /// or while it is advertised on this LAN: `None`), if newer than the
    /// one kept; true if it was.
    fn wait(
        &mut self,
        origin: &NodeId,
        record: Record,
        signed: Option<Frame>,
        via: Option<&NodeId>,
        now: Instant,
    ) -> bool {
        let (since, via) = match self.waiting.get(origin) {
            Some(w)
                if (w.record.incarnation, w.record.version)
                    >= (record.incarnation, record.version) =>
            {
                return false;
            }
            // Once about to link, it waits for its link only.
            Some(w) => (w.since, w.via.clone().and(via.cloned())),
            None if self.waiting.len() >= MAX_WAITING => return false,
            None => (now, via.cloned()),
        };
        let w = Waiting {
            record,
            signed,
            via,
            since,
        };
        self.waiting.insert(origin.clone(), w);
        true
    }

    /// `origin`, heard of through `via`, joins as a relayed member.
    fn join_relayed(
        &mut self,
        origin: &NodeId,
        r: Record,
        signed: Option<Frame>,
        via: NodeId,
    ) -> (NodeId, MemberChange) {
        let vouched = self
            .lists
            .get(&via)
            .is_some_and(|l| l.names(origin.as_str()));
        let entry = Entry {
            incarnation: r.incarnation,
            port: r.port,
            version: r.version,
            meta: r.meta.unwrap_or_default(),
            signed,
            route: Route::Relayed { via, vouched },
        };
        self.members.insert(origin.clone(), entry);
        (origin.clone(), MemberChange::Joined)
    }

    /// The nodes heard of through a peer that did not link within the
    /// grace period join as relayed members; those `advertised` on this
    /// node's LAN by then wait for their link instead.
    pub(crate) fn due(&mut self, now: Instant, advertised: &[NodeId]) -> Changes {
        let grace = self.relayed_grace;
        let due: Vec<NodeId> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.via.is_some() && now.saturating_duration_since(w.since) >= grace)
            .map(|(id, _)| id.clone())
            .collect();
        let mut changes = Vec::new();
        for id in due {
            if advertised.contains(&id) {
                self.waiting.get_mut(&id).expect("listed").via = None;
                continue;
            }
            let w = self.waiting.remove(&id).expect("listed");
            let via = w.via.expect("heard through a peer");
            changes.push(self.join_relayed(&id, w.record, w.signed, via));
        }
        changes
    }

    /// When the next node heard of through a peer is due (see [`View::due`]).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.waiting
            .values()
            .filter(|w| w.via.is_some())
            .map(|w| w.since + self.relayed_grace)
            .min()
    }

    /// How many members are relayed.
    pub(crate) fn relayed(&self) -> usize {
        self.members
            .values()
            .filter(|e| matches!(e.route, Route::Relayed { .. }))
            .count()
    }

    /// This node closed: it knows no one any more (and tells no one).
    pub(crate) fn clear(&mut self) {
        self.members.clear();
        self.waiting.clear();
        self.lists.clear();
    }

    /// Forgets members that left more than [`LEFT_KEPT`] ago, and the
    /// oldest beyond [`MAX_LEFT`].
    pub(crate) fn expire(&mut self, now: Instant) {
        self.members.retain(|_, e| match e.route {
            Route::Left { at, .. } => now.saturating_duration_since(at) < LEFT_KEPT,
            _ => true,
        });
        let mut left: Vec<(Instant, NodeId)> = self
            .members
            .iter()
            .filter_map(|(id, e)| match e.route {
                Route::Left { at, .. } => Some((at, id.clone())),
                _ => None,
            })
            .collect();
        if left.len() > MAX_LEFT {
            left.sort();
            for (_, id) in &left[..left.len() - MAX_LEFT] {
                self.members.remove(id);
            }
        }
    }
}

impl Entry {
    pub(crate) fn left(&self) -> bool {
        matches!(self.route, Route::Left { .. })
    }

    /// Since when it is away (its link lost, within the grace).
    fn away(&self) -> Option<Instant> {
        match self.route {
            Route::Away { since, .. } => Some(since),
            _ => None,
        }
    }

    fn suspect(&self) -> bool {
        matches!(self.route, Route::Linked { suspect: true, .. })
    }

    fn linked(&self) -> bool {
        matches!(self.route, Route::Linked { .. })
    }

    /// The link it is on, while linked.
    pub(crate) fn link(&self) -> Option<LinkId> {
        match self.route {
            Route::Linked { link, .. } => Some(link),
            _ => None,
        }
    }

    /// Takes a newer version of the record; true if the metadata changed.
    /// Metadata that broke the bounds (`None`) leaves the old in place. The
    /// signed copy held is of the old version, so it goes: the caller keeps
    /// one of the new version if it has one, and the first that comes later
    /// is kept then (see [`View::record`]).
    fn apply(&mut self, r: &Record) -> bool {
        if r.version <= self.version {
            return false;
        }
        self.signed = None;
        self.version = r.version;
        self.port = r.port;
        match &r.meta {
            Some(meta) if *meta != self.meta => {
                self.meta = meta.clone();
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use MemberChange::*;

    fn id(n: u8) -> NodeId {
        NodeId::parse(&format!("{n:02x}")).unwrap()
    }

    fn record(incarnation: u64, version: u64, meta: &[(&str, &str)]) -> Record {
        Record {
            incarnation,
            port: 4000,
            version,
            leaving: false,
            meta: Some(Meta::from_pairs(meta.iter().copied()).unwrap()),
        }
    }

    fn opened(link: LinkId, peer: u8, record: Record) -> Opened {
        Opened {
            link,
            peer: id(peer),
            remote: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
            record,
        }
    }

    fn view() -> View {
        View::new(id(1), 100, Meta::default()).with_grace(Duration::ZERO)
    }

    const GRACE: Duration = Duration::from_secs(2);

    /// A view that holds a member whose link was lost for [`GRACE`].
    fn held() -> View {
        View::new(id(1), 100, Meta::default()).with_grace(GRACE)
    }

    /// A link of the same run within the grace is one change, `Relinked`,
    /// saying how long the member was away; no `Left` before it, and the
    /// timer then finds nothing to do.
    #[test]
    fn a_relink_within_the_grace_is_one_change() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        for reason in [
            CloseReason::Timeout(Duration::from_secs(3)),
            CloseReason::PeerClosed,
            CloseReason::Local,
        ] {
            let mut v = held();
            v.opened(opened(7, 2, record(10, 10, &[])), t);
            assert_eq!(v.closed(7, &id(2), &reason, t), vec![]);
            // Still there meanwhile, without a link.
            let e = v.get(&id(2)).unwrap();
            assert!(!e.left() && e.link().is_none());
            assert_eq!(v.tick(t + ms(1999)), (vec![], Some(t + GRACE)));
            assert_eq!(
                v.opened(opened(8, 2, record(10, 10, &[])), t + ms(1999)),
                vec![(id(2), Relinked { away: ms(1999) })]
            );
            assert_eq!(v.tick(t + GRACE * 10), (vec![], None));
            assert_eq!(v.get(&id(2)).unwrap().link(), Some(8));
        }
    }

    /// A member not back by the end of the grace leaves then, with the
    /// reason its link closed, once; back after that, it rejoins.
    #[test]
    fn a_real_leave_comes_after_the_grace_with_its_reason() {
        let t = Instant::now();
        let mut v = held();
        v.opened(opened(7, 2, record(10, 10, &[])), t);
        v.opened(opened(8, 3, record(10, 10, &[])), t);
        let lost = CloseReason::Timeout(Duration::from_secs(3));
        assert_eq!(v.closed(7, &id(2), &lost, t), vec![]);
        let later = t + Duration::from_millis(500);
        assert_eq!(v.closed(8, &id(3), &CloseReason::PeerClosed, later), vec![]);
        assert_eq!(
            v.tick(t + GRACE),
            (
                vec![(id(2), Left(LeaveReason::Timeout))],
                Some(later + GRACE)
            )
        );
        assert_eq!(
            v.tick(later + GRACE),
            (vec![(id(3), Left(LeaveReason::LinkLost))], None)
        );
        assert_eq!(v.tick(later + GRACE * 2), (vec![], None));
        assert_eq!(
            v.get(&id(2)).unwrap().route,
            Route::Left {
                reason: LeaveReason::Timeout,
                at: t + GRACE
            }
        );
        assert_eq!(
            v.opened(opened(9, 2, record(10, 10, &[])), t + GRACE * 3),
            vec![(id(2), Rejoined)]
        );
    }

    /// What is no blip leaves at once even with a grace: an id conflict, a
    /// goodbye (also while held), a restart (also while held); and the
    /// node's own shutdown says nothing.
    #[test]
    fn what_is_no_blip_is_not_held() {
        let t = Instant::now();
        let mut v = held();
        v.opened(opened(7, 2, record(10, 10, &[])), t);
        assert_eq!(
            v.closed(7, &id(2), &CloseReason::IdConflict, t),
            vec![(id(2), Left(LeaveReason::IdConflict))]
        );
        v.opened(opened(8, 3, record(10, 10, &[])), t);
        v.closed(8, &id(3), &CloseReason::PeerClosed, t);
        let bye = Record {
            leaving: true,
            ..record(10, 11, &[])
        };
        assert_eq!(
            v.record(&id(3), &id(3), bye, None, false, t),
            (true, vec![(id(3), Left(LeaveReason::Goodbye))])
        );
        assert_eq!(v.tick(t + GRACE), (vec![], None));
        v.opened(opened(9, 4, record(10, 10, &[])), t);
        v.closed(9, &id(4), &CloseReason::PeerClosed, t);
        assert_eq!(
            v.opened(opened(10, 4, record(20, 20, &[])), t),
            vec![(id(4), Left(LeaveReason::Restarted)), (id(4), Joined)]
        );
        assert_eq!(v.tick(t + GRACE), (vec![], None));
        v.opened(opened(11, 5, record(10, 10, &[])), t);
        assert_eq!(v.closed(11, &id(5), &CloseReason::Shutdown, t), vec![]);
        assert_eq!(v.get(&id(5)).unwrap().link(), Some(11));
    }

    /// A member cut off (timeout, lost link) that links again as the same
    /// run rejoins; one that restarted, or that had said goodbye, joins.
    #[test]
    fn the_same_run_linked_again_rejoins() {
        let t = Instant::now();
        let mut v = view();
        v.opened(opened(7, 2, record(10, 10, &[])), t);
        let lost = CloseReason::Timeout(Duration::from_secs(3));
        assert_eq!(
            v.closed(7, &id(2), &lost, t),
            vec![(id(2), Left(LeaveReason::Timeout))]
        );
        assert_eq!(
            v.opened(opened(8, 2, record(10, 10, &[])), t),
            vec![(id(2), Rejoined)]
        );
        v.closed(8, &id(2), &CloseReason::PeerClosed, t);
        assert_eq!(
            v.opened(opened(9, 2, record(10, 10, &[])), t),
            vec![(id(2), Rejoined)]
        );
        // A new run of it joins.
        v.closed(9, &id(2), &CloseReason::PeerClosed, t);
        assert_eq!(
            v.opened(opened(10, 2, record(20, 20, &[])), t),
            vec![(id(2), Joined)]
        );
        // After a goodbye, a link of the same run is a join.
        let bye = Record {
            leaving: true,
            ..record(20, 21, &[])
        };
        v.record(&id(2), &id(2), bye, None, false, t);
        assert_eq!(
            v.opened(opened(11, 2, record(20, 22, &[])), t),
            vec![(id(2), Joined)]
        );
        // Forgotten once LEFT_KEPT has passed: a join again.
        v.closed(11, &id(2), &CloseReason::PeerClosed, t);
        let later = t + LEFT_KEPT + Duration::from_secs(1);
        assert_eq!(
            v.opened(opened(12, 2, record(20, 22, &[])), later),
            vec![(id(2), Joined)]
        );
    }

    #[test]
    fn join_update_goodbye() {
        let t = Instant::now();
        let mut v = view();
        let c = v.opened(opened(7, 2, record(10, 10, &[("role", "web")])), t);
        assert_eq!(c, vec![(id(2), Joined)]);
        assert_eq!(v.get(&id(2)).unwrap().meta.get("role"), Some("web"));

        let (news, c) = v.record(
            &id(9),
            &id(2),
            record(10, 11, &[("role", "db")]),
            None,
            false,
            t,
        );
        assert!(news);
        assert_eq!(c, vec![(id(2), Updated)]);
        // An older copy, and the same one again, are not news.
        assert_eq!(
            v.record(&id(9), &id(2), record(10, 11, &[]), None, false, t),
            (false, vec![])
        );
        assert_eq!(
            v.record(&id(9), &id(2), record(10, 9, &[]), None, false, t),
            (false, vec![])
        );
        // A newer version with the same metadata is news, but no change.
        assert_eq!(
            v.record(
                &id(9),
                &id(2),
                record(10, 12, &[("role", "db")]),
                None,
                false,
                t
            ),
            (true, vec![])
        );

        let bye = Record {
            leaving: true,
            ..record(10, 13, &[])
        };
        assert_eq!(
            v.record(&id(9), &id(2), bye, None, false, t),
            (true, vec![(id(2), Left(LeaveReason::Goodbye))])
        );
        // The link closing after the goodbye adds nothing.
        assert_eq!(v.closed(7, &id(2), &CloseReason::PeerClosed, t), vec![]);
        assert_eq!(
            v.get(&id(2)).unwrap().route,
            Route::Left {
                reason: LeaveReason::Goodbye,
                at: t
            }
        );
    }

    #[test]
    fn a_record_ahead_of_its_links_opening_is_kept_for_it() {
        let t = Instant::now();
        let mut v = view();
        // The peer's change, sent at once on the new link, is read before
        // the view hears the link open with the hello's older record.
        assert_eq!(
            v.record(
                &id(2),
                &id(2),
                record(10, 11, &[("role", "after")]),
                None,
                false,
                t
            ),
            (false, vec![])
        );
        let c = v.opened(opened(7, 2, record(10, 10, &[("role", "before")])), t);
        assert_eq!(c, vec![(id(2), Joined)]);
        assert_eq!(v.get(&id(2)).unwrap().meta.get("role"), Some("after"));
        // One of another run is not taken.
        v.record(
            &id(3),
            &id(3),
            record(5, 6, &[("role", "old")]),
            None,
            false,
            t,
        );
        v.opened(opened(8, 3, record(20, 20, &[("role", "new")])), t);
        assert_eq!(v.get(&id(3)).unwrap().meta.get("role"), Some("new"));
    }

    #[test]
    fn a_silence_costs_two_changes_at_most() {
        let t = Instant::now();
        let mut v = view();
        v.opened(opened(7, 2, record(10, 10, &[])), t);
        assert_eq!(v.silent(7, &id(2)), vec![(id(2), Suspect)]);
        assert_eq!(v.silent(7, &id(2)), vec![]);
        assert_eq!(v.heard(7, &id(2)), vec![(id(2), Alive)]);
        assert_eq!(v.heard(7, &id(2)), vec![]);
        // Another link's silence is not this member's.
        assert_eq!(v.silent(8, &id(2)), vec![]);
    }

    #[test]
    fn the_reason_follows_the_link() {
        let t = Instant::now();
        for (reason, left) in [
            (
                CloseReason::Timeout(Duration::from_secs(3)),
                LeaveReason::Timeout,
            ),
            (CloseReason::PeerClosed, LeaveReason::LinkLost),
            (CloseReason::Local, LeaveReason::LinkLost),
            (CloseReason::IdConflict, LeaveReason::IdConflict),
        ] {
            let mut v = view();
            v.opened(opened(7, 2, record(10, 10, &[])), t);
            v.silent(7, &id(2));
            assert_eq!(v.closed(7, &id(2), &reason, t), vec![(id(2), Left(left))]);
        }
        // Our own shutdown says nothing about the peer.
        let mut v = view();
        v.opened(opened(7, 2, record(10, 10, &[])), t);
        assert_eq!(v.closed(7, &id(2), &CloseReason::Shutdown, t), vec![]);
    }

    #[test]
    fn a_replaced_link_changes_nothing_and_a_restart_is_leave_then_join() {
        let t = Instant::now();
        let mut v = view();
        v.opened(opened(7, 2, record(10, 10, &[])), t);
        v.silent(7, &id(2));
        // A newer link of the same run ends the suspicion.
        assert_eq!(
            v.opened(opened(8, 2, record(10, 10, &[])), t),
            vec![(id(2), Alive)]
        );
        assert_eq!(v.closed(7, &id(2), &CloseReason::Replaced, t), vec![]);
        // A newer run.
        assert_eq!(
            v.opened(opened(9, 2, record(20, 20, &[])), t),
            vec![(id(2), Left(LeaveReason::Restarted)), (id(2), Joined)]
        );
        assert_eq!(v.get(&id(2)).unwrap().incarnation, 20);
        assert_eq!(v.closed(8, &id(2), &CloseReason::Replaced, t), vec![]);
        // A record of the old run changes nothing.
        assert_eq!(
            v.record(&id(9), &id(2), record(10, 30, &[]), None, false, t),
            (false, vec![])
        );
    }

    #[test]
    fn bad_metadata_keeps_the_old() {
        let t = Instant::now();
        let mut v = view();
        let mut first = record(10, 10, &[("role", "web")]);
        v.opened(opened(7, 2, first.clone()), t);
        first.version = 11;
        first.meta = None;
        assert_eq!(
            v.record(&id(9), &id(2), first, None, false, t),
            (true, vec![])
        );
        assert_eq!(v.get(&id(2)).unwrap().meta.get("role"), Some("web"));
        // A hello with bad metadata joins without any.
        let none = Record {
            meta: None,
            ..record(10, 10, &[])
        };
        v.opened(opened(8, 3, none), t);
        assert!(v.get(&id(3)).unwrap().meta.is_empty());
    }

    #[test]
    fn left_members_are_kept_a_while_and_bounded() {
        let t = Instant::now();
        let mut v = view();
        for n in 0..(MAX_LEFT + 5) as u8 {
            let link = n as LinkId;
            v.opened(opened(link, n + 2, record(10, 10, &[])), t);
            let at = t + Duration::from_millis(n as u64);
            v.closed(link, &id(n + 2), &CloseReason::PeerClosed, at);
        }
        v.expire(t + Duration::from_secs(1));
        assert_eq!(v.members().count(), MAX_LEFT);
        assert!(v.get(&id(2)).is_none(), "the oldest went first");
        v.expire(t + LEFT_KEPT + Duration::from_secs(1));
        assert_eq!(v.members().count(), 0);
    }

    #[test]
    fn local_metadata_versions_grow() {
        let mut v = view();
        let meta = Meta::from_pairs([("role", "web")]).unwrap();
        assert_eq!(v.set_local_meta(meta.clone()), vec![(id(1), Updated)]);
        assert_eq!(v.local().version, 101);
        assert_eq!(v.set_local_meta(meta), vec![]);
        assert_eq!(v.local().version, 101);
    }

    #[test]
    fn a_node_heard_through_a_peer_is_relayed_until_linked_or_its_path_goes() {
        let t = Instant::now();
        let mut v = view();
        v.opened(opened(7, 2, record(10, 10, &[])), t);
        // Node 3's record, through 2.
        let r3 = record(30, 30, &[("role", "db")]);
        assert_eq!(
            v.record(&id(2), &id(3), r3.clone(), None, false, t),
            (true, vec![(id(3), Joined)])
        );
        assert!(matches!(
            v.get(&id(3)).unwrap().route,
            Route::Relayed { .. }
        ));
        // The same again, by another path, is not news.
        assert_eq!(
            v.record(&id(4), &id(3), r3.clone(), None, false, t),
            (false, vec![])
        );
        // An update comes the same way.
        assert_eq!(
            v.record(
                &id(2),
                &id(3),
                record(30, 31, &[("role", "web")]),
                None,
                false,
                t
            ),
            (true, vec![(id(3), Updated)])
        );
        // Linked now: the way it is reached changed.
        assert_eq!(
            v.opened(opened(8, 3, record(30, 31, &[("role", "web")])), t),
            vec![(id(3), Updated)]
        );
        // A node about to be linked directly is not made relayed.
        assert_eq!(
            v.record(&id(2), &id(5), record(50, 50, &[]), None, true, t),
            (false, vec![])
        );
        // Node 4 through 2, vouched for by 2, then dropped from its list.
        v.record(&id(2), &id(4), record(40, 40, &[]), None, false, t);
        let told = |links: &[&str]| LinkList::new(&Default::default(), links.iter().copied());
        let (one, four) = (id(1), id(4));
        let links = [one.as_str(), four.as_str()];
        assert_eq!(v.neighbors(&id(2), &told(&links), t), vec![]);
        let links = [one.as_str()];
        assert_eq!(
            v.neighbors(&id(2), &told(&links), t),
            vec![(id(4), Left(LeaveReason::LinkLost))]
        );
        // Node 6 through 2; 2's link closes: 6 has no path left.
        v.record(&id(2), &id(6), record(60, 60, &[]), None, false, t);
        assert_eq!(
            v.closed(7, &id(2), &CloseReason::PeerClosed, t),
            vec![
                (id(2), Left(LeaveReason::LinkLost)),
                (id(6), Left(LeaveReason::LinkLost))
            ]
        );
        // A relayed goodbye; one of a node never known is nobody's news.
        v.opened(opened(9, 2, record(10, 10, &[])), t);
        v.record(&id(2), &id(7), record(70, 70, &[]), None, false, t);
        let bye = |version| Record {
            leaving: true,
            ..record(70, version, &[])
        };
        assert_eq!(
            v.record(&id(2), &id(7), bye(71), None, false, t),
            (true, vec![(id(7), Left(LeaveReason::Goodbye))])
        );
        assert_eq!(
            v.record(&id(2), &id(8), bye(80), None, false, t),
            (false, vec![])
        );
        // Our own record, relayed back, is nothing.
        assert_eq!(
            v.record(&id(2), &id(1), record(100, 200, &[]), None, false, t),
            (false, vec![])
        );
    }

    /// A record's copy signed by its origin is kept once per version and
    /// passed on once; one read before its link opened comes with it.
    #[test]
    fn the_first_signed_copy_of_a_version_is_kept_and_passed_on() {
        let t = Instant::now();
        let mut v = view();
        let signed = |v: &'static [u8]| Some(Frame::data(bytes::Bytes::from_static(v)));
        v.opened(opened(7, 2, record(10, 10, &[])), t);
        // The hello's version again, unsigned: nothing to pass on.
        let r = || record(10, 10, &[]);
        assert_eq!(
            v.record(&id(2), &id(2), r(), None, false, t),
            (false, vec![])
        );
        // Signed: kept and passed on, once, whoever brings it.
        assert_eq!(
            v.record(&id(2), &id(2), r(), signed(b"10"), false, t),
            (true, vec![])
        );
        assert_eq!(
            v.record(&id(3), &id(2), r(), signed(b"10 again"), false, t),
            (false, vec![])
        );
        // A newer one replaces it; an older one does not.
        let newer = record(10, 11, &[]);
        assert!(v.record(&id(2), &id(2), newer, signed(b"11"), false, t).0);
        assert!(!v.record(&id(3), &id(2), r(), signed(b"10"), false, t).0);
        assert_eq!(v.get(&id(2)).unwrap().signed, signed(b"11"));
        // Read before its link opened: kept for it.
        let r4 = record(40, 40, &[]);
        assert_eq!(
            v.record(&id(4), &id(4), r4.clone(), signed(b"40"), false, t),
            (false, vec![])
        );
        v.opened(opened(8, 4, r4), t);
        assert_eq!(v.get(&id(4)).unwrap().signed, signed(b"40"));
    }

    /// A member back with a newer version in its hello than the signed copy
    /// held (it changed while away) holds no signed copy until one of that
    /// version comes; that one is kept and passed on, not refused as held.
    #[test]
    fn a_relink_with_a_newer_version_takes_its_signed_copy_when_it_comes() {
        let t = Instant::now();
        let signed = |v: &'static [u8]| Some(Frame::data(bytes::Bytes::from_static(v)));
        for grace in [Duration::ZERO, GRACE] {
            let mut v = View::new(id(1), 100, Meta::default()).with_grace(grace);
            v.opened(opened(7, 2, record(10, 5, &[])), t);
            assert!(
                v.record(&id(2), &id(2), record(10, 5, &[]), signed(b"5"), false, t)
                    .0
            );
            v.closed(7, &id(2), &CloseReason::PeerClosed, t);
            v.opened(opened(8, 2, record(10, 6, &[("k", "v")])), t);
            let e = v.get(&id(2)).unwrap();
            assert_eq!((e.version, e.signed.clone()), (6, None), "grace {grace:?}");
            let six = record(10, 6, &[("k", "v")]);
            assert!(v.fresh(&id(2), &six, true));
            assert!(v.record(&id(2), &id(2), six, signed(b"6"), false, t).0);
            assert_eq!(v.get(&id(2)).unwrap().signed, signed(b"6"));
        }
    }

    /// With a grace period, a node heard of through a peer joins as relayed
    /// only if it has not linked by then; one that links in time joins
    /// once, linked, with the newest record heard; one whose path goes
    /// while it waits, or that says goodbye, never joins.
    #[test]
    fn a_node_heard_through_a_peer_waits_out_the_grace_before_it_is_relayed() {
        let t = Instant::now();
        let grace = Duration::from_secs(3);
        let mut v = View::new(id(1), 100, Meta::default())
            .with_grace(Duration::ZERO)
            .with_relayed_grace(grace);
        v.opened(opened(7, 2, record(10, 10, &[])), t);
        v.opened(opened(8, 5, record(50, 50, &[])), t);
        // 3 and 4 heard through 2, 6 through 5.
        assert_eq!(
            v.record(&id(2), &id(3), record(30, 30, &[]), None, false, t),
            (true, vec![])
        );
        let later = t + Duration::from_secs(1);
        v.record(&id(2), &id(4), record(40, 40, &[]), None, false, later);
        v.record(&id(5), &id(6), record(60, 60, &[]), None, false, later);
        assert_eq!(v.next_due(), Some(t + grace));
        // 3 updates while it waits (news, passed on), then links in time.
        let newer = record(30, 31, &[("role", "db")]);
        assert_eq!(
            v.record(&id(2), &id(3), newer, None, false, later),
            (true, vec![])
        );
        assert_eq!(
            v.opened(opened(9, 3, record(30, 30, &[])), later),
            vec![(id(3), Joined)]
        );
        assert_eq!(v.get(&id(3)).unwrap().meta.get("role"), Some("db"));
        // 6's path goes; nothing is due before 4's time.
        v.closed(8, &id(5), &CloseReason::PeerClosed, later);
        assert_eq!(v.due(t + grace, &[]), vec![]);
        assert_eq!(v.next_due(), Some(later + grace));
        // 8, heard of at the same time, is advertised here by then: it
        // waits for its link.
        v.record(&id(2), &id(8), record(80, 80, &[]), None, false, later);
        assert_eq!(v.due(later + grace, &[id(8)]), vec![(id(4), Joined)]);
        assert_eq!(v.next_due(), None);
        assert!(matches!(
            v.get(&id(4)).unwrap().route,
            Route::Relayed { .. }
        ));
        assert!(v.get(&id(6)).is_none());
        // A goodbye while waiting: it never joins.
        v.record(&id(2), &id(7), record(70, 70, &[]), None, false, later);
        let bye = Record {
            leaving: true,
            ..record(70, 71, &[])
        };
        v.record(&id(2), &id(7), bye, None, false, later);
        assert_eq!(v.next_due(), None);
    }

    /// A peer held away for the leave grace keeps what was heard through it
    /// until it leaves; then that leaves too.
    #[test]
    fn what_was_heard_through_a_peer_held_away_leaves_with_it() {
        let t = Instant::now();
        let mut v = held();
        v.opened(opened(7, 2, record(10, 10, &[])), t);
        v.record(&id(2), &id(3), record(30, 30, &[]), None, false, t);
        assert_eq!(v.closed(7, &id(2), &CloseReason::PeerClosed, t), vec![]);
        assert!(matches!(
            v.get(&id(3)).unwrap().route,
            Route::Relayed { .. }
        ));
        assert_eq!(
            v.tick(t + GRACE).0,
            vec![
                (id(2), Left(LeaveReason::LinkLost)),
                (id(3), Left(LeaveReason::LinkLost))
            ]
        );
    }
}
