//! The public [`Service`] handle: settings checked, `listen`, `close`, the
//! list of links, the event streams, and messaging. The running node behind
//! it (the actor and its tasks) is in [`crate::node::actor`].

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::{CloseReason, Error, Result};
use crate::id::NodeId;
use crate::identity::Identity;
use crate::link::connection::{request_close, Connection};
use crate::link::open::LinkEvent;
use crate::messaging::rpc::Requests;
use crate::messaging::streams::{Bounds, Message, Messages};
use crate::messaging::Messaging;
use crate::meta::Meta;
use crate::node::address::{check_peer_syntax, resolve, resolve_peer, Address};
use crate::node::discovery::{Discovery, Scope};
use crate::node::events::{Events, Hub};
use crate::node::members::member::{Member, MemberEvent, MemberState};
use crate::node::members::Members;
use crate::node::ready::{self, Ready, DISCOVERY_WINDOW};
use crate::node::running::{link_config, Command, Node};
use crate::node::settings::{check_secret, Settings};
use crate::node::tasks;
use crate::sync::lock;
use crate::wire::hello::{Hello, PROTOCOL_VERSION};
use crate::wire::secure::{Keyring, Psk, Suite};

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
    state: Arc<ServiceState>,
}

/// What the clones of one `Service` share.
struct ServiceState {
    name: String,
    id: NodeId,
    identity: Identity,
    incarnation: u64,
    settings: Settings,
    hub: Arc<Hub>,
    phase: Mutex<Phase>,
    /// Held by `listen` for its whole run, and by `close` while it changes
    /// the phase: a `close` during `listen` waits for it.
    transition: tokio::sync::Mutex<()>,
    /// Set once `close` has finished.
    finished: tokio::sync::watch::Sender<bool>,
    /// Static peers added before `listen`.
    added: Mutex<Vec<String>>,
    /// Peers disconnected before `listen`.
    disconnected: Mutex<HashSet<NodeId>>,
    messaging: Arc<Messaging>,
    members: Arc<Members>,
    /// The cluster keys, with a secret.
    keys: Option<Arc<Mutex<Keyring>>>,
}

enum Phase {
    Idle,
    Listening(Running),
    Closed,
}

struct Running {
    address: Address,
    /// When `listen` returned.
    listened: tokio::time::Instant,
    node: Arc<Node>,
    actor: tokio::task::JoinHandle<()>,
}

