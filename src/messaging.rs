//! Messaging on the mesh: direct messages, broadcast, named events, topics,
//! request/reply. The state and its decisions are in [`crate::router`]; this
//! is the shell that moves envelopes ([`crate::message`]) between links and
//! the user's streams.
//!
//! # Streams and their queues
//!
//! Every stream ([`Messages`], [`Requests`]) has its own bounded queue of
//! [`Settings::queue_len`](crate::Settings::queue_len) items. Delivery never
//! waits for a stream: a message for a stream whose queue is full is dropped
//! for that stream and counted ([`Messages::dropped`]), so one slow consumer
//! never stalls a link, the mesh or the other streams. A request for a
//! procedure whose handlers' queues are all full is answered at once with
//! [`Error::Busy`]. Sending, on the other hand, waits for room in the links'
//! send queues, like [`Connection::send`](crate::Connection::send).
//!
//! # Inbound
//!
//! A link hands every `MSG` frame to [`Messaging::inbound`] in its own task;
//! the work there is a lock, a few lookups and non-blocking queue pushes,
//! and, for a message to relay, the user's relay filter (outside the lock)
//! and the re-encoded envelope queued on the next links.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::connection::{CloseReason, Connection};
use crate::error::{Error, Result};
use crate::events::{lock, Hub};
use crate::frame::{self, Frame};
use crate::id::NodeId;
use crate::message::{self, Envelope, Op, FLOOD, MAX_HOPS, MAX_NAME_LEN};
use crate::outbox::OutTx;
use crate::queue;
use crate::router::Router;

/// Why a call failed, as carried in a `Fail` envelope's first body byte.
const FAIL_USER: u8 = 0;
const FAIL_NO_PROCEDURE: u8 = 1;
const FAIL_UNANSWERED: u8 = 2;
const FAIL_BUSY: u8 = 3;

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
    from: NodeId,
    name: String,
    data: Bytes,
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

/// Decides, on a node that relays, whether a message goes on (see
/// [`Service::relay_filter`](crate::Service::relay_filter)).
pub type RelayFilter = dyn Fn(&Message) -> bool + Send + Sync;

/// A message to pass on, and the links to pass it on to.
struct Relay {
    frame: Frame,
    to: Vec<OutTx>,
}

/// Queues a relayed frame on each link without waiting. A link whose queue
/// is full misses it (counted in the log): relaying must not stall the link
/// it came on.
fn pass_on(to: &[OutTx], f: &Frame) {
    for tx in to {
        if tx.try_send(f.clone()).is_err() {
            tracing::warn!("dropped a relayed message: the next link's send queue is full");
        }
    }
}

/// A stream of [`Message`]s: from [`Service::messages`](crate::Service::messages),
/// [`Service::receiver`](crate::Service::receiver) or
/// [`Service::subscribe`](crate::Service::subscribe). A subscription ends
/// when this is dropped. The stream ends when the service is dropped.
#[derive(Debug)]
pub struct Messages {
    rx: mpsc::Receiver<Message>,
    dropped: Arc<AtomicU64>,
    /// For a topic subscription: unsubscribes on drop.
    topic: Option<(Weak<Messaging>, String)>,
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

/// A stream of [`Request`]s for one procedure, from
/// [`Service::procedure`](crate::Service::procedure).
#[derive(Debug)]
pub struct Requests {
    rx: mpsc::Receiver<Request>,
}

impl Stream for Requests {
    type Item = Request;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Request>> {
        self.rx.poll_recv(cx)
    }
}

/// A call to a procedure of this node. Answer it once, with
/// [`end`](Self::end) or [`error`](Self::error); dropped unanswered, the
/// caller gets [`Error::Unanswered`].
///
/// ```no_run
/// use futures::StreamExt;
/// # async fn demo(service: tcpnet::Service) -> tcpnet::Result<()> {
/// let mut calls = service.procedure("upper")?;
/// while let Some(req) = calls.next().await {
///     let upper = std::str::from_utf8(req.data()).map(str::to_uppercase);
///     match upper {
///         Ok(s) => req.end(s).await?,
///         Err(_) => req.error("bad-input", "not UTF-8").await?,
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Request {
    from: NodeId,
    procedure: String,
    data: Bytes,
    reply: Option<ReplyTo>,
}

#[derive(Debug)]
struct ReplyTo {
    tx: OutTx,
    me: NodeId,
    corr: u64,
    max_frame_len: usize,
}

impl ReplyTo {
    /// The answer's frame, if it fits the link.
    fn checked(&self, op: Op, name: &str, body: Bytes) -> Result<Frame> {
        if name.len() > MAX_NAME_LEN {
            return Err(Error::BadName {
                name: name.to_string(),
                reason: "must be at most 255 bytes",
            });
        }
        let f = self.frame(op, name, body);
        if f.payload.len() > self.max_frame_len {
            return Err(Error::FrameTooLarge {
                len: f.payload.len(),
                max: self.max_frame_len,
            });
        }
        Ok(f)
    }

