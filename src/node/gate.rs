//! Admission to the handshake: a bound on connections that have not yet
//! proved to be peers.
//!
//! Anyone who can reach the port can open connections and say nothing. Each
//! such connection is dropped when its handshake timeout runs out, but
//! thousands at once would still cost thousands of sockets and tasks, and
//! could crowd out real peers. So at most [`MAX_PENDING`] accepted
//! connections may be in their handshake at once. When a new one comes and
//! all slots are taken, the address holding the most slots gives one up:
//! its oldest pending connection is dropped to make room, unless the
//! newcomer's own address is that address, in which case the newcomer is
//! refused. A flood from one address thus only ever competes with itself,
//! and a real peer (one or two handshakes at a time) always gets in.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Most accepted connections in their handshake at once.
pub(crate) const MAX_PENDING: usize = 256;

/// The slots of one service.
#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    total: usize,
    by_ip: HashMap<IpAddr, VecDeque<(u64, CancellationToken)>>,
}

/// A slot held by one pending handshake; released when dropped. `evicted`
/// is cancelled if the slot is taken back for a newcomer.
pub(crate) struct Ticket {
    gate: Arc<Gate>,
    ip: IpAddr,
    id: u64,
    pub evicted: CancellationToken,
}

/// Why a connection was not let in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full {
    /// The slots in use, all of them.
    pub pending: usize,
    /// How many of them this address holds.
    pub from_this_address: usize,
}

impl Gate {
    /// Takes a slot for a connection from `ip`, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Full> {
        self.admit_with(ip, MAX_PENDING)
    }

    fn admit_with(self: &Arc<Self>, ip: IpAddr, max: usize) -> Result<Ticket, Full> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.total >= max {
            let mine = st.by_ip.get(&ip).map_or(0, VecDeque::len);
            let (heaviest, most) = st
                .by_ip
                .iter()
                .map(|(ip, q)| (*ip, q.len()))
                .max_by_key(|(_, n)| *n)
                .expect("slots are in use");
            if heaviest == ip || most <= mine + 1 {
                return Err(Full {
                    pending: st.total,
                    from_this_address: mine,
                });
            }
            let q = st.by_ip.get_mut(&heaviest).expect("just found");
            let (_, token) = q.pop_front().expect("not empty");
            if q.is_empty() {
                st.by_ip.remove(&heaviest);
            }
            st.total -= 1;
            token.cancel();
        }
        st.next += 1;
        let id = st.next;
        let evicted = CancellationToken::new();
        st.by_ip
            .entry(ip)
            .or_default()
            .push_back((id, evicted.clone()));
        st.total += 1;
        Ok(Ticket {
            gate: self.clone(),
            ip,
            id,
            evicted,
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
        if let Some(q) = st.by_ip.get_mut(&self.ip) {
            if let Some(pos) = q.iter().position(|(id, _)| *id == self.id) {
                q.remove(pos);
                if q.is_empty() {
                    st.by_ip.remove(&self.ip);
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
    fn a_flood_from_one_address_competes_only_with_itself() {
        let gate = Arc::new(Gate::default());
        let flood: Vec<Ticket> = (0..4)
            .map(|_| gate.admit_with(ip("10.0.0.9"), 4).unwrap())
            .collect();
        // The flooder cannot take more.
        assert_eq!(
            gate.admit_with(ip("10.0.0.9"), 4).err(),
            Some(Full {
                pending: 4,
                from_this_address: 4
            })
        );
        // A peer gets in: the flooder's oldest slot is taken back.
        let peer = gate.admit_with(ip("10.0.0.1"), 4).unwrap();
        assert!(flood[0].evicted.is_cancelled());
        assert!(!flood[1].evicted.is_cancelled());
        assert_eq!(gate.pending(), 4);
        // Dropping an evicted ticket does not free a slot twice.
        drop(flood);
        assert_eq!(gate.pending(), 1);
        drop(peer);
        assert_eq!(gate.pending(), 0);
    }

    #[test]
    fn balanced_addresses_do_not_evict_each_other() {
        let gate = Arc::new(Gate::default());
        let _a = gate.admit_with(ip("10.0.0.1"), 2).unwrap();
        let _b = gate.admit_with(ip("10.0.0.2"), 2).unwrap();
        assert!(gate.admit_with(ip("10.0.0.3"), 2).is_err());
        assert!(!_a.evicted.is_cancelled() && !_b.evicted.is_cancelled());
    }
}
