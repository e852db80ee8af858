//! Messaging state without I/O: who subscribes to what, which messages were
//! seen, and where a message goes.
//!
//! Like the node's mesh, this is a pure state machine: the messaging shell
//! ([`crate::messaging`]) feeds it envelopes and link changes, and sends what
//! it says to send. Its tables are bounded whatever peers send: the seen
//! numbers ([`seen`]), other nodes' topics ([`interest`]) and peers' links
//! ([`neighbors`]) each have a fixed bound or a byte budget.
//!
//! # Interest routing
//!
//! Every node tells its peers which topics it has subscribers for: its whole
//! set, with a version that grows on every change, sent to every peer when it
//! changes and to each new peer when a link opens. A node keeps the latest
//! set of each node, so it knows a topic's members cluster-wide, and sends a
//! published message only to members.
//!
//! # Relaying
//!
//! The mesh is full when every node reaches every other over mDNS; where it
//! is not (two LAN segments joined by one static link, say), flooded
//! messages (broadcasts, events to all, topic messages, interest) are relayed.
//! Every node tells its peers which nodes it is linked to. A node that
//! receives a flooded message from peer `S` passes it on to its own peers
//! that are neither `S`, nor the origin, nor linked to `S` (those got it from
//! `S` already, or will): in a full mesh that is no one, so a message costs
//! one frame per receiver; across a bridge, the bridge's ends pass it on.
//! A topic message goes on only to members, unless some member is out of
//! direct reach, and then to every such peer.
//!
//! # Duplicates and order
//!
//! Each node numbers what it floods: a sequence that starts at the node's
//! start time (so a restarted node continues above its old numbers) and grows
//! by one per message. A receiver remembers, per origin, the highest number
//! seen and which of the [`WINDOW`](seen::WINDOW) numbers below it it has
//! seen, and delivers a message only the first time: relayed copies are
//! dropped. A node numbers a message as it queues it on all its links at
//! once (see the shell's `flood`), so over a direct link an origin's numbers
//! arrive in order; the window absorbs the disorder between relay paths. A
//! number older than the window counts as seen.
//!
//! # Numbers that cannot be true
//!
//! Numbers and interest versions start at the origin's start time in
//! nanoseconds and grow by one per message or change, so neither can pass
//! the origin's clock. A relayed one (its origin is not the peer it came
//! from) further ahead of this node's clock than [`MAX_AHEAD`] is refused:
//! it would make the origin's real messages look old. So the jump a relayed
//! message can cause is bounded (and relayed messages are signed by their
//! origin, checked by the shell before the router sees them). An origin's
//! own link is its own to misuse: it can only silence itself. A number or
//! version no newer than a linked origin's start time is an older
//! incarnation's, and dropped; when a linked origin's incarnation changes,
//! what this node knew of the old one (its numbers, topics and links) is
//! forgotten.
//!
//! # Replays
//!
//! A signed message stays signed: a peer can keep one and send it again
//! later. The window of its origin makes it a duplicate, as long as the
//! window is kept, and the table of windows ([`seen`]) never forgets a
//! member's (a linked peer, or a node the membership view knows) to make
//! room for another origin, however many keys a peer makes up. Once the
//! table is full, a numbered message of an origin that is not a member is
//! refused ([`Refusal::Unknown`]) unless another non-member was silent for
//! [`NUMBERS_KEPT`](crate::limits::NUMBERS_KEPT), whose window it then
//! takes: made-up origins fill the table for at most that long. Until
//! the table is full, such messages are delivered: a node behind a relay
//! is heard from before its record reaches this node's view (records are
//! passed on a second later, per hop). A node that left and was silent
//! that long may lose its window, and its old messages can then be
//! replayed (see [`seen`]). A node that restarts with the same key comes back as a newer
//! incarnation, whose numbers start above the old ones; with a new key it
//! is a new origin.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::id::NodeId;
use crate::limits::MAX_AHEAD;
use crate::wire::frame::Frame;

pub(crate) mod interest;
pub(crate) mod neighbors;
pub(crate) mod seen;

use interest::Interest;
use neighbors::{LinkList, Neighbors};
use seen::{Seen, Seq};

/// What the router made of a flooded message or a node's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum News {
    /// New: deliver it, pass it on.
    Fresh,
    /// Seen before, or older than what is known: drop it quietly.
    Stale,
    /// Not to be believed or held: drop it and report why.
    Refused(Refusal),
}

