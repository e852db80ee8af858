//! A connection's outgoing queue, bounded in frames and bytes. Producers
//! (channel readers, the sync task, the connection itself) never wait: a
//! frame that does not fit ends the connection, so a client that stops
//! reading costs the node at most the queue and never slows anyone else.
//!
//! A channel message goes to every subscriber's queue in turn, so a push is
//! kept cheap: one uncontended lock, and a wake of the writer only when its
//! queue was empty; the writer takes everything queued at once.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Poll;

use axum::extract::ws::Utf8Bytes;
use futures::task::AtomicWaker;
use tokio::sync::watch;

use crate::hooks::lock;

/// WebSocket close code for a policy violation (RFC 6455): a client that
/// did not read its messages.
pub(super) const CLOSE_POLICY: u16 = 1008;
/// Close code for a normal closure, used when the API disconnects a client.
pub(crate) const CLOSE_NORMAL: u16 = 1000;

const QUEUE_FULL: &str = "outgoing queue full: the client did not read";

/// What the writer sends.
#[derive(Debug)]
pub(crate) enum Out {
    /// A text frame.
    Text(Utf8Bytes),
    /// A close frame after everything queued before it.
    Close(u16, String),
}

/// What is queued, and what the writer has taken but not yet written
/// (counted against the bounds until written).
#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Out>,
    /// Frames and bytes queued or taken and not yet written.
    pending_frames: usize,
    pending_bytes: usize,
}

/// A connection's outgoing queue: producers push, its writer takes.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    max_frames: usize,
    max_bytes: usize,
    /// Wakes the writer: something was queued, or the connection was killed.
    writer: AtomicWaker,
    /// Nothing more is queued: the connection is closing or killed.
    closing: AtomicBool,
    /// Set once: the connection must end now (code and reason), without
    /// waiting for what is queued.
    kill: watch::Sender<Option<(u16, String)>>,
    killed: AtomicBool,
}

