//! Messaging on the mesh: direct messages, broadcast, named events, topics,
//! request/reply, relaying where the mesh is not full.
//!
//! [`Messaging`] is the shell that moves envelopes
//! ([`crate::wire::envelope`]) between links and the user's streams; its
//! state and decisions (interest, members, duplicates, where to relay) are
//! the pure [`router`]'s. The user's streams are in [`streams`], calls in
//! [`rpc`], relaying and the gossip it needs in [`relay`], what is held
//! for streams not made yet while the node is young in [`early`].
//!
//! # Streams and their queues
//!
//! Every stream ([`Messages`], [`Requests`]) has its own bounded queue of
//! [`Settings::queue_len`](crate::Settings::queue_len) items and
//! [`Settings::queue_bytes`](crate::Settings::queue_bytes) bytes of data.
//! Delivery never waits for a stream (see [`streams`]). A request for a
//! procedure whose handlers' queues are all full is answered at once with
//! [`CallError::Busy`](crate::CallError::Busy). Sending, on the other hand,
//! waits for room in the links' send queues, like
//! [`Connection::send`](crate::Connection::send).
//!
//! # Inbound
//!
//! A link hands every `MSG` frame to [`Messaging`] (as its
//! [`Inbound`]) in its own task; the work there is a
//! lock, a few lookups and non-blocking queue pushes, and, for a message to
//! relay, the user's relay filter (outside the lock) and the re-encoded
//! envelope queued on the next links.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::clock::{mono_nanos, unix_nanos};
use crate::error::{CloseReason, Error, MetaError, Result};
use crate::id::NodeId;
use crate::identity::Identity;
use crate::limits::MAX_NAME_LEN;
use crate::link::connection::Connection;
use crate::link::open::OpenLinks;
use crate::link::outbox::OutTx;
use crate::link::Inbound;
use crate::stats::{Counters, Refused};
use crate::sync::lock;
use crate::wire::envelope::{Envelope, Op, Signature, FLOOD, MAX_HOPS, SIGNED_LEN};
use crate::wire::frame::{self, Frame};
use crate::wire::record::Record;

pub(crate) mod early;
pub(crate) mod relay;
pub(crate) mod router;
pub(crate) mod rpc;
pub(crate) mod streams;
#[cfg(feature = "typed")]
pub mod typed;

use early::{Early, Held, Waits};
use relay::{record_key, relay_frame, HintSink, RelayFilter};
use router::neighbors::LinkList;
use router::{News, Refusal, Router};
use rpc::{fail_calls, refuse, Call, Request, Requests};
use streams::{deliver, feed, prune, Bounds, ErrorSink, Feed, Message, Messages, Of, Queued};

/// How long after a change of this node's links its flooded messages are
/// signed whatever the peers' lists say: a new link elsewhere reaches this
/// node's tables with the next list, up to a few hundred milliseconds later.
const SETTLE: Duration = Duration::from_secs(1);

/// Where messaging hands the member records it hears: the node's view of
/// its members, which decides what is news.
pub(crate) trait Gossip: Send + Sync {
    /// `origin`'s record arrived on `peer`'s link; `bad` says what was
    /// wrong with its metadata, if anything; `signed` is the copy signed by
    /// its origin, ready to pass on (one hop further), when it came signed.
    /// True if this copy is one to pass on: news, or the first signed copy
    /// of the version the view holds.
    fn record(
        &self,
        peer: &NodeId,
        origin: &NodeId,
        record: Record,
        bad: Option<MetaError>,
        signed: Option<Frame>,
    ) -> bool;

    /// True unless the view holds `origin`'s record at least as new as
    /// `record` (and signed, if `signed`): a copy that would change nothing.
    fn fresh(&self, _origin: &NodeId, _record: &Record, _signed: bool) -> bool {
        true
    }

    /// The signed records of the members this node knows (not itself, not
    /// `except`), for a peer that just linked.
    fn known(&self, _except: &NodeId) -> Vec<(NodeId, Frame)> {
        Vec::new()
    }

    /// `peer` said which nodes it is linked to: `list`, the router's list
    /// of them, to share.
    fn neighbors(&self, _peer: &NodeId, _list: &LinkList) {}

    /// True if the view knows `node` as a member that has not left, or
    /// holds its record for a link or a grace (see
    /// [`router::seen`]: their message numbers are never forgotten). Asked
    /// under the messaging lock: the view must not call messaging while
    /// it holds its own.
    fn in_view(&self, _node: &NodeId) -> bool {
        false
    }
}

/// The messaging tables, under one lock.
pub(crate) struct State {
    pub(crate) router: Router,
    inbox: Vec<Feed<Queued>>,
    events: HashMap<String, Vec<Feed<Queued>>>,
    topics: HashMap<String, Vec<Feed<Queued>>>,
    pub(crate) procedures: HashMap<String, (Vec<Feed<Request>>, usize)>,
    pub(crate) calls: HashMap<u64, Call>,
    pub(crate) next_corr: u64,
    /// What came, while the node is young, for streams not made yet.
    pub(crate) early: Option<Early>,
}

/// The messaging layer of one node.
pub(crate) struct Messaging {
    pub(crate) me: NodeId,
    /// The node's key pair: it signs what may be relayed.
    identity: Identity,
    /// When this node's links last changed (see `must_sign`).
    changed: Mutex<Instant>,
    /// The node's open links, where messages go out.
    pub(crate) open: Arc<OpenLinks>,
    /// How much each stream's queue holds.
    bounds: Bounds,
    pub(crate) max_frame_len: usize,
    pub(crate) state: Mutex<State>,
    /// A neighbors announcement is scheduled.
    pub(crate) neighbors_due: std::sync::atomic::AtomicBool,
    /// The links named in the last announcement, and where it went.
    pub(crate) told_neighbors: Mutex<relay::Told>,
    /// The member records owed to links (see `tell_new_link`, `member`).
    records_owed: Mutex<relay::Owed>,
    /// Itself, for the task that hands out what is owed.
    this: Weak<Messaging>,
    /// The user's relay filter.
    pub(crate) filter: Mutex<Option<Arc<RelayFilter>>>,
    /// Held from the moment a flooded message is found fresh until it is
    /// queued on the links it is relayed to (taken before `state`).
    relay_order: Mutex<()>,
    /// Where streams report the messages they drop: the node's error
    /// stream, once the node has said where that is.
    errors: std::sync::OnceLock<ErrorSink>,
    /// Where member records go.
    gossip: Arc<dyn Gossip>,
    /// Where the hints that peers' lists of links give go: the running
    /// node's mesh.
    hint_sink: Mutex<Option<HintSink>>,
    /// Held while a flooded message of this node is numbered and queued
    /// (see `flood`; taken before `state`).
    flooding: Mutex<()>,
    /// The node's counters (relayed and duplicate messages, here).
    pub(crate) counters: Arc<Counters>,
    /// This node's record as last told, signed: every new link is told it,
    /// for the peer to pass on (and a link whose handshake began before a
    /// change of metadata carries the older metadata in its hello).
    record: Mutex<Option<Frame>>,
}

