//! Relaying where the mesh is not full: passing flooded messages on, the
//! user's relay filter, and the gossip that tells each node where to relay
//! (every node's topics, and which nodes each node is linked to). The
//! decisions themselves are the pure [`Router`](crate::messaging::router::Router)'s.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};

use crate::clock::unix_nanos;
use crate::id::NodeId;
use crate::limits::{MAX_INTEREST_BYTES_PER_NODE, MAX_NAME_LEN, MAX_PEERS};
use crate::link::aside::StateKey;
use crate::link::connection::Connection;
use crate::link::open::OpenLinks;
use crate::link::outbox::OutTx;
use crate::link::LinkId;
use crate::messaging::router::neighbors::LinkList;
use crate::messaging::router::{News, Refusal};
use crate::messaging::streams::Message;
use crate::messaging::{envelope_frame, Messaging, State};
use crate::stats::Counters;
use crate::sync::lock;
use crate::wire::envelope::{self, Envelope, Op, FLOOD, MAX_HOPS};
use crate::wire::frame::Frame;
use crate::wire::links::{self, Entry};
use crate::wire::record::Record;

/// Decides, on a node that relays, whether a message goes on (see
/// [`Service::relay_filter`](crate::Service::relay_filter)).
pub(crate) type RelayFilter = dyn Fn(&Message) -> bool + Send + Sync;

/// A message to pass on, and the links to pass it on to.
pub(crate) struct Relay {
    frame: Frame,
    to: Vec<OutTx>,
}

/// Queues a relayed frame on each link without waiting. A link whose queue
/// is full misses it (counted in the log): relaying must not stall the link
/// it came on.
fn pass_on(to: &[OutTx], f: &Frame, counters: &Counters) {
    for tx in to {
        if tx.try_send(f.clone()).is_ok() {
            counters.relayed();
        } else {
            counters.relay_dropped();
            tracing::warn!("dropped a relayed message: the next link's send queue is full");
        }
    }
}

/// How long link changes are collected before the neighbors are told. While
/// a mesh forms, links open by the hundred: each announcement lists every
/// link, so they must be few. Until a peer's list comes, a node relays for
/// it conservatively (to every other peer; copies are dropped as
/// duplicates); a list older than a link that just closed can make a relay
/// skip a node for this long.
const NEIGHBORS_DELAY: Duration = Duration::from_millis(100);

/// How long after a link opens the other members' records go out on it,
/// and how long a member record that is news waits before it is passed on
/// (a goodbye goes at once). A peer needs only the records of the nodes it
/// does not link to itself (a segment a link joins learns of the nodes
/// behind it); by then it has told which nodes it links to (see
/// [`NEIGHBORS_DELAY`]), and those records are left out. While a mesh
/// forms, links open by the hundred and each peer soon links to most
/// nodes: every record on every new link, and every record passed on at
/// once to every peer whose list did not name its origin yet, would be
/// O(N) per link, O(N³) over a mass start of N nodes.
const RECORDS_DELAY: Duration = Duration::from_secs(1);

/// The frame to pass `e` on with (one more hop), and the links to pass it
/// on to; `None` if there are none. An unsigned message is not passed on:
/// its next receivers would refuse it (its origin signs what it expects to
/// be relayed; one that came unsigned was sent while the origin's view of
/// the mesh lagged behind this node's).
pub(crate) fn relay_frame(e: &Envelope, to: &[NodeId], open: &OpenLinks) -> Option<Relay> {
    if to.is_empty() {
        return None;
    }
    let frame = passed_on(e)?;
    let to = open
        .up()
        .into_iter()
        .filter(|c| to.contains(c.peer_id()))
        .map(|c| c.sender_queue().clone())
        .collect();
    Some(Relay { frame, to })
}

/// The frame to pass `e` on with (one more hop), if it may go on (see
/// [`relay_frame`]).
fn passed_on(e: &Envelope) -> Option<Frame> {
    if e.hops >= MAX_HOPS {
        return None;
    }
    if e.signature.is_none() {
        tracing::debug!(origin = %e.origin, "not relaying an unsigned message");
        return None;
    }
    Some(envelope_frame(&Envelope {
        hops: e.hops + 1,
        ..e.clone()
    }))
}

