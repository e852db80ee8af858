//! The cluster secret: proving both ends hold it, then encrypting the link.
//!
//! Nothing here is home-made cryptography; it is the Noise protocol framework
//! (the `snow` crate) with one of its standard patterns, and HKDF-SHA256 (the
//! RustCrypto crates) to turn the user's secret into Noise's 32-byte
//! pre-shared key.
//!
//! # The handshake
//!
//! After the hellos (which stay in the clear: they say no more than the mDNS
//! record does), a link whose nodes both have a secret runs
//! `Noise_NNpsk0_25519_AESGCM_BLAKE2s` when both hellos say their processor
//! has AES hardware, and `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s` otherwise
//! (see [`Suite`]), the dialer as initiator:
//!
//! ```text
//! dialer -> acceptor   NOISE  msg 1: ephemeral key, sealed with the psk
//! acceptor -> dialer   NOISE  msg 2: ephemeral key, DH, sealed
//! dialer -> acceptor   record 0: an empty frame of kind NOISE (key confirmation)
//! ```
//!
//! Both hellos are the handshake's *prologue*, so a hello changed on the way
//! makes the handshake fail. The acceptor learns the dialer holds the secret
//! from message 1, but message 1 could be a replay; only record 0, sealed
//! with keys from the acceptor's fresh ephemeral key, proves a live peer.
//! So neither end registers the link (no connection event, no user frame)
//! before it has verified the other's last message.
//!
//! # Records
//!
//! Then every byte of the link travels in records: `length: u16 BE |
//! ciphertext` with at most 65 519 bytes of plaintext each, sealed with
//! AES-256-GCM or ChaCha20-Poly1305 under a per-direction key and a counter
//! nonce. Frames
//! are encoded as in the clear and cut into records. A record that was
//! altered, replayed, reordered or dropped fails to decrypt, and the link
//! closes with [`CloseReason::Protocol`](crate::CloseReason::Protocol).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use hkdf::Hkdf;
use sha2::Sha256;
use snow::StatelessTransportState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

use crate::wire::decoder::{FrameDecoder, Pool};
use crate::wire::frame::{self, CodecError, Frame, FrameCodec, LEN_BYTES};

/// The cipher a link is sealed with: AES-256-GCM where both ends have AES
/// hardware (there it is about twice as fast as ChaCha20-Poly1305: 2.1 against
/// 1.1-1.4 GB/s through a sealed link on this project's test machine), and
/// ChaCha20-Poly1305, fast everywhere in software, otherwise. Both are ring's
/// implementations, through snow. The choice follows from the two hellos,
/// which are the handshake's prologue: a hello altered to force the slower
/// cipher fails the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suite {
    AesGcm,
    ChaChaPoly,
}

impl Suite {
    /// The suite two ends agree on, from what each hello says.
    pub(crate) fn agreed(ours_aes: bool, theirs_aes: bool) -> Suite {
        if ours_aes && theirs_aes {
            Suite::AesGcm
        } else {
            Suite::ChaChaPoly
        }
    }

    /// True where this processor seals AES-GCM in hardware.
    pub(crate) fn aes_hardware() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("aes")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
        }
        #[cfg(target_arch = "aarch64")]
        {
            std::arch::is_aarch64_feature_detected!("aes")
                && std::arch::is_aarch64_feature_detected!("pmull")
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            false
        }
    }

    /// The Noise pattern and primitives.
    fn params(self) -> snow::params::NoiseParams {
        match self {
            Suite::AesGcm => "Noise_NNpsk0_25519_AESGCM_BLAKE2s",
            Suite::ChaChaPoly => "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s",
        }
        .parse()
        .expect("a valid Noise pattern")
    }
}
/// Largest Noise message.
const MAX_MSG: usize = 65535;
/// Poly1305 tag.
const TAG: usize = 16;
/// Most plaintext in one record.
pub(crate) const MAX_PLAIN: usize = MAX_MSG - TAG;
/// Bound on a handshake message: NNpsk0's are 48 bytes (a key and a tag).
/// A stranger's handshake costs this much memory, not a full record's.
const HANDSHAKE_MSG: usize = 256;

/// The 32-byte pre-shared key of a cluster, derived from its secret.
#[derive(Clone)]
pub(crate) struct Psk([u8; 32]);

