//! What a service is configured with.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::limits::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_LINKS, DEFAULT_MAX_LINKS_PER_PREFIX,
    DEFAULT_MAX_QUEUED_BYTES, DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_LEN, DEFAULT_UNREAD_TIMEOUT,
};
use crate::meta::Meta;
use crate::node::address::check_peer_syntax;
use crate::wire::hello::valid_cluster_name;

/// Shortest heartbeat interval accepted.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// Longest cluster secret accepted, in bytes.
const MAX_SECRET_LEN: usize = 1024;
/// Shortest cluster secret accepted, in bytes: the handshake gives anyone a
/// node dials a message bound to the secret, on which guesses can be tried
/// offline, so only a secret too strong to guess protects the cluster.
pub(crate) const MIN_SECRET_LEN: usize = 32;

/// A service's settings: the cluster name (required) and options.
///
/// A plain `&str` or `String` converts into settings with every option at its
/// default, so `tcpnet::tcpnet("my-cluster")` and
/// `tcpnet::tcpnet(Settings::new("my-cluster"))` are the same.
///
/// ```
/// use std::time::Duration;
/// use tcpnet::Settings;
///
/// let identity = tcpnet::Identity::generate();
/// let settings = Settings::new("my-cluster")
///     .identity(identity.clone())
///     .max_frame_len(1 << 20)
///     .handshake_timeout(Duration::from_secs(1));
/// let service = tcpnet::Service::new(settings)?;
/// assert_eq!(service.id(), identity.id());
/// # Ok::<(), tcpnet::Error>(())
/// ```
#[derive(Clone)]
pub struct Settings {
    pub(crate) name: String,
    pub(crate) identity: Option<Identity>,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) max_frame_len: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) queue_len: usize,
    pub(crate) queue_bytes: usize,
    pub(crate) max_queued_bytes: usize,
    pub(crate) max_links: usize,
    pub(crate) max_links_per_prefix: usize,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) unread_timeout: Duration,
    pub(crate) leave_grace: Duration,
    pub(crate) hold_early: Duration,
    pub(crate) secret: Option<Vec<u8>>,
    pub(crate) mdns: bool,
    /// Whether the node dials the peers it discovers (off only through
    /// the hidden `bench::discover_only`).
    pub(crate) dial: bool,
    pub(crate) peers: Vec<String>,
    pub(crate) meta: Vec<(String, String)>,
}

impl Settings {
    /// Settings for the cluster `name`: 1 to 63 bytes of ASCII letters,
    /// digits and `-`. Checked by [`Service::new`](crate::Service::new).
    pub fn new(name: impl Into<String>) -> Self {
        Settings {
            name: name.into(),
            identity: None,
            key_file: None,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            queue_len: DEFAULT_QUEUE_LEN,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_links: DEFAULT_MAX_LINKS,
            max_links_per_prefix: DEFAULT_MAX_LINKS_PER_PREFIX,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            unread_timeout: DEFAULT_UNREAD_TIMEOUT,
            leave_grace: crate::limits::LEAVE_GRACE,
            hold_early: crate::limits::HOLD_EARLY,
            secret: None,
            mdns: true,
            dial: true,
            peers: Vec::new(),
            meta: Vec::new(),
        }
    }

