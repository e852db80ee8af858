//! Caps on the links others open to a node: in all, and per network prefix
//! (an IPv4 /24, an IPv6 /64; see [`Prefix`]). A connection is counted from
//! its accept to its end, handshake and link alike, so a stranger cannot
//! hold more than [`Settings::max_links_per_prefix`](crate::Settings::max_links_per_prefix)
//! sockets, tasks and queues from its network, nor all strangers together
//! more than [`Settings::max_links`](crate::Settings::max_links). Links
//! this node dials are not counted: they go to peers it chose.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::node::gate::Prefix;
use crate::sync::lock;

/// The counts of one node.
pub(crate) struct Caps {
    max: usize,
    per_prefix: usize,
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_prefix: HashMap<Prefix, usize>,
}

/// One accepted connection, counted until dropped.
pub(crate) struct Held {
    caps: Arc<Caps>,
    prefix: Prefix,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Over {
    /// The node holds `max` accepted connections.
    All { max: usize },
    /// The node holds `max` accepted connections from this network.
    Prefix { max: usize },
}

impl Caps {
    pub(crate) fn new(max: usize, per_prefix: usize) -> Caps {
        Caps {
            max,
            per_prefix,
            state: Mutex::default(),
        }
    }

    /// Counts a connection accepted from `ip`, or says which cap it is over.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Held, Over> {
        let prefix = Prefix::of(ip);
        let mut st = lock(&self.state);
        if st.total >= self.max {
            return Err(Over::All { max: self.max });
        }
        let n = st.by_prefix.entry(prefix).or_default();
        if *n >= self.per_prefix {
            return Err(Over::Prefix {
                max: self.per_prefix,
            });
        }
        *n += 1;
        st.total += 1;
        Ok(Held {
            caps: self.clone(),
            prefix,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut st = lock(&self.caps.state);
        st.total -= 1;
        if let Some(n) = st.by_prefix.get_mut(&self.prefix) {
            *n -= 1;
            if *n == 0 {
                st.by_prefix.remove(&self.prefix);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn links_are_capped_per_prefix_and_in_all_until_they_end() {
        let caps = Arc::new(Caps::new(4, 2));
        let a1 = caps.take(ip("10.0.1.1")).unwrap();
        let _a2 = caps.take(ip("10.0.1.2")).unwrap();
        assert_eq!(
            caps.take(ip("10.0.1.3")).err(),
            Some(Over::Prefix { max: 2 }),
            "a third from one /24"
        );
        let _b1 = caps.take(ip("10.0.2.1")).unwrap();
        let _v6 = caps.take(ip("fd00::1")).unwrap();
        assert_eq!(caps.take(ip("10.0.3.1")).err(), Some(Over::All { max: 4 }));
        drop(a1);
        let _a3 = caps.take(ip("10.0.1.3")).unwrap();
        // One /64 is one network, however many addresses it holds.
        let caps = Arc::new(Caps::new(10, 1));
        let _x = caps.take(ip("fd00::1")).unwrap();
        assert!(caps.take(ip("fd00::ffff:1")).is_err());
        assert!(caps.take(ip("fd00:0:0:1::1")).is_ok());
    }
}
