//! Faults: a killed peer, a frozen one, churn around links that must not
//! notice, two live nodes with one id, links that break and are redialed.
//! Each test runs in a private network namespace; the demo example stands in
//! for a peer that is a whole other process.

mod common;

use std::time::Duration;

use common::demo::Demo;
use common::*;
use futures::StreamExt;
use tcpnet::{CloseReason, Connection, Error, Service, Settings};
use tokio::time::Instant;

/// Waits for `s`'s link to the node `peer` and returns it.
async fn link_to(s: &Service, peer: &str) -> Connection {
    let find = || {
        s.connections()
            .into_iter()
            .find(|c| c.peer_id().as_str() == peer)
    };
    wait_until(
        std::slice::from_ref(s),
        &format!("a link to {peer}"),
        || find().is_some(),
    )
    .await;
    find().unwrap()
}

/// A process killed with SIGKILL is noticed at once, through its socket (the
/// heartbeat timeout here is far longer): a close, or a reset when it died
/// with frames unread (a new link's first frames may be), and its lingering
/// mDNS record is verified away after its port refuses the redial, instead
/// of staying for its two-minute lifetime.
#[test]
fn a_killed_peer_is_noticed_through_its_socket_and_its_record_dropped() {
    netns(|| async {
        let a =
            start(Settings::new("c").heartbeat(Duration::from_secs(10), Duration::from_secs(60)))
                .await;
        let key = tcpnet::Identity::generate();
        let peer = key.id().to_string();
        let child = Demo::start(&key, &[]);
        let conn = link_to(&a, &peer).await;
        assert!(a.advertised().iter().any(|p| p.as_str() == peer));

        let killed = Instant::now();
        child.signal(libc::SIGKILL);
        let reason = within("the link to close", conn.closed()).await;
        let noticed = killed.elapsed();
        let reset = |e: &std::io::Error| {
            use std::io::ErrorKind::*;
            matches!(e.kind(), ConnectionReset | BrokenPipe)
        };
        assert!(
            match &reason {
                CloseReason::PeerClosed => true,
                CloseReason::Io(e) => reset(e),
                _ => false,
            },
            "{reason:?}"
        );
        eprintln!("SIGKILL noticed after {noticed:?}");

        wait_until(
            std::slice::from_ref(&a),
            "the dead node's record to be dropped",
            || !a.advertised().iter().any(|p| p.as_str() == peer),
        )
        .await;
        eprintln!("its record dropped after {:?}", killed.elapsed());
        assert!(a.connections().is_empty());
        a.close().await;
    });
}

/// A peer that stops answering (SIGSTOP: a laptop asleep) is dropped after
/// the heartbeat timeout with `CloseReason::Timeout`; when it wakes, the
/// pair links again by itself.
#[test]
fn a_frozen_peer_times_out_and_relinks_when_it_wakes() {
    netns(|| async {
        // The demo sends heartbeats every second (the default); 2.5 s of
        // silence is then a real failure.
        let timeout = Duration::from_millis(2500);
        let a = start(Settings::new("c").heartbeat(Duration::from_millis(500), timeout)).await;
        let mut errors = a.on_error();
        let key = tcpnet::Identity::generate();
        let peer = key.id().to_string();
        let child = Demo::start(&key, &[]);
        let conn = link_to(&a, &peer).await;

        let frozen = Instant::now();
        child.signal(libc::SIGSTOP);
        let reason = within("the link to time out", conn.closed()).await;
        let detected = frozen.elapsed();
        assert!(matches!(reason, CloseReason::Timeout(_)), "{reason:?}");
        assert!(
            detected >= timeout,
            "closed after {detected:?}, before the timeout"
        );
        eprintln!("frozen peer dropped after {detected:?} (timeout {timeout:?})");
        let e = within("the error event", async {
            loop {
                match errors.next().await {
                    Some(e @ Error::Link { .. }) => break e,
                    Some(_) => {}
                    None => panic!("error stream ended"),
                }
            }
        })
        .await;
        assert!(e.to_string().contains("nothing heard"), "{e}");

        let woke = Instant::now();
        child.signal(libc::SIGCONT);
        let again = link_to(&a, &peer).await;
        assert_ne!(again.local_addr(), conn.local_addr(), "a new link");
        eprintln!("relinked {:?} after waking", woke.elapsed());
        a.close().await;
    });
}