    fn frame(&self, op: Op, name: &str, body: Bytes) -> Frame {
        envelope_frame(&Envelope {
            op,
            flags: 0,
            hops: 0,
            origin: self.me.clone(),
            seq: 0,
            corr: self.corr,
            name: name.to_string(),
            body,
        })
    }
}

impl Request {
    /// The calling node.
    pub fn from(&self) -> &NodeId {
        &self.from
    }

    /// The procedure's name.
    pub fn procedure(&self) -> &str {
        &self.procedure
    }

    /// The request's data.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Answers with `data`. Fails with [`Error::Closed`] if the caller's link
    /// has closed, and with [`Error::FrameTooLarge`] if the answer does not
    /// fit a frame (the caller then gets [`Error::Unanswered`]).
    pub async fn end(mut self, data: impl Into<Bytes>) -> Result<()> {
        self.answer(Op::Reply, "", data.into()).await
    }

    /// Answers with an error: the caller gets [`Error::Remote`] with this
    /// name (at most 255 bytes, else [`Error::BadName`] here and
    /// [`Error::Unanswered`] there) and message.
    pub async fn error(mut self, name: &str, message: &str) -> Result<()> {
        self.answer(Op::Fail, name, fail_body(FAIL_USER, message))
            .await
    }

    async fn answer(&mut self, op: Op, name: &str, body: Bytes) -> Result<()> {
        let Some(reply) = &self.reply else {
            return Err(Error::Closed); // answered already
        };
        let f = reply.checked(op, name, body)?;
        let reply = self.reply.take().expect("checked above");
        reply.tx.send(f).await.map_err(|_| Error::Closed)
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            let f = reply.frame(Op::Fail, "", fail_body(FAIL_UNANSWERED, ""));
            answer_now(&reply.tx, f);
        }
    }
}

/// Queues an answer the node gives by itself (a refusal, or a request
/// dropped unanswered) without waiting. If the link's send queue is full,
/// the answer is dropped and the caller's timeout ends the call: a peer that
/// floods requests and reads nothing must not make the node hold more.
fn answer_now(tx: &OutTx, f: Frame) {
    if tx.try_send(f).is_err() {
        tracing::debug!("an answer was dropped: the link's send queue is full");
    }
}

fn fail_body(kind: u8, message: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + message.len());
    b.put_u8(kind);
    b.put_slice(message.as_bytes());
    b.freeze()
}

/// Queues `f` without waiting; if the queue is full, from a task of its own.
fn send_soon(tx: OutTx, f: Frame) {
    if let Err(queue::TrySendError::Full(f)) = tx.try_send(f) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tx.send(f).await;
            });
        }
    }
}

fn envelope_frame(e: &Envelope) -> Frame {
    Frame {
        kind: frame::MSG,
        payload: e.encode(),
    }
}

/// One subscriber's queue.
struct Sub<T> {
    tx: mpsc::Sender<T>,
    dropped: Arc<AtomicU64>,
}