/// Why the router refused something a peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A number or version further ahead of this node's clock than
    /// [`MAX_AHEAD`].
    Ahead {
        /// The number or version.
        number: u64,
        /// This node's clock, in nanoseconds since the Unix epoch.
        now: u64,
    },
    /// A numbered message of a node that is not a member, while the
    /// table of message numbers is full (see [`seen`]).
    Unknown,
    /// Holding it would pass a byte budget.
    OverBudget {
        /// What the budget is for.
        what: &'static str,
        /// The bytes it would take (in all, for a budget of all).
        bytes: usize,
        /// The budget.
        budget: usize,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Ahead { number, now } => write!(
                f,
                "numbered {number}, {:?} ahead of this node's clock (at most {MAX_AHEAD:?})",
                Duration::from_nanos(number - now)
            ),
            Refusal::Unknown => write!(
                f,
                "its origin is not a member, and the table of {} origins' message numbers is full of origins heard within {:?}",
                seen::MAX_ORIGINS,
                crate::limits::NUMBERS_KEPT
            ),
            Refusal::OverBudget {
                what,
                bytes,
                budget,
            } => write!(
                f,
                "{what} would take {bytes} bytes, over the budget of {budget}"
            ),
        }
    }
}

/// Refuses a number or version of `origin`, relayed by `from`, past `now`
/// + [`MAX_AHEAD`].
fn not_ahead(from: &NodeId, origin: &NodeId, number: u64, now: u64) -> Result<(), Refusal> {
    if from != origin && number.saturating_sub(now) > MAX_AHEAD.as_nanos() as u64 {
        return Err(Refusal::Ahead { number, now });
    }
    Ok(())
}

/// The messaging state of one node.
#[derive(Debug)]
pub(crate) struct Router {
    me: NodeId,
    next_seq: u64,
    /// Numbers seen per origin.
    seen: Seen,
    /// Each other node's subscribed topics and the version of that set.
    interest: Interest,
    /// Local subscribers per topic.
    mine: HashMap<String, usize>,
    my_version: u64,
    /// Each peer's own links, as it last told us.
    neighbors: Neighbors,
    /// The peers this node has an open link to.
    linked: HashSet<NodeId>,
    /// The incarnation (start time) of each peer linked, as its link's
    /// hello said.
    incarnations: HashMap<NodeId, u64>,
    /// Whether some peer may relay this node's messages, if known since
    /// the last change of links or lists (see [`Router::may_be_relayed`]).
    relayed: Option<bool>,
}

impl Router {
    pub(crate) fn new(me: NodeId, start: u64) -> Router {
        Router {
            me,
            next_seq: start,
            seen: Seen::default(),
            interest: Interest::default(),
            mine: HashMap::new(),
            my_version: start,
            neighbors: Neighbors::default(),
            linked: HashSet::new(),
            incarnations: HashMap::new(),
            relayed: None,
        }
    }

    /// True if a peer may pass this node's flooded messages on: one whose
    /// links are unknown, or that is linked to a node this one is not
    /// linked to. Then they must be signed (in a full mesh no one relays,
    /// and nothing needs to be). Worked out again only after links or
    /// lists changed.
    pub(crate) fn may_be_relayed(&mut self) -> bool {
        if let Some(r) = self.relayed {
            return r;
        }
        let r = self
            .linked
            .iter()
            .any(|p| self.neighbors.within(p, &self.me, &self.linked) != Some(true));
        self.relayed = Some(r);
        r
    }

    /// A link to `peer`, of its incarnation `incarnation`, opened. What an
    /// older incarnation of it said is forgotten: its topics (a node's
    /// versions start above its start time, so they are the ones no newer
    /// than `incarnation`; a restarted node with no topics never says so
    /// itself), its links and its message numbers. What the new incarnation
    /// said already, on a link opened by its verdict before this end heard
    /// of it, stays.
    pub(crate) fn link_opened(&mut self, peer: NodeId, incarnation: u64) {
        if self
            .interest
            .version(&peer)
            .is_some_and(|version| version <= incarnation)
        {
            self.interest.forget(&peer);
        }
        let known = self.incarnations.insert(peer.clone(), incarnation);
        if known.is_some_and(|older| older < incarnation) {
            self.neighbors.forget(&peer);
            self.seen.forget(&peer);
        }
        self.linked.insert(peer);
        self.relayed = None;
    }