/// Checks an event, topic or procedure name.
pub(crate) fn check_name(name: &str) -> Result<()> {
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

/// An envelope as the frame that carries it.
pub(crate) fn envelope_frame(e: &Envelope) -> Frame {
    Frame {
        kind: frame::MSG,
        payload: e.encode(),
    }
}

impl Messaging {
    pub(crate) fn new(
        identity: Identity,
        start: u64,
        open: Arc<OpenLinks>,
        gossip: Arc<dyn Gossip>,
        bounds: Bounds,
        max_frame_len: usize,
        counters: Arc<Counters>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Messaging {
            me: identity.id().clone(),
            identity: identity.clone(),
            changed: Mutex::new(Instant::now()),
            open,
            bounds,
            max_frame_len,
            state: Mutex::new(State {
                router: Router::new(identity.id().clone(), start),
                inbox: Vec::new(),
                events: HashMap::new(),
                topics: HashMap::new(),
                procedures: HashMap::new(),
                calls: HashMap::new(),
                next_corr: 0,
                early: None,
            }),
            neighbors_due: Default::default(),
            told_neighbors: Mutex::default(),
            records_owed: Mutex::default(),
            this: this.clone(),
            filter: Mutex::new(None),
            relay_order: Mutex::new(()),
            errors: std::sync::OnceLock::new(),
            gossip,
            hint_sink: Mutex::new(None),
            flooding: Mutex::new(()),
            counters,
            record: Mutex::new(None),
        })
    }

    /// Says where streams report what they drop (see [`Feed`]).
    pub(crate) fn report_errors_to(&self, sink: ErrorSink) {
        let _ = self.errors.set(sink);
    }

    /// Says where the hints that peers' lists of links give go (see
    /// [`relay::neighbors`]): the node that runs now.
    pub(crate) fn hints_to(&self, sink: HintSink) {
        *lock(&self.hint_sink) = Some(sink);
    }

    // ----- the user's side -------------------------------------------------

    pub(crate) fn messages(self: &Arc<Self>) -> Messages {
        self.stream(Of::Inbox)
    }

    pub(crate) fn receiver(self: &Arc<Self>, event: &str) -> Result<Messages> {
        check_name(event)?;
        Ok(self.stream(Of::Event(event.to_string())))
    }

    pub(crate) fn subscribe(self: &Arc<Self>, topic: &str) -> Result<Messages> {
        check_name(topic)?;
        Ok(self.stream(Of::Topic(topic.to_string())))
    }

    /// A stream of `of`, its queue listed in the table it belongs to.
    fn stream(self: &Arc<Self>, of: Of) -> Messages {
        let stream = match &of {
            Of::Inbox => "messages".to_string(),
            Of::Event(name) => format!("event {name}"),
            Of::Topic(name) => format!("topic {name}"),
        };
        let report = self.errors.get().map(|sink| (stream, sink.clone()));
        let (mut sub, rx, dropped) = feed(self.bounds, report);
        let subscribed = {
            let mut st = lock(&self.state);
            // What came for it early goes first, under the lock that
            // delivery takes: nothing comes between.
            let waits = match &of {
                Of::Inbox => Some(Waits::Inbox),
                Of::Event(name) => Some(Waits::Event(name.clone())),
                Of::Topic(_) => None,
            };
            if let (Some(early), Some(waits)) = (st.early.as_mut(), waits) {
                for held in early.take(&waits) {
                    if let Held::Message(m) = held {
                        sub.offer(m);
                    }
                }
            }
            match &of {
                Of::Inbox => {
                    st.inbox.push(sub);
                    false
                }
                Of::Event(name) => {
                    st.events.entry(name.clone()).or_default().push(sub);
                    false
                }
                Of::Topic(name) => {
                    st.topics.entry(name.clone()).or_default().push(sub);
                    st.router.subscribe(name)
                }
            }
        };
        if subscribed {
            self.tell_interest();
        }
        Messages {
            rx,
            dropped,
            of: (Arc::downgrade(self), of),
        }
    }

    /// A stream of `of` was dropped: its queue leaves its table, and the
    /// topic's last one ends the subscription.
    pub(crate) fn stream_dropped(&self, of: &Of) {
        let unsubscribed = {
            let mut st = lock(&self.state);
            match of {
                Of::Inbox => {
                    st.inbox.retain(Feed::is_open);
                    false
                }
                Of::Event(name) => {
                    prune(&mut st.events, name, |feeds| feeds);
                    false
                }
                Of::Topic(name) => {
                    prune(&mut st.topics, name, |feeds| feeds);
                    st.router.unsubscribe(name)
                }
            }
        };
        if unsubscribed {
            self.tell_interest();
        }
    }

    pub(crate) fn procedure(self: &Arc<Self>, name: &str) -> Result<Requests> {
        check_name(name)?;
        let (sub, rx, _) = feed(self.bounds, None);
        let mut st = lock(&self.state);
        // Calls that came early go first (those past its queue are busy).
        if let Some(early) = st.early.as_mut() {
            for held in early.take(&Waits::Procedure(name.to_string())) {
                if let Held::Request(req) = held {
                    if let Err(e) = sub.push(req) {
                        refuse(e.into_inner(), rpc::FAIL_BUSY);
                    }
                }
            }
        }
        st.procedures
            .entry(name.to_string())
            .or_default()
            .0
            .push(sub);
        drop(st);
        Ok(Requests {
            rx,
            of: (Arc::downgrade(self), name.to_string()),
        })
    }

    /// The node starts: for `young`, what comes for a stream not made yet
    /// is held for it (see [`early`]); then a timer refuses the calls still
    /// held (`NoProcedure`) and drops the rest.
    pub(crate) fn hold_early(self: &Arc<Self>, young: Duration) {
        if young.is_zero() {
            return;
        }
        let until = Instant::now() + young;
        lock(&self.state).early = Some(Early::new(until));
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(until.into()).await;
            if let Some(m) = me.upgrade() {
                m.grown_up();
            }
        });
    }

    /// The node is no longer young: what no stream came for is refused.
    fn grown_up(&self) {
        let Some(early) = lock(&self.state).early.take() else {
            return;
        };
        let held = early.into_held();
        if !held.is_empty() {
            tracing::debug!(count = held.len(), "held early, and no stream came");
        }
        let mut dropped = 0;
        for (_, item) in held {
            match item {
                Held::Request(req) => refuse(req, rpc::FAIL_NO_PROCEDURE),
                Held::Message(_) => dropped += 1,
            }
        }
        self.counters.early_dropped(dropped);
    }

    pub(crate) fn set_filter(&self, f: Option<Arc<RelayFilter>>) {
        *lock(&self.filter) = f;
    }

    /// True if `peer`'s last list of its links names `node`.
    pub(crate) fn says_linked(&self, peer: &NodeId, node: &NodeId) -> bool {
        lock(&self.state).router.says_linked(peer, node)
    }

    /// `peer`'s last list of its links, if it told one: shared, not
    /// copied, so that asking it of many members takes this lock once.
    pub(crate) fn list_of(&self, peer: &NodeId) -> Option<LinkList> {
        lock(&self.state).router.list_of(peer)
    }

    pub(crate) fn topic_members(&self, topic: &str) -> Vec<NodeId> {
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
            signature: None,
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
        self.open
            .to(peer)
            .ok_or_else(|| Error::NotLinked { peer: peer.clone() })
    }

    /// Floods a message of this node (a broadcast, an event, a topic
    /// message) on `links`; returns how many took it. It waits until every
    /// link has room, and only then takes the message's number and queues
    /// it on all of them, under one lock: so on every link this node's
    /// messages go out in the order of their numbers, and a receiver, which
    /// takes a number far below the highest it has seen as already seen,
    /// never drops one it did not get: no message waits on a full link
    /// with its number taken while later ones go out on the others. Senders
    /// racing for the last places may take a queue a frame past its bound
    /// each.
    async fn flood(&self, links: Vec<Connection>, mut e: Envelope) -> usize {
        let weight = e.encoded_len() + SIGNED_LEN;
        let ready =
            futures::future::join_all(links.iter().map(|c| c.sender_queue().room_for(weight)))
                .await;
        let _in_order = lock(&self.flooding);
        let sign = {
            let mut st = lock(&self.state);
            e.seq = st.router.next_seq();
            self.must_sign(&mut st)
        };
        if sign {
            self.sign(&mut e);
        }
        let f = envelope_frame(&e);
        links
            .iter()
            .zip(ready)
            .filter(|(c, room)| {
                room.is_ok() && c.is_up() && c.sender_queue().send_ready(f.clone()).is_ok()
            })
            .count()
    }

    /// True if this node's flooded messages must be signed now: some peer
    /// may relay them (see [`Router::may_be_relayed`]), or the node's links
    /// changed within [`SETTLE`] (the peers' lists may not say so yet).
    fn must_sign(&self, st: &mut State) -> bool {
        st.router.may_be_relayed() || lock(&self.changed).elapsed() < SETTLE
    }

    /// Signs `e` as its origin (see [`Envelope::digest`]).
    pub(crate) fn sign(&self, e: &mut Envelope) {
        let sig = self.identity.sign(&e.digest());
        e.signature = Some(Signature {
            key: self.identity.public_key(),
            sig,
        });
    }

    /// A message of this node to flood, if it fits a frame with its
    /// signature (numbered, and signed if need be, when it goes out: see
    /// `flood`).
    fn flooded(&self, op: Op, name: &str, body: Bytes) -> Result<Envelope> {
        let e = Envelope {
            op,
            flags: FLOOD,
            hops: 0,
            origin: self.me.clone(),
            seq: 0,
            corr: 0,
            name: name.to_string(),
            body,
            signature: None,
        };
        if e.encoded_len() + SIGNED_LEN > self.max_frame_len {
            return Err(Error::FrameTooLarge {
                len: e.encoded_len() + SIGNED_LEN,
                max: self.max_frame_len,
            });
        }
        Ok(e)
    }

    pub(crate) async fn send_to(&self, peer: &NodeId, data: Bytes) -> Result<()> {
        let conn = self.link_to(peer)?;
        let f = self.envelope(Op::Direct, 0, 0, "", data)?;
        conn.sender().send_frame(f).await
    }

    pub(crate) async fn broadcast(&self, data: Bytes) -> Result<usize> {
        let e = self.flooded(Op::Broadcast, "", data)?;
        Ok(self.flood(self.open.up(), e).await)
    }

    pub(crate) async fn emit(&self, event: &str, data: Bytes) -> Result<usize> {
        check_name(event)?;
        let e = self.flooded(Op::Event, event, data)?;
        Ok(self.flood(self.open.up(), e).await)
    }

    pub(crate) async fn emit_to(&self, peer: &NodeId, event: &str, data: Bytes) -> Result<()> {
        check_name(event)?;
        let conn = self.link_to(peer)?;
        let f = self.envelope(Op::Event, 0, 0, event, data)?;
        conn.sender().send_frame(f).await
    }

    /// Delivers to local subscribers, and sends to every linked member.
    /// Returns the number of nodes it went to, this one included.
    pub(crate) async fn publish(&self, topic: &str, data: Bytes) -> Result<usize> {
        check_name(topic)?;
        let e = self.flooded(Op::Publish, topic, data.clone())?;
        let (members, to) = {
            let st = lock(&self.state);
            (st.router.members(topic), st.router.publish_to(topic))
        };
        let mut n = 0;
        if members.contains(&self.me) {
            let msg = Message {
                from: self.me.clone(),
                name: topic.to_string(),
                data,
            };
            deliver(lock(&self.state).topics.get_mut(topic), &msg);
            n += 1;
        }
        let links: Vec<Connection> = self
            .open
            .up()
            .into_iter()
            .filter(|c| to.contains(c.peer_id()))
            .collect();
        Ok(n + self.flood(links, e).await)
    }
}

