//! Membership: who is in the cluster, what they say about themselves, and
//! how they change.
//!
//! The [`view`] is a pure state machine; [`Members`] holds it under one
//! lock with the subscribers of its events, so a snapshot and the events
//! after it are taken together (see [`Members::watch`]), and every event
//! carries a number that grows by one. The actor feeds it what links do
//! (open, close, go silent, speak again); messaging feeds it the records
//! peers send (through [`Gossip`]); the service's handle feeds it this
//! node's own metadata. What the user sees is in [`member`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{CloseReason, Error, MetaError};
use crate::id::NodeId;
use crate::limits::{MAX_PEERS, MAX_QUEUED_MEMBER_EVENTS, RELAYED_GRACE};
use crate::link::connection::Connection;
use crate::link::LinkId;
use crate::messaging::router::neighbors::LinkList;
use crate::messaging::Gossip;
use crate::meta::Meta;
use crate::node::events::{Emitter, Events, Hub};
use crate::stats::LinkStats;
use crate::sync::lock;
use crate::wire::frame::Frame;
use crate::wire::meta;
use crate::wire::record::Record;

pub(crate) mod member;
pub(crate) mod view;

use member::{LinkInfo, Member, MemberChange, MemberEvent, MemberState};
use view::{Changes, Entry, Opened, Route, View};

/// The view and its subscribers, under one lock.
struct Inner {
    view: View,
    /// The number of the last event.
    seq: u64,
    events: Emitter<MemberEvent>,
    /// Where this node listens (empty before `listen`).
    addrs: Vec<SocketAddr>,
    /// This node's metadata as its hello carries it: version, encoded.
    hello_meta: (u64, Bytes),
    /// The links the view's linked members are on, for what they measure
    /// and count.
    links: HashMap<LinkId, Connection>,
    /// When the timer for the view's nodes heard of through a peer fires,
    /// if one is set.
    timer: Option<Instant>,
}

/// A node's membership view, shared by its actor, its messaging and its
/// `Service` handle.
pub(crate) struct Members {
    inner: Mutex<Inner>,
    /// Where a bad record from a peer is reported.
    hub: Arc<Hub>,
    /// Itself, for the timer that makes waiting nodes relayed members.
    this: Weak<Members>,
}

impl Members {
    /// The view of node `me`; a member whose link is lost is held for
    /// `grace` before it leaves; `mdns` says whether it finds peers over
    /// mDNS (a node heard of through a peer may then be on this LAN and
    /// about to link: it is made a relayed member only after
    /// [`RELAYED_GRACE`]).
    pub(crate) fn new(
        me: NodeId,
        incarnation: u64,
        meta: Meta,
        grace: Duration,
        hub: Arc<Hub>,
        mdns: bool,
    ) -> Arc<Members> {
        let hello_meta = (incarnation, meta::encode(&meta));
        let relayed_grace = if mdns { RELAYED_GRACE } else { Duration::ZERO };
        Arc::new_cyclic(|this| Members {
            inner: Mutex::new(Inner {
                view: View::new(me, incarnation, meta)
                    .with_grace(grace)
                    .with_relayed_grace(relayed_grace),
                seq: 0,
                events: Emitter::ending(MAX_QUEUED_MEMBER_EVENTS),
                addrs: Vec::new(),
                hello_meta,
                links: HashMap::new(),
                timer: None,
            }),
            hub,
            this: this.clone(),
        })
    }

    /// This node's metadata.
    pub(crate) fn meta(&self) -> Meta {
        lock(&self.inner).view.local().meta.clone()
    }

    /// This node's metadata for its hello: its version, and its encoding.
    pub(crate) fn hello_meta(&self) -> (u64, Bytes) {
        lock(&self.inner).hello_meta.clone()
    }

    /// Changes this node's metadata with `edit`; returns the new record to
    /// tell the peers, or `None` when nothing changed.
    pub(crate) fn set_meta(
        &self,
        edit: impl FnOnce(&mut Meta) -> Result<bool, MetaError>,
        port: u16,
    ) -> Result<Option<Record>, MetaError> {
        let mut inner = lock(&self.inner);
        let mut meta = inner.view.local().meta.clone();
        if !edit(&mut meta)? {
            return Ok(None);
        }
        let changes = inner.view.set_local_meta(meta);
        let local = inner.view.local().clone();
        inner.hello_meta = (local.version, meta::encode(&local.meta));
        emit(&mut inner, changes, Instant::now());
        Ok(Some(Record {
            incarnation: local.incarnation,
            port,
            version: local.version,
            leaving: false,
            meta: Some(local.meta),
        }))
    }