impl<T> Sub<T> {
    /// Hands over `item` unless the queue is full (then counts it). False if
    /// the subscriber is gone.
    fn offer(&self, item: T) -> bool {
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

/// A call waiting for its answer.
struct Call {
    peer: NodeId,
    procedure: String,
    /// The link it went out on (its shared state's address): only that
    /// link's close interrupts it.
    link: usize,
    tx: oneshot::Sender<Result<Bytes>>,
}

/// Identifies a link by its shared state.
fn link_key(conn: &Connection) -> usize {
    Arc::as_ptr(conn.shared()) as usize
}

struct State {
    router: Router,
    inbox: Vec<Sub<Message>>,
    events: HashMap<String, Vec<Sub<Message>>>,
    topics: HashMap<String, Vec<Sub<Message>>>,
    procedures: HashMap<String, (Vec<Sub<Request>>, usize)>,
    calls: HashMap<u64, Call>,
    next_corr: u64,
}

/// The messaging layer of one service.
pub(crate) struct Messaging {
    me: NodeId,
    hub: Arc<Hub>,
    queue_len: usize,
    max_frame_len: usize,
    state: Mutex<State>,
    /// A neighbors announcement is scheduled.
    neighbors_due: std::sync::atomic::AtomicBool,
    /// The links named in the last announcement.
    told_neighbors: Mutex<HashSet<NodeId>>,
    /// The user's relay filter.
    filter: Mutex<Option<Arc<RelayFilter>>>,
}

/// Most topics kept for one other node.
const MAX_TOPICS: usize = 4096;

/// How long link changes are collected before the neighbors are told. While
/// a mesh forms, links open by the hundred: each announcement lists every
/// link, so they must be few. Until a peer's list comes, a node relays for
/// it conservatively (to every other peer; copies are dropped as
/// duplicates); a list older than a link that just closed can make a relay
/// skip a node for this long.
const NEIGHBORS_DELAY: Duration = Duration::from_millis(100);

/// Checks an event, topic or procedure name.
fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.len() > MAX_NAME_LEN {
        "must be at most 255 bytes"
    } else {
        return Ok(());
    };
    Err(Error::BadName {
        name: name.to_string(),
        reason,
    })
}

impl Messaging {
    pub fn new(
        me: NodeId,
        start: u64,
        hub: Arc<Hub>,
        queue_len: usize,
        max_frame_len: usize,
    ) -> Self {
        Messaging {
            me: me.clone(),
            hub,
            queue_len,
            max_frame_len,
            state: Mutex::new(State {
                router: Router::new(me, start),
                inbox: Vec::new(),
                events: HashMap::new(),
                topics: HashMap::new(),
                procedures: HashMap::new(),
                calls: HashMap::new(),
                next_corr: 0,
            }),
            neighbors_due: Default::default(),
            told_neighbors: Mutex::new(HashSet::new()),
            filter: Mutex::new(None),
        }
    }

    fn queue<T>(&self) -> (Sub<T>, mpsc::Receiver<T>, Arc<AtomicU64>) {
        let (tx, rx) = mpsc::channel(self.queue_len);
        let dropped = Arc::new(AtomicU64::new(0));
        (
            Sub {
                tx,
                dropped: dropped.clone(),
            },
            rx,
            dropped,
        )
    }

    // ----- the user's side -------------------------------------------------

    pub fn messages(&self) -> Messages {
        let (sub, rx, dropped) = self.queue();
        lock(&self.state).inbox.push(sub);
        Messages {
            rx,
            dropped,
            topic: None,
        }
    }

    pub fn receiver(&self, event: &str) -> Result<Messages> {
        check_name(event)?;
        let (sub, rx, dropped) = self.queue();
        lock(&self.state)
            .events
            .entry(event.to_string())
            .or_default()
            .push(sub);
        Ok(Messages {
            rx,
            dropped,
            topic: None,
        })
    }

    pub fn subscribe(self: &Arc<Self>, topic: &str) -> Result<Messages> {
        check_name(topic)?;
        let (sub, rx, dropped) = self.queue();
        let changed = {
            let mut st = lock(&self.state);
            st.topics.entry(topic.to_string()).or_default().push(sub);
            st.router.subscribe(topic)
        };
        if changed {
            self.tell_interest();
        }
        Ok(Messages {
            rx,
            dropped,
            topic: Some((Arc::downgrade(self), topic.to_string())),
        })
    }

