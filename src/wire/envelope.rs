//! The messaging envelope: what rides in a `MSG` frame.
//!
//! Raw frames (`DATA`) go to a link's own stream; everything the messaging
//! layer sends (direct messages, broadcasts, named events, topic traffic,
//! requests and replies, and its own bookkeeping) is a `MSG` frame whose
//! payload is one envelope:
//!
//! ```text
//! op u8 | flags u8 | hops u8 | origin len u8 | origin id | seq u64 |
//! corr u64 | name len u16 | name (UTF-8) | [key 32 | signature 64] | body
//! ```
//!
//! - `origin` and `seq` name a message cluster-wide: flooded messages are
//!   relayed by nodes that are not all linked to each other, and `(origin,
//!   seq)` lets every node drop the copies it already has.
//! - `hops` counts relays, and a message past [`MAX_HOPS`] is dropped, so a
//!   bug or a hostile peer cannot make one circulate forever.
//! - `corr` pairs a reply with its request.
//! - `name` is the event, topic or procedure name.
//! - With the [`SIGNED`] flag, the origin's Ed25519 public key and its
//!   signature of [`Envelope::digest`] (every field but `hops`, which relays
//!   change): a message that may be relayed carries it, so a node that
//!   receives it from another than its origin can tell it is the origin's.
//!
//! Decoding is pure and bounded, so it is unit-tested here.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::id::NodeId;
use crate::limits::MAX_NAME_LEN;

/// Most relays a flooded message may take.
pub(crate) const MAX_HOPS: u8 = 16;

/// What an envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// To the receiving node's message stream.
    Direct = 1,
    /// To every node's message stream.
    Broadcast = 2,
    /// A named event, to one node or every node.
    Event = 3,
    /// To every subscriber of a topic.
    Publish = 4,
    /// The origin's whole set of subscribed topics (body: one name per line).
    Interest = 5,
    /// Call a procedure; `corr` is the call's id.
    Request = 6,
    /// The answer to call `corr`.
    Reply = 7,
    /// The call `corr` failed: `name` is the error's name, the body its
    /// message.
    Fail = 8,
    /// The sender's direct links (body: see [`crate::wire::links`]), for
    /// relaying, and where each linked member listens.
    Neighbors = 9,
    /// The origin's member record (see [`crate::wire::record`]); `corr` is
    /// its version.
    Member = 10,
}

impl Op {
    fn from_u8(b: u8) -> Option<Op> {
        use Op::*;
        Some(match b {
            1 => Direct,
            2 => Broadcast,
            3 => Event,
            4 => Publish,
            5 => Interest,
            6 => Request,
            7 => Reply,
            8 => Fail,
            9 => Neighbors,
            10 => Member,
            _ => return None,
        })
    }
}

/// Flag: the message goes to every node (relayed where the mesh is not full).
pub(crate) const FLOOD: u8 = 0x01;
/// Flag: the origin's key and signature follow the name (see
/// [`Envelope::signature`]); only on a flooded message.
pub(crate) const SIGNED: u8 = 0x02;

/// Bytes of an Ed25519 public key.
pub(crate) const KEY_LEN: usize = 32;
/// Bytes of an Ed25519 signature.
pub(crate) const SIGNATURE_LEN: usize = 64;
/// Bytes a signature adds to an envelope: the key and the signature.
pub(crate) const SIGNED_LEN: usize = KEY_LEN + SIGNATURE_LEN;

/// The origin's public key and its signature of the envelope's
/// [`digest`](Envelope::digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Signature {
    pub key: [u8; KEY_LEN],
    pub sig: [u8; SIGNATURE_LEN],
}

/// One messaging envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub op: Op,
    pub flags: u8,
    pub hops: u8,
    pub origin: NodeId,
    pub seq: u64,
    pub corr: u64,
    pub name: String,
    pub body: Bytes,
    /// The origin's signature; sent with the [`SIGNED`] flag (which is not
    /// kept in `flags`).
    pub signature: Option<Signature>,
}