impl Messaging {
    /// Tells every linked peer this node's topics (on a link whose queue is
    /// full, the latest set waits beside it: see [`crate::link::aside`]).
    pub(crate) fn tell_interest(&self) {
        let f = self.my_interest_frame();
        for c in self.open.up() {
            c.sender_queue()
                .send_state(interest_key(&self.me), f.clone());
        }
    }

    /// Tells every linked peer which nodes this one is linked to, soon: link
    /// changes come in bursts (a mesh forming), so they are sent together.
    pub(crate) fn tell_neighbors(self: &Arc<Self>) {
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
            let to = {
                // Each link up is told the list once: a list that no link
                // took (none was up) or a link that opened with the list
                // unchanged (one replacing another to the same peer) is
                // told when a link is up.
                let mut told = lock(&this.told_neighbors);
                if told.list != linked {
                    told.list = linked.clone();
                    told.links.clear();
                }
                let up = this.open.up();
                told.links
                    .retain(|id| up.iter().any(|c| c.link().id == *id));
                let to: Vec<Connection> = up
                    .into_iter()
                    .filter(|c| !told.links.contains(&c.link().id))
                    .collect();
                told.links.extend(to.iter().map(|c| c.link().id));
                to
            };
            if to.is_empty() {
                return;
            }
            // Where each linked member listens, as this node sees it: the
            // address its link comes from, the port its hello names.
            let up = this.open.up();
            let at: HashMap<&NodeId, SocketAddr> = up
                .iter()
                .filter(|c| c.link().listens != 0)
                .map(|c| {
                    let at = SocketAddr::new(c.remote_addr().ip(), c.link().listens);
                    (c.peer_id(), at)
                })
                .collect();
            let body = links::encode(linked.iter().map(|id| (id, at.get(id).copied())));
            let f = envelope_frame(&Envelope {
                op: Op::Neighbors,
                flags: 0,
                hops: 0,
                origin: this.me.clone(),
                seq: 0,
                corr: 0,
                name: String::new(),
                body,
                signature: None,
            });
            for c in to {
                let key = (Op::Neighbors as u8, this.me.clone());
                c.sender_queue().send_state(key, f.clone());
            }
        });
    }
}

/// The list of links this node last told its peers, and the links it told
/// it on.
#[derive(Default)]
pub(crate) struct Told {
    list: HashSet<NodeId>,
    links: HashSet<LinkId>,
}

/// What an `Interest` envelope of `origin` states, to replace an older one
/// still waiting to go out.
fn interest_key(origin: &NodeId) -> StateKey {
    (Op::Interest as u8, origin.clone())
}

/// Where the hints of peers' lists of links go (see [`Hints`]).
pub(crate) type HintSink = Arc<dyn Fn(Hints) + Send + Sync>;

impl Messaging {
    /// `peer`'s list named `members`, with addresses, that this node is not
    /// linked to: the mesh hears of them, if any, with the address of the
    /// link they were told on.
    pub(super) fn hinted(&self, peer: &NodeId, members: Vec<(NodeId, SocketAddr)>) {
        if members.is_empty() {
            return;
        }
        let sink = lock(&self.hint_sink).clone();
        let (Some(sink), Some(via)) = (sink, self.open.to(peer)) else {
            return;
        };
        sink(Hints {
            from: peer.clone(),
            via: via.remote_addr(),
            members,
        });
    }
}

/// Where a node's record waits beside a full send queue: only its latest.
pub(super) fn record_key(origin: &NodeId) -> StateKey {
    (Op::Member as u8, origin.clone())
}