    /// This node's record as it stands, listening on `port`.
    pub(crate) fn record(&self, port: u16) -> Record {
        let inner = lock(&self.inner);
        let local = inner.view.local();
        Record {
            incarnation: local.incarnation,
            port,
            version: local.version,
            leaving: false,
            meta: Some(local.meta.clone()),
        }
    }

    /// This node's last record: it is leaving.
    pub(crate) fn goodbye(&self, port: u16) -> Record {
        let r = self.record(port);
        Record {
            version: r.version + 1,
            leaving: true,
            ..r
        }
    }

    /// Where this node listens.
    pub(crate) fn set_addrs(&self, addrs: Vec<SocketAddr>) {
        lock(&self.inner).addrs = addrs;
    }

    /// The pair's one link opened, with the record its hello carried.
    /// Returns the peer's record as it signed it, with its incarnation and
    /// version, if the view holds it, for the peers this node relays for.
    pub(crate) fn opened(&self, conn: &Connection, record: Record) -> Option<((u64, u64), Frame)> {
        let now = Instant::now();
        let o = Opened {
            link: conn.link().id,
            peer: conn.peer_id().clone(),
            remote: conn.remote_addr(),
            local: conn.local_addr(),
            record,
        };
        let mut inner = lock(&self.inner);
        inner.links.insert(o.link, conn.clone());
        let changes = inner.view.opened(o, now);
        // Links no member is on any more (replaced, or of a run that
        // restarted) are forgotten.
        let Inner { view, links, .. } = &mut *inner;
        links.retain(|id, l| view.get(l.peer_id()).and_then(Entry::link) == Some(*id));
        let signed = view
            .get(conn.peer_id())
            .and_then(|e| Some(((e.incarnation, e.version), e.signed.clone()?)));
        emit(&mut inner, changes, now);
        signed
    }

    /// A link closed. A member it holds away (see [`view`]) leaves at the
    /// end of the grace, by a timer started here.
    pub(crate) fn closed(self: &Arc<Self>, link: LinkId, peer: &NodeId, reason: &CloseReason) {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        inner.links.remove(&link);
        let changes = inner.view.closed(link, peer, reason, now);
        emit(&mut inner, changes, now);
        if let (_, Some(due)) = inner.view.tick(now) {
            let members = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut due = due;
                loop {
                    tokio::time::sleep_until(due.into()).await;
                    let Some(members) = members.upgrade() else {
                        return;
                    };
                    match members.tick() {
                        Some(next) => due = next,
                        None => return,
                    }
                }
            });
        }
    }

    /// Members held away for the whole grace leave; returns when the next
    /// one held is due.
    fn tick(&self) -> Option<Instant> {
        let mut inner = lock(&self.inner);
        settle(&mut inner, Instant::now())
    }

    /// A link went silent (see `link::watchdog::silent_after`).
    pub(crate) fn silent(&self, link: LinkId, peer: &NodeId) {
        self.apply(|v| v.silent(link, peer), Instant::now());
    }

    /// A silent link spoke again.
    pub(crate) fn heard(&self, link: LinkId, peer: &NodeId) {
        self.apply(|v| v.heard(link, peer), Instant::now());
    }

    /// This node closed: its view empties, without events.
    pub(crate) fn clear(&self) {
        let mut inner = lock(&self.inner);
        inner.view.clear();
        inner.addrs.clear();
        inner.links.clear();
    }

    fn apply(&self, f: impl FnOnce(&mut View) -> Changes, now: Instant) {
        let mut inner = lock(&self.inner);
        let changes = f(&mut inner.view);
        emit(&mut inner, changes, now);
    }

    /// Every member, this node first, then by id.
    pub(crate) fn snapshot(&self) -> Vec<Member> {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        settle(&mut inner, now);
        all(&inner, now)
    }

    /// One member.
    pub(crate) fn get(&self, id: &NodeId) -> Option<Member> {
        let inner = lock(&self.inner);
        member(&inner, id, Instant::now())
    }

    /// The members present now (this node first; those that left are not
    /// present), each as a `Joined` event numbered like the last change it
    /// includes, then every change after them, under one lock: no change
    /// is missed or shown twice.
    pub(crate) fn subscribe(&self) -> Events<MemberEvent> {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        settle(&mut inner, now);
        let seq = inner.seq;
        let present = all(&inner, now)
            .into_iter()
            .filter(|m| !matches!(m.state, MemberState::Left(_)))
            .map(|member| MemberEvent {
                seq,
                change: MemberChange::Joined,
                member,
            })
            .collect();
        inner.events.subscribe_after(present)
    }

    /// Every member, and the changes after that snapshot, taken together.
    pub(crate) fn watch(&self) -> (Vec<Member>, Events<MemberEvent>) {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        settle(&mut inner, now);
        (all(&inner, now), inner.events.subscribe())
    }
}

