//! Starting up and following the cluster, each test in a private network
//! namespace: `ready` (discovery settled, who started first), the link
//! stream that starts with the current links, and streams made before
//! `listen` that miss nothing.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures::{FutureExt, StreamExt};
use tcpnet::{
    CloseReason, Events, LinkEvent, MemberChange, MemberEvent, MemberState, NodeId, Service,
    Settings,
};
use tokio::time::Instant;

/// A late joiner's `ready` returns with every running node linked (and in
/// `connections()`), all of them older; the first node finds no one.
#[test]
fn ready_returns_with_the_running_nodes_linked() {
    netns(|| async {
        let first = start("c").await;
        let alone = within("ready", first.ready()).await.unwrap();
        assert_eq!((alone.linked.len(), alone.older.len()), (0, 0));
        assert!(!alone.timed_out);

        let mut nodes = vec![first];
        for _ in 0..3 {
            nodes.push(start("c").await);
        }
        full_mesh(&nodes).await;
        let late = start("c").await;
        let ready = within("ready", late.ready()).await.unwrap();
        let mut ids: Vec<NodeId> = nodes.iter().map(|n| n.id().clone()).collect();
        ids.sort();
        assert_eq!(ready.linked, ids);
        assert_eq!(ready.older, ids);
        assert_eq!(
            (ready.unreached, ready.pending, ready.timed_out),
            (0, 0, false)
        );
        // The guarantee: linked means listed.
        assert_eq!(late.connections().len(), 4);
        nodes.push(late);
        close_all(&nodes).await;
    });
}

/// Nodes that start together each find the others; exactly one of them
/// finds no older peer.
#[test]
fn of_nodes_started_together_one_finds_no_older_peer() {
    netns(|| async {
        let nodes: Vec<Service> = (0..3).map(|_| tcpnet::tcpnet("c").unwrap()).collect();
        let readies = futures::future::join_all(nodes.iter().map(|n| async move {
            n.listen(0, "0.0.0.0").await.unwrap();
            n.ready().await.unwrap()
        }))
        .await;
        for (n, r) in nodes.iter().zip(&readies) {
            assert_eq!(r.linked.len(), 2, "{} linked {:?}", n.id(), r.linked);
        }
        let founders = readies.iter().filter(|r| r.older.is_empty()).count();
        assert_eq!(founders, 1);
        // Older is a total order: the node with two older peers is the last.
        let mut olders: Vec<usize> = readies.iter().map(|r| r.older.len()).collect();
        olders.sort();
        assert_eq!(olders, [0, 1, 2]);
        close_all(&nodes).await;
    });
}

/// `ready` waits for a handshake under way, and counts a peer that never
/// completes one, or refuses the dial, as unreached; before `listen` it
/// waits for it.
#[test]
fn ready_waits_for_dials_under_way_and_counts_failures() {
    netns(|| async {
        // A static peer that accepts and says nothing, one that refuses.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused_addr = refused.local_addr().unwrap();
        drop(refused);
        let handshake = Duration::from_millis(600);
        let settings = Settings::new("c")
            .handshake_timeout(handshake)
            .peer(silent.local_addr().unwrap().to_string())
            .peer(refused_addr.to_string());
        let s = tcpnet::tcpnet(settings).unwrap();
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { s.ready().await }
        });
        let started = Instant::now();
        s.listen(0, "0.0.0.0").await.unwrap();
        let ready = within("ready", waiting).await.unwrap().unwrap();
        assert!(
            started.elapsed() >= handshake,
            "returned before the handshake timed out"
        );
        assert_eq!(ready.linked, Vec::<NodeId>::new());
        assert_eq!(
            (ready.unreached, ready.pending, ready.timed_out),
            (2, 0, false)
        );
        drop(silent);
        s.close().await;
        assert!(matches!(s.ready().await, Err(tcpnet::Error::Closed)));
    });
}

/// A link, by its two ends (accepted links share their local address).
fn link_key(c: &tcpnet::Connection) -> String {
    format!("{} {}", c.local_addr(), c.remote_addr())
}

/// What a link stream has shown: the links up now, by their ends, and
/// every event as text.
#[derive(Default)]
struct Shown {
    up: HashMap<String, NodeId>,
    log: Vec<String>,
}

