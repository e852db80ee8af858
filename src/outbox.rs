//! A link's send queue, holding frames already encoded.
//!
//! A frame is encoded by the task that sends it, under the queue's lock, into
//! one growing buffer; the link's task takes everything queued at once and
//! writes it. So the link's task does no work per frame, and the sender's
//! payload is released where it was made (a payload dropped on another
//! thread costs a cache miss on its reference count, per frame). A payload of
//! at least [`ZERO_COPY`] bytes is not copied: the buffer is cut after its
//! header and the payload queued as it is, to be written by a vectored write.
//!
//! Order is the order of the pushes, across all senders.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{Frame, LEN_BYTES};
use crate::queue::{self, Store, Taken};
use crate::writer::ZERO_COPY;

/// The sending end of a link's send queue.
pub(crate) type OutTx = queue::Sender<Outbox>;
/// The link task's end of its send queue.
pub(crate) type OutRx = queue::Receiver<Outbox>;

/// Encoded frames waiting to be written.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Cut pieces of encoded frames, and large payloads, in order.
    segs: VecDeque<Bytes>,
    /// Frames encoded after the last cut.
    tail: BytesMut,
    frames: usize,
    bytes: usize,
}

impl Store for Outbox {
    type Item = Frame;

    fn put(&mut self, frame: Frame) {
        // Sizes were checked by the senders (at most `max_frame_len`, which
        // is below `u32::MAX`).
        let len = frame.payload.len();
        self.frames += 1;
        self.bytes += len;
        if len >= ZERO_COPY {
            self.tail.reserve(LEN_BYTES + 1);
            self.tail.put_u32(len as u32 + 1);
            self.tail.put_u8(frame.kind);
            self.segs.push_back(self.tail.split().freeze());
            self.segs.push_back(frame.payload);
        } else {
            self.tail.reserve(LEN_BYTES + 1 + len);
            self.tail.put_u32(len as u32 + 1);
            self.tail.put_u8(frame.kind);
            self.tail.extend_from_slice(&frame.payload);
        }
    }
}

impl OutRx {
    /// Moves everything queued, encoded, to the back of `out`. Ready with
    /// the number of frames, or 0 once the queue has ended.
    pub fn poll_take_all(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut VecDeque<Bytes>,
    ) -> Poll<usize> {
        self.poll_take(cx, |o| {
            out.append(&mut o.segs);
            if !o.tail.is_empty() {
                out.push_back(o.tail.split().freeze());
            }
            Taken {
                items: std::mem::take(&mut o.frames),
                bytes: std::mem::take(&mut o.bytes),
            }
        })
    }

    /// Waits for frames and moves all of them, encoded, to `out`; 0 once the
    /// queue has ended.
    pub async fn take_all(&mut self, out: &mut VecDeque<Bytes>) -> usize {
        std::future::poll_fn(|cx| self.poll_take_all(cx, out)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameCodec, DATA, HEARTBEAT};
    use tokio_util::codec::Encoder;

    /// Small, large and empty frames from two senders come out as the codec
    /// would have encoded them, in the order they were pushed, with large
    /// payloads not copied.
    #[tokio::test]
    async fn encodes_in_order_without_copying_large_payloads() {
        let (tx, mut rx) = queue::channel::<Outbox>(100, usize::MAX);
        let tx2 = tx.clone();
        let big: Bytes = vec![7u8; ZERO_COPY].into();
        let frames = [
            Frame::data(Bytes::from_static(b"one")),
            Frame::control(HEARTBEAT),
            Frame::data(big.clone()),
            Frame::data(Bytes::new()),
            Frame {
                kind: DATA,
                payload: vec![1u8; ZERO_COPY - 1].into(),
            },
        ];
        for (i, f) in frames.iter().enumerate() {
            let to = if i % 2 == 0 { &tx } else { &tx2 };
            to.try_send(f.clone()).unwrap();
        }
        let mut out = VecDeque::new();
        assert_eq!(rx.take_all(&mut out).await, frames.len());
        assert!(out.iter().any(|s| s.as_ptr() == big.as_ptr()), "not copied");
        let got: Vec<u8> = out.iter().flat_map(|s| s.iter().copied()).collect();
        let mut want = BytesMut::new();
        for f in frames {
            FrameCodec { max: 1 << 20 }.encode(f, &mut want).unwrap();
        }
        assert_eq!(got, want.to_vec());
        drop((tx, tx2));
        assert_eq!(rx.take_all(&mut out).await, 0, "ended");
    }
}
