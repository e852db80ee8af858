//! The hello: the first frame each end of a new link sends.
//!
//! Both ends send their hello at once, without waiting for the other's, so a
//! link costs one round trip. The payload is:
//!
//! ```text
//! magic "tcpnet" (6) | version u16 | incarnation u64 | listen port u16 |
//! flags u8 | id length u8 | id (hex) | cluster length u8 | cluster name |
//! key id u32 (only with a secret) |
//! metadata version u64 | metadata length u16 | metadata
//! ```
//!
//! Flag bit 0 says the node has a cluster secret (see [`crate::wire::secure`]), so a
//! node with a secret and one without refuse each other with a clear reason;
//! the *key id* then names the key it uses when it dials (its keyring's
//! primary key), so the acceptor picks that key without trying any.
//! Bit 1 (set only with a secret) says its processor seals AES-GCM in
//! hardware; two nodes that both say so seal their link with AES-GCM, others
//! with ChaCha20-Poly1305. The other bits must be zero.
//!
//! The *metadata* is the node's (see [`crate::wire::meta`]), so a peer knows
//! it from the moment the link opens, static peers included; its version
//! grows with every change, so a peer can tell it from older copies that
//! reach it by other paths. It is checked apart from the rest: a hello whose
//! metadata breaks the bounds still links, without it.
//!
//! What a hello says is a claim: the handshake that follows (see
//! [`crate::wire::noise`]) has both hellos as its prologue and proves the
//! id's key, so the id, the incarnation and the rest only count once the
//! key's holder has vouched for them.
//!
//! The *incarnation* is the time the service started, in nanoseconds since
//! the Unix epoch. It tells a peer that restarted with the same id (newer
//! incarnation: its old link is stale) from a second link of the same running
//! peer (same incarnation: a duplicate) and from an *older* live node that
//! claims the same id (a conflict), and lets a node recognise a link to
//! itself.
//!
//! Parsing is pure and bounded (the frame that carries a hello is at most
//! [`MAX_HELLO`] bytes), so it is unit-tested and fuzzable without sockets.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::id::NodeId;
use crate::wire::meta::MAX_META_WIRE;
use crate::wire::secure::KeyId;

/// Identifies tcpnet's hello among whatever else may connect to the port.
pub(crate) const MAGIC: &[u8; 6] = b"tcpnet";
/// The protocol version this crate speaks; both ends must speak the same.
///
/// Version 2 added metadata to the hello and member records, heartbeat
/// timestamps and pings. Version 3 made the id the hash of the node's key,
/// proven by a Noise handshake after the hellos on every link, added the key
/// id to the hello, the key to the TXT record, and the close and twin
/// frames. Version 4 added to each line of a list of links the address
/// where that member listens. Nodes of different versions refuse each other.
pub const PROTOCOL_VERSION: u16 = 4;
/// Upper bound on a hello frame's payload.
pub(crate) const MAX_HELLO: usize = 6 + 2 + 8 + 2 + 1 + 1 + 63 + 1 + 63 + 4 + 8 + 2 + MAX_META_WIRE;
/// Flag: the node has a cluster secret.
const FLAG_SECRET: u8 = 0x01;
/// Flag: the node has AES hardware (see [`crate::wire::secure::Suite`]).
const FLAG_AES: u8 = 0x02;

/// What a node says about itself when a link opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub version: u16,
    pub incarnation: u64,
    pub port: u16,
    /// With a cluster secret: the key the node dials with.
    pub key: Option<KeyId>,
    /// The node seals AES-GCM in hardware.
    pub aes: bool,
    pub id: NodeId,
    pub cluster: String,
    /// The version of the node's metadata.
    pub meta_version: u64,
    /// The node's metadata, encoded (see [`crate::wire::meta`]); checked
    /// apart from the hello.
    pub meta: Bytes,
}