    fn unsubscribed(&self, topic: &str) {
        let changed = {
            let mut st = lock(&self.state);
            if let Some(subs) = st.topics.get_mut(topic) {
                subs.retain(|s| !s.tx.is_closed());
                if subs.is_empty() {
                    st.topics.remove(topic);
                }
            }
            st.router.unsubscribe(topic)
        };
        if changed {
            self.tell_interest();
        }
    }

    pub fn procedure(&self, name: &str) -> Result<Requests> {
        check_name(name)?;
        let (sub, rx, _) = self.queue();
        lock(&self.state)
            .procedures
            .entry(name.to_string())
            .or_default()
            .0
            .push(sub);
        Ok(Requests { rx })
    }

    pub fn set_filter(&self, f: Option<Arc<RelayFilter>>) {
        *lock(&self.filter) = f;
    }

    pub fn topic_members(&self, topic: &str) -> Vec<NodeId> {
        lock(&self.state).router.members(topic)
    }

    fn envelope(&self, op: Op, flags: u8, seq: u64, name: &str, body: Bytes) -> Result<Frame> {
        let e = Envelope {
            op,
            flags,
            hops: 0,
            origin: self.me.clone(),
            seq,
            corr: 0,
            name: name.to_string(),
            body,
        };
        let f = envelope_frame(&e);
        if f.payload.len() > self.max_frame_len {
            return Err(Error::FrameTooLarge {
                len: f.payload.len(),
                max: self.max_frame_len,
            });
        }
        Ok(f)
    }

    fn link_to(&self, peer: &NodeId) -> Result<Connection> {
        self.hub
            .open_links()
            .into_iter()
            .find(|c| c.peer_id() == peer)
            .ok_or_else(|| Error::NotLinked {
                peer: peer.to_string(),
            })
    }

    /// Sends `f` on each link; returns how many took it.
    async fn send_all(&self, links: Vec<Connection>, f: Frame) -> usize {
        let mut n = 0;
        for c in links {
            if c.sender().send_frame(f.clone()).await.is_ok() {
                n += 1;
            }
        }
        n
    }

    pub async fn send_to(&self, peer: &NodeId, data: Bytes) -> Result<()> {
        let conn = self.link_to(peer)?;
        let f = self.envelope(Op::Direct, 0, 0, "", data)?;
        conn.sender().send_frame(f).await
    }

    pub async fn broadcast(&self, data: Bytes) -> Result<usize> {
        let seq = lock(&self.state).router.next_seq();
        let f = self.envelope(Op::Broadcast, FLOOD, seq, "", data)?;
        Ok(self.send_all(self.hub.open_links(), f).await)
    }

    pub async fn emit(&self, event: &str, data: Bytes) -> Result<usize> {
        check_name(event)?;
        let seq = lock(&self.state).router.next_seq();
        let f = self.envelope(Op::Event, FLOOD, seq, event, data)?;
        Ok(self.send_all(self.hub.open_links(), f).await)
    }

    pub async fn emit_to(&self, peer: &NodeId, event: &str, data: Bytes) -> Result<()> {
        check_name(event)?;
        let conn = self.link_to(peer)?;
        let f = self.envelope(Op::Event, 0, 0, event, data)?;
        conn.sender().send_frame(f).await
    }

    /// Delivers to local subscribers, and sends to every linked member.
    /// Returns the number of nodes it went to, this one included.
    pub async fn publish(&self, topic: &str, data: Bytes) -> Result<usize> {
        check_name(topic)?;
        let (seq, members, to) = {
            let mut st = lock(&self.state);
            let to = st.router.publish_to(topic);
            (st.router.next_seq(), st.router.members(topic), to)
        };
        let f = self.envelope(Op::Publish, FLOOD, seq, topic, data.clone())?;
        let mut n = 0;
        if members.contains(&self.me) {
            let msg = Message {
                from: self.me.clone(),
                name: topic.to_string(),
                data,
            };
            deliver(lock(&self.state).topics.get_mut(topic), msg);
            n += 1;
        }
        let links: Vec<Connection> = self
            .hub
            .open_links()
            .into_iter()
            .filter(|c| to.contains(c.peer_id()))
            .collect();
        Ok(n + self.send_all(links, f).await)
    }

