//! Discovery over mDNS (DNS-SD), with `mdns-sd`.
//!
//! Each node registers one instance of the service type [`SERVICE_TYPE`]:
//!
//! - instance name = the node id (unique, so name probing is switched off:
//!   probing would cost ~750 ms before a node is visible);
//! - host name = `<id>.local.`, also unique per node: processes in network
//!   namespaces share `gethostname()`, and a shared mDNS host name triggers
//!   renaming and seconds of delay;
//! - TXT `c=<cluster>`, `v=<protocol version>` and `k=<public key>` (64 hex
//!   digits: the node's identity key, whose hash is its id). The cluster
//!   name rides in the TXT record rather than in the service type, so any
//!   name of 1 to 63 bytes works (a service type label is limited to 15), and
//!   one browse sees every cluster: nodes of other clusters are skipped. A
//!   record whose key is not the one of its instance name is refused; the
//!   node that answers at its addresses must then prove that key in the
//!   handshake (mDNS itself is not authenticated: anyone can announce any
//!   record, and the handshake is what tells);
//! - the node's metadata, a TXT string `m.<key>=<value>` per pair: keys of
//!   tcpnet's own are single letters, so the `m.` prefix never clashes with
//!   them, and a pair at the bounds (a 32-byte key, a 220-byte value) fills
//!   a TXT string's 255 bytes exactly. The node re-announces when it
//!   changes.
//!
//! Records are read by [`Announcement::parse`] (public, so browsers read
//! them by the same rules) and checked against our cluster by
//! [`parse_record`], both pure functions: a bad record becomes an error
//! event and nothing else.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use mdns_sd::{DaemonEvent, IfKind, ResolvedService, ScopedIp, ServiceDaemon, ServiceInfo};
use tokio::sync::mpsc;

use crate::error::{Error, MetaError, Result};
use crate::id::NodeId;
use crate::identity::{Identity, PUBLIC_KEY_LEN};
use crate::limits::MAX_PEERS;
use crate::link::patience::patient_timeout;
use crate::meta::Meta;
use crate::node::mesh::Heard;
use crate::wire::hello::PROTOCOL_VERSION;

/// The one mDNS service type of tcpnet.
pub const SERVICE_TYPE: &str = "_tcpnet._tcp.local.";
/// What the TXT key of a metadata pair starts with.
pub(crate) const META_PREFIX: &str = "m.";
/// How long `listen` waits for the daemon to announce the node.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest mDNS packet sent on loopback: RFC 6762's 9000 bytes less
/// the IPv6 and UDP headers (the most `mdns-sd` takes).
const LOOPBACK_PACKET: usize = 8952;
/// How long `close` waits for the goodbye to be sent.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which interfaces a node advertises and browses on, from its listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `0.0.0.0`: every IPv4 interface.
    AllV4,
    /// `::`: every interface (the socket is dual-stack).
    All,
    /// Only the interfaces that carry these addresses (loopback included).
    Addrs(Vec<IpAddr>),
}

impl Scope {
    pub(crate) fn of(ips: &[IpAddr]) -> Scope {
        match ips {
            [IpAddr::V4(v4)] if v4.is_unspecified() => Scope::AllV4,
            [IpAddr::V6(v6)] if v6.is_unspecified() => Scope::All,
            _ => Scope::Addrs(ips.to_vec()),
        }
    }

    /// The addresses a node in this scope can be reached at.
    pub(crate) fn addresses(&self) -> Vec<IpAddr> {
        match self {
            Scope::Addrs(ips) => ips.clone(),
            Scope::AllV4 | Scope::All => {
                let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i.ip())
                    .filter(|ip| *self == Scope::All || ip.is_ipv4())
                    .collect();
                ips.sort();
                ips.dedup();
                ips
            }
        }
    }
}

/// How long a verification waits for the peer to answer.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(1);

/// A running mDNS daemon that advertises this node and browses for others.
pub(crate) struct Discovery {
    daemon: ServiceDaemon,
    fullname: String,
    /// What the record says besides the metadata.
    announced: Announced,
    /// Where the browse loop is told how to browse, once it runs.
    steer: Option<mpsc::UnboundedSender<Browse>>,
}

