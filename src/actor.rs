//! A running node: the actor that owns the mesh, and the tasks around it.
//!
//! `Service::listen` starts, for one node:
//!
//! - one accept loop per listening socket ([`spawn_accept`]),
//! - one task reading mDNS events, and the **actor** ([`spawn`]): one task
//!   that owns the [`Mesh`] and every link handle,
//! - then, as the actor decides, one task per dial and per link (see
//!   [`crate::link`]).
//!
//! The other tasks never touch the mesh; they send the actor [`Command`]s, and
//! the actor carries out the [`Action`]s the mesh returns. So the one-link rule
//! runs in one place, in order, without locks. The [`Hub`] (subscribers and
//! the list of open links) is the only state shared with the `Service` handle.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use tokio::sync::Semaphore;

use crate::connection::{request_close, CloseReason, Connection};
use crate::discovery::{self, Discovery, Record};
use crate::error::Error;
use crate::events::Hub;
use crate::gate::Gate;
use crate::hello::Hello;
use crate::id::NodeId;
use crate::link::{self, verdict_frame};
use crate::mesh::{self, Action, DialEnd, LinkId, Mesh, Redial, Target, Verdict, MAX_PEERS};
use crate::messaging::Messaging;
use crate::secure::Psk;
use crate::settings::Settings;

/// How long `close` waits for links to flush and close. A link still moving
/// frames then goes on in the background until it is done (each link gives up
/// on its own once it moves nothing for [`link::CLOSE_IDLE`]).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connection attempts under way at once: a flood of bogus records
/// makes dials wait their turn instead of opening sockets without bound.
const MAX_DIALS: usize = 32;
/// Most addresses of one peer tried in one dial.
const MAX_ADDRS: usize = 4;

/// What the service's tasks tell the actor.
pub(crate) enum Command {
    Discovered {
        peer: NodeId,
        addrs: Vec<SocketAddr>,
    },
    Lost {
        peer: NodeId,
    },
    DialEnded {
        target: Target,
        end: DialEnd,
    },
    /// A scheduled redial is due.
    Retry {
        target: Target,
        generation: u64,
    },
    /// Dial this address now and whenever its link breaks.
    AddPeer {
        addr: SocketAddr,
    },
    Handshaken {
        link: LinkId,
        conn: Connection,
        incarnation: u64,
    },
    Verdict {
        link: LinkId,
        verdict: Verdict,
    },
    LinkClosed {
        link: LinkId,
        reason: CloseReason,
        /// How long the link's task ran.
        lived: Duration,
    },
    /// Stop the node; the actor's task ends when it has.
    Close,
}

/// What every task of a running service shares.
pub(crate) struct Ctx {
    pub hello: Hello,
    pub max_frame_len: usize,
    pub handshake_timeout: Duration,
    pub queue_len: usize,
    pub queue_bytes: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// The cluster's pre-shared key, when it has a secret.
    pub psk: Option<Psk>,
    /// Slots for accepted connections in their handshake.
    gate: Arc<Gate>,
    /// Permits for connection attempts (held until their handshake ends).
    dials: Semaphore,
    /// The messaging layer, fed by every link.
    pub messaging: Arc<Messaging>,
    /// Local addresses of our recent dials, and when they were made.
    own_dials: std::sync::Mutex<HashMap<SocketAddr, tokio::time::Instant>>,
    /// The listen addresses when they are specific ones: dials go out from
    /// them too, so a node bound to one interface stays on it.
    dial_from: Vec<IpAddr>,
    next_link: AtomicU64,
    cmd: mpsc::UnboundedSender<Command>,
    hub: Arc<Hub>,
    /// Cancelled when the service closes: stops accepting, browsing, dialing
    /// and handshakes in progress (open links are closed gracefully instead).
    pub cancel: CancellationToken,
}

