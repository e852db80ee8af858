//! Event streams: the public [`Events`], the emitters behind them, and the
//! [`Hub`] a node shares with its handle.
//!
//! Every subscriber gets its own queue, so every subscriber sees every event
//! from its subscription on, and the mesh never waits on a subscriber: a
//! subscriber that stops reading must never stall it. Connection and link
//! events come one or two per link, each after a whole handshake (a peer
//! that relinks over and over pays a handshake for each), listening and
//! close events one per listen and close: their queues are unbounded.
//! Errors can come in floods (a port scan, a storm of bogus mDNS records),
//! so each error subscriber holds at most [`MAX_QUEUED_ERRORS`] unread
//! errors; past that, errors are counted instead and the subscriber gets
//! one [`Error::Missed`] with the count when it reads again. Member events
//! come as fast as peers send new records (a new version of its metadata
//! each, for instance), so each member subscriber holds at most
//! [`MAX_QUEUED_MEMBER_EVENTS`](crate::limits::MAX_QUEUED_MEMBER_EVENTS)
//! past the members it starts with; past that its stream ends after the
//! events it holds ([`Events::fell_behind`]): a count would not say which
//! members changed, and a view that missed a change is wrong, so the
//! subscriber watches again for the members as they are. Drop a stream you
//! no longer read; its queue goes with it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// and its siblings. It ends when the service is dropped, and a member
/// stream also when it falls too far behind (see
/// [`fell_behind`](Self::fell_behind)).
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
    /// What a full queue does.
    overflow: Overflow<T>,
    /// The queue was full and the node ended the stream.
    fell_behind: Arc<AtomicBool>,
}

impl<T> Events<T> {
    /// True if the node ended this stream because it was not read fast
    /// enough: only member streams ([`Service::on_member`](crate::Service::on_member),
    /// [`Service::watch_members`](crate::Service::watch_members)) end so,
    /// holding
    /// [`MAX_QUEUED_MEMBER_EVENTS`](crate::limits::MAX_QUEUED_MEMBER_EVENTS)
    /// unread changes past the members they started with. What they
    /// carried up to their end is a prefix of the changes, with no gap;
    /// watch again for the members as they are.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn demo(service: tcpnet::Service) {
    /// loop {
    ///     let (members, mut changes) = service.watch_members();
    ///     // ... build the view from `members` ...
    ///     # let _ = members;
    ///     while let Some(change) = changes.next().await {
    ///         // ... apply `change` ...
    ///         # let _ = change;
    ///     }
    ///     if !changes.fell_behind() {
    ///         break; // the service was dropped
    ///     }
    /// }
    /// # }
    /// ```
    pub fn fell_behind(&self) -> bool {
        self.fell_behind.load(Ordering::Relaxed)
    }
}

impl<T> Stream for Events<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let Overflow::Count(report) = self.overflow else {
            return self.rx.poll_recv(cx);
        };
        match self.rx.poll_recv(cx) {
            // The queue is drained: now is the time to say what was dropped.
            Poll::Pending | Poll::Ready(None) => match self.missed.swap(0, Ordering::Relaxed) {
                0 => self.rx.poll_recv(cx),
                n => Poll::Ready(Some(report(n))),
            },
            ready => ready,
        }
    }
}

/// What a subscriber's full queue does with the next event.
enum Overflow<T> {
    /// Drops it and counts it; the count is reported with this when the
    /// subscriber has read what its queue holds.
    Count(fn(u64) -> T),
    /// Ends the subscriber's stream after the events its queue holds.
    End,
}

impl<T> Clone for Overflow<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Overflow<T> {}

impl<T> std::fmt::Debug for Overflow<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overflow::Count(_) => "Count",
            Overflow::End => "End",
        })
    }
}

/// One subscriber's queue, its count of events dropped, and whether its
/// stream was ended for a full queue.
struct Subscriber<T> {
    tx: mpsc::Sender<T>,
    missed: Arc<AtomicU64>,
    fell_behind: Arc<AtomicBool>,
}

