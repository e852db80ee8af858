//! Correctness where timing is against us: faults that take a stale link, a
//! peer that stops reading, or a race between tasks to show. Each test runs
//! in a private network namespace; links that must go stale, be held back or
//! trickle go through the relay of `common::relay`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::relay::Relay;
use common::*;
use tcpnet::{CloseReason, NodeId, Service, Settings};

fn id(n: u32) -> String {
    format!("{n:032x}")
}

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

/// The decider of a pair knows its peer only from the link the peer dialed.
/// The link goes silent; the peer times out first and redials, while the
/// decider still holds the stale link of the same incarnation and rejects
/// the new one. Once the stale link times out too, the pair must link
/// again: both nodes and the network are up.
#[test]
fn a_pair_links_again_after_the_decider_rejected_a_redial_over_its_stale_link() {
    netns(|| async {
        let (a, a_addr) = node(Settings::new("c").id(id(1)).heartbeat(ms(100), ms(3000))).await;
        let relay = Relay::start(a_addr).await;
        let (b, _) = node(
            Settings::new("c")
                .id(id(2))
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
