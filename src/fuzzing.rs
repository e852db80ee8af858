//! Entry points for the cargo-fuzz targets in `fuzz/`.
//!
//! Compiled only with `--cfg fuzzing` (which `cargo fuzz` passes), so none of
//! this is part of the normal build or API. Each function takes the fuzzer's
//! bytes, runs the crate's own parsers on them without any socket, and panics
//! when an invariant does not hold. See `fuzz/README.md`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{Decoder, Encoder, FramedRead};

use crate::id::NodeId;
use crate::limits::DEFAULT_MAX_FRAME_LEN;
use crate::wire::decoder::FrameDecoder;
use crate::wire::frame::{self, CodecError, Frame, FrameCodec, LEN_BYTES};
use crate::wire::hello::{valid_cluster_name, Hello, Refusal, MAX_HELLO, PROTOCOL_VERSION};

/// Offset of the id's bytes in a hello payload: magic, version, incarnation,
/// port, flags, id length.
const ID_AT: usize = 6 + 2 + 8 + 2 + 1 + 1;

/// A fixed local hello, as a node started with default settings has.
fn ours() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        incarnation: 0x0123_4567_89ab_cdef,
        port: 4000,
        key: None,
        aes: false,
        id: NodeId::parse("0123456789abcdef0123456789abcdef").unwrap(),
        cluster: "my-cluster".into(),
        meta_version: 0x0123_4567_89ab_cdef,
        meta: bytes::Bytes::new(),
    }
}

/// The kind of a check's answer, for comparing the two ends of a pair.
fn category(r: &Result<(), Refusal>) -> u8 {
    match r {
        Ok(()) => 0,
        Err(Refusal::SelfLink) => 1,
        Err(Refusal::Mismatch(_)) => 2,
    }
}

/// A hello payload (what follows the kind byte of the first frame).
///
/// If it decodes: its fields are valid, it re-encodes to the input (with the
/// id lower-cased) within [`MAX_HELLO`] bytes, it decodes again to itself,
/// and `check` gives both ends of a pair the same answer.
pub fn hello(data: &[u8]) {
    match Hello::decode(data) {
        Ok(h) => checks_out(data, &h),
        Err(reason) => assert!(!reason.is_empty()),
    }
}

fn checks_out(data: &[u8], h: &Hello) {
    // Its metadata is checked apart: valid or not, never a panic.
    match crate::wire::record::Record::of_hello(h) {
        (r, None) => assert!(r.meta.is_some()),
        (r, Some(_)) => assert!(r.meta.is_none()),
    }
    assert_eq!(NodeId::parse(h.id.as_str()).ok().as_ref(), Some(&h.id));
    assert!(valid_cluster_name(&h.cluster).is_ok(), "{:?}", h.cluster);

    let enc = h.encode();
    assert!(enc.len() <= MAX_HELLO, "{} > {MAX_HELLO}", enc.len());
    let mut normal = data.to_vec();
    normal[ID_AT..ID_AT + h.id.len()].make_ascii_lowercase();
    assert_eq!(&enc[..], &normal[..], "re-encoding differs from the input");
    assert_eq!(Hello::decode(&enc).as_ref(), Ok(h));

    // Both ends of a link check each other's hello: they must agree.
    let o = ours();
    let mine = h.check(&o);
    let theirs = o.check(h);
    assert_eq!(category(&mine), category(&theirs), "{mine:?} vs {theirs:?}");
    if mine.is_ok() {
        assert!(h.version == o.version && h.cluster == o.cluster);
        assert!(h.id.len() == o.id.len());
        assert!(h.id != o.id || h.incarnation != o.incarnation);
    }
    assert_eq!(h.check(h), Err(Refusal::SelfLink));
    // Our id from another incarnation is left to the handshake.
    let twin = Hello {
        incarnation: h.incarnation ^ 1,
        port: h.port.wrapping_add(1),
        ..h.clone()
    };
    assert_eq!(twin.check(h), Ok(()));
}

