//! The public handles of one link, [`Connection`] and [`Sender`], and the
//! state they share with the link's task ([`Link`]).
//!
//! A link is run by one task (see [`crate::link::run`]); these handles talk
//! to it through two bounded queues (see [`crate::link::queue`]), one per
//! direction, and a watch channel that carries the close request and, at the
//! end, the reason the link closed.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::sync::watch;

use crate::error::{CloseReason, Error, Result};
use crate::id::NodeId;
use crate::link::batch::Batch;
use crate::link::counters::LinkCounters;
use crate::link::intake::{Ends, Intake, TAKE_QUEUED};
use crate::link::outbox::OutTx;
use crate::link::queue;
use crate::link::timing::Timing;
use crate::link::LinkId;
use crate::stats::LinkStats;
use crate::sync::lock;
use crate::wire::frame::Frame;
use crate::wire::secure::KeyId;

/// One link as its task and its handles share it.
#[derive(Debug)]
pub(crate) struct Link {
    /// The link's number, unique within its node.
    pub id: LinkId,
    pub peer: NodeId,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The port the peer's hello says it listens on (0: none).
    pub listens: u16,
    pub max_frame_len: usize,
    /// `None` while the link is up. Handles write a close request here; the
    /// link task writes the final reason when it has closed.
    pub state: watch::Sender<LinkState>,
    /// Frames received, shared by every handle of the link. On a cache line
    /// of its own: the reading handle writes it while senders read the
    /// fields beside it.
    pub inbound: Padded<Mutex<Inbound>>,
    /// `state` is `Up`: read on every send, so kept apart from the watch
    /// channel's lock.
    pub up: AtomicBool,
    /// Its round-trip time, and its pings waiting.
    pub timing: Mutex<Timing>,
    /// What its task counts (see [`crate::stats`]).
    pub counters: LinkCounters,
    /// The cluster key it was made under, with a secret.
    pub key: Option<KeyId>,
}

/// A value on cache lines of its own.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The receive queue, frames a dropped handle had taken from it but not
/// read (they come first), and the handles waiting for either.
#[derive(Debug)]
pub(crate) struct Inbound {
    rx: queue::Receiver<VecDeque<Bytes>>,
    ready: VecDeque<Bytes>,
    waiting: Arc<Waiting>,
    /// Wakes every handle in `waiting`: the one waker the queue keeps.
    wake_all: Waker,
    /// The link's read side, which a handle with nothing queued reads
    /// itself; `None` before the link runs and once it has ended.
    intake: Option<Arc<Intake>>,
}

impl Inbound {
    pub(crate) fn new(rx: queue::Receiver<VecDeque<Bytes>>) -> Padded<Mutex<Inbound>> {
        let waiting = Arc::new(Waiting::default());
        Padded(Mutex::new(Inbound {
            rx,
            ready: VecDeque::new(),
            wake_all: Waker::from(waiting.clone()),
            waiting,
            intake: None,
        }))
    }
}

/// The handles of one link waiting for messages, each under a number of its
/// own. The receive queue wakes one waiter; this is it, and it wakes them
/// all, so that each one sees the messages (or a dropped handle's, given
/// back) or the link's end, whichever comes.
#[derive(Debug, Default)]
pub(crate) struct Waiting(Mutex<Vec<(u64, Waker)>>);

/// Numbers of the handles that have waited for messages.
static NEXT_READER: AtomicU64 = AtomicU64::new(1);

impl Waiting {
    /// Handle `reader` waits, to be woken through `waker`.
    fn add(&self, reader: u64, waker: &Waker) {
        let mut list = lock(&self.0);
        match list.iter_mut().find(|(r, _)| *r == reader) {
            Some((_, w)) if w.will_wake(waker) => {}
            Some((_, w)) => *w = waker.clone(),
            None => list.push((reader, waker.clone())),
        }
    }

    /// Handle `reader` is gone.
    fn remove(&self, reader: u64) {
        lock(&self.0).retain(|(r, _)| *r != reader);
    }
}

impl Wake for Waiting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

impl Waiting {
    /// Wakes every handle waiting; false if none was.
    pub(crate) fn wake_all(&self) -> bool {
        let mut list = lock(&self.0);
        if list.len() <= 1 {
            // The common case, one reader: the list keeps its allocation
            // for the reader's next wait.
            let one = list.pop();
            drop(list);
            return one.map(|(_, w)| w.wake()).is_some();
        }
        let waiting = std::mem::take(&mut *list);
        drop(list);
        for (_, w) in waiting {
            w.wake();
        }
        true
    }
}