impl Messaging {
    // ----- the links' side -------------------------------------------------

    /// A link to a peer of incarnation `incarnation` opened: forget what an
    /// older incarnation of the peer said, tell the peer every node's topics
    /// we know, ours included, and everyone which nodes we are linked to.
    pub(crate) fn opened(self: &Arc<Self>, conn: &Connection, incarnation: u64) {
        *lock(&self.changed) = Instant::now();
        self.tell_new_link(conn, incarnation);
    }

    /// A link closed: the calls made on it fail; if it was the pair's open
    /// link (`gone`), forget the peer's topics and links.
    pub(crate) fn closed(self: &Arc<Self>, conn: &Connection, reason: &CloseReason, gone: bool) {
        let peer = conn.peer_id();
        *lock(&self.changed) = Instant::now();
        let mut st = lock(&self.state);
        if gone {
            self.tell_neighbors();
            st.router.forget(peer);
        }
        let link = conn.link().id;
        fail_calls(&mut st, |c| c.link == link, reason);
    }

    /// Tells every linked peer this node's record, signed: its first as it
    /// starts to listen (no link is up yet), a change of its metadata, or
    /// its goodbye. A record is a state: beside a full send queue only
    /// the latest waits (see [`crate::link::aside`]), and it goes out with
    /// the next batch, ahead of the close that follows a goodbye.
    pub(crate) fn tell_record(&self, record: &Record) {
        let mut e = record.envelope(self.me.clone());
        // Signed: peers pass it on where the mesh is not full, and to the
        // peers they link later.
        self.sign(&mut e);
        let f = envelope_frame(&e);
        // Kept before the open links are listed: a link that opens now is
        // either listed below or finds the record in `tell_new_link`.
        *lock(&self.record) = Some(f.clone());
        let key = record_key(&self.me);
        for c in self.open.up() {
            c.sender_queue().send_state(key.clone(), f.clone());
        }
    }

    /// The node closed: every call still waiting fails now.
    pub(crate) fn shutdown(&self) {
        fail_calls(&mut lock(&self.state), |_| true, &CloseReason::Shutdown);
    }
}

impl Messaging {
    /// Hands `e` to the node's error stream.
    fn report(&self, e: Error) {
        if let Some(sink) = self.errors.get() {
            sink(e);
        }
    }

    /// Reports something `peer` sent in `origin`'s name that was dropped.
    fn refused(&self, peer: &NodeId, origin: &NodeId, r: Refusal) {
        let (peer, origin) = (peer.clone(), origin.clone());
        self.counters.refused_message(match r {
            Refusal::OverBudget { .. } => Refused::OverBudget,
            Refusal::Ahead { .. } => Refused::Ahead,
            Refusal::Unknown => Refused::Unknown,
        });
        let e = match r {
            Refusal::OverBudget {
                what,
                bytes,
                budget,
            } => Error::OverBudget {
                peer,
                origin,
                what,
                bytes,
                budget,
            },
            r @ (Refusal::Ahead { .. } | Refusal::Unknown) => Error::Refused {
                peer,
                origin,
                reason: r.to_string(),
            },
        };
        self.report(e);
    }
}

impl Messaging {
    /// True if `e`, from `peer`, is signed by its origin or needs no
    /// signature (it comes from its origin itself, unsigned); else reports
    /// it refused.
    pub(crate) fn signed_by_origin(&self, peer: &NodeId, e: &Envelope) -> bool {
        let reason = match &e.signature {
            None if &e.origin == peer => return true,
            None => "relayed without its origin's signature",
            Some(s) if !e.origin.verify(&s.key, &e.digest(), &s.sig) => {
                "its signature is not its origin's"
            }
            Some(_) => return true,
        };
        self.counters.refused_message(Refused::Signature);
        self.report(Error::Refused {
            peer: peer.clone(),
            origin: e.origin.clone(),
            reason: reason.to_string(),
        });
        false
    }
}

