//! Which nodes each peer is linked to, as it last told us: at most
//! [`MAX_PEERS`] per peer, [`MAX_NEIGHBOR_BYTES`] for all. A list only
//! answers "is this node linked to that peer?", so it keeps 8-byte keyed
//! hashes of the ids, sorted: the key is random per node, so no peer can
//! choose ids that collide.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use crate::id::NodeId;
use crate::limits::{MAX_NEIGHBOR_BYTES, MAX_PEERS};
use crate::messaging::router::Refusal;

/// Bytes accounted for a list besides its hashes: the peer's id, the
/// table's slot, the vector's header.
const LIST_OVERHEAD: usize = 128;

/// The bytes a list of `n` ids from `peer` is accounted for.
fn cost(peer: &NodeId, n: usize) -> usize {
    LIST_OVERHEAD + peer.len() + 8 * n
}

/// The peers' lists.
#[derive(Debug, Default)]
pub(crate) struct Neighbors {
    /// Each peer's hashes, and the bytes they are accounted for.
    lists: HashMap<NodeId, (Vec<u64>, usize)>,
    hasher: RandomState,
    bytes: usize,
}

impl Neighbors {
    /// `peer` is linked to `links`, ids in their normal form (see
    /// [`NodeId::normal`]), and to no other node. A list of more
    /// than [`MAX_PEERS`] ids, or one over the budget of all, is refused,
    /// and the peer's older list forgotten: until its next, this node
    /// relays for it as for a peer whose list it never had.
    pub(crate) fn set<'a>(
        &mut self,
        peer: NodeId,
        links: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<(), Refusal> {
        self.forget(&peer);
        let n = links.len();
        let bytes = cost(&peer, n);
        if n > MAX_PEERS {
            return Err(Refusal::OverBudget {
                what: "links of one peer",
                bytes,
                budget: cost(&peer, MAX_PEERS),
            });
        }
        if self.bytes + bytes > MAX_NEIGHBOR_BYTES {
            return Err(Refusal::OverBudget {
                what: "links of all peers",
                bytes: self.bytes + bytes,
                budget: MAX_NEIGHBOR_BYTES,
            });
        }
        let mut hashes: Vec<u64> = links.map(|id| self.hasher.hash_one(id)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        hashes.shrink_to_fit();
        self.bytes += bytes;
        self.lists.insert(peer, (hashes, bytes));
        Ok(())
    }

    /// True if `peer`'s list names `node`; false too if there is no list.
    pub(crate) fn links(&self, peer: &NodeId, node: &NodeId) -> bool {
        self.lists.get(peer).is_some_and(|(l, _)| {
            l.binary_search(&self.hasher.hash_one(node.as_str()))
                .is_ok()
        })
    }

    /// Whether every node on `peer`'s list is `me` or one of `ours`; `None`
    /// if it has no list.
    pub(crate) fn within(
        &self,
        peer: &NodeId,
        me: &NodeId,
        ours: &std::collections::HashSet<NodeId>,
    ) -> Option<bool> {
        let (list, _) = self.lists.get(peer)?;
        let known = std::iter::once(me)
            .chain(ours)
            .filter(|n| {
                list.binary_search(&self.hasher.hash_one(n.as_str()))
                    .is_ok()
            })
            .count();
        Some(known == list.len())
    }

    /// True if `peer` told us its links.
    #[cfg(test)]
    pub(crate) fn knows(&self, peer: &NodeId) -> bool {
        self.lists.contains_key(peer)
    }

    pub(crate) fn forget(&mut self, peer: &NodeId) {
        if let Some((_, bytes)) = self.lists.remove(peer) {
            self.bytes -= bytes;
        }
    }
}