impl Messaging {
    /// This node's topics as an `Interest` envelope, signed: a peer passes
    /// it on to the peers it links later, so it is always relayed in the
    /// end (and rare: one per change of the set).
    fn my_interest_frame(&self) -> Frame {
        let (version, topics) = lock(&self.state).router.my_interest();
        let mut body = BytesMut::new();
        for t in &topics {
            body.put_slice(t.as_bytes());
            body.put_u8(b'\n');
        }
        let mut e = Envelope {
            op: Op::Interest,
            flags: FLOOD,
            hops: 0,
            origin: self.me.clone(),
            seq: 0,
            corr: version,
            name: String::new(),
            body: body.freeze(),
            signature: None,
        };
        self.sign(&mut e);
        envelope_frame(&e)
    }
}

impl Messaging {
    /// Passes `r` on, unless the user's filter stops `m`. Called without
    /// the messaging lock: the filter may call back into the service.
    pub(crate) fn relay(&self, r: Relay, m: &Message) {
        let filter = lock(&self.filter).clone();
        if filter.is_none_or(|f| f(m)) {
            pass_on(&r.to, &r.frame, &self.counters);
        }
    }

    /// An `Interest` envelope from `peer`: the origin's topics, kept and
    /// passed on if they are news; refused (for the caller to report) if
    /// they cannot be true or are over their budget.
    pub(crate) fn interest(
        &self,
        st: &mut State,
        peer: &NodeId,
        e: &Envelope,
    ) -> Result<(), Refusal> {
        let origin = e.origin.clone();
        // Every name takes at least its bytes in the table: a body over the
        // budget of one node is refused before it is parsed.
        if e.body.len() > MAX_INTEREST_BYTES_PER_NODE {
            return Err(Refusal::OverBudget {
                what: "topics of one node",
                bytes: e.body.len(),
                budget: MAX_INTEREST_BYTES_PER_NODE,
            });
        }
        let topics: BTreeSet<String> = envelope::lines(&e.body)
            .filter(|t| t.len() <= MAX_NAME_LEN)
            .map(str::to_string)
            .collect();
        let now = unix_nanos();
        // As it came, with its origin's signature, one hop on.
        let announce = || {
            envelope_frame(&Envelope {
                hops: 1,
                ..e.clone()
            })
        };
        match st
            .router
            .interest(peer, origin.clone(), e.corr, topics, now, announce)
        {
            News::Fresh => {
                let to = st.router.relay_to(peer, &origin, None);
                if let Some(r) = relay_frame(e, &to, &self.open) {
                    pass_on(&r.to, &r.frame, &self.counters);
                }
                Ok(())
            }
            News::Stale => Ok(()),
            News::Refused(r) => Err(r),
        }
    }

    /// A `Member` envelope from `peer`: `origin`'s record, for the view. A
    /// copy its origin signed is kept by the view to pass on, and passed on
    /// where the mesh is not full when the view says so: a goodbye at once,
    /// other news after [`RECORDS_DELAY`], to the peers that then need it.
    ///
    /// Copies of one record come by every path while a mesh forms, so one
    /// that would change nothing is dropped before anything else; news
    /// counts only with its origin's signature when another node passes it
    /// on (as any message in another's name), and a signature that comes
    /// with the origin's own copy must be right too, so a peer cannot hand
    /// on a copy that the next node would refuse in its name. Malformed, it
    /// is an error for the caller.
    pub(crate) fn member(&self, peer: &NodeId, e: Envelope) -> Result<(), String> {
        let (record, bad) = Record::decode(&e.body, e.corr)?;
        if !self.gossip.fresh(&e.origin, &record, e.signature.is_some()) {
            return Ok(());
        }
        if !self.signed_by_origin(peer, &e) {
            return Ok(());
        }
        // As it came, with its origin's signature, one hop on.
        let signed = e.signature.is_some().then(|| {
            envelope_frame(&Envelope {
                hops: 1,
                ..e.clone()
            })
        });
        let leaving = record.leaving;
        let order = (record.incarnation, record.version);
        // From its origin itself, the copy kept is also the one passed on.
        let kept = signed.as_ref().filter(|_| e.hops == 0).cloned();
        if !self.gossip.record(peer, &e.origin, record, bad, signed) {
            return Ok(());
        }
        let Some(frame) = kept.or_else(|| passed_on(&e)) else {
            return Ok(());
        };
        let relay = Owing::Relay {
            from: peer.clone(),
            origin: e.origin.clone(),
            order,
            frame,
        };
        // A goodbye goes ahead of the links that close after it. A record
        // passed on at once ends what is owed of its origin's older ones:
        // paid later, one would take its place in a full send queue (they
        // share its key).
        match self.this.upgrade() {
            Some(this) if !leaving => this.owe(relay),
            _ => {
                lock(&self.records_owed).forget(&e.origin);
                self.pay(relay, &self.open.up());
            }
        }
        Ok(())
    }

