//! The baseline: plain tokio TCP with a length-prefixed framing of its own.

use crate::*;

/// The write side: a u32 big-endian length, then the payload, through an
/// 8 KiB buffer.
pub(crate) struct PlainWriter {
    pub(crate) wr: BufWriter<OwnedWriteHalf>,
}

impl PlainWriter {
    pub(crate) fn new(wr: OwnedWriteHalf) -> Self {
        PlainWriter {
            wr: BufWriter::with_capacity(WRITE_BUF, wr),
        }
    }

    pub(crate) async fn write_frame(&mut self, payload: &[u8]) {
        assert!(payload.len() <= MAX_FRAME);
        self.wr
            .write_all(&(payload.len() as u32).to_be_bytes())
            .await
            .expect("write");
        self.wr.write_all(payload).await.expect("write");
    }

    pub(crate) async fn flush(&mut self) {
        self.wr.flush().await.expect("flush");
    }
}

/// The read side: decodes frames from a `BytesMut`, reserving as tokio-util's
/// `FramedRead` and tcpnet's codec do; each message is a `Bytes` of its own.
pub(crate) struct PlainReader {
    pub(crate) rd: OwnedReadHalf,
    pub(crate) buf: BytesMut,
}

impl PlainReader {
    pub(crate) fn new(rd: OwnedReadHalf) -> Self {
        PlainReader {
            rd,
            buf: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// The next message, or `None` at end of stream.
    pub(crate) async fn read_frame(&mut self) -> Option<Bytes> {
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
pub(crate) async fn plain_pair() -> ((PlainReader, PlainWriter), (PlainReader, PlainWriter)) {
    let listener = TcpListener::bind((LISTEN_ADDR, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let ends = |s: TcpStream| {
        s.set_nodelay(true).expect("nodelay");
        let (rd, wr) = s.into_split();
        (PlainReader::new(rd), PlainWriter::new(wr))
    };
    (
        ends(dialed.expect("connect")),
        ends(accepted.expect("accept").0),
    )
}

pub(crate) async fn plain_receive(mut rx: PlainReader, n: usize, len: usize) -> PlainReader {
    let mut bytes = 0;
    for _ in 0..n {
        bytes += rx.read_frame().await.expect("closed during the run").len();
    }
    assert_eq!(bytes, n * len, "the baseline delivered other sizes");
    rx
}
