//! Correctness where timing is against us: faults that take a stale link, a
//! peer that stops reading, or a race between tasks to show. Each test runs
//! in a private network namespace; links that must go stale, be held back or
//! trickle go through the relay of `common::relay`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::relay::Relay;
use common::*;
use futures::{FutureExt, StreamExt};
use tcpnet::{CallError, CloseReason, Connection, Error, NodeId, Service, Settings};
use tokio::task::JoinHandle;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A node of cluster "c" without mDNS, listening on loopback, and its
/// address.
async fn node(settings: Settings) -> (Service, SocketAddr) {
    let s = tcpnet::tcpnet(settings.mdns(false)).expect("settings");
    let port = s.listen(0, "127.0.0.1").await.expect("listen").port;
    (s, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// `s`'s open link to `peer` (which it holds).
fn link_of(s: &Service, peer: &NodeId) -> Connection {
    let mut links = s.connections().into_iter();
    links.find(|c| c.peer_id() == peer).expect("linked")
}

/// Waits until each of `pair` holds one open link to the other. (Through a
/// relay the two ends of a link see different addresses, so this does not
/// compare them as `full_mesh` does.)
async fn linked(pair: &[Service; 2]) {
    let [a, b] = pair;
    let one_to = |s: &Service, peer: &NodeId| {
        let links = s.connections();
        links.len() == 1 && links[0].peer_id() == peer
    };
    wait_until(pair, "the pair to be linked", || {
        one_to(a, b.id()) && one_to(b, a.id())
    })
    .await;
}

/// Reads the next message of `conn` in a task of its own, once that task is
/// waiting for it.
async fn waiting_reader(mut conn: Connection) -> JoinHandle<Option<Bytes>> {
    let (polled, pending) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let mut polled = Some(polled);
        let mut next = conn.next();
        std::future::poll_fn(|cx| {
            let r = next.poll_unpin(cx);
            if let Some(tx) = polled.take() {
                let _ = tx.send(r.is_pending());
            }
            r
        })
        .await
    });
    assert!(pending.await.unwrap(), "the reader found a message at once");
    reader
}

