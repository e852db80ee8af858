//! The baselines: plain tokio TCP with a length-prefixed framing of its own
//! (a u32 big-endian length, then the payload), written two ways.
//!
//! - **careful**, the baseline every ratio is taken against: what a
//!   performance-minded application would write on plain tokio. Small
//!   frames are copied into a 64 KiB batch, written when it is full or when
//!   the sender has nothing more queued (`flush`); a frame of 16 KiB or more
//!   goes out with what is batched in one vectored write, not copied. The
//!   read side reads into a 64 KiB buffer and hands each message out as a
//!   `Bytes` of its own (a reference into that buffer, which is reused once
//!   the messages cut from it are dropped); a frame of 16 KiB or more is
//!   read straight into a buffer of its own, sized to it. Both buffers are
//!   allocated on first use: the read buffer's 64 KiB once the socket first
//!   reports readiness, which the memory section's idle connections reach
//!   (its heap row shows about 64.8 KiB a link; RSS counts only the pages
//!   touched, one here), the write batch with the first frame sent.
//! - **naive**, an extra column: what the suite measured against before,
//!   an 8 KiB `BufWriter` and an 8 KiB `BytesMut` read buffer managed the way
//!   tokio-util's `FramedRead` does it (large frames copied through both).

use std::io::IoSlice;

use crate::*;

/// The careful baseline's batch and read buffer.
pub(crate) const CAREFUL_BUF: usize = 64 * 1024;
/// Frames at least this large are written and read without a copy through
/// the careful baseline's buffers.
pub(crate) const OWN_BUFFER: usize = 16 * 1024;
/// The naive baseline's write buffer and initial read buffer.
pub(crate) const NAIVE_BUF: usize = 8 * 1024;

/// Which baseline.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Plain {
    Careful,
    Naive,
}

/// The write side of a baseline connection.
pub(crate) enum PlainWriter {
    Careful {
        wr: OwnedWriteHalf,
        /// Small frames not yet written; empty capacity until first used.
        batch: Vec<u8>,
    },
    Naive(BufWriter<OwnedWriteHalf>),
}

impl PlainWriter {
    pub(crate) fn new(kind: Plain, wr: OwnedWriteHalf) -> Self {
        match kind {
            Plain::Careful => PlainWriter::Careful {
                wr,
                batch: Vec::new(),
            },
            Plain::Naive => PlainWriter::Naive(BufWriter::with_capacity(NAIVE_BUF, wr)),
        }
    }

    /// Queues one frame; call [`flush`](Self::flush) when nothing more is
    /// queued.
    pub(crate) async fn write_frame(&mut self, payload: &[u8]) {
        assert!(payload.len() <= MAX_FRAME);
        let header = (payload.len() as u32).to_be_bytes();
        match self {
            PlainWriter::Careful { wr, batch } => {
                if payload.len() >= OWN_BUFFER {
                    // What is batched, the header and the payload: one
                    // vectored write, the payload not copied.
                    let mut parts = [
                        IoSlice::new(batch),
                        IoSlice::new(&header),
                        IoSlice::new(payload),
                    ];
                    write_all_vectored(wr, &mut parts).await;
                    batch.clear();
                    return;
                }
                if batch.len() + header.len() + payload.len() > CAREFUL_BUF {
                    wr.write_all(batch).await.expect("write");
                    batch.clear();
                }
                if batch.capacity() == 0 {
                    batch.reserve_exact(CAREFUL_BUF);
                }
                batch.extend_from_slice(&header);
                batch.extend_from_slice(payload);
            }
            PlainWriter::Naive(wr) => {
                wr.write_all(&header).await.expect("write");
                wr.write_all(payload).await.expect("write");
            }
        }
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) {
        match self {
            PlainWriter::Careful { wr, batch } => {
                if !batch.is_empty() {
                    wr.write_all(batch).await.expect("write");
                    batch.clear();
                }
            }
            PlainWriter::Naive(wr) => wr.flush().await.expect("flush"),
        }
    }
}

