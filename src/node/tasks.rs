//! The tasks around the actor: accept loops, the mDNS browser, dials, and
//! each link's task from its handshake on.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::id::NodeId;
use crate::link::canonical;
use crate::link::handshake::{handshake, moot, Role};
use crate::link::patience::patient_timeout;
use crate::node::actor::actor;
use crate::node::caps::Over;
use crate::node::discovery::{self, Browse, Browser, Discovery, Record, Sighting};
use crate::node::gate::Ticket;
use crate::node::mesh::{DialEnd, Heard, Target};
use crate::node::running::{Command, Node};
use crate::stats::Failure;

/// Starts accepting on `listener` until the node closes.
pub(crate) fn spawn_accept(node: Arc<Node>, listener: TcpListener) {
    tokio::spawn(accept_loop(node, listener));
}

/// Starts the mDNS reader and the actor (which dials what it discovers
/// only with `dial`; the node listens at `listen_at`); the handle ends
/// when the actor has shut the node down.
pub(crate) fn spawn(
    node: Arc<Node>,
    inbox: mpsc::UnboundedReceiver<Command>,
    discovery: Option<(Discovery, mdns_sd::Receiver<mdns_sd::ServiceEvent>)>,
    dial: bool,
    listen_at: Vec<SocketAddr>,
) -> JoinHandle<()> {
    let discovery = discovery.map(|(mut d, browse)| {
        let (browser, steer) = d.browser();
        tokio::spawn(browse_loop(node.clone(), browse, browser, steer));
        d
    });
    tokio::spawn(actor(node, inbox, discovery, dial, listen_at))
}

