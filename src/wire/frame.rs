//! The wire format: length-prefixed frames, each with a one-byte kind.
//!
//! ```text
//! +----------------+--------+----------------------+
//! | length: u32 BE | kind   | payload              |
//! | (kind+payload) | 1 byte | length - 1 bytes     |
//! +----------------+--------+----------------------+
//! ```
//!
//! The kind is there from the first version so that control frames
//! (the handshake verdict, heartbeats, and messaging later) share a link with
//! user data without ever being confused with it. Kinds `0x80..=0xFF` are
//! *optional*: a node that does not know one ignores it, so later versions can
//! add hints without breaking older peers. An unknown kind below `0x80` is a
//! protocol error.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The opening frame each end sends on a new link (see [`crate::wire::hello`]).
pub(crate) const HELLO: u8 = 0x01;
/// Sent by the deciding end: this link is the pair's one link.
pub(crate) const ACCEPT: u8 = 0x02;
/// Sent by the deciding end: the pair already has a link; this one closes.
pub(crate) const REJECT: u8 = 0x03;
/// Sent by either end of an open link that has sent nothing else for a
/// heartbeat interval, so the peer can tell "idle" from "gone"; it carries
/// the stamps that time the link (see [`crate::wire::timing`]).
pub(crate) const HEARTBEAT: u8 = 0x04;
/// Sent instead of a verdict (or on an open link) to the older of two live
/// nodes that claim one id: the link closes and is not redialed.
pub(crate) const CONFLICT: u8 = 0x05;
/// A message of the handshake (see [`crate::wire::noise`]), or, sealed,
/// the acceptor's key confirmation.
pub(crate) const NOISE: u8 = 0x06;
/// The last frame of a sealed link's direction, before its end of stream:
/// an end of stream without it was cut on the way (see
/// [`crate::wire::secure`]).
pub(crate) const CLOSE: u8 = 0x07;
/// Sent on an open link to the newer of two live nodes holding one key:
/// the peer refused the older one with [`CONFLICT`]; both are told.
pub(crate) const TWIN: u8 = 0x08;
/// A user message.
pub(crate) const DATA: u8 = 0x10;
/// Asks the peer to answer at once with a [`PONG`] (see
/// [`crate::wire::timing`]); optional, so older peers ignore it.
pub(crate) const PING: u8 = 0x80;
/// The answer to a [`PING`], with its number.
pub(crate) const PONG: u8 = 0x81;
/// A messaging envelope (see [`crate::wire::envelope`]).
pub(crate) const MSG: u8 = 0x11;
/// First kind a receiver may ignore when it does not know it.
pub(crate) const FIRST_OPTIONAL: u8 = 0x80;

/// Bytes in the length prefix.
pub(crate) const LEN_BYTES: usize = 4;
/// Most a decoder reserves ahead of the bytes it has.
const RESERVE_STEP: usize = 256 * 1024;

/// Reads one frame of at most `max` payload bytes exactly, so that nothing
/// after it is consumed: for the handshake, before the codec takes over.
/// `Err(Ok(len))` is a length prefix out of bounds; `Err(Err(e))` a read
/// error.
pub(crate) async fn read_one<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    max: usize,
) -> Result<Frame, Result<usize, std::io::Error>> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; LEN_BYTES];
    stream.read_exact(&mut len).await.map_err(Err)?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len - 1 > max {
        return Err(Ok(len));
    }
    let mut body = BytesMut::zeroed(len);
    stream.read_exact(&mut body).await.map_err(Err)?;
    let kind = body.get_u8();
    Ok(Frame {
        kind,
        payload: body.freeze(),
    })
}

/// One frame: a kind and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub kind: u8,
    pub payload: Bytes,
}

impl Frame {
    pub(crate) fn data(payload: Bytes) -> Self {
        Frame {
            kind: DATA,
            payload,
        }
    }

    pub(crate) fn control(kind: u8) -> Self {
        Frame {
            kind,
            payload: Bytes::new(),
        }
    }
}

