//! The table of a node's open links: the one place that says which links
//! are up, read by the user's `connections()` and by messaging, and the
//! source of the link events ([`LinkEvent`]) that follow it.

use std::sync::{Mutex, OnceLock};

use crate::error::CloseReason;
use crate::link::connection::{Connection, Link, LinkState};
use crate::sync::lock;

/// A change in a node's links, on [`Service::on_link`](crate::Service::on_link).
///
/// Every link the stream shows goes `Up` once and `Down` once. A link that
/// replaces another to the same peer (the peer restarted, or the pair
/// settled a race) comes `Up` before the one it replaces goes `Down` with
/// [`CloseReason::Replaced`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LinkEvent {
    /// The link is open: it opened, or it was open when the stream was made.
    Up(Connection),
    /// The link has ended, for this reason (the same as
    /// [`Connection::closed`]'s).
    Down(Connection, CloseReason),
}

/// Where an [`OpenLinks`] table tells its changes.
pub(crate) type Observer = Box<dyn Fn(LinkEvent) + Send + Sync>;

/// The links the node has opened (settled on with their peers) and whose
/// tasks have not ended, in the order they opened.
#[derive(Default)]
pub(crate) struct OpenLinks {
    open: Mutex<Vec<Connection>>,
    /// Told every change, under the table's lock, so that a snapshot taken
    /// with [`with_list`](Self::with_list) and the changes after it neither
    /// overlap nor leave a gap.
    observer: OnceLock<Observer>,
}

impl OpenLinks {
    /// Says where changes go, once (later calls are ignored).
    pub(crate) fn observe(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    fn tell(&self, event: LinkEvent) {
        if let Some(observer) = self.observer.get() {
            observer(event);
        }
    }

    /// Runs `f` on the listed links (up and closing), with changes held
    /// until it returns.
    pub(crate) fn with_list<R>(&self, f: impl FnOnce(&[Connection]) -> R) -> R {
        f(&lock(&self.open))
    }

    /// Lists an opened link; false if its task has already ended (it can end
    /// before the node opens it), and then it is not listed:
    /// [`finished`](Self::finished) and this check run under the same lock.
    pub(crate) fn opened(&self, conn: &Connection) -> bool {
        let mut open = lock(&self.open);
        if conn.close_reason().is_some() {
            return false;
        }
        open.push(conn.clone());
        self.tell(LinkEvent::Up(conn.clone()));
        true
    }

    /// A link's task has ended: takes it off the list and records why, in
    /// one step, so no one sees a closed link listed or an open one missing.
    pub(crate) fn finished(&self, link: &Link, reason: CloseReason) {
        let mut open = lock(&self.open);
        let at = open.iter().position(|c| c.link().id == link.id);
        let listed = at.map(|at| open.remove(at));
        link.leave_up();
        link.state.send_replace(LinkState::Closed(reason.clone()));
        if let Some(conn) = listed {
            self.tell(LinkEvent::Down(conn, reason));
        }
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

    /// Forgets every link (the node has closed); a link still flushing in
    /// the background goes `Down` as the node's shutdown.
    pub(crate) fn clear(&self) {
        let mut open = lock(&self.open);
        for conn in open.drain(..) {
            self.tell(LinkEvent::Down(conn, CloseReason::Shutdown));
        }
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
    fn a_snapshot_and_the_changes_after_it_show_each_link_up_once_and_down_once() {
        let open = std::sync::Arc::new(OpenLinks::default());
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        open.observe(Box::new(move |e| {
            lock(&log).push(match e {
                LinkEvent::Up(c) => format!("up {}", c.link().id),
                LinkEvent::Down(c, r) => format!("down {} {r}", c.link().id),
            })
        }));
        let (a, _, _) = handles();
        let (b, _, _) = handles();
        assert!(open.opened(&a));
        let snapshot = open.with_list(|l| l.len());
        assert_eq!(snapshot, 1);
        assert!(open.opened(&b));
        open.finished(a.link(), CloseReason::PeerClosed);
        // A link that never opened goes neither up nor down.
        let (c, _, _) = handles();
        open.finished(c.link(), CloseReason::PeerClosed);
        open.clear();
        let (ida, idb) = (a.link().id, b.link().id);
        assert_eq!(
            *lock(&seen),
            [
                format!("up {ida}"),
                format!("up {idb}"),
                format!("down {ida} closed by the peer"),
                format!("down {idb} service closed"),
            ]
        );
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