/// How a node's mDNS daemon browses.
///
/// Every node reads every mDNS datagram on its LAN, and each query of a
/// node that knows N peers carries their N records as known answers, which
/// every daemon parses: with many nodes on one host, the queries the
/// daemons send on their own schedule (about 0.1, 1, 3, 7, 15 s... after a
/// browse starts) are most of what mDNS costs once a mesh stands. A node
/// linked to every peer it knows learns from the lists of links of its
/// peers where the members they link to listen, and needs the queries no
/// more: it browses the daemon's cache, which still hears every
/// announcement and goodbye, and queries again whenever it is not (the
/// mesh decides: see [`Mesh::browse`](crate::node::mesh::Mesh::browse)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Browse {
    /// Queries on the daemon's schedule.
    Query,
    /// No query of its own: what the daemon hears.
    Cache,
}

/// A handle on the daemon for the browse loop: a new browse in `mode`
/// replaces the last (the daemon tells it what its cache holds first).
pub(crate) struct Browser(ServiceDaemon);

impl Browser {
    pub(crate) fn browse(&self, mode: Browse) -> Result<mdns_sd::Receiver<mdns_sd::ServiceEvent>> {
        match mode {
            Browse::Query => self.0.browse(SERVICE_TYPE),
            Browse::Cache => self.0.browse_cache(SERVICE_TYPE),
        }
        .map_err(mdns("browsing"))
    }
}

/// A node's record, but for its metadata.
struct Announced {
    id: NodeId,
    /// The identity's public key, in hex (TXT `k`).
    key: String,
    cluster: String,
    port: u16,
    scope: Scope,
}

impl Discovery {
    /// Starts the daemon, announces the node and starts browsing. Returns
    /// once the announcement has been sent on at least one interface.
    pub(crate) async fn start(
        identity: &Identity,
        cluster: &str,
        port: u16,
        scope: &Scope,
        meta: &Meta,
    ) -> Result<(Discovery, mdns_sd::Receiver<mdns_sd::ServiceEvent>)> {
        let daemon = ServiceDaemon::new().map_err(mdns("starting the daemon"))?;
        let id = identity.id();
        let discovery = Discovery {
            fullname: format!("{id}.{SERVICE_TYPE}"),
            daemon,
            announced: Announced {
                id: id.clone(),
                key: hex::encode(identity.public_key()),
                cluster: cluster.to_string(),
                port,
                scope: scope.clone(),
            },
            steer: None,
        };
        let browse = discovery.announce(meta).await?;
        Ok((discovery, browse))
    }

    /// The node's record with `meta`.
    fn record(&self, meta: &Meta) -> Result<ServiceInfo> {
        let a = &self.announced;
        let mut props = vec![
            ("c".to_string(), a.cluster.clone()),
            ("v".to_string(), PROTOCOL_VERSION.to_string()),
            ("k".to_string(), a.key.clone()),
        ];
        props.extend(
            meta.iter()
                .map(|(k, v)| (format!("{META_PREFIX}{k}"), v.to_string())),
        );
        let host = format!("{}.local.", a.id);
        let mut info = match &a.scope {
            Scope::Addrs(ips) => ServiceInfo::new(
                SERVICE_TYPE,
                a.id.as_str(),
                &host,
                &ips[..],
                a.port,
                &props[..],
            ),
            _ => ServiceInfo::new(SERVICE_TYPE, a.id.as_str(), &host, (), a.port, &props[..])
                .map(|i| i.enable_addr_auto()),
        }
        .map_err(mdns("making the service record"))?;
        // Ids are unique: probing for a name conflict would only add ~750 ms.
        info.set_requires_probe(false);
        Ok(info)
    }

    /// Announces the node's record anew, with `meta`.
    pub(crate) fn reannounce(&self, meta: &Meta) {
        let registered = self
            .record(meta)
            .and_then(|info| self.daemon.register(info).map_err(mdns("re-announcing")));
        if let Err(e) = registered {
            tracing::warn!("{e}");
        }
    }