impl Hello {
    pub(crate) fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(MAX_HELLO);
        b.put_slice(MAGIC);
        b.put_u16(self.version);
        b.put_u64(self.incarnation);
        b.put_u16(self.port);
        let secret = if self.key.is_some() { FLAG_SECRET } else { 0 };
        let aes = if self.aes { FLAG_AES } else { 0 };
        b.put_u8(secret | aes);
        b.put_u8(self.id.len() as u8);
        b.put_slice(self.id.as_str().as_bytes());
        b.put_u8(self.cluster.len() as u8);
        b.put_slice(self.cluster.as_bytes());
        if let Some(key) = self.key {
            b.put_u32(key.0);
        }
        b.put_u64(self.meta_version);
        b.put_u16(self.meta.len() as u16);
        b.put_slice(&self.meta);
        b.freeze()
    }

    /// True if `raw` is a tcpnet hello of another protocol version (its
    /// magic and version are all that every version shares).
    pub(crate) fn of_another_version(raw: &[u8]) -> bool {
        raw.len() >= MAGIC.len() + 2
            && &raw[..MAGIC.len()] == MAGIC
            && u16::from_be_bytes([raw[MAGIC.len()], raw[MAGIC.len() + 1]]) != PROTOCOL_VERSION
    }

    /// Parses a hello payload. The error says what was wrong, for the error
    /// event that names the remote address.
    pub(crate) fn decode(mut b: &[u8]) -> Result<Hello, String> {
        if b.len() < MAGIC.len() || &b[..MAGIC.len()] != MAGIC {
            return Err("not a tcpnet node (bad magic)".into());
        }
        b.advance(MAGIC.len());
        if b.remaining() < 2 {
            return Err("truncated hello".into());
        }
        let version = b.get_u16();
        // What follows the version is the version's own: say so first.
        if version != PROTOCOL_VERSION {
            return Err(format!(
                "peer speaks protocol version {version}, we speak {PROTOCOL_VERSION}"
            ));
        }
        if b.remaining() < 8 + 2 + 1 + 1 {
            return Err("truncated hello".into());
        }
        let incarnation = b.get_u64();
        let port = b.get_u16();
        let flags = b.get_u8();
        if flags & !(FLAG_SECRET | FLAG_AES) != 0 {
            return Err(format!("unknown hello flags {flags:#04x}"));
        }
        let id = take_str(&mut b, "id")?;
        let id = NodeId::parse(id).map_err(|e| e.to_string())?;
        let cluster = take_str(&mut b, "cluster name")?;
        if let Err(reason) = valid_cluster_name(cluster) {
            return Err(format!("bad cluster name in hello: {reason}"));
        }
        let key = if flags & FLAG_SECRET != 0 {
            if b.remaining() < 4 {
                return Err("truncated hello: no key id".into());
            }
            Some(KeyId(b.get_u32()))
        } else {
            None
        };
        if b.remaining() < 8 + 2 {
            return Err("truncated hello: no metadata".into());
        }
        let meta_version = b.get_u64();
        let meta_len = b.get_u16() as usize;
        if meta_len > MAX_META_WIRE {
            return Err(format!(
                "metadata of {meta_len} bytes in hello, over {MAX_META_WIRE}"
            ));
        }
        if b.remaining() < meta_len {
            return Err("truncated hello: metadata cut short".into());
        }
        let meta = Bytes::copy_from_slice(&b[..meta_len]);
        b.advance(meta_len);
        if b.has_remaining() {
            return Err(format!("{} trailing bytes after hello", b.remaining()));
        }
        Ok(Hello {
            version,
            incarnation,
            port,
            key,
            aes: flags & FLAG_AES != 0,
            id,
            cluster: cluster.to_string(),
            meta_version,
            meta,
        })
    }
}

fn take_str<'a>(b: &mut &'a [u8], what: &str) -> Result<&'a str, String> {
    if !b.has_remaining() {
        return Err(format!("truncated hello: no {what} length"));
    }
    let len = b.get_u8() as usize;
    if b.remaining() < len {
        return Err(format!("truncated hello: {what} cut short"));
    }
    let (s, rest) = b.split_at(len);
    *b = rest;
    std::str::from_utf8(s).map_err(|_| format!("{what} is not UTF-8"))
}