/// How the first frame of a link ends the hello exchange.
#[derive(Debug, PartialEq, Eq)]
enum First {
    /// The stream ended before the frame did.
    Truncated,
    /// A length prefix no hello can have.
    BadLength(usize),
    /// A frame of another kind.
    NotHello(u8),
    /// A hello frame, and what its payload decoded to.
    Hello(Result<Hello, String>),
}

/// The reading half of `link::exchange_hello`, over a byte slice instead of
/// a socket: the very function the link calls, `frame::read_one`.
fn read_first(stream: &[u8]) -> First {
    // The link's own reader (`frame::read_one`), over the bytes.
    let mut reader = stream;
    match futures::executor::block_on(frame::read_one(&mut reader, MAX_HELLO)) {
        Err(Ok(len)) => First::BadLength(len),
        Err(Err(_)) => First::Truncated,
        Ok(f) if f.kind != frame::HELLO => First::NotHello(f.kind),
        Ok(f) => {
            // What the link allocated for the body: bounded whatever the
            // peer sends.
            assert!(f.payload.len() <= MAX_HELLO);
            First::Hello(Hello::decode(&f.payload))
        }
    }
}

/// The first bytes a link receives from whoever connected.
///
/// Reads them as the link does, and checks the answer against the frame
/// codec bounded at [`MAX_HELLO`]: both must agree on where the first frame
/// ends and what it is. A hello that decodes gets the checks of [`hello`].
pub fn first_frame(data: &[u8]) {
    let first = read_first(data);
    let mut buf = BytesMut::from(data);
    let by_codec = FrameCodec { max: MAX_HELLO }.decode(&mut buf);
    match (&first, by_codec) {
        (First::BadLength(0), Err(CodecError::Empty)) => {}
        (First::BadLength(n), Err(CodecError::TooLarge { len, max })) if *n > 0 => {
            assert_eq!((*n - 1, MAX_HELLO), (len, max));
        }
        (First::Truncated, Ok(None)) => {}
        (First::NotHello(k), Ok(Some(f))) => assert_eq!(*k, f.kind),
        (First::Hello(h), Ok(Some(f))) => {
            assert_eq!(f.kind, frame::HELLO);
            assert_eq!(h, &Hello::decode(&f.payload));
            if let Ok(h) = h {
                checks_out(&f.payload, h);
            }
        }
        (first, codec) => panic!("link read {first:?}, codec {codec:?}"),
    }
}

/// Input layout of [`frames`]: byte 0 (with bytes 1-2, a u16) picks the
/// codec's maximum, byte 3 picks how the stream is cut into reads, and the
/// rest is the stream.
pub const FRAMES_HEADER: usize = 4;

/// A stream of frames as a link's reader gets it after the handshake.
///
/// Decodes the stream three ways: in one buffer, in chunks (as TCP may
/// deliver it), and through `FramedRead` over a reader that returns those
/// chunks (what the link runs). All three must give the same frames and the
/// same error; every frame respects the maximum; the frames re-encode to
/// exactly the bytes consumed; what is left is a frame's incomplete start.
pub fn frames(data: &[u8]) {
    if data.len() < FRAMES_HEADER {
        return;
    }
    let param = u16::from_be_bytes([data[1], data[2]]) as usize;
    let max = match data[0] % 4 {
        0 => MAX_HELLO,
        1 => DEFAULT_MAX_FRAME_LEN,
        2 => param % 32,
        _ => param,
    };
    let stream = &data[FRAMES_HEADER..];
    let chunks = chunk_sizes(stream.len(), data[3]);
    check_frames(stream, max, &chunks);
}

/// How a decode ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// No error; these bytes were left, not enough for a frame.
    Rest(Vec<u8>),
    Empty,
    TooLarge {
        len: usize,
        max: usize,
    },
}

fn end_of(e: CodecError) -> End {
    match e {
        CodecError::Empty => End::Empty,
        CodecError::TooLarge { len, max } => End::TooLarge { len, max },
        CodecError::Io(e) => panic!("decoding a buffer gave an I/O error: {e}"),
        CodecError::Crypto(e) => panic!("the plain codec gave a crypto error: {e}"),
    }
}

