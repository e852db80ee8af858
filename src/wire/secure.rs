//! The cluster secret: the pre-shared key, and the sealed records every
//! byte of a link travels in once the handshake (see [`crate::wire::noise`])
//! has proved both ends hold it.
//!
//! Nothing here is home-made cryptography: the records are sealed by ring's
//! AES-256-GCM or ChaCha20-Poly1305 through `snow`'s Noise transport, and
//! HKDF-SHA256 (the RustCrypto crates) turns the user's secret into Noise's
//! 32-byte pre-shared key and into the short [`KeyId`] a hello names it by.
//!
//! # Records
//!
//! Every byte of a sealed link travels in records: `length: u16 BE |
//! ciphertext` with at most 65 519 bytes of plaintext each, sealed under a
//! per-direction key and a counter nonce. Frames are encoded as in the
//! clear and cut into records. A record that was altered, replayed,
//! reordered or dropped fails to open, and the link closes with
//! [`CloseReason::Protocol`](crate::CloseReason::Protocol).
//!
//! Each direction's key is replaced every [`REKEY_EVERY`] records by Noise's
//! `REKEY` (a function of the key alone: no message, both ends change keys
//! at the same record), so no key seals more than 2^20 records (64 GiB),
//! far inside AES-GCM's safety margin (TLS 1.3 allows 2^24.5 records of
//! 16 KiB per key).
//!
//! A sender ends its side with a sealed [`CLOSE`](crate::wire::frame::CLOSE)
//! frame before it shuts the socket down: an end of stream without it
//! (cut inside a record or between two) was not the peer's doing, and
//! ends the link as a failure (see `link::read`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, BytesMut};
use hkdf::Hkdf;
use sha2::Sha256;
use snow::StatelessTransportState;
use tokio_util::codec::{Decoder, Encoder};

use crate::sync::lock;
use crate::wire::decoder::{FrameDecoder, Pool};
use crate::wire::frame::{CodecError, Frame, FrameCodec, LEN_BYTES};

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
}

/// Largest Noise message.
const MAX_MSG: usize = 65535;
/// Poly1305 tag.
const TAG: usize = 16;
/// Most plaintext in one record.
pub(crate) const MAX_PLAIN: usize = MAX_MSG - TAG;
/// Records sealed under one key before each end moves to the next one.
pub(crate) const REKEY_EVERY: u64 = 1 << 20;

/// The 32-byte pre-shared key of a cluster, derived from its secret.
#[derive(Clone)]
pub(crate) struct Psk([u8; 32]);

/// Most keys a keyring holds.
pub(crate) const MAX_KEYS: usize = 16;

/// The cluster keys a node holds: the primary, which its dials use and its
/// hello names, and others it accepts dials under. A dialer's hello names
/// its key by [`KeyId`], so the acceptor picks that key without trying any.
/// Rotation, as Serf and memberlist do it: install the new key on every
/// node, make it the primary on every node, remove the old one.
pub(crate) struct Keyring {
    /// The primary key first.
    keys: Vec<Psk>,
}

impl Keyring {
    pub(crate) fn new(primary: Psk) -> Keyring {
        Keyring {
            keys: vec![primary],
        }
    }

    /// The key this node dials with.
    pub(crate) fn primary(&self) -> &Psk {
        &self.keys[0]
    }

    /// The key named `id`, if this node holds it.
    pub(crate) fn get(&self, id: KeyId) -> Option<&Psk> {
        self.keys.iter().find(|k| k.id() == id)
    }

    /// Adds `key` (already held: nothing changes). The error says why not.
    pub(crate) fn install(&mut self, key: Psk) -> Result<(), String> {
        if self.get(key.id()).is_some() {
            return Ok(());
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(format!("the keyring holds {MAX_KEYS} keys already"));
        }
        self.keys.push(key);
        Ok(())
    }

    /// Makes the installed key `id` the primary.
    pub(crate) fn use_key(&mut self, id: KeyId) -> Result<(), String> {
        let at = self
            .keys
            .iter()
            .position(|k| k.id() == id)
            .ok_or_else(|| format!("key {id} is not installed"))?;
        self.keys.swap(0, at);
        Ok(())
    }

    /// Removes the key `id`, which must not be the primary.
    pub(crate) fn remove(&mut self, id: KeyId) -> Result<(), String> {
        if self.primary().id() == id {
            return Err(format!(
                "key {id} is the primary key: make another one primary first"
            ));
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.id() != id);
        if self.keys.len() == before {
            return Err(format!("key {id} is not installed"));
        }
        Ok(())
    }
}

