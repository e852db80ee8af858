//! The mesh: which peers we know, which links we hold, and the one-link rule.
//!
//! This is a pure state machine: no sockets, no tasks, no clocks. The service
//! feeds it facts (a peer was discovered, a link finished its hello, a verdict
//! arrived, a link closed) and carries out the [`Action`]s it returns. That
//! keeps the rule that decides which link a pair keeps in one place, and lets
//! the races (simultaneous dials, a dial racing an accept, a restarted peer)
//! be replayed deterministically in the tests at the bottom of this file.
//!
//! # The one-link rule
//!
//! Every node dials every peer it discovers, so a pair may open two TCP links
//! at once. Of the two ids of a pair, the *smaller* one is the pair's
//! **decider** (ids have a fixed length, so string order is numeric order).
//! Only the decider decides which link the pair keeps:
//!
//! - On every link whose hello exchange completed, the decider sends a verdict
//!   at once: `ACCEPT` if it holds no open link to that peer, `REJECT` if it
//!   does. Because one task applies the decisions in order, the decider never
//!   has two open links to one peer.
//! - The other end keeps a link pending until its verdict arrives, and opens
//!   it on `ACCEPT`. The verdict travels on the link itself, ahead of any user
//!   data, so both ends open the same link, and a pair ends with exactly one.
//! - A `REJECT` while the other end holds no other link to the decider means
//!   the decider still holds one this end has already lost: a stale link,
//!   silent, that the decider drops once its heartbeats time out. The other
//!   end dials again, backing off, until the decider accepts: the decider
//!   may have no address to dial (a peer known only from the link it
//!   dialed), so waiting for it could leave the pair with no link at all.
//! - A dial whose turn comes (a node makes only so many at once) when the
//!   peer's own dial has reached this node, or the pair is linked, is not
//!   made ([`DialEnd::Moot`]), and looked at again after the grace: in a
//!   mass start, where both ends of most pairs find each other at once,
//!   this spares most second handshakes.
//! - A peer that restarted with the same id comes back with a new
//!   *incarnation*. The decider replaces an open link of an older incarnation
//!   instead of rejecting the new one. The other end treats every `ACCEPT` as
//!   the truth and closes whatever older link it still holds to that peer.

//! - Two *live* nodes claiming one id are a misconfiguration, not a restart.
//!   Incarnations grow with the start time, so a node that holds a link from
//!   a newer incarnation refuses an older one with `CONFLICT` (the older node
//!   gets an [`Error::IdConflict`](crate::Error::IdConflict) and does not
//!   redial), instead of letting the two take the link from each other.
//!
//! # Redialing
//!
//! A link that ends while its peer is still known (advertised over mDNS, or a
//! static peer) is dialed again, and so is a dial that failed, after a
//! backoff the service jitters: [`backoff`] of the number of failures in a
//! row. A link that lived at least [`STABLE`] counts as a success, so a
//! healthy link that breaks is redialed at once, while a peer whose links
//! keep dying is tried less and less often. A refused dial (nothing listens
//! on the port: the node has died) also asks mDNS to verify the peer's
//! record, so a record left by a killed node is dropped within a second or
//! so instead of lingering for its two-minute lifetime.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::error::CloseReason;
use crate::id::NodeId;
use crate::limits::MAX_PEERS;
use crate::link::LinkId;
use crate::node::hints::{self, Tellers};
use crate::wire::verdict::{decides, Verdict};
/// A link that lived this long resets its peer's failure count.
pub(crate) const STABLE: Duration = Duration::from_secs(10);
/// How long the end that does not decide a pair waits for the decider's
/// dial before it dials a newly discovered peer itself (before jitter),
/// when the decider has heard this node's announcement.
pub(crate) const FOLLOWER_GRACE: Duration = Duration::from_millis(500);
/// The same wait when the decider may not have heard this node's
/// announcement ([`Heard::AfterOurs`]): long enough for a dial the decider
/// made at once to arrive, short enough not to matter when it made none.
pub(crate) const SHORT_GRACE: Duration = Duration::from_millis(10);
/// Most addresses of one peer tried in one dial.
pub(crate) const DIAL_ADDRS: usize = 4;

/// When this node first heard a peer's mDNS record, against its own
/// announcement.
///
/// A responder does not multicast a record again within a second of the
/// last time (RFC 6762, section 6), so a node whose mDNS daemon starts just
/// after another's announcement gets no answer to its query until that
/// announcement's repeat, a second later. Of two nodes starting together,
/// the one that heard the other announce *after* announcing itself cannot
/// count on having been heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// Before this node's announcement went out: the peer was browsing
    /// already (it browses before it announces), so it heard ours.
    BeforeOurs,
    /// After it: the peer may have started after our announcement.
    AfterOurs,
}

impl Heard {
    /// How long to wait for the dial of a peer that decides the pair.
    fn grace(self) -> Duration {
        match self {
            Heard::BeforeOurs => FOLLOWER_GRACE,
            Heard::AfterOurs => SHORT_GRACE,
        }
    }
}
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The delay before the next dial after `failures` failures in a row (before
/// jitter): 100 ms, doubling, at most 5 s. Even a dead or bogus peer that
/// stays advertised costs one dial every few seconds; its record expires
/// (or is dropped by a verification) in the end.
pub(crate) fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_MAX)
}

/// What a dial is for: a peer found over mDNS, or a static address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Peer(NodeId),
    Addr(SocketAddr),
}

/// How a dial ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DialEnd {
    /// The handshake completed with this node at this address (for a peer
    /// found over mDNS, the node dialed: it proved its key there).
    Linked(NodeId, SocketAddr),
    /// Nothing listens there.
    Refused,
    /// Nothing answered at any address: unreachable, or no answer in time.
    Unanswered,
    /// A failed handshake.
    Failed,
    /// Not made, or given up after the hellos: the peer was linked
    /// already, or its own dial had reached this node (see
    /// [`crate::link::accepting`]).
    Moot,
}

/// What the service must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Connect to these addresses.
    Dial {
        target: Target,
        addrs: Vec<SocketAddr>,
        /// For a peer known only from hints, the peers whose hints gave
        /// the addresses tried (all that gave one, if the dial tries none
        /// of theirs): that nothing answers there is their word gone stale
        /// (or a lie), reported naming them. Empty for any other dial.
        tellers: Vec<NodeId>,
    },
    /// Wait [`backoff`]`(failures)`, jittered, then call [`Mesh::retry`]
    /// with `generation`.
    DialLater {
        target: Target,
        failures: u32,
        generation: u64,
    },
    /// Wait `grace` ([`FOLLOWER_GRACE`] or [`SHORT_GRACE`]), jittered, then
    /// call [`Mesh::retry`] with `generation`: the pair's decider is
    /// expected to dial first.
    Yield {
        target: Target,
        generation: u64,
        grace: Duration,
    },
    /// Ask mDNS whether the peer's record is still answered.
    Verify { peer: NodeId },
    /// Browse mDNS with queries: this node knows a peer it is not linked
    /// to, or none at all (see [`Mesh::browse`]).
    Query,
    /// Browse mDNS from what the daemon hears, without queries of its own:
    /// this node is linked to every peer it knows, whose lists of links
    /// tell it of the members they link to.
    Cache,
    /// Send the verdict on the link (the link then opens or closes).
    SendVerdict { link: LinkId, verdict: Verdict },
    /// The link is the pair's one link: publish it and tell subscribers.
    Open { link: LinkId },
    /// Close the link.
    Close { link: LinkId, reason: CloseReason },
    /// Tell the peer of this open link that an older live node holds its
    /// key too (it was refused with a conflict).
    TellTwin { link: LinkId },
    /// A peer was ignored: the table of peers is full.
    TooManyPeers { peer: NodeId },
}

#[derive(Debug)]
struct Link {
    peer: NodeId,
    incarnation: u64,
    open: bool,
}

/// Dialing state of one target.
#[derive(Debug, Default)]
struct Dialing {
    /// A dial is under way.
    busy: bool,
    /// A redial is scheduled (its generation is `generation`).
    waiting: bool,
    failures: u32,
    /// Bumped whenever a dial starts, so a stale scheduled redial is ignored.
    generation: u64,
}

impl Dialing {
    /// Schedules a look at `target` after `grace`, while the peer's own
    /// dial is expected to link the pair.
    fn wait_for_peer(&mut self, target: Target, grace: Duration) -> Action {
        self.waiting = true;
        self.generation += 1;
        Action::Yield {
            target,
            generation: self.generation,
            grace,
        }
    }
}

#[derive(Debug, Default)]
struct Peer {
    /// The addresses of its latest record.
    addrs: Vec<SocketAddr>,
    /// The last address where it proved its key: dialed first, whatever a
    /// record (which anyone can announce) says since.
    good: Option<SocketAddr>,
    dialing: Dialing,
    /// mDNS said goodbye while a dial was under way: forget it when it ends.
    gone: bool,
    /// mDNS said goodbye while a link to it was up, and its record has not
    /// answered since: forget it when its last link closes.
    doubted: bool,
    /// Found over mDNS (or its record answered since); otherwise known only
    /// from peers' hints (see [`Mesh::hinted`]).
    advertised: bool,
    /// The peers whose hints gave `addrs`, each with the address it gave,
    /// while no dial to that address has ended (at most
    /// [`hints::MAX_ADDRS`]).
    tellers: Vec<(NodeId, SocketAddr)>,
    /// The latest peers whose hints gave `addrs`, each with its address,
    /// kept after their dials end, to name them when a dial finds nothing
    /// there (at most [`hints::MAX_ADDRS`]).
    told: Vec<(NodeId, SocketAddr)>,
    /// The addresses of the dial under way.
    dialed: Vec<SocketAddr>,
}

#[derive(Debug, Default)]
struct Static {
    /// The node that answered there last.
    peer: Option<NodeId>,
    dialing: Dialing,
}

/// The state of one node's view of the mesh.
#[derive(Debug)]
pub(crate) struct Mesh {
    me: NodeId,
    peers: HashMap<NodeId, Peer>,
    statics: HashMap<SocketAddr, Static>,
    links: HashMap<LinkId, Link>,
    /// Peers this node links with no more (see [`Mesh::disconnect`]).
    ended: HashSet<NodeId>,
    /// Where peers not (yet) discovered proved their keys on links they
    /// dialed (see [`Mesh::proven_at`]), at most [`MAX_PEERS`].
    proven: HashMap<NodeId, SocketAddr>,
    /// What peers' hints have cost, to bound it.
    tellers: Tellers,
    /// Where this node listens (see [`Mesh::listening_at`]).
    listen_at: Vec<SocketAddr>,
    /// mDNS is browsed with queries (see [`Mesh::browse`]).
    querying: bool,
}

