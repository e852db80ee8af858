//! The cluster secret: who links, who does not, and what a man in the middle
//! can do. Each test runs in a private network namespace.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use common::*;
use futures::StreamExt;
use tcpnet::{CloseReason, Error, Events, Service, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The next handshake error on `errors`.
async fn handshake_error(errors: &mut Events<Error>) -> String {
    within("a handshake error", async {
        loop {
            match errors.next().await {
                Some(Error::Handshake { reason, .. }) => break reason,
                Some(_) => {}
                None => panic!("error stream ended"),
            }
        }
    })
    .await
}

/// Nodes with the same secret link and carry data; a node without a secret
/// and one with another secret each get a clear error and never link with
/// anyone (so never receive a frame).
#[test]
fn the_right_secret_links_and_no_or_another_secret_never_does() {
    netns(|| async {
        let with = || Settings::new("c").secret("correct horse battery staple, stapled");
        let (a, b) = tokio::join!(start(with()), start(with()));
        full_mesh(&[a.clone(), b.clone()]).await;
        let (ab, mut ba) = (
            a.connections().pop().unwrap(),
            b.connections().pop().unwrap(),
        );
        ab.send("sealed").await.unwrap();
        assert_eq!(&within("data", ba.next()).await.unwrap()[..], b"sealed");

        let none = tcpnet::tcpnet("c").unwrap();
        let wrong =
            tcpnet::tcpnet(Settings::new("c").secret("another one, just as long as the first"))
                .unwrap();
        let (mut none_errors, mut wrong_errors) = (none.on_error(), wrong.on_error());
        let mut none_conns = none.on_connection();
        let mut wrong_conns = wrong.on_connection();
        none.listen(0, "0.0.0.0").await.unwrap();
        wrong.listen(0, "0.0.0.0").await.unwrap();

        let reason = handshake_error(&mut none_errors).await;
        assert!(reason.contains("secret"), "{reason}");
        let reason = handshake_error(&mut wrong_errors).await;
        assert!(reason.contains("secret"), "{reason}");
        // Every pair of the four has tried by the time each outsider has seen
        // an error from each of the three others.
        for errors in [&mut none_errors, &mut wrong_errors] {
            for _ in 0..2 {
                let reason = handshake_error(errors).await;
                assert!(reason.contains("secret"), "{reason}");
            }
        }
        assert!(none.connections().is_empty() && wrong.connections().is_empty());
        assert_eq!((a.connections().len(), b.connections().len()), (1, 1));
        use futures::FutureExt;
        assert!(none_conns.next().now_or_never().is_none());
        assert!(wrong_conns.next().now_or_never().is_none());
        close_all(&[a, b, none, wrong]).await;
    });
}

/// Forwards one connection to `to`, flipping one bit of the byte at offset
/// `flip_at` of the first direction's stream (if `flip` is still set).
async fn relay(client: TcpStream, to: SocketAddr, flip_at: usize, flip: Arc<AtomicBool>) {
    let server = TcpStream::connect(to).await.unwrap();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let mut seen = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if seen <= flip_at && flip_at < seen + n && flip.swap(false, Ordering::SeqCst) {
                buf[flip_at - seen] ^= 0x01;
            }
            seen += n;
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

/// A man in the middle flips one bit well into the sealed stream: the link
/// breaks with an authentication error, every message delivered before it is
/// intact and in order, none after it is delivered, and the static peer's
/// redial (through a relay that no longer tampers) links again.
#[test]
fn a_flipped_bit_breaks_the_link_not_the_data() {
    netns(|| async {
        let secret = "s3cr3t-for-the-man-in-the-middle-test";
        let b = tcpnet::tcpnet(Settings::new("c").secret(secret).mdns(false)).unwrap();
        let b_addr: SocketAddr =
            format!("127.0.0.1:{}", b.listen(0, "127.0.0.1").await.unwrap().port)
                .parse()
                .unwrap();
        let mut b_errors = b.on_error();

        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let flip = Arc::new(AtomicBool::new(true));
        let armed = flip.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = proxy.accept().await {
                tokio::spawn(relay(client, b_addr, 64 * 1024, armed.clone()));
            }
        });

        let a = tcpnet::tcpnet(
            Settings::new("c")
                .secret(secret)
                .mdns(false)
                .peer(proxy_addr.to_string()),
        )
        .unwrap();
        a.listen(0, "127.0.0.1").await.unwrap();
        // (Not `full_mesh`: through the relay, the two ends see different
        // socket addresses.)
        wait_until(&[a.clone(), b.clone()], "a link through the relay", || {
            a.connections().len() == 1 && b.connections().len() == 1
        })
        .await;
        let ab = a.connections().pop().unwrap();
        let mut ba = b.connections().pop().unwrap();

        // 1000 numbered messages of 200 bytes: 200 KB, well past the flip.
        let msg = |i: u32| {
            let mut m = vec![(i % 251) as u8; 200];
            m[..4].copy_from_slice(&i.to_be_bytes());
            m
        };
        let sender = tokio::spawn({
            let ab = ab.clone();
            async move {
                for i in 0..1000u32 {
                    if ab.send(msg(i)).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut got = 0u32;
        while let Some(m) = within("data or the end of the link", ba.next()).await {
            assert_eq!(&m[..], &msg(got)[..], "message {got} intact and in order");
            got += 1;
        }
        assert!(got < 1000, "the tampered link must not deliver everything");
        assert!(!flip.load(Ordering::SeqCst), "the relay did flip a bit");
        match ba.closed().await {
            CloseReason::Protocol(reason) => {
                assert!(reason.contains("authentication"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let e = within("b's error event", async {
            loop {
                match b_errors.next().await {
                    Some(e @ Error::Protocol { .. }) => break e,
                    Some(_) => {}
                    None => panic!("error stream ended"),
                }
            }
        })
        .await;
        assert!(e.to_string().contains("authentication"), "{e}");
        eprintln!("tampered link broke after {got} intact messages: {e}");
        sender.await.unwrap();

        // The static peer is redialed through the relay, which now forwards
        // faithfully: the pair links again.
        let relinked = || {
            b.connections()
                .into_iter()
                .any(|c| c.remote_addr() != ba.remote_addr())
        };
        wait_until(std::slice::from_ref(&b), "a new link", relinked).await;
        close_all(&[a, b]).await;
    });
}

/// A hello altered on the way (here its incarnation, which no hello check
/// can catch) fails the secret handshake, whose prologue covers both hellos.
#[test]
fn an_altered_hello_fails_the_secret_handshake() {
    netns(|| async {
        let secret = "a secret for the altered-prologue test";
        let b = tcpnet::tcpnet(Settings::new("c").secret(secret).mdns(false)).unwrap();
        let b_addr: SocketAddr =
            format!("127.0.0.1:{}", b.listen(0, "127.0.0.1").await.unwrap().port)
                .parse()
                .unwrap();
        let mut b_errors = b.on_error();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        // Offset 4 (length) + 1 (kind) + 6 (magic) + 2 (version): the first
        // byte of the incarnation in the dialer's hello. Flip it on every
        // connection.
        tokio::spawn(async move {
            while let Ok((client, _)) = proxy.accept().await {
                tokio::spawn(relay(client, b_addr, 13, Arc::new(AtomicBool::new(true))));
            }
        });
        let a = tcpnet::tcpnet(
            Settings::new("c")
                .secret(secret)
                .mdns(false)
                .peer(proxy_addr.to_string()),
        )
        .unwrap();
        let mut a_errors = a.on_error();
        a.listen(0, "127.0.0.1").await.unwrap();
        let reason = handshake_error(&mut b_errors).await;
        assert!(reason.contains("secret"), "{reason}");
        let reason = handshake_error(&mut a_errors).await;
        assert!(reason.contains("secret"), "{reason}");
        assert!(a.connections().is_empty() && b.connections().is_empty());
        close_all(&[a, b]).await;
    });
}

/// The secret is checked when the service is created.
#[test]
fn an_empty_secret_is_refused() {
    assert!(matches!(
        Service::new(Settings::new("c").secret("")),
        Err(Error::InvalidSetting {
            setting: "secret",
            ..
        })
    ));
}

/// Waits until every node has had `more` sends to every other node
/// accepted since now; `accepted` counts them by pair (`from * n + to`).
async fn traffic(nodes: &[Service], accepted: &[AtomicU32], more: u32, what: &str) {
    let n = nodes.len();
    let count = |k: usize| accepted[k].load(Ordering::Relaxed);
    let pairs: Vec<usize> = (0..n * n).filter(|k| k / n != k % n).collect();
    let from: Vec<u32> = pairs.iter().map(|&k| count(k)).collect();
    wait_until(nodes, what, || {
        pairs.iter().zip(&from).all(|(&k, &f)| count(k) >= f + more)
    })
    .await;
}

/// A 5-node cluster rotates its secret while every node sends numbered
/// messages to every other: the new secret is installed on every node,
/// then made primary on every node, then the old one is removed on every
/// node. Every message a send accepted arrives, once, in order; every link
/// made under the old key goes down once (closed by the node removing the
/// key) and is back after one redial; links made under the new key stay.
#[test]
fn a_cluster_rotates_its_secret_while_messages_flow() {
    use std::collections::HashMap;
    use std::time::Duration;
    use tcpnet::{LinkEvent, NodeId};
    use tokio::time::Instant;
    const OLD: &str = "the old cluster secret, 32 bytes or more";
    const NEW: &str = "the new cluster secret, 32 bytes or more";
    const N: usize = 5;
    netns(|| async {
        let nodes: Vec<Service> =
            futures::future::join_all((0..N).map(|_| start(Settings::new("c").secret(OLD)))).await;
        full_mesh(&nodes).await;
        let ids: Vec<NodeId> = nodes.iter().map(|s| s.id().clone()).collect();
        let index = |id: &NodeId| ids.iter().position(|i| i == id).unwrap() as u8;

        // Link changes, as each node sees them, with when they happened in
        // this process's scheduled time: a starved machine stretches a
        // redial on the clock, but not by as much in ticks.
        let clock = ScheduledClock::start();
        type Seen = Arc<std::sync::Mutex<Vec<(Duration, LinkEvent)>>>;
        let watchers: Vec<Seen> = (0..N).map(|_| Seen::default()).collect();
        for (s, seen) in nodes.iter().zip(&watchers) {
            let (mut links, seen, clock) = (s.on_link(), seen.clone(), clock.clone());
            tokio::spawn(async move {
                while let Some(e) = links.next().await {
                    seen.lock().unwrap().push((clock.now(), e));
                }
            });
        }
        // What each node received, by sender: subscribed before any
        // sender starts, so the first message has a reader.
        type Got = Arc<std::sync::Mutex<HashMap<u8, Vec<u32>>>>;
        let received: Vec<Got> = (0..N).map(|_| Got::default()).collect();
        for (s, got) in nodes.iter().zip(&received) {
            let mut inbox = s.messages();
            let (ids, got) = (ids.clone(), got.clone());
            tokio::spawn(async move {
                while let Some(m) = inbox.next().await {
                    let from = ids.iter().position(|i| i == m.from()).unwrap() as u8;
                    assert_eq!(m.data()[0], from, "sender byte");
                    let n = u32::from_be_bytes(m.data()[1..5].try_into().unwrap());
                    got.lock().unwrap().entry(from).or_default().push(n);
                }
            });
        }
        // Each node sends numbered messages to every other; a send the node
        // refuses (no link at that moment) is tried again with the same
        // number, so the numbers accepted have no gaps. `accepted` counts
        // them by pair, so that each step below waits for traffic to flow
        // rather than for a time in which it may or may not have.
        let stop = Arc::new(AtomicBool::new(false));
        let accepted: Arc<Vec<AtomicU32>> =
            Arc::new((0..N * N).map(|_| AtomicU32::new(0)).collect());
        let mut senders = Vec::new();
        for (i, s) in nodes.iter().enumerate() {
            let (s, ids, stop) = (s.clone(), ids.clone(), stop.clone());
            let accepted = accepted.clone();
            senders.push(tokio::spawn(async move {
                let mut next = vec![0u32; N];
                let mut refused = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    for (j, to) in ids.iter().enumerate() {
                        if j == i {
                            continue;
                        }
                        let mut m = vec![i as u8];
                        m.extend_from_slice(&next[j].to_be_bytes());
                        match s.send_to(to, m).await {
                            Ok(()) => {
                                next[j] += 1;
                                accepted[i * N + j].store(next[j], Ordering::Relaxed);
                            }
                            Err(_) => refused += 1,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (next, refused)
            }));
        }
        let flowing = |what: &'static str| traffic(&nodes, &accepted, 25, what);
        flowing("messages under the old key").await;
        for s in &nodes {
            s.install_key(NEW).unwrap();
        }
        flowing("messages with the new key installed").await;
        for s in &nodes {
            s.use_key(NEW).unwrap();
        }
        flowing("messages with the new key in use").await;
        let removed = Instant::now();
        for s in &nodes {
            s.remove_key(OLD).unwrap();
        }
        // Every pair linked again (under the new key, the only one left).
        full_mesh(&nodes).await;
        let relinked = removed.elapsed();
        flowing("messages under the new key alone").await;
        stop.store(true, Ordering::Relaxed);
        let mut sent = Vec::new();
        for t in senders {
            sent.push(within("a sender to stop", t).await.unwrap());
        }
        // Every accepted message arrives (or the deadline says which not).
        let count = |from: usize, to: usize| {
            let got = received[to].lock().unwrap();
            got.get(&(from as u8)).map_or(0, Vec::len)
        };
        let all_in = || {
            sent.iter().enumerate().all(|(from, (next, _))| {
                (0..N).all(|to| to == from || count(from, to) >= next[to] as usize)
            })
        };
        let arrived = tokio::time::timeout(DEADLINE, async {
            while !all_in() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let closing = clock.now();
        close_all(&nodes).await;
        for (from, (next, _)) in sent.iter().enumerate() {
            for (to, got) in received.iter().enumerate() {
                if to == from {
                    continue;
                }
                let want: Vec<u32> = (0..next[to]).collect();
                let got = got
                    .lock()
                    .unwrap()
                    .get(&(from as u8))
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(
                    got, want,
                    "{from} -> {to}: every accepted message, once, in order"
                );
            }
        }
        // Each pair's link went down at most once, closed for the removed
        // key on one end, and each end had it back within one redial.
        let mut longest = Duration::ZERO;
        for (i, w) in watchers.into_iter().enumerate() {
            let seen = std::mem::take(&mut *w.lock().unwrap());
            let mut down: HashMap<u8, Duration> = HashMap::new();
            let mut downs: HashMap<u8, u32> = HashMap::new();
            // What happened before the nodes closed.
            for (at, e) in seen.iter().filter(|(at, _)| *at < closing) {
                match e {
                    LinkEvent::Down(c, why) if *why != CloseReason::Shutdown => {
                        assert!(
                            matches!(why, CloseReason::KeyRemoved | CloseReason::PeerClosed),
                            "node {i}: link to {} down: {why}",
                            c.peer_id()
                        );
                        let p = index(c.peer_id());
                        down.insert(p, *at);
                        *downs.entry(p).or_default() += 1;
                    }
                    LinkEvent::Up(c) => {
                        if let Some(d) = down.remove(&index(c.peer_id())) {
                            longest = longest.max(at.saturating_sub(d));
                        }
                    }
                    _ => {}
                }
            }
            assert!(down.is_empty(), "node {i}: links not back: {down:?}");
            for (p, n) in downs {
                assert!(n <= 1, "node {i}: the link to node {p} went down {n} times");
            }
        }
        assert!(arrived.is_ok());
        let refused: u32 = sent.iter().map(|(_, r)| r).sum();
        eprintln!(
            "rotation: every pair relinked {relinked:?} after the removals began; \
             longest link down {longest:?} (scheduled time); {refused} sends refused while a link was down"
        );
        // The node that removed the key redials after the first backoff
        // step (at most 300 ms); a redial left to the end that saw only the
        // peer's close would wait for a goodbye, at least 1.6 s. The bound,
        // in scheduled time, tells the two apart, with room for a slow
        // handshake.
        assert!(
            longest < Duration::from_millis(1500),
            "a link was down {longest:?} of scheduled time: longer than one redial at once"
        );
    });
}

/// A handshake under way with a key that is removed before it ends links
/// nothing: a member dials A under the old key and stops before its last
/// Noise message; A makes the new key primary and removes the old one; the
/// member's last message then gets no key confirmation, A reports why and
/// counts it, and lists no link; a dial under the new key links.
#[test]
fn a_key_removed_during_a_handshake_links_nothing() {
    use common::attacker::{self, Claim, Refused};
    use std::net::Ipv4Addr;
    use tokio::sync::oneshot;
    const OLD: &str = "the old cluster secret, 32 bytes or more";
    const NEW: &str = "the new cluster secret, 32 bytes or more";
    netns(|| async {
        let a = Service::new(Settings::new("c").mdns(false).secret(OLD)).unwrap();
        let mut errors = a.on_error();
        a.listen(0, "0.0.0.0").await.unwrap();
        let port = a.address().unwrap().port;
        a.install_key(NEW).unwrap();
        let mut member = Claim::stranger("c");
        member.secret = Some(OLD.into());
        let (reached, at_last) = oneshot::channel();
        let (go, resume) = oneshot::channel::<()>();
        let dialing = member.clone();
        let dial = tokio::spawn(async move {
            let pause = async move {
                let _ = reached.send(());
                let _ = resume.await;
            };
            let from = Ipv4Addr::new(127, 0, 0, 2);
            attacker::handshake_pausing(from, port, &dialing, pause).await
        });
        within("the member's handshake under way", at_last)
            .await
            .unwrap();
        a.use_key(NEW).unwrap();
        a.remove_key(OLD).unwrap();
        go.send(()).unwrap();
        let got = within("the end of the member's handshake", dial)
            .await
            .unwrap();
        assert!(
            matches!(&got, Err(Refused::Closed(_))),
            "a handshake under a removed key went on: {:?}",
            got.err()
        );
        let reason = handshake_error(&mut errors).await;
        assert!(reason.contains("removed during the handshake"), "{reason}");
        assert!(a.connections().is_empty());
        assert_eq!(a.stats().handshake_failures.secret, 1);
        member.secret = Some(NEW.into());
        let linked = attacker::join(Ipv4Addr::new(127, 0, 0, 3), port, &member).await;
        assert!(linked.is_ok(), "a member under the new key");
        assert_eq!(a.connections().len(), 1);
        a.close().await;
    });
}

/// A link handshaken under a key that is removed before the link opens
/// (here: while A waits for the member's verdict, the member deciding)
/// never opens: A closes it unannounced, so no one sees a link under a key
/// no longer installed.
#[test]
fn a_key_removed_before_the_verdict_links_nothing() {
    use common::attacker::{self, Claim, ACCEPT};
    use futures::FutureExt;
    use std::net::Ipv4Addr;
    const OLD: &str = "the old cluster secret, 32 bytes or more";
    const NEW: &str = "the new cluster secret, 32 bytes or more";
    netns(|| async {
        let a = start(Settings::new("c").mdns(false).secret(OLD)).await;
        let mut opened = a.on_connection();
        let port = a.address().unwrap().port;
        a.install_key(NEW).unwrap();
        // The member decides (the lower id): A waits for its verdict.
        let member = std::iter::repeat_with(|| Claim::stranger("c"))
            .find(|c| c.id < a.id().to_string())
            .unwrap();
        let mut member = Claim {
            secret: Some(OLD.into()),
            ..member
        };
        let mut session = attacker::handshake(Ipv4Addr::new(127, 0, 0, 2), port, &member)
            .await
            .map_err(|e| format!("{e:?}"))
            .expect("handshaken under the old key");
        a.use_key(NEW).unwrap();
        a.remove_key(OLD).unwrap();
        session.send(ACCEPT, &[]).await.unwrap();
        within("A closing the link", async {
            while session.recv().await.is_some() {}
        })
        .await;
        assert!(opened.next().now_or_never().is_none(), "announced");
        assert!(a.connections().is_empty());
        member.secret = Some(NEW.into());
        let linked = attacker::join(Ipv4Addr::new(127, 0, 0, 3), port, &member).await;
        assert!(linked.is_ok(), "a member under the new key");
        assert_eq!(a.connections().len(), 1);
        a.close().await;
    });
}
