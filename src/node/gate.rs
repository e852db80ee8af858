//! Admission to the handshake: a bound on connections that have not yet
//! proved to be peers.
//!
//! Anyone who can reach the port can open connections and say nothing. Each
//! such connection is dropped when it stays silent for a quarter of the
//! handshake time, or when its handshake time runs out, but thousands at
//! once would still cost thousands of sockets and tasks, and could crowd out
//! real peers. So at most [`MAX_PENDING`] accepted connections may be in
//! their handshake at once, counted per network *prefix* (an IPv4 /24, an
//! IPv6 /64: one host, or one attacker, easily holds many addresses of
//! one, but not of many). When a new one comes and all slots are taken:
//!
//! - a connection from a *known* address (a peer's: from the mDNS record
//!   of a peer the mesh took, a static peer, or one an earlier link proved
//!   its key from; see [`Known`]) takes the oldest strangers' slot of the
//!   prefix holding the most of them: a flood of strangers never shuts out
//!   a peer;
//! - otherwise, the newcomer takes the oldest slot of its own class (known
//!   or stranger) from the prefix holding the most of that class, if that
//!   prefix holds at least two more than the newcomer's own; else it is
//!   refused. A flood from one prefix thus competes only with itself, and a
//!   flood of known addresses (records anyone can announce) only with
//!   itself too.
//!
//! While more than half the slots are taken, a connection that sends
//! nothing for a quarter of the handshake time is dropped (see
//! `link::handshake`), so a slot held in silence is short.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Most accepted connections in their handshake at once.
pub(crate) const MAX_PENDING: usize = 256;

/// The network an address belongs to, for fairness: its /24 (IPv4) or /64
/// (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Prefix {
    V4([u8; 3]),
    V6([u8; 8]),
}

impl Prefix {
    pub(crate) fn of(ip: IpAddr) -> Prefix {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Prefix::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&v6.octets()[..8]);
                Prefix::V6(p)
            }
        }
    }
}

/// Most addresses remembered as known, of each kind (see [`Known`]).
const MAX_KNOWN: usize = 4096;

/// The addresses of peers, of two kinds, each remembered up to
/// [`MAX_KNOWN`], the oldest going first: those a link proved a key from
/// and static peers, which the user gave; and those of the mDNS records
/// of peers the mesh took. Anyone on the LAN can announce records, with
/// as many addresses as a packet holds, so records only ever push out
/// records' addresses: never a peer's that proved its key.
#[derive(Default)]
pub(crate) struct Known {
    proven: Addrs,
    advertised: Addrs,
}

/// Addresses, oldest first, at most [`MAX_KNOWN`].
#[derive(Default)]
struct Addrs {
    set: HashSet<IpAddr>,
    order: VecDeque<IpAddr>,
}

impl Addrs {
    fn add(&mut self, ip: IpAddr) {
        if self.set.insert(ip) {
            self.order.push_back(ip);
            if self.order.len() > MAX_KNOWN {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

impl Known {
    /// Remembers `ip` as a peer's: a static peer, or a link proved a key
    /// from there.
    pub(crate) fn add(&mut self, ip: IpAddr) {
        self.proven.add(ip.to_canonical());
    }

    /// Remembers `ip` as a peer's from its mDNS record (a peer the mesh
    /// took).
    pub(crate) fn add_advertised(&mut self, ip: IpAddr) {
        self.advertised.add(ip.to_canonical());
    }

    /// True if `ip` is a peer's.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.proven.set.contains(&ip) || self.advertised.set.contains(&ip)
    }
}

/// The slots of one node.
#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    total: usize,
    by_prefix: HashMap<Prefix, VecDeque<Slot>>,
}

struct Slot {
    id: u64,
    known: bool,
    evict: CancellationToken,
}

/// A slot held by one pending handshake; released when dropped. `evicted`
/// is cancelled if the slot is taken back for a newcomer.
pub(crate) struct Ticket {
    gate: Arc<Gate>,
    prefix: Prefix,
    id: u64,
    pub evicted: CancellationToken,
    /// More than half the slots were taken when this one was: a connection
    /// that says nothing is dropped early.
    pub crowded: bool,
}

/// Why a connection was not let in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full {
    /// The slots in use, all of them.
    pub pending: usize,
    /// How many of them this address's prefix holds.
    pub from_this_prefix: usize,
}

impl Gate {
    /// Takes a slot for a connection from `ip` (`known`: an address of a
    /// peer), or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, known: bool) -> Result<Ticket, Full> {
        self.admit_with(ip, known, MAX_PENDING)
    }

