//! Messaging on the mesh, with four nodes or more, each test in a private
//! network namespace: direct messages and broadcast, named events, topics
//! routed by interest, request/reply and its errors, order under load, slow
//! consumers, and raw frames beside it all.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::{FutureExt, StreamExt};
use tcpnet::{CallError, Error, Messages, NodeId, Service, Settings};

async fn mesh(n: usize) -> Vec<Service> {
    let nodes = futures::future::join_all((0..n).map(|_| start("c"))).await;
    full_mesh(&nodes).await;
    nodes
}

/// The next message on `s`, with the deadline.
async fn next(s: &mut Messages) -> tcpnet::Message {
    within("a message", s.next()).await.expect("stream ended")
}

/// Nothing more is queued on `s` right now.
fn nothing_more(s: &mut Messages) {
    if let Some(m) = s.next().now_or_never() {
        panic!("unexpected {m:?}");
    }
}

#[test]
fn send_to_reaches_one_node_and_broadcast_reaches_each_once() {
    netns(|| async {
        let nodes = mesh(4).await;
        let mut inboxes: Vec<Messages> = nodes.iter().map(|n| n.messages()).collect();
        nodes[0].send_to(nodes[1].id(), "just you").await.unwrap();
        let m = next(&mut inboxes[1]).await;
        assert_eq!((m.from(), &m.data()[..]), (nodes[0].id(), &b"just you"[..]));
        assert_eq!(m.name(), "");

        for (i, n) in nodes.iter().enumerate() {
            assert_eq!(n.broadcast(format!("from {i}")).await.unwrap(), 3);
        }
        for (i, inbox) in inboxes.iter_mut().enumerate() {
            let mut got: Vec<String> = Vec::new();
            for _ in 0..3 {
                got.push(String::from_utf8(next(inbox).await.data().to_vec()).unwrap());
            }
            got.sort();
            let want: Vec<String> = (0..4)
                .filter(|j| *j != i)
                .map(|j| format!("from {j}"))
                .collect();
            assert_eq!(got, want, "node {i}");
        }
        // The barrier: a last broadcast from 0, seen by 2 and 3, proves
        // nothing else was in flight for them.
        nodes[0].broadcast("last").await.unwrap();
        for inbox in &mut inboxes[2..] {
            assert_eq!(&next(inbox).await.data()[..], b"last");
            nothing_more(inbox);
        }
        let stranger = NodeId::parse(&"e".repeat(32)).unwrap();
        assert!(matches!(
            nodes[0].send_to(&stranger, "x").await,
            Err(Error::NotLinked { .. })
        ));
        close_all(&nodes).await;
    });
}

#[test]
fn events_reach_receivers_of_their_name_only() {
    netns(|| async {
        let nodes = mesh(4).await;
        let mut joins: Vec<Messages> = nodes.iter().map(|n| n.receiver("join").unwrap()).collect();
        let mut leaves: Vec<Messages> =
            nodes.iter().map(|n| n.receiver("leave").unwrap()).collect();
        assert_eq!(nodes[0].emit("join", "alice").await.unwrap(), 3);
        for r in &mut joins[1..] {
            let ev = next(r).await;
            assert_eq!(
                (ev.from(), ev.name(), &ev.data()[..]),
                (nodes[0].id(), "join", &b"alice"[..])
            );
        }
        nodes[2]
            .emit_to(nodes[3].id(), "leave", "bob")
            .await
            .unwrap();
        assert_eq!(&next(&mut leaves[3]).await.data()[..], b"bob");
        // Barrier on each link the events took, then nothing stray.
        for r in &mut joins[1..] {
            nothing_more(r);
        }
        nodes[2].emit("leave", "sync").await.unwrap();
        for (i, r) in leaves.iter_mut().enumerate() {
            if i != 2 {
                assert_eq!(&next(r).await.data()[..], b"sync", "node {i}");
            }
            nothing_more(r);
        }
        nothing_more(&mut joins[0]);
        assert!(matches!(nodes[0].receiver(""), Err(Error::BadName { .. })));
        close_all(&nodes).await;
    });
}

