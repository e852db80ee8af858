//! The actor: the one task that owns a running node's mesh and link
//! handles.
//!
//! `Service::listen` starts, for one node:
//!
//! - one accept loop per listening socket, one task reading mDNS events
//!   (see [`crate::node::tasks`]), and the **actor** ([`actor`]): one task
//!   that owns the [`Mesh`] and every link handle,
//! - then, as the actor decides, one task per dial and per link.
//!
//! The other tasks never touch the mesh; they send the actor [`Command`]s
//! (links send theirs as [`Event`]s), and the actor carries out the
//! [`Action`]s the mesh returns. So the one-link rule runs in one place, in
//! order, without locks. The [`Hub`](crate::node::events::Hub) (subscribers, advertised peers) and the
//! table of open links are the only state shared with the `Service` handle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::{CloseReason, Error};
use crate::limits::MAX_PEERS;
use crate::link::connection::{request_close, Connection};
use crate::link::{Event, LinkId};
use crate::messaging::relay::Hints;
use crate::node::discovery::{Browse, Discovery, Sighting};
use crate::node::mesh::{self, Action, Mesh, Redial, Settle, Target};
use crate::node::running::{Command, Node};
use crate::node::tasks;
use crate::wire::frame::{self, Frame};
use crate::wire::record::Record;
use crate::wire::verdict::Verdict;

/// How long `close` waits for links to flush and close. A link still moving
/// frames then goes on in the background until it is done (each link gives up
/// on its own once it moves nothing for [`CLOSE_IDLE`](crate::link::run::CLOSE_IDLE)).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A link the actor holds.
struct Held {
    conn: Connection,
    /// What the peer's hello said of it, for the membership view.
    record: Record,
    /// The pair's decider rejected it: the pair has a link already. It never
    /// opened, so no user sees it; it is not redialed.
    duplicate: bool,
}

impl Held {
    fn new(conn: Connection, record: Record) -> Held {
        Held {
            conn,
            record,
            duplicate: false,
        }
    }
}