impl Ctx {
    /// The shared state of a node about to start, and the actor's inbox.
    pub fn new(
        hello: Hello,
        settings: &Settings,
        dial_from: Vec<IpAddr>,
        hub: Arc<Hub>,
        messaging: Arc<Messaging>,
        cancel: CancellationToken,
    ) -> (Arc<Ctx>, mpsc::UnboundedReceiver<Command>) {
        let (cmd, inbox) = mpsc::unbounded_channel();
        let ctx = Ctx {
            hello,
            max_frame_len: settings.max_frame_len,
            handshake_timeout: settings.handshake_timeout,
            queue_len: settings.queue_len,
            queue_bytes: settings.queue_bytes,
            heartbeat_interval: settings.heartbeat_interval,
            heartbeat_timeout: settings.heartbeat_timeout,
            psk: settings
                .secret
                .as_ref()
                .map(|s| Psk::derive(s, &settings.name)),
            gate: Arc::new(Gate::default()),
            dials: Semaphore::new(MAX_DIALS),
            own_dials: Default::default(),
            messaging,
            dial_from,
            next_link: AtomicU64::new(1),
            cmd,
            hub,
            cancel,
        };
        (Arc::new(ctx), inbox)
    }

    pub fn id(&self) -> &NodeId {
        &self.hello.id
    }