    /// The peers this node is linked to.
    pub(crate) fn linked(&self) -> &HashSet<NodeId> {
        &self.linked
    }

    /// A peer told us which nodes it is linked to. Refused over its budget
    /// (see [`neighbors`]); the peer then counts as one whose links are
    /// unknown.
    pub(crate) fn neighbors<'a>(
        &mut self,
        peer: NodeId,
        links: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<LinkList, Refusal> {
        self.relayed = None;
        self.neighbors.set(peer, links)
    }

    /// `peer`'s last list of its links, if it told one.
    pub(crate) fn list_of(&self, peer: &NodeId) -> Option<LinkList> {
        self.neighbors.list(peer)
    }

    /// True if `peer`'s last list of its links names `node`.
    pub(crate) fn says_linked(&self, peer: &NodeId, node: &NodeId) -> bool {
        self.neighbors.links(peer, node)
    }

    /// The peers to pass a flooded message from `origin`, received from
    /// `from`, on to. For a topic message, `topic`.
    pub(crate) fn relay_to(
        &self,
        from: &NodeId,
        origin: &NodeId,
        topic: Option<&str>,
    ) -> Vec<NodeId> {
        let linked = &self.linked;
        let theirs = |p: &NodeId| self.neighbors.links(from, p);
        let mut to: Vec<NodeId> = linked
            .iter()
            .filter(|p| *p != from && *p != origin && !theirs(p))
            .cloned()
            .collect();
        if let Some(topic) = topic {
            let members = self.members(topic);
            let reached = |m: &NodeId| {
                m == &self.me || m == from || m == origin || linked.contains(m) || theirs(m)
            };
            if members.iter().all(reached) {
                to.retain(|p| members.contains(p));
            }
        }
        to.sort();
        to
    }

    /// The peers to pass `origin`'s member record, received from `from`,
    /// on to: as [`Router::relay_to`], less those that say they are linked
    /// to `origin` (it tells them its record itself).
    pub(crate) fn record_to(&self, from: &NodeId, origin: &NodeId) -> Vec<NodeId> {
        let mut to = self.relay_to(from, origin, None);
        to.retain(|p| !self.neighbors.links(p, origin));
        to
    }

    /// Where this node sends a message it publishes to `topic`: to linked
    /// members only, if it reaches every member directly; else to every peer.
    pub(crate) fn publish_to(&self, topic: &str) -> Vec<NodeId> {
        let linked = &self.linked;
        let members = self.members(topic);
        let direct = members.iter().all(|m| m == &self.me || linked.contains(m));
        let mut to: Vec<NodeId> = if direct {
            members.into_iter().filter(|m| linked.contains(m)).collect()
        } else {
            linked.iter().cloned().collect()
        };
        to.sort();
        to
    }

    /// The announcements of every node's topics we know but `peer`'s, to
    /// pass to `peer`, a new peer: shared, encoded when they arrived. Nodes
    /// without a subscription are left out: a new peer knows nothing of
    /// them, which is the same, and a mesh forming without topics then
    /// costs no gossip at all.
    pub(crate) fn all_interest(&self, peer: &NodeId) -> Vec<(NodeId, Frame)> {
        self.interest.announcements(peer)
    }

    /// The number of the next message this node originates.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// What the message `(origin, seq)`, received from `from`, is; `now` is
    /// this node's clock (nanoseconds since the Unix epoch), which a number
    /// may not be ahead of, and `heard_at` a monotonic clock's (nanoseconds),
    /// by which the windows of numbers age. A fresh one is recorded as seen. `in_view` says whether the membership view knows
    /// a node; with `from` and the linked peers, those are the members
    /// whose numbers are never forgotten (see [`seen`]).
    pub(crate) fn fresh(
        &mut self,
        from: &NodeId,
        origin: &NodeId,
        seq: u64,
        now: u64,
        heard_at: u64,
        in_view: impl Fn(&NodeId) -> bool,
    ) -> News {
        if let Err(r) = not_ahead(from, origin, seq, now) {
            return News::Refused(r);
        }
        if self.older_incarnation(origin, seq) {
            return News::Stale;
        }
        let linked = &self.linked;
        let member = |n: &NodeId| n == from || linked.contains(n) || in_view(n);
        match self.seen.record(origin, seq, heard_at, member) {
            Seq::Fresh => News::Fresh,
            Seq::Stale => News::Stale,
            Seq::Unknown => News::Refused(Refusal::Unknown),
        }
    }