    fn admit_with(self: &Arc<Self>, ip: IpAddr, known: bool, max: usize) -> Result<Ticket, Full> {
        let prefix = Prefix::of(ip);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.total >= max {
            let full = Full {
                pending: st.total,
                from_this_prefix: st.by_prefix.get(&prefix).map_or(0, VecDeque::len),
            };
            // The prefix to give up a slot, and which of its slots.
            let count =
                |q: &VecDeque<Slot>, known: bool| q.iter().filter(|s| s.known == known).count();
            let heaviest = |known: bool| {
                st.by_prefix
                    .iter()
                    .map(|(p, q)| (*p, count(q, known)))
                    .filter(|(_, n)| *n > 0)
                    .max_by_key(|(_, n)| *n)
            };
            let mine = st.by_prefix.get(&prefix).map_or(0, |q| count(q, known));
            let victim = match heaviest(false) {
                Some((p, _)) if known => Some((p, false)),
                _ => heaviest(known)
                    .filter(|(p, n)| *p != prefix && *n > mine + 1)
                    .map(|(p, _)| (p, known)),
            };
            let Some((victim, class)) = victim else {
                return Err(full);
            };
            let q = st.by_prefix.get_mut(&victim).expect("just found");
            let at = q.iter().position(|s| s.known == class).expect("counted");
            let slot = q.remove(at).expect("in range");
            if q.is_empty() {
                st.by_prefix.remove(&victim);
            }
            st.total -= 1;
            slot.evict.cancel();
        }
        st.next += 1;
        let id = st.next;
        let evicted = CancellationToken::new();
        st.by_prefix.entry(prefix).or_default().push_back(Slot {
            id,
            known,
            evict: evicted.clone(),
        });
        st.total += 1;
        Ok(Ticket {
            gate: self.clone(),
            prefix,
            id,
            evicted,
            crowded: st.total > max / 2,
        })
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        self.state.lock().unwrap().total
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = st.by_prefix.get_mut(&self.prefix) {
            if let Some(pos) = q.iter().position(|s| s.id == self.id) {
                q.remove(pos);
                if q.is_empty() {
                    st.by_prefix.remove(&self.prefix);
                }
                st.total -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_are_slash_24_and_slash_64() {
        assert_eq!(Prefix::of(ip("10.0.0.1")), Prefix::of(ip("10.0.0.200")));
        assert_ne!(Prefix::of(ip("10.0.0.1")), Prefix::of(ip("10.0.1.1")));
        assert_eq!(
            Prefix::of(ip("fd00:1:2:3::1")),
            Prefix::of(ip("fd00:1:2:3:ffff::9"))
        );
        assert_ne!(
            Prefix::of(ip("fd00:1:2:3::1")),
            Prefix::of(ip("fd00:1:2:4::1"))
        );
        assert_eq!(
            Prefix::of(ip("::ffff:10.0.0.1")),
            Prefix::of(ip("10.0.0.7"))
        );
    }

    #[test]
    fn a_flood_from_one_prefix_competes_only_with_itself() {
        let gate = Arc::new(Gate::default());
        // Many addresses, one /24.
        let flood: Vec<Ticket> = (0..4)
            .map(|i| {
                gate.admit_with(ip(&format!("10.0.0.{}", 10 + i)), false, 4)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            gate.admit_with(ip("10.0.0.99"), false, 4).err(),
            Some(Full {
                pending: 4,
                from_this_prefix: 4
            })
        );
        // A stranger from elsewhere gets in: the flood's oldest slot goes.
        let other = gate.admit_with(ip("10.0.1.1"), false, 4).unwrap();
        assert!(flood[0].evicted.is_cancelled());
        assert!(!flood[1].evicted.is_cancelled());
        assert_eq!(gate.pending(), 4);
        drop(flood);
        assert_eq!(gate.pending(), 1);
        drop(other);
        assert_eq!(gate.pending(), 0);
    }

    /// Strangers spread over as many prefixes as there are slots shut out
    /// other strangers, never a known peer.
    #[test]
    fn a_known_peer_always_gets_in() {
        let gate = Arc::new(Gate::default());
        let spread: Vec<Ticket> = (0..4)
            .map(|i| {
                gate.admit_with(ip(&format!("10.0.{i}.1")), false, 4)
                    .unwrap()
            })
            .collect();
        assert!(gate.admit_with(ip("10.9.9.9"), false, 4).is_err());
        let peers: Vec<Ticket> = (0..4)
            .map(|i| {
                gate.admit_with(ip(&format!("10.1.0.{i}")), true, 4)
                    .unwrap()
            })
            .collect();
        assert!(spread.iter().all(|t| t.evicted.is_cancelled()));
        // Known peers of one prefix do not evict each other; one of
        // another prefix takes a slot of the heaviest known prefix.
        assert!(gate.admit_with(ip("10.1.0.9"), true, 4).is_err());
        assert!(peers.iter().all(|t| !t.evicted.is_cancelled()));
        let _other = gate.admit_with(ip("10.2.0.1"), true, 4).unwrap();
        assert!(peers[0].evicted.is_cancelled());
    }

    #[test]
    fn known_addresses_are_bounded_oldest_out() {
        let mut k = Known::default();
        for i in 0..MAX_KNOWN + 1 {
            k.add(IpAddr::from((i as u32).to_be_bytes()));
        }
        assert!(!k.contains(IpAddr::from(0u32.to_be_bytes())));
        assert!(k.contains(IpAddr::from((MAX_KNOWN as u32).to_be_bytes())));
        k.add(ip("::ffff:10.0.0.1"));
        assert!(k.contains(ip("10.0.0.1")));
    }

    /// A LAN sender announces records with more addresses than are
    /// remembered: the addresses peers proved their keys from, and static
    /// peers', stay known; only older records' addresses go.
    #[test]
    fn records_never_push_out_proven_addresses() {
        let mut k = Known::default();
        k.add(ip("10.0.0.1"));
        k.add_advertised(ip("10.0.0.2"));
        for i in 0..2 * MAX_KNOWN as u32 {
            k.add_advertised(IpAddr::from((0x0a10_0000 + i).to_be_bytes()));
        }
        assert!(k.contains(ip("10.0.0.1")), "proven");
        assert!(!k.contains(ip("10.0.0.2")), "an older record's");
        assert!(k.contains(IpAddr::from(
            (0x0a10_0000 + 2 * MAX_KNOWN as u32 - 1).to_be_bytes()
        )));
    }

    #[test]
    fn balanced_prefixes_do_not_evict_each_other() {
        let gate = Arc::new(Gate::default());
        let a = gate.admit_with(ip("10.0.0.1"), false, 2).unwrap();
        let b = gate.admit_with(ip("10.0.1.1"), false, 2).unwrap();
        assert!(gate.admit_with(ip("10.0.2.1"), false, 2).is_err());
        assert!(!a.evicted.is_cancelled() && !b.evicted.is_cancelled());
    }
}