    async fn announce(&self, meta: &Meta) -> Result<mdns_sd::Receiver<mdns_sd::ServiceEvent>> {
        let daemon = &self.daemon;
        let interfaces = mdns("choosing the interfaces");
        match &self.announced.scope {
            // Only IPv4 is listened on, so only IPv4 addresses are announced.
            Scope::AllV4 => daemon.disable_interface(IfKind::IPv6).map_err(interfaces)?,
            Scope::All => {}
            Scope::Addrs(ips) => {
                daemon.disable_interface(IfKind::All).map_err(interfaces)?;
                let kinds: Vec<IfKind> = ips.iter().map(|ip| IfKind::Addr(*ip)).collect();
                daemon.enable_interface(kinds).map_err(interfaces)?;
            }
        }
        // Loopback carries 64 KiB frames, so there an mDNS packet may take
        // the 9000 bytes RFC 6762 allows without being fragmented. Many
        // nodes on one host then send a query and the answers it already
        // knows in one datagram instead of several, and every node reads
        // each datagram: at 128 nodes, a third of the query datagrams.
        daemon
            .set_max_packet_size(
                vec![IfKind::LoopbackV4, IfKind::LoopbackV6],
                LOOPBACK_PACKET,
            )
            .map_err(interfaces)?;
        let info = self.record(meta)?;

        // Browse before announcing. Of two nodes starting together, either
        // the other's announcement reaches us after we began browsing, or
        // our query reaches it after it registered: one of them always sees
        // the other at once (and one sighting is enough: both ends dial).
        // The other order leaves a gap that only the one-second repeat of
        // the announcement closes.
        let browse = daemon.browse(SERVICE_TYPE).map_err(mdns("browsing"))?;
        let monitor = daemon.monitor().map_err(mdns("watching the daemon"))?;
        daemon.register(info).map_err(mdns("registering"))?;
        let announced = async {
            loop {
                match monitor.recv_async().await {
                    Ok(DaemonEvent::Announce(name, _)) if name == self.fullname => return Ok(()),
                    Ok(DaemonEvent::Error(e)) => return Err(mdns("announcing")(e)),
                    Ok(_) => {}
                    Err(_) => return Err(mdns_failed("the mDNS daemon stopped".into())),
                }
            }
        };
        // Counted as the handshake's time is, so that a machine too busy to
        // run the daemon's thread (or ours) for seconds does not fail the
        // listen, while an interface that cannot announce still does.
        tokio::select! {
            r = announced => r?,
            _ = patient_timeout(ANNOUNCE_TIMEOUT) => {
                return Err(mdns_failed(format!(
                    "could not announce on any interface within {ANNOUNCE_TIMEOUT:?} \
                     (is an interface of the listen address up, with multicast on?)"
                )))
            }
        }
        Ok(browse)
    }

    /// The handle the browse loop switches the browse with, and where it
    /// is told to: [`steer`](Self::steer) from now on.
    pub(crate) fn browser(&mut self) -> (Browser, mpsc::UnboundedReceiver<Browse>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.steer = Some(tx);
        (Browser(self.daemon.clone()), rx)
    }

    /// Tells the browse loop how to browse.
    pub(crate) fn steer(&self, mode: Browse) {
        if let Some(tx) = &self.steer {
            let _ = tx.send(mode);
        }
    }

    /// Asks the daemon to query a peer's record now: if nothing answers
    /// within [`VERIFY_TIMEOUT`], the record is flushed and the peer reported
    /// removed. Used when a peer's port refuses us, so that a node that died
    /// without a goodbye does not stay "advertised" for the record's lifetime.
    pub(crate) fn verify(&self, peer: &NodeId) {
        let fullname = format!("{peer}.{SERVICE_TYPE}");
        if let Err(e) = self.daemon.verify(fullname, VERIFY_TIMEOUT) {
            tracing::debug!(%peer, "mDNS verify: {e}");
        }
    }

    /// Sends the goodbye (waits until it is out, at most a second).
    pub(crate) async fn goodbye(&self) {
        if let Ok(rx) = self.daemon.unregister(&self.fullname) {
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, rx.recv_async()).await;
        }
    }

    /// Stops browsing and stops the daemon (after [`goodbye`](Self::goodbye)).
    pub(crate) async fn stop(self) {
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, rx.recv_async()).await;
        }
    }
}

/// A daemon dropped without [`Discovery::stop`] (a failed or cancelled
/// `listen`) still stops its thread.
impl Drop for Discovery {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

/// What a resolved record means for us.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A peer of our cluster, with the addresses to dial (IPv4 first), and
    /// what was wrong with its metadata, if anything (it is dialed all the
    /// same: its metadata comes with its hello).
    Peer(NodeId, Vec<SocketAddr>, Option<MetaError>),
    /// Ourselves, or a node of another cluster.
    NotOurs,
}