/// Writes all of `parts`, in as few system calls as the kernel allows.
async fn write_all_vectored(wr: &mut OwnedWriteHalf, mut parts: &mut [IoSlice<'_>]) {
    while parts.iter().any(|p| !p.is_empty()) {
        let n = wr.write_vectored(parts).await.expect("write");
        assert!(n > 0, "write returned 0");
        IoSlice::advance_slices(&mut parts, n);
    }
}

/// The read side of a baseline connection; each message is a `Bytes` of
/// its own.
pub(crate) struct PlainReader {
    kind: Plain,
    rd: OwnedReadHalf,
    buf: BytesMut,
}

impl PlainReader {
    pub(crate) fn new(kind: Plain, rd: OwnedReadHalf) -> Self {
        let buf = match kind {
            Plain::Careful => BytesMut::new(),
            Plain::Naive => BytesMut::with_capacity(NAIVE_BUF),
        };
        PlainReader { kind, rd, buf }
    }

    /// The next message, or `None` at end of stream.
    pub(crate) async fn read_frame(&mut self) -> Option<Bytes> {
        match self.kind {
            Plain::Careful => self.read_careful().await,
            Plain::Naive => self.read_naive().await,
        }
    }

    async fn read_careful(&mut self) -> Option<Bytes> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
                assert!(len <= MAX_FRAME, "frame too large");
                if len >= OWN_BUFFER {
                    self.buf.advance(4);
                    return self.read_own(len).await;
                }
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Some(self.buf.split_to(len).freeze());
                }
            }
            // Wait for readiness before making room, so a connection holds
            // no buffer until the socket first reports some (its 64 KiB are
            // then reserved, and only the pages read into touched).
            self.rd.readable().await.expect("readable");
            if self.buf.capacity() - self.buf.len() < CAREFUL_BUF / 4 {
                // Reuses the buffer in place once every message cut from it
                // was dropped; else takes a fresh one.
                self.buf.reserve(CAREFUL_BUF - self.buf.len());
            }
            match self.rd.try_read_buf(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// A large frame's payload, read into a buffer of its own after what the
    /// read buffer already holds of it.
    async fn read_own(&mut self, len: usize) -> Option<Bytes> {
        let mut own = BytesMut::with_capacity(len);
        let have = len.min(self.buf.len());
        own.extend_from_slice(&self.buf[..have]);
        self.buf.advance(have);
        while own.len() < len {
            match self.rd.read_buf(&mut own).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        Some(own.freeze())
    }

    /// Decodes frames from a `BytesMut`, reserving as tokio-util's
    /// `FramedRead` does.
    async fn read_naive(&mut self) -> Option<Bytes> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
                assert!(len <= MAX_FRAME, "frame too large");
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Some(self.buf.split_to(len).freeze());
                }
                self.buf.reserve(4 + len - self.buf.len());
            }
            self.buf.reserve(1);
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

/// One plain TCP connection on loopback: (dialer's ends, acceptor's ends).
pub(crate) async fn plain_pair(
    kind: Plain,
) -> ((PlainReader, PlainWriter), (PlainReader, PlainWriter)) {
    let listener = TcpListener::bind((LISTEN_ADDR, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (
        plain_ends(kind, dialed.expect("connect")),
        plain_ends(kind, accepted.expect("accept").0),
    )
}

/// A connected socket as a baseline's two ends.
pub(crate) fn plain_ends(kind: Plain, s: TcpStream) -> (PlainReader, PlainWriter) {
    s.set_nodelay(true).expect("nodelay");
    let (rd, wr) = s.into_split();
    (PlainReader::new(kind, rd), PlainWriter::new(kind, wr))
}

pub(crate) async fn plain_receive(mut rx: PlainReader, n: usize, len: usize) -> PlainReader {
    let mut bytes = 0;
    for _ in 0..n {
        bytes += rx.read_frame().await.expect("closed during the run").len();
    }
    assert_eq!(bytes, n * len, "the baseline delivered other sizes");
    rx
}

/// Sends frames of many sizes, from empty to the largest, through each
/// baseline and checks every byte arrives as sent: a broken baseline would
/// make every ratio a lie.
pub(crate) async fn check_plain(kind: Plain) {
    let sizes = [
        0usize,
        1,
        60,
        4095,
        OWN_BUFFER - 1,
        OWN_BUFFER,
        100_000,
        5,
        MAX_FRAME,
    ];
    let ((_, mut w), (mut r, _)) = plain_pair(kind).await;
    let payloads: Vec<Bytes> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            (0..n)
                .map(|j| (i * 31 + j * 7) as u8)
                .collect::<Vec<u8>>()
                .into()
        })
        .collect();
    let sent = payloads.clone();
    let writer = tokio::spawn(async move {
        for p in &sent {
            w.write_frame(p).await;
        }
        w.flush().await;
        w
    });
    for p in &payloads {
        let got = within("baseline check", r.read_frame())
            .await
            .expect("frame");
        assert!(
            got == *p,
            "{kind:?} baseline garbled a frame of {} B",
            p.len()
        );
    }
    drop(writer.await.expect("writer"));
    assert!(
        r.read_frame().await.is_none(),
        "{kind:?} baseline: no end of stream"
    );
}
