//! Every other node's topics, within byte budgets: at most
//! [`MAX_INTEREST_BYTES_PER_NODE`] for one node, [`MAX_INTEREST_BYTES`] for
//! all. Each node's set is kept twice: as a set, for lookups, and as the
//! announcement a new peer is given, encoded once when the set arrives, so
//! a new link costs a reference per node, never a copy of the table.

use std::collections::{BTreeSet, HashMap};

use crate::id::NodeId;
use crate::limits::{MAX_INTEREST_BYTES, MAX_INTEREST_BYTES_PER_NODE};
use crate::messaging::router::Refusal;
use crate::wire::frame::Frame;

/// Bytes accounted for a node's entry besides its topics: the id, the
/// table's slot, the announcement's header.
const ENTRY_OVERHEAD: usize = 160;
/// Bytes accounted per topic besides its name (which counts twice: in the
/// set and in the announcement): the set's share of a node, the string's
/// header, the announcement's newline.
const TOPIC_OVERHEAD: usize = 64;

/// The bytes a node's set is accounted for.
pub(crate) fn cost<'a>(node: &NodeId, topics: impl IntoIterator<Item = &'a str>) -> usize {
    ENTRY_OVERHEAD
        + node.len()
        + topics
            .into_iter()
            .map(|t| 2 * t.len() + TOPIC_OVERHEAD)
            .sum::<usize>()
}

#[derive(Debug)]
struct Entry {
    version: u64,
    topics: BTreeSet<String>,
    /// The announcement a new peer is given.
    announcement: Option<Frame>,
    bytes: usize,
    /// When it last changed, on the table's clock.
    updated: u64,
}

/// The table of other nodes' topics.
#[derive(Debug, Default)]
pub(crate) struct Interest {
    table: HashMap<NodeId, Entry>,
    bytes: usize,
    clock: u64,
}

impl Interest {
    /// `node`'s set as of `version`. Returns `Ok(false)` if this version
    /// or a newer one is known. A set over the budget of one node is
    /// refused (the older set known stays: only its origin could have sent
    /// either, so it is the best this node knows). When the budget of all
    /// is spent, a node this one is linked
    /// to (`linked(node)`) takes the room of the nodes it is not linked
    /// to, least recently changed first; any other newcomer is refused.
    /// `announce` gives the announcement for new peers, once the set is
    /// accepted.
    pub(crate) fn offer(
        &mut self,
        node: NodeId,
        version: u64,
        topics: BTreeSet<String>,
        linked: impl Fn(&NodeId) -> bool,
        announce: impl FnOnce() -> Frame,
    ) -> Result<bool, Refusal> {
        let known = self.table.get(&node).map(|e| (e.version, e.bytes));
        if known.is_some_and(|(v, _)| v >= version) {
            return Ok(false);
        }
        let bytes = cost(&node, topics.iter().map(String::as_str));
        if bytes > MAX_INTEREST_BYTES_PER_NODE {
            return Err(Refusal::OverBudget {
                what: "topics of one node",
                bytes,
                budget: MAX_INTEREST_BYTES_PER_NODE,
            });
        }
        let freed = known.map_or(0, |(_, b)| b);
        let need = (self.bytes - freed + bytes).saturating_sub(MAX_INTEREST_BYTES);
        if need > 0 && !(linked(&node) && self.evict(need, &node, &linked)) {
            return Err(Refusal::OverBudget {
                what: "topics of all nodes",
                bytes: self.bytes - freed + bytes,
                budget: MAX_INTEREST_BYTES,
            });
        }
        self.clock += 1;
        let announcement = (!topics.is_empty()).then(announce);
        let entry = Entry {
            version,
            topics,
            announcement,
            bytes,
            updated: self.clock,
        };
        self.bytes = self.bytes - freed + bytes;
        self.table.insert(node, entry);
        Ok(true)
    }

    /// Frees `need` bytes by forgetting nodes not linked (other than
    /// `keep`), least recently changed first; false, forgetting nothing,
    /// if they do not hold that much.
    fn evict(&mut self, need: usize, keep: &NodeId, linked: &impl Fn(&NodeId) -> bool) -> bool {
        let mut candidates: Vec<(u64, usize, NodeId)> = self
            .table
            .iter()
            .filter(|(id, _)| *id != keep && !linked(id))
            .map(|(id, e)| (e.updated, e.bytes, id.clone()))
            .collect();
        if candidates.iter().map(|c| c.1).sum::<usize>() < need {
            return false;
        }
        candidates.sort_unstable();
        let mut freed = 0;
        for (_, bytes, id) in candidates {
            if freed >= need {
                break;
            }
            self.forget(&id);
            freed += bytes;
        }
        true
    }

    pub(crate) fn forget(&mut self, node: &NodeId) {
        if let Some(e) = self.table.remove(node) {
            self.bytes -= e.bytes;
        }
    }

    /// The version known of `node`'s set, if any.
    pub(crate) fn version(&self, node: &NodeId) -> Option<u64> {
        self.table.get(node).map(|e| e.version)
    }

    /// The nodes with `topic` in their set.
    pub(crate) fn members<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a NodeId> {
        self.table
            .iter()
            .filter(move |(_, e)| e.topics.contains(topic))
            .map(|(id, _)| id)
    }

    /// The announcements of every node with topics but `except`, to give a
    /// new peer.
    pub(crate) fn announcements(&self, except: &NodeId) -> Vec<(NodeId, Frame)> {
        self.table
            .iter()
            .filter(|(id, _)| *id != except)
            .filter_map(|(id, e)| Some((id.clone(), e.announcement.clone()?)))
            .collect()
    }

    /// The bytes accounted, in all.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}