/// A node's mDNS record of [`SERVICE_TYPE`], read and checked: what any
/// browser (the `tcpnet` command, a monitoring tool) can learn of a node
/// from the LAN without joining its cluster.
///
/// [`parse`](Self::parse) takes the record as `mdns-sd` (0.21, the version
/// tcpnet uses) resolves it:
///
/// ```no_run
/// let daemon = mdns_sd::ServiceDaemon::new().unwrap();
/// let events = daemon.browse(tcpnet::SERVICE_TYPE).unwrap();
/// while let Ok(event) = events.recv() {
///     if let mdns_sd::ServiceEvent::ServiceResolved(rec) = event {
///         match tcpnet::Announcement::parse(&rec) {
///             Ok(node) => println!("{} of {} at {:?}", node.id, node.cluster, node.addrs),
///             Err(e) => println!("{e}"), // Error::BadRecord, saying what is wrong
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Announcement {
    /// The node's id (the instance name).
    pub id: NodeId,
    /// Its cluster (TXT `c`).
    pub cluster: String,
    /// The protocol version it speaks (TXT `v`), as announced: a node
    /// links only with nodes of its own [`PROTOCOL_VERSION`].
    pub version: String,
    /// Where it listens, IPv4 first.
    pub addrs: Vec<SocketAddr>,
    /// Its identity's public key (TXT `k`, 32 bytes), whose hash is its id:
    /// `None` if the record has none (a node of another protocol version).
    /// A record whose key is not its id's is refused. The record itself is
    /// not authenticated: only a link's handshake proves the key.
    pub key: Option<[u8; 32]>,
    /// Its metadata (TXT `m.<key>=<value>`), or what is wrong with it: a
    /// record whose metadata breaks the bounds is read all the same.
    pub meta: std::result::Result<Meta, MetaError>,
}

impl Announcement {
    /// Reads a resolved record: the instance name must be a node id, TXT
    /// `c` and `v` present, TXT `k`, if present, the key of that id, the
    /// port not 0, and at least one address usable (not unspecified, not
    /// multicast). Anything else is an [`Error::BadRecord`] naming the
    /// instance and what is wrong.
    pub fn parse(rec: &ResolvedService) -> Result<Announcement> {
        let bad = |reason: String| Error::BadRecord {
            instance: rec.fullname.clone(),
            reason,
        };
        let id = instance_id(&rec.fullname)?;
        let txt = |key| rec.txt_properties.get_property_val_str(key);
        let cluster = txt("c").ok_or_else(|| bad("no cluster name (TXT c)".into()))?;
        let version = txt("v").ok_or_else(|| bad("no protocol version (TXT v)".into()))?;
        if rec.port == 0 {
            return Err(bad("port 0".into()));
        }
        let mut addrs: Vec<SocketAddr> = rec
            .addresses
            .iter()
            .map(|ip| match ip {
                ScopedIp::V6(v6) => {
                    let scope = if v6.addr().is_unicast_link_local() {
                        v6.scope_id().index
                    } else {
                        0
                    };
                    SocketAddr::V6(SocketAddrV6::new(*v6.addr(), rec.port, 0, scope))
                }
                other => SocketAddr::new(other.to_ip_addr(), rec.port),
            })
            .filter(|a| !a.ip().is_unspecified() && !a.ip().is_multicast())
            .collect();
        if addrs.is_empty() {
            return Err(bad("no usable address".into()));
        }
        addrs.sort_by_key(|a| (a.is_ipv6(), a.ip()));
        let key = match txt("k") {
            None => None,
            Some(k) => Some(node_key(k, &id).map_err(bad)?),
        };
        Ok(Announcement {
            id,
            cluster: cluster.to_string(),
            version: version.to_string(),
            addrs,
            key,
            meta: record_meta(rec),
        })
    }
}

/// The key in a TXT `k`, checked against the instance's id.
fn node_key(hex_key: &str, id: &NodeId) -> std::result::Result<[u8; PUBLIC_KEY_LEN], String> {
    let mut key = [0u8; PUBLIC_KEY_LEN];
    hex::decode_to_slice(hex_key, &mut key)
        .map_err(|_| format!("the key (TXT k) is not {PUBLIC_KEY_LEN} bytes in hex"))?;
    let of_key = NodeId::of_key(&key);
    if &of_key != id {
        return Err(format!(
            "the key (TXT k) is not the instance's: its id is {of_key}"
        ));
    }
    Ok(key)
}

