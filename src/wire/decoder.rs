//! The read side of a link in the clear: bytes to frames, with large
//! payloads read straight into buffers of their own.
//!
//! Small frames are cut out of one read buffer ([`FrameCodec`]), so one
//! system call brings many of them. A frame handed to the user keeps the
//! memory it was cut from alive, though, and while any is alive the read
//! buffer cannot be reused in place: every large frame would then come from
//! fresh memory, which the kernel maps page by page as the socket is copied
//! into it (the page faults cost a quarter of the CPU at 64 KiB). So a
//! payload of at least [`OWN_BUFFER`] bytes gets a buffer of exactly its
//! size as soon as its header is in: the few bytes of it already read are
//! moved there, the rest is read into it directly, and the whole buffer
//! becomes the frame, with no copy. The read buffer is then used again for
//! the next header and stays small.
//!
//! A payload's buffer comes back to its link when the user drops the last
//! handle to it, and the next large frame is read into it: fresh memory is
//! what costs (glibc hands freed memory back to the kernel when a thread's
//! heap has 128 KiB free at its top, so without reuse every 64 KiB frame is
//! faulted in anew: 6 page faults a frame, measured). A link keeps at most
//! [`POOL_BYTES`] of such buffers, counted against the node's cap on
//! queued bytes as its queues are, and only while that leaves the node a
//! quarter of its cap; it lets them go at the first tick of the node's
//! timer in which no large frame came, and at any tick that finds the node
//! short of room (see [`Pool::tick`]): a link that streams large frames
//! keeps its buffers, an idle one or one that now sends small frames holds
//! none, and busy links' buffers do not keep the cap from queued frames.
//!
//! How much one read may bring follows the peer: while reads come full
//! (a stream of small frames), the read buffer is given [`READ_ROOM`], so
//! one system call brings about a thousand 64 B frames rather than a hundred
//! and twenty, and the reader wakes the consumer that much less often; once
//! reads come small again (a round trip, heartbeats), it goes back to the
//! [`IDLE_ROOM`] of an idle link, which a read that comes full makes 8 KiB
//! again. So an idle link holds 256 bytes to read into, not 8 KiB. A burst
//! shorter than [`SUSTAINED`] is read 8 KiB at a time, and the 8 KiB go as
//! soon as a read leaves the buffer empty without having filled it: what a
//! new link is told of the cluster (member records, lists of links) comes
//! in such bursts, to every link of a forming mesh, and read buffers kept
//! larger than the bursts, or for longer, would be freed a moment later
//! between the allocations that stay, where glibc cannot give them back
//! (64 KiB reads of the first burst take the heap's high-water mark at 127
//! links to 7.0 MB against 4.5, and the heap glibc keeps to 7.4 MB against
//! 5.6). The price: a message of a few KiB that comes alone is read into
//! 256 bytes and then into 8 KiB grown for it, two reads, until reads have
//! brought [`SUSTAINED`] bytes since the link was last quiet (keeping the
//! 8 KiB until a quiet read instead costs an idle link about 5 KiB of
//! memory at 63 and 127 links).

use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::limits::DEFAULT_QUEUE_BYTES;
use crate::stats::Queued;
use crate::wire::frame::{CodecError, Frame, FrameCodec, LEN_BYTES};

/// Payloads at least this large are read into a buffer of their own.
pub(crate) const OWN_BUFFER: usize = 16 * 1024;
/// A payload's own buffer is allocated whole up to this size; a larger one
/// grows by this much as its bytes come, so a peer that announces a large
/// frame and sends nothing costs little.
pub(crate) const OWN_STEP: usize = 1024 * 1024;
/// Most bytes of dropped payload buffers a link keeps for reuse: about what
/// may be in flight with the default queues (the receive queue's
/// [`DEFAULT_QUEUE_BYTES`] and as much again taken by a reader and on the
/// way). They count against the node's cap (see [`Pool`]).
pub(crate) const POOL_BYTES: usize = 2 * DEFAULT_QUEUE_BYTES;
/// Most dropped payload buffers a link keeps for reuse.
const POOL_BUFFERS: usize = 128;
/// Room for the next read while the peer streams small frames ...
pub(crate) const READ_ROOM: usize = 64 * 1024;
/// ... which it does when what one read brought is at least this much ...
const STREAMING: usize = 4 * 1024;
/// ... and reads have brought this much since the link was last quiet: a
/// burst shorter than it (what a new link is told of the cluster) is read
/// in [`QUIET_ROOM`].
const SUSTAINED: usize = 32 * 1024;
/// A busy link's read buffer (what tokio-util's `FramedRead` starts with)
/// ...
const QUIET_ROOM: usize = 8 * 1024;
/// ... and an idle one's (a link in the clear starts with it): room for a
/// heartbeat and a few small frames.
pub(crate) const IDLE_ROOM: usize = 256;

