//! Limits on what one client may send and hold. Everything a client can
//! grow is bounded here.

use std::time::Duration;

use crate::cluster::view::ShareLimits;

/// Per-connection and per-node limits. The defaults suit a chat-like load;
/// every field can be set from the command line.
///
/// ```
/// use tcpnet_gateway::Limits;
/// let limits = Limits {
///     rate: 50.0,
///     ..Limits::default()
/// };
/// assert_eq!(limits.burst, Limits::default().burst);
/// ```
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest text frame the server takes, in bytes: a larger one is
    /// refused with a `too-large` error and the connection stays up.
    pub max_message: usize,
    /// Largest WebSocket message or frame at all, in bytes: a larger one
    /// closes the connection (code 1009), since it is not even read.
    pub max_frame: usize,
    /// Frames queued for one client at most; a client whose queue is full
    /// is disconnected (code 1008, reason "outgoing queue full").
    pub queue_len: usize,
    /// Bytes queued for one client at most (same consequence).
    pub queue_bytes: usize,
    /// Messages per second a client may send, on average.
    pub rate: f64,
    /// Messages a client may send in a burst above the rate.
    pub burst: f64,
    /// Channels one connection may subscribe at once.
    pub max_subscriptions: usize,
    /// Keys one connection may watch at once.
    pub max_watches: usize,
    /// Procedure calls one connection may have under way at once.
    pub max_calls: usize,
    /// Longest timeout a call may ask for (also its default).
    pub call_timeout: Duration,
    /// WebSocket connections this node holds at most.
    pub max_connections: usize,
    /// Keys the cluster view holds at most for each other gateway node: a
    /// node whose share passes it has its keys and members dropped until
    /// it sends a snapshot within the limits. An honest node holds at most
    /// one key per connection, so this should be at least the other
    /// nodes' `max_connections`.
    pub max_node_keys: usize,
    /// Channel members (over every channel) the cluster view holds at most
    /// for each other gateway node, with the same consequence. An honest
    /// node holds one per subscription of its connections.
    pub max_node_members: usize,
    /// Origins allowed to open a WebSocket (the `Origin` header, e.g.
    /// `https://example.com`); empty allows any, and requests without an
    /// `Origin` header (non-browser clients) are always allowed.
    pub allowed_origins: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 64 * 1024,
            max_frame: 1024 * 1024,
            queue_len: 1024,
            queue_bytes: 1024 * 1024,
            rate: 500.0,
            burst: 1000.0,
            max_subscriptions: 256,
            max_watches: 1024,
            max_calls: 32,
            call_timeout: Duration::from_secs(10),
            max_connections: 20_000,
            max_node_keys: ShareLimits::default().keys,
            max_node_members: ShareLimits::default().members,
            allowed_origins: Vec::new(),
        }
    }
}

impl Limits {
    /// The bounds on each other node's share of the cluster view.
    pub(crate) fn share(&self) -> ShareLimits {
        ShareLimits {
            keys: self.max_node_keys,
            members: self.max_node_members,
        }
    }

    /// Whether a WebSocket may be opened from this `Origin` header value.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => {
                self.allowed_origins.is_empty()
                    || self.allowed_origins.iter().any(|a| a == o || a == "*")
            }
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl Bucket {
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Bucket {
            rate,
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: tokio::time::Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now: tokio::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = tokio::time::Instant::now();
        let mut b = Bucket::new(10.0, 3.0);
        b.last = t0;
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(150)));
        // Saved up, but no more than the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }

    #[test]
    fn origins() {
        let mut l = Limits::default();
        assert!(l.origin_allowed(Some("http://x")));
        l.allowed_origins = vec!["http://a".into()];
        assert!(l.origin_allowed(Some("http://a")));
        assert!(!l.origin_allowed(Some("http://b")));
        assert!(l.origin_allowed(None));
    }
}