    /// A link to `peer` opened and the view holds `signed`, the peer's own
    /// record as it signed it: the peers this node relays for learn of it
    /// (after [`RECORDS_DELAY`]).
    pub(crate) fn tell_member(self: &Arc<Self>, peer: &NodeId, order: (u64, u64), signed: Frame) {
        self.owe(Owing::Relay {
            from: peer.clone(),
            origin: peer.clone(),
            order,
            frame: signed,
        });
    }

    /// A link to `conn`'s peer (of its incarnation `incarnation`) opened:
    /// tell the peer every node's topics we know, ours included, our
    /// record, and everyone which nodes we are linked to; the other
    /// members' records follow a little later (see [`RECORDS_DELAY`]).
    /// Other nodes' topics and records go as they were encoded when they
    /// arrived: a new link shares them, copying nothing.
    pub(crate) fn tell_new_link(self: &Arc<Self>, conn: &Connection, incarnation: u64) {
        let (tx, peer) = (conn.sender_queue(), conn.peer_id());
        let (subscribed, others) = {
            let mut st = lock(&self.state);
            st.router.link_opened(peer.clone(), incarnation);
            let subscribed = !st.router.my_interest().1.is_empty();
            (subscribed, st.router.all_interest(peer))
        };
        // A node that never subscribed has nothing to say.
        if subscribed {
            tx.send_state(interest_key(&self.me), self.my_interest_frame());
        }
        for (origin, f) in others {
            tx.send_state(interest_key(&origin), f);
        }
        // Our record, signed, for the peer to pass on (and newer than its
        // hello if our metadata changed during the handshake).
        if let Some(f) = lock(&self.record).clone() {
            tx.send_state(record_key(&self.me), f);
        }
        self.owe(Owing::Records(conn.link().id));
        self.tell_neighbors();
    }

    /// Does `what` [`RECORDS_DELAY`] from now; at once where there is no
    /// runtime to wait in. A record owed of an origin whose older record is
    /// still owed takes that one's place (see [`Owed::push`]).
    fn owe(self: &Arc<Self>, what: Owing) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.pay(what, &self.open.up());
            return;
        };
        let mut owed = lock(&self.records_owed);
        owed.push(Instant::now() + RECORDS_DELAY, what);
        if std::mem::replace(&mut owed.busy, true) {
            return;
        }
        drop(owed);
        let this = self.clone();
        rt.spawn(async move {
            loop {
                // Owed in the order they came, so due in that order.
                let due = {
                    let mut owed = lock(&this.records_owed);
                    match owed.due.front() {
                        Some((due, _)) => *due,
                        None => {
                            owed.busy = false;
                            return;
                        }
                    }
                };
                tokio::time::sleep_until(due.into()).await;
                let now = Instant::now();
                let due = lock(&this.records_owed).take_due(now);
                let up = this.open.up();
                for what in due {
                    this.pay(what, &up);
                }
            }
        });
    }

    /// Does `what` now, on the links `up`.
    fn pay(&self, what: Owing, up: &[Connection]) {
        match what {
            // A link closed meanwhile is owed nothing.
            Owing::Records(link) => {
                if let Some(conn) = up.iter().find(|c| c.link().id == link) {
                    self.tell_records(conn);
                }
            }
            Owing::Relay {
                from,
                origin,
                frame,
                ..
            } => {
                let to = lock(&self.state).router.record_to(&from, &origin);
                for c in up.iter().filter(|c| to.contains(c.peer_id())) {
                    c.sender_queue()
                        .send_state(record_key(&origin), frame.clone());
                }
            }
        }
    }

    /// Tells `conn`'s peer the member records this node knows, but its own
    /// and those of the nodes it says it is linked to.
    fn tell_records(&self, conn: &Connection) {
        let peer = conn.peer_id();
        // The view takes its own lock: not under the state's.
        let known = self.gossip.known(peer);
        let unlinked: Vec<(NodeId, Frame)> = {
            let st = lock(&self.state);
            known
                .into_iter()
                .filter(|(origin, _)| !st.router.says_linked(peer, origin))
                .collect()
        };
        for (origin, f) in unlinked {
            conn.sender_queue().send_state(record_key(&origin), f);
        }
    }
}

