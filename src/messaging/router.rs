//! Messaging state without I/O: who subscribes to what, which messages were
//! seen, and where a message goes.
//!
//! Like the node's mesh, this is a pure state machine: the messaging shell
//! ([`crate::messaging`]) feeds it envelopes and link changes, and sends what
//! it says to send.
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
//! seen and which of the [`WINDOW`] numbers below it it has seen, and delivers
//! a message only the first time: relayed copies are dropped. A node numbers
//! a message as it queues it on all its links at once (see the shell's
//! `flood`), so over a direct link an origin's numbers arrive in order; the
//! window absorbs the disorder between relay paths. A number older than the
//! window counts as seen. The table holds at most [`MAX_ORIGINS`] nodes,
//! forgetting the one heard from least recently.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::id::NodeId;

/// Most nodes whose message numbers are remembered.
pub(crate) const MAX_ORIGINS: usize = 4096;
/// How far below the highest number seen a message may still be new.
pub(crate) const WINDOW: u64 = 1024;

/// The numbers seen from one origin.
#[derive(Debug)]
struct Seen {
    highest: u64,
    /// Bit `i` set: `highest - i` was seen.
    bits: [u64; (WINDOW / 64) as usize],
    heard: u64,
}

impl Seen {
    fn new(seq: u64, now: u64) -> Seen {
        let mut bits = [0u64; (WINDOW / 64) as usize];
        bits[0] = 1;
        Seen {
            highest: seq,
            bits,
            heard: now,
        }
    }

    fn bit(&mut self, i: u64) -> (&mut u64, u64) {
        (&mut self.bits[(i / 64) as usize], 1u64 << (i % 64))
    }

    /// Records `seq`; true if it was not seen before.
    fn record(&mut self, seq: u64) -> bool {
        if seq > self.highest {
            let shift = seq - self.highest;
            self.shift(shift);
            self.highest = seq;
            let (w, b) = self.bit(0);
            *w |= b;
            return true;
        }
        let back = self.highest - seq;
        if back >= WINDOW {
            return false;
        }
        let (w, b) = self.bit(back);
        let fresh = *w & b == 0;
        *w |= b;
        fresh
    }

    /// Moves the window up by `n` numbers.
    fn shift(&mut self, n: u64) {
        if n >= WINDOW {
            self.bits = [0; (WINDOW / 64) as usize];
            return;
        }
        let (words, bits) = ((n / 64) as usize, (n % 64) as u32);
        let len = self.bits.len();
        for i in (0..len).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.bits[s] << bits);
            let lo = match src.and_then(|s| s.checked_sub(1)) {
                Some(s) if bits > 0 => self.bits[s] >> (64 - bits),
                _ => 0,
            };
            self.bits[i] = hi | lo;
        }
    }
}

/// The messaging state of one node.
#[derive(Debug)]
pub(crate) struct Router {
    me: NodeId,
    next_seq: u64,
    /// Numbers seen per origin.
    seen: HashMap<NodeId, Seen>,
    clock: u64,
    /// Each node's subscribed topics and the version of that set.
    interest: HashMap<NodeId, (u64, BTreeSet<String>)>,
    /// Local subscribers per topic.
    mine: HashMap<String, usize>,
    my_version: u64,
    /// Each peer's own links, as it last told us.
    neighbors: HashMap<NodeId, HashSet<NodeId>>,
    /// The peers this node has an open link to.
    linked: HashSet<NodeId>,
    /// The incarnation (start time) of each peer linked, as its link's
    /// hello said.
    incarnations: HashMap<NodeId, u64>,
}

impl Router {
    pub(crate) fn new(me: NodeId, start: u64) -> Router {
        Router {
            me,
            next_seq: start,
            seen: HashMap::new(),
            clock: 0,
            interest: HashMap::new(),
            mine: HashMap::new(),
            my_version: start,
            neighbors: HashMap::new(),
            linked: HashSet::new(),
            incarnations: HashMap::new(),
        }
    }

    /// A link to `peer`, of its incarnation `incarnation`, opened. What an
    /// older incarnation of it said is forgotten: its topics (a node's
    /// versions start above its start time, so they are the ones no newer
    /// than `incarnation`; a restarted node with no topics never says so
    /// itself) and its links. What the new incarnation said already, on a
    /// link opened by its verdict before this end heard of it, stays.
    pub(crate) fn link_opened(&mut self, peer: NodeId, incarnation: u64) {
        if self
            .interest
            .get(&peer)
            .is_some_and(|(version, _)| *version <= incarnation)
        {
            self.interest.remove(&peer);
        }
        let known = self.incarnations.insert(peer.clone(), incarnation);
        if known.is_some_and(|older| older < incarnation) {
            self.neighbors.remove(&peer);
        }
        self.linked.insert(peer);
    }

    /// The peers this node is linked to.
    pub(crate) fn linked(&self) -> &HashSet<NodeId> {
        &self.linked
    }