/// Bytes each node's sockets have received, from the kernel (`ss -ti`).
fn bytes_received(nodes: &[Service]) -> Vec<u64> {
    let out = std::process::Command::new("ss")
        .args(["-tinH", "state", "established"])
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    // Accepted sockets share their local address: key by both ends.
    let mut by_pair: HashMap<(SocketAddr, SocketAddr), u64> = HashMap::new();
    let mut current: Option<(SocketAddr, SocketAddr)> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            // "0 0 127.0.0.1:40261 127.0.0.1:37617" (state column omitted
            // when filtered by state)
            let cols: Vec<&str> = line.split_whitespace().collect();
            current = match (
                cols.get(2).and_then(|a| a.parse().ok()),
                cols.get(3).and_then(|a| a.parse().ok()),
            ) {
                (Some(l), Some(r)) => Some((l, r)),
                _ => None,
            };
        } else if let (Some(pair), Some(v)) = (
            current,
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("bytes_received:")),
        ) {
            by_pair.insert(pair, v.parse().unwrap());
        }
    }
    nodes
        .iter()
        .map(|n| {
            n.connections()
                .iter()
                .map(|c| {
                    *by_pair
                        .get(&(c.local_addr(), c.remote_addr()))
                        .unwrap_or_else(|| panic!("socket of {c:?} not in `ss`:\n{text}"))
                })
                .sum()
        })
        .collect()
}

/// Only nodes with a subscriber get a topic's traffic (bytes on their
/// sockets, counted by the kernel); the publisher's own subscriber gets it
/// too; a node that joins later learns who subscribes.
#[test]
fn topics_go_only_to_interested_nodes() {
    netns(|| async {
        let nodes = mesh(4).await;
        let mut subs = vec![
            nodes[0].subscribe("t").unwrap(),
            nodes[1].subscribe("t").unwrap(),
        ];
        let mut own = nodes[3].subscribe("other").unwrap();
        let want = vec![nodes[0].id().clone(), nodes[1].id().clone()]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>();
        wait_until(&nodes, "everyone to know who subscribes to t", || {
            nodes.iter().all(|n| {
                n.topic_members("t")
                    .into_iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    == want
            })
        })
        .await;

        let before = bytes_received(&nodes);
        let payload = vec![7u8; 1024];
        for _ in 0..1000 {
            assert_eq!(nodes[2].publish("t", payload.clone()).await.unwrap(), 2);
        }
        for s in &mut subs {
            for _ in 0..1000 {
                assert_eq!(next(s).await.data().len(), 1024);
            }
        }
        let after = bytes_received(&nodes);
        let got: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        eprintln!("bytes received per node while 1 MB was published: {got:?}");
        assert!(got[0] > 1_000_000 && got[1] > 1_000_000, "{got:?}");
        assert!(
            got[3] < 10_000,
            "the uninterested node got {} bytes",
            got[3]
        );
        nothing_more(&mut own);

        // A publisher's own subscriber gets its messages too.
        let mut mine = nodes[2].subscribe("t").unwrap();
        assert_eq!(nodes[2].publish("t", "self").await.unwrap(), 3);
        assert_eq!(&next(&mut mine).await.data()[..], b"self");

        // A late joiner learns the members.
        let late = start("c").await;
        let mut all = nodes.clone();
        all.push(late.clone());
        wait_until(&all, "the late joiner to learn the members", || {
            late.topic_members("t").len() == 3
        })
        .await;

        // Dropping the last subscriber of a node withdraws it.
        drop(subs.remove(0));
        wait_until(&all, "node 0 to leave the topic", || {
            all.iter()
                .all(|n| !n.topic_members("t").contains(nodes[0].id()))
        })
        .await;
        close_all(&all).await;
    });
}