impl Psk {
    /// HKDF-SHA256 of the secret, with the cluster name as context, so one
    /// secret used for two clusters gives two keys.
    pub(crate) fn derive(secret: &[u8], cluster: &str) -> Psk {
        let hk = Hkdf::<Sha256>::new(Some(b"tcpnet cluster secret v1"), secret);
        let mut key = [0u8; 32];
        hk.expand(cluster.as_bytes(), &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Psk(key)
    }
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(<hidden>)")
    }
}

/// The keys of a link whose handshake completed, with the next nonce each
/// way.
pub(crate) struct Keys {
    cipher: Arc<StatelessTransportState>,
    send_nonce: u64,
    recv_nonce: u64,
}

impl Keys {
    /// The keys of a finished handshake, before any record.
    fn new(cipher: StatelessTransportState) -> Self {
        Keys {
            cipher: Arc::new(cipher),
            send_nonce: 0,
            recv_nonce: 0,
        }
    }
}

/// Runs the handshake on `stream`, right after the hellos. `prologue` is
/// both hellos, the dialer's first. The error says what failed, for the
/// error event that names the remote address.
pub(crate) async fn handshake(
    stream: &mut TcpStream,
    psk: &Psk,
    suite: Suite,
    dialer: bool,
    prologue: &[u8],
) -> Result<Keys, String> {
    let builder = snow::Builder::new(suite.params())
        .psk(0, &psk.0)
        .and_then(|b| b.prologue(prologue))
        .map_err(|e| format!("noise setup: {e}"))?;
    let mut buf = [0u8; HANDSHAKE_MSG];
    let mut payload = [0u8; HANDSHAKE_MSG];
    let refused = "the peer holds another cluster secret (or the hellos were altered)";
    if dialer {
        let mut hs = builder
            .build_initiator()
            .map_err(|e| format!("noise setup: {e}"))?;
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(|e| format!("noise: {e}"))?;
        write_noise(stream, &buf[..n]).await?;
        let msg = read_noise(stream)
            .await
            .map_err(|e| format!("{e} ({refused}?)"))?;
        hs.read_message(&msg, &mut payload)
            .map_err(|_| refused.to_string())?;
        let cipher = hs
            .into_stateless_transport_mode()
            .map_err(|e| format!("noise: {e}"))?;
        let mut keys = Keys::new(cipher);
        // Key confirmation: record 0, an empty NOISE frame.
        let mut out = BytesMut::new();
        keys.encoder(usize::MAX)
            .encode(Frame::control(frame::NOISE), &mut out)
            .map_err(|e| e.to_string())?;
        keys.send_nonce += 1;
        stream
            .write_all(&out)
            .await
            .map_err(|e| format!("writing key confirmation: {e}"))?;
        Ok(keys)
    } else {
        let mut hs = builder
            .build_responder()
            .map_err(|e| format!("noise setup: {e}"))?;
        let msg = read_noise(stream).await?;
        hs.read_message(&msg, &mut payload)
            .map_err(|_| refused.to_string())?;
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(|e| format!("noise: {e}"))?;
        write_noise(stream, &buf[..n]).await?;
        let cipher = hs
            .into_stateless_transport_mode()
            .map_err(|e| format!("noise: {e}"))?;
        let mut keys = Keys::new(cipher);
        // Read record 0 exactly (nothing after it may be consumed here).
        let mut len = [0u8; 2];
        stream
            .read_exact(&mut len)
            .await
            .map_err(|e| format!("reading key confirmation: {e}"))?;
        let mut record = BytesMut::zeroed(2 + u16::from_be_bytes(len) as usize);
        record[..2].copy_from_slice(&len);
        stream
            .read_exact(&mut record[2..])
            .await
            .map_err(|e| format!("reading key confirmation: {e}"))?;
        let mut dec = keys.decoder(usize::MAX, Arc::default());
        match dec.decode(&mut record) {
            Ok(Some(f)) if f.kind == frame::NOISE && f.payload.is_empty() => {}
            Ok(_) => return Err("bad key confirmation".into()),
            Err(e) => return Err(format!("key confirmation: {e}")),
        }
        keys.recv_nonce += 1;
        Ok(keys)
    }
}

