//! What a link's task counts itself: the frames that come in, and the
//! frames it writes of its own (heartbeats). What senders queue is counted
//! by the send queue (see [`crate::link::outbox`]).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::frame::LEN_BYTES;

#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub own_frames_out: AtomicU64,
    pub own_bytes_out: AtomicU64,
}

impl LinkCounters {
    /// A frame of `payload` bytes came in.
    pub(crate) fn frame_in(&self, payload: usize) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in
            .fetch_add(frame_bytes(payload), Ordering::Relaxed);
    }

    /// The link's task wrote a frame of its own.
    pub(crate) fn own_frame_out(&self, payload: usize) {
        self.own_frames_out.fetch_add(1, Ordering::Relaxed);
        self.own_bytes_out
            .fetch_add(frame_bytes(payload), Ordering::Relaxed);
    }
}

/// Bytes of a frame with `payload` bytes: length prefix, kind, payload.
pub(crate) fn frame_bytes(payload: usize) -> u64 {
    (LEN_BYTES + 1 + payload) as u64
}