impl Inbound for Messaging {
    /// A `MSG` frame arrived from `peer` on a link whose send queue is
    /// `reply`. A malformed one is an error for the caller to report.
    fn message(&self, peer: &NodeId, payload: Bytes, reply: &OutTx) -> Result<(), String> {
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
        // A message in another node's name counts only with that node's
        // signature, checked before it is delivered, passed on, or
        // recorded as seen: a peer can neither speak for another node nor
        // push its numbers up. (A member record is checked only if it is
        // news: see `member`.)
        if &e.origin != peer && e.op != Op::Member && !self.signed_by_origin(peer, &e) {
            return Ok(());
        }
        // Copies of one origin's flooded messages arrive on several links,
        // and the first copy of each is relayed. Finding it fresh happens
        // under the state lock, queueing it happens after the user's filter,
        // outside that lock; holding this lock across both relays them in
        // the order they were found fresh, so the origin's order survives.
        let _order = e.flooded().then(|| lock(&self.relay_order));
        let mut st = lock(&self.state);
        // Interest and member records are deduplicated by their versions,
        // the rest by number.
        let versioned = matches!(e.op, Op::Interest | Op::Member);
        if e.flooded() && !versioned {
            let in_view = |n: &NodeId| self.gossip.in_view(n);
            match st
                .router
                .fresh(peer, &e.origin, e.seq, unix_nanos(), mono_nanos(), in_view)
            {
                News::Fresh => {}
                News::Stale => {
                    self.counters.deduplicated();
                    return Ok(());
                }
                News::Refused(r) => {
                    drop(st);
                    self.refused(peer, &e.origin, r);
                    return Ok(());
                }
            }
        }
        match e.op {
            Op::Direct | Op::Broadcast | Op::Event | Op::Publish => {
                let relay = if e.flooded() {
                    let topic = (e.op == Op::Publish).then_some(e.name.as_str());
                    let to = st.router.relay_to(peer, &e.origin, topic);
                    relay_frame(&e, &to, &self.open)
                } else {
                    None
                };
                let m = Message {
                    from: e.origin.clone(),
                    name: e.name.clone(),
                    data: e.body.clone(),
                };
                let (subs, waits) = match e.op {
                    Op::Direct | Op::Broadcast => (Some(&mut st.inbox), Some(Waits::Inbox)),
                    Op::Event => (
                        st.events.get_mut(&e.name),
                        Some(Waits::Event(e.name.clone())),
                    ),
                    _ => (st.topics.get_mut(&e.name), None),
                };
                let taken = subs.as_ref().is_some_and(|s| s.iter().any(Feed::is_open));
                deliver(subs, &m);
                if let (false, Some(waits), Some(early)) = (taken, waits, st.early.as_mut()) {
                    // No stream for it yet: held while the node is young;
                    // past what is held, dropped and counted.
                    let now = Instant::now();
                    let young = early.young(now);
                    if early.hold(waits, Held::Message(m.clone()), now).is_err() && young {
                        self.counters.early_dropped(1);
                    }
                }
                if let Some(r) = relay {
                    // The user's filter runs without the messaging lock: it
                    // may call back into the service.
                    drop(st);
                    self.relay(r, &m);
                }
            }
            Op::Interest => {
                if let Err(r) = self.interest(&mut st, peer, &e) {
                    drop(st);
                    self.refused(peer, &e.origin, r);
                }
            }
            Op::Request => self.requested(&mut st, e, reply),
            Op::Reply | Op::Fail => return rpc::answered(&mut st, peer, e),
            Op::Neighbors => {
                let hints = lock(&self.hint_sink).is_some();
                match relay::neighbors(&mut st, &self.me, peer, &e, hints)
                    .map_err(|e| e.to_string())?
                {
                    Ok((list, members)) => {
                        drop(st);
                        self.gossip.neighbors(peer, &list);
                        self.hinted(peer, members);
                    }
                    Err(r) => {
                        drop(st);
                        self.refused(peer, &e.origin, r);
                    }
                }
            }
            Op::Member => {
                // The view takes its own lock: not under this one.
                drop(st);
                self.member(peer, e)?;
            }
        }
        Ok(())
    }
}

