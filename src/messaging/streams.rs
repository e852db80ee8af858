//! The user's streams of messages ([`Messages`]) and the bounded queue
//! behind each ([`Feed`]).
//!
//! Delivery never waits for a stream: a message for a stream whose queue is
//! full is dropped for that stream and counted ([`Messages::dropped`]), so
//! one slow consumer never stalls a link, the mesh or the other streams.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use crate::id::NodeId;
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
/// [`Service::subscribe`](crate::Service::subscribe). A subscription ends
/// when this is dropped. The stream ends when the service is dropped.
#[derive(Debug)]
pub struct Messages {
    pub(crate) rx: mpsc::Receiver<Message>,
    pub(crate) dropped: Arc<AtomicU64>,
    /// For a topic subscription: unsubscribes on drop.
    pub(crate) topic: Option<(Weak<Messaging>, String)>,
}

impl Messages {
    /// How many messages were dropped for this stream because its queue was
    /// full (it was not read fast enough).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Stream for Messages {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        // Closed first, so the unsubscription sees this queue as gone.
        self.rx.close();
        if let Some((m, topic)) = self.topic.take() {
            if let Some(m) = m.upgrade() {
                m.unsubscribed(&topic);
            }
        }
    }
}

/// The queue behind one stream: bounded, never waited on.
pub(crate) struct Feed<T> {
    pub(crate) tx: mpsc::Sender<T>,
    dropped: Arc<AtomicU64>,
}

impl<T> Feed<T> {
    /// Hands over `item` unless the queue is full (then counts it). False if
    /// the subscriber is gone.
    pub(crate) fn offer(&self, item: T) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// A stream's queue of `queue_len` items, the receiving end, and its count
/// of dropped items.
pub(crate) fn feed<T>(queue_len: usize) -> (Feed<T>, mpsc::Receiver<T>, Arc<AtomicU64>) {
    let (tx, rx) = mpsc::channel(queue_len);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Feed {
            tx,
            dropped: dropped.clone(),
        },
        rx,
        dropped,
    )
}

/// Hands a message to the streams it is for, forgetting dropped ones.
pub(crate) fn deliver(subs: Option<&mut Vec<Feed<Message>>>, m: &Message) {
    if let Some(subs) = subs {
        subs.retain(|s| s.offer(m.clone()));
    }
}
