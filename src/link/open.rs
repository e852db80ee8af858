//! The table of a node's open links: the one place that says which links
//! are up, read by the user's `connections()` and by messaging.

use std::sync::Mutex;

use crate::error::CloseReason;
use crate::link::connection::{Connection, Link, LinkState};
use crate::sync::lock;

/// The links the node has opened (settled on with their peers) and whose
/// tasks have not ended, in the order they opened.
#[derive(Default)]
pub(crate) struct OpenLinks {
    open: Mutex<Vec<Connection>>,
}

impl OpenLinks {
    /// Lists an opened link; false if its task has already ended (it can end
    /// before the node opens it), and then it is not listed:
    /// [`finished`](Self::finished) and this check run under the same lock.
    pub(crate) fn opened(&self, conn: &Connection) -> bool {
        let mut open = lock(&self.open);
        if conn.close_reason().is_some() {
            return false;
        }
        open.push(conn.clone());
        true
    }

    /// A link's task has ended: takes it off the list and records why, in
    /// one step, so no one sees a closed link listed or an open one missing.
    pub(crate) fn finished(&self, link: &Link, reason: CloseReason) {
        let mut open = lock(&self.open);
        open.retain(|c| c.link().id != link.id);
        link.leave_up();
        link.state.send_replace(LinkState::Closed(reason));
    }

    /// The links that are up: a link that has started closing (replaced,
    /// closed by either end, or the node closing) is left out here, and
    /// dropped from the list when its task ends.
    pub(crate) fn up(&self) -> Vec<Connection> {
        lock(&self.open)
            .iter()
            .filter(|c| c.is_up())
            .cloned()
            .collect()
    }

    /// The link up to `peer`, if there is one.
    pub(crate) fn to(&self, peer: &crate::id::NodeId) -> Option<Connection> {
        lock(&self.open)
            .iter()
            .find(|c| c.is_up() && c.peer_id() == peer)
            .cloned()
    }

    /// Forgets every link (the node has closed).
    pub(crate) fn clear(&self) {
        lock(&self.open).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::connection::tests::handles;

    #[test]
    fn a_link_that_ended_before_it_opened_is_never_listed() {
        let open = OpenLinks::default();
        let (c, _, _) = handles();
        open.finished(c.link(), CloseReason::PeerClosed);
        assert!(!open.opened(&c));
        assert!(open.up().is_empty());
    }

    #[test]
    fn a_link_that_ends_after_it_opened_leaves_the_list() {
        let open = OpenLinks::default();
        let (c, _, _) = handles();
        assert!(open.opened(&c));
        assert_eq!(open.up().len(), 1);
        assert!(open.to(c.peer_id()).is_some());
        open.finished(c.link(), CloseReason::PeerClosed);
        assert!(open.up().is_empty());
    }
}
