//! What a node measures of its links: round-trip times (from the
//! heartbeats' stamps, and pings), on loopback and through a relay that
//! delays what it forwards. Each test runs in a private network namespace.

mod common;

use std::time::Duration;

use common::relay::Relay;
use common::*;
use futures::StreamExt;
use tcpnet::{Error, LinkInfo, NodeId, Service, Settings};
use tokio::time::{timeout_at, Instant};

/// Heartbeats every 50 ms: a round trip is timed within a few of them.
fn beating() -> Settings {
    Settings::new("c")
        .mdns(false)
        .heartbeat(Duration::from_millis(50), Duration::from_secs(3))
}

/// `s`'s link to `peer` as its member view shows it, once it has a smoothed
/// round-trip time (checked on each member event and every 10 ms).
async fn timed_link(s: &Service, peer: &NodeId) -> LinkInfo {
    let deadline = Instant::now() + DEADLINE;
    let mut events = s.on_member();
    loop {
        let link = s.member(peer).and_then(|m| m.link);
        if let Some(link) = link.clone().filter(|l| l.srtt.is_some()) {
            return link;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for a round trip to {peer}: {link:?}");
        }
        let step = (Instant::now() + Duration::from_millis(10)).min(deadline);
        let _ = timeout_at(step, events.next()).await;
    }
}

/// A node linked to `a` through `peer` (an address), with the settings of
/// [`beating`].
async fn linked_to(a: &Service, peer: String) -> Service {
    let b = start(beating().peer(peer)).await;
    // Through a relay the two ends see different sockets: count links only.
    let both = [a.clone(), b.clone()];
    wait_until(&both, "a link", || {
        both.iter().all(|s| s.connections().len() == 1)
    })
    .await;
    b
}

#[test]
fn round_trips_on_loopback_are_short() {
    netns(|| async {
        let a = start(beating()).await;
        let b = linked_to(&a, format!("127.0.0.1:{}", a.address().unwrap().port)).await;
        for (s, peer) in [(&a, b.id()), (&b, a.id())] {
            let link = timed_link(s, peer).await;
            let (srtt, rttvar) = (link.srtt.unwrap(), link.rttvar.unwrap());
            let ping = s.ping(peer).await.expect("ping");
            eprintln!("loopback: srtt {srtt:?} rttvar {rttvar:?} ping {ping:?}");
            // Generous bounds for a loaded machine: a loopback round trip
            // takes microseconds, and never a heartbeat interval.
            assert!(srtt < Duration::from_millis(50), "srtt {srtt:?}");
            assert!(ping > Duration::ZERO && ping < Duration::from_millis(50));
        }
        close_all(&[a, b]).await;
    });
}

#[test]
fn round_trips_through_a_delaying_relay_are_longer() {
    netns(|| async {
        const DELAY: Duration = Duration::from_millis(40);
        let a = start(beating()).await;
        let port = a.address().unwrap().port;
        let relay = Relay::start(([127, 0, 0, 1], port).into()).await;
        relay.delay(DELAY);
        let b = linked_to(&a, relay.peer()).await;
        for (s, peer) in [(&a, b.id()), (&b, a.id())] {
            let link = timed_link(s, peer).await;
            let (srtt, rttvar) = (link.srtt.unwrap(), link.rttvar.unwrap());
            let ping = s.ping(peer).await.expect("ping");
            eprintln!(
                "relay delaying {DELAY:?} each way: srtt {srtt:?} rttvar {rttvar:?} ping {ping:?}"
            );
            // Each way waits DELAY in the relay at least (more when pieces
            // queue behind one another there); the upper bound only says it
            // is the relay's delay that is measured, on a loaded machine.
            for rtt in [srtt, ping] {
                assert!(rtt >= 2 * DELAY, "{rtt:?} under twice {DELAY:?}");
                assert!(rtt < 2 * DELAY + Duration::from_secs(2), "{rtt:?}");
            }
        }
        close_all(&[a, b]).await;
    });
}

#[test]
fn a_ping_needs_a_link() {
    netns(|| async {
        let a = start(beating()).await;
        let stranger = Service::new("c").unwrap();
        match a.ping(stranger.id()).await {
            Err(Error::NotLinked { peer }) => assert_eq!(&peer, stranger.id()),
            other => panic!("{other:?}"),
        }
        a.close().await;
        assert!(matches!(a.ping(stranger.id()).await, Err(Error::Closed)));
    });
}