    pub async fn request(
        &self,
        peer: &NodeId,
        procedure: &str,
        data: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        check_name(procedure)?;
        let conn = self.link_to(peer)?;
        let (tx, rx) = oneshot::channel();
        let corr = {
            let mut st = lock(&self.state);
            st.next_corr += 1;
            let corr = st.next_corr;
            st.calls.insert(
                corr,
                Call {
                    peer: peer.clone(),
                    procedure: procedure.to_string(),
                    link: link_key(&conn),
                    tx,
                },
            );
            corr
        };
        // Taken out of the table however this ends, so nothing leaks.
        struct Forget<'a>(&'a Messaging, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                lock(&self.0.state).calls.remove(&self.1);
            }
        }
        let _forget = Forget(self, corr);
        let e = Envelope {
            op: Op::Request,
            flags: 0,
            hops: 0,
            origin: self.me.clone(),
            seq: 0,
            corr,
            name: procedure.to_string(),
            body: data,
        };
        let f = envelope_frame(&e);
        if f.payload.len() > self.max_frame_len {
            return Err(Error::FrameTooLarge {
                len: f.payload.len(),
                max: self.max_frame_len,
            });
        }
        conn.sender()
            .send_frame(f)
            .await
            .map_err(|_| Error::Interrupted {
                peer: peer.to_string(),
                procedure: procedure.to_string(),
                reason: "the link closed before the request was sent".into(),
            })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout {
                peer: peer.to_string(),
                procedure: procedure.to_string(),
                after: timeout,
            }),
        }
    }

    /// Tells every linked peer this node's topics.
    fn tell_interest(&self) {
        let (version, topics) = lock(&self.state).router.my_interest();
        let f = interest_frame(&self.me, version, &topics, 0);
        for c in self.hub.open_links() {
            send_soon(c.sender_queue().clone(), f.clone());
        }
    }

    /// Tells every linked peer which nodes this one is linked to, soon: link
    /// changes come in bursts (a mesh forming), so they are sent together.
    fn tell_neighbors(self: &Arc<Self>) {
        if self.neighbors_due.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        rt.spawn(async move {
            tokio::time::sleep(NEIGHBORS_DELAY).await;
            this.neighbors_due.store(false, Ordering::Release);
            let linked = lock(&this.state).router.linked().clone();
            {
                // Nothing new to say: say nothing.
                let mut told = lock(&this.told_neighbors);
                if *told == linked {
                    return;
                }
                *told = linked.clone();
            }
            let mut body = BytesMut::new();
            for id in &linked {
                body.put_slice(id.as_str().as_bytes());
                body.put_u8(b'\n');
            }
            let f = envelope_frame(&Envelope {
                op: Op::Neighbors,
                flags: 0,
                hops: 0,
                origin: this.me.clone(),
                seq: 0,
                corr: 0,
                name: String::new(),
                body: body.freeze(),
            });
            for c in this.hub.open_links() {
                send_soon(c.sender_queue().clone(), f.clone());
            }
        });
    }
}

/// The topics of `origin` (version `version`), as an `Interest` envelope.
fn interest_frame(origin: &NodeId, version: u64, topics: &[String], hops: u8) -> Frame {
    let mut body = BytesMut::new();
    for t in topics {
        body.put_slice(t.as_bytes());
        body.put_u8(b'\n');
    }
    envelope_frame(&Envelope {
        op: Op::Interest,
        flags: FLOOD,
        hops,
        origin: origin.clone(),
        seq: 0,
        corr: version,
        name: String::new(),
        body: body.freeze(),
    })
}

impl Messaging {
    // ----- the links' side -------------------------------------------------

    /// A link opened: tell the peer every node's topics we know, ours
    /// included, and everyone which nodes we are linked to.
    pub fn opened(self: &Arc<Self>, conn: &Connection) {
        let (mine, others) = {
            let mut st = lock(&self.state);
            st.router.link_opened(conn.peer_id().clone());
            (st.router.my_interest(), st.router.all_interest())
        };
        let tx = conn.sender_queue();
        // A node that never subscribed has nothing to say.
        if !mine.1.is_empty() {
            send_soon(tx.clone(), interest_frame(&self.me, mine.0, &mine.1, 0));
        }
        for (origin, version, topics) in others {
            if &origin != conn.peer_id() {
                send_soon(tx.clone(), interest_frame(&origin, version, &topics, 1));
            }
        }
        self.tell_neighbors();
    }