/// A keyring operation refused.
fn key_error(reason: String) -> Error {
    Error::InvalidSetting {
        setting: "key",
        reason,
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
    /// [`Error::InvalidName`], [`Error::InvalidSetting`], [`Error::Key`]
    /// (a key file that cannot be read or made).
    /// Nothing touches the network until [`listen`](Self::listen).
    pub fn new(settings: impl Into<Settings>) -> Result<Service> {
        let settings = settings.into();
        settings.validate()?;
        let identity = match (&settings.identity, &settings.key_file) {
            (Some(identity), _) => identity.clone(),
            (None, Some(path)) => Identity::load_or_create(path)?,
            (None, None) => Identity::generate(),
        };
        let id = identity.id().clone();
        let incarnation = incarnation();
        let hub = Arc::new(Hub::new());
        hub.counters.queued.set_max(settings.max_queued_bytes);
        let members = Members::new(
            id.clone(),
            incarnation,
            settings.checked_meta()?,
            settings.leave_grace,
            hub.clone(),
            settings.mdns,
        );
        let messaging = Messaging::new(
            identity.clone(),
            incarnation,
            Default::default(),
            members.clone(),
            Bounds {
                items: settings.queue_len,
                bytes: settings.queue_bytes,
            },
            settings.max_frame_len,
            hub.counters.clone(),
        );
        let errors = hub.clone();
        messaging.report_errors_to(Arc::new(move |e| errors.report(e)));
        let links = hub.clone();
        messaging.open.observe(Box::new(move |e| {
            links.link.emit(&e);
        }));
        let keys = settings
            .secret
            .as_ref()
            .map(|s| Arc::new(Mutex::new(Keyring::new(Psk::derive(s, &settings.name)))));
        Ok(Service {
            state: Arc::new(ServiceState {
                keys,
                name: settings.name.clone(),
                id,
                identity,
                incarnation,
                settings,
                hub,
                messaging,
                members,
                phase: Mutex::new(Phase::Idle),
                transition: tokio::sync::Mutex::new(()),
                finished: tokio::sync::watch::channel(false).0,
                added: Mutex::new(Vec::new()),
                disconnected: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.state.id
    }

    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Adds a cluster secret to this node's keyring: from now on the node
    /// accepts links that peers dial under it, besides its other keys. It
    /// still dials with its primary key (the [`Settings::secret`] at first)
    /// until [`use_key`](Self::use_key) makes this one the primary.
    ///
    /// Rotating a cluster's secret without downtime takes three steps, each
    /// done on every node before the next starts (as Serf and memberlist
    /// do it): `install_key(new)`, `use_key(new)`, `remove_key(old)`.
    /// A hello names the dialer's key by a short id (4 bytes of HKDF of the
    /// key), so an acceptor picks the key at once without trying any.
    ///
    /// Errors: [`Error::InvalidSetting`] ("key") when the node has no
    /// secret (an open cluster cannot take one while it runs), the secret
    /// is out of bounds (32 to 1024 bytes, as [`Settings::secret`]), or
    /// the keyring holds 16 keys already.
    ///
    /// ```
    /// let s = tcpnet::Service::new(
    ///     tcpnet::Settings::new("c").secret("the old secret, 32 bytes or more..."),
    /// )?;
    /// s.install_key("the new secret, 32 bytes or more...")?;
    /// s.use_key("the new secret, 32 bytes or more...")?;
    /// s.remove_key("the old secret, 32 bytes or more...")?;
    /// assert!(s.remove_key("the new secret, 32 bytes or more...").is_err());
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn install_key(&self, secret: impl AsRef<[u8]>) -> Result<()> {
        let (ring, psk) = self.key(secret.as_ref())?;
        lock(ring).install(psk).map_err(key_error)
    }

    /// Makes an installed secret (see [`install_key`](Self::install_key))
    /// the primary key: the one this node's dials use from now on. Links
    /// already open stay as they are. Errors: [`Error::InvalidSetting`]
    /// ("key") for a node without a secret or a secret not installed.
    pub fn use_key(&self, secret: impl AsRef<[u8]>) -> Result<()> {
        let (ring, psk) = self.key(secret.as_ref())?;
        lock(ring).use_key(psk.id()).map_err(key_error)
    }

    /// Removes a secret from the keyring: links are no longer accepted
    /// under it, and every open link made under it is closed gracefully
    /// (what was queued on it is sent first) with
    /// [`CloseReason::KeyRemoved`], and redialed at once under the primary
    /// key. A handshake under way with it fails (reported as
    /// [`Error::Handshake`], counted in
    /// [`HandshakeFailures::secret`](crate::HandshakeFailures::secret)),
    /// and a link handshaken with it but not yet open is closed unannounced:
    /// no link opens under a removed key. Errors: [`Error::InvalidSetting`] ("key") for a node without a
    /// secret, a secret not installed, or the primary key (make another one
    /// primary first).
    pub fn remove_key(&self, secret: impl AsRef<[u8]>) -> Result<()> {
        let (ring, psk) = self.key(secret.as_ref())?;
        let id = psk.id();
        lock(ring).remove(id).map_err(key_error)?;
        for conn in self.connections() {
            if conn.link().key == Some(id) {
                request_close(conn.link(), CloseReason::KeyRemoved);
            }
        }
        Ok(())
    }

    /// The keyring and the key of `secret`, checked.
    fn key(&self, secret: &[u8]) -> Result<(&Mutex<Keyring>, Psk)> {
        let Some(ring) = &self.state.keys else {
            return Err(key_error(
                "this node has no cluster secret: keys are for clusters with one".into(),
            ));
        };
        check_secret(secret)?;
        Ok((ring, Psk::derive(secret, &self.state.name)))
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
    /// Peers may send to this node from the moment it listens: make its
    /// streams ([`messages`](Self::messages), [`receiver`](Self::receiver),
    /// [`procedure`](Self::procedure), [`on_member`](Self::on_member), ...)
    /// before, to miss nothing. One made a little later still gets what
    /// came for it: see [`procedure`](Self::procedure).
    ///
    /// Errors: [`Error::InvalidAddress`], [`Error::Bind`], [`Error::Mdns`],
    /// [`Error::AlreadyListening`], [`Error::Closed`].
    pub async fn listen(&self, port: u16, addr: &str) -> Result<Address> {
        // One `listen` or `close` at a time: a `close` that comes while the
        // node is starting waits for it, then stops it.
        let _transition = self.state.transition.lock().await;
        match *lock(&self.state.phase) {
            Phase::Idle => {}
            Phase::Listening(_) => return Err(Error::AlreadyListening),
            Phase::Closed => return Err(Error::Closed),
        }
        // From the first link on, what comes for a stream not made yet is
        // held for a while (see `procedure`).
        self.state
            .messaging
            .hold_early(self.state.settings.hold_early);
        // If this future is dropped half-way, the guard stops whatever
        // started (accept loops; the mDNS daemon stops when dropped).
        let cancel = CancellationToken::new();
        let guard = cancel.clone().drop_guard();
        let running = self.start(port, addr, cancel).await?;
        guard.disarm();
        let address = running.address.clone();
        let addrs = address
            .addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, address.port));
        self.state.members.set_addrs(addrs.collect());
        let mut phase = lock(&self.state.phase);
        // This node's record, signed, on the links open already and every
        // link after (its peers pass it on where the mesh is not full);
        // under the phase's lock, so a change of metadata now comes after.
        self.state
            .messaging
            .tell_record(&self.state.members.record(address.port));
        *phase = Phase::Listening(running);
        drop(phase);
        tracing::info!(id = %self.state.id, ?address, "listening");
        self.state.hub.listening.emit(&address);
        Ok(address)
    }

    async fn start(&self, port: u16, addr: &str, cancel: CancellationToken) -> Result<Running> {
        let state = &self.state;
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
            incarnation: state.incarnation,
            port: bound_port,
            // Set by each handshake (the primary key then).
            key: None,
            // Said only with a secret, where it matters: a node without
            // one sends the hello of earlier versions.
            aes: state.settings.secret.is_some() && Suite::aes_hardware(),
            id: state.id.clone(),
            cluster: state.name.clone(),
            // Each handshake sends the metadata as it is then.
            meta_version: 0,
            meta: Bytes::new(),
        };
        // A node bound to specific addresses dials from them too, so it
        // stays on its interfaces.
        let dial_from = match &scope {
            Scope::Addrs(ips) => ips.clone(),
            _ => Vec::new(),
        };
        let (node, inbox) = Node::new(
            link_config(hello, &state.identity, &state.settings, state.keys.clone()),
            dial_from,
            state.hub.clone(),
            state.messaging.clone(),
            state.members.clone(),
            crate::node::caps::Caps::new(
                state.settings.max_links,
                state.settings.max_links_per_prefix,
            ),
            cancel,
        );
        #[cfg(feature = "metrics")]
        tokio::spawn(crate::node::export::run(node.clone()));
        // A node that discovers dials the members its peers tell it of; one
        // with mDNS off links only where the application says.
        if state.settings.mdns {
            let hints_to = Arc::downgrade(&node);
            state.messaging.hints_to(Arc::new(move |hints| {
                if let Some(node) = hints_to.upgrade() {
                    node.hinted(hints);
                }
            }));
        }
        // Accept before announcing: a peer may dial the instant it sees us.
        for (_, listener) in listeners {
            tasks::spawn_accept(node.clone(), listener);
        }
        // Static peers are resolved before anything starts, so a bad one
        // fails `listen` instead of vanishing.
        let mut statics = Vec::new();
        let added = lock(&state.added).clone();
        for peer in state.settings.peers.iter().chain(added.iter()) {
            statics.push(resolve_peer(peer).await?);
        }
        let discovery = if state.settings.mdns {
            let meta = state.members.meta();
            Some(Discovery::start(&state.identity, &state.name, bound_port, &scope, &meta).await?)
        } else {
            None
        };
        for peer in lock(&state.disconnected).drain() {
            node.send(Command::Disconnect { peer });
        }
        for addr in statics {
            node.send(Command::AddPeer { addr });
        }
        let address = Address {
            port: bound_port,
            addrs: scope.addresses(),
        };
        let listen_at = address
            .addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, bound_port))
            .collect();
        Ok(Running {
            listened: tokio::time::Instant::now(),
            address,
            actor: tasks::spawn(
                node.clone(),
                inbox,
                discovery,
                state.settings.dial,
                listen_at,
            ),
            node,
        })
    }

    /// Waits until discovery has settled, and says what it found: the
    /// peers linked, those that started before this node, and how many were
    /// found but not reached.
    ///
    /// It waits 1 s after [`listen`](Self::listen) returned (with mDNS
    /// off, not at all): time for the answers to this node's first mDNS
    /// query, and for the peers that saw its announcement to dial it (of a
    /// pair that finds each other, the end that does not decide the pair
    /// waits up to 750 ms for the decider's dial before it dials). Then it
    /// waits until every peer found by then (advertised, static, or one
    /// whose link awaits its verdict) is linked or has failed a dial. So
    /// when it returns, every node that found this node or was found by it
    /// in that time, and could be reached, is linked: its link in
    /// [`connections`](Self::connections) and [`on_link`](Self::on_link),
    /// its `Joined` on [`on_member`](Self::on_member), its metadata known.
    /// A node found later links later, as always. The wait is bounded: 1 s
    /// plus twice the handshake timeout after `listen` (7 s by default),
    /// after which it returns with [`timed_out`](Ready::timed_out) set.
    /// Both times count only while the node is scheduled, as its
    /// handshakes' timeouts do, so on a starved machine they last longer
    /// on the clock, as the dials they wait for do.
    /// Called before `listen`, it waits for it; on a closed service it
    /// fails with [`Error::Closed`].
    ///
    /// Nodes that start together each find the others linked: to tell who
    /// joined late (and should catch up from whom), look at
    /// [`older`](Ready::older), the linked peers that started first. Exactly
    /// one of a set of nodes that started together has none.
    ///
    /// ```no_run
    /// # async fn demo() -> tcpnet::Result<()> {
    /// let service = tcpnet::tcpnet("my-cluster")?;
    /// service.listen(0, "0.0.0.0").await?;
    /// let ready = service.ready().await?;
    /// match ready.older.first() {
    ///     Some(peer) => println!("joined late: catch up from {peer}"),
    ///     None => println!("first of {} nodes", ready.linked.len() + 1),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn ready(&self) -> Result<Ready> {
        let mut listening = self.on_listening();
        loop {
            let running = match &*lock(&self.state.phase) {
                Phase::Listening(r) => Some((r.node.clone(), r.listened)),
                Phase::Idle => None,
                Phase::Closed => return Err(Error::Closed),
            };
            if let Some((node, listened)) = running {
                let settings = &self.state.settings;
                let window = if settings.mdns {
                    DISCOVERY_WINDOW
                } else {
                    Duration::ZERO
                };
                let bound = window + 2 * settings.handshake_timeout;
                let incarnation = self.state.incarnation;
                return ready::settled(&node, incarnation, listened, window, bound).await;
            }
            tokio::select! {
                _ = listening.next() => {}
                _ = self.closed() => return Err(Error::Closed),
            }
        }
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
        let _transition = self.state.transition.lock().await;
        let node = match &*lock(&self.state.phase) {
            Phase::Idle => {
                lock(&self.state.added).push(peer.to_string());
                return Ok(());
            }
            Phase::Listening(r) => r.node.clone(),
            Phase::Closed => return Err(Error::Closed),
        };
        let addr = resolve_peer(peer).await?;
        if node.send(Command::AddPeer { addr }) {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// Ends the link with `peer` for good: closes it as
    /// [`Connection::close`] does (what was sent is flushed first), and
    /// links with `peer` no more: this node stops dialing it and refuses the
    /// links it opens, until [`reconnect`](Self::reconnect). Before
    /// `listen`, it takes effect when the node starts.
    ///
    /// A link takes two: while `peer` runs and sees this node, it goes on
    /// dialing it, backing off up to a few seconds between tries. If this
    /// node has the smaller id (it decides the pair's link), it refuses each
    /// try before either end opens it. If `peer` has the smaller id, `peer`
    /// opens each link at once and sees it closed just after. To part two
    /// nodes quietly, disconnect them on both ends.
    ///
    /// Errors: [`Error::Closed`].
    ///
    /// ```no_run
    /// # async fn demo(service: tcpnet::Service, peer: tcpnet::NodeId) -> tcpnet::Result<()> {
    /// service.disconnect(&peer).await?;
    /// // ... and later, to link with it again:
    /// service.reconnect(&peer).await?;
    /// # Ok(()) }
    /// ```
    pub async fn disconnect(&self, peer: &NodeId) -> Result<()> {
        self.tell(peer, true).await
    }

    /// Links with `peer` again after [`disconnect`](Self::disconnect): it is
    /// dialed at once if it is known (advertised, or a static peer).
    ///
    /// Errors: [`Error::Closed`].
    pub async fn reconnect(&self, peer: &NodeId) -> Result<()> {
        self.tell(peer, false).await
    }

    /// Disconnects (`end`) or reconnects `peer`.
    async fn tell(&self, peer: &NodeId, end: bool) -> Result<()> {
        // Not while `listen` runs: it reads the peers disconnected before it.
        let _transition = self.state.transition.lock().await;
        let node = match &*lock(&self.state.phase) {
            Phase::Idle => {
                let mut disconnected = lock(&self.state.disconnected);
                if end {
                    disconnected.insert(peer.clone());
                } else {
                    disconnected.remove(peer);
                }
                return Ok(());
            }
            Phase::Listening(r) => r.node.clone(),
            Phase::Closed => return Err(Error::Closed),
        };
        let peer = peer.clone();
        let cmd = if end {
            Command::Disconnect { peer }
        } else {
            Command::Reconnect { peer }
        };
        if node.send(cmd) {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    // ----- membership ---------------------------------------------------------

    /// This node's metadata (see [`Settings::meta`]).
    pub fn meta(&self) -> Meta {
        self.state.members.meta()
    }

    /// Sets a pair of this node's metadata, at once: the node re-announces
    /// itself over mDNS and tells every linked peer, which passes it on
    /// where the mesh is not full. Setting a value it already has does
    /// nothing.
    ///
    /// Errors: [`Error::InvalidMeta`] (the pair, or the metadata with it,
    /// breaks a bound; nothing changes), [`Error::Closed`].
    ///
    /// ```
    /// # let service = tcpnet::tcpnet("lab")?;
    /// service.set_meta("http", "10.99.0.2:8080")?;
    /// assert_eq!(service.meta().get("http"), Some("10.99.0.2:8080"));
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.change_meta(|m| m.set(key, value))
    }

    /// Removes a pair of this node's metadata, telling the cluster as
    /// [`set_meta`](Self::set_meta) does. Removing a key that is not set
    /// does nothing.
    ///
    /// Errors: [`Error::Closed`].
    pub fn remove_meta(&self, key: &str) -> Result<()> {
        self.change_meta(|m| Ok(m.remove(key)))
    }

    fn change_meta(
        &self,
        edit: impl FnOnce(&mut Meta) -> std::result::Result<bool, crate::error::MetaError>,
    ) -> Result<()> {
        let phase = lock(&self.state.phase);
        let node = match &*phase {
            Phase::Closed => return Err(Error::Closed),
            Phase::Idle => None,
            Phase::Listening(r) => Some(r.node.clone()),
        };
        let port = node.as_ref().map_or(0, |n| n.links.config.hello.port);
        // Under the phase's lock: a `listen` or `close` sees the metadata
        // before or after the change, never half of it.
        let Some(record) = self.state.members.set_meta(edit, port)? else {
            return Ok(());
        };
        if let Some(node) = node {
            node.messaging.tell_record(&record);
            node.send(Command::Announce {
                meta: record.meta.unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Every member of the cluster this node knows: itself first, then the
    /// others by id, linked, suspect, relayed, or left a moment ago (with
    /// the reason).
    ///
    /// ```
    /// # let service = tcpnet::tcpnet("lab")?;
    /// let members = service.members();
    /// assert_eq!(&members[0].id, service.id());
    /// assert!(members[0].is_local());
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn members(&self) -> Vec<Member> {
        self.state.members.snapshot()
    }

    /// The member `id`, this node included, if this node knows it.
    pub fn member(&self, id: &NodeId) -> Option<Member> {
        self.state.members.get(id)
    }

    /// The members whose metadata has `key` set to `value`, this node
    /// included, that have not left.
    ///
    /// ```no_run
    /// # fn demo(service: tcpnet::Service) {
    /// for gw in service.members_with("role", "gateway") {
    ///     println!("gateway {} at {:?}", gw.id, gw.meta.get("http"));
    /// }
    /// # }
    /// ```
    pub fn members_with(&self, key: &str, value: &str) -> Vec<Member> {
        self.members()
            .into_iter()
            .filter(|m| !matches!(m.state, MemberState::Left(_)))
            .filter(|m| m.meta.get(key) == Some(value))
            .collect()
    }

    /// The members, then every change: a stream that starts with a
    /// [`Joined`](crate::MemberChange::Joined) for each member present now
    /// (this node first, then by id; those that left are not present), all
    /// numbered with the `seq` of the last change they include, then
    /// carries every change (joined, updated, suspect, alive, left,
    /// relinked, rejoined: see [`MemberChange`](crate::MemberChange)), each numbered
    /// one above the one before, with no gap and no repeat between the
    /// state and the changes. Each event carries the member as it is after
    /// the change. A peer whose link is lost (a timeout, a lost link) is
    /// held for the leave grace ([`Settings::leave_grace`], 2 s by default)
    /// before it is `Left`, so every such `Left` comes that much later; a
    /// link to the same run of it within the grace is one
    /// [`Relinked`](crate::MemberChange::Relinked) event, and one after its
    /// `Left` is [`Rejoined`](crate::MemberChange::Rejoined). Either way it
    /// missed what was sent meanwhile, so resync with it (see
    /// [`MemberChange::needs_resync`](crate::MemberChange::needs_resync)).
    /// [`watch_members`](Self::watch_members) gives the state as a list
    /// instead. A stream that falls
    /// [`MAX_QUEUED_MEMBER_EVENTS`](crate::limits::MAX_QUEUED_MEMBER_EVENTS)
    /// changes behind ends after those it holds (see
    /// [`Events::fell_behind`]): watch again.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn demo(service: tcpnet::Service) {
    /// let mut events = service.on_member();
    /// while let Some(ev) = events.next().await {
    ///     println!("#{} {} {}: {}", ev.seq, ev.member.id, ev.change, ev.member.meta);
    /// }
    /// # }
    /// ```
    pub fn on_member(&self) -> Events<MemberEvent> {
        self.state.members.subscribe()
    }

    /// The members and a stream of the changes after them, taken together:
    /// applying the events, in order, to the snapshot gives the view as it
    /// is then, without a change missed or repeated (the first event's
    /// `seq` follows the snapshot's last change). The stream ends, as
    /// [`on_member`](Self::on_member)'s does, if it falls too far behind
    /// ([`Events::fell_behind`]): watch again.
    pub fn watch_members(&self) -> (Vec<Member>, Events<MemberEvent>) {
        self.state.members.watch()
    }

    /// Measures one round trip to a linked peer, now: a ping frame that
    /// the peer's link answers at once. The ping waits behind what is
    /// queued on the link, as a message would, so on a busy link it
    /// measures that queue too. Each answer also feeds the link's smoothed
    /// RTT ([`LinkInfo::srtt`](crate::LinkInfo::srtt)).
    ///
    /// Errors: [`Error::NotLinked`] (no open link to `peer`, or it closed
    /// before the answer), [`Error::PingTimeout`] (no answer within the
    /// heartbeat timeout), [`Error::Closed`].
    ///
    /// ```no_run
    /// # async fn demo(service: tcpnet::Service, peer: tcpnet::NodeId) -> tcpnet::Result<()> {
    /// let rtt = service.ping(&peer).await?;
    /// println!("{peer}: {:.3} ms", rtt.as_secs_f64() * 1e3);
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self, peer: &NodeId) -> Result<Duration> {
        if matches!(*lock(&self.state.phase), Phase::Closed) {
            return Err(Error::Closed);
        }
        let conn = self.state.messaging.open.to(peer);
        let conn = conn.ok_or_else(|| Error::NotLinked { peer: peer.clone() })?;
        conn.ping(self.state.settings.heartbeat_timeout).await
    }

    /// What this node has counted since it was created: per open link,
    /// its frames and bytes in and out, its queues, its drops and its
    /// round-trip time; node-wide, dials and redials, failed handshakes by
    /// cause, bad mDNS records, relayed and duplicate messages, and errors
    /// that slow error streams missed. See [`Stats`](crate::Stats).
    ///
    /// ```
    /// # let service = tcpnet::tcpnet("lab")?;
    /// let stats = service.stats();
    /// assert!(stats.links.is_empty());
    /// assert_eq!(stats.dials, 0);
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn stats(&self) -> crate::stats::Stats {
        stats(&self.state.messaging, &self.state.hub)
    }

    // ----- messaging ---------------------------------------------------------

    /// A stream of the direct messages ([`send_to`](Self::send_to)) and
    /// broadcasts ([`broadcast`](Self::broadcast)) this node receives. Each
    /// such stream gets every one, from its creation on: make it before
    /// [`listen`](Self::listen) to miss none. What came while no such
    /// stream existed, in the first 2 s after `listen`, is held for the
    /// first one made (see [`procedure`](Self::procedure)).
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
        self.state.messaging.messages()
    }

    /// Sends `data` to the [`messages`](Self::messages) streams of `peer`, a
    /// node this one is linked to. Waits while the link's send queue is full.
    ///
    /// Errors: [`Error::NotLinked`], [`Error::FrameTooLarge`], [`Error::Closed`].
    pub async fn send_to(&self, peer: &NodeId, data: impl Into<Bytes>) -> Result<()> {
        self.state.messaging.send_to(peer, data.into()).await
    }

    /// Sends `data` to the [`messages`](Self::messages) streams of every
    /// other node. Returns the number of links it went out on.
    pub async fn broadcast(&self, data: impl Into<Bytes>) -> Result<usize> {
        self.state.messaging.broadcast(data.into()).await
    }

    /// Sends the named event to every other node: it reaches their
    /// [`receiver`](Self::receiver)s for `event`, and no other stream.
    /// Returns the number of links it went out on.
    pub async fn emit(&self, event: &str, data: impl Into<Bytes>) -> Result<usize> {
        self.state.messaging.emit(event, data.into()).await
    }

    /// Sends the named event to one linked node.
    ///
    /// Errors: [`Error::NotLinked`], [`Error::BadName`], [`Error::FrameTooLarge`].
    pub async fn emit_to(&self, peer: &NodeId, event: &str, data: impl Into<Bytes>) -> Result<()> {
        self.state.messaging.emit_to(peer, event, data.into()).await
    }

    /// A stream of the events named `event` that this node receives, from
    /// its creation on: make it before [`listen`](Self::listen) to miss
    /// none. Events of that name that came while no receiver for it
    /// existed, in the first 2 s after `listen`, are held for the first one
    /// made (see [`procedure`](Self::procedure)); later ones that find no
    /// receiver are not kept.
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
        self.state.messaging.receiver(event)
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
        self.state.messaging.subscribe(topic)
    }

    /// Publishes `data` to `topic`: delivered to this node's subscribers and
    /// sent to the nodes with a subscriber (straight to each when all are
    /// linked to this one; else to every peer, to be relayed). Returns how
    /// many nodes it went out to, this one included.
    pub async fn publish(&self, topic: &str, data: impl Into<Bytes>) -> Result<usize> {
        self.state.messaging.publish(topic, data.into()).await
    }

    /// The nodes that have a subscriber to `topic`, this one included,
    /// sorted by id, as far as this node knows (each node tells its peers on
    /// every change and on every new link).
    pub fn topic_members(&self, topic: &str) -> Vec<NodeId> {
        self.state.messaging.topic_members(topic)
    }

    /// Sets the filter that decides, where this node relays, whether a
    /// broadcast, event or topic message is passed on: return `false` to
    /// stop it here (this node's own streams still get it). A node relays
    /// only where the mesh is not full (see the README on relaying). The
    /// filter runs in the link's task for every message to relay, so it must
    /// be quick and must not block. It replaces any filter set before;
    /// [`clear_relay_filter`](Self::clear_relay_filter) removes it.
    ///
    /// ```
    /// # let service = tcpnet::tcpnet("c")?;
    /// service.relay_filter(|m: &tcpnet::Message| m.name() != "local-only");
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn relay_filter(&self, filter: impl Fn(&Message) -> bool + Send + Sync + 'static) {
        self.state.messaging.set_filter(Some(Arc::new(filter)));
    }

    /// Removes the relay filter: every message this node relays is passed
    /// on again.
    pub fn clear_relay_filter(&self) {
        self.state.messaging.set_filter(None);
    }

    /// A stream of calls to the procedure `name` on this node. Several
    /// streams for one name share the calls, round robin.
    ///
    /// **Register first.** Peers may call the moment this node listens, so
    /// make the stream before [`listen`](Self::listen) (as every stream of
    /// what this node receives). One made later is harmless while the node
    /// is young: for [`Settings::hold_early`] (2 s by default) after
    /// `listen`, a call that no stream serves waits for the first stream
    /// made for its name, and so do events and messages no stream takes
    /// (up to [`MAX_HELD`](crate::limits::MAX_HELD) items and
    /// [`MAX_HELD_BYTES`](crate::limits::MAX_HELD_BYTES) in all; past that
    /// they are treated as after). After that, a call that comes while no
    /// stream serves the name is answered
    /// [`CallError::NoProcedure`](crate::CallError::NoProcedure) at once
    /// (and one still held then, too), and an event nobody receives is
    /// dropped. The caller's own timeout still bounds its wait.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn demo() -> tcpnet::Result<()> {
    /// let service = tcpnet::tcpnet("my-cluster")?;
    /// let mut calls = service.procedure("upper")?; // before listen
    /// service.listen(0, "0.0.0.0").await?;
    /// while let Some(req) = calls.next().await {
    ///     let answer = String::from_utf8_lossy(req.data()).to_uppercase();
    ///     req.end(answer).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn procedure(&self, name: &str) -> Result<Requests> {
        self.state.messaging.procedure(name)
    }

    /// Calls `procedure` on `peer` with `data` and waits for the answer, at
    /// most `timeout`.
    ///
    /// Errors: [`Error::Call`] when the call went out and got no answer, its
    /// [`CallError`](crate::CallError) saying why: the handler's named error
    /// (`Remote`), `NoProcedure`, `Unanswered` (the handler dropped the
    /// request), `Busy`, `Timeout`, `Interrupted` (the link closed mid-call);
    /// before that, [`Error::NotLinked`], [`Error::BadName`],
    /// [`Error::FrameTooLarge`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo(service: tcpnet::Service, peer: tcpnet::NodeId) {
    /// match service.request(&peer, "upper", "hi", Duration::from_secs(1)).await {
    ///     Ok(answer) => println!("{answer:?}"),
    ///     Err(tcpnet::Error::Call { error: tcpnet::CallError::Remote { name, message }, .. }) => {
    ///         eprintln!("{name}: {message}")
    ///     }
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
        self.state
            .messaging
            .request(peer, procedure, data.into(), timeout)
            .await
    }

    // ----- typed messaging ---------------------------------------------------

    /// The named event `name` carrying `T`s: [`emit`](crate::typed::Event::emit),
    /// [`emit_to`](crate::typed::Event::emit_to) and
    /// [`receiver`](crate::typed::Event::receiver) as for bytes, with the
    /// values encoded in postcard (see [`typed`](crate::typed)). The name is
    /// checked when the handle is used.
    ///
    /// ```no_run
    /// # async fn demo(service: tcpnet::Service) -> tcpnet::Result<()> {
    /// let joins = service.event::<String>("user-joined");
    /// joins.emit(&"alice".to_string()).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "typed")]
    pub fn event<T>(&self, name: &str) -> crate::messaging::typed::Event<T> {
        crate::messaging::typed::Event::new(self.state.messaging.clone(), name)
    }

    /// The topic `name` carrying `T`s: [`publish`](crate::typed::Topic::publish)
    /// and [`subscribe`](crate::typed::Topic::subscribe) as for bytes.
    #[cfg(feature = "typed")]
    pub fn topic<T>(&self, name: &str) -> crate::messaging::typed::Topic<T> {
        crate::messaging::typed::Topic::new(self.state.messaging.clone(), name)
    }

    /// Direct messages and broadcasts carrying `T`s:
    /// [`send_to`](crate::typed::Inbox::send_to),
    /// [`broadcast`](crate::typed::Inbox::broadcast) and
    /// [`messages`](crate::typed::Inbox::messages) as for bytes.
    #[cfg(feature = "typed")]
    pub fn inbox<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
    ) -> crate::messaging::typed::Inbox<T> {
        crate::messaging::typed::Inbox::new(self.state.messaging.clone())
    }

    /// The procedure `name`, taking a `Q` and answering an `A`:
    /// [`call`](crate::typed::Rpc::call) it on a peer,
    /// [`serve`](crate::typed::Rpc::serve) it here.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// use futures::StreamExt;
    /// # async fn demo(service: tcpnet::Service, peer: tcpnet::NodeId) -> tcpnet::Result<()> {
    /// let upper = service.rpc::<String, String>("upper");
    /// let mut calls = upper.serve()?;
    /// tokio::spawn(async move {
    ///     while let Some(Ok(req)) = calls.next().await {
    ///         let answer = req.value().to_uppercase();
    ///         let _ = req.reply(&answer).await;
    ///     }
    /// });
    /// let loud = upper.call(&peer, &"hi".to_string(), Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "typed")]
    pub fn rpc<Q, A>(&self, name: &str) -> crate::messaging::typed::Rpc<Q, A> {
        crate::messaging::typed::Rpc::new(self.state.messaging.clone(), name)
    }

    /// Where the node can be reached: `None` before `listen` and after `close`.
    pub fn address(&self) -> Option<Address> {
        match &*lock(&self.state.phase) {
            Phase::Listening(r) => Some(r.address.clone()),
            _ => None,
        }
    }

    /// Every open link, each once, in the order they opened. A link leaves
    /// the list as soon as it starts closing (or is replaced).
    pub fn connections(&self) -> Vec<Connection> {
        self.state.messaging.open.up()
    }

    /// The peers this node currently sees advertised over mDNS, linked or
    /// not, sorted by id. A peer leaves the list on its mDNS goodbye, when its
    /// record expires, or when a verification finds no one answering for it
    /// (a dial refused by its port triggers one).
    pub fn advertised(&self) -> Vec<NodeId> {
        self.state.hub.advertised()
    }

    /// How many peers [`advertised`](Self::advertised) lists, without
    /// copying the list.
    #[cfg(feature = "bench")]
    pub(crate) fn advertised_len(&self) -> usize {
        self.state.hub.advertised_len()
    }

    /// A stream of links as they open. It fires on both ends of a link,
    /// once the pair has settled on it (see the crate docs on the one-link rule).
    pub fn on_connection(&self) -> Events<Connection> {
        self.state.hub.connection.subscribe()
    }

    /// The open links, then every link that opens or closes: a stream that
    /// starts with [`LinkEvent::Up`] for each link open now (and each link
    /// closing now, which then goes `Down`), then carries every change,
    /// with no gap and no repeat between the two. Every link it shows goes
    /// `Up` once and `Down` once, with why it closed; so nothing needs
    /// merging [`connections`](Self::connections) with
    /// [`on_connection`](Self::on_connection), nor a task per link awaiting
    /// [`Connection::closed`].
    ///
    /// A peer that relinks (a link that timed out, then a new one) goes
    /// `Down` then `Up`: at this level that is what happened. A link that
    /// replaces another (the peer restarted) comes `Up` before the old one
    /// goes `Down` with [`CloseReason::Replaced`](crate::CloseReason::Replaced).
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use tcpnet::LinkEvent;
    /// # async fn demo(service: tcpnet::Service) {
    /// let mut links = service.on_link();
    /// while let Some(event) = links.next().await {
    ///     match event {
    ///         LinkEvent::Up(conn) => println!("linked to {}", conn.peer_id()),
    ///         LinkEvent::Down(conn, why) => println!("{} gone: {why}", conn.peer_id()),
    ///         _ => {}
    ///     }
    /// }
    /// # }
    /// ```
    pub fn on_link(&self) -> Events<LinkEvent> {
        let hub = &self.state.hub;
        self.state.messaging.open.with_list(|list| {
            hub.link
                .subscribe_after(list.iter().cloned().map(LinkEvent::Up).collect())
        })
    }

    /// A stream that yields the address once the service is listening.
    pub fn on_listening(&self) -> Events<Address> {
        self.state.hub.listening.subscribe()
    }

    /// A stream of non-fatal errors: a failed dial or handshake, a bad mDNS
    /// record, a link closed by a protocol error. The service goes on.
    pub fn on_error(&self) -> Events<Error> {
        self.state.hub.error.subscribe()
    }

    /// A stream that yields once `close` has finished. To wait for that in
    /// one place, [`closed`](Self::closed) is simpler.
    pub fn on_close(&self) -> Events<()> {
        self.state.hub.close.subscribe()
    }

    /// Resolves once the service has closed (at once if it already has),
    /// whoever called [`close`](Self::close); it does not close it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> tcpnet::Result<()> {
    /// let service = tcpnet::tcpnet("my-cluster")?;
    /// let watcher = service.clone();
    /// let done = tokio::spawn(async move { watcher.closed().await });
    /// service.close().await;
    /// done.await.unwrap();
    /// # Ok(()) }
    /// ```
    pub async fn closed(&self) {
        let mut finished = self.state.finished.subscribe();
        let _ = finished.wait_for(|done| *done).await;
    }

    /// Stops the node: sends the mDNS goodbye, flushes and closes every link,
    /// stops browsing and listening. Safe to call before `listen`, twice, and
    /// right after `listen`; later `listen` calls fail with [`Error::Closed`].
    pub async fn close(&self) {
        {
            let _transition = self.state.transition.lock().await;
            let previous = std::mem::replace(&mut *lock(&self.state.phase), Phase::Closed);
            match previous {
                // The stopping runs in a task of its own, so that a `close`
                // future dropped half-way still stops the node; every call
                // (this one, a later one) waits below for it to finish.
                Phase::Listening(running) => {
                    let state = self.state.clone();
                    tokio::spawn(async move {
                        running.node.send(Command::Close);
                        let _ = running.actor.await;
                        state.closed();
                    });
                }
                Phase::Idle => self.state.closed(),
                Phase::Closed => {}
            }
        }
        self.closed().await;
    }
}

impl ServiceState {
    /// The last step of `close`: the node has stopped.
    fn closed(&self) {
        self.messaging.open.clear();
        self.members.clear();
        self.hub.set_advertised(Vec::new());
        tracing::info!(id = %self.id, "closed");
        self.hub.close.emit(&());
        self.finished.send_replace(true);
    }
}

/// When the last handle goes, a listening node is closed in the background,
/// as `close` would (goodbye, links flushed and closed).
impl Drop for ServiceState {
    fn drop(&mut self) {
        let phase = std::mem::replace(&mut *lock(&self.phase), Phase::Closed);
        if let Phase::Listening(running) = phase {
            running.node.send(Command::Close);
        }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.state.name)
            .field("id", &self.state.id)
            .finish()
    }
}

/// The start time in nanoseconds since the Unix epoch: a node that restarts
/// gets a larger one than it had (see [`crate::wire::hello`]).
fn incarnation() -> u64 {
    crate::clock::unix_nanos()
}

/// A node's figures: its open links', and its counters.
pub(crate) fn stats(messaging: &Messaging, hub: &Hub) -> crate::stats::Stats {
    let links = messaging.open.up();
    let links = links.iter().map(Connection::stats).collect();
    hub.counters.snapshot(links)
}
