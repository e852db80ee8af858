//! The public [`Service`] handle and the actor that owns the mesh.
//!
//! `listen` binds the sockets and starts discovery, then spawns:
//!
//! - one accept loop per listening socket,
//! - one task reading mDNS events,
//! - one task per dial and per link (see [`crate::link`]),
//! - the **actor**: one task that owns the [`Mesh`] and every link handle.
//!
//! The other tasks never touch the mesh; they send the actor [`Command`]s, and
//! the actor carries out the [`Action`]s the mesh returns. So the one-link rule
//! runs in one place, in order, without locks. The [`Hub`] (subscribers and
//! the list of open links) is the only state shared with the handle.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::connection::{request_close, CloseReason, Connection};
use crate::discovery::{self, Discovery, Record, Scope};
use crate::error::{Error, Result};
use crate::events::{lock, Events, Hub};
use crate::hello::{Hello, PROTOCOL_VERSION};
use crate::id::NodeId;
use crate::link::{self, verdict_frame};
use crate::mesh::{Action, LinkId, Mesh, Verdict};
use crate::settings::{valid_cluster_name, Settings};

/// How long `close` waits for links to flush and close. A link still moving
/// frames then goes on in the background until it is done (each link gives up
/// on its own once it moves nothing for [`link::CLOSE_IDLE`]).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a listening node can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The TCP port.
    pub port: u16,
    /// Every address the node can be reached at (`0.0.0.0` and `::` are
    /// expanded to the addresses of the interfaces).
    pub addrs: Vec<IpAddr>,
}

/// A tcpnet node: finds the other nodes of its cluster and keeps one link to
/// each.
///
/// `Service` is a cheap handle: clones share one node.
///
/// ```no_run
/// use futures::StreamExt;
///
/// # async fn demo() -> tcpnet::Result<()> {
/// let service = tcpnet::tcpnet("my-cluster")?;
/// let mut conns = service.on_connection();
/// service.listen(0, "0.0.0.0").await?;
/// while let Some(conn) = conns.next().await {
///     println!("linked to {}", conn.peer_id());
///     for c in service.connections() {
///         c.send("hi\n").await?;
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    id: NodeId,
    incarnation: u64,
    settings: Settings,
    hub: Arc<Hub>,
    phase: Mutex<Phase>,
    /// Held by `listen` for its whole run, and by `close` while it changes
    /// the phase: a `close` during `listen` waits for it.
    gate: tokio::sync::Mutex<()>,
    /// Set once `close` has finished.
    finished: tokio::sync::watch::Sender<bool>,
}

enum Phase {
    Idle,
    Listening(Running),
    Closed,
}

struct Running {
    address: Address,
    cmd: mpsc::UnboundedSender<Command>,
    actor: tokio::task::JoinHandle<()>,
}

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
        peer: NodeId,
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
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// What every task of a running service shares.
pub(crate) struct Ctx {
    pub hello: Hello,
    pub max_frame_len: usize,
    pub handshake_timeout: Duration,
    pub queue_len: usize,
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

    /// Reports a non-fatal error: a log line and an error event.
    pub fn error(&self, e: Error) {
        tracing::warn!("{e}");
        self.hub.error.emit(&e);
    }
}

/// Creates a service; the same as [`Service::new`].
///
/// ```
/// let service = tcpnet::tcpnet("my-cluster")?;
/// assert_eq!(service.name(), "my-cluster");
/// assert!(service.address().is_none());
/// # Ok::<(), tcpnet::Error>(())
/// ```
pub fn tcpnet(settings: impl Into<Settings>) -> Result<Service> {
    Service::new(settings)
}