/// The subscribers of one kind of event.
pub(crate) struct Emitter<T> {
    subs: Mutex<Vec<Subscriber<T>>>,
    /// Events each subscriber's queue holds past those it starts with.
    capacity: usize,
    overflow: Overflow<T>,
}

impl<T: Clone> Emitter<T> {
    /// An emitter whose subscribers' queues are never full.
    pub(crate) fn unbounded() -> Self {
        Emitter::bounded(tokio::sync::Semaphore::MAX_PERMITS, Overflow::End)
    }

    /// An emitter whose subscribers each hold at most `capacity` events past
    /// those they start with; a subscriber whose queue is full has its
    /// stream ended (see [`Events::fell_behind`]).
    pub(crate) fn ending(capacity: usize) -> Self {
        Emitter::bounded(capacity, Overflow::End)
    }

    /// An emitter whose subscribers each hold at most `capacity` events past
    /// those they start with; past that, as `overflow` says.
    fn bounded(capacity: usize, overflow: Overflow<T>) -> Self {
        Emitter {
            subs: Mutex::new(Vec::new()),
            capacity,
            overflow,
        }
    }

    pub(crate) fn subscribe(&self) -> Events<T> {
        self.subscribe_after(Vec::new())
    }

    /// A subscriber whose stream starts with `first` (the current state, for
    /// a state-then-changes stream), then every event from now on.
    pub(crate) fn subscribe_after(&self, first: Vec<T>) -> Events<T> {
        // tokio's channel allocates as it fills, not up front.
        let room = self
            .capacity
            .saturating_add(first.len())
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        let (tx, rx) = mpsc::channel(room);
        for event in first {
            let _ = tx.try_send(event);
        }
        let missed = Arc::new(AtomicU64::new(0));
        let fell_behind = Arc::new(AtomicBool::new(false));
        let mut subs = lock(&self.subs);
        subs.retain(|s| !s.tx.is_closed());
        subs.push(Subscriber {
            tx,
            missed: missed.clone(),
            fell_behind: fell_behind.clone(),
        });
        Events {
            rx,
            missed,
            overflow: self.overflow,
            fell_behind,
        }
    }

    /// Hands `event` to every subscriber and forgets dropped ones; returns
    /// how many had no room for it (told the count later, or their stream
    /// ended, as the emitter's [`Overflow`] says).
    pub(crate) fn emit(&self, event: &T) -> u64 {
        let mut missed = 0;
        let overflow = self.overflow;
        lock(&self.subs).retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                missed += 1;
                match overflow {
                    Overflow::Count(_) => {
                        s.missed.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    // Its sender goes: the stream ends after what it holds.
                    Overflow::End => {
                        s.fell_behind.store(true, Ordering::Relaxed);
                        false
                    }
                }
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
            error: Emitter::bounded(
                MAX_QUEUED_ERRORS,
                Overflow::Count(|count| Error::Missed { count }),
            ),
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
        assert!(!errors.fell_behind());
    }

    /// A subscriber of an ending emitter that falls behind gets what its
    /// queue held (those it started with, then `capacity` events, in
    /// order), then the end of its stream; one that keeps up gets every
    /// event.
    #[test]
    fn an_ending_stream_that_falls_behind_ends_after_what_it_holds() {
        let emitter = Emitter::ending(4);
        let mut behind = emitter.subscribe_after(vec![0, 0]);
        let mut reading = emitter.subscribe();
        for n in 1..=10 {
            emitter.emit(&n);
            assert_eq!(reading.next().now_or_never(), Some(Some(n)));
        }
        let held: Vec<u64> =
            std::iter::from_fn(|| behind.next().now_or_never().flatten()).collect();
        assert_eq!(held, [0, 0, 1, 2, 3, 4]);
        assert_eq!(behind.next().now_or_never(), Some(None));
        assert!(behind.fell_behind() && !reading.fell_behind());
    }
}
