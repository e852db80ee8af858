//! tcpnet's links as the gateway's tasks need them: whether a peer is linked
//! now, and which links have closed.

use tcpnet::{Connection, NodeId, Service};
use tokio::sync::mpsc;

/// Whether `service` has an open link to `peer`.
pub(crate) fn linked(service: &Service, peer: &NodeId) -> bool {
    service.connections().iter().any(|c| c.peer_id() == peer)
}

/// Tells, one by one, the peers of watched links that closed.
pub(crate) struct Closed {
    tx: mpsc::UnboundedSender<NodeId>,
    rx: mpsc::UnboundedReceiver<NodeId>,
}

impl Closed {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Closed { tx, rx }
    }

    /// Watches a link: its peer comes out of [`next`](Self::next) once it
    /// closes.
    pub(crate) fn watch(&self, conn: Connection) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            conn.closed().await;
            let _ = tx.send(conn.peer_id().clone());
        });
    }

    /// The peer of the next watched link that closed.
    pub(crate) async fn next(&mut self) -> NodeId {
        self.rx.recv().await.expect("a sender is held by self")
    }
}
