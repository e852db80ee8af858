//! The user's streams of messages ([`Messages`]) and the bounded queue
//! behind each ([`Feed`]).
//!
//! Delivery never waits for a stream: a message for a stream whose queue is
//! full is dropped for that stream and counted ([`Messages::dropped`]), so
//! one slow consumer never stalls a link, the mesh or the other streams.
//! A queue is full at [`Bounds::items`] items or [`Bounds::bytes`] bytes
//! of data, whichever comes first: messages reach a stream from the links'
//! tasks without passing a receive queue, so the node's cap on queued
//! bytes does not count them, and only a stream's own byte bound keeps
//! peers from filling an unread stream with frames of the largest size.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use crate::id::NodeId;
use crate::link::queue::Weighed;
use crate::messaging::Messaging;

/// A message received: who sent it, under which name (the event or topic;
/// empty for direct messages and broadcasts), and the data.
///
/// ```no_run
/// use futures::StreamExt;
/// # async fn demo(service: tcpnet::Service) -> tcpnet::Result<()> {
/// let mut room = service.subscribe("room")?;
/// while let Some(msg) = room.next().await {
///     println!("{} in {}: {:?}", msg.from(), msg.name(), msg.data());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub(crate) from: NodeId,
    pub(crate) name: String,
    pub(crate) data: Bytes,
}

impl Message {
    /// The node that sent it.
    pub fn from(&self) -> &NodeId {
        &self.from
    }

    /// The event or topic name; empty for direct messages and broadcasts.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The data, owned.
    pub fn into_data(self) -> Bytes {
        self.data
    }
}

/// A stream of [`Message`]s: from [`Service::messages`](crate::Service::messages),
/// [`Service::receiver`](crate::Service::receiver) or
/// [`Service::subscribe`](crate::Service::subscribe). Dropping it takes its
/// queue out of the node's tables (and ends a subscription). The stream ends
/// when the service is dropped.
#[derive(Debug)]
pub struct Messages {
    pub(crate) rx: FeedRx<Queued>,
    pub(crate) dropped: Arc<AtomicU64>,
    /// The table its queue is in, left on drop.
    pub(crate) of: (Weak<Messaging>, Of),
}

/// What a stream of [`Messages`] receives.
#[derive(Debug)]
pub(crate) enum Of {
    /// Direct messages and broadcasts.
    Inbox,
    /// The events of this name.
    Event(String),
    /// The messages of this topic.
    Topic(String),
}

impl Messages {
    /// How many messages were dropped for this stream because its queue was
    /// full (it was not read fast enough): it held
    /// [`Settings::queue_len`](crate::Settings::queue_len) messages, or
    /// the message's data did not fit in
    /// [`Settings::queue_bytes`](crate::Settings::queue_bytes) with the
    /// data it held.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Messages {
    /// The next message, after how many this stream had dropped when it
    /// was queued.
    #[cfg(feature = "typed")]
    pub(crate) fn poll_queued(&mut self, cx: &mut Context<'_>) -> Poll<Option<Queued>> {
        self.rx.poll_recv(cx)
    }
}

impl Stream for Messages {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx).map(|q| q.map(|(_, m)| m))
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        // Closed first, so that the table sees this queue as gone.
        self.rx.close();
        if let Some(m) = self.of.0.upgrade() {
            m.stream_dropped(&self.of.1);
        }
    }
}

/// Where a stream's drops are reported (the node's error stream).
pub(crate) type ErrorSink = Arc<dyn Fn(crate::error::Error) + Send + Sync>;

/// How often one stream's drops are reported on the error stream, at most.
const DROP_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How much each stream's queue holds: at most `items` items, and at most
/// `bytes` bytes of data, except that an item larger than that passes
/// into a queue that holds no data (alone, as a link's queue takes it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) items: usize,
    pub(crate) bytes: usize,
}

/// The queue behind one stream: bounded in items and bytes, never waited
/// on.
pub(crate) struct Feed<T> {
    tx: mpsc::Sender<T>,
    /// Bytes of data queued, shared with the receiving end, which takes
    /// off what it receives.
    held: Arc<AtomicUsize>,
    max_bytes: usize,
    dropped: Arc<AtomicU64>,
    /// The stream as its drop reports name it, and where they go; `None`
    /// for queues that never drop (a full procedure answers `Busy`).
    report: Option<(String, ErrorSink)>,
    /// Drops reported so far, and when the last report went.
    reported: u64,
    last_report: Option<std::time::Instant>,
}

