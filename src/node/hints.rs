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
//!   loopback address from a peer on another host means that peer's host
//!   ([`dialable`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::id::NodeId;
use crate::limits::MAX_PEERS;

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

/// Where to dial a member that a peer on a link from `via` says listens
/// at `at`: there, or on the peer's own host for a loopback address from a
/// peer on another host (the member shares the teller's loopback); `None`
/// for an address no member listens at (port 0, unspecified, multicast,
/// broadcast).
pub(crate) fn dialable(at: SocketAddr, via: IpAddr) -> Option<SocketAddr> {
    let ip = at.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if at.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
        return None;
    }
    if ip.is_loopback() && !via.is_loopback() {
        return Some(SocketAddr::new(via, at.port()));
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).unwrap()
    }

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
        let lan: IpAddr = "10.99.0.3".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
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
}