/// Numbered frames both ways on every link of three stable nodes, while
/// other nodes keep joining and leaving: on the links that stay up, every
/// frame arrives once and in order.
#[test]
fn numbered_frames_survive_churn_on_links_that_stay_up() {
    netns(|| async {
        const N: u64 = 20_000;
        let stable = futures::future::join_all((0..3).map(|_| start("c"))).await;
        full_mesh(&stable).await;
        let stable_ids: Vec<_> = stable.iter().map(|s| s.id().clone()).collect();
        let links: Vec<Connection> = stable.iter().flat_map(|s| s.connections()).collect();
        assert_eq!(links.len(), 6);

        let mut tasks = Vec::new();
        for conn in &links {
            let tx = conn.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..N {
                    tx.send(i.to_be_bytes().to_vec()).await.expect("send");
                }
            }));
            let mut rx = conn.clone();
            tasks.push(tokio::spawn(async move {
                for want in 0..N {
                    let got = rx.next().await.expect("the link stayed up");
                    assert_eq!(u64::from_be_bytes(got[..].try_into().unwrap()), want);
                }
            }));
        }

        // Churn: three rounds of three nodes joining and leaving.
        for round in 0..3 {
            let extra = futures::future::join_all((0..3).map(|_| start("c"))).await;
            let mut all = stable.clone();
            all.extend(extra.iter().cloned());
            wait_until(&all, &format!("churn round {round} linked"), || {
                stable.iter().all(|s| s.connections().len() == 5)
            })
            .await;
            close_all(&extra).await;
            wait_until(&stable, "the churners gone", || {
                stable.iter().all(|s| {
                    s.connections()
                        .iter()
                        .all(|c| stable_ids.contains(c.peer_id()))
                })
            })
            .await;
        }
        for t in tasks {
            within("frames to arrive", t).await.unwrap();
        }
        for conn in &links {
            assert_eq!(conn.close_reason(), None, "stable links stayed up");
        }
        close_all(&stable).await;
    });
}

/// Two live nodes hold one key (so one id). The newer one keeps the links;
/// both get an id-conflict error, and the older does not fight back for
/// them.
#[test]
fn two_live_nodes_with_one_id_get_an_error_not_a_flapping_link() {
    netns(|| async {
        // The twins' id is the smaller: the twins decide.
        let ids = identities(2);
        let twin = ids[0].id().to_string();
        let t = start(Settings::new("c").identity(ids[1].clone())).await;
        let older = start(Settings::new("c").identity(ids[0].clone())).await;
        link_to(&t, &twin).await;
        // The first link, which may be told to `on_connection` after it
        // is listed, is not counted below.
        let first = link_to(&older, t.id().as_str()).await;
        let first = (first.local_addr(), first.remote_addr());
        let mut older_errors = older.on_error();
        let mut older_links = older.on_connection();
        let newer = tcpnet::tcpnet(Settings::new("c").identity(ids[0].clone())).unwrap();
        let mut newer_errors = newer.on_error();
        newer.listen(0, "0.0.0.0").await.unwrap();

        for (which, errors) in [("older", &mut older_errors), ("newer", &mut newer_errors)] {
            within(&format!("the {which} twin's id-conflict error"), async {
                loop {
                    match errors.next().await {
                        Some(Error::IdConflict { id, .. }) => {
                            assert_eq!(id.as_str(), twin);
                            break;
                        }
                        Some(_) => {}
                        None => panic!("error stream ended"),
                    }
                }
            })
            .await;
        }
        // The third node's one link to that id is the newer twin's.
        wait_until(
            &[t.clone(), newer.clone()],
            "t linked to the newer twin",
            || t.connections().len() == 1 && newer.connections().len() == 1,
        )
        .await;
        let tn = link_to(&t, &twin).await;
        let mut nt = link_to(&newer, t.id().as_str()).await;
        assert_eq!(tn.local_addr(), nt.remote_addr());
        tn.send("to the newer twin").await.unwrap();
        assert_eq!(
            &within("data", nt.next()).await.unwrap()[..],
            b"to the newer twin"
        );
        // The older twin decides its links, so a redial of its own may open
        // for a moment before the peer answers it with the conflict; then it
        // is closed, and not redialed.
        wait_until(
            std::slice::from_ref(&older),
            "the older twin unlinked",
            || older.connections().is_empty(),
        )
        .await;
        use futures::FutureExt;
        let mut opened = 0;
        while let Some(Some(c)) = older_links.next().now_or_never() {
            if (c.local_addr(), c.remote_addr()) != first {
                opened += 1;
            }
        }
        assert!(opened <= 1, "the older twin relinked {opened} times");
        close_all(&[t, older, newer]).await;
    });
}

/// Without mDNS, a static peer added at run time links; when its link is
/// closed, it is redialed and links again.
#[test]
fn static_peers_link_without_mdns_and_are_redialed() {
    netns(|| async {
        let b = tcpnet::tcpnet(Settings::new("c").mdns(false)).unwrap();
        let port = b.listen(0, "127.0.0.1").await.unwrap().port;
        let a = tcpnet::tcpnet(Settings::new("c").mdns(false)).unwrap();
        a.listen(0, "127.0.0.1").await.unwrap();
        assert!(matches!(
            a.add_peer("127.0.0.1").await,
            Err(Error::InvalidAddress { .. })
        ));
        a.add_peer(&format!("127.0.0.1:{port}")).await.unwrap();
        full_mesh(&[a.clone(), b.clone()]).await;
        assert!(a.advertised().is_empty(), "nothing came from mDNS");

        let first = b.connections().pop().unwrap();
        first.close();
        let other = || {
            b.connections()
                .into_iter()
                .find(|c| c.remote_addr() != first.remote_addr())
        };
        wait_until(std::slice::from_ref(&b), "a new link", || other().is_some()).await;
        let again = other().unwrap();
        again.send("back").await.unwrap();
        let mut ab = link_to(&a, b.id().as_str()).await;
        assert_eq!(&within("data", ab.next()).await.unwrap()[..], b"back");
        close_all(&[a, b]).await;
    });
}
