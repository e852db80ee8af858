//! What a link's task counts itself: the frames that come in. What goes
//! out, heartbeats included, is counted by the send queue (see
//! [`crate::link::outbox`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::frame::LEN_BYTES;

#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
}

impl LinkCounters {
    /// A frame of `payload` bytes came in.
    pub(crate) fn frame_in(&self, payload: usize) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in
            .fetch_add(frame_bytes(payload), Ordering::Relaxed);
    }
}

/// Bytes of a frame with `payload` bytes: length prefix, kind, payload.
pub(crate) fn frame_bytes(payload: usize) -> u64 {
    (LEN_BYTES + 1 + payload) as u64
}