/// A short name for a cluster key, said in the hello: the first 4 bytes of
/// an HKDF-SHA256 expansion of the key, so it tells nothing about the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyId(pub u32);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

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

    /// The key's short name.
    pub(crate) fn id(&self) -> KeyId {
        let hk = Hkdf::<Sha256>::from_prk(&self.0).expect("32 bytes is a valid PRK");
        let mut id = [0u8; 4];
        hk.expand(b"tcpnet key id", &mut id)
            .expect("4 bytes is a valid HKDF-SHA256 length");
        KeyId(u32::from_be_bytes(id))
    }

    /// The key itself, for the handshake.
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Psk({})", self.id())
    }
}

/// The keys of a link whose handshake completed, with the next record's
/// number each way.
pub(crate) struct Keys {
    /// Both directions' ciphers: a lock only because a rekey changes one;
    /// the reader and the writer of a link run in one task, so it is never
    /// contended.
    cipher: Arc<Mutex<StatelessTransportState>>,
    send_nonce: u64,
    recv_nonce: u64,
    rekey_every: u64,
}

impl Keys {
    /// The keys of a finished handshake.
    pub(crate) fn new(transport: StatelessTransportState) -> Keys {
        Keys {
            cipher: Arc::new(Mutex::new(transport)),
            send_nonce: 0,
            recv_nonce: 0,
            rekey_every: REKEY_EVERY,
        }
    }

    /// Counts a record sealed or opened outside the codecs (the handshake's
    /// key confirmation).
    pub(crate) fn sent_one(&mut self) {
        self.send_nonce += 1;
    }

    /// See [`sent_one`](Self::sent_one).
    pub(crate) fn received_one(&mut self) {
        self.recv_nonce += 1;
    }
    /// The codec that seals frames this end sends.
    pub(crate) fn encoder(&self, max: usize) -> SealCodec {
        SealCodec {
            frames: FrameCodec { max },
            cipher: self.cipher.clone(),
            nonce: self.send_nonce,
            rekey_every: self.rekey_every,
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
            rekey_every: self.rekey_every,
            plain: BytesMut::new(),
            opened: Vec::new(),
            ready: VecDeque::new(),
        }
    }
}

/// Encodes frames, then seals them into records.
pub(crate) struct SealCodec {
    frames: FrameCodec,
    cipher: Arc<Mutex<StatelessTransportState>>,
    nonce: u64,
    rekey_every: u64,
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
        let mut cipher = lock(&self.cipher);
        for chunk in plain.chunks(MAX_PLAIN) {
            if self.nonce > 0 && self.nonce % self.rekey_every == 0 {
                cipher.rekey_outgoing();
            }
            let len = chunk.len() + TAG;
            dst.reserve(2 + len);
            dst.put_u16(len as u16);
            let start = dst.len();
            dst.resize(start + len, 0);
            cipher
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
    cipher: Arc<Mutex<StatelessTransportState>>,
    nonce: u64,
    rekey_every: u64,
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
            let opened = {
                let mut cipher = lock(&self.cipher);
                if self.nonce > 0 && self.nonce % self.rekey_every == 0 {
                    cipher.rekey_incoming();
                }
                cipher.read_message(self.nonce, &src[..len], &mut self.opened[..n])
            };
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
            // Not the peer's doing: its close comes after whole records.
            None => Err(CodecError::Crypto(
                "the link was cut inside a record (not closed by the peer)".into(),
            )),
        }
    }
}

/// A sealing and an opening codec of one direction of a finished handshake,
/// without sockets, for the fuzz targets. The handshake runs once; every call
/// gets fresh codecs (nonces from 0) over its keys.
#[cfg(fuzzing)]
pub(crate) fn fuzz_pair(max: usize) -> (SealCodec, OpenCodec) {
    static KEYS: std::sync::OnceLock<(Keys, Keys)> = std::sync::OnceLock::new();
    let (i, r) = KEYS.get_or_init(|| crate::wire::noise::keys_pair(Suite::ChaChaPoly));
    (i.encoder(max), r.decoder(max, Arc::default()))
}

/// How a link reads frames: in the clear, or out of sealed records.
pub(crate) enum Opener {
    Plain(FrameDecoder),
    Sealed(OpenCodec),
}

