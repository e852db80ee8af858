//! Node ids: fixed-length hex strings, derived from the node's public key.
//!
//! A node's id is the hash of its identity's public key (see
//! [`crate::identity`]), 32 hex digits, so every node of a cluster has an
//! id of the same length, and comparing two ids as strings (after
//! lower-casing) is the same as comparing them as numbers. The one-link
//! rule depends on that: both ends of a pair compare the same two ids and
//! reach the same answer.

use std::borrow::Cow;
use std::fmt;

use crate::error::Error;
use crate::limits::MAX_ID_LEN;

/// A node's id: a non-empty string of hex digits, stored lower-case. A
/// node's own id is derived from its key pair ([`Identity::id`](crate::Identity::id)):
/// 32 hex digits.
///
/// ```
/// let id = tcpnet::NodeId::parse("0A0").unwrap();
/// assert_eq!(id.as_str(), "0a0");
/// assert!(tcpnet::NodeId::parse("xyz").is_err());
/// assert_eq!(tcpnet::Identity::generate().id().as_str().len(), 32);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    /// The id of the node whose identity's public key is `key`.
    pub(crate) fn of_key(key: &[u8]) -> Self {
        NodeId(hex::encode(crate::identity::id_of(key)))
    }

    /// True if `public_key` is this id's key (its hash is the id): the
    /// check a key sent beside a message needs before it counts.
    pub fn is_key_of(&self, public_key: &[u8]) -> bool {
        public_key.len() == crate::identity::PUBLIC_KEY_LEN && NodeId::of_key(public_key) == *self
    }

    /// True if `signature` is a signature of `msg` made by this id's node:
    /// `public_key` is the id's key ([`is_key_of`](Self::is_key_of)) and
    /// the Ed25519 signature checks out with it (see
    /// [`Identity::sign`](crate::Identity::sign)). A node's key comes with
    /// what it signs, or from its mDNS record (`Announcement::key`).
    pub fn verify(&self, public_key: &[u8], msg: &[u8], signature: &[u8]) -> bool {
        self.is_key_of(public_key) && crate::identity::verify(public_key, msg, signature)
    }

    /// Checks and normalises an id: non-empty, at most 63 hex digits.
    pub fn parse(id: &str) -> Result<Self, Error> {
        match problem(id) {
            Some(reason) => Err(Error::InvalidId {
                id: id.to_string(),
                reason,
            }),
            None => Ok(NodeId(id.to_ascii_lowercase())),
        }
    }

    /// `id` as [`parse`](Self::parse) would store it (lower-case), or
    /// `None` if it is not an id; borrowed when it is lower-case already.
    /// For lists of ids that are only looked up, hashed by
    /// [`as_str`](Self::as_str): no id is made.
    pub(crate) fn normal(id: &str) -> Option<Cow<'_, str>> {
        // Lists of links bring ids by the thousand while a mesh forms, all
        // lower-case already: one pass over the bytes with no early exit
        // (the compiler makes it a vector loop) tells those, three times
        // faster than the checks below.
        let other = id.bytes().fold(0u8, |other, b| {
            other | u8::from(!(b.is_ascii_digit() || b.wrapping_sub(b'a') < 6))
        });
        if other == 0 && !id.is_empty() && id.len() <= MAX_ID_LEN {
            Some(Cow::Borrowed(id))
        } else if problem(id).is_some() {
            None
        } else {
            // Hex digits of the right count, so some are upper-case.
            Some(Cow::Owned(id.to_ascii_lowercase()))
        }
    }

    /// The id whose normal form (see [`normal`](Self::normal)) is `normal`.
    pub(crate) fn from_normal(normal: &str) -> Self {
        debug_assert!(NodeId::normal(normal).is_some_and(|n| n == normal));
        NodeId(normal.to_string())
    }

    /// The id as a lower-case hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of hex digits.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: ids are never empty. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What is wrong with `id` as a node id, if anything.
fn problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("must not be empty")
    } else if id.len() > MAX_ID_LEN {
        Some("must be at most 63 hex digits")
    } else if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some("must contain only hex digits 0-9, a-f")
    } else {
        None
    }
}

/// Looked up by its text: a table of ids answers for an id read off the
/// wire without one being made (ids hash and compare as their text).
impl std::borrow::Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

/// The id `s` spells, for tests.
#[cfg(test)]
pub(crate) fn id(s: &str) -> NodeId {
    NodeId::parse(s).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_numeric_for_equal_lengths() {
        let a = NodeId::parse("00A").unwrap();
        let b = NodeId::parse("0a0").unwrap();
        assert!(a < b);
    }

    #[test]
    fn normal_forms_are_borrowed_lower_case_and_refuse_what_parse_refuses() {
        let lower = "0123456789abcdef".repeat(2);
        assert!(matches!(NodeId::normal(&lower), Some(Cow::Borrowed(s)) if s == lower));
        let upper = lower.to_ascii_uppercase();
        assert!(matches!(NodeId::normal(&upper), Some(Cow::Owned(s)) if s == lower));
        assert_eq!(NodeId::normal("0a0B").as_deref(), Some("0a0b"));
        assert_eq!(
            NodeId::normal(&"a".repeat(63)).as_deref(),
            Some(&*"a".repeat(63))
        );
        for bad in ["", "g00", "12 3", "ab\n", "\u{e9}", &"a".repeat(64)] {
            assert_eq!(NodeId::normal(bad), None, "{bad:?}");
            assert!(NodeId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_bad_ids_with_reasons() {
        for bad in ["", "g00", "12 3", &"a".repeat(64)] {
            match NodeId::parse(bad) {
                Err(Error::InvalidId { .. }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