    /// A peer told us which nodes it is linked to.
    pub(crate) fn neighbors(&mut self, peer: NodeId, links: HashSet<NodeId>) {
        self.neighbors.insert(peer, links);
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
        let empty = HashSet::new();
        let theirs = self.neighbors.get(from).unwrap_or(&empty);
        let mut to: Vec<NodeId> = linked
            .iter()
            .filter(|p| *p != from && *p != origin && !theirs.contains(*p))
            .cloned()
            .collect();
        if let Some(topic) = topic {
            let members = self.members(topic);
            let reached = |m: &NodeId| {
                m == &self.me
                    || m == from
                    || m == origin
                    || linked.contains(m)
                    || theirs.contains(m)
            };
            if members.iter().all(reached) {
                to.retain(|p| members.contains(p));
            }
        }
        to.sort();
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

    /// Every node's topics we know, to pass to a new peer. Nodes without a
    /// subscription are left out: a new peer knows nothing of them, which
    /// is the same, and a mesh forming without topics then costs no
    /// gossip at all.
    pub(crate) fn all_interest(&self) -> Vec<(NodeId, u64, Vec<String>)> {
        self.interest
            .iter()
            .filter(|(_, (_, t))| !t.is_empty())
            .map(|(id, (v, t))| (id.clone(), *v, t.iter().cloned().collect()))
            .collect()
    }

    /// The number of the next message this node originates.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// True if the message `(origin, seq)` is new: it is then recorded.
    pub(crate) fn fresh(&mut self, origin: &NodeId, seq: u64) -> bool {
        self.clock += 1;
        let now = self.clock;
        if let Some(seen) = self.seen.get_mut(origin) {
            seen.heard = now;
            return seen.record(seq);
        }
        if self.seen.len() >= MAX_ORIGINS {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, s)| s.heard)
                .map(|(id, _)| id.clone())
                .expect("not empty");
            self.seen.remove(&oldest);
        }
        self.seen.insert(origin.clone(), Seen::new(seq, now));
        true
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

    /// A node told us its topics. Returns false if we already knew this
    /// version or a newer one.
    pub(crate) fn interest(
        &mut self,
        node: NodeId,
        version: u64,
        topics: BTreeSet<String>,
    ) -> bool {
        if node == self.me {
            return false;
        }
        match self.interest.get(&node) {
            Some((v, _)) if *v >= version => false,
            // A flood of made-up nodes stops at the same bound as the
            // duplicate table.
            None if self.interest.len() >= MAX_ORIGINS => false,
            _ => {
                self.interest.insert(node, (version, topics));
                true
            }
        }
    }

    /// A peer's open link closed: forget it, its links, and its topics.
    pub(crate) fn forget(&mut self, node: &NodeId) {
        self.linked.remove(node);
        self.incarnations.remove(node);
        self.interest.remove(node);
        self.neighbors.remove(node);
    }

    /// The nodes with a subscriber to `topic`, this one included, sorted.
    pub(crate) fn members(&self, topic: &str) -> Vec<NodeId> {
        let mut m: Vec<NodeId> = self
            .interest
            .iter()
            .filter(|(_, (_, t))| t.contains(topic))
            .map(|(id, _)| id.clone())
            .collect();
        if self.subscribed(topic) {
            m.push(self.me.clone());
        }
        m.sort();
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).unwrap()
    }

    #[test]
    fn each_message_is_fresh_once() {
        let mut r = Router::new(id("01"), 100);
        assert!(r.fresh(&id("02"), 5));
        assert!(!r.fresh(&id("02"), 5), "a duplicate");
        assert!(r.fresh(&id("02"), 4), "late but new");
        assert!(!r.fresh(&id("02"), 4), "late and seen");
        assert!(r.fresh(&id("02"), 9), "gaps are fine");
        assert!(r.fresh(&id("03"), 1), "per origin");
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
            let fresh = r.fresh(&id("02"), seq);
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
        for i in 0..MAX_ORIGINS + 10 {
            r.fresh(&id(&format!("{:04x}", i + 2)), 1);
        }
        assert_eq!(r.seen.len(), MAX_ORIGINS);
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
        assert!(r.interest(id("02"), 5, ["a".to_string()].into()));
        assert!(!r.interest(id("02"), 4, BTreeSet::new()), "an older set");
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
        assert!(r.interest(p.clone(), 101, t("old")));
        r.neighbors(p.clone(), set(&["03"]));
        r.link_opened(p.clone(), 100); // the same incarnation: nothing changes
        assert_eq!(r.members("old"), vec![p.clone()]);

        r.link_opened(p.clone(), 200);
        assert!(r.members("old").is_empty());
        assert!(!r.neighbors.contains_key(&p));

        // The newer one's topics came first (its verdict opened the link
        // there, and it spoke at once): kept.
        assert!(r.interest(p.clone(), 301, t("new")));
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
                    r.neighbors(id(p), set(&links[p]));
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
        r.neighbors(id("a1"), set(&["a2", "a3", "b1"]));
        r.interest(id("b2"), 1, ["t".to_string()].into());
        // Every member reached directly: only to the member.
        assert_eq!(r.relay_to(&id("a1"), &id("a2"), Some("t")), vec![id("b2")]);
        // A member out of reach (behind b3, say): to every candidate.
        r.interest(id("c9"), 1, ["t".to_string()].into());
        assert_eq!(
            r.relay_to(&id("a1"), &id("a2"), Some("t")),
            vec![id("b2"), id("b3")]
        );
        assert_eq!(r.publish_to("t"), vec![id("a1"), id("b2"), id("b3")]);
        r.forget(&id("c9"));
        assert_eq!(r.publish_to("t"), vec![id("b2")]);
    }
}