impl Link {
    /// Why the link is closing or closed; `None` while it is up.
    pub(crate) fn reason(&self) -> Option<CloseReason> {
        match &*self.state.borrow() {
            LinkState::Up => None,
            LinkState::Closing(r) | LinkState::Closed(r) => Some(r.clone()),
        }
    }

    /// True until a close is asked for: sends are accepted only then.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Moves the link on from `Up`: sends are refused from now on.
    pub(crate) fn leave_up(&self) {
        self.up.store(false, Ordering::Release);
    }

    /// The handles waiting for messages.
    pub(crate) fn waiting_handles(&self) -> Arc<Waiting> {
        lock(&self.inbound).waiting.clone()
    }

    /// Lets the handles read the link's socket through `intake`, or, with
    /// `None`, no more.
    pub(crate) fn set_intake(&self, intake: Option<Arc<Intake>>) {
        let old = std::mem::replace(&mut lock(&self.inbound).intake, intake);
        drop(old);
    }
}

/// Where a link is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkState {
    Up,
    /// A close was asked for; the link is flushing.
    Closing(CloseReason),
    Closed(CloseReason),
}

/// One link to one peer: a framed duplex of whole messages.
///
/// - Read the peer's messages as a [`Stream`] of [`Bytes`]; it ends when the
///   link closes. All clones of a `Connection` share one receive queue, so each
///   message goes to one reader; a handle takes up to 32 at once (a dropped
///   one gives back what it took, and wakes the handles waiting for it;
///   every waiting handle sees the end): read a link from one task.
///   Messages wait in the link's receive queue until read; once it is
///   full ([`Settings::queue_len`](crate::Settings::queue_len),
///   [`Settings::queue_bytes`](crate::Settings::queue_bytes)) the link
///   reads nothing more from its socket, so nothing else the peer sends
///   (its broadcasts, replies, member records) gets through either. A link
///   whose queue stays full with no message read for
///   [`Settings::unread_timeout`](crate::Settings::unread_timeout) (30 s
///   by default; not the heartbeat timeout: a reader that takes a message
///   at least that often keeps its link, however long it spends on each)
///   is closed with [`CloseReason::Unread`] and reported as a failure. An application that uses messaging only need not read its
///   connections, as long as its peers send no raw messages.
/// - Write with [`send`](Self::send), with a cloneable [`Sender`] from
///   [`sender`](Self::sender), through the [`Sink`] implementation, or,
///   for bursts of small messages, with a [`Batch`] from
///   [`batch`](Self::batch).
///   `send` waits while the link's send queue is full (backpressure), and
///   fails with [`Error::Closed`] once the link has closed.
/// - [`closed`](Self::closed) resolves with the [`CloseReason`].
///
/// ```no_run
/// use futures::StreamExt;
/// # async fn demo(mut conn: tcpnet::Connection) -> tcpnet::Result<()> {
/// conn.send("hello\n").await?;
/// while let Some(msg) = conn.next().await {
///     println!("{} says {:?}", conn.peer_id(), msg);
/// }
/// println!("link closed: {}", conn.closed().await);
/// # Ok(()) }
/// ```
pub struct Connection {
    link: Arc<Link>,
    sender: Sender,
    /// Frames this handle took from the receive queue in one batch and has
    /// not handed out yet: read without a lock.
    taken: VecDeque<Bytes>,
    /// This handle's number among the link's waiting readers; 0 until it
    /// first waits.
    reader: u64,
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        Connection {
            link: self.link.clone(),
            sender: self.sender.clone(),
            taken: VecDeque::new(),
            reader: 0,
        }
    }
}

/// Frames taken but not read go back to the front of the link's queue, and
/// the handles waiting are woken for them: nothing received is lost with a
/// dropped clone, nor left unseen.
impl Drop for Connection {
    fn drop(&mut self) {
        if self.reader == 0 && self.taken.is_empty() {
            return;
        }
        let mut inbound = lock(&self.link.inbound);
        inbound.waiting.remove(self.reader);
        // A handle that read the socket may have been the one to read it
        // next.
        if let Some(intake) = &inbound.intake {
            intake.duty().take_back();
        }
        if self.taken.is_empty() {
            return;
        }
        while let Some(b) = self.taken.pop_back() {
            inbound.ready.push_front(b);
        }
        let wake_all = inbound.wake_all.clone();
        drop(inbound);
        wake_all.wake();
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.link.peer)
            .field("remote", &self.link.remote)
            .finish()
    }
}

