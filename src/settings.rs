//! What a service is configured with.

use std::time::Duration;

/// Default largest user frame: 8 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 * 1024 * 1024;
/// Default time a new link has to complete its handshake: 3 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default depth of each link's send and receive queues, in frames.
pub const DEFAULT_QUEUE_LEN: usize = 1024;

/// A service's settings: the cluster name (required) and options.
///
/// A plain `&str` or `String` converts into settings with every option at its
/// default, so `tcpnet::tcpnet("my-cluster")` and
/// `tcpnet::tcpnet(Settings::new("my-cluster"))` are the same.
///
/// ```
/// use std::time::Duration;
/// use tcpnet::Settings;
///
/// let settings = Settings::new("my-cluster")
///     .id("00ff00ff00ff00ff00ff00ff00ff00ff")
///     .max_frame_len(1 << 20)
///     .handshake_timeout(Duration::from_secs(1));
/// let service = tcpnet::Service::new(settings)?;
/// assert_eq!(service.id().as_str(), "00ff00ff00ff00ff00ff00ff00ff00ff");
/// # Ok::<(), tcpnet::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) name: String,
    pub(crate) id: Option<String>,
    pub(crate) max_frame_len: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) queue_len: usize,
}

impl Settings {
    /// Settings for the cluster `name`: 1 to 63 bytes of ASCII letters,
    /// digits and `-`. Checked by [`Service::new`](crate::Service::new).
    pub fn new(name: impl Into<String>) -> Self {
        Settings {
            name: name.into(),
            id: None,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            queue_len: DEFAULT_QUEUE_LEN,
        }
    }

    /// This node's id: hex digits, the same length on every node of the
    /// cluster. Default: a random UUID v4 as 32 hex digits.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Largest user frame in bytes, sent or received. A larger incoming
    /// frame closes its link with an error event; a larger outgoing one is
    /// refused by `send`. Default [`DEFAULT_MAX_FRAME_LEN`] (8 MiB); at most
    /// `u32::MAX - 1`.
    pub fn max_frame_len(mut self, len: usize) -> Self {
        self.max_frame_len = len;
        self
    }

    /// Time a new link has to finish its handshake before it is dropped.
    /// Default [`DEFAULT_HANDSHAKE_TIMEOUT`] (3 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Frames each link buffers in each direction before `send` waits (and
    /// before the link stops reading from its socket). Default
    /// [`DEFAULT_QUEUE_LEN`].
    pub fn queue_len(mut self, frames: usize) -> Self {
        self.queue_len = frames;
        self
    }
}

impl From<&str> for Settings {
    fn from(name: &str) -> Self {
        Settings::new(name)
    }
}

impl From<String> for Settings {
    fn from(name: String) -> Self {
        Settings::new(name)
    }
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
