//! Memory a linked peer can make a node hold, measured as the resident set
//! of this test process (one test in this binary, so nothing else runs
//! beside it). The tables' own accounting is asserted in the router's unit
//! tests; this measures what the process really holds.

mod common;

use common::attacker::{self, Claim};
use common::*;
use futures::StreamExt;
use std::net::Ipv4Addr;
use tcpnet::{Error, Identity, Settings};

const CLUSTER: &str = "attacked";

/// Resident set of this process, in bytes.
fn rss() -> usize {
    rss_of(std::process::id())
}

/// A linked stranger sends subscription messages for 128 made-up nodes,
/// each with a key of its own and its message signed with it (so each is
/// a node as far as A can tell), each with 2,000 topics of 200 bytes (about
/// 50 MiB of names in all, each set just under the budget of one node):
/// the node must hold a bounded share of it, report what it refused, and
/// its real link keep working.
#[test]
fn subscriptions_of_made_up_nodes_are_bounded() {
    netns(|| async {
        let (a, b) = tokio::join!(start(Settings::new(CLUSTER)), start(Settings::new(CLUSTER)));
        full_mesh(&[a.clone(), b.clone()]).await;
        let mut errors = a.on_error();
        let me = Claim::stranger(CLUSTER);
        let port = a.address().unwrap().port;
        let mut s = attacker::join(Ipv4Addr::new(127, 0, 0, 9), port, &me)
            .await
            .expect("an open cluster links a stranger");
        let keys: Vec<Identity> = (0..128).map(|_| Identity::generate()).collect();
        let before = rss();
        s.subscribe_made_up(&keys).await.expect("send");
        s.sync(&me.id, 1).await;
        let grew = rss().saturating_sub(before);
        eprintln!("the node grew by {} KiB", grew >> 10);
        assert!(
            grew < 64 << 20,
            "the node grew by {} MiB holding made-up subscriptions",
            grew >> 20
        );
        within("an OverBudget report", async {
            while let Some(e) = errors.next().await {
                if let Error::OverBudget { what, .. } = e {
                    assert_eq!(what, "topics of all nodes");
                    return;
                }
            }
        })
        .await;
        let ab = a
            .connections()
            .into_iter()
            .find(|c| c.peer_id() == b.id())
            .unwrap();
        let mut ba = b
            .connections()
            .into_iter()
            .find(|c| c.peer_id() == a.id())
            .unwrap();
        ab.send("still up").await.unwrap();
        let got = within("A's message", ba.next()).await;
        assert_eq!(&got.unwrap()[..], b"still up");
        close_all(&[a, b]).await;
    });
}