    pub fn next_link_id(&self) -> LinkId {
        self.next_link.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends the actor a command; false if the actor has stopped.
    pub fn send(&self, cmd: Command) -> bool {
        self.cmd.send(cmd).is_ok()
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn own_dials(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, tokio::time::Instant>> {
        crate::events::lock(&self.own_dials)
    }

    /// Reports a non-fatal error: a log line and an error event.
    pub fn error(&self, e: Error) {
        tracing::warn!("{e}");
        self.hub.error.emit(&e);
    }
}

/// Starts accepting on `listener` until the node closes.
pub(crate) fn spawn_accept(ctx: Arc<Ctx>, listener: TcpListener) {
    tokio::spawn(accept_loop(ctx, listener));
}

/// Starts the mDNS reader and the actor; the handle ends when the actor has
/// shut the node down.
pub(crate) fn spawn(
    ctx: Arc<Ctx>,
    inbox: mpsc::UnboundedReceiver<Command>,
    discovery: Option<(Discovery, mdns_sd::Receiver<mdns_sd::ServiceEvent>)>,
) -> JoinHandle<()> {
    let discovery = discovery.map(|(d, browse)| {
        tokio::spawn(browse_loop(ctx.clone(), browse));
        d
    });
    tokio::spawn(actor(ctx, inbox, discovery))
}

async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, remote)) => match ctx.gate.admit(remote.ip().to_canonical()) {
                Ok(ticket) => {
                    tokio::spawn(link::accepted(ctx.clone(), stream, remote, ticket));
                }
                Err(full) => {
                    drop(stream);
                    ctx.error(Error::Handshake {
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

async fn browse_loop(ctx: Arc<Ctx>, browse: mdns_sd::Receiver<mdns_sd::ServiceEvent>) {
    use mdns_sd::ServiceEvent;
    loop {
        let event = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            e = browse.recv_async() => match e { Ok(e) => e, Err(_) => return },
        };
        match event {
            ServiceEvent::ServiceResolved(rec) => {
                match discovery::parse_record(&rec, &ctx.hello.cluster, ctx.id()) {
                    Ok(Record::Peer(peer, addrs)) => {
                        tracing::debug!(%peer, ?addrs, "discovered");
                        ctx.send(Command::Discovered { peer, addrs });
                    }
                    Ok(Record::NotOurs) => {}
                    Err(e) => ctx.error(e),
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                if let Ok(peer) = discovery::instance_id(&fullname) {
                    tracing::debug!(%peer, "mDNS goodbye");
                    ctx.send(Command::Lost { peer });
                }
            }
            _ => {}
        }
    }
}

async fn dial(ctx: Arc<Ctx>, target: Target, addrs: Vec<SocketAddr>) {
    let mut last = String::from("no address");
    let mut refused = !addrs.is_empty();
    let connected = async {
        let permit = ctx.dials.acquire().await.expect("never closed");
        // A record may list many addresses; a few are plenty, and bound how
        // long one dial can take.
        for addr in addrs.iter().take(MAX_ADDRS) {
            match tokio::time::timeout(ctx.handshake_timeout, connect(&ctx, *addr)).await {
                Ok(Ok(stream)) => return Some((stream, *addr, permit)),
                Ok(Err(e)) => {
                    refused &= e.kind() == std::io::ErrorKind::ConnectionRefused;
                    last = e.to_string();
                }
                Err(_) => {
                    refused = false;
                    last = format!("no answer within {:?}", ctx.handshake_timeout);
                }
            }
        }
        None
    };
    let connected = tokio::select! {
        _ = ctx.cancel.cancelled() => return,
        c = connected => c,
    };
    if let Some((stream, addr, permit)) = connected {
        return link::dialed(ctx.clone(), stream, addr, target, permit).await;
    }
    ctx.error(Error::Dial {
        peer: match &target {
            Target::Peer(p) => p.to_string(),
            Target::Addr(a) => format!("at static address {a}"),
        },
        addrs,
        reason: last,
    });
    let end = if refused {
        DialEnd::Refused
    } else {
        DialEnd::Failed
    };
    ctx.send(Command::DialEnded { target, end });
}

/// Connects to `addr`, from our listen address when we have a specific one.
async fn connect(ctx: &Ctx, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let from = ctx
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

/// The actor: owns the mesh and the link handles until the service closes.
async fn actor(
    ctx: Arc<Ctx>,
    mut cmds: mpsc::UnboundedReceiver<Command>,
    discovery: Option<Discovery>,
) {
    let mut mesh = Mesh::new(ctx.id().clone());
    let mut links: HashMap<LinkId, Connection> = HashMap::new();
    // The actor holds a sender itself (in `ctx`), so only `Close` ends this.
    while let Some(cmd) = cmds.recv().await {
        let peers_change = matches!(
            cmd,
            Command::Discovered { .. } | Command::Lost { .. } | Command::DialEnded { .. }
        );
        let actions = match cmd {
            Command::Discovered { peer, addrs } => mesh.discovered(peer, addrs),
            Command::Lost { peer } => {
                mesh.lost(&peer);
                vec![]
            }
            Command::DialEnded { target, end } => mesh.dial_ended(&target, end),
            Command::Retry { target, generation } => mesh.retry(target, generation),
            Command::AddPeer { addr } => mesh.add_static(addr),
            Command::Handshaken {
                link,
                conn,
                incarnation,
            } => {
                let peer = conn.peer_id().clone();
                links.insert(link, conn);
                mesh.handshaken(link, peer, incarnation)
            }
            Command::Verdict { link, verdict } => mesh.verdict(link, verdict),
            Command::LinkClosed {
                link,
                reason,
                lived,
            } => {
                let was_open = mesh.is_open(link);
                if let Some(conn) = links.remove(&link) {
                    report_close(&ctx, &conn, &reason);
                    // A duplicate carried nothing. A replaced link carried
                    // calls, but its peer lives on in the new link: only the
                    // pair's open link closing makes messaging forget it.
                    if reason != CloseReason::Duplicate {
                        ctx.messaging.closed(&conn, &reason, was_open);
                    }
                }
                mesh.closed(link, redials(&reason), lived >= mesh::STABLE)
            }
            Command::Close => break,
        };
        if peers_change {
            ctx.hub.set_advertised(mesh.advertised());
        }
        for action in actions {
            apply(&ctx, &links, discovery.as_ref(), action);
        }
    }

    // Shutting down: no new links. The mDNS goodbye goes out first, so
    // peers that see our links end already know we left, and do not redial.
    ctx.cancel.cancel();
    if let Some(d) = &discovery {
        d.goodbye().await;
    }
    for conn in links.values() {
        request_close(conn.shared(), CloseReason::Shutdown);
    }
    let drain = async {
        while !links.is_empty() {
            match cmds.recv().await {
                Some(Command::LinkClosed { link, reason, .. }) => {
                    if let Some(conn) = links.remove(&link) {
                        report_close(&ctx, &conn, &reason);
                    }
                }
                Some(Command::Handshaken { link, conn, .. }) => {
                    request_close(conn.shared(), CloseReason::Shutdown);
                    links.insert(link, conn);
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
    ctx.messaging.shutdown();
    // No more commands: a handshake that completes from now on finds the
    // actor gone and drops its link. One that registered meanwhile is closed
    // here, so no link outlives the node.
    cmds.close();
    while let Ok(cmd) = cmds.try_recv() {
        if let Command::Handshaken { conn, .. } = cmd {
            request_close(conn.shared(), CloseReason::Shutdown);
        }
    }
}

/// Whether a link that closed for `reason` is dialed again (if its peer is
/// still known). Not when this node is closing, when a newer link took its
/// place, when it was a duplicate, or when the peer's id is in conflict;
/// not at once when the peer closed it (it may be leaving).
fn redials(reason: &CloseReason) -> Redial {
    match reason {
        CloseReason::Shutdown
        | CloseReason::Replaced
        | CloseReason::Duplicate
        | CloseReason::IdConflict => Redial::No,
        CloseReason::PeerClosed => Redial::AfterGoodbye,
        _ => Redial::Soon,
    }
}

fn apply(
    ctx: &Arc<Ctx>,
    links: &HashMap<LinkId, Connection>,
    discovery: Option<&Discovery>,
    action: Action,
) {
    match action {
        Action::Dial { target, addrs } => {
            tracing::debug!(?target, ?addrs, "dialing");
            tokio::spawn(dial(ctx.clone(), target, addrs));
        }
        Action::DialLater {
            target,
            failures,
            generation,
        } => {
            let delay = jitter(mesh::backoff(failures));
            tracing::debug!(?target, failures, ?delay, "redial scheduled");
            let ctx = ctx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = ctx.cancel.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {
                        ctx.send(Command::Retry { target, generation });
                    }
                }
            });
        }
        Action::Verify { peer } => {
            if let Some(d) = discovery {
                d.verify(&peer);
            }
        }
        Action::SendVerdict { link, verdict } => {
            if let Some(conn) = links.get(&link) {
                // The queue is empty: nothing can be sent before a verdict.
                let _ = conn.sender_queue().try_send(verdict_frame(verdict));
                match verdict {
                    Verdict::Accept => {}
                    Verdict::Reject => request_close(conn.shared(), CloseReason::Duplicate),
                    Verdict::Conflict => {
                        ctx.error(Error::IdConflict {
                            remote: conn.remote_addr(),
                            id: conn.peer_id().to_string(),
                        });
                        request_close(conn.shared(), CloseReason::IdConflict)
                    }
                }
            }
        }
        Action::Open { link } => {
            if let Some(conn) = links.get(&link) {
                tracing::info!(peer = %conn.peer_id(), remote = %conn.remote_addr(), "connected");
                ctx.hub.opened(link, conn.clone());
                ctx.messaging.opened(conn);
            }
        }
        Action::Close { link, reason } => {
            if let Some(conn) = links.get(&link) {
                request_close(conn.shared(), reason);
            }
        }
        Action::TooManyPeers { peer } => ctx.error(Error::TooManyPeers {
            peer: peer.to_string(),
            max: MAX_PEERS,
        }),
    }
}

/// `d` scaled by a random factor in [0.5, 1.5), so that nodes that lost
/// their links at the same moment do not all redial at the same moment.
fn jitter(d: Duration) -> Duration {
    let r = uuid::Uuid::new_v4().as_u128() as u64;
    d.mul_f64(0.5 + (r >> 11) as f64 / (1u64 << 53) as f64)
}

/// Logs a closed link, and reports it as an error event when it failed.
fn report_close(ctx: &Ctx, conn: &Connection, reason: &CloseReason) {
    let peer = conn.peer_id().to_string();
    let remote = conn.remote_addr();
    match reason {
        CloseReason::FrameTooLarge { .. } | CloseReason::Protocol(_) => {
            ctx.error(Error::Protocol {
                peer,
                remote,
                reason: reason.to_string(),
            })
        }
        CloseReason::Io(_) | CloseReason::Timeout(_) => ctx.error(Error::Link {
            peer,
            remote,
            reason: reason.to_string(),
        }),
        // Reported where the conflict was found (see `apply`, `link`).
        CloseReason::IdConflict => tracing::warn!(%peer, %remote, "link closed: id conflict"),
        CloseReason::Duplicate => tracing::debug!(%peer, %remote, "duplicate link closed"),
        _ => tracing::info!(%peer, %remote, %reason, "link closed"),
    }
}
