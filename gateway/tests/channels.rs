//! Channels across three gateway processes on a private LAN.

mod common;

use std::collections::HashMap;

use common::{http, netns, until, Client, Lan};
use serde_json::json;

/// Publishers on every node send numbered messages; every subscriber on
/// every node receives each exactly once, in each publisher's order.
#[test]
fn every_subscriber_gets_every_message_once_in_publisher_order() {
    netns(|| async {
        let lan = Lan::with_gateways(3, &["--rate", "100000", "--burst", "100000"]).await;
        let mut subs = Vec::new();
        for g in 0..3 {
            for _ in 0..2 {
                let mut c = Client::connect(&lan.gateways[g].ws("/ws")).await;
                c.subscribe("load", false).await;
                subs.push(c);
            }
        }
        // Every node must see every subscriber before publishing.
        for g in 0..3 {
            let url = format!("{}/channels/load", lan.url(g));
            until("presence of all subscribers", || async {
                http("GET", &url, None).await.1["members"].as_array().map(Vec::len) == Some(6)
            })
            .await;
        }
        const N: u64 = 400;
        let mut pubs = Vec::new();
        for g in 0..3 {
            for _ in 0..2 {
                pubs.push(Client::connect(&lan.gateways[g].ws("/ws")).await);
            }
        }
        let publishers: Vec<String> = pubs.iter().map(|p| p.conn().to_string()).collect();
        let total = N as usize * publishers.len();
        // Subscribers read as the messages come (a client that does not
        // read is disconnected: see the slow client test).
        let readers: Vec<_> = subs
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                let publishers = publishers.clone();
                tokio::spawn(async move {
                    let mut next: HashMap<String, u64> = HashMap::new();
                    for _ in 0..total {
                        let m = s.next().await;
                        assert_eq!(m["type"], "message", "subscriber {i}: {m}");
                        assert_eq!(m["channel"], "load");
                        let from = m["from"]["conn"].as_str().expect("conn").to_string();
                        assert!(publishers.contains(&from), "{m}");
                        assert_eq!(
                            m["from"]["node"].as_str(),
                            from.rsplit_once('.').map(|(n, _)| n),
                            "the node named is the publisher's"
                        );
                        let want = next.entry(from).or_default();
                        assert_eq!(m["data"]["n"], json!(*want), "subscriber {i}: out of order or twice");
                        *want += 1;
                    }
                    assert!(next.values().all(|n| *n == N));
                    let extra = s.ping().await;
                    assert!(extra.is_empty(), "subscriber {i} got more: {extra:?}");
                })
            })
            .collect();
        let tasks: Vec<_> = pubs
            .into_iter()
            .map(|mut p| {
                tokio::spawn(async move {
                    for n in 0..N {
                        p.send(json!({"type":"publish","channel":"load","data":{"n":n}}))
                            .await;
                    }
                    // Every publish before the pong was handled, none refused.
                    let before = p.ping().await;
                    assert!(before.is_empty(), "publisher got {before:?}");
                    p
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("publisher");
        }
        for r in readers {
            r.await.expect("subscriber");
        }
    });
}