/// The messaging layer on its own, without sockets: envelopes go in through
/// [`Inbound`] as a link would hand them over, and what it sends comes out of
/// the links' send queues.
#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use bytes::BytesMut;
    use futures::{FutureExt, StreamExt};
    use tokio_util::codec::Decoder;

    use super::*;
    use crate::id::id;
    use crate::link::connection::tests::handles;
    use crate::link::outbox::OutRx;
    use crate::link::queue;
    use crate::wire::frame::FrameCodec;

    /// The member records a node's messaging handed over, and whether each
    /// came with a signed copy to pass on.
    #[derive(Default)]
    struct Heard(
        Mutex<Vec<(NodeId, Record, Option<MetaError>)>>,
        Mutex<Vec<bool>>,
    );

    impl Gossip for Heard {
        fn record(
            &self,
            _: &NodeId,
            origin: &NodeId,
            r: Record,
            bad: Option<MetaError>,
            signed: Option<Frame>,
        ) -> bool {
            lock(&self.0).push((origin.clone(), r, bad));
            lock(&self.1).push(signed.is_some());
            true
        }
    }

    /// Node "01"'s messaging, with streams of 4 messages and 1 MiB.
    fn node() -> Arc<Messaging> {
        node_hearing(Arc::default())
    }

    fn node_hearing(heard: Arc<Heard>) -> Arc<Messaging> {
        Messaging::new(
            Identity::generate(),
            1,
            Arc::default(),
            heard,
            Bounds {
                items: 4,
                bytes: 1 << 20,
            },
            1 << 16,
            Arc::default(),
        )
    }

    #[test]
    fn member_records_go_to_the_view_and_a_broken_one_ends_the_link() {
        let heard = Arc::new(Heard::default());
        let m = node_hearing(heard.clone());
        let (tx, _rx) = reply_queue();
        let record = Record {
            incarnation: 5,
            port: 4000,
            version: 9,
            leaving: false,
            meta: Some(crate::meta::Meta::from_pairs([("role", "web")]).unwrap()),
        };
        let body = record.encode();
        for _ in 0..2 {
            // Versioned, not numbered: the same record twice is the view's
            // to judge, not dropped as a duplicate here.
            let e = envelope(Op::Member, "0a", FLOOD, 0, 9, &body);
            m.message(&id("0a"), e, &tx).unwrap();
        }
        let bad_meta = envelope(
            Op::Member,
            "0a",
            FLOOD,
            0,
            10,
            b"\0\0\0\0\0\0\0\x05\x0f\xa0\0\x03Bad\x01x",
        );
        m.message(&id("0a"), bad_meta, &tx).unwrap();
        {
            let heard = lock(&heard.0);
            assert_eq!(heard.len(), 3);
            assert_eq!(heard[0], (id("0a"), record, None));
            assert!(matches!(heard[2].2, Some(MetaError::KeyChars { .. })));
        }
        let cut = envelope(Op::Member, "0a", FLOOD, 0, 11, b"\0\0");
        let err = m.message(&id("0a"), cut, &tx).unwrap_err();
        assert!(err.contains("truncated member record"), "{err}");
    }

    fn envelope(
        op: Op,
        origin: &str,
        flags: u8,
        hops: u8,
        corr: u64,
        body: impl AsRef<[u8]>,
    ) -> Bytes {
        Envelope {
            op,
            flags,
            hops,
            origin: id(origin),
            seq: 1,
            corr,
            name: "p".into(),
            body: Bytes::copy_from_slice(body.as_ref()),
            signature: None,
        }
        .encode()
    }

    /// A link's send queue, standing in for the one an envelope came on.
    fn reply_queue() -> (OutTx, OutRx) {
        queue::channel(16, usize::MAX)
    }

    /// The envelopes queued on a send queue so far.
    fn sent(rx: &mut OutRx) -> Vec<Envelope> {
        let mut segs = VecDeque::new();
        rx.take_all(&mut segs).now_or_never();
        let mut buf: BytesMut = segs.iter().flat_map(|s| s.iter().copied()).collect();
        let mut codec = FrameCodec { max: 1 << 20 };
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            assert_eq!(f.kind, frame::MSG);
            out.push(Envelope::decode(f.payload).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_direct_message_reaches_every_stream_and_a_full_one_counts_its_drops() {
        let m = node();
        let (mut a, mut b) = (m.messages(), m.messages());
        let (tx, _rx) = reply_queue();
        for _ in 0..5 {
            let e = envelope(Op::Direct, "0a", 0, 0, 0, b"hi");
            m.message(&id("0a"), e, &tx).unwrap();
        }
        for s in [&mut a, &mut b] {
            for _ in 0..4 {
                let msg = s.next().now_or_never().unwrap().unwrap();
                assert_eq!((msg.from(), &msg.data()[..]), (&id("0a"), &b"hi"[..]));
            }
            assert!(s.next().now_or_never().is_none());
            assert_eq!(s.dropped(), 1);
        }
    }

    /// A node's messaging, with streams of 1024 items and 256 KiB.
    fn node_of_small_streams() -> Arc<Messaging> {
        Messaging::new(
            Identity::generate(),
            1,
            Arc::default(),
            Arc::new(Heard::default()),
            Bounds {
                items: 1024,
                bytes: 256 << 10,
            },
            2 << 20,
            Arc::default(),
        )
    }

    /// An envelope from "0a" carrying `len` bytes.
    fn envelope_of_len(op: Op, corr: u64, len: usize) -> Bytes {
        Envelope {
            op,
            flags: 0,
            hops: 0,
            origin: id("0a"),
            seq: 1,
            corr,
            name: "p".into(),
            body: Bytes::from(vec![7u8; len]),
            signature: None,
        }
        .encode()
    }

    /// Messages reach a stream without passing a link's receive queue, so
    /// an unread stream holds only as much data as its own bound lets it:
    /// past it, messages are dropped and counted, however few they are; a
    /// message larger than the bound passes into an empty queue, alone.
    #[test]
    fn an_unread_stream_holds_at_most_its_bytes() {
        let m = node_of_small_streams();
        let mut inbox = m.messages();
        let (tx, _rx) = reply_queue();
        for _ in 0..64 {
            let e = envelope_of_len(Op::Direct, 0, 64 << 10);
            m.message(&id("0a"), e, &tx).unwrap();
        }
        let mut held = 0;
        while let Some(Some(msg)) = inbox.next().now_or_never() {
            held += msg.data().len();
        }
        assert_eq!((held, inbox.dropped()), (256 << 10, 60));

        // Read, it has room again: one larger than the bound passes alone.
        for len in [1 << 20, 1] {
            let e = envelope_of_len(Op::Direct, 0, len);
            m.message(&id("0a"), e, &tx).unwrap();
        }
        let alone = inbox.next().now_or_never().unwrap().unwrap();
        assert_eq!(alone.data().len(), 1 << 20);
        assert!(inbox.next().now_or_never().is_none());
        assert_eq!(inbox.dropped(), 61);
        let e = envelope_of_len(Op::Direct, 0, 1);
        m.message(&id("0a"), e, &tx).unwrap();
        assert_eq!(
            inbox.next().now_or_never().unwrap().unwrap().data().len(),
            1
        );
    }

    /// A procedure's queue is bounded in bytes as a stream's is: a call
    /// whose data finds no room is answered `Busy` at once.
    #[tokio::test]
    async fn a_call_past_its_procedures_bytes_is_busy() {
        let m = node_of_small_streams();
        let mut calls = m.procedure("p").unwrap();
        let (tx, mut rx) = reply_queue();
        for corr in 1..=4 {
            let e = envelope_of_len(Op::Request, corr, 100 << 10);
            m.message(&id("0a"), e, &tx).unwrap();
        }
        let answers = sent(&mut rx);
        let busy: Vec<_> = answers.iter().map(|f| (f.op, f.corr, f.body[0])).collect();
        assert_eq!(
            busy,
            [(Op::Fail, 3, rpc::FAIL_BUSY), (Op::Fail, 4, rpc::FAIL_BUSY)]
        );
        // Taken, its bytes make room for the next call.
        let first = calls.next().await.unwrap();
        assert_eq!(first.data().len(), 100 << 10);
        let e = envelope_of_len(Op::Request, 5, 100 << 10);
        m.message(&id("0a"), e, &tx).unwrap();
        let mut queued = 0;
        while let Some(Some(_)) = calls.next().now_or_never() {
            queued += 1;
        }
        assert_eq!(queued, 2);
        drop(first);
    }

    #[test]
    fn an_envelope_that_lies_or_breaks_the_rules_is_refused() {
        let m = node();
        let (tx, _rx) = reply_queue();
        let claims_another_origin = envelope(Op::Direct, "0b", 0, 0, 0, b"");
        let err = m
            .message(&id("0a"), claims_another_origin, &tx)
            .unwrap_err();
        assert!(err.contains("claims to come from"), "{err}");
        let relayed_too_often = envelope(Op::Broadcast, "0b", FLOOD, MAX_HOPS + 1, 0, b"");
        let err = m.message(&id("0a"), relayed_too_often, &tx).unwrap_err();
        assert!(err.contains("relayed"), "{err}");
        assert!(m
            .message(&id("0a"), Bytes::from_static(b"\x63"), &tx)
            .is_err());
    }

    /// Streams of one-off names, dropped, leave nothing in the tables; a
    /// stream still held keeps its entry.
    #[test]
    fn dropped_streams_leave_their_tables() {
        let m = node();
        let _kept = (m.receiver("kept").unwrap(), m.procedure("kept").unwrap());
        for i in 0..100 {
            drop(m.receiver(&format!("reply-{i}")).unwrap());
            drop(m.procedure(&format!("call-{i}")).unwrap());
            drop(m.subscribe(&format!("topic-{i}")).unwrap());
            drop(m.messages());
        }
        let st = lock(&m.state);
        assert_eq!(st.events.keys().collect::<Vec<_>>(), ["kept"]);
        assert_eq!(st.procedures.keys().collect::<Vec<_>>(), ["kept"]);
        assert!(st.topics.is_empty() && st.inbox.is_empty());
        assert!(st.router.my_interest().1.is_empty());
    }

    #[test]
    fn a_request_for_no_procedure_is_refused_at_once() {
        let m = node();
        let (tx, mut rx) = reply_queue();
        let req = envelope(Op::Request, "0a", 0, 0, 7, b"x");
        m.message(&id("0a"), req, &tx).unwrap();
        let answers = sent(&mut rx);
        assert_eq!(answers.len(), 1);
        let fail = &answers[0];
        assert_eq!(
            (fail.op, fail.corr, fail.origin.clone()),
            (Op::Fail, 7, m.me.clone())
        );
        // The first body byte says why.
        assert_eq!(fail.body[0], rpc::FAIL_NO_PROCEDURE);
    }

    /// While the node is young, a call for a procedure no stream serves
    /// and an event no receiver takes wait for the first stream made for
    /// them; what no stream came for by the end is refused (`NoProcedure`)
    /// or dropped.
    #[tokio::test]
    async fn what_comes_before_its_stream_waits_for_it_while_the_node_is_young() {
        let m = node();
        m.hold_early(Duration::from_secs(3600));
        let (tx, mut rx) = reply_queue();
        m.message(&id("0a"), envelope(Op::Request, "0a", 0, 0, 7, b"x"), &tx)
            .unwrap();
        m.message(&id("0a"), envelope(Op::Request, "0a", 0, 0, 8, b"y"), &tx)
            .unwrap();
        m.message(&id("0a"), envelope(Op::Event, "0a", 0, 0, 0, b"e"), &tx)
            .unwrap();
        m.message(&id("0a"), envelope(Op::Direct, "0a", 0, 0, 0, b"d"), &tx)
            .unwrap();
        assert!(sent(&mut rx).is_empty(), "refused at once");

        let mut calls = m.procedure("p").unwrap();
        let first = calls.next().now_or_never().unwrap().unwrap();
        assert_eq!(&first.data()[..], b"x");
        first.end("X").await.unwrap();
        let answers = sent(&mut rx);
        assert_eq!((answers[0].op, answers[0].corr), (Op::Reply, 7));
        let mut events = m.receiver("p").unwrap();
        let got = events.next().now_or_never().unwrap().unwrap();
        assert_eq!((got.name(), &got.data()[..]), ("p", &b"e"[..]));
        // Taken by the first stream only.
        assert!(m.receiver("p").unwrap().next().now_or_never().is_none());
        // A stream of another kind does not take them.
        let mut inbox = m.messages();
        assert_eq!(
            &inbox.next().now_or_never().unwrap().unwrap().data()[..],
            b"d"
        );

        // The second call is queued for the procedure; held items of a
        // name with no stream are refused when the node grows up.
        m.message(&id("0a"), envelope(Op::Request, "0a", 0, 0, 9, b"z"), &tx)
            .unwrap();
        let mut q = Envelope::decode(envelope(Op::Request, "0a", 0, 0, 10, b"q")).unwrap();
        q.name = "nobody".into();
        m.message(&id("0a"), q.encode(), &tx).unwrap();
        assert!(sent(&mut rx).is_empty());
        m.grown_up();
        let answers = sent(&mut rx);
        assert_eq!(answers.len(), 1);
        assert_eq!(
            (answers[0].op, answers[0].corr, answers[0].body[0]),
            (Op::Fail, 10, rpc::FAIL_NO_PROCEDURE)
        );
        // Grown up: refused at once.
        let mut late = Envelope::decode(envelope(Op::Request, "0a", 0, 0, 11, b"")).unwrap();
        late.name = "nobody".into();
        m.message(&id("0a"), late.encode(), &tx).unwrap();
        assert_eq!(sent(&mut rx)[0].corr, 11);
        drop(calls);
    }

    /// While the node is young, messages past what is held, and those
    /// still held when it grows up, are counted as dropped; those a stream
    /// took, and calls (answered `NoProcedure`), are not.
    #[tokio::test]
    async fn messages_no_stream_got_while_the_node_was_young_are_counted() {
        use crate::limits::MAX_HELD;
        let m = node();
        m.hold_early(Duration::from_secs(3600));
        let (tx, _rx) = reply_queue();
        let dropped = || m.counters.snapshot(vec![]).early_dropped;
        for _ in 0..MAX_HELD + 3 {
            m.message(&id("0a"), envelope(Op::Direct, "0a", 0, 0, 0, b"d"), &tx)
                .unwrap();
        }
        assert_eq!(dropped(), 3, "past what is held");
        let inbox = m.messages();
        for _ in 0..2 {
            m.message(&id("0a"), envelope(Op::Event, "0a", 0, 0, 0, b"e"), &tx)
                .unwrap();
        }
        m.message(&id("0a"), envelope(Op::Request, "0a", 0, 0, 7, b"x"), &tx)
            .unwrap();
        m.grown_up();
        assert_eq!(dropped(), 5, "the two events no receiver took");
        drop(inbox);
    }

    #[tokio::test]
    async fn a_request_dropped_unanswered_says_so() {
        let m = node();
        let mut calls = m.procedure("p").unwrap();
        let (tx, mut rx) = reply_queue();
        m.message(&id("0a"), envelope(Op::Request, "0a", 0, 0, 3, b"x"), &tx)
            .unwrap();
        let req = calls.next().await.unwrap();
        assert_eq!((req.from(), req.procedure()), (&id("0a"), "p"));
        drop(req);
        let answers = sent(&mut rx);
        assert_eq!(
            (answers[0].op, answers[0].corr, answers[0].body[0]),
            (Op::Fail, 3, rpc::FAIL_UNANSWERED)
        );
    }

    /// A handler's answer waits for room on a full link, and the handler
    /// gives up on it (drops the future): the caller is told the call went
    /// unanswered, by an answer that waits beside the full queue.
    #[tokio::test]
    async fn an_answer_given_up_while_waiting_for_room_says_unanswered() {
        let m = node();
        let mut calls = m.procedure("p").unwrap();
        let (tx, mut rx) = queue::channel(1, usize::MAX);
        m.message(&id("0a"), envelope(Op::Request, "0a", 0, 0, 5, b"x"), &tx)
            .unwrap();
        let req = calls.next().await.unwrap();
        tx.try_send(Frame::data(Bytes::from_static(b"fills the queue")))
            .unwrap();
        let mut answer = Box::pin(req.end("the answer"));
        assert!(futures::poll!(&mut answer).is_pending(), "no room");
        drop(answer);
        let mut segs = VecDeque::new();
        rx.take_all(&mut segs).await;
        let mut buf: BytesMut = segs.iter().flat_map(|s| s.iter().copied()).collect();
        let mut codec = FrameCodec { max: 1 << 20 };
        codec
            .decode(&mut buf)
            .unwrap()
            .expect("the frame queued first");
        let f = codec.decode(&mut buf).unwrap().expect("an answer");
        let fail = Envelope::decode(f.payload).unwrap();
        assert_eq!(
            (fail.op, fail.corr, fail.body[0]),
            (Op::Fail, 5, rpc::FAIL_UNANSWERED)
        );
    }

    /// A peer reads nothing and its link's send queue is full while this
    /// node subscribes 100 times: one interest frame waits, the latest, and
    /// no task.
    #[tokio::test]
    async fn a_full_link_keeps_one_latest_interest_and_no_task() {
        let m = node();
        let (conn, _in_tx, mut out_rx) = handles();
        assert!(m.open.opened(&conn));
        m.opened(&conn, 0);
        while conn
            .sender_queue()
            .try_send(Frame::data(Bytes::new()))
            .is_ok()
        {}
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        let subs: Vec<Messages> = (0..100)
            .map(|i| m.subscribe(&format!("t{i}")).unwrap())
            .collect();
        let more = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            - tasks;
        assert_eq!(more, 0, "tasks spawned");
        let mut segs = VecDeque::new();
        out_rx.take_all(&mut segs).await;
        let mut buf: BytesMut = segs.iter().flat_map(|s| s.iter().copied()).collect();
        let mut interest = Vec::new();
        let mut codec = FrameCodec { max: 1 << 20 };
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            if f.kind == frame::MSG {
                interest.push(Envelope::decode(f.payload).unwrap());
            }
        }
        // (The neighbors announcement may have come too.)
        interest.retain(|e| e.op == Op::Interest);
        assert_eq!(interest.len(), 1);
        assert_eq!(envelope_lines(&interest[0].body), 100);
        drop(subs);
    }

    fn envelope_lines(body: &Bytes) -> usize {
        crate::wire::envelope::lines(body).count()
    }

    #[tokio::test]
    async fn a_call_ends_with_its_answer_from_the_node_called_only() {
        let m = node();
        let (conn, _in_tx, mut out_rx) = handles();
        assert!(m.open.opened(&conn));
        let call = tokio::spawn({
            let m = m.clone();
            async move {
                m.request(&id("0a"), "p", "x".into(), Duration::from_secs(30))
                    .await
            }
        });
        let mut segs = VecDeque::new();
        out_rx.take_all(&mut segs).await;
        let mut buf: BytesMut = segs.iter().flat_map(|s| s.iter().copied()).collect();
        let f = FrameCodec { max: 1 << 20 }
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        let request = Envelope::decode(f.payload).unwrap();
        assert_eq!((request.op, &request.name[..]), (Op::Request, "p"));

        let (tx, _rx) = reply_queue();
        let from_another = envelope(Op::Reply, "0b", 0, 0, request.corr, b"forged");
        let err = m.message(&id("0b"), from_another, &tx).unwrap_err();
        assert!(err.contains("another node"), "{err}");
        let answer = envelope(Op::Reply, "0a", 0, 0, request.corr, b"X");
        m.message(&id("0a"), answer, &tx).unwrap();
        assert_eq!(&call.await.unwrap().unwrap()[..], b"X");
    }

    /// Signs `e` with `key`, as its origin would.
    fn signed(key: &Identity, mut e: Envelope) -> Envelope {
        e.signature = Some(Signature {
            key: key.public_key(),
            sig: key.sign(&e.digest()),
        });
        e
    }

    /// Broadcasts in B's name passed on by another peer: refused and
    /// reported unless B signed them, and then still refused if numbered
    /// far ahead of the clock; never delivered. B's own, over its own link,
    /// need no signature, and one B signed is delivered from anyone.
    #[tokio::test]
    async fn messages_in_another_nodes_name_need_its_signature() {
        let m = node();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        m.report_errors_to(Arc::new(move |e| lock(&sink).push(e)));
        let mut inbox = m.messages();
        let (tx, _rx) = reply_queue();
        let (b, c) = (Identity::generate(), Identity::generate());
        let (a, b_id) = (id("0a"), b.id().clone());
        let broadcast = |seq: u64, body: &'static [u8]| Envelope {
            op: Op::Broadcast,
            flags: FLOOD,
            hops: 1,
            origin: b_id.clone(),
            seq,
            corr: 0,
            name: String::new(),
            body: Bytes::from_static(body),
            signature: None,
        };
        let now = unix_nanos();
        let tampered = Envelope {
            body: Bytes::from_static(b"changed"),
            ..signed(&b, broadcast(now, b"signed"))
        };
        let refused = [
            (broadcast(now, b"unsigned"), "without"),
            (signed(&c, broadcast(now, b"by C")), "not its origin's"),
            (tampered, "not its origin's"),
            (signed(&b, broadcast(u64::MAX - 1, b"ahead")), "ahead"),
        ];
        for (e, why) in refused {
            m.message(&a, e.encode(), &tx).unwrap();
            assert!(inbox.next().now_or_never().is_none(), "delivered: {why}");
            let errors = std::mem::take(&mut *lock(&errors));
            assert!(
                matches!(
                    &errors[..],
                    [Error::Refused { peer, origin, reason }]
                        if peer == &a && origin == &b_id && reason.contains(why)
                ),
                "{why}: {errors:?}"
            );
        }
        for (from, e) in [
            (&b_id, broadcast(now + 1, b"direct")),
            (&a, signed(&b, broadcast(now + 2, b"relayed"))),
        ] {
            m.message(from, e.encode(), &tx).unwrap();
            let got = inbox.next().now_or_never().unwrap().unwrap();
            assert_eq!(&got.data()[..], &e.body[..]);
        }
        assert!(lock(&errors).is_empty());
    }

    /// The view of the test below: it knows one node.
    struct Knows(NodeId);

    impl Gossip for Knows {
        fn record(
            &self,
            _: &NodeId,
            _: &NodeId,
            _: Record,
            _: Option<MetaError>,
            _: Option<Frame>,
        ) -> bool {
            false
        }

        fn in_view(&self, node: &NodeId) -> bool {
            node == &self.0
        }
    }

    /// A linked peer keeps a broadcast B signed, makes up a key per
    /// origin for as many origins as the node remembers numbers of, and
    /// sends a signed broadcast of each, then B's again: B is a member the
    /// view knows, so its numbers stay, and the copy is a duplicate, not
    /// delivered. The made-up origins past the table's bound are refused,
    /// counted and reported.
    #[test]
    fn a_members_message_replayed_after_many_made_up_origins_is_a_duplicate() {
        use router::seen::MAX_ORIGINS;
        let b = Identity::generate();
        let m = Messaging::new(
            Identity::generate(),
            1,
            Arc::default(),
            Arc::new(Knows(b.id().clone())),
            Bounds {
                items: MAX_ORIGINS * 2,
                bytes: usize::MAX,
            },
            1 << 16,
            Arc::default(),
        );
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        m.report_errors_to(Arc::new(move |e| lock(&sink).push(e)));
        let mut inbox = m.messages();
        let (tx, _rx) = reply_queue();
        let peer = id("0a");
        let now = unix_nanos();
        let broadcast = |key: &Identity, body: &'static [u8]| {
            let e = Envelope {
                op: Op::Broadcast,
                flags: FLOOD,
                hops: 1,
                origin: key.id().clone(),
                seq: now,
                corr: 0,
                name: String::new(),
                body: Bytes::from_static(body),
                signature: None,
            };
            signed(key, e).encode()
        };
        let kept = broadcast(&b, b"B's");
        m.message(&peer, kept.clone(), &tx).unwrap();
        let extra = 10;
        for _ in 0..MAX_ORIGINS + extra {
            m.message(&peer, broadcast(&Identity::generate(), b"made up"), &tx)
                .unwrap();
        }
        m.message(&peer, kept, &tx).unwrap();
        let mut got = Vec::new();
        while let Some(Some(msg)) = inbox.next().now_or_never() {
            got.push(msg.data().clone());
        }
        assert_eq!(got.iter().filter(|d| &d[..] == b"B's").count(), 1);
        assert_eq!(got.len(), MAX_ORIGINS, "B's and the made-up ones with room");
        let refused = MAX_ORIGINS + extra - (MAX_ORIGINS - 1);
        let stats = m.counters.snapshot(vec![]);
        assert_eq!(stats.refused_messages.unknown, refused as u64);
        assert_eq!(stats.deduplicated, 1);
        let errors = lock(&errors);
        assert_eq!(errors.len(), refused);
        assert!(
            matches!(&errors[0], Error::Refused { reason, .. } if reason.contains("not a member")),
            "{:?}",
            errors[0]
        );
    }

    /// The next `Neighbors` envelope queued on `rx`, within 5 s.
    async fn next_neighbors(rx: &mut OutRx) -> Option<Envelope> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut buf = BytesMut::new();
        let mut codec = FrameCodec { max: 1 << 20 };
        loop {
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                let e = Envelope::decode(f.payload).unwrap();
                if e.op == Op::Neighbors {
                    return Some(e);
                }
            }
            let mut segs = VecDeque::new();
            tokio::time::timeout_at(deadline, rx.take_all(&mut segs))
                .await
                .ok()?;
            buf.extend(segs.iter().flat_map(|s| s.iter().copied()));
        }
    }

    /// Every link up is told this node's list of links: one that was not
    /// up when the list was made (it is told once it is), and one that
    /// replaces another to the same peer (the list did not change).
    #[tokio::test]
    async fn every_link_up_is_told_the_list_of_links() {
        let m = node();
        let (first, _in1, mut out1) = handles();
        // Known to messaging, not yet listed as up: the list is made with
        // no link to tell.
        m.opened(&first, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while m.neighbors_due.load(std::sync::atomic::Ordering::Acquire) {
            assert!(tokio::time::Instant::now() < deadline, "never made");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(m.open.opened(&first));
        m.tell_neighbors();
        let told = next_neighbors(&mut out1).await.expect("told once up");
        assert_eq!(envelope_lines(&told.body), 1);
        // With where the peer listens: its link's address, its hello's port.
        let entries: Vec<_> = crate::wire::links::decode(&told.body)
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(entries[0].at, Some("127.0.0.1:1".parse().unwrap()));
        // A link replacing it, to the same peer: the same list, told again.
        let (second, _in2, mut out2) = handles();
        m.open.finished(first.link(), CloseReason::Replaced);
        assert!(m.open.opened(&second));
        m.opened(&second, 0);
        let told = next_neighbors(&mut out2)
            .await
            .expect("told on the new link");
        assert_eq!(envelope_lines(&told.body), 1);
    }

    /// A member record in another node's name counts only signed by its
    /// origin, and the origin's own copy, if signed, must be signed by it;
    /// refused, each is reported and never reaches the view. One its origin
    /// signed reaches it with the copy to pass on.
    #[test]
    fn member_records_count_only_signed_by_their_origin() {
        let heard = Arc::new(Heard::default());
        let m = node_hearing(heard.clone());
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        m.report_errors_to(Arc::new(move |e| lock(&sink).push(e)));
        let (tx, _rx) = reply_queue();
        let (b, c) = (Identity::generate(), Identity::generate());
        let (a, b_id) = (id("0a"), b.id().clone());
        let record = Record {
            incarnation: 5,
            port: 4000,
            version: 9,
            leaving: false,
            meta: Some(crate::meta::Meta::default()),
        };
        let e = |hops| Envelope {
            op: Op::Member,
            flags: FLOOD,
            hops,
            origin: b_id.clone(),
            seq: 0,
            corr: 9,
            name: String::new(),
            body: record.encode(),
            signature: None,
        };
        let refused = [
            (&a, e(1), "without"),
            (&a, signed(&c, e(1)), "not its origin's"),
            (&b_id, signed(&c, e(0)), "not its origin's"),
        ];
        for (from, e, why) in refused {
            m.message(from, e.encode(), &tx).unwrap();
            let errors = std::mem::take(&mut *lock(&errors));
            assert!(
                matches!(
                    &errors[..],
                    [Error::Refused { peer, origin, reason }]
                        if peer == from && origin == &b_id && reason.contains(why)
                ),
                "{why}: {errors:?}"
            );
        }
        assert!(lock(&heard.0).is_empty());
        m.message(&a, signed(&b, e(1)).encode(), &tx).unwrap();
        m.message(&b_id, e(0).encode(), &tx).unwrap();
        assert_eq!(*lock(&heard.1), [true, false]);
        assert!(lock(&errors).is_empty());
    }

    /// A peer that sends new versions of its record faster than they are
    /// passed on makes this node owe one record of it, the latest, not one
    /// for each version.
    #[tokio::test]
    async fn records_owed_of_one_origin_are_only_its_latest() {
        let m = node();
        let (tx, _rx) = reply_queue();
        let b = Identity::generate();
        let b_id = b.id().clone();
        for version in 1..=100 {
            let record = Record {
                incarnation: 5,
                port: 4000,
                version,
                leaving: false,
                meta: Some(crate::meta::Meta::default()),
            };
            let e = Envelope {
                op: Op::Member,
                flags: FLOOD,
                hops: 0,
                origin: b_id.clone(),
                seq: 0,
                corr: version,
                name: String::new(),
                body: record.encode(),
                signature: None,
            };
            m.message(&b_id, signed(&b, e).encode(), &tx).unwrap();
        }
        let owed = lock(&m.records_owed);
        let relays = owed.relays();
        assert_eq!(relays.len(), 1);
        let (origin, frame) = relays[0];
        let e = Envelope::decode(frame.payload.clone()).unwrap();
        let (latest, _) = Record::decode(&e.body, e.corr).unwrap();
        assert_eq!((origin, latest.version), (&b_id, 100));
    }

    /// A peer's list of links names members with where they listen: the
    /// router keeps the list, and the members with an address that this
    /// node is not linked to go to the mesh as hints, with the address of
    /// the teller's link; of its next list, only the members the last did
    /// not name. A malformed list ends the link, naming the line.
    #[test]
    fn a_list_of_links_hints_the_members_this_node_is_not_linked_to() {
        let m = node();
        let hints = Arc::new(Mutex::new(Vec::new()));
        let sink = hints.clone();
        m.hints_to(Arc::new(move |h| lock(&sink).push(h)));
        let (conn, _in, _out) = handles();
        assert!(m.open.opened(&conn));
        m.opened(&conn, 0);
        lock(&m.state).router.link_opened(id("0c"), 0);
        let (tx, _rx) = reply_queue();
        let me = m.me.as_str().to_string();
        let body = format!("0b 10.99.0.2:4000\n0c 10.99.0.3:4000\n0d\n{me} 10.99.0.1:4000\n");
        m.message(&id("0a"), envelope(Op::Neighbors, "0a", 0, 0, 0, body), &tx)
            .unwrap();
        assert!(lock(&m.state).router.says_linked(&id("0a"), &id("0d")));
        assert_eq!(
            *lock(&hints),
            vec![relay::Hints {
                from: id("0a"),
                via: "127.0.0.1:1".parse().unwrap(),
                members: vec![(id("0b"), "10.99.0.2:4000".parse().unwrap())],
            }]
        );
        // Its next list: only what the last one did not name is news.
        let next = b"0b 10.99.0.2:4000\n0c 10.99.0.3:4000\n0f 10.99.0.6:4000\n";
        m.message(&id("0a"), envelope(Op::Neighbors, "0a", 0, 0, 0, next), &tx)
            .unwrap();
        assert_eq!(lock(&hints).len(), 2);
        assert_eq!(
            lock(&hints)[1].members,
            vec![(id("0f"), "10.99.0.6:4000".parse().unwrap())]
        );
        let bad = envelope(Op::Neighbors, "0a", 0, 0, 0, b"0b\n0e 10.99.0.5\n");
        let err = m.message(&id("0a"), bad, &tx).unwrap_err();
        assert!(err.contains("line 2") && err.contains("address"), "{err}");
        assert_eq!(lock(&hints).len(), 2);
    }
}
