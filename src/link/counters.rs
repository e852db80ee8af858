//! What a link's read side counts: the frames that come in (added in
//! batches by whoever holds the read side, see [`crate::link::intake`]). What goes
//! out, heartbeats included, is counted by the send queue (see
//! [`crate::link::outbox`]).

use std::sync::atomic::AtomicU64;

use crate::wire::frame::LEN_BYTES;

#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
}

/// Bytes of a frame with `payload` bytes: length prefix, kind, payload.
pub(crate) fn frame_bytes(payload: usize) -> u64 {
    (LEN_BYTES + 1 + payload) as u64
}