impl Connection {
    pub(crate) fn new(link: Arc<Link>, tx: OutTx) -> Self {
        Connection {
            sender: Sender {
                link: link.clone(),
                tx,
            },
            link,
            taken: VecDeque::new(),
            reader: 0,
        }
    }

    /// The peer's node id.
    pub fn peer_id(&self) -> &NodeId {
        &self.link.peer
    }

    /// The peer's socket address on this link.
    pub fn remote_addr(&self) -> SocketAddr {
        self.link.remote
    }

    /// This end's socket address on this link.
    pub fn local_addr(&self) -> SocketAddr {
        self.link.local
    }

    /// Queues one message; waits while the send queue is full. See
    /// [`Sender::send`].
    ///
    /// Errors: [`Error::FrameTooLarge`] (the link stays open) or
    /// [`Error::Closed`].
    pub fn send(&self, data: impl Into<Bytes>) -> impl Future<Output = Result<()>> + Send + '_ {
        self.sender.send(data)
    }

    /// A cheap, cloneable handle that sends on this link.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// A handle that sends many messages on this link for the price of a
    /// copy each (see [`Batch`]).
    pub fn batch(&self) -> Batch {
        self.sender.batch()
    }

    /// Closes the link: queued messages are flushed first, then the socket is
    /// shut down. Returns at once; await [`closed`](Self::closed) to wait.
    ///
    /// This closes one link, not the peer's membership: while both nodes
    /// run, either one dials the other again (a new `Connection`, with a new
    /// connection event). To end the link for good, use
    /// [`Service::disconnect`](crate::Service::disconnect).
    pub fn close(&self) {
        request_close(&self.link, CloseReason::Local);
    }

    /// Waits until the link has closed and tells why.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.link.state.subscribe();
        loop {
            if let LinkState::Closed(reason) = &*rx.borrow_and_update() {
                return reason.clone();
            }
            if rx.changed().await.is_err() {
                return CloseReason::Shutdown;
            }
        }
    }

    /// Why the link closed, or `None` while it is open or closing.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match &*self.link.state.borrow() {
            LinkState::Closed(r) => Some(r.clone()),
            _ => None,
        }
    }

    /// True until a close is asked for.
    pub(crate) fn is_up(&self) -> bool {
        self.link.is_up()
    }

    /// Measures one round trip: a ping, answered at once by the peer's link
    /// task. It waits in the send queue behind what is queued there, as a
    /// message would. Errors: [`Error::PingTimeout`] (no answer within
    /// `wait`: a peer that does not know pings ignores them),
    /// [`Error::NotLinked`] (the link closed first).
    pub(crate) async fn ping(&self, wait: std::time::Duration) -> Result<std::time::Duration> {
        let (n, answer) = lock(&self.link.timing).ping(std::time::Instant::now());
        let ping = Frame {
            kind: crate::wire::frame::PING,
            payload: Bytes::copy_from_slice(&n.to_be_bytes()),
        };
        let gone = || Error::NotLinked {
            peer: self.link.peer.clone(),
        };
        if !self.link.is_up() || !self.sender.tx.send_answer(ping) {
            return Err(gone());
        }
        tokio::select! {
            rtt = answer => rtt.map_err(|_| gone()),
            _ = self.closed() => Err(gone()),
            _ = tokio::time::sleep(wait) => Err(Error::PingTimeout {
                peer: self.link.peer.clone(),
                after: wait,
            }),
        }
    }

    /// The link's figures now.
    pub(crate) fn stats(&self) -> LinkStats {
        use std::sync::atomic::Ordering::Relaxed;
        let (sent, sent_bytes, dropped, send_queue, send_queue_bytes) = self
            .sender
            .tx
            .inspect(|o, len, bytes| (o.sent, o.sent_bytes, o.dropped, len, bytes));
        let receive_queue = {
            let inbound = lock(&self.link.inbound);
            inbound.rx.depth() + inbound.ready.len()
        };
        let c = &self.link.counters;
        let rtt = lock(&self.link.timing).rtt();
        LinkStats {
            peer: self.link.peer.clone(),
            remote: self.link.remote,
            frames_in: c.frames_in.load(Relaxed),
            bytes_in: c.bytes_in.load(Relaxed),
            frames_out: sent,
            bytes_out: sent_bytes,
            send_queue,
            send_queue_bytes,
            receive_queue,
            dropped,
            srtt: rtt.srtt(),
            rttvar: rtt.rttvar(),
        }
    }

    /// The link's send queue, for control frames.
    pub(crate) fn sender_queue(&self) -> &OutTx {
        &self.sender.tx
    }

    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.link
    }
}

