//! Metadata on the wire, in hellos and member records:
//!
//! ```text
//! ( key length u8 | key | value length u8 | value )*
//! ```
//!
//! Decoding is pure and checks everything [`Meta`] bounds, so a peer's
//! metadata is held to the same rules as a node's own settings.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::MetaError;
use crate::limits::{MAX_META_KEY_LEN, MAX_META_PAIRS, MAX_META_VALUE_LEN};
use crate::meta::Meta;

/// Most bytes of encoded metadata a hello may carry. Valid metadata needs
/// at most `MAX_META_BYTES + 2 * MAX_META_PAIRS` (1056) bytes; the room
/// above that lets metadata over the bounds be read and refused as such
/// (the link goes on without it) rather than taken for a broken hello.
pub(crate) const MAX_META_WIRE: usize = 4096;

/// Encodes `meta` (already within its bounds).
pub(crate) fn encode(meta: &Meta) -> Bytes {
    let mut b = BytesMut::with_capacity(meta.bytes() + 2 * meta.len());
    for (k, v) in meta.iter() {
        debug_assert!(k.len() <= MAX_META_KEY_LEN && v.len() <= MAX_META_VALUE_LEN);
        b.put_u8(k.len() as u8);
        b.put_slice(k.as_bytes());
        b.put_u8(v.len() as u8);
        b.put_slice(v.as_bytes());
    }
    b.freeze()
}

/// Decodes and checks metadata from a peer.
pub(crate) fn decode(mut b: &[u8]) -> Result<Meta, MetaError> {
    let mut pairs = Vec::new();
    while !b.is_empty() {
        if pairs.len() == MAX_META_PAIRS {
            // Count them all for the error, without keeping them.
            let mut count = pairs.len();
            while !b.is_empty() {
                take(&mut b, "key")?;
                take(&mut b, "value")?;
                count += 1;
            }
            return Err(MetaError::TooManyPairs { count });
        }
        let key = take(&mut b, "key")?;
        let value = take(&mut b, "value")?;
        pairs.push((key, value));
    }
    Meta::from_pairs(pairs)
}

fn take<'a>(b: &mut &'a [u8], what: &str) -> Result<&'a str, MetaError> {
    let malformed = |reason: String| MetaError::Malformed { reason };
    let (&len, rest) = b
        .split_first()
        .ok_or_else(|| malformed(format!("no {what} length")))?;
    let len = len as usize;
    if rest.len() < len {
        return Err(malformed(format!("{what} cut short")));
    }
    let (s, rest) = rest.split_at(len);
    *b = rest;
    std::str::from_utf8(s).map_err(|_| malformed(format!("{what} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_META_BYTES;

    #[test]
    fn round_trip() {
        let m = Meta::from_pairs([("role", "gateway"), ("http", "10.99.0.2:8080")]).unwrap();
        assert_eq!(decode(&encode(&m)).unwrap(), m);
        assert_eq!(decode(&[]).unwrap(), Meta::default());
    }

    #[test]
    fn the_largest_valid_metadata_fits_the_wire_bound() {
        let value = "v".repeat(MAX_META_BYTES / MAX_META_PAIRS - 2);
        let m = Meta::from_pairs((0..MAX_META_PAIRS).map(|i| (format!("{i:02}"), value.clone())))
            .unwrap();
        assert_eq!(m.bytes(), MAX_META_BYTES);
        assert_eq!(encode(&m).len(), MAX_META_BYTES + 2 * MAX_META_PAIRS);
        assert!(encode(&m).len() <= MAX_META_WIRE);
    }

    #[test]
    fn every_truncation_is_malformed() {
        let bytes = encode(&Meta::from_pairs([("role", "web")]).unwrap());
        for n in 1..bytes.len() {
            assert!(
                matches!(decode(&bytes[..n]), Err(MetaError::Malformed { .. })),
                "{n}"
            );
        }
    }

    #[test]
    fn a_peers_metadata_is_held_to_the_bounds() {
        let pair = |k: &str, v: &[u8]| {
            let mut b = vec![k.len() as u8];
            b.extend_from_slice(k.as_bytes());
            b.push(v.len() as u8);
            b.extend_from_slice(v);
            b
        };
        assert!(matches!(
            decode(&pair("Bad", b"x")),
            Err(MetaError::KeyChars { .. })
        ));
        assert!(matches!(
            decode(&pair("k", &[b'v'; 255])),
            Err(MetaError::ValueLength { len: 255, .. })
        ));
        assert!(matches!(
            decode(&pair("k", &[0xff])),
            Err(MetaError::Malformed { .. })
        ));
        let many: Vec<u8> = (0..20).flat_map(|i| pair(&format!("k{i}"), b"v")).collect();
        assert!(matches!(
            decode(&many),
            Err(MetaError::TooManyPairs { count: 20 })
        ));
        let large: Vec<u8> = (0..5)
            .flat_map(|i| pair(&format!("{i}"), &[b'v'; 220]))
            .collect();
        assert!(matches!(decode(&large), Err(MetaError::TooLarge { .. })));
    }
}
