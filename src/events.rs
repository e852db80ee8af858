//! Event streams and the live list of connections.
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

use crate::connection::{CloseReason, Connection, LinkState, Shared};
use crate::error::Error;
use crate::id::NodeId;
use crate::mesh::LinkId;
use crate::service::Address;

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

/// Most unread errors each [`Service::on_error`](crate::Service::on_error)
/// stream holds; more are counted and reported as one [`Error::Missed`].
pub const MAX_QUEUED_ERRORS: usize = 1024;

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

struct Sub<T> {
    tx: mpsc::Sender<T>,
    missed: Arc<AtomicU64>,
}

/// The subscribers of one kind of event.
pub(crate) struct Topic<T> {
    subs: Mutex<Vec<Sub<T>>>,
    capacity: usize,
    report: fn(u64) -> T,
}

impl<T: Clone> Topic<T> {
    /// A topic whose subscribers' queues are never full.
    fn unbounded() -> Self {
        Topic::bounded(tokio::sync::Semaphore::MAX_PERMITS, |_| {
            unreachable!("an unbounded queue drops nothing")
        })
    }

    /// A topic whose subscribers each hold at most `capacity` events; the
    /// count of those dropped is reported with `report`.
    fn bounded(capacity: usize, report: fn(u64) -> T) -> Self {
        Topic {
            subs: Mutex::new(Vec::new()),
            capacity,
            report,
        }
    }

    pub fn subscribe(&self) -> Events<T> {
        // tokio's channel allocates as it fills, not up front.
        let (tx, rx) = mpsc::channel(self.capacity);
        let missed = Arc::new(AtomicU64::new(0));
        let mut subs = lock(&self.subs);
        subs.retain(|s| !s.tx.is_closed());
        subs.push(Sub {
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
    pub fn emit(&self, event: &T) {
        lock(&self.subs).retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.missed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

/// What the service's tasks share with its handle: subscribers and the list
/// of open links.
pub(crate) struct Hub {
    pub connection: Topic<Connection>,
    pub listening: Topic<Address>,
    pub error: Topic<Error>,
    pub close: Topic<()>,
    open: Mutex<Vec<(LinkId, Connection)>>,
    /// Peers currently advertised over mDNS, as the actor last saw them.
    advertised: Mutex<Vec<NodeId>>,
}

impl Hub {
    pub fn new() -> Self {
        Hub {
            connection: Topic::unbounded(),
            listening: Topic::unbounded(),
            error: Topic::bounded(MAX_QUEUED_ERRORS, |count| Error::Missed { count }),
            close: Topic::unbounded(),
            open: Mutex::new(Vec::new()),
            advertised: Mutex::new(Vec::new()),
        }
    }

    /// Publishes an opened link, then tells subscribers: a subscriber that
    /// calls `connections()` on the event finds the link there. A link whose
    /// task has already ended (it can end before the actor opens it) is
    /// neither listed nor announced: [`finished`](Self::finished) and this
    /// check run under the same lock.
    pub fn opened(&self, link: LinkId, conn: Connection) {
        {
            let mut open = lock(&self.open);
            if conn.close_reason().is_some() {
                return;
            }
            open.push((link, conn.clone()));
        }
        self.connection.emit(&conn);
    }

    /// A link's task has ended: takes it off the list and records why, in
    /// one step, so no one sees a closed link listed or an open one missing.
    pub fn finished(&self, link: LinkId, shared: &Shared, reason: CloseReason) {
        let mut open = lock(&self.open);
        open.retain(|(l, _)| *l != link);
        shared.leave_up();
        shared.state.send_replace(LinkState::Closed(reason));
    }

    /// The links that are up: a link that has started closing (replaced,
    /// closed by either end, or the service closing) is left out here, and
    /// dropped from the list when its task ends.
    pub fn open_links(&self) -> Vec<Connection> {
        lock(&self.open)
            .iter()
            .filter(|(_, c)| c.is_up())
            .map(|(_, c)| c.clone())
            .collect()
    }

    pub fn clear(&self) {
        lock(&self.open).clear();
        lock(&self.advertised).clear();
    }

    pub fn set_advertised(&self, peers: Vec<NodeId>) {
        *lock(&self.advertised) = peers;
    }

    pub fn advertised(&self) -> Vec<NodeId> {
        lock(&self.advertised).clone()
    }
}

/// Locks a mutex, shrugging off poisoning: every critical section here is a
/// single push, retain or clone that leaves the data consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::StreamExt;

    fn conn() -> (Connection, std::sync::Arc<Shared>) {
        let (out_tx, _out_rx) = crate::queue::channel(1, 1);
        let (_in_tx, in_rx) = crate::queue::channel(1, 1);
        let addr = "127.0.0.1:1".parse().unwrap();
        let shared = std::sync::Arc::new(Shared {
            peer: crate::NodeId::parse("0a").unwrap(),
            remote: addr,
            local: addr,
            max_frame_len: 8,
            state: tokio::sync::watch::channel(LinkState::Up).0,
            inbound: crate::connection::Inbound::new(in_rx),
            up: std::sync::atomic::AtomicBool::new(true),
        });
        (Connection::new(shared.clone(), out_tx), shared)
    }

    #[test]
    fn a_link_that_ended_before_it_opened_is_never_listed_or_announced() {
        let hub = Hub::new();
        let mut events = hub.connection.subscribe();
        let (c, shared) = conn();
        hub.finished(1, &shared, CloseReason::PeerClosed);
        hub.opened(1, c);
        assert!(hub.open_links().is_empty());
        assert!(events.next().now_or_never().is_none());
    }

    #[test]
    fn a_link_that_ends_after_it_opened_leaves_the_list() {
        let hub = Hub::new();
        let mut events = hub.connection.subscribe();
        let (c, shared) = conn();
        hub.opened(1, c);
        assert_eq!(hub.open_links().len(), 1);
        assert!(events.next().now_or_never().is_some());
        hub.finished(1, &shared, CloseReason::PeerClosed);
        assert!(hub.open_links().is_empty());
    }

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