async fn write_noise(stream: &mut TcpStream, msg: &[u8]) -> Result<(), String> {
    let mut out = BytesMut::with_capacity(msg.len() + 5);
    out.put_u32(msg.len() as u32 + 1);
    out.put_u8(frame::NOISE);
    out.put_slice(msg);
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("writing the secret handshake: {e}"))
}

/// Reads one NOISE frame exactly.
async fn read_noise(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let f = frame::read_one(stream, MAX_MSG)
        .await
        .map_err(|e| match e {
            Ok(len) => format!("bad secret handshake frame length {len}"),
            Err(e) => format!("reading the secret handshake: {e}"),
        })?;
    if f.kind != frame::NOISE {
        return Err(format!(
            "expected the secret handshake, got frame kind {:#04x}",
            f.kind
        ));
    }
    Ok(f.payload.to_vec())
}

impl Keys {
    /// The codec that seals frames this end sends.
    pub(crate) fn encoder(&self, max: usize) -> SealCodec {
        SealCodec {
            frames: FrameCodec { max },
            cipher: self.cipher.clone(),
            nonce: self.send_nonce,
            plain: BytesMut::new(),
        }
    }

    /// The codec that opens frames this end receives; large payloads are
    /// read into buffers from `pool`.
    pub(crate) fn decoder(&self, max: usize, pool: Arc<Pool>) -> OpenCodec {
        OpenCodec {
            frames: FrameDecoder::new(max, pool),
            cipher: self.cipher.clone(),
            nonce: self.recv_nonce,
            plain: BytesMut::new(),
            opened: Vec::new(),
            ready: VecDeque::new(),
        }
    }
}

/// Encodes frames, then seals them into records.
pub(crate) struct SealCodec {
    frames: FrameCodec,
    cipher: Arc<StatelessTransportState>,
    nonce: u64,
    plain: BytesMut,
}

impl SealCodec {
    /// Encodes `frame` in the clear onto `plain`, to be sealed later with
    /// others ([`seal`](Self::seal)): small frames then share a record.
    pub(crate) fn frame_into(
        &mut self,
        frame: Frame,
        plain: &mut BytesMut,
    ) -> Result<(), CodecError> {
        self.frames.encode(frame, plain)
    }

    /// Seals `plain` into records on `dst`.
    pub(crate) fn seal(&mut self, plain: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        for chunk in plain.chunks(MAX_PLAIN) {
            let len = chunk.len() + TAG;
            dst.reserve(2 + len);
            dst.put_u16(len as u16);
            let start = dst.len();
            dst.resize(start + len, 0);
            self.cipher
                .write_message(self.nonce, chunk, &mut dst[start..])
                .map_err(|e| CodecError::Crypto(format!("sealing: {e}")))?;
            self.nonce += 1;
        }
        Ok(())
    }
}

/// One frame, sealed on its own (the handshake's key confirmation, tests).
impl Encoder<Frame> for SealCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        self.frames.encode(item, &mut plain)?;
        let sealed = self.seal(&plain, dst);
        self.plain = plain;
        sealed
    }
}

/// Opens records, then decodes the frames in them with the link's reader, so
/// large payloads land in buffers of their own (see [`crate::wire::decoder`]).
pub(crate) struct OpenCodec {
    frames: FrameDecoder,
    cipher: Arc<StatelessTransportState>,
    nonce: u64,
    /// Plaintext not yet decoded into frames.
    plain: BytesMut,
    /// The last record opened (reused: opening writes over it).
    opened: Vec<u8>,
    /// Frames decoded, not yet returned.
    ready: VecDeque<Frame>,
}

impl OpenCodec {
    /// Hands `data`, plaintext just opened, to the frame reader. A large
    /// frame's header that starts at a frame boundary goes in alone, so the
    /// rest of the frame is copied once, into the frame's own buffer.
    fn feed(&mut self, n: usize) -> Result<(), CodecError> {
        let mut data = &self.opened[..n];
        while !data.is_empty() {
            let mut take = data.len().min(self.frames.room(&self.plain));
            let header = LEN_BYTES + 1;
            if self.plain.is_empty() && data.len() >= header && self.frames.starts_own_frame(data) {
                take = header;
            }
            self.plain.extend_from_slice(&data[..take]);
            data = &data[take..];
            while let Some(f) = self.frames.decode(&mut self.plain)? {
                self.ready.push_back(f);
            }
        }
        Ok(())
    }
}