impl Envelope {
    pub(crate) fn flooded(&self) -> bool {
        self.flags & FLOOD != 0
    }

    /// The length of [`encode`](Self::encode)'s result.
    pub(crate) fn encoded_len(&self) -> usize {
        // op, flags, hops, the origin's length; number, correlation; the
        // name's length.
        let signature = if self.signature.is_some() {
            SIGNED_LEN
        } else {
            0
        };
        4 + self.origin.len() + 16 + 2 + self.name.len() + signature + self.body.len()
    }

    /// The flags as sent.
    fn wire_flags(&self) -> u8 {
        self.flags | if self.signature.is_some() { SIGNED } else { 0 }
    }

    /// What the origin signs: SHA-256 of every field but `hops` and the
    /// signature, each length-prefixed as on the wire, after a label of
    /// its own (no other signed thing of tcpnet can pass for one).
    pub(crate) fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"tcpnet envelope v1");
        h.update([self.op as u8, self.flags | SIGNED, self.origin.len() as u8]);
        h.update(self.origin.as_str().as_bytes());
        h.update(self.seq.to_be_bytes());
        h.update(self.corr.to_be_bytes());
        h.update((self.name.len() as u16).to_be_bytes());
        h.update(self.name.as_bytes());
        h.update(&self.body);
        h.finalize().into()
    }

    pub(crate) fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        b.put_u8(self.op as u8);
        b.put_u8(self.wire_flags());
        b.put_u8(self.hops);
        b.put_u8(self.origin.len() as u8);
        b.put_slice(self.origin.as_str().as_bytes());
        b.put_u64(self.seq);
        b.put_u64(self.corr);
        b.put_u16(self.name.len() as u16);
        b.put_slice(self.name.as_bytes());
        if let Some(s) = &self.signature {
            b.put_slice(&s.key);
            b.put_slice(&s.sig);
        }
        b.put_slice(&self.body);
        b.freeze()
    }

    /// Parses an envelope; the error says what was wrong.
    pub(crate) fn decode(mut b: Bytes) -> Result<Envelope, String> {
        if b.remaining() < 4 {
            return Err("truncated message header".into());
        }
        let op = b.get_u8();
        let op = Op::from_u8(op).ok_or_else(|| format!("unknown message op {op}"))?;
        let flags = b.get_u8();
        if flags & !(FLOOD | SIGNED) != 0 {
            return Err(format!("unknown message flags {flags:#04x}"));
        }
        if flags & SIGNED != 0 && flags & FLOOD == 0 {
            return Err("only a flooded message is signed".into());
        }
        if flags & FLOOD != 0
            && !matches!(
                op,
                Op::Broadcast | Op::Event | Op::Publish | Op::Interest | Op::Member
            )
        {
            return Err(format!("a {op:?} message cannot be flooded"));
        }
        let hops = b.get_u8();
        let len = b.get_u8() as usize;
        if b.remaining() < len + 8 + 8 + 2 {
            return Err("truncated message header".into());
        }
        let origin = std::str::from_utf8(&b[..len])
            .map_err(|_| "origin id is not UTF-8".to_string())
            .and_then(|s| NodeId::parse(s).map_err(|e| e.to_string()))?;
        b.advance(len);
        let seq = b.get_u64();
        let corr = b.get_u64();
        let len = b.get_u16() as usize;
        if len > MAX_NAME_LEN || b.remaining() < len {
            return Err(format!("bad name length {len}"));
        }
        let name = std::str::from_utf8(&b[..len])
            .map_err(|_| "name is not UTF-8".to_string())?
            .to_string();
        b.advance(len);
        let signature = if flags & SIGNED != 0 {
            if b.remaining() < SIGNED_LEN {
                return Err("truncated signature".into());
            }
            let mut s = Signature {
                key: [0; KEY_LEN],
                sig: [0; SIGNATURE_LEN],
            };
            b.copy_to_slice(&mut s.key);
            b.copy_to_slice(&mut s.sig);
            Some(s)
        } else {
            None
        };
        Ok(Envelope {
            op,
            flags: flags & !SIGNED,
            hops,
            origin,
            seq,
            corr,
            name,
            body: b,
            signature,
        })
    }
}