impl<T> Feed<T> {
    /// Its stream is still there.
    pub(crate) fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }
}

impl<T: Weighed> Feed<T> {
    /// Queues `item` if the queue has room for it (see [`Bounds`]), or
    /// gives it back: `Full` without room, `Closed` if the stream is gone.
    pub(crate) fn push(&self, item: T) -> Result<(), mpsc::error::TrySendError<T>> {
        let n = item.weight();
        let held = self.held.load(Ordering::Relaxed);
        if held > 0 && held.saturating_add(n) > self.max_bytes {
            return Err(mpsc::error::TrySendError::Full(item));
        }
        // Counted before it is queued: the receiving end takes it off only
        // after it received the item, so the count never goes below zero.
        self.held.fetch_add(n, Ordering::Relaxed);
        self.tx.try_send(item).inspect_err(|_| {
            self.held.fetch_sub(n, Ordering::Relaxed);
        })
    }
}

/// The receiving end of a [`Feed`]: takes off the bytes of each item it
/// receives.
#[derive(Debug)]
pub(crate) struct FeedRx<T> {
    rx: mpsc::Receiver<T>,
    held: Arc<AtomicUsize>,
}

impl<T: Weighed> FeedRx<T> {
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let item = std::task::ready!(self.rx.poll_recv(cx));
        if let Some(item) = &item {
            self.held.fetch_sub(item.weight(), Ordering::Relaxed);
        }
        Poll::Ready(item)
    }

    /// Closes the queue: its feed sees the stream as gone.
    pub(crate) fn close(&mut self) {
        self.rx.close();
    }
}

/// A message in a stream's queue, after the number of messages the stream
/// had dropped when it was queued: a typed stream reports a drop where it
/// happened, before the first message queued after it.
pub(crate) type Queued = (u64, Message);

impl Weighed for Queued {
    fn weight(&self) -> usize {
        self.1.data.len()
    }
}

impl Feed<Queued> {
    /// Hands over `item` unless the queue is full (then counts it; see
    /// [`Bounds`]). False
    /// if the subscriber is gone. Drops are reported on the node's error
    /// stream at the first one, then at most once a second, each report
    /// counting those since the last; the ones a report left out go with
    /// the next message offered after the second is up.
    pub(crate) fn offer(&mut self, item: Message) -> bool {
        let dropped = self.dropped.load(Ordering::Relaxed);
        let delivered = match self.push((dropped, item)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        };
        if delivered {
            self.report_drops();
        }
        delivered
    }

    fn report_drops(&mut self) {
        let Some((stream, sink)) = &self.report else {
            return;
        };
        let total = self.dropped.load(Ordering::Relaxed);
        if total == self.reported {
            return;
        }
        let now = std::time::Instant::now();
        if self
            .last_report
            .is_some_and(|at| now.duration_since(at) < DROP_REPORT_EVERY)
        {
            return;
        }
        sink(crate::error::Error::Dropped {
            stream: stream.clone(),
            count: total - self.reported,
        });
        self.reported = total;
        self.last_report = Some(now);
    }
}

/// A stream's queue of at most `bounds`, the receiving end, and its count
/// of dropped items. With `report`, drops are reported there under that
/// name.
pub(crate) fn feed<T>(
    bounds: Bounds,
    report: Option<(String, ErrorSink)>,
) -> (Feed<T>, FeedRx<T>, Arc<AtomicU64>) {
    let (tx, rx) = mpsc::channel(bounds.items);
    let held = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Feed {
            tx,
            held: held.clone(),
            max_bytes: bounds.bytes,
            dropped: dropped.clone(),
            report,
            reported: 0,
            last_report: None,
        },
        FeedRx { rx, held },
        dropped,
    )
}

/// Takes the queues of dropped streams out of `map`'s entry `name` (its
/// queues are `feeds` of the entry), and the entry itself once it has none.
pub(crate) fn prune<V, T>(
    map: &mut HashMap<String, V>,
    name: &str,
    feeds: impl Fn(&mut V) -> &mut Vec<Feed<T>>,
) {
    if let Some(entry) = map.get_mut(name) {
        let queues = feeds(entry);
        queues.retain(Feed::is_open);
        if queues.is_empty() {
            map.remove(name);
        }
    }
}

/// Hands a message to the streams it is for, forgetting dropped ones.
pub(crate) fn deliver(subs: Option<&mut Vec<Feed<Queued>>>, m: &Message) {
    if let Some(subs) = subs {
        subs.retain_mut(|s| s.offer(m.clone()));
    }
}
