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
//! - A peer that restarted with the same id comes back with a new
//!   *incarnation*. The decider replaces an open link of an older incarnation
//!   instead of rejecting the new one. The other end treats every `ACCEPT` as
//!   the truth and closes whatever older link it still holds to that peer.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::connection::CloseReason;
use crate::id::NodeId;

/// A link's number, unique within one service.
pub(crate) type LinkId = u64;

/// The decider's word on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    Reject,
}

/// What the service must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Connect to a peer at these addresses.
    Dial {
        peer: NodeId,
        addrs: Vec<SocketAddr>,
    },
    /// Send the verdict on the link (the link then opens or closes).
    SendVerdict { link: LinkId, verdict: Verdict },
    /// The link is the pair's one link: publish it and tell subscribers.
    Open { link: LinkId },
    /// Close the link.
    Close { link: LinkId, reason: CloseReason },
}

#[derive(Debug)]
struct Link {
    peer: NodeId,
    incarnation: u64,
    open: bool,
}

#[derive(Debug, Default)]
struct Peer {
    addrs: Vec<SocketAddr>,
    dialing: bool,
}

/// The state of one node's view of the mesh.
#[derive(Debug)]
pub(crate) struct Mesh {
    me: NodeId,
    peers: HashMap<NodeId, Peer>,
    links: HashMap<LinkId, Link>,
}

/// True if `me` decides which link the pair (`me`, `peer`) keeps.
pub(crate) fn decides(me: &NodeId, peer: &NodeId) -> bool {
    me < peer
}

impl Mesh {
    pub fn new(me: NodeId) -> Self {
        Mesh {
            me,
            peers: HashMap::new(),
            links: HashMap::new(),
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

    /// Number of open links.
    #[cfg(test)]
    pub fn open_count(&self) -> usize {
        self.links.values().filter(|l| l.open).count()
    }

    /// mDNS resolved (or re-resolved) a peer. Dials it unless a link to it is
    /// open or pending, or a dial is already under way.
    pub fn discovered(&mut self, peer: NodeId, addrs: Vec<SocketAddr>) -> Vec<Action> {
        if peer == self.me {
            return vec![];
        }
        let busy = self.has_link(&peer);
        let entry = self.peers.entry(peer.clone()).or_default();
        entry.addrs = addrs;
        if busy || entry.dialing || entry.addrs.is_empty() {
            return vec![];
        }
        entry.dialing = true;
        vec![Action::Dial {
            peer,
            addrs: entry.addrs.clone(),
        }]
    }

    /// A dial ended, linked or not.
    pub fn dial_ended(&mut self, peer: &NodeId) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.dialing = false;
        }
    }

    /// mDNS says the peer is gone. Its link, if any, stays: TCP is the truth
    /// about a link, and a goodbye can arrive before the peer's last frames.
    pub fn lost(&mut self, peer: &NodeId) {
        if let Some(p) = self.peers.get(peer) {
            if !p.dialing {
                self.peers.remove(peer);
            }
        }
    }

    /// A link finished its hello exchange with `peer` (already checked to be
    /// of our cluster and not ourselves).
    pub fn handshaken(&mut self, link: LinkId, peer: NodeId, incarnation: u64) -> Vec<Action> {
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
            if self.links[&old].incarnation == incarnation {
                return vec![Action::SendVerdict {
                    link,
                    verdict: Verdict::Reject,
                }];
            }
            // The peer restarted: its old link is stale.
            self.links.remove(&old);
            actions.push(Action::Close {
                link: old,
                reason: CloseReason::Replaced,
            });
        }
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
    pub fn verdict(&mut self, link: LinkId, verdict: Verdict) -> Vec<Action> {
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
        if verdict == Verdict::Reject {
            self.links.remove(&link);
            return vec![Action::Close {
                link,
                reason: CloseReason::Duplicate,
            }];
        }
        let peer = state.peer.clone();
        let mut actions = Vec::new();
        if let Some(old) = self.open_link(&peer) {
            self.links.remove(&old);
            actions.push(Action::Close {
                link: old,
                reason: CloseReason::Replaced,
            });
        }
        self.links.get_mut(&link).expect("checked above").open = true;
        actions.push(Action::Open { link });
        actions
    }

    /// A link closed. Returns whether it was open.
    pub fn closed(&mut self, link: LinkId) -> bool {
        self.links.remove(&link).is_some_and(|l| l.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).unwrap()
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
        assert!(m.discovered(id("0a"), addr()).is_empty());
    }

    #[test]
    fn discovery_dials_once() {
        let mut m = Mesh::new(id("0a"));
        assert!(matches!(
            m.discovered(id("0b"), addr())[..],
            [Action::Dial { .. }]
        ));
        // A re-announcement (say, with an IPv6 address) while dialing.
        assert!(m.discovered(id("0b"), addr()).is_empty());
        m.dial_ended(&id("0b"));
        m.handshaken(1, id("0b"), 7);
        assert!(
            m.discovered(id("0b"), addr()).is_empty(),
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
        ma.discovered(id("02"), addr());
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
                reason: CloseReason::Duplicate
            }]
        );
        assert_eq!(
            mb.verdict(1, Verdict::Accept),
            vec![Action::Open { link: 1 }]
        );
        assert_eq!(mb.open_count(), 1);
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
        assert!(!ma.closed(1));
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
        assert!(!mb.closed(1));
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
        assert!(ma.closed(1));
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
}