/// Why a frame could not be decoded.
#[derive(Debug)]
pub(crate) enum CodecError {
    /// The length prefix announces a payload over the maximum.
    TooLarge {
        len: usize,
        max: usize,
    },
    /// A length of zero: no room for the kind byte.
    Empty,
    /// An encrypted record failed to open (see [`crate::wire::secure`]).
    Crypto(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for CodecError {
    fn from(e: std::io::Error) -> Self {
        CodecError::Io(e)
    }
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max} bytes")
            }
            CodecError::Empty => f.write_str("frame of length 0 has no kind byte"),
            CodecError::Crypto(s) => f.write_str(s),
            CodecError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Encodes and decodes [`Frame`]s; `max` bounds the payload length.
///
/// The decoder checks the length prefix before buffering anything, so a
/// hostile 4 GiB prefix is refused at once, and reserves room for an allowed
/// frame step by step as its bytes come, so announcing one costs little.
#[derive(Debug, Clone)]
pub(crate) struct FrameCodec {
    pub max: usize,
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if src.len() < LEN_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len == 0 {
            return Err(CodecError::Empty);
        }
        if len - 1 > self.max {
            return Err(CodecError::TooLarge {
                len: len - 1,
                max: self.max,
            });
        }
        if src.len() < LEN_BYTES + len {
            // Room for what is announced, but no more than RESERVE_STEP at a
            // time: a peer that announces a large frame and sends five bytes
            // costs little; a real one fills the buffer as it grows.
            src.reserve((LEN_BYTES + len - src.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        src.advance(LEN_BYTES);
        let kind = src.get_u8();
        let payload = src.split_to(len - 1).freeze();
        Ok(Some(Frame { kind, payload }))
    }
}

/// Cuts the next frame off `src` if it is whole, of `kind`, and carries
/// fewer than `under` payload bytes; `None` leaves `src` as it was. For the
/// common run of small messages: decoded without making a [`Frame`] and
/// passing it through the layers of a codec.
#[inline]
pub(crate) fn cut_small(src: &mut BytesMut, kind: u8, under: usize) -> Option<Bytes> {
    if src.len() <= LEN_BYTES {
        return None;
    }
    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
    if len == 0 || len > under || src[LEN_BYTES] != kind || src.len() < LEN_BYTES + len {
        return None;
    }
    src.advance(LEN_BYTES + 1);
    Some(src.split_to(len - 1).freeze())
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        // Senders check the size before queueing; this guards the invariant.
        if frame.payload.len() > self.max {
            return Err(CodecError::TooLarge {
                len: frame.payload.len(),
                max: self.max,
            });
        }
        dst.reserve(LEN_BYTES + 1 + frame.payload.len());
        dst.put_u32(frame.payload.len() as u32 + 1);
        dst.put_u8(frame.kind);
        dst.extend_from_slice(&frame.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> FrameCodec {
        FrameCodec { max: 16 }
    }

    #[test]
    fn round_trip_and_partial_input() {
        let mut buf = BytesMut::new();
        codec()
            .encode(Frame::data(Bytes::from_static(b"hello")), &mut buf)
            .unwrap();
        codec().encode(Frame::control(ACCEPT), &mut buf).unwrap();
        let mut part = buf.split_to(3);
        assert!(codec().decode(&mut part).unwrap().is_none());
        part.unsplit(buf);
        let f = codec().decode(&mut part).unwrap().unwrap();
        assert_eq!(f, Frame::data(Bytes::from_static(b"hello")));
        let f = codec().decode(&mut part).unwrap().unwrap();
        assert_eq!(f.kind, ACCEPT);
        assert!(part.is_empty());
    }

    #[test]
    fn oversize_prefix_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, DATA][..]);
        match codec().decode(&mut buf) {
            Err(CodecError::TooLarge { len, max: 16 }) => assert_eq!(len, u32::MAX as usize - 1),
            other => panic!("{other:?}"),
        }
        assert!(buf.capacity() < 1024);
    }

    /// Whole small frames of the kind asked for are cut, in order; a frame
    /// of another kind, one too large, one not whole, or an empty length
    /// stops the run and stays for the codec, untouched.
    #[test]
    fn cut_small_takes_whole_small_frames_of_its_kind_only() {
        let mut buf = BytesMut::new();
        for f in [
            Frame::data(Bytes::from_static(b"one")),
            Frame::data(Bytes::new()),
            Frame::control(HEARTBEAT),
            Frame::data(Bytes::from(vec![1u8; 10])),
            Frame::data(Bytes::from_static(b"cut")),
        ] {
            codec().encode(f, &mut buf).unwrap();
        }
        assert_eq!(cut_small(&mut buf, DATA, 10).as_deref(), Some(&b"one"[..]));
        assert_eq!(cut_small(&mut buf, DATA, 10).as_deref(), Some(&b""[..]));
        let before = buf.clone();
        assert_eq!(cut_small(&mut buf, DATA, 10), None, "a heartbeat");
        assert_eq!(codec().decode(&mut buf).unwrap().unwrap().kind, HEARTBEAT);
        assert_eq!(cut_small(&mut buf, DATA, 10), None, "10 bytes: too large");
        assert_eq!(cut_small(&mut buf, DATA, 11).unwrap().len(), 10);
        buf.truncate(buf.len() - 1);
        assert_eq!(cut_small(&mut buf, DATA, 10), None, "not whole");
        assert_eq!(buf.len(), 7);
        assert_ne!(before, buf);
        let mut empty = BytesMut::from(&[0, 0, 0, 0, 0x10][..]);
        assert_eq!(cut_small(&mut empty, DATA, 10), None);
        assert!(matches!(codec().decode(&mut empty), Err(CodecError::Empty)));
    }

    #[test]
    fn zero_length_is_an_error() {
        let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
        assert!(matches!(codec().decode(&mut buf), Err(CodecError::Empty)));
    }

    #[test]
    fn exact_maximum_passes() {
        let mut buf = BytesMut::new();
        let payload = Bytes::from(vec![7u8; 16]);
        codec()
            .encode(Frame::data(payload.clone()), &mut buf)
            .unwrap();
        assert_eq!(codec().decode(&mut buf).unwrap().unwrap().payload, payload);
        assert!(codec()
            .encode(Frame::data(Bytes::from(vec![0u8; 17])), &mut buf)
            .is_err());
    }
}