impl Service {
    /// Creates a service from a cluster name or [`Settings`]. Checks them:
    /// [`Error::InvalidName`], [`Error::InvalidId`], [`Error::InvalidSetting`].
    /// Nothing touches the network until [`listen`](Self::listen).
    pub fn new(settings: impl Into<Settings>) -> Result<Service> {
        let settings = settings.into();
        valid_cluster_name(&settings.name).map_err(|reason| Error::InvalidName {
            name: settings.name.clone(),
            reason,
        })?;
        let id = match &settings.id {
            Some(id) => NodeId::parse(id)?,
            None => NodeId::random(),
        };
        if settings.max_frame_len == 0 || settings.max_frame_len >= u32::MAX as usize {
            return Err(Error::InvalidSetting {
                setting: "max_frame_len",
                reason: format!("{} is not in 1..{}", settings.max_frame_len, u32::MAX),
            });
        }
        if settings.queue_len == 0 {
            return Err(Error::InvalidSetting {
                setting: "queue_len",
                reason: "must be at least 1".into(),
            });
        }
        if settings.handshake_timeout.is_zero() {
            return Err(Error::InvalidSetting {
                setting: "handshake_timeout",
                reason: "must be more than zero".into(),
            });
        }
        Ok(Service {
            inner: Arc::new(Inner {
                name: settings.name.clone(),
                id,
                incarnation: rand_u64(),
                settings,
                hub: Arc::new(Hub::new()),
                phase: Mutex::new(Phase::Idle),
                gate: tokio::sync::Mutex::new(()),
                finished: tokio::sync::watch::channel(false).0,
            }),
        })
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Binds `addr:port`, advertises the node and starts finding peers.
    /// Returns once the node is listening *and* its mDNS announcement has
    /// gone out; the [`on_listening`](Self::on_listening) event fires then too.
    ///
    /// - `port` 0 picks a free port.
    /// - `addr` is an IP address or a host name. `"0.0.0.0"` listens on every
    ///   IPv4 interface and `"::"` on every interface; a loopback address or
    ///   `"localhost"` keeps the node to this host (advertised on loopback
    ///   only); any other address of this host, public ones included, is
    ///   advertised on its interface only.
    ///
    /// Errors: [`Error::InvalidAddress`], [`Error::Bind`], [`Error::Mdns`],
    /// [`Error::AlreadyListening`], [`Error::Closed`].
    pub async fn listen(&self, port: u16, addr: &str) -> Result<Address> {
        // One `listen` or `close` at a time: a `close` that comes while the
        // node is starting waits for it, then stops it.
        let _gate = self.inner.gate.lock().await;
        match *lock(&self.inner.phase) {
            Phase::Idle => {}
            Phase::Listening(_) => return Err(Error::AlreadyListening),
            Phase::Closed => return Err(Error::Closed),
        }
        // If this future is dropped half-way, the guard stops whatever
        // started (accept loops; the mDNS daemon stops when dropped).
        let cancel = CancellationToken::new();
        let guard = cancel.clone().drop_guard();
        let running = self.start(port, addr, cancel).await?;
        guard.disarm();
        let address = running.address.clone();
        *lock(&self.inner.phase) = Phase::Listening(running);
        tracing::info!(id = %self.inner.id, ?address, "listening");
        self.inner.hub.listening.emit(&address);
        Ok(address)
    }

    async fn start(&self, port: u16, addr: &str, cancel: CancellationToken) -> Result<Running> {
        let inner = &self.inner;
        let ips = resolve(addr, port).await?;
        let mut listeners = Vec::new();
        let mut bound_port = port;
        for ip in &ips {
            let sa = SocketAddr::new(*ip, bound_port);
            match TcpListener::bind(sa).await {
                Ok(l) => {
                    bound_port = l.local_addr().map(|a| a.port()).unwrap_or(bound_port);
                    listeners.push((*ip, l));
                }
                // The first address decides; others (say ::1 of "localhost"
                // on a host without IPv6) are used when they can be.
                Err(e) if listeners.is_empty() => {
                    return Err(Error::Bind {
                        addr: sa,
                        source: Arc::new(e),
                    })
                }
                Err(e) => tracing::warn!("not listening on {sa}: {e}"),
            }
        }
        let bound: Vec<IpAddr> = listeners.iter().map(|(ip, _)| *ip).collect();
        let scope = Scope::of(&bound);

        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let ctx = Arc::new(Ctx {
            hello: Hello {
                version: PROTOCOL_VERSION,
                incarnation: inner.incarnation,
                port: bound_port,
                id: inner.id.clone(),
                cluster: inner.name.clone(),
            },
            max_frame_len: inner.settings.max_frame_len,
            handshake_timeout: inner.settings.handshake_timeout,
            queue_len: inner.settings.queue_len,
            dial_from: match scope {
                Scope::Addrs(ref ips) => ips.clone(),
                _ => Vec::new(),
            },
            next_link: AtomicU64::new(1),
            cmd: cmd_tx.clone(),
            hub: inner.hub.clone(),
            cancel,
        });
        // Accept before announcing: a peer may dial the instant it sees us.
        for (_, listener) in listeners {
            tokio::spawn(accept_loop(ctx.clone(), listener));
        }
        let (discovery, browse) =
            Discovery::start(&inner.id, &inner.name, bound_port, &scope).await?;
        tokio::spawn(browse_loop(ctx.clone(), browse));
        let actor = tokio::spawn(actor(ctx, cmd_rx, discovery));
        Ok(Running {
            address: Address {
                port: bound_port,
                addrs: scope.addresses(),
            },
            cmd: cmd_tx,
            actor,
        })
    }

    /// Where the node can be reached: `None` before `listen` and after `close`.
    pub fn address(&self) -> Option<Address> {
        match &*lock(&self.inner.phase) {
            Phase::Listening(r) => Some(r.address.clone()),
            _ => None,
        }
    }

    /// Every open link, each once, in the order they opened. A link leaves
    /// the list as soon as it starts closing (or is replaced).
    pub fn connections(&self) -> Vec<Connection> {
        self.inner.hub.open_links()
    }

    /// A stream of links as they open. It fires on both ends of a link,
    /// once the pair has settled on it (see the crate docs on the one-link rule).
    pub fn on_connection(&self) -> Events<Connection> {
        self.inner.hub.connection.subscribe()
    }

    /// A stream that yields the address once the service is listening.
    pub fn on_listening(&self) -> Events<Address> {
        self.inner.hub.listening.subscribe()
    }

    /// A stream of non-fatal errors: a failed dial or handshake, a bad mDNS
    /// record, a link closed by a protocol error. The service goes on.
    pub fn on_error(&self) -> Events<Error> {
        self.inner.hub.error.subscribe()
    }

    /// A stream that yields once `close` has finished.
    pub fn on_close(&self) -> Events<()> {
        self.inner.hub.close.subscribe()
    }

    /// Stops the node: sends the mDNS goodbye, flushes and closes every link,
    /// stops browsing and listening. Safe to call before `listen`, twice, and
    /// right after `listen`; later `listen` calls fail with [`Error::Closed`].
    pub async fn close(&self) {
        {
            let _gate = self.inner.gate.lock().await;
            let previous = std::mem::replace(&mut *lock(&self.inner.phase), Phase::Closed);
            match previous {
                // The stopping runs in a task of its own, so that a `close`
                // future dropped half-way still stops the node; every call
                // (this one, a later one) waits below for it to finish.
                Phase::Listening(running) => {
                    let inner = self.inner.clone();
                    tokio::spawn(async move {
                        let (done, wait) = oneshot::channel();
                        if running.cmd.send(Command::Close { done }).is_ok() {
                            let _ = wait.await;
                        }
                        let _ = running.actor.await;
                        inner.closed();
                    });
                }
                Phase::Idle => self.inner.closed(),
                Phase::Closed => {}
            }
        }
        let mut finished = self.inner.finished.subscribe();
        let _ = finished.wait_for(|done| *done).await;
    }
}

impl Inner {
    /// The last step of `close`: the node has stopped.
    fn closed(&self) {
        self.hub.clear();
        tracing::info!(id = %self.id, "closed");
        self.hub.close.emit(&());
        self.finished.send_replace(true);
    }
}

/// When the last handle goes, a listening node is closed in the background,
/// as `close` would (goodbye, links flushed and closed).
impl Drop for Inner {
    fn drop(&mut self) {
        let phase = std::mem::replace(&mut *lock(&self.phase), Phase::Closed);
        if let Phase::Listening(running) = phase {
            let (done, _) = oneshot::channel();
            let _ = running.cmd.send(Command::Close { done });
        }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.inner.name)
            .field("id", &self.inner.id)
            .finish()
    }
}