/// The actor: owns the mesh and the link handles until the service closes.
/// Without `dial` it starts no dial (a node that only discovers, for
/// measuring discovery alone): the mesh still tracks every peer. The node
/// listens at `listen_at` (see [`Mesh::listening_at`]).
pub(crate) async fn actor(
    node: Arc<Node>,
    mut cmds: mpsc::UnboundedReceiver<Command>,
    discovery: Option<Discovery>,
    dial: bool,
    listen_at: Vec<SocketAddr>,
) {
    let mut mesh = Mesh::new(node.id().clone());
    mesh.listening_at(listen_at);
    let mut links: HashMap<LinkId, Held> = HashMap::new();
    // Callers of `ready` waiting for discovery to settle.
    let mut settling: Vec<oneshot::Sender<Settle>> = Vec::new();
    // The actor holds a sender itself (in `node`), so only `Close` ends this.
    while let Some(cmd) = cmds.recv().await {
        let peers_change = matches!(cmd, Command::Sighted | Command::DialEnded { .. });
        // Dials that follow a broken link or a failed dial are redials.
        let redial = matches!(
            cmd,
            Command::Retry { .. } | Command::Link(Event::Closed { .. })
        );
        let mut actions = match cmd {
            Command::Sighted => {
                let mut actions = Vec::new();
                for (peer, sighting) in node.take_sightings() {
                    match sighting {
                        Sighting::Found { addrs, heard } => {
                            let ips: Vec<_> = addrs.iter().map(|a| a.ip()).collect();
                            let found = mesh.discovered(peer, addrs, heard);
                            // Only a peer the mesh took: records past its
                            // bound are anyone's to announce.
                            if !found
                                .iter()
                                .any(|a| matches!(a, Action::TooManyPeers { .. }))
                            {
                                ips.into_iter().for_each(|ip| node.know_advertised(ip));
                            }
                            actions.extend(found);
                        }
                        Sighting::Lost => actions.extend(mesh.lost(&peer)),
                    }
                }
                actions
            }
            Command::Hinted => {
                let mut actions = Vec::new();
                for Hints { from, via, members } in node.take_hints() {
                    actions.extend(mesh.hinted(&from, via, members));
                }
                actions
            }
            Command::DialEnded { target, end } => {
                mesh.dial_ended(&target, end, |p, m| node.messaging.says_linked(p, m))
            }
            Command::Retry { target, generation } => {
                mesh.retry(target, generation, |p, m| node.messaging.says_linked(p, m))
            }
            Command::AddPeer { addr } => {
                node.know(addr.ip());
                mesh.add_static(addr)
            }
            Command::Disconnect { peer } => mesh.disconnect(peer),
            Command::Reconnect { peer } => mesh.reconnect(&peer),
            Command::Announce { meta } => {
                if let Some(d) = &discovery {
                    d.reannounce(&meta);
                }
                vec![]
            }
            Command::Link(Event::Handshaken { conn, record }) => {
                // It proved a key from there, and listens there on the port
                // its hello says.
                let mut listens = conn.remote_addr();
                listens.set_port(record.port);
                node.know(listens.ip());
                let (link, peer) = (conn.link().id, conn.peer_id().clone());
                mesh.proven_at(&peer, listens);
                let incarnation = record.incarnation;
                links.insert(link, Held::new(conn, record));
                mesh.handshaken(link, peer, incarnation)
            }
            Command::Link(Event::Verdict { link, verdict }) => {
                if let (Some(held), Verdict::Reject) = (links.get_mut(&link), verdict) {
                    held.duplicate = true;
                }
                mesh.verdict(link, verdict)
            }
            Command::Link(Event::Silence { link, silent }) => {
                if let Some(held) = links.get(&link) {
                    let peer = held.conn.peer_id();
                    if silent {
                        node.members.silent(link, peer);
                    } else {
                        node.members.heard(link, peer);
                    }
                }
                vec![]
            }
            Command::Link(Event::Closed {
                link,
                reason,
                lived,
            }) => {
                let was_open = mesh.is_open(link);
                let mut redial = redials(&reason);
                if let Some(held) = links.remove(&link) {
                    report_close(&node, &held, &reason);
                    // A duplicate carried nothing. A replaced link carried
                    // calls, but its peer lives on in the new link: only the
                    // pair's open link closing makes messaging forget it.
                    if held.duplicate {
                        redial = Redial::No;
                    } else {
                        node.messaging.closed(&held.conn, &reason, was_open);
                        node.members.closed(link, held.conn.peer_id(), &reason);
                    }
                }
                mesh.closed(link, redial, lived >= mesh::STABLE)
            }
            Command::Settled { reply, wait } => {
                if wait {
                    settling.push(reply);
                } else {
                    let _ = reply.send(mesh.settle());
                }
                vec![]
            }
            Command::Close => break,
        };
        if peers_change {
            node.hub.set_advertised(mesh.advertised());
        }
        actions.extend(mesh.browse());
        for action in actions {
            if let Action::Dial { .. } = action {
                if !dial {
                    continue;
                }
                node.hub.counters.dial(redial);
            }
            apply(&node, &mut links, discovery.as_ref(), action);
        }
        if !settling.is_empty() {
            let settle = mesh.settle();
            if settle.pending == 0 {
                for reply in settling.drain(..) {
                    let _ = reply.send(settle.clone());
                }
            }
        }
    }

    // Shutting down: no new links. The goodbyes go out first, on every
    // link and over mDNS, so peers that see our links end already know we
    // left, and do not redial.
    node.cancel().cancel();
    let port = node.links.config.hello.port;
    node.messaging.tell_record(&node.members.goodbye(port));
    if let Some(d) = &discovery {
        d.goodbye().await;
    }
    for held in links.values() {
        request_close(held.conn.link(), CloseReason::Shutdown);
    }
    let drain = async {
        while !links.is_empty() {
            match cmds.recv().await {
                Some(Command::Link(Event::Closed { link, reason, .. })) => {
                    if let Some(held) = links.remove(&link) {
                        report_close(&node, &held, &reason);
                    }
                }
                Some(Command::Link(Event::Handshaken { conn, record })) => {
                    request_close(conn.link(), CloseReason::Shutdown);
                    links.insert(conn.link().id, Held::new(conn, record));
                }
                Some(_) => {}
                None => break,
            }
        }
    };
    let stop = async {
        if let Some(d) = discovery {
            d.stop().await;
        }
    };
    let (_, drained) = tokio::join!(stop, tokio::time::timeout(CLOSE_TIMEOUT, drain));
    if drained.is_err() {
        tracing::warn!(
            "{} links still flushing after {CLOSE_TIMEOUT:?}; they finish on their own",
            links.len()
        );
    }
    // Calls still waiting for an answer end now, not at their timeout.
    node.messaging.shutdown();
    // No more commands: a handshake that completes from now on finds the
    // actor gone and drops its link. One that registered meanwhile is closed
    // here, so no link outlives the node.
    cmds.close();
    while let Ok(cmd) = cmds.try_recv() {
        if let Command::Link(Event::Handshaken { conn, .. }) = cmd {
            request_close(conn.link(), CloseReason::Shutdown);
        }
    }
}

/// Whether a link that closed for `reason` is dialed again (if its peer is
/// still known). Not when this node is closing, when a newer link took its
/// place, or when the peer's id is in conflict (nor when it was a
/// duplicate, see [`Held`]); not at once when the peer closed it (it may be
/// leaving).
fn redials(reason: &CloseReason) -> Redial {
    match reason {
        CloseReason::Shutdown | CloseReason::Replaced | CloseReason::IdConflict => Redial::No,
        CloseReason::PeerClosed => Redial::AfterGoodbye,
        _ => Redial::Soon,
    }
}

