//! Event streams: the public [`Events`], the emitters behind them, and the
//! [`Hub`] a node shares with its handle.
//!
//! Every subscriber gets its own queue, so every subscriber sees every event
//! from its subscription on, and the mesh never waits on a subscriber: a
//! subscriber that stops reading must never stall it. Connection, listening
//! and close events are few (one per link opened, per listen and close), so
//! their queues are unbounded. Errors can come in floods (a port scan, a
//! storm of bogus mDNS records), so each error subscriber holds at most
//! [`MAX_QUEUED_ERRORS`] unread errors; past that, errors are counted instead
//! and the subscriber gets one [`Error::Missed`] with the count when it
//! reads again. Drop a stream you no longer read; its queue goes with it.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::error::{Error, ErrorKind};
use crate::id::NodeId;
use crate::limits::MAX_QUEUED_ERRORS;
use crate::link::connection::Connection;
use crate::link::open::LinkEvent;
use crate::node::address::Address;
use crate::stats::Counters;
use crate::sync::lock;

/// A stream of events of one kind, from [`Service::on_connection`](crate::Service::on_connection)
/// and its siblings. It ends when the service is dropped.
///
/// ```no_run
/// use futures::StreamExt;
/// # async fn demo(service: tcpnet::Service) {
/// let mut errors = service.on_error();
/// tokio::spawn(async move {
///     while let Some(e) = errors.next().await {
///         eprintln!("tcpnet: {e}");
///     }
/// });
/// # }
/// ```
#[derive(Debug)]
pub struct Events<T> {
    rx: mpsc::Receiver<T>,
    /// Events dropped because the queue was full, not yet reported.
    missed: Arc<AtomicU64>,
    /// Turns a count of dropped events into the event that reports it.
    report: fn(u64) -> T,
}

impl<T> Stream for Events<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.rx.poll_recv(cx) {
            // The queue is drained: now is the time to say what was dropped.
            Poll::Pending | Poll::Ready(None) => match self.missed.swap(0, Ordering::Relaxed) {
                0 => self.rx.poll_recv(cx),
                n => Poll::Ready(Some((self.report)(n))),
            },
            ready => ready,
        }
    }
}

/// One subscriber's queue, and its count of events dropped.
struct Subscriber<T> {
    tx: mpsc::Sender<T>,
    missed: Arc<AtomicU64>,
}

/// The subscribers of one kind of event.
pub(crate) struct Emitter<T> {
    subs: Mutex<Vec<Subscriber<T>>>,
    capacity: usize,
    report: fn(u64) -> T,
}

impl<T: Clone> Emitter<T> {
    /// An emitter whose subscribers' queues are never full.
    pub(crate) fn unbounded() -> Self {
        Emitter::bounded(tokio::sync::Semaphore::MAX_PERMITS, |_| {
            unreachable!("an unbounded queue drops nothing")
        })
    }

    /// An emitter whose subscribers each hold at most `capacity` events; the
    /// count of those dropped is reported with `report`.
    fn bounded(capacity: usize, report: fn(u64) -> T) -> Self {
        Emitter {
            subs: Mutex::new(Vec::new()),
            capacity,
            report,
        }
    }

    pub(crate) fn subscribe(&self) -> Events<T> {
        self.subscribe_after(Vec::new())
    }

    /// A subscriber whose stream starts with `first` (the current state, for
    /// a state-then-changes stream), then every event from now on.
    pub(crate) fn subscribe_after(&self, first: Vec<T>) -> Events<T> {
        // tokio's channel allocates as it fills, not up front.
        let (tx, rx) = mpsc::channel(self.capacity.max(first.len()).max(1));
        for event in first {
            let _ = tx.try_send(event);
        }
        let missed = Arc::new(AtomicU64::new(0));
        let mut subs = lock(&self.subs);
        subs.retain(|s| !s.tx.is_closed());
        subs.push(Subscriber {
            tx,
            missed: missed.clone(),
        });
        Events {
            rx,
            missed,
            report: self.report,
        }
    }

    /// Hands the event to every live subscriber and forgets dropped ones.
    /// Hands `event` to every subscriber; returns how many had no room
    /// for it (they are told the count later).
    pub(crate) fn emit(&self, event: &T) -> u64 {
        let mut missed = 0;
        lock(&self.subs).retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.missed.fetch_add(1, Ordering::Relaxed);
                missed += 1;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        missed
    }
}

/// What a node's tasks share with its [`Service`](crate::Service) handle:
/// the subscribers of each kind of event, and the peers seen advertised.
pub(crate) struct Hub {
    pub(crate) connection: Emitter<Connection>,
    pub(crate) link: Emitter<LinkEvent>,
    pub(crate) listening: Emitter<Address>,
    pub(crate) error: Emitter<Error>,
    pub(crate) close: Emitter<()>,
    /// Peers currently advertised over mDNS, as the actor last saw them.
    advertised: Mutex<Vec<NodeId>>,
    /// What the node counts (see [`crate::stats`]).
    pub(crate) counters: Arc<Counters>,
}

impl Hub {
    pub(crate) fn new() -> Self {
        Hub {
            connection: Emitter::unbounded(),
            link: Emitter::unbounded(),
            listening: Emitter::unbounded(),
            error: Emitter::bounded(MAX_QUEUED_ERRORS, |count| Error::Missed { count }),
            close: Emitter::unbounded(),
            advertised: Mutex::new(Vec::new()),
            counters: Arc::default(),
        }
    }

    /// Reports a non-fatal error: a log line (churn quietly, see
    /// [`ErrorKind`]) and an error event.
    pub(crate) fn report(&self, e: Error) {
        match e.kind() {
            ErrorKind::Churn => tracing::debug!("{e}"),
            kind => tracing::warn!("{kind}: {e}"),
        }
        match e {
            Error::BadRecord { .. } => self.counters.bad_mdns_record(),
            Error::Hint { .. } => self.counters.unanswered_hint(),
            _ => {}
        }
        let missed = self.error.emit(&e);
        self.counters.missed_errors(missed);
    }

    pub(crate) fn set_advertised(&self, peers: Vec<NodeId>) {
        *lock(&self.advertised) = peers;
    }

    pub(crate) fn advertised(&self) -> Vec<NodeId> {
        lock(&self.advertised).clone()
    }

    #[cfg(feature = "bench")]
    pub(crate) fn advertised_len(&self) -> usize {
        lock(&self.advertised).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::StreamExt;

    #[test]
    fn a_flood_of_errors_is_bounded_and_counted() {
        let hub = Hub::new();
        let mut errors = hub.error.subscribe();
        for _ in 0..MAX_QUEUED_ERRORS + 10 {
            hub.error.emit(&Error::Closed);
        }
        for _ in 0..MAX_QUEUED_ERRORS {
            assert!(matches!(
                errors.next().now_or_never(),
                Some(Some(Error::Closed))
            ));
        }
        assert!(matches!(
            errors.next().now_or_never(),
            Some(Some(Error::Missed { count: 10 }))
        ));
        assert!(errors.next().now_or_never().is_none());
        // Delivery goes on after the report.
        hub.error.emit(&Error::Closed);
        assert!(matches!(
            errors.next().now_or_never(),
            Some(Some(Error::Closed))
        ));
    }
}