/// Asks the link task to flush and close, unless it is already closing.
pub(crate) fn request_close(link: &Link, reason: CloseReason) {
    link.leave_up();
    link.state.send_if_modified(|s| {
        if *s == LinkState::Up {
            *s = LinkState::Closing(reason);
            true
        } else {
            false
        }
    });
}

impl Stream for Connection {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        let next = this.poll_message(cx);
        if let Poll::Ready(Some(_)) = next {
            this.link.counters.hand_out();
        }
        next
    }
}

impl Connection {
    /// The next message, if one is queued or can be read now (see
    /// [`Stream::poll_next`]).
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(b) = self.taken.pop_front() {
            return Poll::Ready(Some(b));
        }
        // A batch at a time: one lock and one queue operation for many
        // frames.
        let mut inbound = lock(&self.link.inbound);
        let Inbound {
            rx,
            ready,
            waiting,
            wake_all,
            intake,
        } = &mut *inbound;
        if !ready.is_empty() {
            std::mem::swap(ready, &mut self.taken);
            return Poll::Ready(self.taken.pop_front());
        }
        // The queue wakes `wake_all`, which wakes every waiting handle.
        let mut all = Context::from_waker(wake_all);
        let mut took = rx.poll_recv_many(&mut all, &mut self.taken, TAKE_QUEUED);
        if took.is_pending() {
            // Nothing queued: read the socket (before this handle is listed
            // as waiting, so that the socket's readiness does not take a
            // handle that found something for one that waits).
            if let Some(intake) = intake {
                let ends = Ends {
                    link: &self.link,
                    out: &self.sender.tx,
                };
                if intake.read_for_handle(ends, rx, &mut all, &mut self.taken) > 0 {
                    took = Poll::Ready(self.taken.len());
                }
            }
        }
        if took.is_pending() {
            if self.reader == 0 {
                self.reader = NEXT_READER.fetch_add(1, Ordering::Relaxed);
            }
            waiting.add(self.reader, cx.waker());
            // Messages (or the end) that came before this handle was listed
            // woke the others only: look once more.
            took = rx.poll_recv_many(&mut all, &mut self.taken, TAKE_QUEUED);
        }
        match took {
            Poll::Ready(0) => Poll::Ready(None),
            Poll::Ready(_) => Poll::Ready(self.taken.pop_front()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: Into<Bytes>> Sink<T> for Connection {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.sender.tx.poll_ready(cx).map_err(|_| Error::Closed)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<()> {
        let data = item.into();
        check_len(&self.link, data.len())?;
        if !self.link.is_up() {
            return Err(Error::Closed);
        }
        self.sender
            .tx
            .send_ready(Frame::data(data))
            .map_err(|_| Error::Closed)
    }

    /// Messages are handed to the link's task in `start_send`; a flush has
    /// nothing left to wait for.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        request_close(&self.link, CloseReason::Local);
        Poll::Ready(Ok(()))
    }
}

/// A cloneable handle that sends on one link.
///
/// ```no_run
/// # async fn demo(service: tcpnet::Service) -> tcpnet::Result<()> {
/// for conn in service.connections() {
///     let sender = conn.sender();
///     tokio::spawn(async move { sender.send("hi\n").await });
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sender {
    link: Arc<Link>,
    tx: OutTx,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("peer", &self.link.peer)
            .finish()
    }
}

impl Sender {
    /// Queues one message; waits while the send queue is full.
    ///
    /// The message is taken and its size checked when `send` is called;
    /// the future says so at its first poll, as it says whether the link
    /// is up. A send that finds 64 KiB of small frames queued, and the
    /// link's task not writing, writes them to the socket itself (without
    /// blocking; whatever the kernel does not take is left to the link's
    /// task), and spends a unit of its task's budget, as a write to a
    /// tokio socket does; a send whose task has spent its budget yields
    /// before it queues. A send dropped while it waits (by a timeout, or a
    /// `select!`) has not queued its message.
    ///
    /// Errors: [`Error::FrameTooLarge`] (the link stays open) or
    /// [`Error::Closed`].
    pub fn send(&self, data: impl Into<Bytes>) -> impl Future<Output = Result<()>> + Send + '_ {
        let data = data.into();
        let frame = check_len(&self.link, data.len()).map(|()| Frame::data(data));
        self.send_checked(frame)
    }