/// Payload buffers the user has dropped, for the next large frames.
#[derive(Default)]
pub(crate) struct Pool {
    kept: Mutex<Kept>,
    /// The node's count of queued bytes, which what is kept counts in (none
    /// outside a node).
    node: Option<Arc<Queued>>,
}

#[derive(Default)]
struct Kept {
    free: Vec<BytesMut>,
    /// The room of the buffers in `free` ...
    bytes: usize,
    /// ... and what the node is charged for them.
    charged: usize,
    /// A large frame was read since the last tick.
    used: bool,
}

impl Pool {
    /// A pool whose buffers count against `node`'s cap.
    pub(crate) fn within(node: Arc<Queued>) -> Pool {
        Pool {
            kept: Mutex::default(),
            node: Some(node),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer with room for `len` bytes (up to [`OWN_STEP`]), at
    /// most twice that, so a small frame does not take a huge buffer.
    fn take(&self, len: usize) -> BytesMut {
        let want = len.min(OWN_STEP);
        let mut kept = self.lock();
        kept.used = true;
        match kept
            .free
            .iter()
            .position(|b| b.capacity() >= want && b.capacity() / 2 <= want)
        {
            Some(i) => {
                let buf = kept.free.swap_remove(i);
                kept.bytes -= buf.capacity();
                self.recharge(&mut kept);
                buf
            }
            None => BytesMut::with_capacity(want),
        }
    }

    /// The node's timer's visit, once a tick: frees every buffer kept if no
    /// large frame was read since the last tick, or if the node is short of
    /// room (see [`Queued::short`]).
    pub(crate) fn tick(&self) {
        let mut kept = self.lock();
        let used = std::mem::take(&mut kept.used);
        if kept.free.is_empty() || used && !self.node.as_ref().is_some_and(|n| n.short()) {
            return;
        }
        let free = std::mem::take(&mut kept.free);
        kept.bytes = 0;
        self.recharge(&mut kept);
        drop(kept);
        drop(free);
    }

    fn give_back(&self, mut buf: BytesMut) {
        buf.clear();
        let size = buf.capacity();
        let mut kept = self.lock();
        if kept.free.len() < POOL_BUFFERS
            && kept.bytes + size <= POOL_BYTES
            && self.node.as_ref().is_none_or(|n| n.can_keep(size))
        {
            kept.free.push(buf);
            kept.bytes += size;
            self.recharge(&mut kept);
        }
    }

    /// Brings what the node is charged for the buffers kept up to date.
    fn recharge(&self, kept: &mut Kept) {
        if let Some(node) = &self.node {
            kept.charged = node.recharge(kept.charged, kept.bytes);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let kept = self.kept.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(node) = &self.node {
            kept.charged = node.recharge(kept.charged, 0);
        }
    }
}

/// A payload read into a buffer of its own; the buffer goes back to the
/// pool when the last `Bytes` of it is dropped.
struct Pooled {
    buf: BytesMut,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

/// Decodes frames in the clear (see the module docs).
pub(crate) struct FrameDecoder {
    codec: FrameCodec,
    /// The large frame being read into its own buffer (which is then the
    /// buffer being read into).
    own: Option<OwnFrame>,
    pool: Arc<Pool>,
    /// Bytes of small frames decoded since the decoder last asked for
    /// more: what the last read brought, about.
    streak: usize,
    /// The room the read buffer had for the next read when the decoder
    /// last asked for more.
    room: usize,
    /// Bytes brought since a read brought little and emptied the buffer.
    streamed: usize,
}

struct OwnFrame {
    kind: u8,
    len: usize,
    /// The read buffer, set aside until the frame is whole.
    set_aside: BytesMut,
}

impl FrameDecoder {
    /// Reads frames of at most `max` bytes, reusing buffers from `pool`.
    pub(crate) fn new(max: usize, pool: Arc<Pool>) -> Self {
        FrameDecoder {
            codec: FrameCodec { max },
            own: None,
            pool,
            streak: 0,
            room: 0,
            streamed: 0,
        }
    }
}

impl FrameDecoder {
    /// How many more bytes `src` may take before the large frame being read
    /// into its own buffer is whole (`usize::MAX` when none is).
    pub(crate) fn room(&self, src: &BytesMut) -> usize {
        self.own
            .as_ref()
            .map_or(usize::MAX, |own| own.len.saturating_sub(src.len()))
    }

    /// True if `header` (at least 5 bytes, at a frame boundary) starts a
    /// frame that will be read into a buffer of its own.
    pub(crate) fn starts_own_frame(&self, header: &[u8]) -> bool {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let payload = len.wrapping_sub(1);
        payload >= OWN_BUFFER && payload <= self.codec.max
    }

    /// True while a frame begun is not whole.
    pub(crate) fn inside_frame(&self, src: &BytesMut) -> bool {
        self.own.is_some() || !src.is_empty()
    }

    /// Payloads under this size may be cut off the read buffer directly
    /// (see [`cut_small`](crate::wire::frame::cut_small)), or `None` while
    /// a large frame is being read into its own buffer (the buffer then
    /// holds its payload, not frames).
    pub(crate) fn small_under(&self) -> Option<usize> {
        self.own
            .is_none()
            .then(|| OWN_BUFFER.min(self.codec.max + 1))
    }

    /// `bytes` of frames were cut off the read buffer directly: they count
    /// as read, for the size of the next read.
    pub(crate) fn cut(&mut self, bytes: usize) {
        self.streak += bytes;
    }

    /// Sizes the read buffer for the next read (see the module docs).
    fn make_room(&mut self, src: &mut BytesMut) {
        let brought = std::mem::take(&mut self.streak) + src.len();
        let room = std::mem::take(&mut self.room);
        let spare = src.capacity() - src.len();
        let quiet = brought < STREAMING / 8 && src.is_empty();
        self.streamed = match quiet {
            true => 0,
            false => self.streamed.saturating_add(brought),
        };
        // A short burst read whole: the read did not fill its room and left
        // nothing, so the socket is drained for now.
        let burst_read = src.is_empty() && brought < room && self.streamed < SUSTAINED;
        if brought >= STREAMING && !burst_read {
            let want = if self.streamed >= SUSTAINED {
                READ_ROOM
            } else {
                QUIET_ROOM
            };
            if spare < want / 4 {
                // In place once the frames cut from it are gone, else a
                // fresh buffer, with the start of a frame moved there.
                src.reserve(want.saturating_sub(src.len()));
            }
        } else if room > 0 && brought >= room && src.capacity() < QUIET_ROOM {
            // An idle link's small buffer came full: more may be waiting.
            src.reserve(QUIET_ROOM - src.len());
        } else if (quiet || burst_read) && src.capacity() > 2 * IDLE_ROOM {
            // Quiet again, or a short burst over: let the larger buffer go.
            *src = BytesMut::with_capacity(IDLE_ROOM);
        } else if src.is_empty() && src.capacity() < IDLE_ROOM / 2 {
            // Back to the start of the buffer (in place once the frames cut
            // from it are gone): the next read is not cut short by where
            // the last frame ended.
            src.reserve(IDLE_ROOM);
        }
        self.room = src.capacity() - src.len();
    }
}

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if let Some(own) = &self.own {
            if src.len() < own.len {
                // Room for the next read, within the frame.
                if src.len() == src.capacity() {
                    src.reserve((own.len - src.len()).min(OWN_STEP));
                }
                return Ok(None);
            }
            let own = self.own.take().expect("checked above");
            let mut read = std::mem::replace(src, own.set_aside);
            if read.len() > own.len {
                // The buffer is larger than the frame and a read went past
                // it: the rest belongs to the frames after it.
                src.extend_from_slice(&read[own.len..]);
                read.truncate(own.len);
            }
            let payload = Bytes::from_owner(Pooled {
                buf: read,
                pool: self.pool.clone(),
            });
            return Ok(Some(Frame {
                kind: own.kind,
                payload,
            }));
        }
        if src.len() > LEN_BYTES {
            let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            // Bounds are checked by the codec, below, for every frame.
            let payload = len.wrapping_sub(1);
            if payload >= OWN_BUFFER && payload <= self.codec.max && src.len() < LEN_BYTES + len {
                let kind = src[LEN_BYTES];
                src.advance(LEN_BYTES + 1);
                let mut buf = self.pool.take(payload);
                buf.extend_from_slice(src);
                src.clear();
                let set_aside = std::mem::replace(src, buf);
                self.own = Some(OwnFrame {
                    kind,
                    len: payload,
                    set_aside,
                });
                return self.decode(src);
            }
        }
        match self.codec.decode(src)? {
            Some(frame) => {
                self.streak += LEN_BYTES + 1 + frame.payload.len();
                Ok(Some(frame))
            }
            None => {
                self.make_room(src);
                Ok(None)
            }
        }
    }

    /// The stream ended: a frame begun and not finished is an error, even
    /// when all of its bytes read so far were moved to its own buffer.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if !self.inside_frame(src) => Ok(None),
            None => Err(CodecError::Io(std::io::Error::other(
                "the stream ended inside a frame",
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::DATA;
    use bytes::BufMut;
    use tokio_util::codec::Encoder;

    fn encoded(frames: &[Frame]) -> BytesMut {
        let mut codec = FrameCodec { max: 1 << 22 };
        let mut out = BytesMut::new();
        for f in frames {
            codec.encode(f.clone(), &mut out).unwrap();
        }
        out
    }

    fn frame(len: usize, seed: u8) -> Frame {
        Frame {
            kind: DATA,
            payload: (0..len).map(|i| (i as u8).wrapping_add(seed)).collect(),
        }
    }

    /// Feeds `wire` in reads of at most `chunk` bytes, into whatever room
    /// the buffer has (as `FramedRead` does, reserving 1 first), and
    /// decodes after each.
    fn decode_in_reads(wire: &[u8], chunk: usize) -> Vec<Frame> {
        let mut reader = FrameDecoder::new(1 << 22, Arc::default());
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let mut got = Vec::new();
        let mut at = 0;
        loop {
            while let Some(f) = reader.decode(&mut buf).unwrap() {
                got.push(f);
            }
            if at == wire.len() {
                return got;
            }
            buf.reserve(1);
            let room = buf.capacity() - buf.len();
            let n = room.min(chunk).min(wire.len() - at);
            buf.put_slice(&wire[at..at + n]);
            at += n;
        }
    }

    /// Small, large, very large and empty frames, split at any point, come
    /// out as they went in.
    #[test]
    fn mixed_sizes_in_any_reads() {
        let frames = vec![
            frame(10, 1),
            frame(OWN_BUFFER, 2),
            frame(0, 3),
            frame(OWN_BUFFER - 1, 4),
            frame(3 * OWN_STEP + 17, 5),
            frame(200_000, 6),
            frame(5, 7),
        ];
        let wire = encoded(&frames);
        for chunk in [1, 7, 4096, 65_536, 1 << 20, usize::MAX] {
            assert_eq!(decode_in_reads(&wire, chunk), frames, "reads of {chunk}");
        }
    }

    /// A large payload is the buffer it was read into, not a copy.
    #[test]
    fn large_payload_owns_its_buffer() {
        let f = frame(100_000, 9);
        let wire = encoded(std::slice::from_ref(&f));
        let mut reader = FrameDecoder::new(1 << 20, Arc::default());
        let mut buf = BytesMut::with_capacity(8 * 1024);
        buf.put_slice(&wire[..1000]);
        assert!(reader.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= 100_000, "the payload's own buffer");
        let at = buf.as_ptr();
        buf.put_slice(&wire[1000..]);
        let got = reader.decode(&mut buf).unwrap().unwrap();
        assert_eq!(got, f);
        assert_eq!(got.payload.as_ptr(), at, "no copy");
        assert!(buf.capacity() < 8 * 1024, "the read buffer is back");
    }

    /// A dropped payload's buffer takes the next large frame; one still
    /// held does not.
    #[test]
    fn dropped_buffers_are_reused() {
        let mut reader = FrameDecoder::new(1 << 20, Arc::default());
        let mut next = |seed: u8| {
            // Its header and a little of it first, as from a socket.
            let wire = encoded(&[frame(50_000, seed)]);
            let mut buf = BytesMut::from(&wire[..100]);
            assert!(reader.decode(&mut buf).unwrap().is_none());
            buf.extend_from_slice(&wire[100..]);
            let f = reader.decode(&mut buf).unwrap().unwrap();
            assert_eq!(f, frame(50_000, seed));
            f
        };
        let first = next(1);
        let at = first.payload.as_ptr();
        drop(first);
        let second = next(2);
        assert_eq!(second.payload.as_ptr(), at, "reused");
        let third = next(3);
        assert_ne!(third.payload.as_ptr(), at, "still held");
        drop((second, third));
        let held = |r: &FrameDecoder| r.pool.lock().free.len();
        assert_eq!(held(&reader), 2);
        reader.pool.tick();
        assert_eq!(held(&reader), 2, "large frames came since the last tick");
        reader.pool.tick();
        assert_eq!(held(&reader), 0, "none came for a tick: let go");
    }

    /// What a pool keeps counts against its node's cap: a buffer is kept
    /// only while the node keeps a quarter of its cap, and all go at a
    /// tick that finds the node short of room, even while large frames
    /// come.
    #[test]
    fn kept_buffers_count_against_the_nodes_cap() {
        use crate::stats::SLAB;
        let node = Arc::new(Queued::default());
        node.set_max(1 << 20);
        let pool = Arc::new(Pool::within(node.clone()));
        let mut reader = FrameDecoder::new(1 << 20, pool.clone());
        // A large frame, its header and a little of it first, as from a
        // socket: read into a buffer of its own.
        let mut next = |seed: u8| {
            let wire = encoded(&[frame(100_000, seed)]);
            let mut buf = BytesMut::from(&wire[..100]);
            assert!(reader.decode(&mut buf).unwrap().is_none());
            buf.extend_from_slice(&wire[100..]);
            reader.decode(&mut buf).unwrap().unwrap()
        };
        let held: Vec<Frame> = (0..8).map(&mut next).collect();
        drop(held);
        let (kept, bytes) = {
            let k = pool.lock();
            (k.free.len(), k.bytes)
        };
        assert!((1..8).contains(&kept), "{kept} kept");
        assert_eq!(node.used(), bytes - bytes % SLAB, "charged");
        assert!(!node.short(), "the pool leaves the node a quarter");
        // A large frame read, as on every tick of a stream: kept.
        drop(next(8));
        pool.tick();
        assert!(!pool.lock().free.is_empty(), "still streaming: kept");
        // Other queues take the node short of room: let go, though a large
        // frame came since the last tick.
        let other = node.recharge(0, node.room() - 100_000);
        assert!(node.short());
        drop(next(9));
        pool.tick();
        assert!(pool.lock().free.is_empty(), "short: let go");
        assert_eq!(node.used(), other);
        drop(reader);
        drop(pool);
        node.recharge(other, 0);
        assert_eq!(node.used(), 0);
    }

    /// A stream that ends right after a large frame's header (nothing of it
    /// left in the read buffer) ends in an error, not cleanly.
    #[test]
    fn ending_inside_a_large_frame_is_an_error() {
        let mut reader = FrameDecoder::new(1 << 20, Arc::default());
        let mut buf = BytesMut::new();
        buf.put_u32(100_001);
        buf.put_u8(DATA);
        assert!(reader.decode(&mut buf).unwrap().is_none());
        assert!(buf.is_empty(), "the header was taken");
        assert!(matches!(
            reader.decode_eof(&mut buf),
            Err(CodecError::Io(_))
        ));
    }

    /// An announced frame over the maximum is refused before anything is
    /// allocated for it; one within it costs at most a step up front.
    #[test]
    fn bounds() {
        let mut reader = FrameDecoder::new(1 << 20, Arc::default());
        let mut buf = BytesMut::new();
        buf.put_u32((1 << 20) + 2);
        buf.put_u8(DATA);
        assert!(matches!(
            reader.decode(&mut buf),
            Err(CodecError::TooLarge { .. })
        ));
        let mut reader = FrameDecoder::new(usize::MAX >> 1, Arc::default());
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        buf.put_u8(DATA);
        assert!(reader.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= OWN_STEP);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 1][..]);
        assert!(matches!(
            FrameDecoder::new(16, Arc::default()).decode(&mut buf),
            Err(CodecError::Empty)
        ));
    }

    /// Reads that come full (a stream of small frames) make room for
    /// `READ_ROOM` before the next read once they have brought `SUSTAINED`;
    /// the frames cut from the buffer stay whole; a small read after them
    /// lets the large buffer go.
    #[test]
    fn the_read_buffer_grows_while_the_peer_streams_and_shrinks_when_quiet() {
        let frames: Vec<Frame> = (0..1000).map(|i| frame(60, i as u8)).collect();
        let wire = encoded(&frames);
        let mut reader = FrameDecoder::new(1 << 20, Arc::default());
        let mut buf = BytesMut::with_capacity(QUIET_ROOM);
        let mut got = Vec::new();
        // Full reads of the quiet buffer, until it grows.
        let mut at = 0;
        while buf.capacity() < READ_ROOM {
            let n = buf.capacity() - buf.len();
            buf.extend_from_slice(&wire[at..at + n]);
            at += n;
            while let Some(f) = reader.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        // (A frame a read cut short counts in the read after it too.)
        assert!(at + 100 >= SUSTAINED, "grown after {at} bytes");
        assert!(at < SUSTAINED + QUIET_ROOM, "grown after {at} bytes");
        buf.extend_from_slice(&wire[at..]);
        while let Some(f) = reader.decode(&mut buf).unwrap() {
            got.push(f);
        }
        assert_eq!(got, frames);
        assert!(buf.capacity() > 2 * QUIET_ROOM, "still streaming");
        // Quiet: one small frame.
        buf.extend_from_slice(&encoded(&[frame(3, 0)]));
        assert_eq!(reader.decode(&mut buf).unwrap(), Some(frame(3, 0)));
        assert_eq!(reader.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.capacity(), IDLE_ROOM);
    }

    /// Reads `wire` as `FramedRead` does, into whatever room the buffer
    /// has (reserving 1 first), decoding after each read; the frames are
    /// dropped at once. Returns the frames and the reads.
    fn read_in_room(d: &mut FrameDecoder, buf: &mut BytesMut, mut wire: &[u8]) -> (usize, usize) {
        let (mut frames, mut reads) = (0, 0);
        while !wire.is_empty() {
            buf.reserve(1);
            let n = wire.len().min(buf.capacity() - buf.len());
            buf.extend_from_slice(&wire[..n]);
            wire = &wire[n..];
            reads += 1;
            while d.decode(buf).unwrap().is_some() {
                frames += 1;
            }
        }
        (frames, reads)
    }

    /// A burst shorter than `SUSTAINED` (a list of links, a few member
    /// records) is read 8 KiB at a time, and the read that drains it lets
    /// the 8 KiB go at once, without waiting for a quiet read.
    #[test]
    fn a_short_burst_read_whole_lets_its_buffer_go() {
        let mut d = FrameDecoder::new(1 << 20, Arc::default());
        let mut buf = BytesMut::with_capacity(IDLE_ROOM);
        let beat = encoded(&[frame(20, 0)]);
        assert_eq!(read_in_room(&mut d, &mut buf, &beat), (1, 1));
        let burst = encoded(&[frame(4200, 1), frame(300, 2), frame(300, 3)]);
        let (frames, reads) = read_in_room(&mut d, &mut buf, &burst);
        assert_eq!(frames, 3);
        // 256 B, then the rest in one read of 8 KiB.
        assert_eq!(reads, 2);
        assert_eq!(buf.capacity(), IDLE_ROOM);
    }

    /// Heartbeats alone keep an idle link's read buffer at `IDLE_ROOM`, one
    /// read each; a read that comes full makes it `QUIET_ROOM` at once and
    /// a stream `READ_ROOM`; small reads after it let it go.
    #[test]
    fn an_idle_links_read_buffer_stays_small() {
        let mut d = FrameDecoder::new(1 << 20, Arc::default());
        let mut buf = BytesMut::with_capacity(IDLE_ROOM);
        let beat = encoded(&[frame(20, 0)]);
        for _ in 0..100 {
            assert_eq!(read_in_room(&mut d, &mut buf, &beat), (1, 1));
            assert!(buf.capacity() <= IDLE_ROOM, "{}", buf.capacity());
        }
        let burst = encoded(&(0..2000).map(|i| frame(60, i as u8)).collect::<Vec<_>>());
        let (frames, reads) = read_in_room(&mut d, &mut buf, &burst);
        assert_eq!(frames, 2000);
        // 256 B, 8 KiB until 32 KiB came, then reads of up to 64 KiB.
        assert!(reads <= 8, "{reads} reads for {} bytes", burst.len());
        assert_eq!(read_in_room(&mut d, &mut buf, &beat), (1, 1));
        assert_eq!(buf.capacity(), IDLE_ROOM);
    }
}
