//! A member record: what a node says about itself to the cluster, in its
//! hello and, on every change, in a messaging envelope of its own
//! ([`Op::Member`](crate::wire::envelope::Op::Member), whose `corr` carries
//! the record's version). The envelope's body is:
//!
//! ```text
//! incarnation u64 | listen port u16 | state u8 (0 up, 1 leaving) | metadata
//! ```
//!
//! The version grows with every change and starts, for each incarnation, at
//! the incarnation itself (a start time in nanoseconds), so a restarted node
//! speaks above its old records and copies that arrive late, by other
//! paths, are told apart from news.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::MetaError;
use crate::id::NodeId;
use crate::meta::Meta;
use crate::wire::envelope::{Envelope, Op, FLOOD};
use crate::wire::hello::Hello;
use crate::wire::meta::{self, MAX_META_WIRE};

/// A node's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub incarnation: u64,
    /// Where it listens.
    pub port: u16,
    pub version: u64,
    /// It is leaving (its last record, sent as it closes).
    pub leaving: bool,
    /// Its metadata; `None` when what came broke the bounds (the node then
    /// keeps the metadata it had).
    pub meta: Option<Meta>,
}

/// A record as it arrived, and what was wrong with its metadata.
pub(crate) type Decoded = (Record, Option<MetaError>);

impl Record {
    /// This record of `origin`'s, in the envelope that floods it through
    /// the mesh, to be signed by its origin.
    pub(crate) fn envelope(&self, origin: NodeId) -> Envelope {
        Envelope {
            op: Op::Member,
            flags: FLOOD,
            hops: 0,
            origin,
            seq: 0,
            corr: self.version,
            name: String::new(),
            body: self.encode(),
            signature: None,
        }
    }

    /// The record a hello carries.
    pub(crate) fn of_hello(h: &Hello) -> Decoded {
        let (meta, bad) = split(meta::decode(&h.meta));
        let record = Record {
            incarnation: h.incarnation,
            port: h.port,
            version: h.meta_version,
            leaving: false,
            meta,
        };
        (record, bad)
    }

    /// The body of the record's envelope (the version goes in its `corr`).
    pub(crate) fn encode(&self) -> Bytes {
        let meta = self.meta.as_ref().map(meta::encode).unwrap_or_default();
        let mut b = BytesMut::with_capacity(11 + meta.len());
        b.put_u64(self.incarnation);
        b.put_u16(self.port);
        b.put_u8(u8::from(self.leaving));
        b.put_slice(&meta);
        b.freeze()
    }

    /// Parses an envelope's body. An error is a malformed record; metadata
    /// over the bounds is not an error here, but the second half of the
    /// answer.
    pub(crate) fn decode(mut b: &[u8], version: u64) -> Result<Decoded, String> {
        if b.remaining() < 11 {
            return Err("truncated member record".into());
        }
        let incarnation = b.get_u64();
        let port = b.get_u16();
        let leaving = match b.get_u8() {
            0 => false,
            1 => true,
            s => return Err(format!("unknown member state {s}")),
        };
        if b.len() > MAX_META_WIRE {
            return Err(format!(
                "metadata of {} bytes in a member record, over {MAX_META_WIRE}",
                b.len()
            ));
        }
        let (meta, bad) = split(meta::decode(b));
        let record = Record {
            incarnation,
            port,
            version,
            leaving,
            meta,
        };
        Ok((record, bad))
    }
}

fn split(r: Result<Meta, MetaError>) -> (Option<Meta>, Option<MetaError>) {
    match r {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            incarnation: 1_700_000_000_000_000_000,
            port: 4000,
            version: 1_700_000_000_000_000_003,
            leaving: false,
            meta: Some(Meta::from_pairs([("role", "gateway")]).unwrap()),
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        assert_eq!(Record::decode(&r.encode(), r.version).unwrap(), (r, None));
        let gone = Record {
            leaving: true,
            ..sample()
        };
        assert_eq!(
            Record::decode(&gone.encode(), gone.version).unwrap(),
            (gone, None)
        );
    }

    #[test]
    fn bad_metadata_leaves_the_rest_of_the_record() {
        let mut body = Record {
            meta: None,
            ..sample()
        }
        .encode()
        .to_vec();
        body.extend_from_slice(b"\x03Bad\x01x");
        let (r, bad) = Record::decode(&body, 9).unwrap();
        assert_eq!((r.port, r.meta), (4000, None));
        assert!(matches!(bad, Some(MetaError::KeyChars { .. })));
    }

    #[test]
    fn malformed_records_are_errors() {
        let body = sample().encode();
        for n in 0..11 {
            assert!(Record::decode(&body[..n], 1).is_err());
        }
        let mut b = body.to_vec();
        b[10] = 7;
        assert!(Record::decode(&b, 1).unwrap_err().contains("state"));
    }
}