impl Shown {
    /// Takes in what `events` has queued now; panics on an `Up` twice or a
    /// `Down` without `Up`.
    fn read(&mut self, events: &mut Events<LinkEvent>) {
        while let Some(Some(e)) = events.next().now_or_never() {
            match e {
                LinkEvent::Up(c) => {
                    let key = link_key(&c);
                    assert!(
                        self.up.insert(key.clone(), c.peer_id().clone()).is_none(),
                        "up twice: {key}"
                    );
                    self.log.push(format!("up {}", c.peer_id()));
                }
                LinkEvent::Down(c, why) => {
                    let key = link_key(&c);
                    assert!(self.up.remove(&key).is_some(), "down without up: {key}");
                    self.log.push(format!("down {} {why}", c.peer_id()));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

/// A link stream made after links opened starts with them, then carries
/// the changes: a peer that leaves goes down with why, one that joins
/// comes up.
#[test]
fn a_link_stream_starts_with_the_open_links_then_carries_changes() {
    netns(|| async {
        let nodes = futures::future::join_all((0..3).map(|_| start("c"))).await;
        full_mesh(&nodes).await;
        let mut links = nodes[0].on_link();
        let mut shown = Shown::default();
        shown.read(&mut links);
        let mut peers: Vec<&NodeId> = shown.up.values().collect();
        peers.sort();
        let mut want: Vec<&NodeId> = nodes[1..].iter().map(|n| n.id()).collect();
        want.sort();
        assert_eq!(peers, want);

        nodes[2].close().await;
        let down = within("the down", links.next()).await.unwrap();
        match down {
            LinkEvent::Down(c, why) => {
                assert_eq!(c.peer_id(), nodes[2].id());
                assert_eq!(why, CloseReason::PeerClosed);
            }
            other => panic!("{other:?}"),
        }
        let late = start("c").await;
        match within("the up", links.next()).await.unwrap() {
            LinkEvent::Up(c) => assert_eq!(c.peer_id(), late.id()),
            other => panic!("{other:?}"),
        }
        close_all(&[nodes[0].clone(), nodes[1].clone(), late]).await;
    });
}

/// Streams made at any moment while a mesh forms and changes each show
/// every link up once and down once, and end up agreeing with
/// `connections()`: no gap or repeat between the state and the changes.
#[test]
fn link_streams_made_while_links_open_and_close_agree_with_the_links() {
    netns(|| async {
        let a = start("c").await;
        let mut streams = Vec::new();
        let mut others = Vec::new();
        for round in 0..6 {
            let joining = tokio::spawn(start("c"));
            // A stream made while the node joins, one after.
            streams.push(a.on_link());
            others.push(joining.await.unwrap());
            streams.push(a.on_link());
            if round % 2 == 1 {
                others.remove(0).close().await;
                streams.push(a.on_link());
            }
        }
        let mut all = others.clone();
        all.push(a.clone());
        full_mesh(&all).await;
        let mut linked: Vec<String> = a.connections().iter().map(link_key).collect();
        linked.sort();
        // Every stream's view converges to the links up.
        for mut s in streams {
            let mut shown = Shown::default();
            wait_until(std::slice::from_ref(&a), "the stream to catch up", || {
                shown.read(&mut s);
                let mut up: Vec<String> = shown.up.keys().cloned().collect();
                up.sort();
                up == linked
            })
            .await;
        }
        close_all(&all).await;
    });
}

/// A receiver and a procedure made before `listen` miss nothing: a peer
/// that emits and calls the instant the link opens is heard and answered.
#[test]
fn streams_made_before_listen_miss_nothing() {
    netns(|| async {
        let early = start("c").await;
        let mut links = early.on_connection();
        let late = tcpnet::tcpnet("c").unwrap();
        let mut hellos = late.receiver("hello").unwrap();
        let mut calls = late.procedure("ping").unwrap();
        late.listen(0, "0.0.0.0").await.unwrap();
        let conn = within("the link", links.next()).await.unwrap();
        // At once, on the connection event.
        early.emit_to(conn.peer_id(), "hello", "hi").await.unwrap();
        let call = early.request(conn.peer_id(), "ping", "", Duration::from_secs(5));
        let answer = async {
            let req = within("the call", calls.next()).await.unwrap();
            req.end("pong").await.unwrap();
        };
        let (answered, ()) = tokio::join!(call, answer);
        assert_eq!(&answered.unwrap()[..], b"pong");
        assert_eq!(
            &within("hello", hellos.next()).await.unwrap().data()[..],
            b"hi"
        );
        close_all(&[early, late]).await;
    });
}

/// A receiver and a procedure made just after `listen`, once an event and
/// a call for them have arrived, still get them: while the node is young
/// they wait for their stream, and the caller gets its answer, not
/// `NoProcedure`.
#[test]
fn streams_made_just_after_listen_get_what_came_before_them() {
    netns(|| async {
        let a = start("c").await;
        let mut links = a.on_connection();
        // Young for longer than the mesh can take to form here.
        let b = tcpnet::tcpnet(Settings::new("c").hold_early(Duration::from_secs(60))).unwrap();
        // The one stream made before: it shows when the rest has arrived.
        let mut inbox = b.messages();
        b.listen(0, "0.0.0.0").await.unwrap();
        let conn = within("the link", links.next()).await.unwrap();
        let b_id = conn.peer_id().clone();
        a.emit_to(&b_id, "hello", "hi").await.unwrap();
        let mut call = Box::pin(a.request(&b_id, "ping", "", Duration::from_secs(10)));
        assert!(futures::poll!(&mut call).is_pending(), "sent, not answered");
        // Queued on the link after the event and the call: once b has it,
        // it has handled both, with no stream for either.
        a.send_to(&b_id, "marker").await.unwrap();
        let marker = within("the marker", inbox.next()).await.unwrap();
        assert_eq!(&marker.data()[..], b"marker");

        let mut hellos = b.receiver("hello").unwrap();
        let mut calls = b.procedure("ping").unwrap();
        assert_eq!(
            &within("hello", hellos.next()).await.unwrap().data()[..],
            b"hi"
        );
        let answer = async {
            let req = within("the call", calls.next()).await.unwrap();
            req.end("pong").await.unwrap();
        };
        let (answered, ()) = tokio::join!(call, answer);
        assert_eq!(&answered.unwrap()[..], b"pong");
        close_all(&[a, b]).await;
    });
}

/// The next member event about `peer` on `events`.
async fn next_about(events: &mut Events<MemberEvent>, peer: &NodeId) -> MemberEvent {
    within("a member event", async {
        loop {
            let ev = events.next().await.expect("the member stream ended");
            if &ev.member.id == peer {
                return ev;
            }
        }
    })
    .await
}

/// A member stream starts with the members present (this node first), each
/// `Joined` and numbered like the last change they include, then carries
/// the changes numbered on from there; a peer parted by hand and linked
/// again within the leave grace is the same run of it: one event,
/// `Relinked`, saying how long it was away, and no `Left` before it.
#[test]
fn a_member_stream_starts_with_the_members_and_a_relink_is_one_event() {
    netns(|| async {
        // A grace no relink here comes near, so the test cannot race it.
        let settings = || Settings::new("c").leave_grace(Duration::from_secs(60));
        let nodes = futures::future::join_all((0..3).map(|_| start(settings()))).await;
        full_mesh(&nodes).await;
        let (a, b) = (&nodes[0], &nodes[1]);
        let linked = |s: &Service| {
            s.members()
                .iter()
                .filter(|m| m.state == MemberState::Linked)
                .count()
        };
        wait_until(&nodes, "every member linked", || {
            nodes.iter().all(|n| linked(n) == 2)
        })
        .await;

        let mut events = a.on_member();
        let mut present = Vec::new();
        while let Some(Some(ev)) = events.next().now_or_never() {
            present.push(ev);
        }
        let mut want: Vec<&NodeId> = nodes[1..].iter().map(|n| n.id()).collect();
        want.sort();
        want.insert(0, a.id());
        let ids: Vec<&NodeId> = present.iter().map(|e| &e.member.id).collect();
        assert_eq!(ids, want);
        assert!(present.iter().all(|e| e.change == MemberChange::Joined));
        let seq = present[0].seq;
        assert!(present.iter().all(|e| e.seq == seq));
        assert!(present[0].member.is_local());

        let run = a.member(b.id()).unwrap().incarnation;
        let mut links = a.on_link();
        a.disconnect(b.id()).await.unwrap();
        b.disconnect(a.id()).await.unwrap();
        within("b's link down", async {
            loop {
                match links.next().await.expect("the link stream ended") {
                    LinkEvent::Down(c, _) if c.peer_id() == b.id() => return,
                    _ => {}
                }
            }
        })
        .await;
        // Held, not gone: still a member, without a link (once the view
        // has heard the link close, just after the link stream).
        wait_until(&nodes, "b held without a link", || {
            a.member(b.id()).is_some_and(|m| m.link.is_none())
        })
        .await;
        assert_eq!(a.member(b.id()).unwrap().state, MemberState::Linked);
        a.reconnect(b.id()).await.unwrap();
        b.reconnect(a.id()).await.unwrap();
        let back = next_about(&mut events, b.id()).await;
        let MemberChange::Relinked { away } = back.change else {
            panic!("a relink within the grace, as one event: {back:?}");
        };
        assert!(away > Duration::ZERO && away < Duration::from_secs(60));
        assert_eq!(back.member.incarnation, run);
        assert_eq!(back.member.state, MemberState::Linked);
        assert!(back.member.link.is_some());
        close_all(&nodes).await;
    });
}
