//! A running node as its tasks share it ([`Node`]), and what they tell its
//! actor ([`Command`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::id::NodeId;
use crate::identity::Identity;
use crate::link::{self, Event, Links};
use crate::messaging::relay::Hints;
use crate::messaging::Messaging;
use crate::node::caps::Caps;
use crate::node::discovery::{Sighting, Sightings};
use crate::node::events::Hub;
use crate::node::gate::{Gate, Known};
use crate::node::hints::Unhandled;
use crate::node::members::Members;
use crate::node::mesh::{DialEnd, Settle, Target};
use crate::node::settings::Settings;
use crate::sync::lock;
use crate::wire::hello::Hello;
use crate::wire::noise::StaticKey;
use crate::wire::secure::Keyring;

/// Most connection attempts under way at once: a flood of bogus records
/// makes dials wait their turn instead of opening sockets without bound.
const MAX_DIALS: usize = 32;

/// What the service's tasks tell the actor.
pub(crate) enum Command {
    /// mDNS said something of peers: take it from the node (see
    /// [`Node::take_sightings`]).
    Sighted,
    DialEnded {
        target: Target,
        end: DialEnd,
    },
    /// Peers' lists of links named members this node is not linked to,
    /// with where they listen: take them from the node (see
    /// [`Node::take_hints`]).
    Hinted,
    /// A scheduled redial is due.
    Retry {
        target: Target,
        generation: u64,
    },
    /// Dial this address now and whenever its link breaks.
    AddPeer {
        addr: SocketAddr,
    },
    /// Close the links with this peer and link with it no more.
    Disconnect {
        peer: NodeId,
    },
    /// Link with this peer again.
    Reconnect {
        peer: NodeId,
    },
    /// What a link reports.
    Link(Event),
    /// This node's metadata changed: re-announce it over mDNS.
    Announce {
        meta: crate::meta::Meta,
    },
    /// Where discovery stands: now, or (`wait`) once no known peer is
    /// still being reached.
    Settled {
        reply: oneshot::Sender<Settle>,
        wait: bool,
    },
    /// Stop the node; the actor's task ends when it has.
    Close,
}

/// A running node, as its tasks share it.
pub(crate) struct Node {
    /// What its links share: their settings, the open-link table.
    pub(crate) links: Links,
    /// Slots for accepted connections in their handshake.
    pub(crate) gate: Arc<Gate>,
    /// Caps on accepted connections, in all and per network.
    pub(crate) caps: Arc<Caps>,
    /// Addresses of peers, which the gate lets in first.
    known: Mutex<Known>,
    /// Permits for connection attempts (held until their handshake ends).
    pub(crate) dials: Semaphore,
    /// The messaging layer, fed by every link.
    pub(crate) messaging: Arc<Messaging>,
    /// The membership view, fed by the actor and by messaging.
    pub(crate) members: Arc<Members>,
    /// The listen addresses when they are specific ones: dials go out from
    /// them too, so a node bound to one interface stays on it.
    pub(crate) dial_from: Vec<IpAddr>,
    /// Hints waiting for the actor, beside its commands so that they are
    /// bounded whatever peers send.
    unhandled: Mutex<Unhandled>,
    /// What mDNS said of peers that the actor has not taken, beside its
    /// commands so that they are bounded whatever the LAN sends.
    sightings: Mutex<Sightings>,
    cmd: mpsc::UnboundedSender<Command>,
    pub(crate) hub: Arc<Hub>,
}

impl Node {
    /// The shared state of a node about to start, and the actor's inbox.
    pub(crate) fn new(
        config: link::Config,
        dial_from: Vec<IpAddr>,
        hub: Arc<Hub>,
        messaging: Arc<Messaging>,
        members: Arc<Members>,
        caps: Caps,
        cancel: CancellationToken,
    ) -> (Arc<Node>, mpsc::UnboundedReceiver<Command>) {
        let (cmd, inbox) = mpsc::unbounded_channel();
        let node = Node {
            links: Links::new(
                config,
                messaging.open.clone(),
                messaging.clone(),
                cancel,
                hub.counters.clone(),
            ),
            gate: Arc::new(Gate::default()),
            caps: Arc::new(caps),
            known: Mutex::default(),
            dials: Semaphore::new(MAX_DIALS),
            messaging,
            members,
            dial_from,
            unhandled: Mutex::default(),
            sightings: Mutex::default(),
            cmd,
            hub,
        };
        (Arc::new(node), inbox)
    }

    pub(crate) fn id(&self) -> &NodeId {
        self.links.id()
    }