#[test]
fn requests_get_answers_and_each_failure_its_own_error() {
    netns(|| async {
        let nodes = mesh(4).await;
        let server = nodes[0].clone();
        let mut upper = server.procedure("upper").unwrap();
        let mut fail = server.procedure("fail").unwrap();
        let mut drop_it = server.procedure("drop").unwrap();
        let mut hold = server.procedure("hold").unwrap();
        tokio::spawn(async move {
            while let Some(req) = upper.next().await {
                let s = String::from_utf8(req.data().to_vec())
                    .unwrap()
                    .to_uppercase();
                req.end(s).await.unwrap();
            }
        });
        tokio::spawn(async move {
            while let Some(req) = fail.next().await {
                req.error("not-found", "no such thing").await.unwrap();
            }
        });
        tokio::spawn(async move {
            while let Some(req) = drop_it.next().await {
                drop(req);
            }
        });
        let t = Duration::from_secs(5);
        let me = server.id();
        for caller in &nodes[1..] {
            let answer = caller.request(me, "upper", "hi", t).await.unwrap();
            assert_eq!(&answer[..], b"HI");
            match caller.request(me, "fail", "x", t).await {
                Err(Error::Call {
                    error: CallError::Remote { name, message },
                    ..
                }) => {
                    assert_eq!(
                        (name.as_str(), message.as_str()),
                        ("not-found", "no such thing")
                    )
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                caller.request(me, "nope", "x", t).await,
                Err(Error::Call {
                    error: CallError::NoProcedure,
                    ..
                })
            ));
            assert!(matches!(
                caller.request(me, "drop", "x", t).await,
                Err(Error::Call {
                    error: CallError::Unanswered,
                    ..
                })
            ));
        }
        // Held and never answered: the caller's timeout ends the call.
        let caller = nodes[1].clone();
        let short = Duration::from_millis(200);
        assert!(matches!(
            caller.request(me, "hold", "x", short).await,
            Err(Error::Call {
                error: CallError::Timeout(_),
                ..
            })
        ));
        let held = within("the held request", hold.next()).await.unwrap();
        // Answering a call that timed out does no harm.
        held.end("late").await.unwrap();

        // The link closes mid-call: the call ends with `Interrupted`.
        let call = tokio::spawn({
            let caller = caller.clone();
            let me = me.clone();
            async move {
                caller
                    .request(&me, "hold", "x", Duration::from_secs(30))
                    .await
            }
        });
        let held = within("the held request", hold.next()).await.unwrap();
        server
            .connections()
            .into_iter()
            .find(|c| c.peer_id() == caller.id())
            .unwrap()
            .close();
        assert!(matches!(
            within("the interrupted call", call).await.unwrap(),
            Err(Error::Call {
                error: CallError::Interrupted(_),
                ..
            })
        ));
        drop(held);
        close_all(&nodes).await;
    });
}