/// What is owed once [`RECORDS_DELAY`] is over.
pub(crate) enum Owing {
    /// The other members' records, to a new link.
    Records(LinkId),
    /// `origin`'s record of `order` (its incarnation and version), news
    /// that came from `from`, as `frame` (one hop on), to the peers that
    /// then need it.
    Relay {
        from: NodeId,
        origin: NodeId,
        order: (u64, u64),
        frame: Frame,
    },
}

/// What is owed, each with when it is due, oldest first.
#[derive(Default)]
pub(crate) struct Owed {
    due: VecDeque<(Instant, Due)>,
    /// The record owed of each origin in `due`, with the peer it came
    /// from and its order: only the newest, so a peer that sends records
    /// as fast as it can makes this node hold one per origin, not one per
    /// record.
    relays: HashMap<NodeId, (NodeId, (u64, u64), Frame)>,
    /// A task does each as it comes due.
    busy: bool,
}

/// One thing owed, in the order they are due.
enum Due {
    Records(LinkId),
    /// The record of this origin in [`Owed::relays`].
    Relay(NodeId),
}

impl Owed {
    /// Owes `what` at `due`. A record of an origin already owed one takes
    /// its place if it is newer, due when that one was: only the newest
    /// record of a node matters, and one that changes faster than
    /// [`RECORDS_DELAY`] is still passed on. Two link tasks may owe two
    /// versions of one origin in either order, so the order decides, not
    /// which came last.
    fn push(&mut self, due: Instant, what: Owing) {
        match what {
            Owing::Records(link) => self.due.push_back((due, Due::Records(link))),
            Owing::Relay {
                from,
                origin,
                order,
                frame,
            } => {
                if let Some(owed) = self.relays.get_mut(&origin) {
                    if order > owed.1 {
                        *owed = (from, order, frame);
                    }
                } else {
                    self.due.push_back((due, Due::Relay(origin.clone())));
                    self.relays.insert(origin, (from, order, frame));
                }
            }
        }
    }

    /// Takes what is due by `now`, in order.
    fn take_due(&mut self, now: Instant) -> Vec<Owing> {
        let n = self.due.partition_point(|(due, _)| *due <= now);
        let relays = &mut self.relays;
        self.due
            .drain(..n)
            .filter_map(|(_, what)| match what {
                Due::Records(link) => Some(Owing::Records(link)),
                Due::Relay(origin) => {
                    let (from, order, frame) = relays.remove(&origin)?;
                    Some(Owing::Relay {
                        from,
                        origin,
                        order,
                        frame,
                    })
                }
            })
            .collect()
    }