fn rand_u64() -> u64 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Turns the listen address into the IPs to bind.
async fn resolve(addr: &str, port: u16) -> Result<Vec<IpAddr>> {
    let bad = |reason: String| Error::InvalidAddress {
        addr: addr.to_string(),
        reason,
    };
    if let Ok(ip) = addr.parse::<IpAddr>() {
        if ip.is_multicast() {
            return Err(bad("a multicast address cannot be listened on".into()));
        }
        return Ok(vec![ip]);
    }
    if addr.is_empty() {
        return Err(bad("empty".into()));
    }
    if !addr
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad("neither an IP address nor a host name".into()));
    }
    let found = tokio::net::lookup_host((addr, port))
        .await
        .map_err(|e| bad(format!("cannot resolve: {e}")))?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for sa in found {
        if !ips.contains(&sa.ip()) {
            ips.push(sa.ip());
        }
    }
    ips.sort_by_key(|ip| ip.is_ipv6());
    if ips.is_empty() {
        return Err(bad("resolves to no address".into()));
    }
    Ok(ips)
}

async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, remote)) => {
                tokio::spawn(link::accepted(ctx.clone(), stream, remote));
            }
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

async fn dial(ctx: Arc<Ctx>, peer: NodeId, addrs: Vec<SocketAddr>) {
    let mut last = String::from("no address");
    for addr in &addrs {
        let connect = tokio::time::timeout(ctx.handshake_timeout, connect(&ctx, *addr));
        let connected = tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            c = connect => c,
        };
        match connected {
            Ok(Ok(stream)) => {
                return link::dialed(ctx.clone(), stream, *addr, peer).await;
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer within {:?}", ctx.handshake_timeout),
        }
    }
    if !ctx.cancel.is_cancelled() {
        ctx.error(Error::Dial {
            peer: peer.to_string(),
            addrs,
            reason: last,
        });
    }
    ctx.send(Command::DialEnded { peer });
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
async fn actor(ctx: Arc<Ctx>, mut cmds: mpsc::UnboundedReceiver<Command>, discovery: Discovery) {
    let mut mesh = Mesh::new(ctx.id().clone());
    let mut links: HashMap<LinkId, Connection> = HashMap::new();
    let done = loop {
        let Some(cmd) = cmds.recv().await else {
            break None;
        };
        let actions = match cmd {
            Command::Discovered { peer, addrs } => mesh.discovered(peer, addrs),
            Command::Lost { peer } => {
                mesh.lost(&peer);
                vec![]
            }
            Command::DialEnded { peer } => {
                mesh.dial_ended(&peer);
                vec![]
            }
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
            Command::LinkClosed { link, reason } => {
                mesh.closed(link);
                ctx.hub.unlist(link);
                if let Some(conn) = links.remove(&link) {
                    report_close(&ctx, &conn, &reason);
                }
                vec![]
            }
            Command::Close { done } => break Some(done),
        };
        for action in actions {
            apply(&ctx, &links, action);
        }
    };

    // Shutting down: no new links; close every link while the mDNS goodbye
    // goes out.
    ctx.cancel.cancel();
    for conn in links.values() {
        request_close(conn.shared(), CloseReason::Shutdown);
    }
    let drain = async {
        while !links.is_empty() {
            match cmds.recv().await {
                Some(Command::LinkClosed { link, reason }) => {
                    if let Some(conn) = links.remove(&link) {
                        report_close(&ctx, &conn, &reason);
                    }
                }
                Some(Command::Handshaken { link, conn, .. }) => {
                    request_close(conn.shared(), CloseReason::Shutdown);
                    links.insert(link, conn);
                }
                Some(Command::Close { done }) => {
                    let _ = done.send(());
                }
                Some(_) => {}
                None => break,
            }
        }
    };
    let (_, drained) = tokio::join!(discovery.stop(), tokio::time::timeout(CLOSE_TIMEOUT, drain));
    if drained.is_err() {
        tracing::warn!(
            "{} links still flushing after {CLOSE_TIMEOUT:?}; they finish on their own",
            links.len()
        );
    }
    if let Some(done) = done {
        let _ = done.send(());
    }
}

fn apply(ctx: &Arc<Ctx>, links: &HashMap<LinkId, Connection>, action: Action) {
    match action {
        Action::Dial { peer, addrs } => {
            tracing::debug!(%peer, ?addrs, "dialing");
            tokio::spawn(dial(ctx.clone(), peer, addrs));
        }
        Action::SendVerdict { link, verdict } => {
            if let Some(conn) = links.get(&link) {
                // The queue is empty: nothing can be sent before a verdict.
                let _ = conn.sender_queue().try_send(verdict_frame(verdict));
                if verdict == Verdict::Reject {
                    request_close(conn.shared(), CloseReason::Duplicate);
                }
            }
        }
        Action::Open { link } => {
            if let Some(conn) = links.get(&link) {
                tracing::info!(peer = %conn.peer_id(), remote = %conn.remote_addr(), "connected");
                ctx.hub.opened(link, conn.clone());
            }
        }
        Action::Close { link, reason } => {
            ctx.hub.unlist(link);
            if let Some(conn) = links.get(&link) {
                request_close(conn.shared(), reason);
            }
        }
    }
}

/// Logs a closed link, and reports it as an error event when the peer broke it.
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
        CloseReason::Io(reason) => ctx.error(Error::Link {
            peer,
            remote,
            reason: reason.clone(),
        }),
        CloseReason::Duplicate => tracing::debug!(%peer, %remote, "duplicate link closed"),
        _ => tracing::info!(%peer, %remote, %reason, "link closed"),
    }
}