/// The metadata in a record's TXT strings (`m.<key>=<value>`), checked.
fn record_meta(rec: &ResolvedService) -> std::result::Result<Meta, MetaError> {
    let mut pairs = Vec::new();
    for prop in rec.txt_properties.iter() {
        let Some(key) = prop.key().strip_prefix(META_PREFIX) else {
            continue;
        };
        let value = std::str::from_utf8(prop.val().unwrap_or_default()).map_err(|_| {
            MetaError::Malformed {
                reason: format!("the value of {key:?} is not UTF-8"),
            }
        })?;
        pairs.push((key.to_string(), value.to_string()));
    }
    Meta::from_pairs(pairs)
}

/// The node id in an instance full name, `<id>._tcpnet._tcp.local.`.
pub(crate) fn instance_id(fullname: &str) -> Result<NodeId> {
    let bad = |reason: String| Error::BadRecord {
        instance: fullname.to_string(),
        reason,
    };
    let name = fullname
        .strip_suffix(SERVICE_TYPE)
        .and_then(|n| n.strip_suffix('.'))
        .ok_or_else(|| bad(format!("not an instance of {SERVICE_TYPE}")))?;
    NodeId::parse(name).map_err(|e| bad(format!("instance name is not a node id: {e}")))
}

/// Whether `fullname` names node `id`'s instance, `<id>._tcpnet._tcp.local.`
/// (compared as text: nothing is parsed or allocated).
pub(crate) fn is_instance_of(fullname: &str, id: &NodeId) -> bool {
    fullname
        .strip_prefix(id.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        == Some(SERVICE_TYPE)
}

/// Checks a resolved record of the tcpnet service type against our cluster:
/// a record of another cluster is not ours, even a broken one.
pub(crate) fn parse_record(rec: &ResolvedService, cluster: &str, me: &NodeId) -> Result<Record> {
    let node = match Announcement::parse(rec) {
        Ok(node) => node,
        Err(_)
            if rec
                .txt_properties
                .get_property_val_str("c")
                .is_some_and(|c| c != cluster) =>
        {
            return Ok(Record::NotOurs)
        }
        Err(e) => return Err(e),
    };
    if node.cluster != cluster || node.id == *me {
        return Ok(Record::NotOurs);
    }
    let bad = |reason: String| Error::BadRecord {
        instance: rec.fullname.clone(),
        reason,
    };
    if node.version != PROTOCOL_VERSION.to_string() {
        return Err(bad(format!(
            "protocol version {:?}, we speak {PROTOCOL_VERSION}",
            node.version
        )));
    }
    if node.key.is_none() {
        return Err(bad("no key (TXT k)".into()));
    }
    Ok(Record::Peer(node.id, node.addrs, node.meta.err()))
}

/// What mDNS last said of a peer, for the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sighting {
    /// Its record resolved (again), with the addresses to dial.
    Found {
        addrs: Vec<SocketAddr>,
        heard: Heard,
    },
    /// Its goodbye came, or its record expired.
    Lost,
}

/// What mDNS said of peers that the node's actor has not taken yet: the
/// latest [`Sighting`] of each peer, at most [`MAX_PEERS`] peers. The
/// daemon's channel to the browse loop is bounded (`mdns-sd` holds 1,000
/// events) and resolves a record again only when it changed, but the loop
/// drains it without waiting for the actor, and a host on the LAN can send
/// changed records (or records of made-up peers) as fast as it likes: the actor is
/// told only when nothing waited ([`offer`](Self::offer)) and takes
/// everything at once ([`take`](Self::take)), so its command channel holds
/// at most one command for them, and what waits stays one entry per peer.
/// Only the latest sighting of a peer matters: the mesh takes a record's
/// addresses whole, and a goodbye followed by a record (or the other way)
/// leaves the peer as the later says.
#[derive(Debug, Default)]
pub(crate) struct Sightings {
    by_peer: HashMap<NodeId, Sighting>,
}

/// A sighting [`Sightings`] had no room for: [`MAX_PEERS`] other peers'
/// wait.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NoRoom;