    /// A link closed: the calls made on it fail; if it was the pair's open
    /// link (`gone`), forget the peer's topics and links.
    pub fn closed(self: &Arc<Self>, conn: &Connection, reason: &CloseReason, gone: bool) {
        let peer = conn.peer_id();
        let mut st = lock(&self.state);
        if gone {
            self.tell_neighbors();
            st.router.forget(peer);
        }
        let key = link_key(conn);
        fail_calls(&mut st, |c| c.link == key, &reason.to_string());
    }

    /// The node closed: every call still waiting fails now.
    pub fn shutdown(&self) {
        fail_calls(&mut lock(&self.state), |_| true, "this node closed");
    }

    /// A `MSG` frame arrived from `peer` on a link whose send queue is
    /// `reply`. A malformed one is an error for the caller to report.
    pub fn inbound(&self, peer: &NodeId, payload: Bytes, reply: &OutTx) -> Result<(), String> {
        let e = Envelope::decode(payload)?;
        if e.hops > MAX_HOPS {
            return Err(format!("message relayed {} times, over {MAX_HOPS}", e.hops));
        }
        if !e.flooded() && &e.origin != peer {
            return Err(format!(
                "message from {peer} claims to come from {}",
                e.origin
            ));
        }
        if e.origin == self.me {
            return Ok(()); // our own, relayed back
        }
        let mut st = lock(&self.state);
        // Interest is deduplicated by its version, the rest by number.
        if e.flooded() && e.op != Op::Interest && !st.router.fresh(&e.origin, e.seq) {
            return Ok(());
        }
        match e.op {
            Op::Direct | Op::Broadcast | Op::Event | Op::Publish => {
                let relay = if e.flooded() {
                    let topic = (e.op == Op::Publish).then_some(e.name.as_str());
                    let to = st.router.relay_to(peer, &e.origin, topic);
                    relay_frame(&e, &to, &self.hub)
                } else {
                    None
                };
                let m = Message {
                    from: e.origin.clone(),
                    name: e.name.clone(),
                    data: e.body.clone(),
                };
                let subs = match e.op {
                    Op::Direct | Op::Broadcast => Some(&mut st.inbox),
                    Op::Event => st.events.get_mut(&e.name),
                    _ => st.topics.get_mut(&e.name),
                };
                if let Some(subs) = subs {
                    subs.retain(|s| s.offer(m.clone()));
                }
                if let Some(r) = relay {
                    // The user's filter runs without the messaging lock: it
                    // may call back into the service.
                    drop(st);
                    let filter = lock(&self.filter).clone();
                    if filter.is_none_or(|f| f(&m)) {
                        pass_on(&r.to, &r.frame);
                    }
                    return Ok(());
                }
            }
            Op::Interest => {
                let topics: BTreeSet<String> = message::lines(&e.body)
                    .filter(|t| t.len() <= MAX_NAME_LEN)
                    .take(MAX_TOPICS)
                    .map(str::to_string)
                    .collect();
                let origin = e.origin.clone();
                if st.router.interest(origin.clone(), e.corr, topics) {
                    let to = st.router.relay_to(peer, &origin, None);
                    if let Some(r) = relay_frame(&e, &to, &self.hub) {
                        pass_on(&r.to, &r.frame);
                    }
                }
            }
            Op::Request => {
                let req = Request {
                    from: e.origin.clone(),
                    procedure: e.name.clone(),
                    data: e.body.clone(),
                    reply: Some(ReplyTo {
                        tx: reply.clone(),
                        me: self.me.clone(),
                        corr: e.corr,
                        max_frame_len: self.max_frame_len,
                    }),
                };
                let handlers = st.procedures.get_mut(&e.name);
                if let Err((mut req, kind)) = offer_request(handlers, req) {
                    // Answered here, so not as "unanswered" on drop.
                    let to = req.reply.take().expect("not yet answered");
                    answer_now(reply, to.frame(Op::Fail, "", fail_body(kind, "")));
                }
            }
            Op::Reply | Op::Fail => {
                let Some(call) = st.calls.remove(&e.corr) else {
                    return Ok(()); // timed out meanwhile
                };
                if &call.peer != peer {
                    st.calls.insert(e.corr, call);
                    return Err(format!("{peer} answered a call made to another node"));
                }
                let result = if e.op == Op::Reply {
                    Ok(e.body)
                } else {
                    Err(fail_error(&call, &e))
                };
                let _ = call.tx.send(result);
            }
            Op::Neighbors => {
                let links = message::lines(&e.body)
                    .filter_map(|l| NodeId::parse(l).ok())
                    .take(crate::mesh::MAX_PEERS)
                    .collect();
                st.router.neighbors(peer.clone(), links);
            }
        }
        Ok(())
    }
}

