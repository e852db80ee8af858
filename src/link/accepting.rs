//! The peers that reached this node on a connection it accepted: a dial
//! of ours to one of them is moot.
//!
//! In a mass start both ends of a pair often dial each other, each dial
//! waiting its turn behind the node's other dials, and the pair's decider
//! then closes one of the two links (see `node::mesh`): a whole handshake
//! spent for nothing, on both ends. A dial that finds, when its turn comes,
//! that the peer's own dial has already reached us (past its hello) leaves
//! the pair to that one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::id::NodeId;
use crate::sync::lock;

/// The peers with an accepted connection past its hello, counted.
#[derive(Default)]
pub(crate) struct Accepting(Mutex<HashMap<NodeId, usize>>);

impl Accepting {
    /// Counts a connection from `peer` (as its hello says) until the
    /// returned guard drops: when the connection's handshake failed or its
    /// link ended.
    pub(crate) fn enter(self: &Arc<Self>, peer: &NodeId) -> Accepted {
        *lock(&self.0).entry(peer.clone()).or_default() += 1;
        Accepted {
            from: self.clone(),
            peer: peer.clone(),
        }
    }

    /// True if a connection from `peer` is counted.
    pub(crate) fn from(&self, peer: &NodeId) -> bool {
        lock(&self.0).contains_key(peer)
    }
}

/// One accepted connection, counted while it lives.
pub(crate) struct Accepted {
    from: Arc<Accepting>,
    peer: NodeId,
}

impl Drop for Accepted {
    fn drop(&mut self) {
        let mut peers = lock(&self.from.0);
        if let Some(n) = peers.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_counts_while_any_of_its_connections_lives() {
        let accepting = Arc::new(Accepting::default());
        let peer = NodeId::parse(&"ab".repeat(16)).unwrap();
        assert!(!accepting.from(&peer));
        let first = accepting.enter(&peer);
        let second = accepting.enter(&peer);
        drop(first);
        assert!(accepting.from(&peer));
        drop(second);
        assert!(!accepting.from(&peer));
    }
}