/// Several publishers, numbered messages, two subscribers: from each
/// publisher, every message arrives once and in order.
#[test]
fn per_sender_order_and_no_duplicates_under_load() {
    netns(|| async {
        const N: u32 = 3000;
        let nodes =
            futures::future::join_all((0..5).map(|_| start(Settings::new("c").queue_len(16384))))
                .await;
        full_mesh(&nodes).await;
        let subs = vec![
            nodes[0].subscribe("load").unwrap(),
            nodes[1].subscribe("load").unwrap(),
        ];
        wait_until(&nodes, "the members known", || {
            nodes.iter().all(|n| n.topic_members("load").len() == 2)
        })
        .await;
        let publishers: Vec<_> = nodes[2..]
            .iter()
            .map(|p| {
                let p = p.clone();
                tokio::spawn(async move {
                    for i in 0..N {
                        p.publish("load", Bytes::from(i.to_be_bytes().to_vec()))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        // Each subscriber read in a task of its own, as a user would.
        let readers: Vec<_> = subs
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    let mut last: HashMap<NodeId, u32> = HashMap::new();
                    for _ in 0..3 * N {
                        let m = next(&mut s).await;
                        let i = u32::from_be_bytes(m.data()[..].try_into().unwrap());
                        let prev = last.insert(m.from().clone(), i);
                        assert_eq!(
                            prev.map_or(0, |p| p + 1),
                            i,
                            "from {} (dropped {})",
                            m.from(),
                            s.dropped()
                        );
                    }
                    assert!(last.values().all(|v| *v == N - 1));
                    assert_eq!(s.dropped(), 0);
                })
            })
            .collect();
        for r in readers {
            within("the readers", r).await.unwrap();
        }
        for p in publishers {
            p.await.unwrap();
        }
        close_all(&nodes).await;
    });
}

/// A subscriber that never reads loses messages (counted), and stalls
/// nothing: another subscriber, raw frames and requests all go on.
#[test]
fn a_slow_subscriber_stalls_nothing_and_raw_frames_stay_apart() {
    netns(|| async {
        let nodes =
            futures::future::join_all((0..4).map(|_| start(Settings::new("c").queue_len(16))))
                .await;
        full_mesh(&nodes).await;
        let stuck = nodes[0].subscribe("t").unwrap();
        let reader = nodes[0].subscribe("t").unwrap();
        let other = nodes[1].subscribe("t").unwrap();
        wait_until(&nodes, "members known", || {
            nodes[3].topic_members("t").len() == 2
        })
        .await;
        let mut raw = nodes[0]
            .connections()
            .into_iter()
            .find(|c| c.peer_id() == nodes[3].id())
            .unwrap();
        let to_raw = nodes[3]
            .connections()
            .into_iter()
            .find(|c| c.peer_id() == nodes[0].id())
            .unwrap();
        // Two subscribers that read, each counting what it got; the
        // publisher waits for them after every 10 messages (so their own
        // queues of 16 never fill), never for the stuck one.
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<()>();
        for mut s in [reader, other] {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                while s.next().await.is_some() {
                    let _ = seen_tx.send(());
                }
            });
        }
        for i in 0..500u32 {
            nodes[3]
                .publish("t", i.to_be_bytes().to_vec())
                .await
                .unwrap();
            if i % 100 == 0 {
                to_raw.send(format!("raw {i}")).await.unwrap();
            }
            if i % 10 == 9 {
                for _ in 0..20 {
                    within("the readers to keep up", seen.recv()).await.unwrap();
                }
            }
        }
        assert_eq!(stuck.dropped(), 500 - 16);
        // Only the raw frames are on the raw stream.
        for i in (0..500).step_by(100) {
            assert_eq!(
                within("raw", raw.next()).await.unwrap(),
                Bytes::from(format!("raw {i}"))
            );
        }
        assert!(raw.next().now_or_never().is_none());
        close_all(&nodes).await;
    });
}

