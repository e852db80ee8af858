//! The tasks around the actor: accept loops, the mDNS browser, dials, and
//! each link's task from its handshake on.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, SemaphorePermit};
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::link::canonical;
use crate::link::handshake::{handshake, Role};
use crate::node::actor::actor;
use crate::node::discovery::{self, Discovery, Record};
use crate::node::gate::Ticket;
use crate::node::mesh::{DialEnd, Target};
use crate::node::running::{Command, Node};
use crate::stats::Failure;

/// Most addresses of one peer tried in one dial.
const MAX_ADDRS: usize = 4;

/// Starts accepting on `listener` until the node closes.
pub(crate) fn spawn_accept(node: Arc<Node>, listener: TcpListener) {
    tokio::spawn(accept_loop(node, listener));
}

/// Starts the mDNS reader and the actor; the handle ends when the actor has
/// shut the node down.
pub(crate) fn spawn(
    node: Arc<Node>,
    inbox: mpsc::UnboundedReceiver<Command>,
    discovery: Option<(Discovery, mdns_sd::Receiver<mdns_sd::ServiceEvent>)>,
) -> JoinHandle<()> {
    let discovery = discovery.map(|(d, browse)| {
        tokio::spawn(browse_loop(node.clone(), browse));
        d
    });
    tokio::spawn(actor(node, inbox, discovery))
}

async fn accept_loop(node: Arc<Node>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = node.cancel().cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, remote)) => match node.gate.admit(remote.ip().to_canonical()) {
                Ok(ticket) => {
                    tokio::spawn(run_accepted(node.clone(), stream, remote, ticket));
                }
                Err(full) => {
                    drop(stream);
                    node.hub.counters.handshake_failed(Failure::NoSlot);
                    node.error(Error::Handshake {
                        remote,
                        reason: format!(
                            "refused: {} handshakes in progress, {} of them from this address",
                            full.pending, full.from_this_address
                        ),
                    });
                }
            },
            Err(e) => {
                // Out of file descriptors and alike: say so, breathe, go on.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn browse_loop(node: Arc<Node>, browse: mdns_sd::Receiver<mdns_sd::ServiceEvent>) {
    use mdns_sd::ServiceEvent;
    loop {
        let event = tokio::select! {
            _ = node.cancel().cancelled() => return,
            e = browse.recv_async() => match e { Ok(e) => e, Err(_) => return },
        };
        match event {
            ServiceEvent::ServiceResolved(rec) => {
                match discovery::parse_record(&rec, &node.links.config.hello.cluster, node.id()) {
                    Ok(Record::Peer(peer, addrs, bad_meta)) => {
                        tracing::debug!(%peer, ?addrs, "discovered");
                        if let Some(error) = bad_meta {
                            let carrier = "mDNS record";
                            let peer = peer.clone();
                            node.error(Error::BadMeta {
                                peer,
                                carrier,
                                error,
                            });
                        }
                        node.send(Command::Discovered { peer, addrs });
                    }
                    Ok(Record::NotOurs) => {}
                    Err(e) => node.error(e),
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                if let Ok(peer) = discovery::instance_id(&fullname) {
                    tracing::debug!(%peer, "mDNS goodbye");
                    node.send(Command::Lost { peer });
                }
            }
            _ => {}
        }
    }
}

pub(crate) async fn dial(node: Arc<Node>, target: Target, addrs: Vec<SocketAddr>) {
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
    let mut refused = !addrs.is_empty();
    let timeout = node.links.config.handshake_timeout;
    let connected = async {
        let permit = node.dials.acquire().await.expect("never closed");
        // A record may list many addresses; a few are plenty, and bound how
        // long one dial can take.
        for addr in addrs.iter().take(MAX_ADDRS) {
            match tokio::time::timeout(timeout, connect(&node, *addr)).await {
                Ok(Ok(stream)) => return Some((stream, *addr, permit)),
                Ok(Err(e)) => {
                    refused &= e.kind() == io::ErrorKind::ConnectionRefused;
                    last = e;
                }
                Err(_) => {
                    refused = false;
                    let why = format!("no answer within {timeout:?}");
                    last = io::Error::new(io::ErrorKind::TimedOut, why);
                }
            }
        }
        None
    };
    let connected = tokio::select! {
        _ = node.cancel().cancelled() => return,
        c = connected => c,
    };
    if let Some((stream, addr, permit)) = connected {
        return run_dialed(node.clone(), stream, addr, target, permit).await;
    }
    node.error(Error::Dial {
        peer: match &target {
            Target::Peer(p) => Some(p.clone()),
            Target::Addr(_) => None,
        },
        addrs,
        source: Arc::new(last),
    });
    let end = if refused {
        DialEnd::Refused
    } else {
        DialEnd::Failed
    };
    node.send(Command::DialEnded { target, end });
}

/// Connects to `addr`, from our listen address when we have a specific one.
async fn connect(node: &Node, addr: SocketAddr) -> io::Result<TcpStream> {
    let from = node
        .dial_from
        .iter()
        .find(|ip| ip.is_ipv4() == addr.is_ipv4() && ip.is_loopback() == addr.ip().is_loopback());
    let Some(from) = from else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(*from, 0))?;
    socket.connect(addr).await
}

/// Runs an accepted TCP link from hello to close. `ticket` holds its
/// handshake slot (see [`crate::node::gate`]) until then.
async fn run_accepted(node: Arc<Node>, stream: TcpStream, remote: SocketAddr, ticket: Ticket) {
    let evicted = ticket.evicted.clone();
    let link = tokio::select! {
        l = handshake(&node.links, &*node, stream, remote, Role::Acceptor) => l,
        _ = evicted.cancelled() => {
            node.hub.counters.handshake_failed(Failure::NoSlot);
            node.error(Error::Handshake {
                remote: canonical(remote),
                reason: "dropped to make room: the handshake slots are full and this \
                         address holds the most"
                    .into(),
            });
            None
        }
    };
    drop(ticket);
    if let Some(link) = link {
        link.run(&node.links, &*node).await;
    }
}

/// Runs a TCP link we dialed to `target` from hello to close. Tells the
/// actor when the dial has ended: right after the link is registered, so the
/// peer is never seen as neither dialing nor linked, or when the handshake
/// failed.
///
/// The node that answers may not be the one dialed (a stale record whose
/// port another node now uses). It is still a node of our cluster, so the
/// link counts as a link to whoever answered, and the one-link rule applies
/// to it as to any other; refusing it on this end only would leave the
/// other end holding a link we dropped. `permit` (a dial slot) is held until
/// the handshake is over.
async fn run_dialed(
    node: Arc<Node>,
    stream: TcpStream,
    remote: SocketAddr,
    target: Target,
    permit: SemaphorePermit<'_>,
) {
    let link = handshake(&node.links, &*node, stream, remote, Role::Dialer).await;
    drop(permit);
    if let (Some(l), Target::Peer(peer)) = (&link, &target) {
        if &l.link.peer != peer {
            tracing::debug!(dialed = %peer, answered = %l.link.peer, %remote, "a different node answered");
        }
    }
    let end = match &link {
        Some(l) => DialEnd::Linked(l.link.peer.clone()),
        None => DialEnd::Failed,
    };
    node.send(Command::DialEnded { target, end });
    if let Some(link) = link {
        link.run(&node.links, &*node).await;
    }
}
