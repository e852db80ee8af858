//! Hints: where peers say the members they are linked to listen (their
//! lists of links, see [`crate::wire::links`]), so that a node dials a
//! member it has not found over mDNS itself. A hint is a peer's word, not
//! a fact: the handshake of the dial proves (or not) who answers there.
//! This is the bookkeeping that bounds what a peer's word can cost, pure
//! (no sockets, no clocks), for the [`Mesh`](crate::node::mesh::Mesh):
//!
//! - a peer has at most [`MAX_PENDING`] members hinted at once whose dial
//!   has not ended, and its hints stop counting once [`MAX_FAILED`] of them
//!   have failed (over the node's life);
//! - a failed dial is charged only to the peers whose address it tried;
//! - a member whose dial through a peer's hint failed is not followed
//!   through that peer's hints again (a peer repeats its list on every
//!   change); while a linked peer whose hints count still names it, the
//!   mesh redials it, backing off (see
//!   [`Mesh::dial_ended`](crate::node::mesh::Mesh::dial_ended));
//! - at most [`MAX_TELLERS`] peers are tracked;
//! - an address no member can listen at is no hint at all, and a
//!   loopback address from a peer on another host means that peer's host,
//!   and an IPv6 link-local one the link this node reaches that peer by
//!   ([`dialable`]);
//! - hints wait for the actor in [`Unhandled`], at most one set per peer
//!   and none past what its latest list names: a peer that sends lists
//!   faster than the actor takes them grows no queue.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use crate::id::NodeId;
use crate::limits::MAX_PEERS;
use crate::messaging::relay::Hints;

/// Most members one peer's hints have in dialing at once: half the dial
/// slots a node has, so that one peer's hints never hold all of them.
pub(crate) const MAX_PENDING: usize = 16;
/// Failed hints after which a peer's hints are ignored.
pub(crate) const MAX_FAILED: usize = 8;
/// Most peers whose hints are tracked.
const MAX_TELLERS: usize = MAX_PEERS;
/// Most addresses one member is hinted at (from as many peers): with the
/// address where it last proved its key, every one fits in a dial's
/// [`DIAL_ADDRS`](crate::node::mesh::DIAL_ADDRS).
pub(crate) const MAX_ADDRS: usize = 3;

/// What one peer's hints have cost.
#[derive(Debug, Default)]
struct Teller {
    /// Members it hinted whose dial has not ended.
    pending: usize,
    /// Members whose dial through its hint failed, at most [`MAX_FAILED`].
    failed: Vec<NodeId>,
}

/// What the hints of each peer that told some have cost, as far as that
/// bounds what is dialed.
#[derive(Debug, Default)]
pub(crate) struct Tellers {
    tellers: HashMap<NodeId, Teller>,
}

impl Tellers {
    /// Takes a dial's worth of `teller`'s credit for a hint of `member`:
    /// false if its hints no longer count, it has [`MAX_PENDING`] hints in
    /// dialing, or its hint of `member` failed before. With the table
    /// full, the peers no longer `linked` leave it first.
    pub(crate) fn take(
        &mut self,
        teller: &NodeId,
        member: &NodeId,
        linked: impl Fn(&NodeId) -> bool,
    ) -> bool {
        if !self.tellers.contains_key(teller) && self.tellers.len() >= MAX_TELLERS {
            self.tellers.retain(|t, _| linked(t));
            if self.tellers.len() >= MAX_TELLERS {
                return false;
            }
        }
        let t = self.tellers.entry(teller.clone()).or_default();
        if t.failed.len() >= MAX_FAILED || t.pending >= MAX_PENDING || t.failed.contains(member) {
            return false;
        }
        t.pending += 1;
        true
    }

    /// The dial of `member` that `teller` hinted ended (or is no longer the
    /// hint's: the member was discovered, or linked by its own dial); it
    /// counts against the teller if it `failed`.
    pub(crate) fn settled(&mut self, teller: &NodeId, member: &NodeId, failed: bool) {
        let Some(t) = self.tellers.get_mut(teller) else {
            return;
        };
        t.pending = t.pending.saturating_sub(1);
        if failed && t.failed.len() < MAX_FAILED {
            t.failed.push(member.clone());
        }
        if t.pending == 0 && t.failed.is_empty() {
            self.tellers.remove(teller);
        }
    }

    /// True if `teller`'s hints no longer count.
    pub(crate) fn spent(&self, teller: &NodeId) -> bool {
        self.tellers
            .get(teller)
            .is_some_and(|t| t.failed.len() >= MAX_FAILED)
    }
}

/// Hints that peers' lists of links gave and the node's actor has not
/// taken yet: one [`Hints`] per teller, which a teller's next hints join
/// (its list replaces its last, so what waits stays what its latest list
/// names), at most [`MAX_PEERS`] members each, of at most [`MAX_TELLERS`]
/// tellers. The actor is told that hints wait only when none did
/// ([`offer`](Self::offer)), and takes them all at once
/// ([`take`](Self::take)): however fast peers send lists, its command
/// channel holds at most one command for them.
#[derive(Debug, Default)]
pub(crate) struct Unhandled {
    by_teller: HashMap<NodeId, Hints>,
}

