//! The sync task: tells every linked node this node's changes (batched, in
//! order), sends a snapshot to each newly linked node, applies what the
//! other gateway nodes say, and forgets a node when its link is gone
//! (tcpnet's link events: `Up` and `Down`, each once per link).
//!
//! The task never waits on a peer: what it tells a peer goes into that
//! peer's bounded queue, which a sender task of the peer's own drains. A
//! peer whose queue is full (it reads slowly) gets a snapshot instead of
//! the changes queued for it, taken when its sender is ready for it; a
//! peer asking for snapshots (`Resync`) gets at most one a
//! [`RESYNC_INTERVAL`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tcpnet::{LinkEvent, NodeId, Service};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

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

/// Deltas queued for one peer at most: past it, the peer's queue is
/// dropped and it gets a snapshot instead.
const PEER_QUEUE: usize = 64;

/// Least time between two snapshots a peer's `Resync`s ask for: more
/// `Resync`s in the meantime are answered by one snapshot at its end.
const RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// What is to be sent to one peer.
#[derive(Default)]
struct Outgoing {
    /// Deltas, serialized, in order.
    deltas: VecDeque<Bytes>,
    /// Ask the peer for its snapshot.
    resync: bool,
    /// Send this node's snapshot no sooner than this. Meanwhile no delta
    /// is queued: the snapshot, taken when it is sent, holds them.
    snapshot: Option<Instant>,
    /// When the last snapshot a `Resync` asked for was due.
    last_resync: Option<Instant>,
}

/// One peer's queue and the task draining it.
struct Peer {
    out: Arc<Mutex<Outgoing>>,
    wake: Arc<Notify>,
    task: tokio::task::AbortHandle,
}

impl Peer {
    fn start(node: &Arc<Node>, id: &NodeId) -> Peer {
        let out = Arc::new(Mutex::new(Outgoing::default()));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(send(node.clone(), id.clone(), out.clone(), wake.clone()));
        Peer {
            out,
            wake,
            task: task.abort_handle(),
        }
    }

    /// Queues a delta, unless a snapshot is due (it will hold the delta's
    /// changes); a full queue is dropped for a snapshot.
    fn delta(&self, body: &Bytes) {
        let mut out = lock(&self.out);
        if out.snapshot.is_some() {
            return;
        }
        if out.deltas.len() >= PEER_QUEUE {
            out.deltas.clear();
            out.snapshot = Some(Instant::now());
        } else {
            out.deltas.push_back(body.clone());
        }
        drop(out);
        self.wake.notify_one();
    }

    /// A snapshot is due at `at` (or sooner, if one already is).
    fn snapshot_at(&self, at: Instant) {
        let mut out = lock(&self.out);
        out.deltas.clear();
        out.snapshot = Some(out.snapshot.map_or(at, |s| s.min(at)));
        drop(out);
        self.wake.notify_one();
    }

    /// The peer asked for a snapshot: due now, or a [`RESYNC_INTERVAL`]
    /// after the last one it asked for; one already due answers it (it is
    /// taken when sent, after the request).
    fn resync_asked(&self) {
        let now = Instant::now();
        let mut out = lock(&self.out);
        if out.snapshot.is_some() {
            return;
        }
        let at = out
            .last_resync
            .map_or(now, |last| (last + RESYNC_INTERVAL).max(now));
        out.last_resync = Some(at);
        drop(out);
        self.snapshot_at(at);
    }