    /// True if `number` (a message number or interest version) of
    /// `origin`, a linked peer, is of an incarnation before the one linked.
    fn older_incarnation(&self, origin: &NodeId, number: u64) -> bool {
        self.incarnations
            .get(origin)
            .is_some_and(|start| number <= *start)
    }

    /// A local subscriber to `topic` came. Returns true if the node's set of
    /// topics changed (it must then tell its peers).
    pub(crate) fn subscribe(&mut self, topic: &str) -> bool {
        let n = self.mine.entry(topic.to_string()).or_default();
        *n += 1;
        if *n == 1 {
            self.my_version += 1;
            return true;
        }
        false
    }

    /// A local subscriber to `topic` went. Returns true if the set changed.
    pub(crate) fn unsubscribe(&mut self, topic: &str) -> bool {
        match self.mine.get_mut(topic) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.mine.remove(topic);
                self.my_version += 1;
                true
            }
            None => false,
        }
    }

    /// This node's topics and their version, to tell peers.
    pub(crate) fn my_interest(&self) -> (u64, Vec<String>) {
        let mut topics: Vec<String> = self.mine.keys().cloned().collect();
        topics.sort();
        (self.my_version, topics)
    }

    pub(crate) fn subscribed(&self, topic: &str) -> bool {
        self.mine.contains_key(topic)
    }

    /// `node`'s topics came from `from` (at `now`, this node's clock):
    /// `Fresh` if they are news (then kept, with the announcement
    /// `announce` gives, for new peers), `Stale` if this version or a newer one is
    /// known, `Refused` for a relayed version ahead of the clock or a set
    /// over its budget (see [`interest`]).
    pub(crate) fn interest(
        &mut self,
        from: &NodeId,
        node: NodeId,
        version: u64,
        topics: BTreeSet<String>,
        now: u64,
        announce: impl FnOnce() -> Frame,
    ) -> News {
        if node == self.me || self.older_incarnation(&node, version) {
            return News::Stale;
        }
        if let Err(r) = not_ahead(from, &node, version, now) {
            return News::Refused(r);
        }
        let linked = &self.linked;
        match self
            .interest
            .offer(node, version, topics, |n| linked.contains(n), announce)
        {
            Ok(true) => News::Fresh,
            Ok(false) => News::Stale,
            Err(r) => News::Refused(r),
        }
    }

    /// A peer's open link closed: forget it, its links, and its topics.
    pub(crate) fn forget(&mut self, node: &NodeId) {
        self.relayed = None;
        self.linked.remove(node);
        self.incarnations.remove(node);
        self.interest.forget(node);
        self.neighbors.forget(node);
    }

    /// The nodes with a subscriber to `topic`, this one included, sorted.
    pub(crate) fn members(&self, topic: &str) -> Vec<NodeId> {
        let mut m: Vec<NodeId> = self.interest.members(topic).cloned().collect();
        if self.subscribed(topic) {
            m.push(self.me.clone());
        }
        m.sort();
        m
    }

    /// The bytes the table of other nodes' topics is accounted for.
    #[cfg(test)]
    pub(crate) fn interest_bytes(&self) -> usize {
        self.interest.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::seen::WINDOW;
    use super::*;
    use crate::id::id;

    /// This node's clock in the tests: far above every number they use.
    const NOW: u64 = 1 << 62;

    impl Router {
        fn is_fresh(&mut self, origin: &NodeId, seq: u64) -> bool {
            self.fresh(&id("ff"), origin, seq, NOW, NOW, |_| false) == News::Fresh
        }

        fn heard(&mut self, node: NodeId, version: u64, topics: BTreeSet<String>) -> News {
            self.interest(&node.clone(), node, version, topics, NOW, || {
                Frame::data(bytes::Bytes::new())
            })
        }

        fn links(&mut self, peer: NodeId, links: &HashSet<NodeId>) {
            self.neighbors(peer, links.iter().map(NodeId::as_str))
                .unwrap();
        }
    }

    #[test]
    fn each_message_is_fresh_once() {
        let mut r = Router::new(id("01"), 100);
        assert!(r.is_fresh(&id("02"), 5));
        assert!(!r.is_fresh(&id("02"), 5), "a duplicate");
        assert!(r.is_fresh(&id("02"), 4), "late but new");
        assert!(!r.is_fresh(&id("02"), 4), "late and seen");
        assert!(r.is_fresh(&id("02"), 9), "gaps are fine");
        assert!(r.is_fresh(&id("03"), 1), "per origin");
    }

    /// Against a plain set, over shuffled numbers with duplicates.
    #[test]
    fn the_window_matches_a_set_within_its_reach() {
        let mut r = Router::new(id("01"), 0);
        let mut set = std::collections::HashSet::new();
        let mut highest = 0u64;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly rising, sometimes back by up to 1500, sometimes a jump.
            let seq = match x % 10 {
                0 => highest.saturating_sub(x % 1500),
                1 => highest + 70 + x % 200,
                _ => highest + x % 3,
            };
            let fresh = r.is_fresh(&id("02"), seq);
            let expected = if highest >= WINDOW && seq <= highest - WINDOW {
                false
            } else {
                !set.contains(&seq)
            };
            assert_eq!(fresh, expected, "seq {seq}, highest {highest}");
            set.insert(seq);
            highest = highest.max(seq);
        }
    }

    #[test]
    fn the_table_of_origins_is_bounded() {
        let mut r = Router::new(id("0001"), 0);
        for i in 0..seen::MAX_ORIGINS + 10 {
            r.is_fresh(&id(&format!("{:04x}", i + 2)), 1);
        }
        assert_eq!(r.seen.len(), seen::MAX_ORIGINS);
    }

    /// A linked peer C makes up origins by the thousand, each with one
    /// message: the windows of B (linked) and D (a member the view knows,
    /// not linked) stay, so C's replays of their messages are stale; once
    /// the table is full, made-up origins are refused, and a member's new
    /// window still finds room.
    #[test]
    fn made_up_origins_push_no_members_numbers_out() {
        let (b, c, d, e) = (id("0b"), id("0c"), id("0d"), id("0e"));
        let mut r = Router::new(id("01"), 0);
        r.link_opened(b.clone(), 1);
        r.link_opened(c.clone(), 1);
        let in_view = |n: &NodeId| n == &id("0d") || n == &id("0e");
        let fresh = |r: &mut Router, from: &NodeId, origin: &NodeId, seq| {
            r.fresh(from, origin, seq, NOW, NOW, in_view)
        };
        assert_eq!(fresh(&mut r, &b, &b, 500), News::Fresh);
        assert_eq!(fresh(&mut r, &c, &d, 700), News::Fresh);
        let mut refused = 0;
        for i in 0..2 * seen::MAX_ORIGINS {
            match fresh(&mut r, &c, &id(&format!("{:x}", 0x10_0000 + i)), 1) {
                News::Fresh => {}
                News::Refused(Refusal::Unknown) => refused += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(refused, seen::MAX_ORIGINS + 2);
        assert_eq!(fresh(&mut r, &c, &b, 500), News::Stale, "B replayed");
        assert_eq!(fresh(&mut r, &c, &d, 700), News::Stale, "D replayed");
        assert_eq!(fresh(&mut r, &c, &e, 9), News::Fresh, "a new member");
        assert_eq!(fresh(&mut r, &c, &e, 9), News::Stale);
        assert_eq!(fresh(&mut r, &c, &c, 3), News::Fresh, "its own");
        assert_eq!(r.seen.len(), seen::MAX_ORIGINS);
    }

    /// Windows age by the monotonic clock, not the wall clock: a table
    /// full of made-up origins heard a moment ago still refuses a new one
    /// after the wall clock steps an hour ahead, and takes it once the
    /// monotonic clock has passed `NUMBERS_KEPT`.
    #[test]
    fn a_step_of_the_wall_clock_ripens_no_window() {
        let c = id("0c");
        let mut r = Router::new(id("01"), 0);
        r.link_opened(c.clone(), 1);
        let made_up = |i: usize| id(&format!("{:x}", 0x10_0000 + i));
        for i in 0..seen::MAX_ORIGINS {
            r.fresh(&c, &made_up(i), 1, NOW, 0, |_| false);
        }
        let hour = 3_600_000_000_000;
        let newcomer = made_up(seen::MAX_ORIGINS);
        assert_eq!(
            r.fresh(&c, &newcomer, 1, NOW + hour, 1, |_| false),
            News::Refused(Refusal::Unknown)
        );
        let kept = crate::limits::NUMBERS_KEPT.as_nanos() as u64;
        assert_eq!(
            r.fresh(&c, &newcomer, 1, NOW + hour, kept, |_| false),
            News::Fresh
        );
    }

    #[test]
    fn own_numbers_grow_from_the_start_time() {
        let mut r = Router::new(id("01"), 1000);
        assert_eq!(r.next_seq(), 1001);
        assert_eq!(r.next_seq(), 1002);
    }

    #[test]
    fn interest_sets_and_members() {
        let mut r = Router::new(id("01"), 0);
        assert!(r.subscribe("a"));
        assert!(
            !r.subscribe("a"),
            "a second local subscriber changes nothing"
        );
        let (v1, topics) = r.my_interest();
        assert_eq!(topics, vec!["a".to_string()]);
        assert_eq!(r.heard(id("02"), 5, ["a".to_string()].into()), News::Fresh);
        assert_eq!(
            r.heard(id("02"), 4, BTreeSet::new()),
            News::Stale,
            "an older set"
        );
        assert_eq!(r.members("a"), vec![id("01"), id("02")]);
        assert!(!r.unsubscribe("a"));
        assert!(r.unsubscribe("a"));
        assert!(r.my_interest().0 > v1);
        assert_eq!(r.members("a"), vec![id("02")]);
        r.forget(&id("02"));
        assert!(r.members("a").is_empty());
    }

    /// A peer restarts (a newer incarnation) and its new link replaces the
    /// stale one, which never closed as the pair's open link: the old
    /// incarnation's topics and links are forgotten, and topics the new one
    /// announced before its link opened here are kept.
    #[test]
    fn a_new_incarnation_forgets_what_the_old_one_said() {
        let (p, t) = (id("02"), |s: &str| BTreeSet::from([s.to_string()]));
        let mut r = Router::new(id("01"), 0);
        r.link_opened(p.clone(), 100);
        assert_eq!(r.heard(p.clone(), 101, t("old")), News::Fresh);
        r.links(p.clone(), &set(&["03"]));
        r.link_opened(p.clone(), 100); // the same incarnation: nothing changes
        assert_eq!(r.members("old"), vec![p.clone()]);

        r.link_opened(p.clone(), 200);
        assert!(r.members("old").is_empty());
        assert!(!r.neighbors.knows(&p));

        // The newer one's topics came first (its verdict opened the link
        // there, and it spoke at once): kept.
        assert_eq!(r.heard(p.clone(), 301, t("new")), News::Fresh);
        r.link_opened(p.clone(), 300);
        assert_eq!(r.members("new"), vec![p.clone()]);
    }

    fn set(ids: &[&str]) -> HashSet<NodeId> {
        ids.iter().map(|s| id(s)).collect()
    }

    /// Two cliques {a1,a2,a3} and {b1,b2,b3}, bridged a1-b1.
    #[test]
    fn relaying_across_a_bridge_reaches_each_node_once() {
        let links: HashMap<&str, Vec<&str>> = [
            ("a1", vec!["a2", "a3", "b1"]),
            ("a2", vec!["a1", "a3"]),
            ("a3", vec!["a1", "a2"]),
            ("b1", vec!["b2", "b3", "a1"]),
            ("b2", vec!["b1", "b3"]),
            ("b3", vec!["b1", "b2"]),
        ]
        .into();
        let routers: HashMap<&str, Router> = links
            .keys()
            .map(|me| {
                let mut r = Router::new(id(me), 0);
                for p in &links[me] {
                    r.link_opened(id(p), 0);
                    r.links(id(p), &set(&links[p]));
                }
                (*me, r)
            })
            .collect();
        // Flood from a2: count how often each node receives it.
        let mut got: HashMap<NodeId, usize> = HashMap::new();
        let mut wave: Vec<(NodeId, NodeId)> =
            links["a2"].iter().map(|p| (id("a2"), id(p))).collect();
        while let Some((from, to)) = wave.pop() {
            *got.entry(to.clone()).or_default() += 1;
            let r = &routers[to.as_str()];
            for next in r.relay_to(&from, &id("a2"), None) {
                wave.push((to.clone(), next));
            }
        }
        let mut want: HashMap<NodeId, usize> = HashMap::new();
        for n in ["a1", "a3", "b1", "b2", "b3"] {
            want.insert(id(n), 1);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn topic_messages_relay_toward_members_only_when_all_are_in_reach() {
        let mut r = Router::new(id("b1"), 0);
        for p in ["a1", "b2", "b3"] {
            r.link_opened(id(p), 0);
        }
        r.links(id("a1"), &set(&["a2", "a3", "b1"]));
        r.heard(id("b2"), 1, ["t".to_string()].into());
        // Every member reached directly: only to the member.
        assert_eq!(r.relay_to(&id("a1"), &id("a2"), Some("t")), vec![id("b2")]);
        // A member out of reach (behind b3, say): to every candidate.
        r.heard(id("c9"), 1, ["t".to_string()].into());
        assert_eq!(
            r.relay_to(&id("a1"), &id("a2"), Some("t")),
            vec![id("b2"), id("b3")]
        );
        assert_eq!(r.publish_to("t"), vec![id("a1"), id("b2"), id("b3")]);
        r.forget(&id("c9"));
        assert_eq!(r.publish_to("t"), vec![id("b2")]);
    }

    /// A relayed message numbered far ahead of the clock (a forgery meant
    /// to make the origin's later messages look old) is refused, and the
    /// origin's real messages stay fresh; its own link may number as it
    /// likes.
    #[test]
    fn relayed_numbers_ahead_of_the_clock_are_refused() {
        let (b, relay) = (id("0b"), id("0c"));
        let mut r = Router::new(id("01"), 0);
        let now = 1_000_000_000_000;
        assert_eq!(r.fresh(&b, &b, now, now, now, |_| false), News::Fresh);
        let forged = u64::MAX - 1;
        assert!(matches!(
            r.fresh(&relay, &b, forged, now, now, |_| false),
            News::Refused(Refusal::Ahead { number, .. }) if number == forged
        ));
        let ahead = now + MAX_AHEAD.as_nanos() as u64;
        assert_eq!(
            r.fresh(&relay, &b, ahead, now, now, |_| false),
            News::Fresh,
            "at the bound"
        );
        assert!(matches!(
            r.fresh(&relay, &b, ahead + 1_000_000, now, now, |_| false),
            News::Refused(_)
        ));
        // Not recorded: B's next real message is fresh.
        assert_eq!(r.fresh(&b, &b, ahead + 1, now, now, |_| false), News::Fresh);
        assert_eq!(
            r.fresh(&b, &b, forged, now, now, |_| false),
            News::Fresh,
            "its own link"
        );

        // Versions likewise: a relayed one ahead is refused, B's set stays.
        let t = BTreeSet::from(["t".to_string()]);
        let frame = || Frame::data(bytes::Bytes::new());
        assert_eq!(
            r.interest(&b, b.clone(), now, t.clone(), now, frame),
            News::Fresh
        );
        assert!(matches!(
            r.interest(&relay, b.clone(), u64::MAX, BTreeSet::new(), now, frame),
            News::Refused(Refusal::Ahead { .. })
        ));
        assert_eq!(r.members("t"), vec![b.clone()]);
    }

    /// Numbers and versions of an incarnation older than the linked one are
    /// dropped; a newer incarnation starts a new window, so numbers pushed
    /// up by the old one (or in its name) no longer count.
    #[test]
    fn an_origins_state_starts_over_with_its_incarnation() {
        let p = id("02");
        let mut r = Router::new(id("01"), 0);
        r.link_opened(p.clone(), 1000);
        assert!(r.is_fresh(&p, 5000));
        assert!(!r.is_fresh(&p, 1000), "the old incarnation's");
        assert_eq!(r.heard(p.clone(), 900, BTreeSet::new()), News::Stale);
        // Restarted at 2000: its first number is below what was seen of
        // the old one, and still fresh.
        r.link_opened(p.clone(), 2000);
        assert!(r.is_fresh(&p, 2001));
        assert!(!r.is_fresh(&p, 1500));
    }

    fn topics(n: usize, len: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("{i:0len$}")).collect()
    }

    /// Made-up nodes' topics stop at the budget of all; one node's set
    /// over its own budget is refused, and the set known before stays.
    #[test]
    fn interest_is_held_within_its_budgets() {
        use crate::limits::{MAX_INTEREST_BYTES, MAX_INTEREST_BYTES_PER_NODE};
        let mut r = Router::new(id("01"), 0);
        let b = id("0b");
        r.link_opened(b.clone(), 1);
        assert_eq!(r.heard(b.clone(), 2, topics(10, 20)), News::Fresh);
        let huge = topics(4096, 200);
        assert!(matches!(
            r.heard(b.clone(), 3, huge.clone()),
            News::Refused(Refusal::OverBudget { what: "topics of one node", budget, .. })
                if budget == MAX_INTEREST_BYTES_PER_NODE
        ));
        assert_eq!(r.members("00000000000000000003"), vec![b.clone()]);

        // Made-up nodes, each just under the budget of one.
        let big = topics(1800, 200);
        let mut refused = 0;
        for n in 0..64u32 {
            match r.heard(id(&format!("f{n:03x}")), 2, big.clone()) {
                News::Fresh => {}
                News::Refused(Refusal::OverBudget {
                    what: "topics of all nodes",
                    ..
                }) => refused += 1,
                other => panic!("{other:?}"),
            }
            assert!(r.interest_bytes() <= MAX_INTEREST_BYTES);
        }
        assert!(refused > 40, "only {refused} refused");
        // A linked peer still gets its set in: made-up nodes make room.
        let c = id("0c");
        r.link_opened(c.clone(), 1);
        assert_eq!(r.heard(c.clone(), 2, big.clone()), News::Fresh);
        let members = r.members(&format!("{:0200}", 1));
        assert!(members.contains(&c));
        assert!(
            !members.contains(&id("f000")),
            "the least recent goes first"
        );
        assert_eq!(r.members(&format!("{:020}", 1)), vec![b.clone()]);
        assert!(r.interest_bytes() <= MAX_INTEREST_BYTES);
        // Forgotten with its link, it frees its share.
        let before = r.interest_bytes();
        r.forget(&c);
        assert!(r.interest_bytes() < before);
    }

    /// Peers' link lists are kept as hashes, at most MAX_PEERS ids each.
    #[test]
    fn neighbor_lists_are_bounded() {
        use crate::limits::MAX_PEERS;
        let mut r = Router::new(id("01"), 0);
        let p = id("02");
        let many: Vec<NodeId> = (0..=MAX_PEERS).map(|i| id(&format!("{i:04x}"))).collect();
        assert!(matches!(
            r.neighbors(p.clone(), many.iter().map(NodeId::as_str)),
            Err(Refusal::OverBudget {
                what: "links of one peer",
                ..
            })
        ));
        assert!(!r.neighbors.knows(&p));
        r.neighbors(p.clone(), many[..MAX_PEERS].iter().map(NodeId::as_str))
            .unwrap();
        assert!(r.neighbors.links(&p, &many[7]));
        assert!(!r.neighbors.links(&p, &many[MAX_PEERS]));
    }

    /// In a full mesh no peer relays, so nothing needs signing; a peer with
    /// no list yet, or linked to a node this one is not, may relay.
    #[test]
    fn messages_may_be_relayed_only_where_the_mesh_is_not_full() {
        let (a, b, c, d) = (id("0a"), id("0b"), id("0c"), id("0d"));
        let mut r = Router::new(a.clone(), 0);
        assert!(!r.may_be_relayed(), "alone");
        r.link_opened(b.clone(), 1);
        r.link_opened(c.clone(), 1);
        assert!(r.may_be_relayed(), "lists unknown");
        r.links(b.clone(), &set(&["0a", "0c"]));
        assert!(r.may_be_relayed(), "C's list unknown");
        r.links(c.clone(), &set(&["0a", "0b"]));
        assert!(!r.may_be_relayed(), "a full mesh");
        r.links(c.clone(), &set(&["0a", "0b", "0d"]));
        assert!(r.may_be_relayed(), "C reaches D, A does not");
        r.link_opened(d.clone(), 1);
        r.links(d.clone(), &set(&["0a", "0c"]));
        assert!(!r.may_be_relayed(), "full again: A reaches D too");
        r.forget(&d);
        assert!(r.may_be_relayed(), "D gone, C still names it");
    }
}