impl Gossip for Members {
    fn record(
        &self,
        peer: &NodeId,
        origin: &NodeId,
        record: Record,
        bad: Option<MetaError>,
        signed: Option<Frame>,
    ) -> bool {
        if let Some(error) = bad {
            let e = Error::BadMeta {
                peer: origin.clone(),
                carrier: "update",
                error,
            };
            tracing::debug!(%peer, "a member record with bad metadata");
            self.hub.report(e);
        }
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        // Relayed members are as many as peers may be: keys are free to
        // make, so a peer could otherwise grow the view without end.
        if origin != peer && inner.view.get(origin).is_none() && inner.view.relayed() >= MAX_PEERS {
            drop(inner);
            self.hub.report(Error::TooManyPeers {
                peer: origin.clone(),
                max: MAX_PEERS,
            });
            return false;
        }
        let direct = self.hub.advertised().contains(origin);
        let (news, changes) = inner.view.record(peer, origin, record, signed, direct, now);
        emit(&mut inner, changes, now);
        self.set_timer(&mut inner);
        news
    }

    fn fresh(&self, origin: &NodeId, record: &Record, signed: bool) -> bool {
        lock(&self.inner).view.fresh(origin, record, signed)
    }

    fn known(&self, except: &NodeId) -> Vec<(NodeId, Frame)> {
        let inner = lock(&self.inner);
        inner
            .view
            .members()
            .filter(|(id, e)| !e.left() && *id != except)
            .filter_map(|(id, e)| Some((id.clone(), e.signed.clone()?)))
            .collect()
    }

    fn neighbors(&self, peer: &NodeId, list: &LinkList) {
        let now = Instant::now();
        self.apply(|v| v.neighbors(peer, list, now), now);
    }

    fn in_view(&self, node: &NodeId) -> bool {
        lock(&self.inner).view.knows(node)
    }
}

impl Members {
    /// Sets a timer for the next node heard of through a peer, unless one
    /// is set for then or earlier (outside a runtime, there is no timer).
    fn set_timer(&self, inner: &mut Inner) {
        let Some(due) = inner.view.next_due() else {
            return;
        };
        if inner.timer.is_some_and(|t| t <= due) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        inner.timer = Some(due);
        let this = self.this.clone();
        rt.spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            if let Some(members) = this.upgrade() {
                members.due();
            }
        });
    }

    /// The timer fired: nodes heard of through a peer that did not link in
    /// time join as relayed members.
    fn due(&self) {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        inner.timer = None;
        let changes = inner.view.due(now, &self.hub.advertised());
        emit(&mut inner, changes, now);
        self.set_timer(&mut inner);
    }
}

/// Brings the view up to `now`: members held away past the grace leave
/// (the subscribers are told), those that left long ago are forgotten.
/// Returns when the next one held is due.
fn settle(inner: &mut Inner, now: Instant) -> Option<Instant> {
    let (changes, next) = inner.view.tick(now);
    emit(inner, changes, now);
    inner.view.expire(now);
    next
}

/// Hands each change, with the member as it is now, to the subscribers.
fn emit(inner: &mut Inner, changes: Changes, now: Instant) {
    for (id, change) in changes {
        let Some(member) = member(inner, &id, now) else {
            continue;
        };
        inner.seq += 1;
        let event = MemberEvent {
            seq: inner.seq,
            change,
            member,
        };
        tracing::debug!(peer = %id, %change, seq = inner.seq, "member");
        inner.events.emit(&event);
    }
}

fn all(inner: &Inner, now: Instant) -> Vec<Member> {
    let me = inner.view.me().clone();
    let mut out = Vec::with_capacity(1 + inner.view.members().count());
    out.extend(member(inner, &me, now));
    for (id, _) in inner.view.members() {
        out.extend(member(inner, id, now));
    }
    out
}

