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
//! - Its link going silent for half the heartbeat timeout makes it
//!   **suspect**; the link speaking again makes it **alive**. Each takes a
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
//! - A member that left stays in the view for [`LEFT_KEPT`], at most
//!   [`MAX_LEFT`] of them, so a reader sees why it went.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::error::CloseReason;
use crate::id::NodeId;
use crate::limits::{LEAVE_GRACE, LEFT_KEPT, MAX_LEFT};
use crate::link::LinkId;
use crate::meta::Meta;
use crate::node::members::member::{LeaveReason, MemberChange};
use crate::wire::record::Record;

/// What the view knows of one other node.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub incarnation: u64,
    pub port: u16,
    pub version: u64,
    pub meta: Meta,
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
    /// Records that came on a link before the view heard it open (the
    /// link's reader runs ahead of the node's actor), newest per node:
    /// taken when the link's opening arrives, so a change sent at once on
    /// a new link is not lost to that race. At most [`MAX_EARLY`].
    early: BTreeMap<NodeId, Record>,
}

/// Records of nodes not (yet) linked that the view keeps for their link.
const MAX_EARLY: usize = 64;

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
            early: BTreeMap::new(),
        }
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
        let r = match self.early.remove(&o.peer) {
            Some(e) if e.incarnation == o.record.incarnation && e.version > o.record.version => e,
            _ => o.record,
        };
        match self.members.get_mut(&o.peer) {
            Some(e) if e.incarnation == r.incarnation && e.away().is_some() => {
                // Back within the grace: one change, that says for how long
                // it was away.
                let away = now.saturating_duration_since(e.away().expect("away"));
                e.route = route;
                let updated = e.apply(&r);
                changes.push((o.peer.clone(), MemberChange::Relinked { away }));
                if updated {
                    changes.push((o.peer, MemberChange::Updated));
                }
                return changes;
            }
            Some(e) if e.incarnation == r.incarnation && !e.left() => {
                // Another link of the same run (the one before went stale):
                // the member stays; a suspicion ends.
                let was_suspect = e.suspect();
                e.route = route;
                if e.apply(&r) {
                    changes.push((o.peer.clone(), MemberChange::Updated));
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
                vec![(peer.clone(), MemberChange::Left(reason))]
            }
        }
    }

    /// The members held away for the whole grace by `now` leave, with the
    /// reason their link closed. Returns their changes (by id), and when
    /// the next one held is due, if any.
    pub(crate) fn tick(&mut self, now: Instant) -> (Changes, Option<Instant>) {
        let mut changes = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, e) in &mut self.members {
            let Route::Away { reason, since, .. } = e.route else {
                continue;
            };
            let due = since + self.grace;
            if due <= now {
                e.route = Route::Left { reason, at: due };
                changes.push((id.clone(), MemberChange::Left(reason)));
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        (changes, next)
    }

    /// The link has been silent for half the heartbeat timeout.
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

    /// `origin`'s record arrived. Returns whether it was news (a newer
    /// version of a member's record), and the changes it made.
    pub(crate) fn record(&mut self, origin: &NodeId, r: Record, now: Instant) -> (bool, Changes) {
        self.expire(now);
        let linked_run = self
            .members
            .get(origin)
            .is_some_and(|e| !e.left() && e.incarnation == r.incarnation);
        if !linked_run && !r.leaving {
            // Perhaps a record sent at once on a link this view has not
            // heard open yet: kept for that link.
            let newer = self
                .early
                .get(origin)
                .is_none_or(|k| (k.incarnation, k.version) < (r.incarnation, r.version));
            if newer && (self.early.len() < MAX_EARLY || self.early.contains_key(origin)) {
                self.early.insert(origin.clone(), r);
            }
            return (false, vec![]);
        }
        let Some(e) = self.members.get_mut(origin) else {
            return (false, vec![]);
        };
        if e.left() || e.incarnation != r.incarnation || r.version <= e.version {
            return (false, vec![]);
        }
        if r.leaving {
            e.version = r.version;
            e.route = Route::Left {
                reason: LeaveReason::Goodbye,
                at: now,
            };
            return (
                true,
                vec![(origin.clone(), MemberChange::Left(LeaveReason::Goodbye))],
            );
        }
        let changed = e.apply(&r);
        let changes = if changed {
            vec![(origin.clone(), MemberChange::Updated)]
        } else {
            vec![]
        };
        (true, changes)
    }

    /// This node closed: it knows no one any more (and tells no one).
    pub(crate) fn clear(&mut self) {
        self.members.clear();
        self.early.clear();
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

    /// The link it is on, while linked.
    pub(crate) fn link(&self) -> Option<LinkId> {
        match self.route {
            Route::Linked { link, .. } => Some(link),
            _ => None,
        }
    }

    /// Takes a newer version of the record; true if the metadata changed.
    /// Metadata that broke the bounds (`None`) leaves the old in place.
    fn apply(&mut self, r: &Record) -> bool {
        if r.version <= self.version {
            return false;
        }
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
            v.record(&id(3), bye, t),
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
        v.record(&id(2), bye, t);
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

        let (news, c) = v.record(&id(2), record(10, 11, &[("role", "db")]), t);
        assert!(news);
        assert_eq!(c, vec![(id(2), Updated)]);
        // An older copy, and the same one again, are not news.
        assert_eq!(v.record(&id(2), record(10, 11, &[]), t), (false, vec![]));
        assert_eq!(v.record(&id(2), record(10, 9, &[]), t), (false, vec![]));
        // A newer version with the same metadata is news, but no change.
        assert_eq!(
            v.record(&id(2), record(10, 12, &[("role", "db")]), t),
            (true, vec![])
        );

        let bye = Record {
            leaving: true,
            ..record(10, 13, &[])
        };
        assert_eq!(
            v.record(&id(2), bye, t),
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
            v.record(&id(2), record(10, 11, &[("role", "after")]), t),
            (false, vec![])
        );
        let c = v.opened(opened(7, 2, record(10, 10, &[("role", "before")])), t);
        assert_eq!(c, vec![(id(2), Joined)]);
        assert_eq!(v.get(&id(2)).unwrap().meta.get("role"), Some("after"));
        // One of another run is not taken.
        v.record(&id(3), record(5, 6, &[("role", "old")]), t);
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
        assert_eq!(v.record(&id(2), record(10, 30, &[]), t), (false, vec![]));
    }

    #[test]
    fn bad_metadata_keeps_the_old() {
        let t = Instant::now();
        let mut v = view();
        let mut first = record(10, 10, &[("role", "web")]);
        v.opened(opened(7, 2, first.clone()), t);
        first.version = 11;
        first.meta = None;
        assert_eq!(v.record(&id(2), first, t), (true, vec![]));
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
}
