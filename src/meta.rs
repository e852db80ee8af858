//! Node metadata: the small string pairs a node says about itself (a role,
//! a version, the port of an HTTP server), and the bounds they keep.
//!
//! A node's metadata rides in its mDNS record and in its hello, and its
//! changes in messages to its peers; every copy that arrives from a peer is
//! checked against the same bounds as the node's own settings.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::MetaError;
use crate::limits::{MAX_META_BYTES, MAX_META_KEY_LEN, MAX_META_PAIRS, MAX_META_VALUE_LEN};

/// A node's metadata: at most [`MAX_META_PAIRS`] pairs of a key (1 to
/// [`MAX_META_KEY_LEN`] bytes of `a-z`, `0-9`, `.`, `_`, `-`) and a UTF-8
/// value (at most [`MAX_META_VALUE_LEN`] bytes), [`MAX_META_BYTES`] bytes in
/// all, sorted by key.
///
/// Set with [`Settings::meta`](crate::Settings::meta) and
/// [`Service::set_meta`](crate::Service::set_meta); read on every
/// [`Member`](crate::Member).
///
/// ```
/// let service = tcpnet::tcpnet(tcpnet::Settings::new("lab").meta("role", "gateway"))?;
/// let meta = service.meta();
/// assert_eq!(meta.get("role"), Some("gateway"));
/// assert_eq!(meta.to_string(), "role=gateway");
/// # Ok::<(), tcpnet::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Meta {
    pairs: BTreeMap<String, String>,
}

impl Meta {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key).map(String::as_str)
    }

    /// Every pair, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True without any pair.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Bytes of keys and values together (what [`MAX_META_BYTES`] bounds).
    pub fn bytes(&self) -> usize {
        self.pairs.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Metadata made of `pairs`, checked: a key given twice is malformed.
    pub(crate) fn from_pairs<K, V>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Meta, MetaError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut meta = Meta::default();
        for (key, value) in pairs {
            let (key, value) = (key.into(), value.into());
            check_pair(&key, &value)?;
            if meta.pairs.contains_key(&key) {
                return Err(MetaError::Malformed {
                    reason: format!("key {key:?} given twice"),
                });
            }
            meta.pairs.insert(key, value);
            meta.check_size()?;
        }
        Ok(meta)
    }

    /// Sets `key` to `value` if the result keeps the bounds; returns whether
    /// anything changed.
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Result<bool, MetaError> {
        check_pair(key, value)?;
        if self.get(key) == Some(value) {
            return Ok(false);
        }
        let mut next = self.clone();
        next.pairs.insert(key.to_string(), value.to_string());
        next.check_size()?;
        *self = next;
        Ok(true)
    }

    /// Removes `key`; returns whether it was set.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        self.pairs.remove(key).is_some()
    }

    fn check_size(&self) -> Result<(), MetaError> {
        if self.pairs.len() > MAX_META_PAIRS {
            return Err(MetaError::TooManyPairs {
                count: self.pairs.len(),
            });
        }
        let bytes = self.bytes();
        if bytes > MAX_META_BYTES {
            return Err(MetaError::TooLarge { bytes });
        }
        Ok(())
    }
}

/// Checks one pair against the bounds of a key and of a value.
pub(crate) fn check_pair(key: &str, value: &str) -> Result<(), MetaError> {
    check_key(key)?;
    if value.len() > MAX_META_VALUE_LEN {
        return Err(MetaError::ValueLength {
            key: key.to_string(),
            len: value.len(),
        });
    }
    Ok(())
}

/// Checks a key: 1 to [`MAX_META_KEY_LEN`] bytes of `a-z`, `0-9`, `.`, `_`, `-`.
pub(crate) fn check_key(key: &str) -> Result<(), MetaError> {
    if key.is_empty() || key.len() > MAX_META_KEY_LEN {
        return Err(MetaError::KeyLength {
            key: key.to_string(),
        });
    }
    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-');
    if let Some(found) = key.chars().find(|c| !allowed(*c)) {
        return Err(MetaError::KeyChars {
            key: key.to_string(),
            found,
        });
    }
    Ok(())
}

/// `key=value, key=value`, sorted by key.
impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Meta {
    type Item = (&'a str, &'a str);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a str)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("role").is_ok());
        assert!(check_key("http.port_2-x").is_ok());
        assert!(check_key(&"k".repeat(MAX_META_KEY_LEN)).is_ok());
        assert!(matches!(check_key(""), Err(MetaError::KeyLength { .. })));
        assert!(matches!(
            check_key(&"k".repeat(MAX_META_KEY_LEN + 1)),
            Err(MetaError::KeyLength { .. })
        ));
        for bad in ["Role", "a b", "a=b", "é"] {
            assert!(
                matches!(check_key(bad), Err(MetaError::KeyChars { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn values_pairs_and_size_are_bounded() {
        let mut m = Meta::default();
        assert_eq!(m.set("a", &"v".repeat(MAX_META_VALUE_LEN)), Ok(true));
        assert!(matches!(
            m.set("b", &"v".repeat(MAX_META_VALUE_LEN + 1)),
            Err(MetaError::ValueLength { len: 221, .. })
        ));
        // Four full values fill 4 * 221 bytes; the fifth goes over 1024 and
        // leaves the metadata as it was.
        for k in ["b", "c", "d"] {
            m.set(k, &"v".repeat(MAX_META_VALUE_LEN)).unwrap();
        }
        let before = m.clone();
        assert!(matches!(
            m.set("e", &"v".repeat(MAX_META_VALUE_LEN)),
            Err(MetaError::TooLarge { bytes: 1105 })
        ));
        assert_eq!(m, before);

        let mut m = Meta::default();
        for i in 0..MAX_META_PAIRS {
            m.set(&format!("k{i}"), "v").unwrap();
        }
        assert!(matches!(
            m.set("one-more", "v"),
            Err(MetaError::TooManyPairs { count: 17 })
        ));
        assert_eq!(m.len(), MAX_META_PAIRS);
    }

    #[test]
    fn setting_the_same_value_changes_nothing() {
        let mut m = Meta::from_pairs([("role", "web")]).unwrap();
        assert_eq!(m.set("role", "web"), Ok(false));
        assert_eq!(m.set("role", "db"), Ok(true));
        assert!(m.remove("role"));
        assert!(!m.remove("role"));
        assert!(m.is_empty());
    }

    #[test]
    fn a_key_twice_is_malformed() {
        assert!(matches!(
            Meta::from_pairs([("a", "1"), ("a", "2")]),
            Err(MetaError::Malformed { .. })
        ));
    }

    #[test]
    fn shown_sorted() {
        let m = Meta::from_pairs([("zone", "b"), ("role", "web")]).unwrap();
        assert_eq!(m.to_string(), "role=web, zone=b");
        assert_eq!(format!("{m:?}"), r#"{"role": "web", "zone": "b"}"#);
    }
}