impl Decoder for OpenCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(Some(f));
            }
            if src.len() < 2 {
                return Ok(None);
            }
            let len = u16::from_be_bytes([src[0], src[1]]) as usize;
            if len < TAG {
                return Err(CodecError::Crypto(format!(
                    "record of {len} bytes is shorter than its tag"
                )));
            }
            if src.len() < 2 + len {
                src.reserve(2 + len - src.len());
                return Ok(None);
            }
            src.advance(2);
            let n = len - TAG;
            if self.opened.len() < n {
                self.opened.resize(n, 0);
            }
            let opened = self
                .cipher
                .read_message(self.nonce, &src[..len], &mut self.opened[..n]);
            src.advance(len);
            if opened.is_err() {
                return Err(CodecError::Crypto(
                    "a record failed authentication (altered, replayed or reordered)".into(),
                ));
            }
            self.nonce += 1;
            self.feed(n)?;
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(src)? {
            Some(f) => Ok(Some(f)),
            None if src.is_empty() && !self.frames.inside_frame(&self.plain) => Ok(None),
            None => Err(CodecError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the link ended inside a record",
            ))),
        }
    }
}

/// A sealing and an opening codec of one direction of a finished handshake,
/// without sockets, for the fuzz targets. The handshake runs once; every call
/// gets fresh codecs (nonces from 0) over its keys.
#[cfg(fuzzing)]
pub(crate) fn fuzz_pair(max: usize) -> (SealCodec, OpenCodec) {
    static KEYS: std::sync::OnceLock<(Keys, Keys)> = std::sync::OnceLock::new();
    let (i, r) = KEYS.get_or_init(|| {
        let params = Suite::ChaChaPoly.params();
        let psk = Psk::derive(b"fuzz", "fuzz");
        let mut i = snow::Builder::new(params.clone())
            .psk(0, &psk.0)
            .and_then(|b| b.prologue(b"p"))
            .and_then(|b| b.build_initiator())
            .expect("initiator");
        let mut r = snow::Builder::new(params)
            .psk(0, &psk.0)
            .and_then(|b| b.prologue(b"p"))
            .and_then(|b| b.build_responder())
            .expect("responder");
        let (mut m, mut p) = (vec![0u8; MAX_MSG], vec![0u8; MAX_MSG]);
        let n = i.write_message(&[], &mut m).expect("msg 1");
        r.read_message(&m[..n], &mut p).expect("msg 1");
        let n = r.write_message(&[], &mut m).expect("msg 2");
        i.read_message(&m[..n], &mut p).expect("msg 2");
        let keys = |s: snow::HandshakeState| {
            Keys::new(s.into_stateless_transport_mode().expect("transport"))
        };
        (keys(i), keys(r))
    });
    (i.encoder(max), r.decoder(max, Arc::default()))
}

/// How a link reads frames: in the clear, or out of sealed records.
pub(crate) enum Opener {
    Plain(FrameDecoder),
    Sealed(OpenCodec),
}

impl Decoder for Opener {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self {
            Opener::Plain(c) => c.decode(src),
            Opener::Sealed(c) => c.decode(src),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self {
            Opener::Plain(c) => c.decode_eof(src),
            Opener::Sealed(c) => c.decode_eof(src),
        }
    }
}

/// How a link writes frames: in the clear, or sealed into records.
pub(crate) enum Sealer {
    Plain(FrameCodec),
    Sealed(SealCodec),
}

