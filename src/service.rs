//! The public [`Service`] handle: settings checked, `listen`, `close`, the
//! list of links and the event streams. The running node behind it (the
//! actor and its tasks) is in [`crate::actor`].

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::actor::{self, Command, Ctx};
use crate::connection::Connection;
use crate::discovery::{Discovery, Scope};
use crate::error::{Error, Result};
use crate::events::{lock, Events, Hub};
use crate::hello::{Hello, PROTOCOL_VERSION};
use crate::id::NodeId;
use crate::messaging::{Messages, Messaging, RelayFilter, Requests};
use crate::settings::{valid_cluster_name, Settings};

/// Where a listening node can be reached.
///
/// ```no_run
/// # async fn demo() -> tcpnet::Result<()> {
/// let service = tcpnet::tcpnet("my-cluster")?;
/// let address = service.listen(0, "0.0.0.0").await?;
/// for ip in &address.addrs {
///     println!("reachable at {ip}:{}", address.port);
/// }
/// # Ok(()) }
/// ```
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
    /// Static peers added before `listen`.
    added: Mutex<Vec<String>>,
    messaging: Arc<Messaging>,
}

enum Phase {
    Idle,
    Listening(Running),
    Closed,
}

struct Running {
    address: Address,
    ctx: Arc<Ctx>,
    actor: tokio::task::JoinHandle<()>,
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
        if settings.queue_bytes == 0 {
            return Err(Error::InvalidSetting {
                setting: "queue_bytes",
                reason: "must be at least 1".into(),
            });
        }
        if settings.handshake_timeout.is_zero() {
            return Err(Error::InvalidSetting {
                setting: "handshake_timeout",
                reason: "must be more than zero".into(),
            });
        }
        if settings.heartbeat_interval < MIN_HEARTBEAT {
            return Err(Error::InvalidSetting {
                setting: "heartbeat",
                reason: format!(
                    "interval {:?} is under the minimum of {MIN_HEARTBEAT:?}",
                    settings.heartbeat_interval
                ),
            });
        }
        if settings.heartbeat_timeout <= settings.heartbeat_interval {
            return Err(Error::InvalidSetting {
                setting: "heartbeat",
                reason: format!(
                    "timeout {:?} must be more than the interval {:?}",
                    settings.heartbeat_timeout, settings.heartbeat_interval
                ),
            });
        }
        if let Some(secret) = &settings.secret {
            if secret.is_empty() || secret.len() > 1024 {
                return Err(Error::InvalidSetting {
                    setting: "secret",
                    reason: format!("{} bytes; must be 1 to 1024", secret.len()),
                });
            }
        }
        for peer in &settings.peers {
            check_peer_syntax(peer)?;
        }
        let incarnation = incarnation();
        let hub = Arc::new(Hub::new());
        let messaging = Arc::new(Messaging::new(
            id.clone(),
            incarnation,
            hub.clone(),
            settings.queue_len,
            settings.max_frame_len,
        ));
        Ok(Service {
            inner: Arc::new(Inner {
                name: settings.name.clone(),
                id,
                incarnation,
                settings,
                hub,
                messaging,
                phase: Mutex::new(Phase::Idle),
                gate: tokio::sync::Mutex::new(()),
                finished: tokio::sync::watch::channel(false).0,
                added: Mutex::new(Vec::new()),
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

        let hello = Hello {
            version: PROTOCOL_VERSION,
            incarnation: inner.incarnation,
            port: bound_port,
            secret: inner.settings.secret.is_some(),
            // Said only with a secret, where it matters: a node without
            // one sends the hello of earlier versions.
            aes: inner.settings.secret.is_some() && crate::secure::Suite::aes_hardware(),
            id: inner.id.clone(),
            cluster: inner.name.clone(),
        };
        // A node bound to specific addresses dials from them too, so it
        // stays on its interfaces.
        let dial_from = match &scope {
            Scope::Addrs(ips) => ips.clone(),
            _ => Vec::new(),
        };
        let (ctx, inbox) = Ctx::new(
            hello,
            &inner.settings,
            dial_from,
            inner.hub.clone(),
            inner.messaging.clone(),
            cancel,
        );
        // Accept before announcing: a peer may dial the instant it sees us.
        for (_, listener) in listeners {
            actor::spawn_accept(ctx.clone(), listener);
        }
        // Static peers are resolved before anything starts, so a bad one
        // fails `listen` instead of vanishing.
        let mut statics = Vec::new();
        let added = lock(&inner.added).clone();
        for peer in inner.settings.peers.iter().chain(added.iter()) {
            statics.push(resolve_peer(peer).await?);
        }
        let discovery = if inner.settings.mdns {
            Some(Discovery::start(&inner.id, &inner.name, bound_port, &scope).await?)
        } else {
            None
        };
        for addr in statics {
            ctx.send(Command::AddPeer { addr });
        }
        Ok(Running {
            address: Address {
                port: bound_port,
                addrs: scope.addresses(),
            },
            actor: actor::spawn(ctx.clone(), inbox, discovery),
            ctx,
        })
    }

    /// Adds a static peer, `host:port` or `ip:port`, as
    /// [`Settings::peer`] does: it is dialed now (or at `listen`, if the
    /// service is not listening yet) and redialed whenever its link breaks.
    ///
    /// Errors: [`Error::InvalidAddress`] (bad syntax, or a host name that
    /// does not resolve), [`Error::Closed`].
    ///
    /// ```no_run
    /// # async fn demo(service: tcpnet::Service) -> tcpnet::Result<()> {
    /// service.add_peer("10.99.0.7:4000").await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_peer(&self, peer: &str) -> Result<()> {
        check_peer_syntax(peer)?;
        // Not while `listen` runs: it reads the peers added before it.
        let _gate = self.inner.gate.lock().await;
        let ctx = match &*lock(&self.inner.phase) {
            Phase::Idle => {
                lock(&self.inner.added).push(peer.to_string());
                return Ok(());
            }
            Phase::Listening(r) => r.ctx.clone(),
            Phase::Closed => return Err(Error::Closed),
        };
        let addr = resolve_peer(peer).await?;
        if ctx.send(Command::AddPeer { addr }) {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    // ----- messaging ---------------------------------------------------------

    /// A stream of the direct messages ([`send_to`](Self::send_to)) and
    /// broadcasts ([`broadcast`](Self::broadcast)) this node receives. Each
    /// such stream gets every one, from its creation on.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn demo(service: tcpnet::Service) -> tcpnet::Result<()> {
    /// let mut inbox = service.messages();
    /// service.broadcast("hello, everyone").await?;
    /// while let Some(msg) = inbox.next().await {
    ///     println!("{}: {:?}", msg.from(), msg.data());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn messages(&self) -> Messages {
        self.inner.messaging.messages()
    }

    /// Sends `data` to the [`messages`](Self::messages) streams of `peer`, a
    /// node this one is linked to. Waits while the link's send queue is full.
    ///
    /// Errors: [`Error::NotLinked`], [`Error::FrameTooLarge`], [`Error::Closed`].
    pub async fn send_to(&self, peer: &NodeId, data: impl Into<Bytes>) -> Result<()> {
        self.inner.messaging.send_to(peer, data.into()).await
    }

    /// Sends `data` to the [`messages`](Self::messages) streams of every
    /// other node. Returns the number of links it went out on.
    pub async fn broadcast(&self, data: impl Into<Bytes>) -> Result<usize> {
        self.inner.messaging.broadcast(data.into()).await
    }

    /// Sends the named event to every other node: it reaches their
    /// [`receiver`](Self::receiver)s for `event`, and no other stream.
    /// Returns the number of links it went out on.
    pub async fn emit(&self, event: &str, data: impl Into<Bytes>) -> Result<usize> {
        self.inner.messaging.emit(event, data.into()).await
    }

    /// Sends the named event to one linked node.
    ///
    /// Errors: [`Error::NotLinked`], [`Error::BadName`], [`Error::FrameTooLarge`].
    pub async fn emit_to(&self, peer: &NodeId, event: &str, data: impl Into<Bytes>) -> Result<()> {
        self.inner.messaging.emit_to(peer, event, data.into()).await
    }

    /// A stream of the events named `event` that this node receives.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn demo(service: tcpnet::Service) -> tcpnet::Result<()> {
    /// let mut joins = service.receiver("user-joined")?;
    /// service.emit("user-joined", "alice").await?;
    /// while let Some(ev) = joins.next().await {
    ///     println!("{} says {:?} joined", ev.from(), ev.data());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn receiver(&self, event: &str) -> Result<Messages> {
        self.inner.messaging.receiver(event)
    }

    /// Subscribes to `topic`: the stream gets every message published to it
    /// anywhere in the cluster, this node's own included. Dropping the stream
    /// unsubscribes. Nodes tell each other which topics they have
    /// subscribers for, so a publisher sends only to nodes that want it.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn demo(service: tcpnet::Service) -> tcpnet::Result<()> {
    /// let mut news = service.subscribe("news")?;
    /// service.publish("news", "tcpnet 0.1 is out").await?;
    /// let first = news.next().await.unwrap();
    /// assert_eq!(first.from(), service.id());
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, topic: &str) -> Result<Messages> {
        self.inner.messaging.subscribe(topic)
    }

    /// Publishes `data` to `topic`: delivered to this node's subscribers and
    /// sent to the nodes with a subscriber (straight to each when all are
    /// linked to this one; else to every peer, to be relayed). Returns how
    /// many nodes it went out to, this one included.
    pub async fn publish(&self, topic: &str, data: impl Into<Bytes>) -> Result<usize> {
        self.inner.messaging.publish(topic, data.into()).await
    }

    /// The nodes that have a subscriber to `topic`, this one included,
    /// sorted by id, as far as this node knows (each node tells its peers on
    /// every change and on every new link).
    pub fn topic_members(&self, topic: &str) -> Vec<NodeId> {
        self.inner.messaging.topic_members(topic)
    }

    /// Sets the filter that decides, where this node relays, whether a
    /// broadcast, event or topic message is passed on: return `false` to
    /// stop it here (this node's own streams still get it). A node relays
    /// only where the mesh is not full (see the README on relaying). The
    /// filter runs in the link's task for every message to relay, so it must
    /// be quick and must not block. `None` removes it.
    ///
    /// ```
    /// # let service = tcpnet::tcpnet("c")?;
    /// service.relay_filter(Some(std::sync::Arc::new(|m: &tcpnet::Message| {
    ///     m.name() != "local-only"
    /// })));
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn relay_filter(&self, filter: Option<Arc<RelayFilter>>) {
        self.inner.messaging.set_filter(filter);
    }

    /// A stream of calls to the procedure `name` on this node. Several
    /// streams for one name share the calls, round robin.
    pub fn procedure(&self, name: &str) -> Result<Requests> {
        self.inner.messaging.procedure(name)
    }

    /// Calls `procedure` on `peer` with `data` and waits for the answer, at
    /// most `timeout`.
    ///
    /// Errors, each its own: [`Error::Remote`] (the handler's named error),
    /// [`Error::NoProcedure`], [`Error::Unanswered`] (the handler dropped
    /// the request), [`Error::Busy`], [`Error::Timeout`],
    /// [`Error::Interrupted`] (the link closed mid-call), [`Error::NotLinked`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo(service: tcpnet::Service, peer: tcpnet::NodeId) {
    /// match service.request(&peer, "upper", "hi", Duration::from_secs(1)).await {
    ///     Ok(answer) => println!("{answer:?}"),
    ///     Err(tcpnet::Error::Remote { name, message, .. }) => eprintln!("{name}: {message}"),
    ///     Err(e) => eprintln!("{e}"),
    /// }
    /// # }
    /// ```
    pub async fn request(
        &self,
        peer: &NodeId,
        procedure: &str,
        data: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes> {
        self.inner
            .messaging
            .request(peer, procedure, data.into(), timeout)
            .await
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

    /// The peers this node currently sees advertised over mDNS, linked or
    /// not, sorted by id. A peer leaves the list on its mDNS goodbye, when its
    /// record expires, or when a verification finds no one answering for it
    /// (a dial refused by its port triggers one).
    pub fn advertised(&self) -> Vec<NodeId> {
        self.inner.hub.advertised()
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
                        running.ctx.send(Command::Close);
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
            running.ctx.send(Command::Close);
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

/// Shortest heartbeat interval accepted.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// The start time in nanoseconds since the Unix epoch: a node that restarts
/// gets a larger one than it had (see [`crate::hello`]).
fn incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// A static peer must be `host:port` or `ip:port` with a port that is not 0.
fn check_peer_syntax(peer: &str) -> Result<()> {
    let bad = |reason: &str| Error::InvalidAddress {
        addr: peer.to_string(),
        reason: format!("a static peer must be host:port or ip:port ({reason})"),
    };
    if let Ok(sa) = peer.parse::<SocketAddr>() {
        return if sa.port() == 0 {
            Err(bad("port 0"))
        } else {
            Ok(())
        };
    }
    let (host, port) = peer.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(bad("bad port")),
        Ok(_) => {}
    }
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad("bad host name"));
    }
    Ok(())
}

/// Resolves a static peer to the address to dial (IPv4 first).
async fn resolve_peer(peer: &str) -> Result<SocketAddr> {
    check_peer_syntax(peer)?;
    if let Ok(sa) = peer.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host(peer)
        .await
        .map_err(|e| Error::InvalidAddress {
            addr: peer.to_string(),
            reason: format!("cannot resolve: {e}"),
        })?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| Error::InvalidAddress {
            addr: peer.to_string(),
            reason: "resolves to no address".into(),
        })
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