fn apply(
    node: &Arc<Node>,
    links: &mut HashMap<LinkId, Held>,
    discovery: Option<&Discovery>,
    action: Action,
) {
    match action {
        Action::Dial {
            target,
            addrs,
            tellers,
        } => {
            tracing::debug!(?target, ?addrs, ?tellers, "dialing");
            tokio::spawn(tasks::dial(node.clone(), target, addrs, tellers));
        }
        Action::DialLater {
            target,
            failures,
            generation,
        } => {
            let delay = jitter(mesh::backoff(failures));
            tracing::debug!(?target, failures, ?delay, "redial scheduled");
            retry_after(node, target, generation, delay);
        }
        Action::Yield {
            target,
            generation,
            grace,
        } => {
            let delay = jitter(grace);
            tracing::debug!(?target, ?delay, "waiting for the decider's dial");
            retry_after(node, target, generation, delay);
        }
        Action::Verify { peer } => {
            if let Some(d) = discovery {
                d.verify(&peer);
            }
        }
        Action::Query => {
            if let Some(d) = discovery {
                d.steer(Browse::Query);
            }
        }
        Action::Cache => {
            if let Some(d) = discovery {
                d.steer(Browse::Cache);
            }
        }
        Action::SendVerdict { link, verdict } => {
            if let Some(held) = links.get_mut(&link) {
                // A duplicate is closed by this end, and never seen.
                held.duplicate |= verdict == Verdict::Reject;
                let conn = &held.conn;
                // The queue is empty: nothing can be sent before a verdict.
                let _ = conn.sender_queue().try_send(verdict.frame());
                match verdict {
                    Verdict::Accept => {}
                    Verdict::Reject => request_close(conn.link(), CloseReason::Local),
                    Verdict::Conflict => {
                        node.error(Error::IdConflict {
                            remote: conn.remote_addr(),
                            id: conn.peer_id().clone(),
                        });
                        request_close(conn.link(), CloseReason::IdConflict)
                    }
                }
            }
        }
        Action::Open { link } => {
            if let Some(Held { conn, record, .. }) = links.get(&link) {
                tracing::info!(peer = %conn.peer_id(), remote = %conn.remote_addr(), "connected");
                // Listed and known to messaging first, then announced: a
                // subscriber that calls `connections()` or `publish` on the
                // event finds the link in both. A link whose task has
                // already ended is not announced. Nor is one whose cluster
                // key was removed since its handshake: it is closed,
                // checked before it is listed and again after, since
                // `remove_key` closes the listed links after removing the
                // key (one of the two sees it).
                let removed = || !node.links.key_installed(conn.link().key);
                let listed = !removed() && node.links.open.opened(conn);
                node.messaging.opened(conn, record.incarnation);
                if removed() {
                    request_close(conn.link(), CloseReason::KeyRemoved);
                } else if listed {
                    node.hub.connection.emit(conn);
                    if let Some((order, signed)) = node.members.opened(conn, record.clone()) {
                        node.messaging.tell_member(conn.peer_id(), order, signed);
                    }
                }
            }
        }
        Action::TellTwin { link } => {
            if let Some(Held { conn, .. }) = links.get(&link) {
                // A hint: a full queue loses it, not the link.
                let _ = conn.sender_queue().try_send(Frame::control(frame::TWIN));
            }
        }
        Action::Close { link, reason } => {
            if let Some(Held { conn, .. }) = links.get(&link) {
                request_close(conn.link(), reason);
            }
        }
        Action::TooManyPeers { peer } => node.error(Error::TooManyPeers {
            peer,
            max: MAX_PEERS,
        }),
    }
}

/// Tells the actor to retry `target` after `delay`, unless the node closes
/// first.
fn retry_after(node: &Arc<Node>, target: Target, generation: u64, delay: Duration) {
    let node = node.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = node.cancel().cancelled() => {}
            _ = tokio::time::sleep(delay) => {
                node.send(Command::Retry { target, generation });
            }
        }
    });
}

/// `d` scaled by a random factor in [0.5, 1.5), so that nodes that lost
/// their links at the same moment do not all redial at the same moment.
fn jitter(d: Duration) -> Duration {
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    d.mul_f64(0.5 + (r >> 11) as f64 / (1u64 << 53) as f64)
}

/// Logs a closed link, and reports it as an error event when it failed.
fn report_close(node: &Node, held: &Held, reason: &CloseReason) {
    let peer = held.conn.peer_id().clone();
    let remote = held.conn.remote_addr();
    let reason = reason.clone();
    match reason {
        _ if held.duplicate => tracing::debug!(%peer, %remote, "duplicate link closed"),
        CloseReason::FrameTooLarge { .. } | CloseReason::Protocol(_) => {
            node.error(Error::Protocol {
                peer,
                remote,
                reason,
            })
        }
        CloseReason::Io(_)
        | CloseReason::Timeout(_)
        | CloseReason::Stalled(_)
        | CloseReason::Unread(_) => node.error(Error::Link {
            peer,
            remote,
            reason,
        }),
        // Reported where the conflict was found (see `apply`, `link`).
        CloseReason::IdConflict => tracing::warn!(%peer, %remote, "link closed: id conflict"),
        _ => tracing::info!(%peer, %remote, %reason, "link closed"),
    }
}
