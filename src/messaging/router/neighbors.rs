//! Which nodes each peer is linked to, as it last told us: at most
//! [`MAX_PEERS`] per peer, [`MAX_NEIGHBOR_BYTES`] for all. A list only
//! answers "is this node linked to that peer?", so it keeps a bit per
//! node: every id some list names has a number ([`Ids`], one table per
//! node, of 8-byte keyed hashes of the ids: the key is random per node, so
//! no peer can choose ids that collide), and a list is the set of its ids'
//! numbers. The membership view asks the same of the same lists, and
//! shares them ([`LinkList`]): a node of a mesh of N holds N - 1 lists of
//! N bits and one table of N hashes.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use crate::id::NodeId;
use crate::limits::{MAX_NEIGHBOR_BYTES, MAX_PEERS};
use crate::messaging::router::Refusal;
use crate::sync::lock;

/// Bytes accounted for a list besides its ids: the peer's id, the
/// table's slot, the list's header.
const LIST_OVERHEAD: usize = 128;

/// The bytes a list of `n` ids from `peer` is accounted for (8 a name: a
/// bound on its bit and on its share of the table of ids).
fn cost(peer: &NodeId, n: usize) -> usize {
    LIST_OVERHEAD + peer.len() + 8 * n
}

/// The numbers of the ids the lists name, shared by the lists of one node.
/// An id keeps its number while some list names it; a number no list
/// names is given to the next new id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ids(Arc<Mutex<Numbers>>);

#[derive(Debug, Default)]
struct Numbers {
    hasher: RandomState,
    /// The number of each id's hash.
    of: HashMap<u64, u32>,
    /// Each number's hash, and how many lists name it; `None`: free.
    ids: Vec<Option<(u64, u32)>>,
    free: Vec<u32>,
}

impl Numbers {
    /// `id`'s number, counted as named by one more list.
    fn take(&mut self, id: &str) -> u32 {
        let hash = self.hasher.hash_one(id);
        if let Some(&n) = self.of.get(&hash) {
            if let Some((_, lists)) = &mut self.ids[n as usize] {
                *lists += 1;
            }
            return n;
        }
        let n = match self.free.pop() {
            Some(n) => n,
            None => {
                self.ids.push(None);
                (self.ids.len() - 1) as u32
            }
        };
        self.ids[n as usize] = Some((hash, 1));
        self.of.insert(hash, n);
        n
    }

    /// One list fewer names `n`.
    fn release(&mut self, n: u32) {
        let slot = &mut self.ids[n as usize];
        if let Some((hash, lists)) = slot {
            *lists -= 1;
            if *lists == 0 {
                self.of.remove(hash);
                *slot = None;
                self.free.push(n);
            }
        }
    }

    /// `id`'s number, if some list names it.
    fn number(&self, id: &str) -> Option<u32> {
        self.of.get(&self.hasher.hash_one(id)).copied()
    }
}

/// One peer's list of links: the numbers of its ids, as bits; cloned, it
/// is the same list. The last clone dropped gives its numbers back.
#[derive(Debug, Clone)]
pub(crate) struct LinkList {
    /// `None` only while being dropped.
    bits: Option<Arc<[u64]>>,
    ids: Ids,
}

impl Drop for LinkList {
    fn drop(&mut self) {
        let Some(bits) = self.bits.take() else {
            return;
        };
        // Looked at and let go under the table's lock: of clones dropped
        // at once, the last finds itself alone.
        let mut numbers = lock(&self.ids.0);
        if Arc::strong_count(&bits) == 1 {
            for (i, &word) in bits.iter().enumerate() {
                let mut w = word;
                while w != 0 {
                    numbers.release((i * 64) as u32 + w.trailing_zeros());
                    w &= w - 1;
                }
            }
        }
        drop(bits);
    }
}

impl LinkList {
    /// The list of `links`, ids in their normal form, numbered in `ids`.
    pub(crate) fn new<'a>(ids: &Ids, links: impl Iterator<Item = &'a str>) -> Self {
        let mut words: Vec<u64> = Vec::new();
        let mut numbers = lock(&ids.0);
        for id in links {
            let n = numbers.take(id) as usize;
            if words.len() <= n / 64 {
                words.resize(n / 64 + 1, 0);
            }
            let bit = 1 << (n % 64);
            if words[n / 64] & bit != 0 {
                // Named twice: counted once.
                numbers.release(n as u32);
            }
            words[n / 64] |= bit;
        }
        drop(numbers);
        LinkList {
            bits: Some(words.into()),
            ids: ids.clone(),
        }
    }

    fn bits(&self) -> &[u64] {
        self.bits.as_deref().unwrap_or_default()
    }

    /// True if the list names `node` (an id in its normal form).
    pub(crate) fn names(&self, node: &str) -> bool {
        self.named(std::iter::once(node)) == 1
    }

    /// How many of `nodes` (ids in their normal form) the list names.
    pub(crate) fn named<'a>(&self, nodes: impl Iterator<Item = &'a str>) -> usize {
        let numbers = lock(&self.ids.0);
        let bits = self.bits();
        let has = |n: u32| {
            let n = n as usize;
            bits.get(n / 64).is_some_and(|w| w & (1 << (n % 64)) != 0)
        };
        nodes
            .filter(|node| numbers.number(node).is_some_and(has))
            .count()
    }

    /// How many ids the list names.
    pub(crate) fn len(&self) -> usize {
        self.bits().iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// The peers' lists.
#[derive(Debug, Default)]
pub(crate) struct Neighbors {
    /// Each peer's list, and the bytes it is accounted for.
    lists: HashMap<NodeId, (LinkList, usize)>,
    ids: Ids,
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
        let list = LinkList::new(&self.ids, links);
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
        let known = list.named(std::iter::once(me).chain(ours).map(NodeId::as_str));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn list(ids: &Ids, names: &[&str]) -> LinkList {
        LinkList::new(ids, names.iter().copied())
    }

    /// A list answers for the ids it names and no other, an id named twice
    /// counts once, and an id keeps its number while some list (or a
    /// clone of one) names it: a number no list names goes to a new id,
    /// and no list that named the old one names the new one.
    #[test]
    fn an_id_keeps_its_number_while_a_list_names_it() {
        let ids = Ids::default();
        let a = list(&ids, &["x", "y", "x"]);
        let b = list(&ids, &["y", "z"]);
        assert_eq!((a.len(), b.len()), (2, 2));
        assert!(a.names("x") && a.names("y") && !a.names("z") && !a.names("w"));
        assert!(!b.names("x") && b.names("y") && b.names("z"));
        assert_eq!(a.named(["x", "y", "z", "w"].into_iter()), 2);
        let numbered = || lock(&ids.0).of.len();
        assert_eq!(numbered(), 3);
        let kept = b.clone();
        drop(a);
        assert_eq!(numbered(), 2, "x is named by no list");
        let c = list(&ids, &["w"]);
        assert!(c.names("w") && !c.names("x"));
        assert!(!kept.names("w") && kept.names("y") && kept.names("z"));
        drop(b);
        assert!(kept.names("z"), "a clone keeps the list");
        drop((kept, c));
        assert_eq!(numbered(), 0);
        let numbers = lock(&ids.0);
        assert_eq!(numbers.free.len(), numbers.ids.len(), "every number free");
    }
}