impl Mesh {
    pub(crate) fn new(me: NodeId) -> Self {
        Mesh {
            me,
            peers: HashMap::new(),
            statics: HashMap::new(),
            links: HashMap::new(),
            ended: HashSet::new(),
            proven: HashMap::new(),
            tellers: Tellers::default(),
            listen_at: Vec::new(),
            querying: true,
        }
    }

    /// This node listens at `addrs`: a hint of a member there names this
    /// node, whatever id it gives, and is no hint (dialed, it would be this
    /// node answering itself, a failed handshake).
    pub(crate) fn listening_at(&mut self, addrs: Vec<SocketAddr>) {
        self.listen_at = addrs;
    }

    /// True if `at` is where this node listens. An IPv6 scope is left out:
    /// a hint's is the teller's link's, and this node's own addresses
    /// carry none.
    fn is_mine(&self, at: SocketAddr) -> bool {
        self.listen_at
            .iter()
            .any(|a| a.ip() == at.ip() && a.port() == at.port())
    }

    /// Forgets `old`, a pair's link that a newer one replaces, and closes it.
    fn replaced(&mut self, old: LinkId) -> Action {
        self.links.remove(&old);
        Action::Close {
            link: old,
            reason: CloseReason::Replaced,
        }
    }

    fn open_link(&self, peer: &NodeId) -> Option<LinkId> {
        self.links
            .iter()
            .find(|(_, l)| l.open && &l.peer == peer)
            .map(|(id, _)| *id)
    }

    fn has_link(&self, peer: &NodeId) -> bool {
        self.links.values().any(|l| &l.peer == peer)
    }

    /// True if `link` is the open link of its pair.
    pub(crate) fn is_open(&self, link: LinkId) -> bool {
        self.links.get(&link).is_some_and(|l| l.open)
    }

    /// Number of open links.
    #[cfg(test)]
    pub(crate) fn open_count(&self) -> usize {
        self.links.values().filter(|l| l.open).count()
    }

    /// Number of peers tracked.
    #[cfg(test)]
    pub(crate) fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The peers advertised over mDNS that are still tracked, sorted.
    pub(crate) fn advertised(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.advertised && !p.gone && !p.doubted)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Where discovery stands: which peers are linked, and how many of the
    /// others known (advertised, or static) are still being reached (a dial
    /// under way, a link awaiting its verdict) or were not reached (their
    /// last dial failed, or their link closed). Peers this node
    /// disconnected are left out.
    pub(crate) fn settle(&self) -> Settle {
        let mut linked: Vec<(NodeId, u64)> = self
            .links
            .values()
            .filter(|l| l.open)
            .map(|l| (l.peer.clone(), l.incarnation))
            .collect();
        linked.sort();
        linked.dedup_by(|a, b| a.0 == b.0);
        let mut settle = Settle {
            linked,
            pending: 0,
            unreached: 0,
        };
        let is_linked = |p: &NodeId| settle.linked.iter().any(|(l, _)| l == p);
        let mut count = |node: Option<&NodeId>, dialing: &Dialing| match node {
            Some(p) if self.ended.contains(p) || is_linked(p) => {}
            _ if dialing.failures > 0 && !dialing.busy => settle.unreached += 1,
            _ => settle.pending += 1,
        };
        for (id, peer) in &self.peers {
            count(Some(id), &peer.dialing);
        }
        for s in self.statics.values() {
            // A static peer that is also advertised counts once.
            if s.peer.as_ref().is_none_or(|p| !self.peers.contains_key(p)) {
                count(s.peer.as_ref(), &s.dialing);
            }
        }
        // A peer that dialed us before we found it: its link awaits a
        // verdict.
        let known = |p: &NodeId| {
            self.peers.contains_key(p) || self.statics.values().any(|s| s.peer.as_ref() == Some(p))
        };
        let mut waiting: Vec<&NodeId> = self
            .links
            .values()
            .map(|l| &l.peer)
            .filter(|p| !known(p) && !self.ended.contains(*p))
            .filter(|p| !settle.linked.iter().any(|(l, _)| l == *p))
            .collect();
        waiting.sort();
        waiting.dedup();
        settle.pending += waiting.len();
        settle
    }

    fn dialing(&mut self, target: &Target) -> Option<&mut Dialing> {
        match target {
            Target::Peer(p) => self.peers.get_mut(p).map(|p| &mut p.dialing),
            Target::Addr(a) => self.statics.get_mut(a).map(|s| &mut s.dialing),
        }
    }

    /// The node a target is known to reach, if any.
    fn node_of(&self, target: &Target) -> Option<NodeId> {
        match target {
            Target::Peer(p) => Some(p.clone()),
            Target::Addr(a) => self.statics.get(a).and_then(|s| s.peer.clone()),
        }
    }

    fn start_dial(&mut self, target: Target) -> Vec<Action> {
        let (addrs, tellers) = match &target {
            Target::Peer(p) => {
                let peer = self.peers.get_mut(p).expect("target is known");
                let mut addrs: Vec<SocketAddr> = peer.good.into_iter().collect();
                addrs.extend(peer.addrs.iter().filter(|a| Some(**a) != peer.good));
                addrs.truncate(DIAL_ADDRS);
                peer.dialed.clone_from(&addrs);
                let mut tellers = Vec::new();
                if !peer.advertised {
                    let tried = |at: &SocketAddr| addrs.contains(at);
                    let any_tried = peer.told.iter().any(|(_, at)| tried(at));
                    for (t, at) in &peer.told {
                        if (tried(at) || !any_tried) && !tellers.contains(t) {
                            tellers.push(t.clone());
                        }
                    }
                }
                (addrs, tellers)
            }
            Target::Addr(a) => (vec![*a], Vec::new()),
        };
        let d = self.dialing(&target).expect("target is known");
        d.busy = true;
        d.waiting = false;
        d.generation += 1;
        vec![Action::Dial {
            target,
            addrs,
            tellers,
        }]
    }

    /// True if the node `target` reaches is one this node links with no
    /// more.
    fn is_ended(&self, target: &Target) -> bool {
        self.node_of(target)
            .is_some_and(|p| self.ended.contains(&p))
    }

    /// Dials `target` unless it is busy, backing off, already linked, or
    /// ended.
    fn maybe_dial(&mut self, target: Target) -> Vec<Action> {
        let linked = self
            .node_of(&target)
            .is_some_and(|p| self.has_link(&p) || self.ended.contains(&p));
        match self.dialing(&target) {
            Some(d) if !d.busy && !d.waiting && !linked => self.start_dial(target),
            _ => vec![],
        }
    }

    /// mDNS resolved (or re-resolved) a peer. Dials it unless a link to it is
    /// open or pending, or a dial is under way. A peer waiting out a backoff
    /// is dialed at once only if its addresses changed. A peer seen for the
    /// first time that decides the pair is given time to dial first: the
    /// full [`FOLLOWER_GRACE`] if it heard of us, [`SHORT_GRACE`] if it may
    /// not have.
    pub(crate) fn discovered(
        &mut self,
        peer: NodeId,
        addrs: Vec<SocketAddr>,
        heard: Heard,
    ) -> Vec<Action> {
        if peer == self.me || addrs.is_empty() {
            return vec![];
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            return vec![Action::TooManyPeers { peer }];
        }
        let first = !self.peers.contains_key(&peer);
        let entry = self.peers.entry(peer.clone()).or_default();
        if first {
            entry.good = self.proven.remove(&peer);
        }
        // Known from hints until now: its record's addresses take their
        // place (its good address stays), and a wait for the decider's dial
        // goes on, cut short if the decider may not have heard of us (as
        // for a peer seen for the first time).
        let hinted = !first && !entry.advertised;
        let sooner = hinted && heard == Heard::AfterOurs && entry.dialing.waiting;
        entry.advertised = true;
        entry.told.clear();
        entry.gone = false;
        entry.doubted = false;
        let changed = entry.addrs != addrs;
        entry.addrs = addrs;
        if changed && entry.dialing.waiting && !hinted {
            entry.dialing.waiting = false;
        }
        self.unhint(&peer, false);
        if (first || sooner) && !decides(&self.me, &peer) && !self.has_link(&peer) {
            let d = &mut self.peers.get_mut(&peer).expect("inserted").dialing;
            return vec![d.wait_for_peer(Target::Peer(peer), heard.grace())];
        }
        self.maybe_dial(Target::Peer(peer))
    }