    /// Asks the peer for its snapshot.
    fn resync(&self) {
        lock(&self.out).resync = true;
        self.wake.notify_one();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a peer's sender does next.
enum Next {
    Send(Bytes),
    Snapshot(super::wire::Snapshot),
    Wait(Instant),
    Idle,
}

/// A peer's sender: sends what is queued for it, one message at a time,
/// waiting on its link only.
async fn send(node: Arc<Node>, peer: NodeId, out: Arc<Mutex<Outgoing>>, wake: Arc<Notify>) {
    let body = |msg: &Sync| Bytes::from(serde_json::to_vec(msg).expect("serializes"));
    loop {
        let next = {
            let mut o = lock(&out);
            let now = Instant::now();
            if std::mem::take(&mut o.resync) {
                Next::Send(body(&Sync::Resync))
            } else {
                match o.snapshot {
                    Some(at) if at <= now => {
                        // Taken under the peer's lock: a delta the sync
                        // task queues from now on comes after it, and one
                        // it skipped before is in it.
                        o.snapshot = None;
                        Next::Snapshot(lock(&node.state).view.snapshot(&node.me))
                    }
                    Some(at) => Next::Wait(at),
                    None => match o.deltas.pop_front() {
                        Some(delta) => Next::Send(delta),
                        None => Next::Idle,
                    },
                }
            }
        };
        let msg = match next {
            Next::Send(msg) => msg,
            Next::Snapshot(state) => body(&Sync::Snapshot { state }),
            Next::Wait(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
                continue;
            }
            Next::Idle => {
                wake.notified().await;
                continue;
            }
        };
        if let Err(e) = node.service.emit_to(&peer, SYNC_EVENT, msg).await {
            tracing::debug!(%peer, "sync message not sent: {e}");
        }
    }
}

/// The peers' queues, one per linked node, made when first needed.
struct Peers {
    node: Arc<Node>,
    peers: HashMap<NodeId, Peer>,
}

impl Peers {
    fn get(&mut self, id: &NodeId) -> &Peer {
        let node = &self.node;
        self.peers
            .entry(id.clone())
            .or_insert_with(|| Peer::start(node, id))
    }

    /// Every linked peer, once (a link being replaced by a newer one to
    /// the same peer is listed beside it).
    fn linked(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .node
            .service
            .connections()
            .iter()
            .map(|c| c.peer_id().clone())
            .collect();
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.dedup();
        ids
    }
}

/// Queues every change this node made (as many as are ready, up to
/// [`MAX_BATCH`]) as one delta for every linked node.
fn flush(peers: &mut Peers, ops: &mut mpsc::Receiver<Op>, first: Op) {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match ops.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
    let body = Bytes::from(serde_json::to_vec(&Sync::Delta { ops: batch }).expect("serializes"));
    let ids = peers.linked();
    // Changes that found the queue full are in the view: a snapshot to
    // every peer holds them.
    let lost = std::mem::take(&mut lock(&peers.node.state).ops_lost);
    for id in &ids {
        let peer = peers.get(id);
        if lost {
            peer.snapshot_at(Instant::now());
        } else {
            peer.delta(&body);
        }
    }
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
pub(crate) fn start(node: Arc<Node>, ops: mpsc::Receiver<Op>) -> tcpnet::Result<()> {
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
    mut ops: mpsc::Receiver<Op>,
    mut links: tcpnet::Events<LinkEvent>,
    mut sync: tcpnet::Messages,
    mut early: HashSet<NodeId>,
) {
    let service = node.service.clone();
    let mut peers = Peers {
        node: node.clone(),
        peers: HashMap::new(),
    };
    let mut missed = 0;
    loop {
        tokio::select! {
            op = ops.recv() => {
                let Some(op) = op else { return };
                flush(&mut peers, &mut ops, op);
            }
            event = links.next() => match event {
                None => return,
                Some(LinkEvent::Up(conn)) => {
                    let id = conn.peer_id();
                    let peer = peers.get(id);
                    peer.snapshot_at(Instant::now());
                    if early.remove(id) {
                        peer.resync();
                    }
                }
                // A link replaced by a newer one to the same peer goes
                // down after the new one is up: the peer is still there.
                Some(LinkEvent::Down(conn, _)) if !linked(&service, conn.peer_id()) => {
                    peers.peers.remove(conn.peer_id());
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
                    for id in peers.linked() {
                        peers.get(&id).resync();
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
                    Sync::Resync => peers.get(&from).resync_asked(),
                }
            }
        }
    }
}
