//! The write side of a link: encoded frames to the socket, with as few
//! copies and system calls as it takes.
//!
//! Frames come already encoded from the send queue (see [`crate::link::outbox`]),
//! as segments: runs of small frames, and payloads that were not copied
//! (large ones, of at least [`ZERO_COPY`](crate::link::outbox::ZERO_COPY)
//! bytes, and states many links are told alike); a flush hands all segments to
//! the kernel in vectored writes. Control frames of the link's own
//! (heartbeats) are encoded here. On a link with a
//! cluster secret, frames are encoded in the clear into a staging buffer and
//! sealed together at each flush (or every 64 KiB), so small frames share a
//! record and its tag instead of paying for one each. What one flush writes
//! is bounded by the send queue's byte bound.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Encoder;

use crate::link::socket::Shared;
use crate::wire::frame::{self, CodecError, Frame};
use crate::wire::secure::{Sealer, MAX_PLAIN};

pub(crate) struct FrameWriter {
    wr: Shared,
    sealer: Sealer,
    /// Small frames and headers (or sealed records) not yet moved to `segs`.
    buf: BytesMut,
    /// With a secret: frames in the clear, not yet sealed.
    plain: BytesMut,
    /// What to write, in order.
    segs: VecDeque<Bytes>,
    /// Segments written (or, with a secret, copied to be sealed) since the
    /// last look: the send queue's
    /// encoding buffers among them are used again (see
    /// [`Outbox::recycle`](crate::link::outbox::Outbox::recycle)).
    done: Vec<Bytes>,
    written: Arc<AtomicU64>,
}

impl FrameWriter {
    /// `written` counts the bytes handed to the kernel (the link's progress).
    pub(crate) fn new(wr: Shared, sealer: Sealer, written: Arc<AtomicU64>) -> Self {
        FrameWriter {
            wr,
            sealer,
            written,
            // Grown on first use and then reused: an idle link costs nothing.
            buf: BytesMut::new(),
            plain: BytesMut::new(),
            segs: VecDeque::new(),
            done: Vec::new(),
        }
    }

    /// Queues segments of encoded frames, taking them out of `segs`.
    pub(crate) fn put_encoded(&mut self, segs: &mut VecDeque<Bytes>) -> Result<(), CodecError> {
        match &self.sealer {
            Sealer::Plain(_) => {
                if !self.buf.is_empty() {
                    self.segs.push_back(self.buf.split().freeze());
                }
                self.segs.append(segs);
            }
            Sealer::Sealed(_) => {
                for seg in segs.drain(..) {
                    self.plain.extend_from_slice(&seg);
                    self.done.push(seg);
                    if self.plain.len() >= MAX_PLAIN {
                        self.seal()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues one frame of the link's own (a heartbeat); user frames come
    /// encoded, through [`put_encoded`](Self::put_encoded).
    pub(crate) fn feed(&mut self, frame: Frame) -> Result<(), CodecError> {
        match &mut self.sealer {
            Sealer::Plain(codec) => codec.encode(frame, &mut self.buf)?,
            Sealer::Sealed(codec) => {
                codec.frame_into(frame, &mut self.plain)?;
                if self.plain.len() >= MAX_PLAIN {
                    self.seal()?;
                }
            }
        }
        Ok(())
    }

    /// Seals the staged frames into records.
    fn seal(&mut self) -> Result<(), CodecError> {
        if let Sealer::Sealed(codec) = &mut self.sealer {
            if !self.plain.is_empty() {
                codec.seal(&self.plain, &mut self.buf)?;
                self.plain.clear();
            }
        }
        Ok(())
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        self.seal()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if !self.buf.is_empty() {
            self.segs.push_back(self.buf.split().freeze());
        }
        let mut segs = Segments {
            segs: &mut self.segs,
            done: &mut self.done,
        };
        while segs.has_remaining() {
            let n = self.wr.write_buf(&mut segs).await?;
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The segments written (or sealed) since the last call, to be used
    /// again or dropped.
    pub(crate) fn done(&mut self) -> &mut Vec<Bytes> {
        &mut self.done
    }

    /// Ends our side (after a flush): on a sealed link with the `CLOSE`
    /// record first, so the peer can tell our end from a cut; then shuts
    /// the socket's write side down.
    pub(crate) async fn shutdown(&mut self) -> std::io::Result<()> {
        if let Sealer::Sealed(_) = self.sealer {
            self.feed(Frame::control(frame::CLOSE))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.flush().await?;
        }
        self.wr.shutdown().await
    }
}

/// The queued segments as one [`Buf`], so a write can take many at once;
/// those written go to `done`.
struct Segments<'a> {
    segs: &'a mut VecDeque<Bytes>,
    done: &'a mut Vec<Bytes>,
}

impl Buf for Segments<'_> {
    fn remaining(&self) -> usize {
        self.segs.iter().map(Bytes::len).sum()
    }

    fn chunk(&self) -> &[u8] {
        self.segs.front().map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let front = self.segs.front_mut().expect("advance within remaining");
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.done.extend(self.segs.pop_front());
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, seg) in dst.iter_mut().zip(self.segs.iter()) {
            *slot = IoSlice::new(seg);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::outbox::{Outbox, ZERO_COPY};
    use crate::link::queue;
    use crate::wire::frame::{FrameCodec, DATA};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// Small, large and empty frames, in any mix, encoded by the send queue,
    /// arrive as the codec would have written them.
    #[tokio::test]
    async fn writes_what_the_codec_would() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let wr = Shared::new(client.unwrap());
        let mut server = server.unwrap().0;
        let codec = FrameCodec { max: 1 << 20 };
        let mut w = FrameWriter::new(wr, Sealer::Plain(codec.clone()), Default::default());
        let frames: Vec<Frame> = [0usize, 10, ZERO_COPY, 3, 200_000, ZERO_COPY - 1]
            .iter()
            .map(|n| Frame {
                kind: DATA,
                payload: (0..*n).map(|i| i as u8).collect::<Vec<u8>>().into(),
            })
            .collect();
        let mut want = BytesMut::new();
        let mut c = codec.clone();
        let (tx, mut rx) = queue::channel::<Outbox>(100, usize::MAX);
        for f in &frames {
            c.encode(f.clone(), &mut want).unwrap();
            tx.try_send(f.clone()).unwrap();
        }
        let mut segs = VecDeque::new();
        assert_eq!(rx.take_all(&mut segs).await, frames.len());
        w.put_encoded(&mut segs).unwrap();
        let too_big = Frame {
            kind: DATA,
            payload: vec![0u8; (1 << 20) + 1].into(),
        };
        assert!(w.feed(too_big).is_err());
        w.flush().await.unwrap();
        w.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, want.to_vec());
    }
}