    /// `peer` proved its key on a link from `at` (its address and the port
    /// its hello says it listens on): dialed first from now on, whatever a
    /// record says, as after a dial of ours that linked there.
    pub(crate) fn proven_at(&mut self, peer: &NodeId, at: SocketAddr) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.good = Some(at);
        } else if self.proven.len() < MAX_PEERS || self.proven.contains_key(peer) {
            self.proven.insert(peer.clone(), at);
        }
    }

    /// A static peer address was added (from the settings or at run time).
    pub(crate) fn add_static(&mut self, addr: SocketAddr) -> Vec<Action> {
        self.statics.entry(addr).or_default();
        self.maybe_dial(Target::Addr(addr))
    }

    /// A dial ended. A failure schedules the next try; a refusal also asks
    /// mDNS to verify the record. A peer known only from hints is kept,
    /// and redialed the same way, while some linked peer whose hints still
    /// count says it is linked to it (`says(peer, member)`: the peer's
    /// current list of links names the member); otherwise it is forgotten.
    /// Its tellers whose address this dial tried pay for the failure.
    pub(crate) fn dial_ended(
        &mut self,
        target: &Target,
        end: DialEnd,
        says: impl Fn(&NodeId, &NodeId) -> bool,
    ) -> Vec<Action> {
        let hinted_only = match target {
            Target::Peer(p) => self.peers.get(p).is_some_and(|p| !p.advertised),
            Target::Addr(_) => false,
        };
        let failed = matches!(
            end,
            DialEnd::Refused | DialEnd::Unanswered | DialEnd::Failed
        );
        if let (Target::Peer(p), true, true) = (target, hinted_only, failed) {
            self.charge(p);
            if !self.peers[p].gone && self.named(p, &says) {
                let d = &mut self.peers.get_mut(p).expect("checked").dialing;
                d.busy = false;
                d.failures = d.failures.saturating_add(1);
                return self.dial_later(target.clone());
            }
            self.forget(p);
            return vec![];
        }
        let Some(d) = self.dialing(target) else {
            return vec![];
        };
        d.busy = false;
        let mut actions = Vec::new();
        match end {
            DialEnd::Linked(node, at) => match target {
                Target::Addr(a) => self.statics.get_mut(a).expect("checked").peer = Some(node),
                Target::Peer(p) => {
                    self.peers.get_mut(p).expect("checked").good = Some(at);
                    self.unhint(p, false);
                }
            },
            DialEnd::Moot => {
                // Looked at again after the grace: by then the peer's dial
                // has linked the pair, or has failed and this one is due.
                actions.push(d.wait_for_peer(target.clone(), FOLLOWER_GRACE));
            }
            DialEnd::Refused | DialEnd::Unanswered | DialEnd::Failed => {
                d.failures = d.failures.saturating_add(1);
                if let (Target::Peer(peer), DialEnd::Refused) = (target, &end) {
                    actions.push(Action::Verify { peer: peer.clone() });
                }
                actions.extend(self.dial_later(target.clone()));
            }
        }
        if let Target::Peer(p) = target {
            if self.peers[p].gone {
                self.forget(p);
                return vec![];
            }
        }
        actions
    }

    /// True if a linked peer whose hints still count says it is linked to
    /// `member`.
    fn named(&self, member: &NodeId, says: impl Fn(&NodeId, &NodeId) -> bool) -> bool {
        self.links.values().any(|l| {
            l.open && &l.peer != member && !self.tellers.spent(&l.peer) && says(&l.peer, member)
        })
    }

    /// Forgets `peer`, settling its tellers' hints unpaid.
    fn forget(&mut self, peer: &NodeId) {
        self.unhint(peer, false);
        self.peers.remove(peer);
    }

    /// `peer`'s dial failed: the tellers whose address it tried pay; the
    /// others' hints stay pending, for the next dial.
    fn charge(&mut self, peer: &NodeId) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let dialed = std::mem::take(&mut p.dialed);
        let (tried, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut p.tellers)
            .into_iter()
            .partition(|(_, at)| dialed.contains(at));
        p.tellers = rest;
        for (teller, _) in tried {
            self.tellers.settled(&teller, peer, true);
        }
    }

    /// Peer `from`, on a link from `via`, says it is linked to `members`,
    /// each listening where it says (see [`hints::dialable`] for where
    /// that is from here; never where this node listens, see
    /// [`Mesh::listening_at`]). A member this node neither links to,
    /// nor knows from mDNS or a static address, is dialed there as one
    /// found over mDNS would be (the pair's decider at once, the other end
    /// after [`FOLLOWER_GRACE`]); one known from other peers' hints only
    /// gains the address, to try in the same dial. Within the bounds of
    /// [`Tellers`]: a hint that fails costs its teller, and that teller's
    /// hint of it is not taken again; the member is redialed while a
    /// linked peer names it (see [`Mesh::dial_ended`]). A hint never
    /// changes a peer found over mDNS.
    pub(crate) fn hinted(
        &mut self,
        from: &NodeId,
        via: SocketAddr,
        mut members: Vec<(NodeId, SocketAddr)>,
    ) -> Vec<Action> {
        // Most members a list names are found over mDNS already.
        members.retain(|(m, _)| !self.peers.get(m).is_some_and(|p| p.advertised));
        if members.is_empty() {
            return vec![];
        }
        // Looked up once per member: a list names up to every node.
        let with_link: HashSet<&str> = self.links.values().map(|l| l.peer.as_str()).collect();
        let with_static: HashSet<&str> = self
            .statics
            .values()
            .filter_map(|s| s.peer.as_ref().map(NodeId::as_str))
            .collect();
        let linked = |t: &NodeId| with_link.contains(t.as_str());
        let mut dial = Vec::new();
        let mut wait = Vec::new();
        for (member, at) in members {
            if member == self.me
                || member == *from
                || self.ended.contains(&member)
                || with_link.contains(member.as_str())
                || with_static.contains(member.as_str())
            {
                continue;
            }
            let Some(at) = hints::dialable(at, via).filter(|at| !self.is_mine(*at)) else {
                continue;
            };
            match self.peers.get_mut(&member) {
                Some(p) if p.advertised => unreachable!("left out above"),
                Some(p) => {
                    let more = !p.addrs.contains(&at)
                        && !p.tellers.iter().any(|(t, _)| t == from)
                        && p.tellers.len() < hints::MAX_ADDRS;
                    if more && self.tellers.take(from, &member, linked) {
                        p.addrs.push(at);
                        p.tellers.push((from.clone(), at));
                        if p.told.len() >= hints::MAX_ADDRS {
                            p.told.remove(0);
                        }
                        p.told.push((from.clone(), at));
                    }
                }
                None => {
                    if self.peers.len() >= MAX_PEERS || !self.tellers.take(from, &member, linked) {
                        continue;
                    }
                    let peer = Peer {
                        addrs: vec![at],
                        good: self.proven.remove(&member),
                        tellers: vec![(from.clone(), at)],
                        told: vec![(from.clone(), at)],
                        ..Peer::default()
                    };
                    if decides(&self.me, &member) {
                        dial.push(member.clone());
                    } else {
                        wait.push(member.clone());
                    }
                    self.peers.insert(member, peer);
                }
            }
        }
        let mut actions = Vec::new();
        for member in dial {
            actions.extend(self.maybe_dial(Target::Peer(member)));
        }
        for member in wait {
            let d = &mut self.peers.get_mut(&member).expect("inserted").dialing;
            actions.push(d.wait_for_peer(Target::Peer(member), FOLLOWER_GRACE));
        }
        actions
    }

    /// True if this node knows at least one peer (advertised, hinted or
    /// static) and holds an open link to every peer it knows (but those
    /// it disconnected): peers' lists of links then tell it of the members
    /// they link to, and mDNS needs to ask no more. Cheap while it is
    /// false for want of links: asked after every change.
    pub(crate) fn all_linked(&self) -> bool {
        let open = self.links.values().filter(|l| l.open).count();
        if open == 0 || open < self.peers.len().saturating_sub(self.ended.len()) {
            return false;
        }
        let linked: HashSet<&NodeId> = self
            .links
            .values()
            .filter(|l| l.open)
            .map(|l| &l.peer)
            .collect();
        let mut known = 0;
        let peers = self.peers.keys().map(Some);
        let statics = self.statics.values().map(|s| s.peer.as_ref());
        for p in peers.chain(statics) {
            match p {
                Some(p) if self.ended.contains(p) => {}
                Some(p) if linked.contains(p) => known += 1,
                // Not linked, or a static address that never answered.
                _ => return false,
            }
        }
        known > 0
    }

    /// How mDNS is to be browsed, when that changed since the last call:
    /// [`Action::Cache`] once [`all_linked`](Self::all_linked) holds,
    /// [`Action::Query`] again whenever it stops holding (a member named
    /// that is not linked, a link lost and not regained). Asked by the
    /// service after every event.
    pub(crate) fn browse(&mut self) -> Option<Action> {
        let cache = self.all_linked();
        if cache != self.querying {
            return None;
        }
        self.querying = !cache;
        Some(if cache { Action::Cache } else { Action::Query })
    }

    /// `peer`'s hints are settled: its tellers' credit comes back, and each
    /// pays if its hint `failed`.
    fn unhint(&mut self, peer: &NodeId, failed: bool) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        for (teller, _) in std::mem::take(&mut p.tellers) {
            self.tellers.settled(&teller, peer, failed);
        }
    }

    fn dial_later(&mut self, target: Target) -> Vec<Action> {
        if self.is_ended(&target) {
            return vec![];
        }
        let Some(d) = self.dialing(&target) else {
            return vec![];
        };
        if d.busy || d.waiting {
            return vec![];
        }
        d.waiting = true;
        d.generation += 1;
        vec![Action::DialLater {
            failures: d.failures,
            generation: d.generation,
            target,
        }]
    }

    /// A scheduled redial is due. A peer known only from hints, past its
    /// hints' first dial, that no linked peer names any more (`says`, as for
    /// [`dial_ended`](Self::dial_ended)) is forgotten instead.
    pub(crate) fn retry(
        &mut self,
        target: Target,
        generation: u64,
        says: impl Fn(&NodeId, &NodeId) -> bool,
    ) -> Vec<Action> {
        match self.dialing(&target) {
            Some(d) if d.waiting && d.generation == generation => {
                d.waiting = false;
                if let Target::Peer(p) = &target {
                    // Past its hints' first dial (the tellers' hints are
                    // settled).
                    let peer = &self.peers[p];
                    let hinted = !peer.advertised && peer.tellers.is_empty();
                    if hinted && !self.has_link(p) && !self.named(p, &says) {
                        self.forget(p);
                        return vec![];
                    }
                }
                self.maybe_dial(target)
            }
            _ => vec![],
        }
    }

    /// mDNS says the peer is gone. Its link, if any, stays: TCP is the truth
    /// about a link, and a goodbye can arrive before the peer's last frames.
    /// A peer with a link up is not taken at multicast's word (anyone on
    /// the LAN can send a goodbye in its name): its record is verified, and
    /// it is kept, doubted, until its last link closes (then forgotten) or
    /// its record answers again (then it stays, as before). Any other peer
    /// is no longer redialed.
    pub(crate) fn lost(&mut self, peer: &NodeId) -> Vec<Action> {
        let linked = self.has_link(peer);
        let Some(p) = self.peers.get_mut(peer) else {
            return vec![];
        };
        if p.dialing.busy {
            p.gone = true;
        } else if linked {
            if !p.doubted {
                p.doubted = true;
                return vec![Action::Verify { peer: peer.clone() }];
            }
        } else {
            self.unhint(peer, false);
            self.peers.remove(peer);
        }
        vec![]
    }

    /// A link finished its hello exchange with `peer` (already checked to be
    /// of our cluster and not ourselves).
    pub(crate) fn handshaken(
        &mut self,
        link: LinkId,
        peer: NodeId,
        incarnation: u64,
    ) -> Vec<Action> {
        if self.ended.contains(&peer) {
            // This node links with it no more: the decider rejects the link
            // (a follower holding no other link dials again, backing off);
            // the other end closes it before a verdict can open it.
            return vec![if decides(&self.me, &peer) {
                Action::SendVerdict {
                    link,
                    verdict: Verdict::Reject,
                }
            } else {
                Action::Close {
                    link,
                    reason: CloseReason::Local,
                }
            }];
        }
        if !decides(&self.me, &peer) {
            // Wait for the decider's verdict.
            self.links.insert(
                link,
                Link {
                    peer,
                    incarnation,
                    open: false,
                },
            );
            return vec![];
        }
        let mut actions = Vec::new();
        if let Some(old) = self.open_link(&peer) {
            let held = self.links[&old].incarnation;
            if incarnation == held {
                return vec![Action::SendVerdict {
                    link,
                    verdict: Verdict::Reject,
                }];
            }
            if incarnation < held {
                // A newer node holds this id and is alive: the older one is
                // refused, and both are told.
                return vec![
                    Action::SendVerdict {
                        link,
                        verdict: Verdict::Conflict,
                    },
                    Action::TellTwin { link: old },
                ];
            }
            // The peer restarted: its old link is stale.
            actions.push(self.replaced(old));
        }
        self.unhint(&peer, false);
        self.links.insert(
            link,
            Link {
                peer,
                incarnation,
                open: true,
            },
        );
        actions.push(Action::SendVerdict {
            link,
            verdict: Verdict::Accept,
        });
        actions.push(Action::Open { link });
        actions
    }

    /// The decider's verdict arrived on a pending link.
    pub(crate) fn verdict(&mut self, link: LinkId, verdict: Verdict) -> Vec<Action> {
        let Some(state) = self.links.get(&link) else {
            return vec![];
        };
        if state.open || decides(&self.me, &state.peer) {
            self.links.remove(&link);
            return vec![Action::Close {
                link,
                reason: CloseReason::Protocol("verdict from a peer that does not decide".into()),
            }];
        }
        let (peer, incarnation) = (state.peer.clone(), state.incarnation);
        if self.ended.contains(&peer) {
            // Disconnected while the verdict was on its way.
            self.links.remove(&link);
            return vec![Action::Close {
                link,
                reason: CloseReason::Local,
            }];
        }
        match verdict {
            Verdict::Reject => {
                self.links.remove(&link);
                let mut actions = vec![Action::Close {
                    link,
                    reason: CloseReason::PeerClosed,
                }];
                if !self.has_link(&peer) {
                    // The decider holds a link we lost: dial until it has
                    // let go of it too.
                    if let Some(target) = self.target_of(&peer) {
                        let d = self.dialing(&target).expect("known");
                        d.failures = d.failures.saturating_add(1);
                        actions.extend(self.dial_later(target));
                    }
                }
                return actions;
            }
            Verdict::Conflict => {
                self.links.remove(&link);
                return vec![Action::Close {
                    link,
                    reason: CloseReason::IdConflict,
                }];
            }
            Verdict::Accept => {}
        }
        let mut actions = Vec::new();
        if let Some(old) = self.open_link(&peer) {
            if self.links[&old].incarnation > incarnation {
                // The decider is an older node with the id a newer live node
                // holds: tell both, and keep the newer link.
                self.links.remove(&link);
                return vec![
                    Action::SendVerdict {
                        link,
                        verdict: Verdict::Conflict,
                    },
                    Action::Close {
                        link,
                        reason: CloseReason::IdConflict,
                    },
                    Action::TellTwin { link: old },
                ];
            }
            actions.push(self.replaced(old));
        }
        self.links.get_mut(&link).expect("checked above").open = true;
        self.unhint(&peer, false);
        actions.push(Action::Open { link });
        actions
    }

    /// Ends this node's links with `peer` for good: closes them, and neither
    /// dials `peer` nor keeps a link it opens, until [`reconnect`](Self::reconnect).
    pub(crate) fn disconnect(&mut self, peer: NodeId) -> Vec<Action> {
        let mut closing: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        closing.sort();
        if let Some(target) = self.target_of(&peer) {
            // A redial already scheduled finds a newer generation and lapses.
            let d = self.dialing(&target).expect("known");
            d.waiting = false;
            d.generation += 1;
        }
        self.ended.insert(peer);
        closing
            .into_iter()
            .map(|link| Action::Close {
                link,
                reason: CloseReason::Local,
            })
            .collect()
    }

    /// Links with `peer` again after [`disconnect`](Self::disconnect): dials
    /// it at once if it is known.
    pub(crate) fn reconnect(&mut self, peer: &NodeId) -> Vec<Action> {
        if !self.ended.remove(peer) {
            return vec![];
        }
        match self.target_of(peer) {
            Some(target) => self.maybe_dial(target),
            None => vec![],
        }
    }

    /// Where `peer` can be dialed: its mDNS record, or a static address it
    /// answered at.
    fn target_of(&self, peer: &NodeId) -> Option<Target> {
        if self.peers.contains_key(peer) {
            return Some(Target::Peer(peer.clone()));
        }
        self.statics
            .iter()
            .find(|(_, s)| s.peer.as_ref() == Some(peer))
            .map(|(a, _)| Target::Addr(*a))
    }

    /// A link closed. If it was the peer's last link, the peer is still known
    /// and `redial` says so, schedules a redial: at the first backoff step if
    /// the link was `stable`, later otherwise.
    pub(crate) fn closed(&mut self, link: LinkId, redial: Redial, stable: bool) -> Vec<Action> {
        let Some(l) = self.links.remove(&link) else {
            return vec![];
        };
        if !self.has_link(&l.peer) && self.peers.get(&l.peer).is_some_and(|p| p.doubted) {
            self.peers.remove(&l.peer);
        }
        if redial == Redial::No || self.has_link(&l.peer) {
            return vec![];
        }
        let Some(target) = self.target_of(&l.peer) else {
            return vec![];
        };
        let d = self.dialing(&target).expect("known");
        if stable {
            d.failures = 0;
        } else if l.open {
            d.failures = d.failures.saturating_add(1);
        }
        let floor = match redial {
            Redial::AfterGoodbye => GOODBYE_STEPS,
            _ => 0,
        };
        let mut actions = self.dial_later(target);
        for a in &mut actions {
            if let Action::DialLater { failures, .. } = a {
                *failures = (*failures).max(floor);
            }
        }
        actions
    }
}