/// Cuts `len` bytes into read sizes, from a seed: 0 means one byte at a time;
/// otherwise pseudo-random sizes in `0..=seed` (a 0 is a decode with no new
/// bytes).
fn chunk_sizes(len: usize, seed: u8) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut total = 0;
    let mut x = 0x9e37_79b9_u32 ^ u32::from(seed);
    while total < len {
        let n = if seed == 0 {
            1
        } else {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % (u32::from(seed) + 1)) as usize
        };
        let n = n.min(len - total);
        sizes.push(n);
        total += n;
    }
    sizes
}

/// Decodes until the codec wants more bytes or fails.
fn drain(codec: &mut FrameCodec, buf: &mut BytesMut, out: &mut Vec<Frame>) -> Option<End> {
    loop {
        match codec.decode(buf) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return None,
            Err(e) => return Some(end_of(e)),
        }
    }
}

fn check_frames(stream: &[u8], max: usize, chunks: &[usize]) {
    let mut codec = FrameCodec { max };

    // One buffer holding the whole stream.
    let mut whole = Vec::new();
    let mut buf = BytesMut::from(stream);
    let end = drain(&mut codec, &mut buf, &mut whole).unwrap_or_else(|| End::Rest(buf.to_vec()));

    // Frames are within bounds and re-encode to the bytes they came from.
    let mut again = BytesMut::new();
    for f in &whole {
        assert!(f.payload.len() <= max, "{} > {max}", f.payload.len());
        codec.encode(f.clone(), &mut again).unwrap();
    }
    let consumed = again.len();
    assert_eq!(&again[..], &stream[..consumed]);
    let rest = &stream[consumed..];
    match &end {
        End::Rest(left) => {
            assert_eq!(&left[..], rest);
            if rest.len() >= LEN_BYTES {
                let len = u32::from_be_bytes(rest[..LEN_BYTES].try_into().unwrap()) as usize;
                assert!(len >= 1 && len - 1 <= max && rest.len() < LEN_BYTES + len);
            }
        }
        End::Empty => assert_eq!(&rest[..LEN_BYTES], &[0; LEN_BYTES]),
        End::TooLarge { len, max: m } => {
            let prefix = u32::from_be_bytes(rest[..LEN_BYTES].try_into().unwrap()) as usize;
            assert_eq!((*len, *m), (prefix - 1, max));
            assert!(*len > max);
        }
    }

    // The same stream arriving in chunks.
    let mut chunked = Vec::new();
    let mut buf = BytesMut::new();
    let mut at = 0;
    let mut chunked_end = None;
    for &n in chunks {
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        if let Some(e) = drain(&mut codec, &mut buf, &mut chunked) {
            chunked_end = Some(e);
            break;
        }
    }
    let chunked_end = chunked_end.unwrap_or_else(|| End::Rest(buf.to_vec()));
    assert_eq!(whole, chunked, "chunking changed the frames");
    assert_eq!(end, chunked_end, "chunking changed the end");

    // FramedRead over a reader that returns those chunks, with the link's
    // reader (large payloads read into buffers of their own), as the link
    // runs, up to its first error.
    let reader = Chunks {
        data: stream,
        sizes: chunks.iter().copied().filter(|&n| n > 0).collect(),
        next: 0,
    };
    let mut framed = FramedRead::new(reader, FrameDecoder::new(max, Default::default()));
    let mut read = Vec::new();
    let framed_end = futures::executor::block_on(async {
        while let Some(r) = framed.next().await {
            match r {
                Ok(f) => read.push(f),
                Err(e) => return Some(e),
            }
        }
        None
    });
    assert_eq!(whole, read, "FramedRead changed the frames");
    match (end, framed_end) {
        (End::Rest(r), None) => assert!(r.is_empty()),
        // A stream that ends inside a frame.
        (End::Rest(r), Some(CodecError::Io(e))) => {
            assert!(!r.is_empty());
            assert_eq!(e.kind(), io::ErrorKind::Other);
        }
        (End::Empty, Some(CodecError::Empty)) => {}
        (End::TooLarge { len, max }, Some(CodecError::TooLarge { len: l, max: m })) => {
            assert_eq!((len, max), (l, m));
        }
        (end, framed) => panic!("decoder ended with {end:?}, FramedRead with {framed:?}"),
    }
}

