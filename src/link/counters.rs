//! What a link's read side counts: the frames that come in (added in
//! batches by whoever holds the read side, see [`crate::link::intake`]),
//! and whether the application takes them. What goes out, heartbeats
//! included, is counted by the send queue (see [`crate::link::outbox`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::wire::frame::LEN_BYTES;

#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// A handle handed out a received message since the node's ticker last
    /// looked (see [`crate::link::watchdog`]).
    handed_out: AtomicBool,
}

impl LinkCounters {
    /// A handle hands out a received message. A load first: the flag is
    /// written once a tick at most, not for every message.
    pub(crate) fn hand_out(&self) {
        if !self.handed_out.load(Ordering::Relaxed) {
            self.handed_out.store(true, Ordering::Relaxed);
        }
    }

    /// True if a handle handed out a message since the last call.
    pub(crate) fn take_handed_out(&self) -> bool {
        self.handed_out.load(Ordering::Relaxed) && self.handed_out.swap(false, Ordering::Relaxed)
    }
}

/// Bytes of a frame with `payload` bytes: length prefix, kind, payload.
pub(crate) fn frame_bytes(payload: usize) -> u64 {
    (LEN_BYTES + 1 + payload) as u64
}