/// Where discovery stands, from [`Mesh::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settle {
    /// The peers with an open link, sorted, with their incarnations.
    pub(crate) linked: Vec<(NodeId, u64)>,
    /// Known peers still being reached: a dial under way, or a link
    /// awaiting its verdict.
    pub(crate) pending: usize,
    /// Known peers not reached: their last dial failed, or their link
    /// closed.
    pub(crate) unreached: usize,
}

/// Whether a closed link is dialed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Redial {
    /// No: this node closed it, it was replaced, a duplicate, a conflict.
    No,
    /// Yes, at the backoff's pace: the link failed.
    Soon,
    /// Yes, but not before a goodbye would have come: the peer closed it,
    /// and a peer that is leaving sends its mDNS goodbye, which takes effect
    /// about a second later (a killed peer sends none, and is redialed,
    /// refused, and its record verified away).
    AfterGoodbye,
}

/// Backoff steps a redial after a peer's close waits at least (1.6 to 4.8 s
/// with the jitter).
const GOODBYE_STEPS: u32 = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::id;

    /// No peer's list of links names any member.
    fn no_one(_: &NodeId, _: &NodeId) -> bool {
        false
    }
    fn addr() -> Vec<SocketAddr> {
        vec!["127.0.0.1:1".parse().unwrap()]
    }
    fn opened(actions: &[Action]) -> Vec<LinkId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Open { link } => Some(*link),
                _ => None,
            })
            .collect()
    }
    fn verdict_of(actions: &[Action], l: LinkId) -> Option<Verdict> {
        actions.iter().find_map(|a| match a {
            Action::SendVerdict { link, verdict } if *link == l => Some(*verdict),
            _ => None,
        })
    }

    /// Delivers the decider's verdicts to the other end, as the wire would.
    fn deliver(to: &mut Mesh, from_actions: &[Action]) -> Vec<Action> {
        let mut out = Vec::new();
        for a in from_actions {
            if let Action::SendVerdict { link, verdict } = a {
                out.extend(to.verdict(*link, *verdict));
            }
        }
        out
    }

    #[test]
    fn never_links_to_itself() {
        let mut m = Mesh::new(id("0a"));
        assert!(m.discovered(id("0a"), addr(), Heard::BeforeOurs).is_empty());
    }

    /// The decider of a pair dials a peer at once, however it heard of it;
    /// the other end waits for that dial: the full grace when the decider
    /// was browsing before our announcement, a short one when it may have
    /// started after it and not heard of us yet. The wait ends in a dial.
    #[test]
    fn the_follower_waits_long_only_for_a_decider_that_heard_it() {
        for heard in [Heard::BeforeOurs, Heard::AfterOurs] {
            let mut decider = Mesh::new(id("01"));
            let dials = decider.discovered(id("02"), addr(), heard);
            assert!(matches!(&dials[..], [Action::Dial { .. }]), "{dials:?}");

            let mut follower = Mesh::new(id("02"));
            let (generation, grace) = match &follower.discovered(id("01"), addr(), heard)[..] {
                [Action::Yield {
                    generation, grace, ..
                }] => (*generation, *grace),
                other => panic!("{other:?}"),
            };
            let expected = match heard {
                Heard::BeforeOurs => FOLLOWER_GRACE,
                Heard::AfterOurs => SHORT_GRACE,
            };
            assert_eq!(grace, expected);
            // Heard again while waiting: still waiting, no dial.
            assert!(follower.discovered(id("01"), addr(), heard).is_empty());
            let redial = follower.retry(Target::Peer(id("01")), generation, no_one);
            assert!(matches!(&redial[..], [Action::Dial { .. }]), "{redial:?}");
        }
    }

    /// A moot dial (the peer's own dial reached us first) is looked at
    /// again after the grace: a dial then if the pair is still not linked,
    /// nothing if it is.
    #[test]
    fn a_moot_dial_is_looked_at_again_after_the_grace() {
        let mut m = Mesh::new(id("01"));
        let peer = Target::Peer(id("02"));
        let dial = |a: &[Action]| matches!(a, [Action::Dial { .. }]);
        assert!(dial(&m.discovered(id("02"), addr(), Heard::BeforeOurs)));
        let yielded = |a: Vec<Action>| match &a[..] {
            [Action::Yield { generation, .. }] => *generation,
            other => panic!("{other:?}"),
        };
        let generation = yielded(m.dial_ended(&peer, DialEnd::Moot, no_one));
        // The peer's dial failed meanwhile: this one is made.
        assert!(dial(&m.retry(peer.clone(), generation, no_one)));
        let generation = yielded(m.dial_ended(&peer, DialEnd::Moot, no_one));
        // The peer's dial linked the pair meanwhile: nothing to do.
        assert_eq!(opened(&m.handshaken(1, id("02"), 1)), vec![1]);
        assert!(m.retry(peer, generation, no_one).is_empty());
    }

    /// Discovery has settled when every known peer is linked or its dial
    /// has ended in failure; disconnected peers do not count.
    #[test]
    fn settling_follows_dials_links_and_failures() {
        let mut m = Mesh::new(id("04"));
        let settle = |m: &Mesh| {
            let s = m.settle();
            let linked: Vec<NodeId> = s.linked.into_iter().map(|(p, _)| p).collect();
            (linked, s.pending, s.unreached)
        };
        assert_eq!(settle(&m), (vec![], 0, 0));
        m.discovered(id("02"), addr(), Heard::BeforeOurs);
        m.discovered(id("03"), addr(), Heard::BeforeOurs);
        m.discovered(id("06"), addr(), Heard::BeforeOurs);
        let stat: SocketAddr = "10.99.0.9:4".parse().unwrap();
        m.add_static(stat);
        assert_eq!(settle(&m), (vec![], 4, 0));
        // 06 linked: its link awaits no verdict (we decide), so it is open.
        m.dial_ended(
            &Target::Peer(id("06")),
            DialEnd::Linked(id("06"), addr()[0]),
            no_one,
        );
        m.handshaken(1, id("06"), 7);
        // 02 refused; the static peer answered as 01, whose link awaits
        // 01's verdict.
        m.dial_ended(&Target::Peer(id("02")), DialEnd::Refused, no_one);
        m.dial_ended(&Target::Addr(stat), DialEnd::Linked(id("01"), stat), no_one);
        m.handshaken(2, id("01"), 7);
        assert_eq!(settle(&m), (vec![id("06")], 2, 1));
        m.verdict(2, Verdict::Accept);
        m.disconnect(id("03"));
        assert_eq!(settle(&m), (vec![id("01"), id("06")], 0, 1));
        // A link that closes leaves its peer unreached until redialed.
        m.closed(1, Redial::Soon, false);
        assert_eq!(settle(&m), (vec![id("01")], 0, 2));
    }

    /// A link that awaits its verdict counts as being reached, even from a
    /// peer not (yet) found over mDNS.
    #[test]
    fn a_link_awaiting_its_verdict_is_pending() {
        let mut m = Mesh::new(id("0b"));
        m.handshaken(1, id("0a"), 7);
        let s = m.settle();
        assert_eq!((s.linked.len(), s.pending, s.unreached), (0, 1, 0));
        m.verdict(1, Verdict::Accept);
        let s = m.settle();
        assert_eq!((s.linked.len(), s.pending, s.unreached), (1, 0, 0));
    }

    #[test]
    fn discovery_dials_once() {
        let mut m = Mesh::new(id("0a"));
        assert!(matches!(
            m.discovered(id("0b"), addr(), Heard::BeforeOurs)[..],
            [Action::Dial { .. }]
        ));
        // A re-announcement (say, with an IPv6 address) while dialing.
        assert!(m.discovered(id("0b"), addr(), Heard::BeforeOurs).is_empty());
        m.dial_ended(
            &Target::Peer(id("0b")),
            DialEnd::Linked(id("0b"), addr()[0]),
            no_one,
        );
        m.handshaken(1, id("0b"), 7);
        assert!(
            m.discovered(id("0b"), addr(), Heard::BeforeOurs).is_empty(),
            "linked peers are not redialed"
        );
    }

    /// Both ends dial at once: links 1 (a->b) and 2 (b->a); each end sees the
    /// two hellos complete in every possible order.
    #[test]
    fn simultaneous_dials_keep_one_and_the_same_link() {
        for decider_first in [1, 2] {
            for other_first in [1, 2] {
                let (a, b) = (id("00a"), id("0a0"));
                let mut ma = Mesh::new(a.clone()); // decider
                let mut mb = Mesh::new(b.clone());
                let second = |x| if x == 1 { 2 } else { 1 };
                let mut acts = ma.handshaken(decider_first, b.clone(), 2);
                acts.extend(ma.handshaken(second(decider_first), b.clone(), 2));
                assert_eq!(verdict_of(&acts, decider_first), Some(Verdict::Accept));
                assert_eq!(
                    verdict_of(&acts, second(decider_first)),
                    Some(Verdict::Reject)
                );
                assert!(mb.handshaken(other_first, a.clone(), 1).is_empty());
                assert!(mb.handshaken(second(other_first), a.clone(), 1).is_empty());
                let got = deliver(&mut mb, &acts);
                assert_eq!(opened(&acts), vec![decider_first]);
                assert_eq!(opened(&got), vec![decider_first]);
                assert_eq!((ma.open_count(), mb.open_count()), (1, 1));
            }
        }
    }

    /// A dial races an accept: the decider's own dial completes after it has
    /// already accepted the peer's link.
    #[test]
    fn dial_racing_accept() {
        let mut ma = Mesh::new(id("01"));
        ma.discovered(id("02"), addr(), Heard::BeforeOurs);
        let acts = ma.handshaken(5, id("02"), 9); // the peer's dial arrived first
        assert_eq!(opened(&acts), vec![5]);
        let acts = ma.handshaken(6, id("02"), 9); // then our dial completes
        assert_eq!(verdict_of(&acts, 6), Some(Verdict::Reject));
        assert_eq!(ma.open_count(), 1);
    }

    /// The other end sees an ACCEPT for a link after a REJECT for its own.
    #[test]
    fn follower_opens_only_accepted_link() {
        let mut mb = Mesh::new(id("02"));
        mb.handshaken(1, id("01"), 9);
        mb.handshaken(2, id("01"), 9);
        assert_eq!(
            mb.verdict(2, Verdict::Reject),
            vec![Action::Close {
                link: 2,
                reason: CloseReason::PeerClosed
            }]
        );
        assert_eq!(
            mb.verdict(1, Verdict::Accept),
            vec![Action::Open { link: 1 }]
        );
        assert_eq!(mb.open_count(), 1);
    }

    /// The decider still holds a stale link that the other end has lost
    /// (it timed out there first), and rejects the other end's redial over
    /// it. The other end, knowing the decider only by a static address the
    /// decider cannot know, dials again, backing off, until it is accepted;
    /// a rejection while another link is pending dials nothing.
    #[test]
    fn a_follower_rejected_over_a_stale_link_dials_until_accepted() {
        let (a, b) = (id("01"), id("02"));
        let at: SocketAddr = "10.99.0.1:4000".parse().unwrap();
        let t = Target::Addr(at);
        let mut mb = Mesh::new(b);
        mb.add_static(at);
        mb.dial_ended(&t, DialEnd::Linked(a.clone(), addr()[0]), no_one);
        mb.handshaken(1, a.clone(), 7);
        mb.verdict(1, Verdict::Accept);
        let (mut failures, g) = dial_later_of(&mb.closed(1, Redial::Soon, false)).unwrap();
        assert!(matches!(
            mb.retry(t.clone(), g, no_one)[..],
            [Action::Dial { .. }]
        ));
        for link in 2..5 {
            mb.dial_ended(&t, DialEnd::Linked(a.clone(), addr()[0]), no_one);
            mb.handshaken(link, a.clone(), 7);
            let acts = mb.verdict(link, Verdict::Reject);
            assert_eq!(
                acts[0],
                Action::Close {
                    link,
                    reason: CloseReason::PeerClosed
                }
            );
            let (f, g2) = dial_later_of(&acts).expect("dialed again");
            assert!(f > failures, "backing off");
            failures = f;
            // The duplicate's own close then changes nothing.
            assert!(mb.closed(link, Redial::No, false).is_empty());
            assert!(matches!(
                mb.retry(t.clone(), g2, no_one)[..],
                [Action::Dial { .. }]
            ));
        }
        mb.dial_ended(&t, DialEnd::Linked(a.clone(), addr()[0]), no_one);
        mb.handshaken(9, a.clone(), 7);
        assert_eq!(
            mb.verdict(9, Verdict::Accept),
            vec![Action::Open { link: 9 }]
        );

        // Two links pending, one rejected: the other is the pair's.
        let mut mc = Mesh::new(id("03"));
        mc.add_static(at);
        mc.dial_ended(&t, DialEnd::Linked(a.clone(), addr()[0]), no_one);
        mc.handshaken(1, a.clone(), 7);
        mc.handshaken(2, a.clone(), 7);
        assert!(dial_later_of(&mc.verdict(2, Verdict::Reject)).is_none());
    }

    #[test]
    fn restarted_peer_replaces_stale_link_at_decider() {
        let mut ma = Mesh::new(id("01"));
        ma.handshaken(1, id("02"), 100);
        let acts = ma.handshaken(2, id("02"), 200);
        assert!(acts.contains(&Action::Close {
            link: 1,
            reason: CloseReason::Replaced
        }));
        assert_eq!(opened(&acts), vec![2]);
        assert_eq!(ma.open_count(), 1);
        // The stale link's own close then arrives and changes nothing.
        assert!(ma.closed(1, Redial::Soon, true).is_empty());
        assert_eq!(ma.open_count(), 1);
    }

    #[test]
    fn restarted_decider_replaces_stale_link_at_follower() {
        let mut mb = Mesh::new(id("02"));
        mb.handshaken(1, id("01"), 100);
        mb.verdict(1, Verdict::Accept);
        mb.handshaken(2, id("01"), 200);
        let acts = mb.verdict(2, Verdict::Accept);
        assert_eq!(
            acts,
            vec![
                Action::Close {
                    link: 1,
                    reason: CloseReason::Replaced
                },
                Action::Open { link: 2 }
            ]
        );
        assert_eq!(mb.open_count(), 1);
    }

    /// The link died between its hello and its verdict: the verdict, read
    /// from the socket just before the end of stream, opens nothing.
    #[test]
    fn verdict_for_a_link_that_already_closed_opens_nothing() {
        let mut mb = Mesh::new(id("02"));
        mb.handshaken(1, id("01"), 9);
        mb.closed(1, Redial::Soon, false);
        assert!(mb.verdict(1, Verdict::Accept).is_empty());
        assert_eq!(mb.open_count(), 0);
        // A new link to the same peer is then free to open.
        mb.handshaken(2, id("01"), 9);
        assert_eq!(
            mb.verdict(2, Verdict::Accept),
            vec![Action::Open { link: 2 }]
        );
    }

    #[test]
    fn closed_link_allows_a_new_one() {
        let mut ma = Mesh::new(id("01"));
        ma.handshaken(1, id("02"), 1);
        ma.closed(1, Redial::No, false);
        assert_eq!(opened(&ma.handshaken(2, id("02"), 1)), vec![2]);
    }

    #[test]
    fn verdict_sent_to_the_decider_is_a_protocol_error() {
        let mut ma = Mesh::new(id("01"));
        ma.handshaken(1, id("02"), 1);
        assert!(matches!(
            ma.verdict(1, Verdict::Accept)[..],
            [Action::Close {
                reason: CloseReason::Protocol(_),
                ..
            }]
        ));
    }

    /// Many nodes, every pair dialing both ways, hellos completing in a
    /// shuffled order: every pair ends with exactly one common link.
    #[test]
    fn shuffled_full_mesh_has_one_link_per_pair() {
        let n = 12;
        let ids: Vec<NodeId> = (0..n).map(|i| id(&format!("{i:02x}"))).collect();
        let mut meshes: Vec<Mesh> = ids.iter().map(|i| Mesh::new(i.clone())).collect();
        // Link numbers: 2 per ordered pair, shared by both ends (as the
        // tests stand in for the wire).
        let mut events = Vec::new();
        let mut next = 0;
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    next += 1;
                    events.push((i, j, next));
                    events.push((j, i, next));
                }
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for k in (1..events.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            events.swap(k, (seed % (k as u64 + 1)) as usize);
        }
        let mut open: Vec<std::collections::HashSet<LinkId>> = vec![Default::default(); n];
        let mut pending_verdicts = Vec::new();
        for (at, other, link) in events {
            let acts = meshes[at].handshaken(link, ids[other].clone(), other as u64);
            for a in acts {
                match a {
                    Action::Open { link } => {
                        open[at].insert(link);
                    }
                    Action::SendVerdict { link, verdict } => {
                        pending_verdicts.push((other, link, verdict))
                    }
                    _ => {}
                }
            }
        }
        // Verdicts arrive after the follower's own hello completed (the
        // verdict follows the hello on the same link).
        for (to, link, verdict) in pending_verdicts {
            for a in meshes[to].verdict(link, verdict) {
                match a {
                    Action::Open { link } => {
                        open[to].insert(link);
                    }
                    Action::Close { link, .. } => {
                        open[to].remove(&link);
                    }
                    _ => {}
                }
            }
        }
        for (i, m) in meshes.iter().enumerate() {
            assert_eq!(m.open_count(), n - 1, "node {i}");
        }
        for i in 0..n {
            for j in 0..n {
                if i < j {
                    let common = open[i].intersection(&open[j]).count();
                    assert_eq!(common, 1, "pair {i},{j}");
                }
            }
        }
    }

    #[test]
    fn a_disconnected_peer_is_closed_refused_and_never_redialed() {
        let (me, peer) = (id("01"), id("02"));
        let addr: SocketAddr = "10.99.0.2:4000".parse().unwrap();
        let mut m = Mesh::new(me);
        m.discovered(peer.clone(), vec![addr], Heard::BeforeOurs);
        m.dial_ended(
            &Target::Peer(peer.clone()),
            DialEnd::Linked(peer.clone(), addr),
            no_one,
        );
        m.handshaken(1, peer.clone(), 7);
        assert!(m.is_open(1));
        assert_eq!(
            m.disconnect(peer.clone()),
            vec![Action::Close {
                link: 1,
                reason: CloseReason::Local
            }]
        );
        // Its close dials nothing, nor does a new record.
        assert!(m.closed(1, Redial::Soon, true).is_empty());
        assert!(m
            .discovered(peer.clone(), vec![addr], Heard::BeforeOurs)
            .is_empty());
        // A link it opens is rejected (this node decides the pair).
        assert_eq!(
            m.handshaken(2, peer.clone(), 7),
            vec![Action::SendVerdict {
                link: 2,
                verdict: Verdict::Reject
            }]
        );
        // Until it is reconnected: then it is dialed at once.
        assert!(matches!(
            m.reconnect(&peer)[..],
            [Action::Dial {
                target: Target::Peer(_),
                ..
            }]
        ));
    }

    #[test]
    fn a_follower_closes_a_disconnected_peers_links_before_any_verdict() {
        let (decider, me) = (id("01"), id("02"));
        let mut m = Mesh::new(me);
        m.handshaken(1, decider.clone(), 7);
        assert_eq!(
            m.disconnect(decider.clone()),
            vec![Action::Close {
                link: 1,
                reason: CloseReason::Local
            }]
        );
        // The verdict that was on its way opens nothing.
        assert_eq!(
            m.verdict(1, Verdict::Accept),
            vec![Action::Close {
                link: 1,
                reason: CloseReason::Local
            }]
        );
        assert_eq!(
            m.handshaken(2, decider.clone(), 7),
            vec![Action::Close {
                link: 2,
                reason: CloseReason::Local
            }]
        );
        assert_eq!(m.open_count(), 0);
    }

    fn dial_later_of(actions: &[Action]) -> Option<(u32, u64)> {
        actions.iter().find_map(|a| match a {
            Action::DialLater {
                failures,
                generation,
                ..
            } => Some((*failures, *generation)),
            _ => None,
        })
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(3200));
        assert_eq!(backoff(6), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    /// A failed dial is retried after a backoff that grows with each failure;
    /// a refused one also asks mDNS to verify the record.
    #[test]
    fn failed_dials_back_off_and_refusals_verify() {
        let (me, p) = (id("01"), id("02"));
        let mut m = Mesh::new(me);
        let t = Target::Peer(p.clone());
        assert!(matches!(
            m.discovered(p.clone(), addr(), Heard::BeforeOurs)[..],
            [Action::Dial { .. }]
        ));
        let acts = m.dial_ended(&t, DialEnd::Failed, no_one);
        assert!(!acts.iter().any(|a| matches!(a, Action::Verify { .. })));
        let (f, g) = dial_later_of(&acts).unwrap();
        assert_eq!(f, 1);
        // While waiting, a re-announcement with the same addresses does not
        // dial early; the due retry does.
        assert!(m
            .discovered(p.clone(), addr(), Heard::BeforeOurs)
            .is_empty());
        assert!(matches!(
            m.retry(t.clone(), g, no_one)[..],
            [Action::Dial { .. }]
        ));
        let acts = m.dial_ended(&t, DialEnd::Refused, no_one);
        assert!(acts.contains(&Action::Verify { peer: p.clone() }));
        let (f, g2) = dial_later_of(&acts).unwrap();
        assert_eq!(f, 2);
        // A stale timer does nothing; new addresses dial at once.
        assert!(m.retry(t.clone(), g, no_one).is_empty());
        let other: Vec<SocketAddr> = vec!["127.0.0.1:2".parse().unwrap()];
        assert!(matches!(
            m.discovered(p.clone(), other, Heard::BeforeOurs)[..],
            [Action::Dial { .. }]
        ));
        assert!(
            m.retry(t.clone(), g2, no_one).is_empty(),
            "superseded by the dial"
        );
    }

    /// A goodbye stops the redials, even one arriving mid-dial.
    #[test]
    fn goodbye_stops_redialing() {
        let (me, p) = (id("01"), id("02"));
        let mut m = Mesh::new(me);
        let t = Target::Peer(p.clone());
        m.discovered(p.clone(), addr(), Heard::BeforeOurs);
        assert!(m.lost(&p).is_empty());
        assert!(m.dial_ended(&t, DialEnd::Refused, no_one).is_empty());
        assert_eq!(m.peer_count(), 0);
    }

    /// `p` is discovered, dialed, and linked by `link` (incarnation 5).
    fn discovered_and_linked(m: &mut Mesh, p: &NodeId, link: LinkId) {
        m.discovered(p.clone(), addr(), Heard::BeforeOurs);
        m.dial_ended(
            &Target::Peer(p.clone()),
            DialEnd::Linked(p.clone(), addr()[0]),
            no_one,
        );
        m.handshaken(link, p.clone(), 5);
    }

    /// A goodbye for a peer whose link is up is verified, not believed:
    /// the peer stays while the link lives; if its record answers again
    /// it is redialed as ever when the link breaks, else it is forgotten
    /// then.
    #[test]
    fn a_goodbye_for_a_linked_peer_is_verified() {
        let (me, p) = (id("01"), id("02"));
        let mut m = Mesh::new(me);
        let t = Target::Peer(p.clone());
        discovered_and_linked(&mut m, &p, 1);
        assert_eq!(m.lost(&p), vec![Action::Verify { peer: p.clone() }]);
        assert!(m.lost(&p).is_empty(), "verified once");
        assert_eq!(m.peer_count(), 1);
        assert!(m.advertised().is_empty());
        // The record answers: a spoofed goodbye. The broken link is redialed.
        m.discovered(p.clone(), addr(), Heard::BeforeOurs);
        assert_eq!(m.advertised(), vec![p.clone()]);
        let (_, generation) = dial_later_of(&m.closed(1, Redial::Soon, true)).unwrap();
        assert!(matches!(
            m.retry(t.clone(), generation, no_one)[..],
            [Action::Dial { .. }]
        ));
        // A goodbye that stands: the peer goes with its link.
        m.dial_ended(&t, DialEnd::Linked(p.clone(), addr()[0]), no_one);
        m.handshaken(2, p.clone(), 5);
        assert_eq!(m.lost(&p), vec![Action::Verify { peer: p.clone() }]);
        assert!(m.closed(2, Redial::Soon, true).is_empty());
        assert_eq!(m.peer_count(), 0);
    }

    /// A link that breaks while its peer is advertised is redialed: at the
    /// first step if it was stable, later and later if links keep dying.
    #[test]
    fn broken_link_is_redialed_with_growing_backoff() {
        let (me, p) = (id("01"), id("02"));
        let mut m = Mesh::new(me);
        let t = Target::Peer(p.clone());
        discovered_and_linked(&mut m, &p, 1);
        let (f, g) = dial_later_of(&m.closed(1, Redial::Soon, true)).unwrap();
        assert_eq!(f, 0);
        m.retry(t.clone(), g, no_one);
        m.dial_ended(&t, DialEnd::Linked(p.clone(), addr()[0]), no_one);
        m.handshaken(2, p.clone(), 5);
        let (f, g) = dial_later_of(&m.closed(2, Redial::Soon, false)).unwrap();
        assert_eq!(f, 1, "a short-lived link counts as a failure");
        m.retry(t.clone(), g, no_one);
        m.dial_ended(&t, DialEnd::Linked(p.clone(), addr()[0]), no_one);
        // No redial for a close this node asked for, or an unknown peer.
        m.handshaken(3, id("03"), 1);
        assert!(m.closed(3, Redial::Soon, true).is_empty());
        // A peer that closed its link is redialed only after a goodbye would
        // have come.
        m.handshaken(4, p.clone(), 5);
        let (f, _) = dial_later_of(&m.closed(4, Redial::AfterGoodbye, true)).unwrap();
        assert_eq!(f, GOODBYE_STEPS);
    }

    /// A static address is dialed, learns which node answers there, and is
    /// redialed when that node's link breaks.
    #[test]
    fn static_peers_are_dialed_and_redialed() {
        let (me, p) = (id("01"), id("02"));
        let a: SocketAddr = "10.99.0.2:4000".parse().unwrap();
        let mut m = Mesh::new(me);
        assert_eq!(
            m.add_static(a),
            vec![Action::Dial {
                target: Target::Addr(a),
                addrs: vec![a],
                tellers: vec![],
            }]
        );
        assert!(m.add_static(a).is_empty(), "already dialing");
        m.dial_ended(
            &Target::Addr(a),
            DialEnd::Linked(p.clone(), addr()[0]),
            no_one,
        );
        m.handshaken(1, p.clone(), 5);
        let acts = m.closed(1, Redial::Soon, true);
        assert!(matches!(
            acts[..],
            [Action::DialLater {
                target: Target::Addr(x),
                ..
            }] if x == a
        ));
    }

    /// A record (anyone can announce one) that moves a peer elsewhere
    /// adds addresses to try after the last one where the peer proved its
    /// key; it does not replace it.
    #[test]
    fn the_last_good_address_is_dialed_first() {
        let (me, p) = (id("01"), id("02"));
        let good: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let trap: SocketAddr = "10.0.0.66:9".parse().unwrap();
        // Where a dial of ours linked, and where it dialed us from before
        // any record of it came.
        for dialed in [true, false] {
            let mut m = Mesh::new(me.clone());
            let t = Target::Peer(p.clone());
            if dialed {
                m.discovered(p.clone(), vec![good], Heard::BeforeOurs);
                m.dial_ended(&t, DialEnd::Linked(p.clone(), good), no_one);
                m.handshaken(1, p.clone(), 5);
            } else {
                m.handshaken(1, p.clone(), 5);
                m.proven_at(&p, good);
            }
            assert!(
                m.discovered(p.clone(), vec![trap], Heard::BeforeOurs)
                    .is_empty(),
                "linked"
            );
            let (_, g) = dial_later_of(&m.closed(1, Redial::Soon, true)).unwrap();
            match &m.retry(t, g, no_one)[..] {
                [Action::Dial { addrs, .. }] => assert_eq!(addrs, &vec![good, trap]),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn peer_table_is_capped() {
        let mut m = Mesh::new(id("0000"));
        for i in 1..=MAX_PEERS {
            m.discovered(id(&format!("{i:04x}")), addr(), Heard::BeforeOurs);
        }
        let extra = id(&format!("{:04x}", MAX_PEERS + 1));
        assert_eq!(
            m.discovered(extra.clone(), addr(), Heard::BeforeOurs),
            vec![Action::TooManyPeers { peer: extra }]
        );
        assert_eq!(m.peer_count(), MAX_PEERS);
    }

    /// Two live nodes with one id: the newer incarnation keeps the link at
    /// the decider and at the follower; both are told (the older by the
    /// conflict, the newer on its link), and the older is not linked.
    #[test]
    fn older_incarnation_of_a_live_id_is_refused() {
        // Decider side: holds the newer incarnation 200.
        let mut ma = Mesh::new(id("01"));
        ma.handshaken(1, id("02"), 200);
        let acts = ma.handshaken(2, id("02"), 100);
        assert_eq!(
            acts,
            vec![
                Action::SendVerdict {
                    link: 2,
                    verdict: Verdict::Conflict
                },
                Action::TellTwin { link: 1 }
            ]
        );
        assert_eq!(ma.open_count(), 1);
        // The older node, as follower, gets the conflict verdict.
        let mut old = Mesh::new(id("02"));
        old.handshaken(2, id("01"), 7);
        assert_eq!(
            old.verdict(2, Verdict::Conflict),
            vec![Action::Close {
                link: 2,
                reason: CloseReason::IdConflict
            }]
        );
        // Follower side: holds newer 200; the older decider's accept is
        // answered with a conflict, and the newer link stays.
        let mut mb = Mesh::new(id("03"));
        mb.handshaken(1, id("02"), 200);
        mb.verdict(1, Verdict::Accept);
        mb.handshaken(2, id("02"), 100);
        let acts = mb.verdict(2, Verdict::Accept);
        assert_eq!(
            acts,
            vec![
                Action::SendVerdict {
                    link: 2,
                    verdict: Verdict::Conflict
                },
                Action::Close {
                    link: 2,
                    reason: CloseReason::IdConflict
                },
                Action::TellTwin { link: 1 }
            ]
        );
        assert_eq!(mb.open_count(), 1);
    }

    fn hint(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    const VIA: &str = "10.99.0.9:40000";

    /// A member a peer's list names, with its address, that this node
    /// neither links to nor knows from mDNS, is dialed there as one found
    /// over mDNS: at once by the pair's decider, after the grace by the
    /// other end. It is not listed as advertised.
    #[test]
    fn a_hinted_member_is_dialed_as_one_found_over_mdns() {
        let (teller, member) = (id("05"), id("02"));
        let at = hint("10.99.0.2:4000");
        let mut decider = Mesh::new(id("01"));
        match &decider.hinted(&teller, hint(VIA), vec![(member.clone(), at)])[..] {
            [Action::Dial {
                target,
                addrs,
                tellers,
            }] => {
                assert_eq!(target, &Target::Peer(member.clone()));
                assert_eq!(addrs, &vec![at]);
                assert_eq!(tellers, &vec![teller.clone()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(decider.advertised().is_empty());
        // Named again while dialing: nothing more.
        assert!(decider
            .hinted(&teller, hint(VIA), vec![(member.clone(), at)])
            .is_empty());
        let t = Target::Peer(member.clone());
        assert!(decider
            .dial_ended(&t, DialEnd::Linked(member.clone(), at), no_one)
            .is_empty());
        assert_eq!(opened(&decider.handshaken(1, member.clone(), 5)), vec![1]);
        // Its link breaks: redialed like any peer.
        assert!(dial_later_of(&decider.closed(1, Redial::Soon, true)).is_some());

        let mut follower = Mesh::new(id("03"));
        let generation = match &follower.hinted(&teller, hint(VIA), vec![(member.clone(), at)])[..]
        {
            [Action::Yield {
                generation, grace, ..
            }] => {
                assert_eq!(*grace, FOLLOWER_GRACE);
                *generation
            }
            other => panic!("{other:?}"),
        };
        match &follower.retry(t, generation, no_one)[..] {
            [Action::Dial { addrs, .. }] => assert_eq!(addrs, &vec![at]),
            other => panic!("{other:?}"),
        }
    }

    /// A hint is no news about a node that is this node, the teller, linked,
    /// found over mDNS (its record's addresses stay), or at an address that
    /// cannot be its from here (loopback from another host).
    #[test]
    fn a_hint_never_changes_what_is_known_better() {
        let me = id("01");
        let (teller, found, linked) = (id("05"), id("02"), id("03"));
        let mut m = Mesh::new(me.clone());
        let record = hint("10.99.0.2:4000");
        assert!(matches!(
            m.discovered(found.clone(), vec![record], Heard::BeforeOurs)[..],
            [Action::Dial { .. }]
        ));
        m.handshaken(1, linked.clone(), 5);
        let lie = hint("10.99.0.66:9");
        let told = vec![
            (me.clone(), lie),
            (teller.clone(), lie),
            (found.clone(), lie),
            (linked.clone(), lie),
        ];
        assert!(m.hinted(&teller, hint(VIA), told).is_empty());
        for bogus in ["10.99.0.6:0", "0.0.0.0:4000", "224.0.0.251:4000"] {
            assert!(m
                .hinted(&teller, hint(VIA), vec![(id("04"), hint(bogus))])
                .is_empty());
        }
        assert_eq!(m.peer_count(), 1);
        // A loopback address, from a peer on another host: the member
        // listens on the teller's host.
        match &m.hinted(&teller, hint(VIA), vec![(id("0f"), hint("127.0.0.1:4000"))])[..] {
            [Action::Dial { addrs, .. }] => assert_eq!(addrs, &vec![hint("10.99.0.9:4000")]),
            other => panic!("{other:?}"),
        }
        let t = Target::Peer(found.clone());
        let (_, g) = dial_later_of(&m.dial_ended(&t, DialEnd::Failed, no_one)).unwrap();
        match &m.retry(t, g, no_one)[..] {
            [Action::Dial { addrs, .. }] => assert_eq!(addrs, &vec![record]),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.advertised(), vec![found]);
    }

    /// A hint at an address where this node listens names this node,
    /// whatever id it gives: dialed, it would reach this node itself. It
    /// is dropped, on IPv4 or IPv6 (a link-local one with the teller's
    /// scope too), from a teller on this host or another, as a hint of
    /// this node's own id is; the same member elsewhere is dialed.
    #[test]
    fn a_hint_at_this_nodes_own_address_is_dropped() {
        let me = id("01");
        let (teller, member) = (id("05"), id("02"));
        let mut m = Mesh::new(me.clone());
        m.listening_at(vec![
            hint("10.99.0.1:4000"),
            hint("127.0.0.1:4000"),
            hint("[fe80::1]:4000"),
        ]);
        let lo = hint("127.0.0.1:50000");
        let on_link = hint("[fe80::9%7]:50000");
        for (at, via) in [
            ("10.99.0.1:4000", VIA),
            ("127.0.0.1:4000", "127.0.0.1:50000"),
            ("[fe80::1]:4000", "[fe80::9%7]:50000"),
            ("[fe80::1%3]:4000", "[fe80::9%7]:50000"),
        ] {
            assert!(
                m.hinted(&teller, hint(via), vec![(member.clone(), hint(at))])
                    .is_empty(),
                "{at} from {via}"
            );
        }
        assert!(m
            .hinted(&teller, lo, vec![(me.clone(), hint("127.0.0.1:4001"))])
            .is_empty());
        assert!(m
            .hinted(&teller, on_link, vec![(me, hint("[fe80::1]:4001"))])
            .is_empty());
        assert_eq!(m.peer_count(), 0);
        // Another port of this host is another node's.
        match &m.hinted(&teller, lo, vec![(member.clone(), hint("127.0.0.1:4001"))])[..] {
            [Action::Dial { addrs, .. }] => assert_eq!(addrs, &vec![hint("127.0.0.1:4001")]),
            other => panic!("{other:?}"),
        }
    }

    /// A hint whose dial fails, of a member no linked peer names, is
    /// forgotten, not redialed and not verified over mDNS; the same peer's
    /// hint of it is not dialed again (a peer
    /// repeats its list on every change), another peer's is. A peer whose
    /// hints failed [`hints::MAX_FAILED`] times is heard no more, and one
    /// peer's hints have at most [`hints::MAX_PENDING`] dials at once: a
    /// lying peer costs a bounded number of failed dials, once.
    #[test]
    fn a_bad_hint_is_bounded_and_not_retried() {
        let (liar, honest) = (id("05"), id("06"));
        let mut m = Mesh::new(id("01"));
        let member = |i: usize| id(&format!("{:x}", 0x100 + i));
        let lie = hint("10.99.0.66:9");
        let dials = |acts: &[Action]| {
            acts.iter()
                .filter(|a| matches!(a, Action::Dial { .. }))
                .count()
        };
        assert_eq!(
            dials(&m.hinted(&liar, hint(VIA), vec![(member(0), lie)])),
            1
        );
        let t = Target::Peer(member(0));
        assert_eq!(
            m.dial_ended(&t, DialEnd::Refused, no_one),
            vec![],
            "no redial, no verify"
        );
        assert_eq!(m.peer_count(), 0);
        assert_eq!(
            dials(&m.hinted(&liar, hint(VIA), vec![(member(0), lie)])),
            0
        );
        let truth = hint("10.99.0.2:4000");
        assert_eq!(
            dials(&m.hinted(&honest, hint(VIA), vec![(member(0), truth)])),
            1
        );
        m.dial_ended(&t, DialEnd::Linked(member(0), truth), no_one);
        m.handshaken(1, member(0), 5);
        for i in 1..hints::MAX_FAILED {
            assert_eq!(
                dials(&m.hinted(&liar, hint(VIA), vec![(member(i), lie)])),
                1
            );
            let t = Target::Peer(member(i));
            let end = if i % 2 == 0 {
                DialEnd::Unanswered
            } else {
                DialEnd::Failed
            };
            assert_eq!(m.dial_ended(&t, end, no_one), vec![]);
        }
        let more: Vec<_> = (100..110).map(|i| (member(i), lie)).collect();
        assert!(m.hinted(&liar, hint(VIA), more).is_empty(), "spent");

        // Pending at once: bounded per peer.
        let mut m = Mesh::new(id("01"));
        let many: Vec<_> = (0..hints::MAX_PENDING + 20)
            .map(|i| (member(i), lie))
            .collect();
        assert_eq!(dials(&m.hinted(&liar, hint(VIA), many)), hints::MAX_PENDING);
    }

    /// A member known from hints and then found over mDNS is advertised,
    /// with its record's addresses; a follower's wait for the decider goes
    /// on, cut short if the decider may not have heard of us.
    #[test]
    fn a_hinted_member_found_over_mdns_takes_its_records_addresses() {
        let (teller, member) = (id("05"), id("02"));
        let at = hint("10.99.0.2:4000");
        let record = hint("10.99.0.2:4001");
        let t = Target::Peer(member.clone());
        for heard in [Heard::BeforeOurs, Heard::AfterOurs] {
            let mut m = Mesh::new(id("03"));
            let first = match &m.hinted(&teller, hint(VIA), vec![(member.clone(), at)])[..] {
                [Action::Yield { generation, .. }] => *generation,
                other => panic!("{other:?}"),
            };
            let found = m.discovered(member.clone(), vec![record], heard);
            assert_eq!(m.advertised(), vec![member.clone()]);
            let due = match (heard, &found[..]) {
                (Heard::BeforeOurs, []) => first,
                (
                    Heard::AfterOurs,
                    [Action::Yield {
                        generation, grace, ..
                    }],
                ) => {
                    assert_eq!(*grace, SHORT_GRACE);
                    assert!(
                        m.retry(t.clone(), first, no_one).is_empty(),
                        "the long wait lapsed"
                    );
                    *generation
                }
                other => panic!("{other:?}"),
            };
            match &m.retry(t.clone(), due, no_one)[..] {
                [Action::Dial { addrs, tellers, .. }] => {
                    assert_eq!(addrs, &vec![record]);
                    assert!(tellers.is_empty());
                }
                other => panic!("{other:?}"),
            }
            // Found over mDNS, it is redialed after a failure like any peer.
            assert!(dial_later_of(&m.dial_ended(&t, DialEnd::Failed, no_one)).is_some());
        }
    }

    /// Linked to every peer it knows, a node needs mDNS queries no more.
    #[test]
    fn all_linked_needs_a_link_to_every_known_peer() {
        let mut m = Mesh::new(id("01"));
        assert!(!m.all_linked(), "no link");
        m.discovered(id("02"), addr(), Heard::BeforeOurs);
        m.discovered(id("03"), addr(), Heard::BeforeOurs);
        m.handshaken(1, id("02"), 5);
        assert!(!m.all_linked(), "03 is not linked");
        m.handshaken(2, id("03"), 5);
        assert!(m.all_linked());
        m.hinted(
            &id("02"),
            hint(VIA),
            vec![(id("04"), hint("10.99.0.4:4000"))],
        );
        assert!(!m.all_linked(), "a hinted member is not linked");
        m.disconnect(id("04"));
        assert!(m.all_linked(), "one it disconnected does not count");
    }

    /// mDNS is browsed from the cache only while the node knows a peer
    /// and is linked to every one it knows, and with queries again
    /// whenever that stops: a member named that is not linked, a link
    /// lost, a static address not answering.
    #[test]
    fn the_cache_is_browsed_only_while_linked_to_every_known_peer() {
        let mut m = Mesh::new(id("01"));
        assert_eq!(m.browse(), None, "querying from the start");
        // A link from a peer this node has not found: it knows no one.
        m.handshaken(1, id("02"), 5);
        assert!(m.is_open(1));
        assert_eq!(m.browse(), None, "knows no peer");
        m.discovered(id("02"), addr(), Heard::BeforeOurs);
        assert_eq!(m.browse(), Some(Action::Cache));
        assert_eq!(m.browse(), None, "only on a change");
        m.hinted(
            &id("02"),
            hint(VIA),
            vec![(id("04"), hint("10.99.0.4:4000"))],
        );
        assert_eq!(m.browse(), Some(Action::Query), "a member not linked");
        m.handshaken(2, id("04"), 5);
        assert_eq!(m.browse(), Some(Action::Cache));
        m.closed(1, Redial::Soon, true);
        assert_eq!(m.browse(), Some(Action::Query), "a link lost");
        m.handshaken(3, id("02"), 5);
        assert_eq!(m.browse(), Some(Action::Cache), "and regained");
        m.add_static(hint("10.99.0.7:4000"));
        assert_eq!(m.browse(), Some(Action::Query), "a static peer not reached");
    }

    /// A pair linked through a hint whose link breaks, and whose first
    /// redial finds nothing, is redialed, backing off, while a linked
    /// peer still names the member, and links again once it answers. It
    /// is forgotten once no linked peer names it.
    #[test]
    fn a_hinted_pair_whose_link_breaks_links_again() {
        let (teller, member) = (id("05"), id("02"));
        let at = hint("10.99.0.2:4000");
        let says = |p: &NodeId, m: &NodeId| p == &id("05") && m == &id("02");
        let t = Target::Peer(member.clone());
        let mut m = Mesh::new(id("01"));
        m.handshaken(1, teller.clone(), 5);
        assert!(matches!(
            m.hinted(&teller, hint(VIA), vec![(member.clone(), at)])[..],
            [Action::Dial { .. }]
        ));
        m.dial_ended(&t, DialEnd::Linked(member.clone(), at), says);
        assert_eq!(opened(&m.handshaken(2, member.clone(), 5)), vec![2]);
        let (_, mut g) = dial_later_of(&m.closed(2, Redial::Soon, true)).unwrap();
        let mut last = 0;
        for end in [DialEnd::Unanswered, DialEnd::Refused, DialEnd::Failed] {
            // Each redial names the teller, though its hint was settled.
            match &m.retry(t.clone(), g, says)[..] {
                [Action::Dial { tellers, .. }] => assert_eq!(tellers, &vec![teller.clone()]),
                other => panic!("{other:?}"),
            }
            let (failures, next) = dial_later_of(&m.dial_ended(&t, end, says)).expect("kept");
            assert!(failures > last, "backing off");
            (last, g) = (failures, next);
        }
        assert!(matches!(
            m.retry(t.clone(), g, says)[..],
            [Action::Dial { .. }]
        ));
        m.dial_ended(&t, DialEnd::Linked(member.clone(), at), says);
        assert_eq!(opened(&m.handshaken(3, member.clone(), 5)), vec![3]);
        assert!(m.all_linked());

        // Broken again, and no linked peer names it any more: forgotten
        // at its next redial.
        let (_, g) = dial_later_of(&m.closed(3, Redial::Soon, true)).unwrap();
        assert!(m.retry(t.clone(), g, no_one).is_empty());
        assert_eq!(m.peer_count(), 0);
    }

    /// A failed dial of a hinted member charges only the tellers whose
    /// address it tried: an honest hint that arrives while a lie is being
    /// dialed is dialed next, and its teller is not charged, however many
    /// times a liar gets in first.
    #[test]
    fn a_failed_hinted_dial_charges_only_the_tellers_it_tried() {
        let (liar, honest) = (id("05"), id("06"));
        let (lie, truth) = (hint("10.99.0.66:9"), hint("10.99.0.2:4000"));
        let mut m = Mesh::new(id("01"));
        m.handshaken(1, liar.clone(), 5);
        m.handshaken(2, honest.clone(), 5);
        for i in 0..hints::MAX_FAILED {
            let member = id(&format!("{:x}", 0x100 + i));
            let t = Target::Peer(member.clone());
            let says = |p: &NodeId, m: &NodeId| p == &honest && m == &member;
            match &m.hinted(&liar, hint(VIA), vec![(member.clone(), lie)])[..] {
                [Action::Dial { addrs, tellers, .. }] => {
                    assert_eq!(addrs, &vec![lie]);
                    assert_eq!(tellers, &vec![liar.clone()]);
                }
                other => panic!("{other:?}"),
            }
            assert!(m
                .hinted(&honest, hint(VIA), vec![(member.clone(), truth)])
                .is_empty());
            let (_, g) = dial_later_of(&m.dial_ended(&t, DialEnd::Unanswered, says)).unwrap();
            match &m.retry(t.clone(), g, says)[..] {
                [Action::Dial { addrs, tellers, .. }] => {
                    assert!(addrs.contains(&truth));
                    assert!(tellers.contains(&honest), "{tellers:?}");
                }
                other => panic!("{other:?}"),
            }
            m.dial_ended(&t, DialEnd::Linked(member.clone(), truth), says);
        }
        assert!(m.tellers.spent(&liar));
        assert!(!m.tellers.spent(&honest), "never tried, never charged");
    }
}
