//! Entry points for the benchmark suite and the formation example, which
//! measure parts of a mass start alone: the crate's own code run in ways
//! the API does not offer. Compiled only with the `bench` feature (which
//! the crate's dev-dependency on itself turns on); not part of the API.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::identity::Identity;
use crate::node::Settings;
use crate::wire::envelope::{Envelope, Signature};
use crate::wire::frame::{self, Frame};
use crate::wire::hello::{Hello, PROTOCOL_VERSION};
use crate::wire::noise::{prologue, Handshake, Mode, StaticKey};
use crate::wire::record::Record;
use crate::wire::secure::{Psk, Suite};

/// `settings` for a node that only discovers: it listens, announces and
/// browses over mDNS, and lists what it resolves in
/// [`Service::advertised`](crate::Service::advertised), as every node
/// does, but dials no one.
pub fn discover_only(settings: Settings) -> Settings {
    Settings {
        dial: false,
        ..settings
    }
}

/// How many peers `service` sees advertised over mDNS: the length of
/// [`Service::advertised`](crate::Service::advertised), without copying
/// the list (a node that only discovers is asked every 50 ms).
pub fn advertised(service: &crate::Service) -> usize {
    service.advertised_len()
}

/// What one node brings to its handshakes: its identity, its Noise static
/// key (with the identity's proof), its hello, and its member record as a
/// signed envelope, encoded, as it sends it on each new link.
struct Node {
    static_key: StaticKey,
    hello: Hello,
    record: Bytes,
    psk: Option<Psk>,
}

impl Node {
    fn new(cluster: &str, secret: Option<&[u8]>, port: u16) -> Node {
        let identity = Identity::generate();
        let incarnation = 1_700_000_000_000_000_000 + u64::from(port);
        let hello = Hello {
            version: PROTOCOL_VERSION,
            incarnation,
            port,
            key: None,
            aes: secret.is_some() && Suite::aes_hardware(),
            id: identity.id().clone(),
            cluster: cluster.into(),
            meta_version: incarnation,
            meta: Bytes::new(),
        };
        let (record, _) = Record::of_hello(&hello);
        let mut e = record.envelope(identity.id().clone());
        e.signature = Some(Signature {
            key: identity.public_key(),
            sig: identity.sign(&e.digest()),
        });
        let psk = secret.map(|s| Psk::derive(s, cluster));
        Node {
            static_key: StaticKey::new(&identity),
            hello: Hello {
                key: psk.as_ref().map(Psk::id),
                ..hello
            },
            record: e.encode(),
            psk,
        }
    }

    /// This node's hello for one handshake, encoded (a link encodes it
    /// anew each time, with the metadata of the moment).
    fn hello(&self) -> Bytes {
        self.hello.clone().encode()
    }

    /// The peer's hello, decoded and checked against ours.
    fn checked(&self, raw: &[u8]) -> Hello {
        let theirs = Hello::decode(raw).expect("a good hello");
        theirs.check(&self.hello).expect("a hello we link with");
        theirs
    }

    /// The peer's signed member record, decoded and its signature
    /// checked, as a node checks a record that is news.
    fn check_record(&self, peer: &Hello, raw: &Bytes) {
        let e = Envelope::decode(raw.clone()).expect("an envelope");
        assert_eq!(e.origin, peer.id);
        Record::decode(&e.body, e.corr).expect("a record");
        let s = e.signature.expect("signed");
        assert!(e.origin.verify(&s.key, &e.digest(), &s.sig), "its origin's");
    }

    fn mode(&self, peer: &Hello) -> Mode<'_> {
        match &self.psk {
            None => Mode::Open,
            Some(psk) => Mode::Secret {
                psk,
                suite: Suite::agreed(self.hello.aes, peer.aes),
            },
        }
    }
}

/// One link's handshake between `d` (the dialer) and `a`, both ends in
/// this thread, with the messages handed over in memory: the hellos
/// encoded, decoded and checked, the three Noise XX messages with both
/// proofs of identity checked against the hellos, with the secret the
/// acceptor's key confirmation sealed and opened, and each end's check of
/// the other's signed member record (which a node checks once, when the
/// link brings it). Panics if any step fails.
fn link(d: &Node, a: &Node) {
    let (dh, ah) = (d.hello(), a.hello());
    // The peer's hello as each end reads it.
    let (d_sees, a_sees) = (d.checked(&ah), a.checked(&dh));
    let p = prologue(&dh, &ah);
    let (dm, am) = (d.mode(&d_sees), a.mode(&a_sees));
    let mut hd = Handshake::new(&dm, true, &p, &d.static_key).expect("dialer");
    let mut ha = Handshake::new(&am, false, &p, &a.static_key).expect("acceptor");
    ha.read_first(&hd.first().expect("msg 1")).expect("msg 1");
    let acceptor = hd.read_second(&ha.second().expect("msg 2"));
    assert_eq!(acceptor.expect("its proof").id, d_sees.id);
    let dialer = ha.read_third(&hd.third().expect("msg 3"));
    assert_eq!(dialer.expect("its proof").id, a_sees.id);
    let (dk, ak) = (hd.finish().expect("keys"), ha.finish().expect("keys"));
    if let (Some(mut dk), Some(mut ak)) = (dk, ak) {
        let mut record = BytesMut::new();
        ak.encoder(usize::MAX)
            .encode(Frame::control(frame::NOISE), &mut record)
            .expect("sealed");
        ak.sent_one();
        let got = dk
            .decoder(usize::MAX, Arc::default())
            .decode(&mut record)
            .expect("opened");
        assert!(got.is_some_and(|f| f.kind == frame::NOISE && f.payload.is_empty()));
        dk.received_one();
    }
    std::hint::black_box((Record::of_hello(&d_sees), Record::of_hello(&a_sees)));
    d.check_record(&d_sees, &a.record);
    a.check_record(&a_sees, &d.record);
}

/// The nodes of a cluster, made for [`Cluster::link_all`]: each with its
/// own identity, Noise static key, hello and signed member record, as
/// `nodes` processes of one cluster have (with `secret`, its pre-shared
/// key).
pub struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    /// `nodes` nodes of one cluster; with `secret`, a cluster secret.
    pub fn new(nodes: usize, secret: Option<&[u8]>) -> Cluster {
        Cluster {
            nodes: (0..nodes)
                .map(|i| Node::new("bench-handshakes", secret, 4000 + i as u16))
                .collect(),
        }
    }

    /// Runs the handshake of every pair, one after the other in this
    /// thread, the node of the lower index dialing: n(n - 1)/2 links, each
    /// as a link makes it once the TCP connection is up (see `link`), with
    /// no socket, task or timer. Returns the links made; panics if one
    /// fails.
    pub fn link_all(&self) -> usize {
        let mut made = 0;
        for (i, d) in self.nodes.iter().enumerate() {
            for a in &self.nodes[i + 1..] {
                link(d, a);
                made += 1;
            }
        }
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_links_in_the_clear_and_with_a_secret() {
        assert_eq!(Cluster::new(4, None).link_all(), 6);
        let secret = b"0123456789abcdef0123456789abcdef";
        assert_eq!(Cluster::new(3, Some(secret)).link_all(), 3);
    }
}