/// A reader returning `data` in reads of the given sizes, then end of stream.
struct Chunks<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(size) = this.sizes.get_mut(this.next) {
            let n = (*size).min(buf.remaining());
            let (head, rest) = this.data.split_at(n);
            buf.put_slice(head);
            this.data = rest;
            *size -= n;
            if *size == 0 {
                this.next += 1;
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// A messaging envelope, as the messaging layer gets it from a peer: it
/// decodes or is refused with a reason, and what decodes re-encodes to an
/// envelope that decodes to itself.
pub fn envelope(data: &[u8]) {
    use crate::wire::envelope::Envelope;
    match Envelope::decode(bytes::Bytes::copy_from_slice(data)) {
        Ok(e) => {
            let again = Envelope::decode(e.encode()).expect("a decoded envelope re-encodes");
            assert_eq!(again, e);
            match e.op {
                crate::wire::envelope::Op::Member => member_record(&e.body, e.corr),
                crate::wire::envelope::Op::Neighbors => list_of_links(&e.body),
                _ => {}
            }
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

/// A list of links: every line decodes or is refused with a reason, and
/// the lines that decode re-encode to a list that decodes to them.
fn list_of_links(body: &[u8]) {
    use crate::wire::links;
    let mut ok = Vec::new();
    for entry in links::decode(body) {
        match entry {
            Ok(e) => ok.push((NodeId::from_normal(&e.id), e.at)),
            Err(reason) => assert!(!reason.to_string().is_empty()),
        }
    }
    let again = links::encode(ok.iter().map(|(id, at)| (id, *at)));
    let decoded: Vec<_> = links::decode(&again)
        .map(|e| e.expect("a re-encoded list decodes"))
        .map(|e| (NodeId::from_normal(&e.id), e.at))
        .collect();
    assert_eq!(decoded, ok);
}

/// A member record's body: if it decodes with valid metadata, it re-encodes
/// to itself; metadata over the bounds leaves the rest of the record.
fn member_record(body: &[u8], version: u64) {
    use crate::wire::record::Record;
    match Record::decode(body, version) {
        Ok((r, None)) => {
            let meta = r.meta.as_ref().expect("valid metadata is kept");
            assert!(crate::meta::Meta::from_pairs(meta.iter()).is_ok());
            assert_eq!(Record::decode(&r.encode(), version), Ok((r, None)));
        }
        Ok((r, Some(_))) => assert!(r.meta.is_none()),
        Err(reason) => assert!(!reason.is_empty()),
    }
}

/// Sealed records, as a link with a cluster secret reads them: arbitrary
/// bytes (cut into reads as `frames` does) never panic the record decoder;
/// they fail authentication or wait for more. Half of the inputs are first
/// prefixed with a genuine sealed frame, which must come out intact.
pub fn sealed(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (mut enc, mut dec) = crate::wire::secure::fuzz_pair(1 << 16);
    let mut wire = BytesMut::new();
    let genuine = Frame::data(bytes::Bytes::copy_from_slice(&rest[..rest.len().min(64)]));
    if mode & 1 == 1 {
        enc.encode(genuine.clone(), &mut wire).expect("seal");
    }
    let sealed_len = wire.len();
    wire.extend_from_slice(rest);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for piece in wire.chunks(usize::from(mode >> 1).max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => got.push(f),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    if mode & 1 == 1 && wire.len() >= sealed_len {
        assert_eq!(got.first(), Some(&genuine));
    }
}