/// Checks a cluster name; the error says what is wrong.
pub(crate) fn valid_cluster_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > 63 {
        return Err("must be at most 63 bytes");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err("may contain only ASCII letters, digits and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            incarnation: 0x0102_0304_0506_0708,
            port: 4000,
            key: Some(KeyId(0xdead_beef)),
            aes: true,
            id: NodeId::parse("00a").unwrap(),
            cluster: "my-cluster".into(),
            meta_version: 7,
            meta: Bytes::from_static(b"\x04role\x03web"),
        }
    }

    #[test]
    fn round_trip() {
        let h = sample();
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        let bare = Hello {
            meta: Bytes::new(),
            ..sample()
        };
        assert_eq!(Hello::decode(&bare.encode()).unwrap(), bare);
        let open = Hello {
            key: None,
            ..sample()
        };
        assert_eq!(Hello::decode(&open.encode()).unwrap(), open);
    }

    #[test]
    fn longest_hello_fits_the_bound() {
        let h = Hello {
            id: NodeId::parse(&"f".repeat(63)).unwrap(),
            cluster: "c".repeat(63),
            meta: vec![0; MAX_META_WIRE].into(),
            ..sample()
        };
        assert_eq!(h.encode().len(), MAX_HELLO);
        let over = Hello {
            meta: vec![0; MAX_META_WIRE + 1].into(),
            ..h
        };
        assert!(Hello::decode(&over.encode())
            .unwrap_err()
            .contains("over 4096"));
    }

    #[test]
    fn another_version_is_told_from_garbage() {
        let mut raw = sample().encode().to_vec();
        assert!(!Hello::of_another_version(&raw));
        raw[MAGIC.len() + 1] ^= 1;
        assert!(Hello::of_another_version(&raw));
        assert!(!Hello::of_another_version(b"GET / HTTP/1.1"));
    }

    #[test]
    fn another_version_is_named_before_anything_else() {
        let mut b = sample().encode().to_vec();
        b[6..8].copy_from_slice(&1u16.to_be_bytes());
        b.truncate(20);
        assert_eq!(
            Hello::decode(&b).unwrap_err(),
            format!("peer speaks protocol version 1, we speak {PROTOCOL_VERSION}")
        );
    }

    #[test]
    fn malformed_metadata_is_left_for_its_own_check() {
        let h = Hello {
            meta: Bytes::from_static(b"\x09cut short"),
            ..sample()
        };
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(Hello::decode(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        assert!(Hello::decode(b"GET / HTTP/1.1")
            .unwrap_err()
            .contains("magic"));
        let mut b = sample().encode().to_vec();
        b.push(0);
        assert!(Hello::decode(&b).unwrap_err().contains("trailing"));
        let mut b = sample().encode().to_vec();
        let id_at = 6 + 2 + 8 + 2 + 1 + 1;
        b[id_at] = b'z';
        assert!(Hello::decode(&b).unwrap_err().contains("hex"));
        let mut b = sample().encode().to_vec();
        b[id_at - 2] = 0x80;
        assert!(Hello::decode(&b).unwrap_err().contains("flags"));
    }
}

/// Why a well-formed hello is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Our own hello: a dial of ours that reached us (close quietly), or
    /// someone echoing it.
    SelfLink,
    /// Another cluster, version or id length, or a secret on one end only.
    Mismatch(String),
}

impl Hello {
    /// Checks a peer's hello against ours.
    pub(crate) fn check(&self, ours: &Hello) -> Result<(), Refusal> {
        if self.version != ours.version {
            return Err(Refusal::Mismatch(format!(
                "peer speaks protocol version {}, we speak {}",
                self.version, ours.version
            )));
        }
        if self.cluster != ours.cluster {
            return Err(Refusal::Mismatch(format!(
                "peer belongs to cluster {:?}, we to {:?}",
                self.cluster, ours.cluster
            )));
        }
        if self.key.is_some() != ours.key.is_some() {
            return Err(Refusal::Mismatch(if ours.key.is_some() {
                "we have a cluster secret and the peer has none".into()
            } else {
                "the peer has a cluster secret and we have none".into()
            }));
        }
        if self.id.len() != ours.id.len() {
            return Err(Refusal::Mismatch(format!(
                "peer id {} has {} hex digits, ours has {}",
                self.id,
                self.id.len(),
                ours.id.len()
            )));
        }
        // Our id with another incarnation is left to the handshake: only a
        // node that proves our key (a copy of it) is a conflict.
        if self.id == ours.id && self.incarnation == ours.incarnation {
            return Err(Refusal::SelfLink);
        }
        Ok(())
    }
}

#[cfg(test)]
mod check_tests {
    use super::*;

    fn ours() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            incarnation: 1,
            port: 1,
            key: None,
            aes: false,
            id: NodeId::parse("0a0").unwrap(),
            cluster: "c".into(),
            meta_version: 1,
            meta: Bytes::new(),
        }
    }

    #[test]
    fn refusals() {
        let o = ours();
        let peer = Hello {
            id: NodeId::parse("00a").unwrap(),
            incarnation: 2,
            ..o.clone()
        };
        assert_eq!(peer.check(&o), Ok(()));
        assert_eq!(o.check(&o), Err(Refusal::SelfLink));
        let twin = Hello {
            incarnation: 9,
            ..o.clone()
        };
        assert_eq!(twin.check(&o), Ok(()), "left to the handshake");
        for bad in [
            Hello {
                cluster: "d".into(),
                ..peer.clone()
            },
            Hello {
                version: PROTOCOL_VERSION + 1,
                ..peer.clone()
            },
            Hello {
                id: NodeId::parse("0000").unwrap(),
                ..peer.clone()
            },
            Hello {
                key: Some(KeyId(7)),
                ..peer.clone()
            },
        ] {
            assert!(matches!(bad.check(&o), Err(Refusal::Mismatch(_))));
        }
    }
}