impl Encoder<Frame> for Sealer {
    type Error = CodecError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            Sealer::Plain(c) => c.encode(item, dst),
            Sealer::Sealed(c) => c.encode(item, dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed pair of codecs, without sockets: the transport of a finished
    /// handshake between two in-memory handshake states.
    fn pair(psk_a: &Psk, psk_b: &Psk) -> Result<(Keys, Keys), snow::Error> {
        pair_with(psk_a, psk_b, Suite::ChaChaPoly)
    }

    fn pair_with(psk_a: &Psk, psk_b: &Psk, suite: Suite) -> Result<(Keys, Keys), snow::Error> {
        let params = suite.params();
        let mut i = snow::Builder::new(params.clone())
            .psk(0, &psk_a.0)?
            .prologue(b"p")?
            .build_initiator()?;
        let mut r = snow::Builder::new(params)
            .psk(0, &psk_b.0)?
            .prologue(b"p")?
            .build_responder()?;
        let (mut m, mut p) = (vec![0u8; MAX_MSG], vec![0u8; MAX_MSG]);
        let n = i.write_message(&[], &mut m)?;
        r.read_message(&m[..n], &mut p)?;
        let n = r.write_message(&[], &mut m)?;
        i.read_message(&m[..n], &mut p)?;
        let keys = |s: snow::HandshakeState| -> Result<Keys, snow::Error> {
            Ok(Keys::new(s.into_stateless_transport_mode()?))
        };
        Ok((keys(i)?, keys(r)?))
    }

    fn data(n: usize) -> Frame {
        Frame::data((0..n).map(|i| i as u8).collect::<Vec<u8>>().into())
    }

    #[test]
    fn psk_depends_on_secret_and_cluster() {
        let a = Psk::derive(b"s", "c").0;
        assert_ne!(a, Psk::derive(b"t", "c").0);
        assert_ne!(a, Psk::derive(b"s", "d").0);
        assert_eq!(a, Psk::derive(b"s", "c").0);
    }

    #[test]
    fn wrong_secret_fails_the_handshake() {
        for suite in [Suite::AesGcm, Suite::ChaChaPoly] {
            let (s, x) = (Psk::derive(b"s", "c"), Psk::derive(b"x", "c"));
            assert!(pair_with(&s, &x, suite).is_err(), "{suite:?}");
        }
    }

    /// AES-GCM only where both ends have the hardware; the two ends of a
    /// link, each with its own view, agree.
    #[test]
    fn suite_agreement() {
        for (a, b) in [(true, true), (true, false), (false, true), (false, false)] {
            assert_eq!(Suite::agreed(a, b), Suite::agreed(b, a));
            let want = if a && b {
                Suite::AesGcm
            } else {
                Suite::ChaChaPoly
            };
            assert_eq!(Suite::agreed(a, b), want);
        }
    }

    #[test]
    fn frames_round_trip_in_any_split_including_large_ones() {
        for suite in [Suite::AesGcm, Suite::ChaChaPoly] {
            round_trip(suite);
        }
    }

    fn round_trip(suite: Suite) {
        let psk = Psk::derive(b"s", "c");
        let (a, b) = pair_with(&psk, &psk, suite).unwrap();
        let (mut enc, mut dec) = (a.encoder(1 << 20), b.decoder(1 << 20, Arc::default()));
        let sent = vec![
            data(0),
            data(10),
            data(MAX_PLAIN * 2 + 7),
            data(64),
            data(65536),
            data(65536),
            data(3),
            data(100_000),
            data(16 * 1024),
        ];
        let mut wire = BytesMut::new();
        for f in &sent {
            enc.encode(f.clone(), &mut wire).unwrap();
        }
        // Feed the ciphertext in odd-sized pieces.
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for piece in wire.chunks(777) {
            buf.extend_from_slice(piece);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, sent);
        assert!(dec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn flipped_byte_replay_and_reorder_are_caught() {
        let psk = Psk::derive(b"s", "c");
        let (a, b) = pair(&psk, &psk).unwrap();
        let mut enc = a.encoder(1024);
        let mut one = BytesMut::new();
        enc.encode(data(5), &mut one).unwrap();
        let mut two = BytesMut::new();
        enc.encode(data(6), &mut two).unwrap();

        // Each byte flipped in turn, length prefix included, is caught.
        for i in 0..one.len() {
            let mut bad = one.clone();
            bad[i] ^= 0x01;
            let mut dec = b.decoder(1024, Arc::default());
            let r = dec.decode(&mut bad);
            let caught = r.is_err() || matches!(r, Ok(None)) && dec.decode_eof(&mut bad).is_err();
            assert!(caught, "flipped byte {i} went through");
        }
        // Reordered: the second record first.
        assert!(b
            .decoder(1024, Arc::default())
            .decode(&mut two.clone())
            .is_err());
        // Replayed: the first record twice.
        let mut dec = b.decoder(1024, Arc::default());
        assert!(dec.decode(&mut one.clone()).unwrap().is_some());
        assert!(dec.decode(&mut one.clone()).is_err());
    }
}