async fn accept_loop(node: Arc<Node>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = node.cancel().cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, remote)) => {
                let held = match node.caps.take(remote.ip()) {
                    Ok(held) => held,
                    Err(over) => {
                        drop(stream);
                        let (max, scope) = match over {
                            Over::All { max } => (max, "in all"),
                            Over::Prefix { max } => (max, "from its network"),
                        };
                        node.hub.counters.handshake_failed(Failure::TooManyLinks);
                        node.error(Error::TooManyLinks { remote, max, scope });
                        continue;
                    }
                };
                match node.gate.admit(remote.ip(), node.is_known(remote.ip())) {
                    Ok(ticket) => {
                        let node = node.clone();
                        tokio::spawn(async move {
                            run_accepted(node, stream, remote, ticket).await;
                            drop(held);
                        });
                    }
                    Err(full) => {
                        drop(stream);
                        node.hub.counters.handshake_failed(Failure::NoSlot);
                        node.error(Error::Handshake {
                            remote,
                            reason: format!(
                                "refused: {} handshakes in progress, {} of them from this \
                             address's network",
                                full.pending, full.from_this_prefix
                            ),
                        });
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors and alike: say so, breathe, go on.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How long a node queries mDNS after it starts, or starts querying
/// again, at least, however soon it links: the daemon's first two queries
/// (at about 0.1 and 1.1 s).
const QUERY_FIRST: Duration = Duration::from_millis(1500);
/// How long the actor must want queries before the browse goes back to
/// them: a member named by a peer is most often linked within this, and
/// every new browse costs the daemon a round of resolve queries.
const QUERY_AFTER: Duration = Duration::from_millis(500);
/// The first wait before a switch of the browse that failed is tried
/// again; it doubles, up to [`SWITCH_RETRY_MAX`].
const SWITCH_RETRY: Duration = Duration::from_millis(100);
const SWITCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// Hands resolved records to the actor, each with whether it was heard
/// before this node's own announcement went out ([`Heard`]). The daemon
/// reports our own record as it hears our announcement, in order with the
/// others; and the loop starts once the announcement is out, so whatever
/// comes after the queue was first seen empty is later too.
///
/// It browses as the actor last asked ([`Browse`]): with queries at first,
/// from the cache once told to (not before [`QUERY_FIRST`] of queries),
/// with queries again when told to (after [`QUERY_AFTER`], if the actor
/// still wants them). A switch the daemon refuses is tried again
/// after a backoff. The browse a switch replaces is read until the daemon
/// lets go of it, so no event sent to it is lost.
async fn browse_loop(
    node: Arc<Node>,
    mut browse: mdns_sd::Receiver<mdns_sd::ServiceEvent>,
    browser: Browser,
    mut steer: mpsc::UnboundedReceiver<Browse>,
) {
    let mut heard = Heard::BeforeOurs;
    let mut mode = Browse::Query;
    let mut wanted = Browse::Query;
    // The browse the last switch replaced, until the daemon drops it.
    let mut old: Option<mdns_sd::Receiver<mdns_sd::ServiceEvent>> = None;
    // The cache not before `first`; queries not before `asked`.
    let mut first = tokio::time::Instant::now() + QUERY_FIRST;
    let mut asked = tokio::time::Instant::now();
    // When a refused switch may be tried again, and the next wait.
    let mut not_before = tokio::time::Instant::now();
    let mut retry = SWITCH_RETRY;
    loop {
        if browse.is_empty() {
            heard = Heard::AfterOurs;
        }
        let due = match wanted {
            _ if wanted == mode => None,
            Browse::Cache => Some(not_before.max(first)),
            Browse::Query => Some(not_before.max(asked + QUERY_AFTER)),
        };
        tokio::select! {
            _ = node.cancel().cancelled() => return,
            e = async { old.as_ref().expect("checked").recv_async().await }, if old.is_some() => {
                match e {
                    Ok(e) => on_browse_event(&node, e, &mut heard),
                    Err(_) => old = None,
                }
                continue;
            }
            e = browse.recv_async() => match e {
                Ok(e) => {
                    on_browse_event(&node, e, &mut heard);
                    continue;
                }
                Err(_) => return,
            },
            Some(next) = steer.recv() => {
                if next != wanted {
                    asked = tokio::time::Instant::now();
                }
                wanted = next;
                continue;
            }
            _ = tokio::time::sleep_until(due.unwrap_or(first)), if due.is_some() => {}
        }
        match browser.browse(wanted) {
            Ok(next) => {
                tracing::debug!(?wanted, "mDNS browse switched");
                // One switch's old browse at a time: an older one is read
                // out first (the daemon let go of it a switch ago).
                if let Some(older) = old.replace(std::mem::replace(&mut browse, next)) {
                    while let Ok(e) = older.try_recv() {
                        on_browse_event(&node, e, &mut heard);
                    }
                }
                mode = wanted;
                retry = SWITCH_RETRY;
                if mode == Browse::Query {
                    first = tokio::time::Instant::now() + QUERY_FIRST;
                }
            }
            Err(e) => {
                tracing::warn!("{e}; trying again in {retry:?}");
                not_before = tokio::time::Instant::now() + retry;
                retry = (retry * 2).min(SWITCH_RETRY_MAX);
            }
        }
    }
}

/// What one browse event tells the actor.
fn on_browse_event(node: &Node, event: mdns_sd::ServiceEvent, heard: &mut Heard) {
    use mdns_sd::ServiceEvent;
    match event {
        ServiceEvent::ServiceResolved(rec)
            if discovery::is_instance_of(&rec.fullname, node.id()) =>
        {
            *heard = Heard::AfterOurs;
        }
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
                    let heard = *heard;
                    node.sighted(peer, Sighting::Found { addrs, heard });
                }
                Ok(Record::NotOurs) => {}
                Err(e) => node.error(e),
            }
        }
        ServiceEvent::ServiceRemoved(_, fullname) => {
            if let Ok(peer) = discovery::instance_id(&fullname) {
                tracing::debug!(%peer, "mDNS goodbye");
                node.sighted(peer, Sighting::Lost);
            }
        }
        _ => {}
    }
}