/// Sends 64 KiB messages on `conn`, from a task of its own, until the link
/// stops taking them: its peer reads nothing, so its receive queue, both
/// sockets' buffers and our send queue fill up. The only sign of that is
/// that nothing moves, so this returns once no send has completed for half a
/// second. Abort the task to stop sending.
async fn fill(conn: &Connection) -> JoinHandle<()> {
    let sent = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn({
        let (sender, sent) = (conn.sender(), sent.clone());
        async move {
            let payload = Bytes::from(vec![0u8; 64 * 1024]);
            while sender.send(payload.clone()).await.is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let deadline = Instant::now() + DEADLINE;
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(ms(500)).await;
        let now = sent.load(Ordering::Relaxed);
        if now == last {
            return task;
        }
        assert!(Instant::now() < deadline, "the link never filled up");
        last = now;
    }
}

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: a plain query.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Runs `body` in a process of its own: this test binary again, running only
/// the test `name`. Memory is measured per process, and the other tests of
/// this binary run beside each other in it.
fn isolated(name: &str, body: impl FnOnce()) {
    const CHILD: &str = "TCPNET_TEST_ISOLATED";
    if std::env::var_os(CHILD).is_some() {
        return body();
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .expect("run the test in a process of its own");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{name} failed in its own process");
    assert!(text.contains("1 passed"), "{name} did not run: {text}");
}

/// The decider of a pair knows its peer only from the link the peer dialed.
/// The link goes silent; the peer times out first and redials, while the
/// decider still holds the stale link of the same incarnation and rejects
/// the new one. Once the stale link times out too, the pair must link
/// again: both nodes and the network are up.
#[test]
fn a_pair_links_again_after_the_decider_rejected_a_redial_over_its_stale_link() {
    netns(|| async {
        let ids = identities(2);
        let (a, a_addr) = node(
            Settings::new("c")
                .identity(ids[0].clone())
                .heartbeat(ms(100), ms(3000)),
        )
        .await;
        let relay = Relay::start(a_addr).await;
        let (b, _) = node(
            Settings::new("c")
                .identity(ids[1].clone())
                .heartbeat(ms(100), ms(500))
                .peer(relay.peer()),
        )
        .await;
        let pair = [a.clone(), b.clone()];
        linked(&pair).await;
        let stale = a.connections().pop().unwrap();

        relay.stall(0);
        // b notices first and redials; a, still holding the stale link,
        // rejects that one.
        relay.wait_accepted(2).await;
        let reason = within("a's stale link to time out", stale.closed()).await;
        assert!(matches!(reason, CloseReason::Timeout(_)), "{reason:?}");
        linked(&pair).await;
        eprintln!(
            "linked again after {} relayed connections",
            relay.accepted()
        );
        close_all(&pair).await;
    });
}

/// A broadcast waits for room on a link whose peer reads nothing, while
/// 2,000 topic messages go to another peer. When the broadcast goes out at
/// last, that other peer still gets it: it was never delivered before, so
/// it is no duplicate.
#[test]
fn a_broadcast_overtaken_by_many_later_messages_is_still_delivered() {
    netns(|| async {
        // `slow` links to `a` first, so `a`'s broadcast tries it first.
        let (a, slow) = tokio::join!(start("c"), start("c"));
        full_mesh(&[a.clone(), slow.clone()]).await;
        let c = start("c").await;
        let nodes = [a.clone(), slow.clone(), c.clone()];
        full_mesh(&nodes).await;
        let mut inbox = c.messages();
        let _topic = c.subscribe("t").unwrap();
        wait_until(&nodes, "a to see c's subscription", || {
            a.topic_members("t") == vec![c.id().clone()]
        })
        .await;

        let filler = fill(&link_of(&a, slow.id())).await;
        let mut broadcast = Box::pin({
            let a = a.clone();
            async move { a.broadcast("the broadcast").await }
        });
        assert!(
            futures::poll!(&mut broadcast).is_pending(),
            "the broadcast waits for the slow link"
        );
        let broadcast = tokio::spawn(broadcast);
        for i in 0..2000 {
            assert_eq!(a.publish("t", format!("{i}")).await.unwrap(), 1);
        }

        // The slow peer reads again: the broadcast goes out.
        filler.abort();
        let mut from_a = link_of(&slow, a.id());
        tokio::spawn(async move { while from_a.next().await.is_some() {} });
        let sent = within("the broadcast to go out", broadcast).await.unwrap();
        assert_eq!(sent.unwrap(), 2);
        let got = within("c to get the broadcast", inbox.next())
            .await
            .unwrap();
        assert_eq!(&got.data()[..], b"the broadcast");
        close_all(&nodes).await;
    });
}

/// A peer dies without a word reaching us (its link stalls) and comes back
/// with the same id; its new link replaces the stale one. The topics of its
/// old incarnation are forgotten even when the new one subscribes to
/// nothing (and so never announces), and what the new one subscribed to
/// before the link opened is kept, whichever end decides.
#[test]
fn a_restarted_peer_leaves_no_stale_topics() {
    netns(|| async {
        let keys = identities(3);
        for (a_id, resubscribes) in [(1, false), (3, false), (1, true), (3, true)] {
            let what = format!("a is node {a_id}, the new peer subscribes: {resubscribes}");
            let (a, a_addr) = node(
                Settings::new("c")
                    .identity(keys[a_id - 1].clone())
                    .heartbeat(ms(100), ms(30_000)),
            )
            .await;
            let relay = Relay::start(a_addr).await;
            let peer = || {
                Settings::new("c")
                    .identity(keys[1].clone())
                    .heartbeat(ms(100), ms(30_000))
                    .peer(relay.peer())
                    .mdns(false)
            };
            let (old, _) = node(peer()).await;
            linked(&[a.clone(), old.clone()]).await;
            let room = old.subscribe("t").unwrap();
            wait_until(
                std::slice::from_ref(&a),
                "a to learn the peer's topic",
                || a.topic_members("t") == vec![old.id().clone()],
            )
            .await;
            let stale = a.connections().pop().unwrap();

            relay.stall(0);
            within("the old peer to close", old.close()).await;
            drop(room);
            let new = tcpnet::tcpnet(peer()).unwrap();
            let other = resubscribes.then(|| new.subscribe("u").unwrap());
            new.listen(0, "127.0.0.1").await.unwrap();
            let reason = within("the stale link to be replaced", stale.closed()).await;
            assert_eq!(reason, CloseReason::Replaced, "{what}");
            linked(&[a.clone(), new.clone()]).await;
            let members = |topic: &str| a.topic_members(topic);
            let want_u = if resubscribes {
                vec![new.id().clone()]
            } else {
                vec![]
            };
            wait_until(
                std::slice::from_ref(&a),
                &format!("a to know the new topics ({what})"),
                || members("t").is_empty() && members("u") == want_u,
            )
            .await;
            assert_eq!(a.publish("t", "to nobody").await.unwrap(), 0, "{what}");
            drop(other);
            close_all(&[a, new]).await;
        }
    });
}

/// A peer that reads nothing (its link kept up here by a heartbeat timeout
/// longer than the test, so the stall check does not end it) while this
/// node changes its subscriptions 4,000 times: what waits for that link is
/// one latest state, not a task and a frame per change. Each change states
/// the whole set, so frames per change would hold about 100 MiB (4,000
/// frames of up to 4,000 topic names); the bound leaves room for the 4,000
/// streams themselves (about 12 MiB) and for the allocator's arenas on a
/// loaded machine (2,000 changes grew RSS by 13 MiB once at load 130+).
#[test]
fn a_peer_that_reads_nothing_costs_one_pending_state_not_a_task_per_change() {
    isolated(
        "a_peer_that_reads_nothing_costs_one_pending_state_not_a_task_per_change",
        || {
            netns(|| async {
                let (a, b, ab, _ba) = linked_pair(|| {
                    Settings::new("c").heartbeat(Duration::from_secs(1), Duration::from_secs(600))
                })
                .await;
                let filler = fill(&ab).await;
                let metrics = tokio::runtime::Handle::current().metrics();
                let (tasks, memory) = (metrics.num_alive_tasks(), rss());
                let mut subs = Vec::new();
                for i in 0..4000 {
                    subs.push(a.subscribe(&format!("topic-{i:05}")).unwrap());
                }
                let tasks = metrics.num_alive_tasks().saturating_sub(tasks);
                let grown = rss().saturating_sub(memory);
                eprintln!(
                    "4,000 subscriptions with a stalled peer: {tasks} more tasks, RSS +{} KiB",
                    grown / 1024
                );
                assert!(tasks <= 4, "{tasks} tasks more");
                assert!(grown < 40 << 20, "RSS grew by {} KiB", grown / 1024);
                assert!(ab.close_reason().is_none(), "{:?}", ab.close_reason());
                filler.abort();
                close_all(&[a, b]).await;
            })
        },
    );
}

/// A handle takes a batch of messages and is dropped: another handle, already
/// waiting, gets them at once, without another frame arriving.
#[test]
fn a_dropped_handle_wakes_a_waiting_one_with_what_it_took() {
    netns(|| async {
        // Long heartbeats: nothing but the test's frames crosses the link.
        let slow_beat = || Settings::new("c").heartbeat(ms(5_000), ms(15_000));
        let keys = identities(2);
        let (a, a_addr) = node(slow_beat().identity(keys[0].clone())).await;
        let relay = Relay::start(a_addr).await;
        let (b, _) = node(slow_beat().identity(keys[1].clone()).peer(relay.peer())).await;
        linked(&[a.clone(), b.clone()]).await;
        let ab = link_of(&a, b.id());
        let mut first = link_of(&b, a.id());
        let second = first.clone();

        // Five frames, arriving in one read, are one batch: the first
        // handle takes them all. (Of 1,000 bytes each, so that nothing else
        // the nodes say, a few dozen bytes at a time, passes for the fifth.)
        relay.hold(0);
        for i in 0..5u8 {
            ab.send(vec![i; 1000]).await.unwrap();
        }
        wait_until(
            std::slice::from_ref(&a),
            "the relay to hold five frames",
            || relay.held(0) >= 5 * 1005,
        )
        .await;
        relay.resume(0);
        assert_eq!(within("a message", first.next()).await.unwrap()[0], 0);

        let waiting = waiting_reader(second).await;
        drop(first);
        let got = within("the waiting handle to get what the other took", waiting).await;
        assert_eq!(got.unwrap().unwrap()[0], 1);
        close_all(&[a, b]).await;
    });
}

/// Two handles wait on one link when it ends: both see the end.
#[test]
fn every_waiting_handle_sees_the_end_of_its_link() {
    netns(|| async {
        let (a, b, ab, ba) = linked_pair(|| Settings::new("c")).await;
        let x = waiting_reader(ba.clone()).await;
        let y = waiting_reader(ba.clone()).await;
        ab.close();
        let (x, y) = within("both handles to see the end", async { tokio::join!(x, y) }).await;
        assert_eq!((x.unwrap(), y.unwrap()), (None, None));
        close_all(&[a, b]).await;
    });
}

/// Streams of one-off names, dropped: 10,000 receivers and 10,000
/// procedures leave nothing behind.
#[test]
fn dropped_receivers_and_procedures_leave_nothing_behind() {
    isolated(
        "dropped_receivers_and_procedures_leave_nothing_behind",
        || {
            netns(|| async {
                let s = tcpnet::tcpnet(Settings::new("c").mdns(false)).unwrap();
                let churn = |from: usize, to: usize| {
                    for i in from..to {
                        drop(s.receiver(&format!("reply-{i}")).unwrap());
                        drop(s.procedure(&format!("call-{i}")).unwrap());
                    }
                };
                // The allocator's own growth first, then the measure.
                churn(0, 1_000);
                let before = rss();
                churn(1_000, 11_000);
                let grown = rss().saturating_sub(before);
                eprintln!(
                    "10,000 dropped receivers and procedures: RSS +{} KiB",
                    grown / 1024
                );
                assert!(grown < 2 << 20, "RSS grew by {} KiB", grown / 1024);
            })
        },
    );
}

/// A handler's answer waits for room on a link whose peer reads nothing,
/// and the handler gives up on it: the caller is told the call went
/// unanswered once the link moves again, rather than timing out.
#[test]
fn a_cancelled_answer_leaves_the_call_unanswered_not_timed_out() {
    netns(|| async {
        let (a, b, ab, ba) = linked_pair(|| Settings::new("c")).await;
        let mut calls = b.procedure("p").unwrap();
        // a reads nothing of its link from b: b's answers wait for room.
        let filler = fill(&ba).await;
        let call = tokio::spawn({
            let (a, b) = (a.clone(), b.id().clone());
            async move {
                a.request(&b, "p", "question", Duration::from_secs(10))
                    .await
            }
        });
        let req = within("the request", calls.next()).await.unwrap();
        let mut answer = Box::pin(req.end("answer"));
        assert!(futures::poll!(&mut answer).is_pending(), "no room for it");
        drop(answer);

        filler.abort();
        let mut ab = ab;
        tokio::spawn(async move { while ab.next().await.is_some() {} });
        let result = within("the call to end", call).await.unwrap();
        assert!(
            matches!(
                result,
                Err(Error::Call {
                    error: CallError::Unanswered,
                    ..
                })
            ),
            "{result:?}"
        );
        close_all(&[a, b]).await;
    });
}

/// Heartbeats every 10 ms on a link whose writes the kernel takes in part:
/// the peer drains it in small pieces, and frames come in bursts with gaps
/// longer than the heartbeat interval, so heartbeats go out between bursts
/// and the first frames of a burst, written at once by their senders into a
/// nearly full socket, often go out in part. Every frame arrives whole and
/// in order, and nothing breaks the wire. (The race this guards against, a
/// heartbeat written between the two parts of such a frame, spans a few
/// instructions; the link's unit tests force it.)
#[test]
fn heartbeats_never_land_inside_a_frame_written_in_part() {
    netns(|| async {
        let beat = || Settings::new("c").heartbeat(ms(10), ms(5_000));
        let keys = identities(2);
        let (a, a_addr) = node(beat().identity(keys[0].clone())).await;
        let relay = Relay::start(a_addr).await;
        let (b, _) = node(beat().identity(keys[1].clone()).peer(relay.peer())).await;
        let pair = [a.clone(), b.clone()];
        linked(&pair).await;
        let (mut a_errors, mut b_errors) = (a.on_error(), b.on_error());
        let ab = link_of(&a, b.id());
        let mut ba = link_of(&b, a.id());
        relay.split(Some((1_400, ms(1))));

        const SENDERS: u8 = 2;
        const EACH: u32 = 1_000;
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let tx = ab.sender();
                tokio::spawn(async move {
                    for i in 0..EACH {
                        tx.send(numbered(s, i)).await.unwrap();
                        if i % 50 == 49 {
                            tokio::time::sleep(ms(15)).await;
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u32; SENDERS as usize];
        while next.iter().any(|n| *n < EACH) {
            let msg = within("the next frame", ba.next()).await.expect("link up");
            let (s, i) = check_numbered(&msg);
            assert_eq!(i, next[s as usize], "sender {s} out of order");
            next[s as usize] += 1;
        }
        for s in senders {
            s.await.unwrap();
        }
        for errors in [&mut a_errors, &mut b_errors] {
            if let Some(Some(e)) = errors.next().now_or_never() {
                panic!("error: {e}");
            }
        }
        assert!(ab.close_reason().is_none(), "{:?}", ab.close_reason());
        close_all(&pair).await;
    });
}

/// Message `i` of sender `s`: a few hundred to a few thousand bytes, each
/// derived from `s`, `i` and its place.
fn numbered(s: u8, i: u32) -> Bytes {
    let len = 300 + (i as usize * 997) % 3_500;
    let mut m = Vec::with_capacity(len);
    m.push(s);
    m.extend_from_slice(&i.to_be_bytes());
    m.extend((5..len).map(|k| (k as u32 ^ i) as u8 ^ s));
    m.into()
}

fn check_numbered(m: &[u8]) -> (u8, u32) {
    assert!(m.len() >= 5, "a frame of {} bytes", m.len());
    let s = m[0];
    let i = u32::from_be_bytes(m[1..5].try_into().unwrap());
    assert_eq!(
        m,
        &numbered(s, i)[..],
        "frame {i} of sender {s} arrived damaged"
    );
    (s, i)
}