    /// Owes nothing more of `origin`'s record.
    fn forget(&mut self, origin: &NodeId) {
        if self.relays.remove(origin).is_some() {
            self.due
                .retain(|(_, what)| !matches!(what, Due::Relay(o) if o == origin));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::id;
    use bytes::Bytes;

    fn relay(origin: &NodeId, order: (u64, u64)) -> Owing {
        Owing::Relay {
            from: origin.clone(),
            origin: origin.clone(),
            order,
            frame: Frame::data(Bytes::from(format!("{order:?}"))),
        }
    }

    /// Two link tasks may owe two versions of one origin in either order:
    /// the newer stays owed whichever came last, and a new incarnation is
    /// newer than any version of the last.
    #[test]
    fn an_older_record_owed_late_does_not_take_a_newer_ones_place() {
        let (b, now) = (id("b"), Instant::now());
        let mut owed = Owed::default();
        owed.push(now, relay(&b, (1, 6)));
        owed.push(now, relay(&b, (1, 5)));
        let frames = |owed: &Owed| -> Vec<Bytes> {
            owed.relays()
                .iter()
                .map(|(_, f)| f.payload.clone())
                .collect()
        };
        assert_eq!(frames(&owed), [Bytes::from("(1, 6)")]);
        owed.push(now, relay(&b, (2, 1)));
        assert_eq!(frames(&owed), [Bytes::from("(2, 1)")]);
        let due = owed.take_due(now);
        assert!(matches!(&due[..], [Owing::Relay { order: (2, 1), .. }]));
    }
}

#[cfg(test)]
impl Owed {
    /// The records owed, in the order they are due: each origin, with the
    /// record owed of it.
    pub(crate) fn relays(&self) -> Vec<(&NodeId, &Frame)> {
        self.due
            .iter()
            .filter_map(|(_, what)| match what {
                Due::Relay(origin) => Some((origin, &self.relays.get(origin)?.2)),
                Due::Records(_) => None,
            })
            .collect()
    }
}

/// Members a peer's list of links names that this node is not linked to,
/// with where the peer says each listens: hints for the mesh, which may
/// dial them (the handshake proves who answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hints {
    /// The peer that told.
    pub from: NodeId,
    /// The peer's address on the link it told on.
    pub via: SocketAddr,
    /// The members, each with where the peer says it listens.
    pub members: Vec<(NodeId, SocketAddr)>,
}

/// What a list of links gives: the list the router keeps of them, and the
/// members it names with an address that `me` is not linked to.
pub(crate) type Listed = (LinkList, Vec<(NodeId, SocketAddr)>);

/// A `Neighbors` envelope from `peer`: the nodes it is linked to, ids in
/// their normal form (see [`NodeId::normal`]: a list of ids is only looked
/// up, and a mesh forming sends lists by the thousand), each with where it
/// listens if `peer` knows. Gives the list the router keeps of them and,
/// if `hints`, the members named that `me` is not linked to and that the
/// peer's last list did not name, with their addresses;
/// refused (for the caller to report) over its budget; malformed, an error
/// (no well-behaved node sends one).
pub(crate) fn neighbors(
    st: &mut State,
    me: &NodeId,
    peer: &NodeId,
    e: &Envelope,
    hints: bool,
) -> Result<Result<Listed, Refusal>, links::LinksError> {
    // One more than a list may hold is enough to refuse it.
    let entries: Vec<Entry<'_>> = links::decode(&e.body)
        .take(MAX_PEERS + 1)
        .collect::<Result<_, _>>()?;
    // A peer tells its whole list on every change: only the members its
    // last list did not name are news to hint (the others were hinted
    // then).
    let before = hints.then(|| st.router.list_of(peer)).flatten();
    let list = match st
        .router
        .neighbors(peer.clone(), entries.iter().map(|l| l.id.as_ref()))
    {
        Ok(list) => list,
        Err(r) => return Ok(Err(r)),
    };
    if !hints {
        return Ok(Ok((list, Vec::new())));
    }
    let linked = st.router.linked();
    let hints = entries
        .iter()
        .filter(|l| l.at.is_some())
        .filter(|l| before.as_ref().is_none_or(|b| !b.names(&l.id)))
        .filter(|l| l.id != me.as_str() && l.id != peer.as_str())
        .filter(|l| !linked.contains(l.id.as_ref()))
        .filter_map(|l| Some((NodeId::from_normal(&l.id), l.at?)))
        .collect();
    Ok(Ok((list, hints)))
}