impl Unhandled {
    /// Adds `hints` to what waits of their teller: the members that waited
    /// and that the teller's latest list still names (`names(member)`)
    /// stay, after the new ones, up to [`MAX_PEERS`]; the new `via`
    /// replaces the old. Dropped with [`MAX_TELLERS`] other tellers
    /// waiting. True if nothing waited before: the actor is to be told.
    pub(crate) fn offer(&mut self, hints: Hints, names: impl Fn(&NodeId) -> bool) -> bool {
        let first = self.by_teller.is_empty();
        let full = self.by_teller.len() >= MAX_TELLERS;
        match self.by_teller.get_mut(&hints.from) {
            Some(waiting) => {
                let Hints {
                    via, mut members, ..
                } = hints;
                members.truncate(MAX_PEERS);
                let new: HashSet<&NodeId> = members.iter().map(|(m, _)| m).collect();
                let kept: Vec<(NodeId, SocketAddr)> = std::mem::take(&mut waiting.members)
                    .into_iter()
                    .filter(|(m, _)| !new.contains(m) && names(m))
                    .take(MAX_PEERS - members.len())
                    .collect();
                members.extend(kept);
                waiting.via = via;
                waiting.members = members;
            }
            None if full => {}
            None => {
                let mut hints = hints;
                hints.members.truncate(MAX_PEERS);
                self.by_teller.insert(hints.from.clone(), hints);
            }
        }
        first && !self.by_teller.is_empty()
    }

    /// Everything that waits, leaving nothing.
    pub(crate) fn take(&mut self) -> Vec<Hints> {
        self.by_teller.drain().map(|(_, h)| h).collect()
    }

    /// Members waiting, of every teller.
    #[cfg(test)]
    fn members(&self) -> usize {
        self.by_teller.values().map(|h| h.members.len()).sum()
    }
}