impl Outbox {
    pub(crate) fn new(frames: usize, max_bytes: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue::default()),
            max_frames: frames.max(1),
            max_bytes,
            writer: AtomicWaker::new(),
            closing: AtomicBool::new(false),
            kill: watch::channel(None).0,
            killed: AtomicBool::new(false),
        }
    }

    /// Queues a frame, or, if the queue is full, ends the connection (the
    /// client is not reading). False if the frame was not queued.
    pub(crate) fn push(&self, frame: Utf8Bytes) -> bool {
        if self.closing.load(Ordering::Acquire) {
            return false;
        }
        let mut q = lock(&self.queue);
        if !self.fits(&q, frame.len()) {
            drop(q);
            self.kill(CLOSE_POLICY, QUEUE_FULL);
            return false;
        }
        let was_empty = self.enqueue(&mut q, frame);
        drop(q);
        if was_empty {
            self.writer.wake();
        }
        true
    }

    /// Whether a frame of `len` bytes fits (one frame larger than the
    /// byte bound passes alone).
    fn fits(&self, q: &Queue, len: usize) -> bool {
        q.pending_frames < self.max_frames
            && (q.pending_bytes == 0 || q.pending_bytes + len <= self.max_bytes)
    }

    /// Queues a frame; true if the queue was empty.
    fn enqueue(&self, q: &mut Queue, frame: Utf8Bytes) -> bool {
        let was_empty = q.frames.is_empty();
        q.pending_frames += 1;
        q.pending_bytes += frame.len();
        q.frames.push_back(Out::Text(frame));
        was_empty
    }

    /// Queues a string frame (see [`push`](Self::push)).
    pub(crate) fn text(&self, frame: String) -> bool {
        self.push(Utf8Bytes::from(frame))
    }

    /// Ends the connection gracefully: `notice`, then a close frame with
    /// `reason`, after what is queued. If the notice does not fit, the
    /// connection is ended at once with the reason.
    pub(crate) fn close(&self, notice: String, code: u16, reason: &str) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let notice = Utf8Bytes::from(notice);
        let mut q = lock(&self.queue);
        if !self.fits(&q, notice.len()) {
            drop(q);
            self.kill(code, reason);
            return;
        }
        let was_empty = self.enqueue(&mut q, notice);
        q.frames.push_back(Out::Close(code, reason.to_string()));
        drop(q);
        if was_empty {
            self.writer.wake();
        }
    }

    /// Ends the connection at once with a close frame giving `reason`.
    pub(crate) fn kill(&self, code: u16, reason: &str) {
        self.closing.store(true, Ordering::Release);
        let first = self.kill.send_if_modified(|k| {
            if k.is_some() {
                return false;
            }
            *k = Some((code, reason.to_string()));
            true
        });
        if first {
            self.killed.store(true, Ordering::Release);
            self.writer.wake();
        }
    }

    /// A watch that changes when the connection is killed.
    pub(crate) fn killed(&self) -> watch::Receiver<Option<(u16, String)>> {
        self.kill.subscribe()
    }

    /// The close code and reason of a kill, if the connection was killed.
    pub(crate) fn kill_reason(&self) -> Option<(u16, String)> {
        self.kill.borrow().clone()
    }

    /// For the writer: waits until something is queued (then takes all of
    /// it into `into`, which must be empty; true) or the connection is
    /// killed (false).
    pub(crate) async fn take(&self, into: &mut VecDeque<Out>) -> bool {
        // Woken, the writer usually finds frames: it registers its waker
        // only when it has to wait (then looks again, so that a push
        // between the first look and the registration is not missed).
        if let Some(taken) = self.try_take(into) {
            return taken;
        }
        poll_fn(|cx| {
            self.writer.register(cx.waker());
            match self.try_take(into) {
                Some(taken) => Poll::Ready(taken),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// What [`take`](Self::take) gives if it need not wait.
    fn try_take(&self, into: &mut VecDeque<Out>) -> Option<bool> {
        if self.killed.load(Ordering::Acquire) {
            return Some(false);
        }
        let mut q = lock(&self.queue);
        if q.frames.is_empty() {
            return None;
        }
        std::mem::swap(&mut q.frames, into);
        Some(true)
    }

    /// For the writer: resolves when the connection is killed.
    pub(crate) async fn until_killed(&self) {
        poll_fn(|cx| {
            self.writer.register(cx.waker());
            if self.killed.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// For the writer: `frames` frames of `bytes` bytes in all, taken from
    /// the queue, were written.
    pub(crate) fn sent(&self, frames: usize, bytes: usize) {
        let mut q = lock(&self.queue);
        q.pending_frames -= frames;
        q.pending_bytes -= bytes;
    }

    /// Whether the connection is ending.
    #[cfg(test)]
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// What the writer would take now (None if it would wait), or false if
    /// the connection was killed.
    fn take_now(o: &Outbox) -> Option<(bool, VecDeque<Out>)> {
        let mut into = VecDeque::new();
        let r = o.take(&mut into).now_or_never()?;
        Some((r, into))
    }

    fn texts(q: &VecDeque<Out>) -> Vec<String> {
        q.iter()
            .map(|o| match o {
                Out::Text(t) => t.as_str().to_string(),
                Out::Close(code, r) => format!("close {code} {r}"),
            })
            .collect()
    }

    #[test]
    fn a_full_queue_kills_the_connection_with_a_reason() {
        let o = Outbox::new(2, 1 << 20);
        assert!(o.text("a".into()));
        assert!(o.text("b".into()));
        assert!(!o.text("c".into()));
        assert!(o.is_closing());
        let (code, reason) = o.kill_reason().unwrap();
        assert_eq!(code, CLOSE_POLICY);
        assert!(reason.contains("outgoing queue full"));
        assert!(!o.text("d".into()), "nothing is queued once closing");
        assert_eq!(take_now(&o).map(|(r, _)| r), Some(false), "killed");
    }

    #[test]
    fn the_bounds_count_what_the_writer_has_not_written() {
        let o = Outbox::new(100, 10);
        assert!(o.text("12345678".into()));
        let (taken, q) = take_now(&o).unwrap();
        assert!(taken);
        assert_eq!(texts(&q), ["12345678"]);
        assert!(!o.text("abc".into()), "taken but not written: 8 + 3 > 10");
        let o = Outbox::new(100, 10);
        assert!(o.text("12345678".into()));
        take_now(&o).unwrap();
        o.sent(1, 8);
        assert!(o.text("12345678".into()));
        let o = Outbox::new(1, 100);
        assert!(o.text("a".into()));
        take_now(&o).unwrap();
        assert!(!o.text("b".into()), "one frame taken, not written");
    }

    #[test]
    fn one_frame_larger_than_the_byte_bound_passes_alone() {
        let o = Outbox::new(100, 10);
        assert!(o.text("x".repeat(50)));
    }

    #[test]
    fn the_writer_takes_everything_queued_in_order_and_waits_when_empty() {
        let o = Outbox::new(10, 1000);
        assert!(take_now(&o).is_none(), "nothing queued: it waits");
        o.text("a".into());
        o.text("b".into());
        let (_, q) = take_now(&o).unwrap();
        assert_eq!(texts(&q), ["a", "b"]);
        assert!(take_now(&o).is_none());
    }

    #[test]
    fn a_close_goes_after_what_is_queued() {
        let o = Outbox::new(10, 1000);
        o.text("a".into());
        o.close("bye".into(), CLOSE_NORMAL, "kicked");
        let (_, q) = take_now(&o).unwrap();
        assert_eq!(texts(&q), ["a", "bye", "close 1000 kicked"]);
        assert!(o.kill_reason().is_none());
        assert!(!o.text("late".into()), "nothing after the close");
    }

    #[test]
    fn a_close_that_does_not_fit_kills_with_its_reason() {
        let o = Outbox::new(1, 1000);
        o.text("a".into());
        o.close("bye".into(), CLOSE_NORMAL, "kicked");
        assert_eq!(o.kill_reason(), Some((CLOSE_NORMAL, "kicked".into())));
        assert_eq!(take_now(&o).map(|(r, _)| r), Some(false), "killed");
    }
}