impl Sightings {
    /// `sighting` of `peer` replaces any that waits of it. `Ok(true)` if
    /// nothing waited before: the actor is to be told; `Err` with
    /// [`MAX_PEERS`] other peers waiting (the mesh would track no more).
    pub(crate) fn offer(&mut self, peer: NodeId, sighting: Sighting) -> Result<bool, NoRoom> {
        let first = self.by_peer.is_empty();
        if !self.by_peer.contains_key(&peer) && self.by_peer.len() >= MAX_PEERS {
            return Err(NoRoom);
        }
        self.by_peer.insert(peer, sighting);
        Ok(first)
    }

    /// Everything that waits, leaving nothing.
    pub(crate) fn take(&mut self) -> Vec<(NodeId, Sighting)> {
        self.by_peer.drain().collect()
    }
}

/// An mDNS library error, as the error of the step that failed.
fn mdns(step: &'static str) -> impl Fn(mdns_sd::Error) -> Error + Copy {
    move |e| Error::Mdns {
        reason: step.to_string(),
        source: Some(Arc::new(e)),
    }
}

/// An mDNS failure with no library error behind it.
fn mdns_failed(reason: String) -> Error {
    Error::Mdns {
        reason,
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that sends changed records faster than the actor takes
    /// them: the actor is told once, one sighting waits per peer (the
    /// latest), and past [`MAX_PEERS`] peers no more wait.
    #[test]
    fn sightings_are_bounded_however_fast_records_come() {
        let mut s = Sightings::default();
        let peer = |i: usize| crate::id::id(&format!("{:x}", 0x10000 + i));
        let found = |port: u16| Sighting::Found {
            addrs: vec![SocketAddr::from(([10, 99, 0, 2], port))],
            heard: Heard::AfterOurs,
        };
        assert_eq!(s.offer(peer(0), found(1)), Ok(true), "tell the actor");
        for port in 2..10_000 {
            assert_eq!(s.offer(peer(0), found(port)), Ok(false), "told already");
        }
        assert_eq!(s.by_peer.len(), 1);
        assert_eq!(s.by_peer[&peer(0)], found(9_999), "the latest");
        s.offer(peer(0), Sighting::Lost).unwrap();
        for i in 1..MAX_PEERS {
            assert_eq!(s.offer(peer(i), found(1)), Ok(false));
        }
        assert_eq!(s.offer(peer(MAX_PEERS), found(1)), Err(NoRoom));
        assert_eq!(s.offer(peer(1), Sighting::Lost), Ok(false), "one waits");
        let taken = s.take();
        assert_eq!(taken.len(), MAX_PEERS);
        assert!(taken.contains(&(peer(0), Sighting::Lost)));
        assert!(taken.contains(&(peer(1), Sighting::Lost)));
        assert!(s.by_peer.is_empty());
        assert_eq!(s.offer(peer(MAX_PEERS), found(1)), Ok(true), "room again");
    }

    fn record(name: &str, port: u16, props: &[(&str, &str)], ips: &str) -> ResolvedService {
        let host = "h.local.";
        ServiceInfo::new(SERVICE_TYPE, name, host, ips, port, props)
            .unwrap()
            .as_resolved_service()
    }

    /// A peer's instance name and its TXT key.
    fn peer() -> (String, String) {
        let p = Identity::generate();
        (p.id().to_string(), hex::encode(p.public_key()))
    }

    fn me() -> NodeId {
        Identity::generate().id().clone()
    }

    #[test]
    fn a_good_record_gives_ipv4_first() {
        let (id, k) = peer();
        let props = [("c", "x"), ("v", "4"), ("k", k.as_str())];
        let r = record(&id, 7, &props, "fe80::1,10.99.0.2");
        match parse_record(&r, "x", &me()).unwrap() {
            Record::Peer(got, addrs, None) => {
                assert_eq!(got.as_str(), id);
                assert_eq!(addrs[0], "10.99.0.2:7".parse().unwrap());
                assert_eq!(addrs.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_instance_name_is_told_by_its_id() {
        let me = me();
        assert!(is_instance_of(&format!("{me}.{SERVICE_TYPE}"), &me));
        assert!(!is_instance_of(&format!("{me}x.{SERVICE_TYPE}"), &me));
        assert!(!is_instance_of(&format!("{me}._other._tcp.local."), &me));
        assert!(!is_instance_of(SERVICE_TYPE, &me));
    }

    #[test]
    fn other_clusters_and_self_are_skipped() {
        let (id, k) = peer();
        let r = record(&id, 7, &[("c", "y"), ("v", "4"), ("k", &k)], "10.99.0.2");
        assert_eq!(parse_record(&r, "x", &me()).unwrap(), Record::NotOurs);
        let me = NodeId::parse(&id).unwrap();
        let r = record(&id, 7, &[("c", "x"), ("v", "4"), ("k", &k)], "10.99.0.2");
        assert_eq!(parse_record(&r, "x", &me).unwrap(), Record::NotOurs);
    }

    #[test]
    fn an_announcement_of_any_cluster_and_version_is_read() {
        let r = record("0B", 7, &[("c", "y"), ("v", "9")], "fe80::1,10.99.0.2");
        let node = Announcement::parse(&r).unwrap();
        assert_eq!(node.id.as_str(), "0b");
        assert_eq!((node.cluster.as_str(), node.version.as_str()), ("y", "9"));
        assert_eq!(node.addrs[0], "10.99.0.2:7".parse().unwrap());
        assert_eq!(node.key, None);
        let (id, k) = peer();
        let r = record(&id, 7, &[("c", "y"), ("v", "4"), ("k", &k)], "10.99.0.2");
        let node = Announcement::parse(&r).unwrap();
        assert_eq!(node.key.map(hex::encode), Some(k));
    }

    #[test]
    fn a_broken_record_of_another_cluster_is_not_ours() {
        let r = record("zz", 0, &[("c", "y")], "10.99.0.2");
        assert!(Announcement::parse(&r).is_err());
        assert_eq!(parse_record(&r, "x", &me()).unwrap(), Record::NotOurs);
    }

    #[test]
    fn bad_records_are_errors() {
        let (id, k) = peer();
        let (other, other_k) = peer();
        let ok = [("c", "x"), ("v", "4"), ("k", k.as_str())];
        let cases = [
            record("zz", 7, &ok, "10.99.0.2"),
            record(&id, 7, &[("v", "4"), ("k", &k)], "10.99.0.2"),
            record(&id, 7, &[("c", "x"), ("k", &k)], "10.99.0.2"),
            record(&id, 7, &[("c", "x"), ("v", "9"), ("k", &k)], "10.99.0.2"),
            record(&id, 7, &[("c", "x"), ("v", "4")], "10.99.0.2"),
            record(&id, 7, &[("c", "x"), ("v", "4"), ("k", "00")], "10.99.0.2"),
            // Another node's key under this instance name.
            record(
                &id,
                7,
                &[("c", "x"), ("v", "4"), ("k", &other_k)],
                "10.99.0.2",
            ),
            record(&other, 7, &ok, "10.99.0.2"),
            record(&id, 0, &ok, "10.99.0.2"),
            record(&id, 7, &ok, "0.0.0.0"),
        ];
        for r in cases {
            match parse_record(&r, "x", &me()) {
                Err(Error::BadRecord { reason, .. }) => assert!(!reason.is_empty()),
                other => panic!("{} gave {other:?}", r.fullname),
            }
        }
    }

    #[test]
    fn metadata_rides_in_prefixed_txt_strings() {
        let (id, k) = peer();
        let props = [
            ("c", "x"),
            ("v", "4"),
            ("k", k.as_str()),
            ("m.role", "gateway"),
            ("m.http", "8080"),
        ];
        let r = record(&id, 7, &props, "10.99.0.2");
        let meta = Announcement::parse(&r).unwrap().meta.unwrap();
        assert_eq!(meta.to_string(), "http=8080, role=gateway");
        assert!(matches!(
            parse_record(&r, "x", &me()),
            Ok(Record::Peer(_, _, None))
        ));
    }

    #[test]
    fn bad_metadata_in_a_record_is_named_and_the_record_still_used() {
        let (id, k) = peer();
        let long = "v".repeat(240);
        for (props, bad) in [
            (vec![("m.Role", "x")], "KeyChars"),
            (vec![("m.k", long.as_str())], "ValueLength"),
        ] {
            let mut all = vec![("c", "x"), ("v", "4"), ("k", k.as_str())];
            all.extend(props);
            let r = record(&id, 7, &all, "10.99.0.2");
            match parse_record(&r, "x", &me()).unwrap() {
                Record::Peer(got, _, Some(e)) => {
                    assert_eq!(got.as_str(), id);
                    assert!(format!("{e:?}").starts_with(bad), "{e:?}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