impl Opener {
    /// The link's decoder in the clear, if that is what it is.
    pub(crate) fn plain(&self) -> Option<&FrameDecoder> {
        match self {
            Opener::Plain(d) => Some(d),
            Opener::Sealed(_) => None,
        }
    }

    /// The same, to change.
    pub(crate) fn plain_mut(&mut self) -> Option<&mut FrameDecoder> {
        match self {
            Opener::Plain(d) => Some(d),
            Opener::Sealed(_) => None,
        }
    }
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

    use crate::wire::noise::keys_pair;

    fn data(n: usize) -> Frame {
        Frame::data((0..n).map(|i| i as u8).collect::<Vec<u8>>().into())
    }

    #[test]
    fn a_keyring_rotates_its_primary_and_keeps_it() {
        let (a, b) = (Psk::derive(b"a", "c"), Psk::derive(b"b", "c"));
        let mut ring = Keyring::new(a.clone());
        assert!(ring.get(b.id()).is_none());
        assert!(ring.use_key(b.id()).is_err(), "not installed");
        ring.install(b.clone()).unwrap();
        ring.install(b.clone()).unwrap();
        assert_eq!(ring.keys.len(), 2, "installed once");
        assert_eq!(ring.primary().id(), a.id());
        assert!(ring.remove(a.id()).is_err(), "the primary stays");
        ring.use_key(b.id()).unwrap();
        assert_eq!(ring.primary().id(), b.id());
        assert!(ring.get(a.id()).is_some());
        ring.remove(a.id()).unwrap();
        assert!(ring.get(a.id()).is_none());
        assert!(ring.remove(a.id()).is_err(), "gone");
        for i in 1..MAX_KEYS {
            ring.install(Psk::derive(&[i as u8], "c")).unwrap();
        }
        assert!(ring.install(Psk::derive(b"one more", "c")).is_err());
    }

    #[test]
    fn psk_depends_on_secret_and_cluster() {
        let a = Psk::derive(b"s", "c").0;
        assert_ne!(a, Psk::derive(b"t", "c").0);
        assert_ne!(a, Psk::derive(b"s", "d").0);
        assert_eq!(a, Psk::derive(b"s", "c").0);
    }

    #[test]
    fn key_ids_name_keys_without_telling_them() {
        let (a, b) = (Psk::derive(b"s", "c"), Psk::derive(b"t", "c"));
        assert_eq!(a.id(), Psk::derive(b"s", "c").id());
        assert_ne!(a.id(), b.id());
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.0)));
    }

    /// Both ends move to the next key at the same record, without a word;
    /// a record sealed under the old key after that point does not open.
    #[test]
    fn keys_change_every_few_records_on_both_ends() {
        let (mut a, mut b) = keys_pair(Suite::ChaChaPoly);
        a.rekey_every = 3;
        b.rekey_every = 3;
        let (mut enc, mut dec) = (a.encoder(1024), b.decoder(1024, Arc::default()));
        let mut wire = BytesMut::new();
        for i in 0..10 {
            enc.encode(data(i), &mut wire).unwrap();
        }
        for i in 0..10 {
            assert_eq!(dec.decode(&mut wire).unwrap(), Some(data(i)), "record {i}");
        }
        // A decoder that does not rekey fails at the first new key.
        let (mut a, b) = keys_pair(Suite::ChaChaPoly);
        a.rekey_every = 2;
        let (mut enc, mut dec) = (a.encoder(1024), b.decoder(1024, Arc::default()));
        let mut wire = BytesMut::new();
        for i in 0..3 {
            enc.encode(data(i), &mut wire).unwrap();
        }
        assert!(dec.decode(&mut wire).unwrap().is_some());
        assert!(dec.decode(&mut wire).unwrap().is_some());
        assert!(dec.decode(&mut wire).is_err());
    }

    #[test]
    fn a_stream_cut_inside_a_record_is_an_error() {
        let (a, b) = keys_pair(Suite::ChaChaPoly);
        let mut wire = BytesMut::new();
        a.encoder(1024).encode(data(100), &mut wire).unwrap();
        wire.truncate(wire.len() - 1);
        let mut dec = b.decoder(1024, Arc::default());
        assert!(dec.decode(&mut wire).unwrap().is_none());
        match dec.decode_eof(&mut wire) {
            Err(CodecError::Crypto(reason)) => assert!(reason.contains("cut"), "{reason}"),
            other => panic!("{other:?}"),
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
        let (a, b) = keys_pair(suite);
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
        let (a, b) = keys_pair(Suite::ChaChaPoly);
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
