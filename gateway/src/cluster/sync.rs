//! The sync task: tells every linked node this node's changes (batched, in
//! order), sends a snapshot to each newly linked node, applies what the
//! other gateway nodes say, and forgets a node when its link is gone
//! (tcpnet's link events: `Up` and `Down`, each once per link).

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use tcpnet::{LinkEvent, NodeId, Service};
use tokio::sync::mpsc;

use super::view::{Change, OverLimit};
use super::wire::{Op, Sync, SYNC_EVENT};
use crate::directory::{is_gateway, URL_META};
use crate::hooks::lock;
use crate::node::state::State;
use crate::node::Node;

/// Whether `service` has an open link to `peer`.
fn linked(service: &Service, peer: &NodeId) -> bool {
    service.connections().iter().any(|c| c.peer_id() == peer)
}

/// Most changes sent in one delta.
const MAX_BATCH: usize = 4096;

async fn tell(node: &Node, peer: &NodeId, msg: &Sync) {
    let body = serde_json::to_vec(msg).expect("serializes");
    if let Err(e) = node.service.emit_to(peer, SYNC_EVENT, body).await {
        tracing::debug!(%peer, "sync message not sent: {e}");
    }
}

/// Sends every queued change to every linked node.
async fn flush(node: &Node, ops: &mut mpsc::UnboundedReceiver<Op>, first: Option<Op>) {
    let mut batch: Vec<Op> = first.into_iter().collect();
    while batch.len() < MAX_BATCH {
        match ops.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
    if batch.is_empty() {
        return;
    }
    let body = serde_json::to_vec(&Sync::Delta { ops: batch }).expect("serializes");
    for conn in node.service.connections() {
        let peer = conn.peer_id();
        if let Err(e) = node.service.emit_to(peer, SYNC_EVENT, body.clone()).await {
            tracing::debug!(%peer, "sync delta not sent: {e}");
        }
    }
}

/// Sends this node's snapshot to `peer`, after every change queued before.
async fn snapshot_to(node: &Node, ops: &mut mpsc::UnboundedReceiver<Op>, peer: &NodeId) {
    while !ops.is_empty() {
        flush(node, ops, None).await;
    }
    let state = lock(&node.state).view.snapshot(&node.me);
    tell(node, peer, &Sync::Snapshot { state }).await;
}

/// Notifies the changes a peer's update of the view caused; an update that
/// passed a limit dropped the peer's share, which is said once and
/// notified.
fn take(st: &mut State, result: Result<Vec<Change>, OverLimit>) {
    match result {
        Ok(changes) => st.notify(changes),
        Err(over) => {
            tracing::warn!("{over}");
            st.notify(over.changes);
        }
    }
}

/// Starts the sync task. The sync receiver is made first: what a peer
/// sends on a link that opens after it is received; a link open before it
/// may have carried messages no one took, so those peers (`early`) are
/// asked for their snapshot again.
pub(crate) fn start(node: Arc<Node>, ops: mpsc::UnboundedReceiver<Op>) -> tcpnet::Result<()> {
    let sync = node.service.receiver(SYNC_EVENT)?;
    let early: HashSet<NodeId> = node
        .service
        .connections()
        .iter()
        .map(|c| c.peer_id().clone())
        .collect();
    let links = node.service.on_link();
    tokio::spawn(run(node, ops, links, sync, early));
    Ok(())
}

async fn run(
    node: Arc<Node>,
    mut ops: mpsc::UnboundedReceiver<Op>,
    mut links: tcpnet::Events<LinkEvent>,
    mut sync: tcpnet::Messages,
    mut early: HashSet<NodeId>,
) {
    let service = node.service.clone();
    let mut missed = 0;
    loop {
        tokio::select! {
            op = ops.recv() => {
                let Some(op) = op else { return };
                flush(&node, &mut ops, Some(op)).await;
            }
            event = links.next() => match event {
                None => return,
                Some(LinkEvent::Up(conn)) => {
                    let peer = conn.peer_id();
                    snapshot_to(&node, &mut ops, peer).await;
                    if early.remove(peer) {
                        tell(&node, peer, &Sync::Resync).await;
                    }
                }
                // A link replaced by a newer one to the same peer goes
                // down after the new one is up: the peer is still there.
                Some(LinkEvent::Down(conn, _)) if !linked(&service, conn.peer_id()) => {
                    let mut st = lock(&node.state);
                    let changes = st.view.remove(conn.peer_id().as_str());
                    st.notify(changes);
                }
                Some(_) => {}
            },
            msg = sync.next() => {
                let Some(msg) = msg else { return };
                if sync.dropped() > missed {
                    // Changes were lost: every node sends its whole state again.
                    missed = sync.dropped();
                    tracing::warn!("sync messages were dropped; asking every node for its snapshot");
                    for conn in service.connections() {
                        tell(&node, conn.peer_id(), &Sync::Resync).await;
                    }
                }
                let from = msg.from().clone();
                if !linked(&service, &from) {
                    continue; // late news from a link that is gone
                }
                let parsed: Sync = match serde_json::from_slice(msg.data()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%from, "a malformed sync message: {e}");
                        continue;
                    }
                };
                match parsed {
                    // A node's keys and members are taken only from a
                    // gateway (a member advertising its URL): any other
                    // member, a backend say, holds no clients.
                    Sync::Snapshot { .. } | Sync::Delta { .. } if !is_gateway(&service, &from) => {
                        tracing::warn!(%from, "sync state refused: the sender does not advertise a gateway URL ({URL_META})");
                    }
                    Sync::Snapshot { state } => {
                        let mut st = lock(&node.state);
                        let result = st.view.replace(from.as_str(), state);
                        take(&mut st, result);
                    }
                    Sync::Delta { ops: changes } => {
                        let mut st = lock(&node.state);
                        for op in changes {
                            let result = st.view.apply(from.as_str(), op);
                            take(&mut st, result);
                        }
                    }
                    Sync::Resync => snapshot_to(&node, &mut ops, &from).await,
                }
            }
        }
    }
}