    /// Cancelled when the node closes: stops accepting, browsing, dialing
    /// and handshakes in progress (open links are closed gracefully instead).
    pub(crate) fn cancel(&self) -> &CancellationToken {
        &self.links.cancel
    }

    /// Remembers `ip` as a peer's address: a static peer's, or one a link
    /// proved a key from (see [`Known`]).
    pub(crate) fn know(&self, ip: IpAddr) {
        lock(&self.known).add(ip);
    }

    /// Remembers `ip` as a peer's address from its mDNS record (see
    /// [`Known`]).
    pub(crate) fn know_advertised(&self, ip: IpAddr) {
        lock(&self.known).add_advertised(ip);
    }

    /// True if `ip` is a peer's address.
    pub(crate) fn is_known(&self, ip: IpAddr) -> bool {
        lock(&self.known).contains(ip)
    }

    /// Sends the actor a command; false if the actor has stopped.
    pub(crate) fn send(&self, cmd: Command) -> bool {
        self.cmd.send(cmd).is_ok()
    }

    /// A peer's list of links gave `hints`: they wait for the actor with
    /// those of the same peer not taken yet (see [`Unhandled`]), and the
    /// actor is told when no hints waited. The teller's list is taken from
    /// messaging first, once, so that the hints lock is never held while
    /// the messaging state is taken, and a list costs that lock once
    /// however many members wait.
    pub(crate) fn hinted(&self, hints: Hints) {
        let list = self.messaging.list_of(&hints.from);
        let names = |m: &NodeId| list.as_ref().is_some_and(|l| l.names(m.as_str()));
        let tell = lock(&self.unhandled).offer(hints, names);
        if tell {
            self.send(Command::Hinted);
        }
    }

    /// The hints waiting for the actor, leaving none.
    pub(crate) fn take_hints(&self) -> Vec<Hints> {
        lock(&self.unhandled).take()
    }

    /// mDNS said `sighting` of `peer`: it waits for the actor in place of
    /// any older one of that peer (see [`Sightings`]), and the actor is told
    /// when none waited. With [`MAX_PEERS`](crate::limits::MAX_PEERS) other
    /// peers waiting, a record is refused as the mesh refuses one over
    /// that many peers, and a goodbye is dropped (the mesh verifies a
    /// peer whose dial is refused).
    pub(crate) fn sighted(&self, peer: NodeId, sighting: Sighting) {
        let found = matches!(sighting, Sighting::Found { .. });
        let offered = lock(&self.sightings).offer(peer.clone(), sighting);
        match offered {
            Ok(true) => {
                self.send(Command::Sighted);
            }
            Ok(false) => {}
            Err(_) if found => self.error(Error::TooManyPeers {
                peer,
                max: crate::limits::MAX_PEERS,
            }),
            Err(_) => tracing::debug!(%peer, "mDNS goodbye dropped: too many sightings waiting"),
        }
    }

    /// The sightings waiting for the actor, leaving none.
    pub(crate) fn take_sightings(&self) -> Vec<(NodeId, Sighting)> {
        lock(&self.sightings).take()
    }

    /// The node's figures now.
    #[cfg(feature = "metrics")]
    pub(crate) fn stats(&self) -> crate::stats::Stats {
        crate::node::service::stats(&self.messaging, &self.hub)
    }

    /// Reports a non-fatal error (see [`Hub::report`]).
    pub(crate) fn error(&self, e: Error) {
        self.hub.report(e);
    }
}

/// What the links of a node with `settings`, proving `identity`, say and
/// expect: `hello` is the node's hello but for its metadata and key, and
/// `keys` its keyring, with a secret.
pub(crate) fn link_config(
    hello: Hello,
    identity: &Identity,
    settings: &Settings,
    keys: Option<Arc<Mutex<Keyring>>>,
) -> link::Config {
    link::Config {
        hello,
        static_key: StaticKey::new(identity),
        keys,
        max_frame_len: settings.max_frame_len,
        handshake_timeout: settings.handshake_timeout,
        queue_len: settings.queue_len,
        queue_bytes: settings.queue_bytes,
        heartbeat_interval: settings.heartbeat_interval,
        heartbeat_timeout: settings.heartbeat_timeout,
        unread_timeout: settings.unread_timeout,
    }
}

impl link::Owner for Node {
    fn report(&self, event: Event) -> bool {
        self.send(Command::Link(event))
    }

    fn error(&self, e: Error) {
        Node::error(self, e)
    }

    fn hello_meta(&self) -> (u64, bytes::Bytes) {
        self.members.hello_meta()
    }
}
