//! Node ids: fixed-length hex strings.
//!
//! Every node of a cluster uses ids of the same length, so comparing two ids
//! as strings (after lower-casing) is the same as comparing them as numbers.
//! The one-link rule depends on that: both ends of a pair compare the same
//! two ids and reach the same answer.

use std::fmt;

use crate::error::Error;
use crate::limits::MAX_ID_LEN;

/// A node's id: a non-empty string of hex digits, stored lower-case.
///
/// ```
/// let id = tcpnet::NodeId::parse("0A0").unwrap();
/// assert_eq!(id.as_str(), "0a0");
/// assert!(tcpnet::NodeId::parse("xyz").is_err());
/// assert_eq!(tcpnet::NodeId::random().as_str().len(), 32);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    /// A random id: a UUID v4 as 32 lower-case hex digits.
    pub fn random() -> Self {
        NodeId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Checks and normalises an id: non-empty, at most 63 hex digits.
    pub fn parse(id: &str) -> Result<Self, Error> {
        let bad = |reason| Error::InvalidId {
            id: id.to_string(),
            reason,
        };
        if id.is_empty() {
            return Err(bad("must not be empty"));
        }
        if id.len() > MAX_ID_LEN {
            return Err(bad("must be at most 63 hex digits"));
        }
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("must contain only hex digits 0-9, a-f"));
        }
        Ok(NodeId(id.to_ascii_lowercase()))
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
    fn rejects_bad_ids_with_reasons() {
        for bad in ["", "g00", "12 3", &"a".repeat(64)] {
            match NodeId::parse(bad) {
                Err(Error::InvalidId { .. }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