/// Two cliques of three nodes with mDNS off, each linked by static peers,
/// joined by one static link (a0-b0): a broadcast, an event and a topic
/// message from any node reach every other node exactly once, relayed
/// across the bridge; a relay filter that stops a message keeps it from the
/// nodes behind it.
#[test]
fn relay_across_a_bridge_reaches_every_node_once_and_can_be_stopped_and_resumed() {
    netns(|| async {
        let node = || async {
            let s = tcpnet::tcpnet(Settings::new("c").mdns(false)).unwrap();
            let port = s.listen(0, "127.0.0.1").await.unwrap().port;
            (s, format!("127.0.0.1:{port}"))
        };
        let mut a = Vec::new();
        let mut b = Vec::new();
        for _ in 0..3 {
            a.push(node().await);
            b.push(node().await);
        }
        for side in [&a, &b] {
            side[1].0.add_peer(&side[0].1).await.unwrap();
            side[2].0.add_peer(&side[0].1).await.unwrap();
            side[2].0.add_peer(&side[1].1).await.unwrap();
        }
        a[0].0.add_peer(&b[0].1).await.unwrap();
        let all: Vec<Service> = a.iter().chain(&b).map(|(s, _)| s.clone()).collect();
        wait_until(&all, "the two cliques and the bridge", || {
            let degree = |s: &Service| s.connections().len();
            (0..6).all(|i| degree(&all[i]) == if i % 3 == 0 { 3 } else { 2 })
        })
        .await;

        let mut inboxes: Vec<Messages> = all.iter().map(|s| s.messages()).collect();
        let mut events: Vec<Messages> = all.iter().map(|s| s.receiver("ev").unwrap()).collect();
        let mut topics: Vec<Messages> = all.iter().map(|s| s.subscribe("t").unwrap()).collect();
        wait_until(&all, "every node to know every member", || {
            all.iter().all(|s| s.topic_members("t").len() == 6)
        })
        .await;
        // The node counts of the two neighbor sets settle too (they are sent
        // 10 ms after a change); a round of broadcasts proves each path.
        for (i, s) in all.iter().enumerate() {
            s.broadcast(format!("b{i}")).await.unwrap();
            s.emit("ev", format!("e{i}")).await.unwrap();
            s.publish("t", format!("t{i}")).await.unwrap();
        }
        for (i, (inbox, (ev, t))) in inboxes
            .iter_mut()
            .zip(events.iter_mut().zip(topics.iter_mut()))
            .enumerate()
        {
            let mut got = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..5 {
                got.0
                    .push(String::from_utf8(next(inbox).await.data().to_vec()).unwrap());
                got.1
                    .push(String::from_utf8(next(ev).await.data().to_vec()).unwrap());
            }
            for _ in 0..6 {
                got.2
                    .push(String::from_utf8(next(t).await.data().to_vec()).unwrap());
            }
            for v in [&mut got.0, &mut got.1, &mut got.2] {
                v.sort();
            }
            let others = |p: &str| {
                (0..6)
                    .filter(|j| *j != i)
                    .map(|j| format!("{p}{j}"))
                    .collect::<Vec<_>>()
            };
            assert_eq!(got.0, others("b"), "broadcasts at node {i}");
            assert_eq!(got.1, others("e"), "events at node {i}");
            assert_eq!(
                got.2,
                (0..6).map(|j| format!("t{j}")).collect::<Vec<_>>(),
                "topic at node {i}"
            );
        }

        // b0, the bridge's far end, stops what arrives as "stop": the nodes
        // behind it get a1's next broadcast first.
        let b0 = 3;
        all[b0].relay_filter(|m: &tcpnet::Message| &m.data()[..] != b"stop");
        let a1 = all[1].clone();
        a1.broadcast("stop").await.unwrap();
        a1.broadcast("go").await.unwrap();
        for i in [0, 2, 3] {
            assert_eq!(&next(&mut inboxes[i]).await.data()[..], b"stop", "node {i}");
            assert_eq!(&next(&mut inboxes[i]).await.data()[..], b"go", "node {i}");
        }
        for i in [4, 5] {
            assert_eq!(&next(&mut inboxes[i]).await.data()[..], b"go", "node {i}");
        }
        // With the filter cleared, b0 relays "stop" again.
        all[b0].clear_relay_filter();
        a1.broadcast("stop").await.unwrap();
        for i in [0, 2, 3, 4, 5] {
            assert_eq!(&next(&mut inboxes[i]).await.data()[..], b"stop", "node {i}");
        }
        // Nothing more anywhere: a last broadcast from b2 is the barrier.
        all[5].broadcast("end").await.unwrap();
        for (i, inbox) in inboxes.iter_mut().enumerate() {
            if i != 5 {
                assert_eq!(&next(inbox).await.data()[..], b"end", "node {i}");
            }
            nothing_more(inbox);
        }
        close_all(&all).await;
    });
}

/// A link is known to messaging before its connection event: a publish made
/// on the event reaches a subscriber whose interest arrived first.
#[test]
fn a_publish_on_the_connection_event_reaches_a_subscriber_already_known() {
    netns(|| async {
        let mut checked = 0;
        for _ in 0..30 {
            let b = tcpnet::tcpnet(Settings::new("c").mdns(false)).unwrap();
            let mut news = b.subscribe("t").unwrap();
            let port = b.listen(0, "127.0.0.1").await.unwrap().port;
            let a = tcpnet::tcpnet(Settings::new("c").mdns(false)).unwrap();
            let mut conns = a.on_connection();
            a.listen(0, "127.0.0.1").await.unwrap();
            a.add_peer(&format!("127.0.0.1:{port}")).await.unwrap();
            within("the link", conns.next()).await.unwrap();
            // Poll without yielding to the runtime: the link's own steps
            // after the event are not waited for here.
            if a.topic_members("t").contains(b.id()) {
                checked += 1;
                assert_eq!(a.publish("t", "x").await.unwrap(), 1);
                assert_eq!(&next(&mut news).await.data()[..], b"x");
            }
            close_all(&[a, b]).await;
        }
        eprintln!("{checked} of 30 rounds published on the event");
    });
}