/// Dials `target` at its addresses in turn (a few of them) until one
/// completes the handshake, then runs the link. An address that does not
/// connect, or whose handshake fails (nothing answers, another node
/// answers, a stranger that cannot prove the peer's key), is passed over
/// for the next: a spoofed or stale address costs a handshake at most.
///
/// A dial to a static address links with whichever node answers there; a
/// dial to a peer found over mDNS only with that peer, and not at all if,
/// when it gets its dial slot, the peer is linked or its own dial has
/// reached us. The dial slot is held until the handshake is over. When
/// nothing answers, a dial to where peers said a member listens (one with
/// `tellers`, see [`Action::Dial`](crate::node::mesh::Action::Dial))
/// reports [`Error::Hint`] naming them, any other [`Error::Dial`]; a failed
/// handshake is reported as such. The actor hears when the dial has
/// ended: right after the link is registered, so the peer is never seen as
/// neither dialing nor linked, or when every address failed.
pub(crate) async fn dial(
    node: Arc<Node>,
    target: Target,
    addrs: Vec<SocketAddr>,
    tellers: Vec<NodeId>,
) {
    let permit = tokio::select! {
        _ = node.cancel().cancelled() => return,
        p = node.dials.acquire() => p.expect("never closed"),
    };
    let expect = match &target {
        Target::Peer(p) => Some(p.clone()),
        Target::Addr(_) => None,
    };
    if let Some(peer) = &expect {
        let links = &node.links;
        if links.open.to(peer).is_some() || links.accepting.from(peer) {
            tracing::debug!(%peer, "dial moot: linked, or its dial reached us");
            drop(permit);
            let end = DialEnd::Moot;
            node.send(Command::DialEnded { target, end });
            return;
        }
    }
    let timeout = node.links.config.handshake_timeout;
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
    let mut refused = !addrs.is_empty();
    let mut answered = false;
    // A record may list many addresses; a few are plenty, and bound how
    // long one dial can take.
    for &addr in &addrs {
        // Counted so that this node's own starvation does not fail it.
        let connected = tokio::select! {
            _ = node.cancel().cancelled() => return,
            c = connect(&node, addr) => Some(c),
            _ = patient_timeout(timeout) => None,
        };
        let stream = match connected {
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                refused &= e.kind() == io::ErrorKind::ConnectionRefused;
                last = e;
                continue;
            }
            None => {
                refused = false;
                let why = format!("no answer within {timeout:?}");
                last = io::Error::new(io::ErrorKind::TimedOut, why);
                continue;
            }
        };
        refused = false;
        answered = true;
        // Boxed, so that the handshake's state (2.8 KiB) is freed when it
        // ends: inline, this task would keep room for it beside the link's
        // run for the link's whole life (a future of 10 KiB, not 4 KiB).
        let handshaken = Box::pin(handshake(
            &node.links,
            &*node,
            stream,
            addr,
            Role::Dialer,
            expect.as_ref(),
            false,
        ))
        .await;
        if let Some(link) = handshaken {
            drop(permit);
            let end = DialEnd::Linked(link.link.peer.clone(), addr);
            node.send(Command::DialEnded { target, end });
            link.run(&node.links, &*node).await;
            return;
        }
        if node.cancel().is_cancelled() {
            return;
        }
        if expect
            .as_ref()
            .is_some_and(|peer| moot(&node.links, Role::Dialer, peer))
        {
            drop(permit);
            let end = DialEnd::Moot;
            node.send(Command::DialEnded { target, end });
            return;
        }
    }
    drop(permit);
    // A failed handshake has been reported already, naming its address.
    if !answered {
        let source = Arc::new(last);
        node.error(match expect {
            Some(member) if !tellers.is_empty() => Error::Hint {
                member,
                tellers,
                addrs,
                source,
            },
            peer => Error::Dial {
                peer,
                addrs,
                source,
            },
        });
    }
    let end = if refused {
        DialEnd::Refused
    } else if answered {
        DialEnd::Failed
    } else {
        DialEnd::Unanswered
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
        l = handshake(&node.links, &*node, stream, remote, Role::Acceptor, None, ticket.crowded) => l,
        _ = evicted.cancelled() => {
            node.hub.counters.handshake_failed(Failure::NoSlot);
            node.error(Error::Handshake {
                remote: canonical(remote),
                reason: "dropped to make room: the handshake slots are full and this \
                         address's network holds the most"
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