    /// This node's key pair, from which its id derives (see [`Identity`]):
    /// for an application that keeps the key itself. Default: a key pair
    /// made for this service (so a random id), unless a
    /// [`key_file`](Self::key_file) is given.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Keeps this node's key pair in the file at `path`, so its id stays the
    /// same across restarts: read by [`Service::new`](crate::Service::new),
    /// which creates the file (readable by its owner only) with a new key
    /// pair if there is none (see [`Identity::load_or_create`]). A node
    /// restarted with its key file takes its place in the mesh at once;
    /// two live nodes with copies of one key file are an id conflict
    /// (both are told).
    ///
    /// ```no_run
    /// let settings = tcpnet::Settings::new("lab").key_file("/var/lib/my-app/node.key");
    /// let service = tcpnet::Service::new(settings)?;
    /// println!("my id, today and after a restart: {}", service.id());
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_file = Some(path.into());
        self
    }

    /// Largest user frame in bytes, sent or received. A larger incoming
    /// frame closes its link with an error event; a larger outgoing one is
    /// refused by `send`. Default [`DEFAULT_MAX_FRAME_LEN`] (8 MiB); at most
    /// `u32::MAX - 1`.
    pub fn max_frame_len(mut self, len: usize) -> Self {
        self.max_frame_len = len;
        self
    }

    /// Time a new link has to finish its handshake before it is dropped.
    /// Default [`DEFAULT_HANDSHAKE_TIMEOUT`] (3 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Frames each link buffers in each direction before `send` waits (and
    /// before the link stops reading from its socket: a link whose receive
    /// queue stays full with no message read for the
    /// [`unread_timeout`](Self::unread_timeout) is closed, see [`CloseReason::Unread`](crate::CloseReason::Unread)),
    /// and items each stream of messages or requests holds unread before
    /// it drops (see [`Messages::dropped`](crate::Messages::dropped)) or
    /// answers calls `Busy`. Default [`DEFAULT_QUEUE_LEN`].
    pub fn queue_len(mut self, frames: usize) -> Self {
        self.queue_len = frames;
        self
    }

    /// Payload bytes each link buffers in each direction before `send`
    /// waits (and before the link stops reading from its socket), on top of
    /// the [`queue_len`](Self::queue_len) bound: whichever is reached first
    /// holds the next frame back. A frame larger than this still passes,
    /// alone. It bounds each stream of messages or requests
    /// ([`Messages`](crate::Messages), [`Requests`](crate::Requests)) the
    /// same way, in bytes of data held unread: past it a message is dropped
    /// for that stream and counted, a call answered `Busy`; one larger
    /// passes into a stream that holds no data. Default
    /// [`DEFAULT_QUEUE_BYTES`] (4 MiB).
    ///
    /// ```
    /// let lean = tcpnet::Settings::new("lab").queue_len(64).queue_bytes(256 * 1024);
    /// # let _ = lean;
    /// ```
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// Most payload bytes all of this node's links may hold at once, both
    /// ways, queued or in a write under way: the bound on what any set of
    /// peers can make the node's links buffer, however many links they
    /// hold. Messages and calls a link hands to the application's streams
    /// are not in this count: each stream of messages or requests holds its own, up to
    /// [`queue_bytes`](Self::queue_bytes) of data unread (or one message
    /// of up to [`max_frame_len`](Self::max_frame_len)), so what peers can
    /// make the node hold in all is this cap plus that much for each
    /// stream the application keeps.
    /// At the cap the node pushes back: a link takes a frame only into an
    /// empty queue, one at a time, until room is made; so `send` and
    /// broadcasts wait, a link stops reading its socket (TCP then pushes
    /// back on the peer), and a relayed message that finds no room is
    /// dropped and counted ([`Stats::relay_dropped`](crate::Stats::relay_dropped)).
    /// Nothing is refused or closed for it, and no link stops: a peer that
    /// never reads holds its link's share until its link has written
    /// nothing for the heartbeat timeout and is closed as stalled
    /// ([`CloseReason::Stalled`](crate::CloseReason::Stalled)), and a link
    /// whose messages this node's application does not read holds its
    /// share until its receive queue has been full with nothing read for
    /// the [`unread_timeout`](Self::unread_timeout) and it is closed as unread
    /// ([`CloseReason::Unread`](crate::CloseReason::Unread)). Beyond the cap, each link may hold a frame taken
    /// into its empty queue each way, one being written and one being read
    /// (so at most a few times [`max_frame_len`](Self::max_frame_len) per
    /// link), and each queue less than 16 KiB that is not counted;
    /// [`Stats::queued_bytes`](crate::Stats::queued_bytes) shows the count.
    /// The spare buffers a busy link's send queue keeps to encode its next
    /// frames into (at most 16 of up to 160 KiB each) count against the
    /// cap too: a link keeps one only while the node has room for it, lets
    /// them go before a sender of its waits for room that only the node's
    /// cap denies, once nothing was sent on it for a quarter of the
    /// heartbeat interval (or of the timeout, if shorter), and at any tick
    /// of the node's timer that finds under a quarter of the cap left. So
    /// do the buffers a link keeps to read its peer's next large frames
    /// into (16 KiB of payload or more; at most 8 MiB per link): a link
    /// keeps one only while that leaves the node a quarter of its cap,
    /// and lets them go at the first tick in which no large frame came,
    /// and at any tick that finds under a quarter of the cap left.
    /// Default [`DEFAULT_MAX_QUEUED_BYTES`] (32 MiB).
    ///
    /// ```
    /// let lean = tcpnet::Settings::new("lab").max_queued_bytes(16 << 20);
    /// # tcpnet::Service::new(lean)?;
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Most connections others may hold open to this node at once (in
    /// their handshake or linked), in all and from one network (an IPv4
    /// /24, an IPv6 /64: one host easily holds many addresses of one). A
    /// connection over either cap is closed at once and reported as
    /// [`Error::TooManyLinks`](crate::Error::TooManyLinks). Links this node
    /// dials are not counted. What all links together may buffer is
    /// bounded by [`max_queued_bytes`](Self::max_queued_bytes). Defaults
    /// [`DEFAULT_MAX_LINKS`] (1024) and [`DEFAULT_MAX_LINKS_PER_PREFIX`]
    /// (256, a whole /24: a cluster on one LAN segment fits).
    ///
    /// ```
    /// let small = tcpnet::Settings::new("lab").max_links(64, 16);
    /// # let _ = small;
    /// ```
    pub fn max_links(mut self, total: usize, per_prefix: usize) -> Self {
        self.max_links = total;
        self.max_links_per_prefix = per_prefix;
        self
    }

    /// Failure detection. A link that has sent nothing for `interval` sends a
    /// heartbeat; a link that has heard nothing for `timeout` while ready to
    /// read closes with [`CloseReason::Timeout`](crate::CloseReason::Timeout)
    /// (a link whose reader is busy delivering to a slow consumer does not
    /// count that time). The same `timeout` closes a link that has frames
    /// to write and gets no byte of them into its socket, its peer reading
    /// nothing ([`CloseReason::Stalled`](crate::CloseReason::Stalled)).
    /// How slowly this node's application reads is bounded separately,
    /// by [`unread_timeout`](Self::unread_timeout).
    /// Defaults: 1 s and 3 s, so a peer cut off is noticed
    /// within about 3 s; a LAN can go down to a few hundred milliseconds, a
    /// sleepy Wi-Fi may want more. `timeout` must be more than `interval`,
    /// and `interval` at least 10 ms. A peer heard nothing from for an
    /// interval and a half (a heartbeat late by half an interval), or for
    /// half the timeout if that is longer, is reported suspect (a member
    /// event) until it speaks again; with `interval` over two thirds of
    /// `timeout` a peer times out before it would be suspect. Each idle
    /// link writes one heartbeat and reads one an interval: a longer
    /// interval costs less CPU (see the README, "Cost of an idle link"), and
    /// leaves less of the timeout for a late heartbeat on a busy host. (A
    /// peer that *exits*, even by `SIGKILL`, is noticed at once through its
    /// socket, not by this.)
    ///
    /// ```
    /// # use std::time::Duration;
    /// let fast = tcpnet::Settings::new("lab")
    ///     .heartbeat(Duration::from_millis(100), Duration::from_millis(300));
    /// # tcpnet::Service::new(fast)?;
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_timeout = timeout;
        self
    }

    /// How long a link's receive queue may stay full while this node's
    /// application reads none of its messages (raw messages, read from a
    /// [`Connection`](crate::Connection)) before the link is closed with
    /// [`CloseReason::Unread`](crate::CloseReason::Unread). Default
    /// [`DEFAULT_UNREAD_TIMEOUT`] (30 s); must be more than zero.
    ///
    /// While the queue is full the link reads nothing from its socket, so
    /// nothing else the peer sends (broadcasts, replies, member records,
    /// its goodbye) gets through; this bounds how long that lasts for an
    /// application that does not read at all. It is separate from the
    /// [`heartbeat`](Self::heartbeat) timeout, which does not run while the
    /// queue is full (the peer's silence is then this node's slowness), so
    /// that an application that is slow to handle a message (a disk or
    /// database write, a pause) is not taken for a network failure: a
    /// reader that takes a message at least once every `timeout` keeps its
    /// link, however short the heartbeat timeout. Keep it above the longest
    /// time the application may spend on one message. It is counted in the
    /// heartbeat timer's ticks (a quarter of the interval or of the
    /// heartbeat timeout, whichever is shorter), and given once more when
    /// this node was starved, as the heartbeat timeout is.
    ///
    /// At it the link is closed as a failure: reported as
    /// [`Error::Link`](crate::Error::Link), counted in
    /// [`Stats::unread_links`](crate::Stats::unread_links), the member is
    /// lost and redialed. The messages the queue holds can still be read;
    /// what the peer had queued or under way to send on the link is lost.
    /// (The peer's own stall check is unchanged: it closes the link as
    /// [`Stalled`](crate::CloseReason::Stalled) if it writes nothing into
    /// it for its heartbeat timeout, which takes a burst that has also
    /// filled the socket buffers between the two.)
    ///
    /// ```
    /// # use std::time::Duration;
    /// let patient = tcpnet::Settings::new("lab").unread_timeout(Duration::from_secs(120));
    /// # tcpnet::Service::new(patient)?;
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn unread_timeout(mut self, timeout: Duration) -> Self {
        self.unread_timeout = timeout;
        self
    }

    /// How long a member whose link was lost (a timeout, a lost link: see
    /// [`LeaveReason`](crate::LeaveReason)) is held before
    /// [`on_member`](crate::Service::on_member) says it left. A link to the
    /// same run of it within that time is one
    /// [`Relinked`](crate::MemberChange::Relinked) event, not a `Left` then
    /// a [`Rejoined`](crate::MemberChange::Rejoined). The price: every such
    /// `Left` comes this much after the link closed (a goodbye, an id
    /// conflict or a restart is reported at once). Default: 2 s
    /// ([`LEAVE_GRACE`](crate::limits::LEAVE_GRACE)), longer than a redial
    /// after a blip takes; zero reports every loss at once. Links
    /// ([`on_link`](crate::Service::on_link)) are not held: they go `Down`
    /// when they close.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let settings = tcpnet::Settings::new("lab").leave_grace(Duration::from_secs(5));
    /// # tcpnet::Service::new(settings)?;
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn leave_grace(mut self, grace: Duration) -> Self {
        self.leave_grace = grace;
        self
    }

    /// How long after [`listen`](crate::Service::listen) the node is young:
    /// until then a call for a procedure no stream serves, and an event or
    /// message no stream takes, waits for the first stream made for it
    /// (see [`Service::procedure`](crate::Service::procedure)). Default:
    /// 2 s ([`HOLD_EARLY`](crate::limits::HOLD_EARLY)); zero holds nothing
    /// (a call no stream serves is answered `NoProcedure` at once).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let strict = tcpnet::Settings::new("lab").hold_early(Duration::ZERO);
    /// # tcpnet::Service::new(strict)?;
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn hold_early(mut self, young: Duration) -> Self {
        self.hold_early = young;
        self
    }

    /// A shared secret for the cluster. With one, a link counts only after
    /// both ends proved they hold the same secret (a Noise `XXpsk3`
    /// handshake, which also proves each node's key pair, as every link's
    /// handshake does), and every frame on it is encrypted and authenticated
    /// (AES-256-GCM where both ends have AES hardware, ChaCha20-Poly1305
    /// otherwise); a node without it, or with another, never links.
    /// Without a secret (the default) anyone who can reach the port and
    /// knows the cluster name can link (under its own id only). 32 to 1024
    /// bytes, and random: it is stretched by HKDF, not by a password hash,
    /// and any node can get another to dial it and send a message bound to
    /// the secret, on which guesses can be tried offline. (32 random bytes as
    /// hex or base64, say `openssl rand -hex 32`.)
    ///
    /// ```
    /// let settings = tcpnet::Settings::new("lab")
    ///     .secret("3c1f0e0b8a5d46f7b1c2d9e4a6f80b17e5d4c3b2a1908f7e6d5c4b3a29180706");
    /// # tcpnet::Service::new(settings)?;
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Some(secret.as_ref().to_vec());
        self
    }

    /// Whether to find peers (and be found) over mDNS, and through the
    /// members that linked peers say they are linked to, at the addresses
    /// they give. Default `true`. With `false` the node neither browses
    /// nor announces, nor dials a member a peer names: it links only with
    /// [`peer`](Self::peer)s and with nodes that dial it.
    pub fn mdns(mut self, on: bool) -> Self {
        self.mdns = on;
        self
    }

    /// A static peer, `host:port` or `ip:port`, dialed like a discovered one
    /// and redialed whenever its link breaks: for peers multicast does not
    /// reach (another subnet, a VPN). May be given several times; more can be
    /// added while running with [`Service::add_peer`](crate::Service::add_peer).
    ///
    /// ```
    /// let settings = tcpnet::Settings::new("lab")
    ///     .peer("10.99.0.7:4000")
    ///     .peer("build-box.example:4000");
    /// # tcpnet::Service::new(settings)?;
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn peer(mut self, addr: impl Into<String>) -> Self {
        self.peers.push(addr.into());
        self
    }

    /// A pair of this node's metadata: what it says about itself to the
    /// cluster (a role, a version, the address of a server it runs). Every
    /// member sees it (see [`Service::members`](crate::Service::members)),
    /// and so does anyone on the LAN: it rides in the mDNS record, as
    /// `m.<key>=<value>`. A key given again replaces the value. Keys have 1
    /// to 32 bytes of `a-z`, `0-9`, `.`, `_`, `-`; values at most 220 bytes;
    /// at most 16 pairs and 1024 bytes in all, checked by
    /// [`Service::new`](crate::Service::new) ([`Error::InvalidMeta`]).
    /// Change it at run time with [`Service::set_meta`](crate::Service::set_meta).
    ///
    /// ```
    /// let settings = tcpnet::Settings::new("lab")
    ///     .meta("role", "gateway")
    ///     .meta("http", "8080");
    /// let service = tcpnet::Service::new(settings)?;
    /// assert_eq!(service.meta().get("http"), Some("8080"));
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.push((key.into(), value.into()));
        self
    }

    /// The metadata the settings give, checked.
    pub(crate) fn checked_meta(&self) -> Result<Meta> {
        let mut meta = Meta::default();
        for (k, v) in &self.meta {
            meta.set(k, v)?;
        }
        Ok(meta)
    }
}

