//! Scenarios of one or two services: settings and listen errors, links,
//! closes, static peers. Each runs in a private network namespace (see
//! `common`).

mod common;

use common::*;
use futures::StreamExt;
use tcpnet::{CloseReason, Error, Settings};

#[test]
fn bad_settings_each_give_their_error() {
    let name_err = |n: &str| match tcpnet::tcpnet(n) {
        Err(Error::InvalidName { reason, .. }) => reason,
        other => panic!("{n:?} gave {other:?}"),
    };
    assert!(name_err("").contains("empty"));
    assert!(name_err(&"a".repeat(64)).contains("63"));
    assert!(name_err("my_cluster").contains("letters"));
    assert!(name_err("clüster").contains("letters"));
    // 63 bytes is fine: one DNS label.
    tcpnet::tcpnet("a".repeat(63)).unwrap();

    for id in ["", "xyz", "12 34", &"a".repeat(64)] {
        match tcpnet::NodeId::parse(id) {
            Err(Error::InvalidId { .. }) => {}
            other => panic!("id {id:?} gave {other:?}"),
        }
    }
    let garbage = std::env::temp_dir().join(format!("tcpnet-garbage-{}.key", std::process::id()));
    std::fs::write(&garbage, b"not a key").unwrap();
    match tcpnet::tcpnet(Settings::new("c").key_file(&garbage)) {
        Err(Error::Key { key, .. }) => assert!(key.contains("garbage"), "{key}"),
        other => panic!("a key file of garbage gave {other:?}"),
    }
    std::fs::remove_file(&garbage).unwrap();
    match tcpnet::tcpnet(Settings::new("c").max_frame_len(0)) {
        Err(Error::InvalidSetting { setting, .. }) => assert_eq!(setting, "max_frame_len"),
        other => panic!("{other:?}"),
    }
    match tcpnet::tcpnet(Settings::new("c").queue_len(0)) {
        Err(Error::InvalidSetting { setting, .. }) => assert_eq!(setting, "queue_len"),
        other => panic!("{other:?}"),
    }
    match tcpnet::tcpnet(Settings::new("c").queue_bytes(0)) {
        Err(Error::InvalidSetting { setting, .. }) => assert_eq!(setting, "queue_bytes"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_listen_arguments_each_give_their_error() {
    netns(|| async {
        let s = tcpnet::tcpnet("c").unwrap();
        for addr in ["", "not an address!", "224.0.0.1", "no-such-host.invalid"] {
            match s.listen(0, addr).await {
                Err(Error::InvalidAddress { .. }) => {}
                other => panic!("{addr:?} gave {other:?}"),
            }
        }
        // An address that is not on this host.
        match s.listen(0, "10.99.0.77").await {
            Err(Error::Bind { .. }) => {}
            other => panic!("gave {other:?}"),
        }
        // A port in use.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        match s.listen(port, "127.0.0.1").await {
            Err(Error::Bind { addr, .. }) => assert_eq!(addr.port(), port),
            other => panic!("gave {other:?}"),
        }
        // After all those failures the service still listens fine.
        s.listen(0, "127.0.0.1").await.unwrap();
        assert!(matches!(
            s.listen(0, "127.0.0.1").await,
            Err(Error::AlreadyListening)
        ));
        s.close().await;
        assert!(matches!(s.listen(0, "127.0.0.1").await, Err(Error::Closed)));
    });
}

#[test]
fn address_before_and_after_listen_and_after_close() {
    netns(|| async {
        let s = tcpnet::tcpnet("c").unwrap();
        assert_eq!(s.address(), None);
        let got = s.listen(0, "0.0.0.0").await.unwrap();
        let addr = s.address().unwrap();
        assert_eq!(addr, got);
        assert_ne!(addr.port, 0);
        // 0.0.0.0 is expanded to the namespace's one interface address.
        assert_eq!(
            addr.addrs,
            vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        s.close().await;
        assert_eq!(s.address(), None);

        let s = tcpnet::tcpnet("c").unwrap();
        let addr = s.listen(0, "localhost").await.unwrap();
        assert!(addr.addrs.iter().all(|ip| ip.is_loopback()), "{addr:?}");
        s.close().await;
    });
}

#[test]
fn close_before_listen_twice_and_right_after_listen() {
    netns(|| async {
        let s = tcpnet::tcpnet("c").unwrap();
        let mut closed = s.on_close();
        s.close().await;
        within("close event", closed.next()).await.unwrap();
        s.close().await; // twice is fine

        let s = tcpnet::tcpnet("c").unwrap();
        s.listen(0, "0.0.0.0").await.unwrap();
        s.close().await; // right after listen, no links
        assert!(s.connections().is_empty());
    });
}

#[test]
fn event_and_awaited_forms_both_fire() {
    netns(|| async {
        let s = tcpnet::tcpnet("c").unwrap();
        let mut listening = s.on_listening();
        let mut closed = s.on_close();
        let addr = s.listen(0, "127.0.0.1").await.unwrap();
        assert_eq!(
            within("listening event", listening.next()).await,
            Some(addr)
        );
        s.close().await;
        within("close event", closed.next()).await.unwrap();
    });
}

async fn data_both_ways(a: &tcpnet::Service, b: &tcpnet::Service) {
    let mut ab = a.connections().pop().unwrap();
    let mut ba = b.connections().pop().unwrap();
    ab.send("ping").await.unwrap();
    ba.send("pong").await.unwrap();
    assert_eq!(&within("ping", ba.next()).await.unwrap()[..], b"ping");
    assert_eq!(&within("pong", ab.next()).await.unwrap()[..], b"pong");
}

/// Links `stays` and `leaves`, sends both ways, closes `leaves`: `stays`
/// sees the peer close its link.
async fn link_talk_and_leave(stays: &tcpnet::Service, leaves: &tcpnet::Service) {
    full_mesh(&[stays.clone(), leaves.clone()]).await;
    data_both_ways(stays, leaves).await;
    let link = stays.connections().pop().unwrap();
    leaves.close().await;
    assert_eq!(
        within("the close seen by the node that stays", link.closed()).await,
        CloseReason::PeerClosed
    );
}

#[test]
fn two_nodes_started_together() {
    netns(|| async {
        let (a, b) = tokio::join!(start("c"), start("c"));
        link_talk_and_leave(&b, &a).await;
        assert!(b.connections().is_empty());
        b.close().await;
    });
}

#[test]
fn two_nodes_started_one_after_the_other() {
    netns(|| async {
        let a = start("c").await;
        let b = start("c").await;
        link_talk_and_leave(&a, &b).await;
        a.close().await;
    });
}

#[test]
fn nodes_join_one_by_one_then_leave_one_by_one() {
    netns(|| async {
        let mut nodes = Vec::new();
        for n in 1..=3 {
            nodes.push(start("c").await);
            if n > 1 {
                full_mesh(&nodes).await;
            }
            assert!(nodes.iter().all(|s| s.connections().len() == n - 1));
        }
        while let Some(leaving) = nodes.pop() {
            let links: Vec<_> = nodes
                .iter()
                .flat_map(|s| s.connections())
                .filter(|c| c.peer_id() == leaving.id())
                .collect();
            leaving.close().await;
            for l in links {
                within("peer sees the close", l.closed()).await;
            }
            let left = nodes.len();
            assert!(nodes
                .iter()
                .all(|s| s.connections().len() == left.saturating_sub(1)));
        }
    });
}

#[test]
fn connection_event_fires_on_both_ends_once() {
    netns(|| async {
        let a = tcpnet::tcpnet("c").unwrap();
        let b = tcpnet::tcpnet("c").unwrap();
        let (mut ea, mut eb) = (a.on_connection(), b.on_connection());
        let (ra, rb) = tokio::join!(a.listen(0, "0.0.0.0"), b.listen(0, "0.0.0.0"));
        ra.unwrap();
        rb.unwrap();
        let ca = within("event at a", ea.next()).await.unwrap();
        let cb = within("event at b", eb.next()).await.unwrap();
        assert_eq!(ca.peer_id(), b.id());
        assert_eq!(cb.peer_id(), a.id());
        assert_eq!(ca.local_addr(), cb.remote_addr());
        close_all(&[a, b]).await;
        // No second connection event was emitted on either end.
        use futures::FutureExt;
        assert!(
            !matches!(ea.next().now_or_never(), Some(Some(_))),
            "second event at a"
        );
        assert!(
            !matches!(eb.next().now_or_never(), Some(Some(_))),
            "second event at b"
        );
    });
}

/// An address whose interface is down: the port binds, but mDNS cannot
/// announce there, so `listen` waits for the announcement (then fails).
fn down_interface() -> &'static str {
    sh("ip link add v0 type veth peer name v1 && ip addr add 10.99.0.1/24 dev v0");
    "10.99.0.1"
}

#[test]
fn listen_where_mdns_cannot_announce_is_an_error() {
    netns(|| async {
        let s = tcpnet::tcpnet("c").unwrap();
        match s.listen(0, down_interface()).await {
            Err(e @ Error::Mdns { .. }) => assert!(e.to_string().contains("announce"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.address(), None);
        s.listen(0, "127.0.0.1").await.unwrap();
        s.close().await;
    });
}

#[test]
fn a_cancelled_listen_stops_what_it_started() {
    netns(|| async {
        let s = tcpnet::tcpnet("c").unwrap();
        let addr = down_interface();
        let port = std::net::TcpListener::bind((addr, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Cancelled while it waits for the announcement, with its socket bound
        // and its accept loop running.
        let cancelled =
            tokio::time::timeout(std::time::Duration::from_millis(300), s.listen(port, addr)).await;
        assert!(cancelled.is_err(), "listen returned {cancelled:?}");
        assert_eq!(s.address(), None);
        // The port is free again: the accept loop and its socket are gone.
        within("the port to be released", async {
            loop {
                match std::net::TcpListener::bind((addr, port)) {
                    Ok(_) => break,
                    Err(_) => tokio::task::yield_now().await,
                }
            }
        })
        .await;
        // And the service can still listen and link.
        let other = start("c").await;
        s.listen(0, "0.0.0.0").await.unwrap();
        full_mesh(&[s.clone(), other.clone()]).await;
        close_all(&[s, other]).await;
    });
}

#[test]
fn close_during_listen_stops_the_node_before_it_returns() {
    netns(|| async {
        let peer = start("c").await;
        let s = tcpnet::tcpnet("c").unwrap();
        let mut closed = s.on_close();
        let mut conns = s.on_connection();
        let (listened, ()) = tokio::join!(s.listen(0, "0.0.0.0"), async {
            tokio::task::yield_now().await;
            s.close().await;
        });
        // Either order is allowed; what matters is the state after close.
        let _ = listened;
        within("close event", closed.next()).await.unwrap();
        assert_eq!(s.address(), None);
        assert!(s.connections().is_empty());
        // The peer sees no lasting link to the closed node.
        wait_until(std::slice::from_ref(&peer), "peer to hold no link", || {
            peer.connections().is_empty()
        })
        .await;
        // Nothing opened after close returned.
        use futures::FutureExt;
        while let Some(Some(c)) = conns.next().now_or_never() {
            assert!(c.close_reason().is_some(), "a link opened after close");
        }
        peer.close().await;
    });
}

#[test]
fn a_dropped_close_still_closes_and_a_later_close_waits_for_it() {
    netns(|| async {
        let (a, b, _, ba) = linked_pair(|| Settings::new("c")).await;
        let mut closed = a.on_close();
        // Dropped at its first await.
        let _ = tokio::time::timeout(std::time::Duration::from_micros(1), a.close()).await;
        a.close().await;
        within("close event", closed.next()).await.unwrap();
        assert_eq!(a.address(), None);
        assert_eq!(
            within("b to see the close", ba.closed()).await,
            CloseReason::PeerClosed
        );
        use futures::FutureExt;
        assert!(
            !matches!(closed.next().now_or_never(), Some(Some(()))),
            "two close events"
        );
        b.close().await;
    });
}

/// `disconnect` ends a pair's link for good: both ends lose it, and the
/// disconnecting end (the pair's decider here) refuses the other's redials,
/// so the pair stays apart, until `reconnect` links it again.
#[test]
fn a_disconnected_peer_stays_apart_until_reconnected() {
    netns(|| async {
        let ids = identities(2);
        let settings = |n: usize| Settings::new("c").identity(ids[n].clone());
        let (a, b) = tokio::join!(start(settings(0)), start(settings(1)));
        full_mesh(&[a.clone(), b.clone()]).await;
        let ba = b.connections().pop().unwrap();
        a.disconnect(b.id()).await.unwrap();
        assert_eq!(
            within("b's link to close", ba.closed()).await,
            CloseReason::PeerClosed
        );
        // b goes on dialing a; a, the decider, rejects each link before it
        // opens (the mesh's unit tests pin that down), quietly.
        let mut b_links = b.on_connection();
        let mut a_errors = a.on_error();
        wait_until(
            &[a.clone(), b.clone()],
            "both ends to drop the link",
            || a.connections().is_empty() && b.connections().is_empty(),
        )
        .await;
        a.reconnect(b.id()).await.unwrap();
        let relinked = within("the pair to link again", b_links.next()).await;
        assert_eq!(relinked.unwrap().peer_id(), a.id());
        full_mesh(&[a.clone(), b.clone()]).await;
        // Refusing b's redials reported nothing as an error.
        assert!(futures::FutureExt::now_or_never(a_errors.next()).is_none());
        close_all(&[a, b]).await;
    });
}