    /// Queues one frame of any kind (the messaging layer's); waits while
    /// the send queue is full.
    pub(crate) fn send_frame(&self, frame: Frame) -> impl Future<Output = Result<()>> + Send + '_ {
        self.send_checked(Ok(frame))
    }

    /// One future per message, polled once when there is room (most sends
    /// find it at the first poll): not `async fn`s nested around the
    /// queue's, whose states hold the frame once each and move it from one
    /// to the next.
    fn send_checked(&self, frame: Result<Frame>) -> impl Future<Output = Result<()>> + Send + '_ {
        let (mut frame, mut refused) = match frame {
            Ok(frame) => (Some(frame), None),
            Err(e) => (None, Some(e)),
        };
        let mut first = true;
        std::future::poll_fn(move |cx| {
            if let Some(e) = refused.take() {
                return Poll::Ready(Err(e));
            }
            if std::mem::take(&mut first) && !self.link.is_up() {
                return Poll::Ready(Err(Error::Closed));
            }
            self.tx
                .poll_send(cx, &mut frame)
                .map(|sent| sent.map_err(|_| Error::Closed))
        })
    }

    /// A handle that sends many messages on this link for the price of a
    /// copy each (see [`Batch`]).
    pub fn batch(&self) -> Batch {
        Batch::new(self.link.clone(), self.tx.clone())
    }

    /// The peer this sender writes to.
    pub fn peer_id(&self) -> &NodeId {
        &self.link.peer
    }
}

/// A message of `len` bytes may be sent on `link`.
pub(crate) fn check_len(link: &Link, len: usize) -> Result<()> {
    if len > link.max_frame_len {
        return Err(Error::FrameTooLarge {
            len,
            max: link.max_frame_len,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::link::outbox::OutRx;
    use futures::StreamExt;

    /// A link's handles, without a socket, and the link task's end of the
    /// receive queue.
    pub(crate) fn handles() -> (Connection, queue::Sender<VecDeque<Bytes>>, OutRx) {
        let (out_tx, out_rx) = queue::channel(8, usize::MAX);
        let (in_tx, in_rx) = queue::channel(8, usize::MAX);
        let addr = "127.0.0.1:1".parse().unwrap();
        // Each its own link id, as a node's links have.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let link = Arc::new(Link {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            peer: NodeId::parse("0a").unwrap(),
            remote: addr,
            local: addr,
            listens: 1,
            max_frame_len: 8,
            state: watch::channel(LinkState::Up).0,
            inbound: Inbound::new(in_rx),
            up: AtomicBool::new(true),
            timing: Mutex::new(Timing::new(std::time::Instant::now())),
            counters: Default::default(),
            key: None,
        });
        (Connection::new(link, out_tx), in_tx, out_rx)
    }

    /// A handle takes a batch; dropped half-way, the rest goes to the other
    /// handles, in order.
    #[tokio::test]
    async fn a_dropped_handle_leaves_its_batch_to_the_others() {
        let (mut a, in_tx, _out_rx) = handles();
        let b = a.clone();
        let mut batch: VecDeque<Bytes> = (0u8..5).map(|i| Bytes::from(vec![i])).collect();
        in_tx.try_send_many(&mut batch).unwrap();
        assert_eq!(a.next().await.unwrap()[0], 0);
        drop(a);
        drop(in_tx);
        let rest: Vec<u8> = b.map(|m| m[0]).collect().await;
        assert_eq!(rest, [1, 2, 3, 4]);
    }

    /// Two handles wait on an empty queue in tasks of their own. A third
    /// one, dropped with messages it took, wakes them (no frame arrives
    /// meanwhile); the link's end reaches both.
    #[tokio::test]
    async fn every_waiting_handle_wakes_for_given_back_messages_and_for_the_end() {
        let (mut a, in_tx, _out_rx) = handles();
        let mut batch: VecDeque<Bytes> = (0u8..3).map(|i| Bytes::from(vec![i])).collect();
        in_tx.try_send_many(&mut batch).unwrap();
        assert_eq!(a.next().await.unwrap()[0], 0);
        let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
        let readers: Vec<_> = [a.clone(), a.clone()]
            .into_iter()
            .map(|mut h| {
                let got_tx = got_tx.clone();
                tokio::spawn(async move {
                    while let Some(m) = h.next().await {
                        got_tx.send(m[0]).unwrap();
                    }
                })
            })
            .collect();
        tokio::task::yield_now().await; // both wait now
        drop(a);
        let bound = std::time::Duration::from_secs(5);
        let mut given_back = vec![];
        for _ in 0..2 {
            let m = tokio::time::timeout(bound, got.recv()).await;
            given_back.push(m.expect("woken").unwrap());
        }
        assert_eq!(given_back, [1, 2]);
        drop(in_tx);
        for r in readers {
            tokio::time::timeout(bound, r)
                .await
                .expect("saw the end")
                .unwrap();
        }
    }
}
