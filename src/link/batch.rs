//! [`Batch`]: a handle that copies small messages into a buffer of its own
//! and hands them to the link's send queue as one run.

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::link::connection::{check_len, Link};
use crate::link::outbox::{OutTx, Run, ZERO_COPY};
use crate::link::queue::TrySendError;
use crate::wire::frame::{Frame, DATA, LEN_BYTES};

/// What a batch holds at most before it hands its messages over: the
/// careful plain-TCP writer's batch.
pub(crate) const BATCH_BYTES: usize = 64 * 1024;
/// Messages a batch holds at most (the default send queue's length): a run
/// counts as its messages against the send queue's bound.
const BATCH_MESSAGES: usize = crate::limits::DEFAULT_QUEUE_LEN;

/// Sends many messages on one link for the price of a copy each.
///
/// [`feed`](Self::feed) copies a message into the batch's own buffer, with
/// no lock and nothing shared; the batch hands what it holds to the link's
/// send queue, all at once, when it has 64 KiB or 1,024 messages, and on
/// [`flush`](Self::flush). A batch handed over while the link's writer is
/// idle is written to the socket there and then, by the task that hands it
/// over. Use it where messages come in bursts and the sender knows when a
/// burst ends; [`Sender::send`](crate::Sender::send), which hands over each
/// message on its own, is the simpler choice otherwise.
///
/// - Order: a batch's messages arrive in the order fed; they go after what
///   other handles sent before the hand-over, and before what they send
///   after it.
/// - Bounds: a hand-over waits while the send queue has no room for the
///   run, counted as its messages and their bytes (a run larger than the
///   queue's bounds goes alone, into an empty queue). What a batch holds is
///   its own: at most 64 KiB and a message, per batch.
/// - Errors show at the hand-over: [`Error::Closed`] once the link has
///   closed (what the batch held is dropped); [`Error::FrameTooLarge`] from
///   `feed`, for that message only.
/// - A batch dropped with messages in it hands them over without waiting
///   (past the queue's bounds if need be) unless the link has closed.
/// - A message of 16 KiB or more is copied once into a buffer of its own
///   and queued after the batch; [`Sender::send`](crate::Sender::send)
///   sends an owned payload of that size without a copy.
///
/// ```no_run
/// # async fn demo(conn: tcpnet::Connection) -> tcpnet::Result<()> {
/// let mut batch = conn.batch();
/// for i in 0..1000u32 {
///     batch.feed(&i.to_be_bytes()).await?;
/// }
/// batch.flush().await?;
/// # Ok(()) }
/// ```
pub struct Batch {
    link: Arc<Link>,
    tx: OutTx,
    buf: BytesMut,
    /// Messages in `buf`, and their bytes.
    messages: usize,
    payload: usize,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("peer", &self.link.peer)
            .field("messages", &self.messages)
            .finish()
    }
}

impl Batch {
    pub(crate) fn new(link: Arc<Link>, tx: OutTx) -> Batch {
        Batch {
            link,
            tx,
            // Taken on first use: an unused batch holds nothing.
            buf: BytesMut::new(),
            messages: 0,
            payload: 0,
        }
    }

    /// Copies one message into the batch; hands the batch over first,
    /// waiting for room in the send queue, if the message would not fit.
    ///
    /// Errors: [`Error::FrameTooLarge`] (nothing else changes) or, from
    /// the hand-over, [`Error::Closed`].
    pub async fn feed(&mut self, data: &[u8]) -> Result<()> {
        let len = data.len();
        check_len(&self.link, len)?;
        if len >= ZERO_COPY {
            return self.feed_large(data).await;
        }
        let frame = LEN_BYTES + 1 + len;
        if self.buf.len() + frame > BATCH_BYTES || self.messages == BATCH_MESSAGES {
            self.flush().await?;
        }
        if self.buf.capacity() - self.buf.len() < frame {
            // Reuses the last buffer once the link has written it; else a
            // fresh one.
            self.buf.reserve(BATCH_BYTES);
        }
        self.buf.put_u32(len as u32 + 1);
        self.buf.put_u8(DATA);
        self.buf.extend_from_slice(data);
        self.messages += 1;
        self.payload += len;
        Ok(())
    }

    /// A large message: after what the batch holds, in a buffer of its own.
    async fn feed_large(&mut self, data: &[u8]) -> Result<()> {
        self.flush().await?;
        let frame = Frame::data(Bytes::copy_from_slice(data));
        if !self.link.is_up() {
            return Err(Error::Closed);
        }
        self.tx.send(frame).await.map_err(|_| Error::Closed)
    }

    /// Hands everything the batch holds to the link's send queue, waiting
    /// for room there. Messages handed over are sent as
    /// [`Sender::send`](crate::Sender::send)'s are: flushed before the link
    /// closes.
    ///
    /// Errors: [`Error::Closed`] (what the batch held is dropped).
    pub async fn flush(&mut self) -> Result<()> {
        let Some(run) = self.take() else {
            return Ok(());
        };
        if !self.link.is_up() {
            return Err(Error::Closed);
        }
        match self.tx.try_send_run(run) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(run)) => self.tx.send_run(run).await.map_err(|_| Error::Closed),
            Err(TrySendError::Closed(_)) => Err(Error::Closed),
        }
    }

    /// Messages fed and not handed over yet.
    pub fn len(&self) -> usize {
        self.messages
    }

    /// True if the batch holds no message.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// What the batch holds, as a run; empties it.
    fn take(&mut self) -> Option<Run> {
        if self.messages == 0 {
            return None;
        }
        let run = Run {
            encoded: self.buf.split().freeze(),
            frames: self.messages,
            payload: self.payload,
        };
        (self.messages, self.payload) = (0, 0);
        Some(run)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(run) = self.take() {
            if self.link.is_up() {
                let _ = self.tx.send_run_now(run);
            }
        }
    }
}
