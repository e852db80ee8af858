//! Which nodes each peer is linked to, as it last told us: at most
//! [`MAX_PEERS`] per peer, [`MAX_NEIGHBOR_BYTES`] for all. A list only
//! answers "is this node linked to that peer?", so it keeps 8-byte keyed
//! hashes of the ids, sorted: the key is random per node, so no peer can
//! choose ids that collide. The membership view asks the same of the same
//! lists, and shares them ([`LinkList`]): a node of a mesh of N holds N - 1
//! lists of N - 1 hashes once.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

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

/// One peer's list of links: the keyed hashes of the ids, sorted, and
/// the key; cloned, it is the same list.
#[derive(Debug, Clone)]
pub(crate) struct LinkList {
    hashes: Arc<[u64]>,
    hasher: RandomState,
}

impl LinkList {
    /// The list of `links`, ids in their normal form, hashed under `hasher`.
    pub(crate) fn new<'a>(hasher: &RandomState, links: impl Iterator<Item = &'a str>) -> Self {
        let mut hashes: Vec<u64> = links.map(|id| hasher.hash_one(id)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        LinkList {
            hashes: hashes.into(),
            hasher: hasher.clone(),
        }
    }

    /// True if the list names `node` (an id in its normal form).
    pub(crate) fn names(&self, node: &str) -> bool {
        self.hashes
            .binary_search(&self.hasher.hash_one(node))
            .is_ok()
    }
}

/// The peers' lists.
#[derive(Debug, Default)]
pub(crate) struct Neighbors {
    /// Each peer's list, and the bytes it is accounted for.
    lists: HashMap<NodeId, (LinkList, usize)>,
    hasher: RandomState,
    bytes: usize,
}

impl Neighbors {
    /// `peer` is linked to `links`, ids in their normal form (see
    /// [`NodeId::normal`]), and to no other node. A list of more
    /// than [`MAX_PEERS`] ids, or one over the budget of all, is refused,
    /// and the peer's older list forgotten: until its next, this node
    /// relays for it as for a peer whose list it never had. Gives the list
    /// kept.
    pub(crate) fn set<'a>(
        &mut self,
        peer: NodeId,
        links: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<LinkList, Refusal> {
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
        let list = LinkList::new(&self.hasher, links);
        self.bytes += bytes;
        self.lists.insert(peer, (list.clone(), bytes));
        Ok(list)
    }

    /// `peer`'s list, if there is one.
    pub(crate) fn list(&self, peer: &NodeId) -> Option<LinkList> {
        self.lists.get(peer).map(|(l, _)| l.clone())
    }

    /// True if `peer`'s list names `node`; false too if there is no list.
    pub(crate) fn links(&self, peer: &NodeId, node: &NodeId) -> bool {
        self.lists
            .get(peer)
            .is_some_and(|(l, _)| l.names(node.as_str()))
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
            .filter(|n| list.names(n.as_str()))
            .count();
        Some(known == list.hashes.len())
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