/// Where to dial a member that a peer on a link from `via` says listens
/// at `at`: there, or on the peer's own host for a loopback address from a
/// peer on another host (the member shares the teller's loopback); an IPv6
/// link-local address through the interface this node reaches the teller
/// by (the scope of `via`: the teller's own scope means nothing here);
/// `None` for an address no member listens at (port 0, unspecified,
/// multicast, broadcast), or a link-local one from a teller whose address
/// has no scope (reached over IPv4 or a routed address, this node cannot
/// tell which link the member is on).
pub(crate) fn dialable(at: SocketAddr, via: SocketAddr) -> Option<SocketAddr> {
    let ip = at.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if at.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
        return None;
    }
    if ip.is_loopback() && !via.ip().is_loopback() {
        let mut on_host = via;
        on_host.set_port(at.port());
        return Some(on_host);
    }
    match at {
        SocketAddr::V6(mut at) if at.ip().is_unicast_link_local() => match via {
            SocketAddr::V6(via) if via.scope_id() != 0 => {
                at.set_scope_id(via.scope_id());
                Some(at.into())
            }
            _ => None,
        },
        at => Some(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::id;

    #[test]
    fn a_tellers_pending_hints_are_bounded() {
        let mut h = Tellers::default();
        let t = id("0a");
        let members: Vec<NodeId> = (0..MAX_PENDING + 1)
            .map(|i| id(&format!("{:x}", 0x100 + i)))
            .collect();
        for m in &members[..MAX_PENDING] {
            assert!(h.take(&t, m, |_| true));
        }
        assert!(
            !h.take(&t, &members[MAX_PENDING], |_| true),
            "over the bound"
        );
        // Another peer is not held back by this one.
        assert!(h.take(&id("0b"), &members[MAX_PENDING], |_| true));
        // One settles: room for one more.
        h.settled(&t, &members[0], false);
        assert!(h.take(&t, &members[MAX_PENDING], |_| true));
    }

    /// A list of `n` made-up members from `teller`, numbered from `first`.
    fn list(teller: &NodeId, first: usize, n: usize) -> Hints {
        Hints {
            from: teller.clone(),
            via: "10.99.0.9:4000".parse().unwrap(),
            members: (first..first + n)
                .map(|i| {
                    (
                        id(&format!("{:x}", 0x10000 + i)),
                        "10.99.0.66:9".parse().unwrap(),
                    )
                })
                .collect(),
        }
    }

    /// A peer that sends lists of made-up members faster than the actor
    /// takes them: the actor is told once, and what waits is what the
    /// peer's latest list names, at most a list's worth even if every
    /// member stayed named; another peer's hints wait beside them.
    #[test]
    fn unhandled_hints_are_bounded_however_fast_lists_come() {
        let mut u = Unhandled::default();
        let (liar, honest) = (id("0a"), id("0b"));
        assert!(
            u.offer(list(&liar, 0, MAX_PEERS), |_| false),
            "tell the actor"
        );
        for n in 1..1000 {
            let latest = list(&liar, n * MAX_PEERS, MAX_PEERS);
            let named: HashSet<NodeId> = latest.members.iter().map(|(m, _)| m.clone()).collect();
            assert!(!u.offer(latest, |m| named.contains(m)), "told already");
            assert_eq!(u.members(), MAX_PEERS, "only the latest list waits");
        }
        // A peer whose lists all still name every member: the cap holds.
        for n in 0..10 {
            assert!(!u.offer(list(&liar, n * 7, MAX_PEERS / 2), |_| true));
            assert!(u.members() <= MAX_PEERS, "{}", u.members());
        }
        // A list longer than a list may be is cut to one.
        u.offer(list(&honest, 0, MAX_PEERS + 5), |_| true);
        assert_eq!(u.members(), 2 * MAX_PEERS);
        // The actor takes it all; the next hints tell it again.
        let taken = u.take();
        assert_eq!(taken.len(), 2);
        assert_eq!(u.members(), 0);
        let first = list(&honest, 0, 1);
        assert!(u.offer(first.clone(), |_| false));
        assert_eq!(u.take(), vec![first]);
    }

    /// A teller's hints that wait join its next ones: the members its list
    /// still names stay (the next list does not repeat them as news), the
    /// others go, and the newest address of the link is kept.
    #[test]
    fn a_tellers_next_hints_join_those_waiting() {
        let mut u = Unhandled::default();
        let t = id("0a");
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let h = |via: &str, members: &[(&str, &str)]| Hints {
            from: t.clone(),
            via: at(via),
            members: members.iter().map(|(m, a)| (id(m), at(a))).collect(),
        };
        u.offer(
            h("10.0.0.1:1", &[("0b", "10.0.0.2:1"), ("0c", "10.0.0.3:1")]),
            |_| true,
        );
        let still = id("0b");
        u.offer(h("10.0.0.1:2", &[("0d", "10.0.0.4:1")]), |m| *m == still);
        assert_eq!(
            u.take(),
            vec![h(
                "10.0.0.1:2",
                &[("0d", "10.0.0.4:1"), ("0b", "10.0.0.2:1")]
            )]
        );
    }

    #[test]
    fn a_failed_hint_is_not_taken_again_and_failures_spend_the_teller() {
        let mut h = Tellers::default();
        let t = id("0a");
        let m = |i: usize| id(&format!("{:x}", 0x100 + i));
        assert!(h.take(&t, &m(0), |_| true));
        h.settled(&t, &m(0), true);
        assert!(!h.take(&t, &m(0), |_| true), "the same hint again");
        assert!(
            h.take(&id("0b"), &m(0), |_| true),
            "another peer's hint of it"
        );
        for i in 1..MAX_FAILED {
            assert!(h.take(&t, &m(i), |_| true));
            h.settled(&t, &m(i), true);
        }
        assert!(h.spent(&t));
        assert!(!h.take(&t, &m(MAX_FAILED + 1), |_| true), "spent");
    }

    #[test]
    fn hints_are_dialed_where_the_member_can_listen() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let lan = a("10.99.0.3:50000");
        let lo = a("127.0.0.1:50000");
        let at = |s: &str, via| dialable(a(s), via);
        assert_eq!(at("10.99.0.2:4000", lan), Some(a("10.99.0.2:4000")));
        assert_eq!(at("127.0.0.1:4000", lo), Some(a("127.0.0.1:4000")));
        assert_eq!(at("10.99.0.2:4000", lo), Some(a("10.99.0.2:4000")));
        assert_eq!(
            at("127.0.0.1:4000", lan),
            Some(a("10.99.0.3:4000")),
            "on the teller's host"
        );
        assert_eq!(at("[::1]:4000", lan), Some(a("10.99.0.3:4000")));
        for bogus in [
            "10.99.0.2:0",
            "0.0.0.0:4000",
            "224.0.0.251:5353",
            "255.255.255.255:4000",
        ] {
            assert_eq!(at(bogus, lan), None, "{bogus}");
        }
    }

    /// An IPv6 link-local hint is dialed through the interface the teller
    /// is reached by: its link's scope replaces whatever scope the teller
    /// wrote; from a teller whose address has no scope it is no hint. A
    /// loopback hint from a link-local teller keeps the teller's scope.
    #[test]
    fn a_link_local_hint_takes_the_scope_of_the_tellers_link() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let on_link = a("[fe80::3%7]:50000");
        assert_eq!(
            dialable(a("[fe80::2]:4000"), on_link),
            Some(a("[fe80::2%7]:4000"))
        );
        assert_eq!(
            dialable(a("[fe80::2%3]:4000"), on_link),
            Some(a("[fe80::2%7]:4000")),
            "the teller's scope is its own"
        );
        assert_eq!(
            dialable(a("[::1]:4000"), on_link),
            Some(a("[fe80::3%7]:4000"))
        );
        for scopeless in ["10.99.0.3:50000", "[fd00::3]:50000", "[fe80::3]:50000"] {
            assert_eq!(
                dialable(a("[fe80::2%3]:4000"), a(scopeless)),
                None,
                "from {scopeless}"
            );
        }
        // Other IPv6 addresses are dialed as told.
        assert_eq!(
            dialable(a("[fd00::2]:4000"), on_link),
            Some(a("[fd00::2]:4000"))
        );
    }
}
