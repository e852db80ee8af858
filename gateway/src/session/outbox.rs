//! A connection's outgoing queue, bounded in frames and bytes. Producers
//! (channel readers, the sync task, the connection itself) never wait: a
//! frame that does not fit ends the connection, so a client that stops
//! reading costs the node at most the queue and never slows anyone else.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, watch};

/// WebSocket close code for a policy violation (RFC 6455): a client that
/// did not read its messages.
pub(super) const CLOSE_POLICY: u16 = 1008;
/// Close code for a normal closure, used when the API disconnects a client.
pub(crate) const CLOSE_NORMAL: u16 = 1000;

/// What the writer sends.
#[derive(Debug)]
pub(crate) enum Out {
    /// A text frame.
    Text(Utf8Bytes),
    /// A close frame after everything queued before it.
    Close(u16, String),
}

/// The producers' side of a connection's queue.
#[derive(Debug)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Out>,
    bytes: AtomicUsize,
    max_bytes: usize,
    /// Set once: the connection must end now (code and reason), without
    /// waiting for what is queued.
    kill: watch::Sender<Option<(u16, String)>>,
    closing: AtomicBool,
}

/// The writer's side.
pub(crate) struct Drain {
    pub rx: mpsc::Receiver<Out>,
    pub kill: watch::Receiver<Option<(u16, String)>>,
}

impl Outbox {
    pub(crate) fn new(frames: usize, max_bytes: usize) -> (Outbox, Drain) {
        let (tx, rx) = mpsc::channel(frames.max(1));
        let (kill, kill_rx) = watch::channel(None);
        (
            Outbox {
                tx,
                bytes: AtomicUsize::new(0),
                max_bytes,
                kill,
                closing: AtomicBool::new(false),
            },
            Drain { rx, kill: kill_rx },
        )
    }

    /// Queues a frame, or, if the queue is full, ends the connection (the
    /// client is not reading). False if the frame was not queued.
    pub(crate) fn push(&self, frame: Utf8Bytes) -> bool {
        if self.closing.load(Ordering::Acquire) {
            return false;
        }
        let len = frame.len();
        let before = self.bytes.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            self.kill(CLOSE_POLICY, "outgoing queue full: the client did not read");
            return false;
        }
        match self.tx.try_send(Out::Text(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.bytes.fetch_sub(len, Ordering::AcqRel);
                self.kill(CLOSE_POLICY, "outgoing queue full: the client did not read");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.bytes.fetch_sub(len, Ordering::AcqRel);
                false
            }
        }
    }

    /// Queues a string frame (see [`push`](Self::push)).
    pub(crate) fn text(&self, frame: String) -> bool {
        self.push(Utf8Bytes::from(frame))
    }

    /// The writer sent a frame of `len` bytes.
    pub(crate) fn sent(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::AcqRel);
    }

    /// Ends the connection gracefully: `notice`, then a close frame with
    /// `reason`, after what is queued. If they do not fit, the connection
    /// is ended at once with the reason.
    pub(crate) fn close(&self, notice: String, code: u16, reason: &str) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let ok = self.tx.try_send(Out::Text(Utf8Bytes::from(notice))).is_ok()
            && self
                .tx
                .try_send(Out::Close(code, reason.to_string()))
                .is_ok();
        if !ok {
            self.kill(code, reason);
        }
    }

    /// Ends the connection at once with a close frame giving `reason`.
    pub(crate) fn kill(&self, code: u16, reason: &str) {
        self.closing.store(true, Ordering::Release);
        self.kill.send_if_modified(|k| {
            if k.is_some() {
                return false;
            }
            *k = Some((code, reason.to_string()));
            true
        });
    }

    /// A watch that changes when the connection is killed.
    pub(crate) fn killed(&self) -> watch::Receiver<Option<(u16, String)>> {
        self.kill.subscribe()
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

    #[test]
    fn a_full_queue_kills_the_connection_with_a_reason() {
        let (o, mut d) = Outbox::new(2, 1 << 20);
        assert!(o.text("a".into()));
        assert!(o.text("b".into()));
        assert!(!o.text("c".into()));
        assert!(o.is_closing());
        let (code, reason) = d.kill.borrow_and_update().clone().unwrap();
        assert_eq!(code, CLOSE_POLICY);
        assert!(reason.contains("outgoing queue full"));
        assert!(!o.text("d".into()), "nothing is queued once closing");
        assert!(matches!(d.rx.try_recv(), Ok(Out::Text(t)) if t.as_str() == "a"));
    }

    #[test]
    fn the_byte_bound_counts_what_the_writer_has_not_sent() {
        let (o, _d) = Outbox::new(100, 10);
        assert!(o.text("12345678".into()));
        o.sent(8);
        assert!(o.text("12345678".into()));
        assert!(!o.text("abc".into()), "8 + 3 > 10");
    }

    #[test]
    fn one_frame_larger_than_the_byte_bound_passes_alone() {
        let (o, _d) = Outbox::new(100, 10);
        assert!(o.text("x".repeat(50)));
    }

    #[test]
    fn a_close_goes_after_what_is_queued() {
        let (o, mut d) = Outbox::new(10, 1000);
        o.text("a".into());
        o.close("bye".into(), CLOSE_NORMAL, "kicked");
        assert!(matches!(d.rx.try_recv(), Ok(Out::Text(t)) if t.as_str() == "a"));
        assert!(matches!(d.rx.try_recv(), Ok(Out::Text(t)) if t.as_str() == "bye"));
        assert!(matches!(d.rx.try_recv(), Ok(Out::Close(CLOSE_NORMAL, r)) if r == "kicked"));
        assert!(d.kill.borrow().is_none());
    }
}