/// The frame to pass `e` on with (one more hop), and the links to pass it
/// on to; `None` if there are none.
fn relay_frame(e: &Envelope, to: &[NodeId], hub: &Hub) -> Option<Relay> {
    if to.is_empty() || e.hops >= MAX_HOPS {
        return None;
    }
    let links = hub.open_links();
    let frame = envelope_frame(&Envelope {
        hops: e.hops + 1,
        ..e.clone()
    });
    let to = links
        .into_iter()
        .filter(|c| to.contains(c.peer_id()))
        .map(|c| c.sender_queue().clone())
        .collect();
    Some(Relay { frame, to })
}

/// Ends the calls that `which` picks with [`Error::Interrupted`].
fn fail_calls(st: &mut State, which: impl Fn(&Call) -> bool, reason: &str) {
    let failed: Vec<u64> = st
        .calls
        .iter()
        .filter(|(_, c)| which(c))
        .map(|(k, _)| *k)
        .collect();
    for k in failed {
        let call = st.calls.remove(&k).expect("listed");
        let _ = call.tx.send(Err(Error::Interrupted {
            peer: call.peer.to_string(),
            procedure: call.procedure,
            reason: reason.to_string(),
        }));
    }
}

/// Hands a request to the next handler with room (round robin), or gives it
/// back with the reason to refuse it.
#[allow(clippy::result_large_err)] // the request goes back to be answered
fn offer_request(
    handlers: Option<&mut (Vec<Sub<Request>>, usize)>,
    mut req: Request,
) -> Result<(), (Request, u8)> {
    let Some((subs, next)) = handlers else {
        return Err((req, FAIL_NO_PROCEDURE));
    };
    subs.retain(|s| !s.tx.is_closed());
    if subs.is_empty() {
        return Err((req, FAIL_NO_PROCEDURE));
    }
    for i in 0..subs.len() {
        let k = (*next + i) % subs.len();
        match subs[k].tx.try_send(req) {
            Ok(()) => {
                *next = k + 1;
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Full(r)) | Err(mpsc::error::TrySendError::Closed(r)) => {
                req = r
            }
        }
    }
    Err((req, FAIL_BUSY))
}

/// Hands a topic message to its local subscribers, forgetting dropped ones.
fn deliver(subs: Option<&mut Vec<Sub<Message>>>, m: Message) {
    if let Some(subs) = subs {
        subs.retain(|s| s.offer(m.clone()));
    }
}

/// The error a `Fail` answer means.
fn fail_error(call: &Call, e: &Envelope) -> Error {
    let peer = call.peer.to_string();
    let procedure = call.procedure.clone();
    let (kind, text) = match e.body.split_first() {
        Some((k, rest)) => (*k, String::from_utf8_lossy(rest).into_owned()),
        None => (FAIL_USER, String::new()),
    };
    match kind {
        FAIL_NO_PROCEDURE => Error::NoProcedure { peer, procedure },
        FAIL_UNANSWERED => Error::Unanswered { peer, procedure },
        FAIL_BUSY => Error::Busy { peer, procedure },
        _ => Error::Remote {
            peer,
            procedure,
            name: e.name.clone(),
            message: text,
        },
    }
}