fn member(inner: &Inner, id: &NodeId, now: Instant) -> Option<Member> {
    if id == inner.view.me() {
        let local = inner.view.local();
        return Some(Member {
            id: id.clone(),
            incarnation: local.incarnation,
            addrs: inner.addrs.clone(),
            meta: local.meta.clone(),
            state: MemberState::Local,
            link: None,
        });
    }
    let e: &Entry = inner.view.get(id)?;
    // Linked, or its link lost a moment ago (shown as it was, without the
    // link, until it relinks or leaves).
    let linked = |suspect: bool, remote: &SocketAddr, link| {
        let state = if suspect {
            MemberState::Suspect
        } else {
            MemberState::Linked
        };
        (state, vec![SocketAddr::new(remote.ip(), e.port)], link)
    };
    let (state, addrs, link) = match &e.route {
        Route::Linked {
            remote,
            local,
            since,
            suspect,
            ..
        } => linked(
            *suspect,
            remote,
            Some(link_info(inner, e, *remote, *local, *since, now)),
        ),
        Route::Away {
            remote, suspect, ..
        } => linked(*suspect, remote, None),
        Route::Relayed { .. } => (MemberState::Relayed, Vec::new(), None),
        Route::Left { reason, .. } => (MemberState::Left(*reason), Vec::new(), None),
    };
    Some(Member {
        id: id.clone(),
        incarnation: e.incarnation,
        addrs,
        meta: e.meta.clone(),
        state,
        link,
    })
}

/// What this node knows of a linked member's link; its round-trip time
/// and counters from the link itself.
fn link_info(
    inner: &Inner,
    e: &Entry,
    remote: SocketAddr,
    local: SocketAddr,
    since: Instant,
    now: Instant,
) -> LinkInfo {
    let stats = e
        .link()
        .and_then(|id| inner.links.get(&id))
        .map(Connection::stats);
    let figure = |f: fn(&LinkStats) -> u64| stats.as_ref().map_or(0, f);
    LinkInfo {
        remote,
        local,
        age: now.saturating_duration_since(since),
        srtt: stats.as_ref().and_then(|s| s.srtt),
        rttvar: stats.as_ref().and_then(|s| s.rttvar),
        frames_in: figure(|s| s.frames_in),
        bytes_in: figure(|s| s.bytes_in),
        frames_out: figure(|s| s.frames_out),
        bytes_out: figure(|s| s.bytes_out),
        send_queue: stats.as_ref().map_or(0, |s| s.send_queue),
    }
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, StreamExt};

    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::parse(&format!("{n:02x}")).unwrap()
    }

    fn record(version: u64, value: &str) -> Record {
        Record {
            incarnation: 10,
            port: 4000,
            version,
            leaving: false,
            meta: Some(Meta::from_pairs([("k", value)]).unwrap()),
        }
    }

    /// A linked peer that sends a new version of its record with other
    /// metadata, again and again, makes a change each time: a member
    /// stream not read holds the members it started with and
    /// [`MAX_QUEUED_MEMBER_EVENTS`] of them, then ends, saying it fell
    /// behind; one read along gets them all, and watching again shows the
    /// peer as it is.
    #[test]
    fn a_member_stream_that_falls_behind_a_peers_records_ends() {
        let members = Members::new(
            id(1),
            5,
            Meta::default(),
            Duration::ZERO,
            Arc::new(Hub::new()),
            false,
        );
        let now = Instant::now();
        {
            let mut inner = lock(&members.inner);
            let changes = inner.view.opened(
                Opened {
                    link: 7,
                    peer: id(2),
                    remote: "127.0.0.1:1".parse().unwrap(),
                    local: "127.0.0.1:2".parse().unwrap(),
                    record: record(10, "a"),
                },
                now,
            );
            emit(&mut inner, changes, now);
        }
        let mut behind = members.subscribe();
        let mut reading = members.subscribe();
        let started: Vec<_> =
            std::iter::from_fn(|| reading.next().now_or_never().flatten()).collect();
        assert_eq!(started.len(), 2);
        let records = MAX_QUEUED_MEMBER_EVENTS as u64 + 100;
        let mut updates = 0;
        for n in 1..=records {
            let value = if n % 2 == 0 { "a" } else { "b" };
            Gossip::record(&*members, &id(2), &id(2), record(10 + n, value), None, None);
            while let Some(Some(ev)) = reading.next().now_or_never() {
                assert_eq!(ev.change, MemberChange::Updated);
                updates += 1;
            }
        }
        assert_eq!(updates, records);
        assert!(!reading.fell_behind());

        let held: Vec<_> = std::iter::from_fn(|| behind.next().now_or_never().flatten()).collect();
        assert_eq!(held.len(), 2 + MAX_QUEUED_MEMBER_EVENTS);
        assert!(held.windows(2).skip(1).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(behind.next().now_or_never(), Some(None));
        assert!(behind.fell_behind());

        let (now_members, _) = members.watch();
        let last = if records % 2 == 0 { "a" } else { "b" };
        assert_eq!(now_members[1].meta.get("k"), Some(last));
    }
}