/// Names, one per line (the body of `Interest`).
pub(crate) fn lines(body: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(body)
        .unwrap_or("")
        .split('\n')
        .filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            op: Op::Publish,
            flags: FLOOD,
            hops: 2,
            origin: NodeId::parse("0a0b").unwrap(),
            seq: 7,
            corr: 0,
            name: "room".into(),
            body: Bytes::from_static(b"hi"),
            signature: None,
        }
    }

    fn signed() -> Envelope {
        Envelope {
            signature: Some(Signature {
                key: [1; KEY_LEN],
                sig: [2; SIGNATURE_LEN],
            }),
            ..sample()
        }
    }

    #[test]
    fn a_signature_round_trips_and_is_cut_short_only_as_an_error() {
        let e = signed();
        let bytes = e.encode();
        assert_eq!(bytes.len(), e.encoded_len());
        assert_eq!(Envelope::decode(bytes.clone()).unwrap(), e);
        let cut = bytes.len() - e.body.len() - 1;
        assert!(Envelope::decode(bytes.slice(..cut))
            .unwrap_err()
            .contains("signature"));
        let direct = Envelope {
            flags: 0,
            op: Op::Direct,
            ..signed()
        };
        assert!(Envelope::decode(direct.encode()).is_err());
    }

    /// The digest covers every field a relay must not change, and not the
    /// hop count, which every relay does change.
    #[test]
    fn the_digest_covers_all_but_the_hops() {
        let e = signed();
        let d = e.digest();
        assert_eq!(
            Envelope {
                hops: 9,
                ..e.clone()
            }
            .digest(),
            d
        );
        assert_eq!(
            Envelope {
                signature: None,
                ..e.clone()
            }
            .digest(),
            d
        );
        let changed = [
            Envelope {
                seq: 8,
                ..e.clone()
            },
            Envelope {
                corr: 1,
                ..e.clone()
            },
            Envelope {
                op: Op::Broadcast,
                ..e.clone()
            },
            Envelope {
                name: "rooms".into(),
                ..e.clone()
            },
            Envelope {
                body: Bytes::from_static(b"hj"),
                ..e.clone()
            },
            Envelope {
                origin: NodeId::parse("0a0c").unwrap(),
                ..e.clone()
            },
        ];
        for c in changed {
            assert_ne!(c.digest(), d, "{c:?}");
        }
    }

    #[test]
    fn round_trip() {
        let e = sample();
        assert_eq!(Envelope::decode(e.encode()).unwrap(), e);
    }

    #[test]
    fn every_truncation_of_the_header_is_an_error() {
        let bytes = sample().encode();
        let header = bytes.len() - 2;
        for n in 0..header {
            assert!(Envelope::decode(bytes.slice(..n)).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let mut b = sample().encode().to_vec();
        b[0] = 99;
        assert!(Envelope::decode(b.into()).unwrap_err().contains("op"));
        let mut b = sample().encode().to_vec();
        b[1] = 0x80;
        assert!(Envelope::decode(b.into()).unwrap_err().contains("flags"));
        let mut b = sample().encode().to_vec();
        b[4] = b'z';
        assert!(Envelope::decode(b.into()).is_err());
        // Only messages for everyone may be flooded (relayed): a flooded
        // request could claim any sender.
        let req = Envelope {
            op: Op::Request,
            ..sample()
        };
        assert!(Envelope::decode(req.encode())
            .unwrap_err()
            .contains("flooded"));
    }
}