impl Settings {
    /// Checks every setting, as [`Service::new`](crate::Service::new) does.
    ///
    /// Errors: [`Error::InvalidName`], [`Error::InvalidSetting`],
    /// [`Error::InvalidAddress`] (a static peer), [`Error::InvalidMeta`].
    /// (The key file is read by [`Service::new`](crate::Service::new).)
    ///
    /// ```
    /// use std::time::Duration;
    /// let bad = tcpnet::Settings::new("lab").heartbeat(Duration::from_secs(2), Duration::from_secs(1));
    /// assert!(matches!(bad.validate(), Err(tcpnet::Error::InvalidSetting { .. })));
    /// ```
    pub fn validate(&self) -> Result<()> {
        valid_cluster_name(&self.name).map_err(|reason| Error::InvalidName {
            name: self.name.clone(),
            reason,
        })?;
        if self.max_frame_len == 0 || self.max_frame_len >= u32::MAX as usize {
            return Err(Error::InvalidSetting {
                setting: "max_frame_len",
                reason: format!("{} is not in 1..{}", self.max_frame_len, u32::MAX),
            });
        }
        if self.queue_len == 0 {
            return Err(Error::InvalidSetting {
                setting: "queue_len",
                reason: "must be at least 1".into(),
            });
        }
        if self.queue_bytes == 0 {
            return Err(Error::InvalidSetting {
                setting: "queue_bytes",
                reason: "must be at least 1".into(),
            });
        }
        if self.max_queued_bytes == 0 {
            return Err(Error::InvalidSetting {
                setting: "max_queued_bytes",
                reason: "must be at least 1".into(),
            });
        }
        if self.max_links == 0 || self.max_links_per_prefix == 0 {
            return Err(Error::InvalidSetting {
                setting: "max_links",
                reason: "both caps must be at least 1".into(),
            });
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::InvalidSetting {
                setting: "handshake_timeout",
                reason: "must be more than zero".into(),
            });
        }
        if self.heartbeat_interval < MIN_HEARTBEAT {
            return Err(Error::InvalidSetting {
                setting: "heartbeat",
                reason: format!(
                    "interval {:?} is under the minimum of {MIN_HEARTBEAT:?}",
                    self.heartbeat_interval
                ),
            });
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(Error::InvalidSetting {
                setting: "heartbeat",
                reason: format!(
                    "timeout {:?} must be more than the interval {:?}",
                    self.heartbeat_timeout, self.heartbeat_interval
                ),
            });
        }
        if self.unread_timeout.is_zero() {
            return Err(Error::InvalidSetting {
                setting: "unread_timeout",
                reason: "must be more than zero".into(),
            });
        }
        if let Some(secret) = &self.secret {
            check_secret(secret)?;
        }
        for peer in &self.peers {
            check_peer_syntax(peer)?;
        }
        self.checked_meta()?;
        Ok(())
    }
}

/// Shows every setting but the secret.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .field("key_file", &self.key_file)
            .field("max_frame_len", &self.max_frame_len)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("queue_len", &self.queue_len)
            .field("queue_bytes", &self.queue_bytes)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("unread_timeout", &self.unread_timeout)
            .field("leave_grace", &self.leave_grace)
            .field("hold_early", &self.hold_early)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .field("mdns", &self.mdns)
            .field("dial", &self.dial)
            .field("peers", &self.peers)
            .field("meta", &self.meta)
            .finish()
    }
}

impl From<&str> for Settings {
    fn from(name: &str) -> Self {
        Settings::new(name)
    }
}

impl From<String> for Settings {
    fn from(name: String) -> Self {
        Settings::new(name)
    }
}

/// Checks a cluster secret's length.
pub(crate) fn check_secret(secret: &[u8]) -> Result<()> {
    if secret.len() < MIN_SECRET_LEN || secret.len() > MAX_SECRET_LEN {
        return Err(Error::InvalidSetting {
            setting: "secret",
            reason: format!(
                "{} bytes; must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} (a shorter \
                 one can be guessed offline)",
                secret.len()
            ),
        });
    }
    Ok(())
}
