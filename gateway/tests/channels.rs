//! Channels across three gateway processes on a private LAN.

mod common;

use std::collections::HashMap;

use common::{http, netns, Client, Lan};
use serde_json::json;

/// Publishers on every node send numbered messages; every subscriber on
/// every node receives each exactly once, in each publisher's order.
#[test]
fn every_subscriber_gets_every_message_once_in_publisher_order() {
    netns(|| async {
        // The test's readers share two cores with three gateways: room for
        // them to fall behind without being taken for slow clients.
        let lan = Lan::with_gateways(
            3,
            &[
                "--rate",
                "100000",
                "--burst",
                "100000",
                "--queue-len",
                "100000",
                "--queue-bytes",
                "100000000",
            ],
        )
        .await;
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
            lan.wait_members(g, "load", 6).await;
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
                        assert_eq!(
                            m["data"]["n"],
                            json!(*want),
                            "subscriber {i}: out of order or twice"
                        );
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

/// A node with no subscriber to a channel receives none of its bytes: its
/// host's kernel counts what arrives.
#[test]
fn a_node_without_subscribers_receives_no_bytes_of_the_channel() {
    netns(|| async {
        let lan = Lan::with_gateways(3, &["--rate", "100000", "--burst", "100000"]).await;
        let mut sub = Client::connect(&lan.gateways[1].ws("/ws/big")).await;
        let mut publisher = Client::connect(&lan.gateways[0].ws("/ws")).await;
        for g in 0..3 {
            lan.wait_members(g, "big", 1).await;
        }
        const N: usize = 200;
        let chunk = "x".repeat(8000);
        let (b0, c0) = (lan.hosts[1].bytes_received(), lan.hosts[2].bytes_received());
        let reader = tokio::spawn(async move {
            for n in 0..N {
                let m = sub.next().await;
                assert_eq!(m["data"]["n"], json!(n), "{m}");
            }
            sub
        });
        for n in 0..N {
            publisher
                .send(json!({"type":"publish","channel":"big","data":{"n":n,"pad":chunk}}))
                .await;
        }
        reader.await.expect("subscriber");
        let (b1, c1) = (lan.hosts[1].bytes_received(), lan.hosts[2].bytes_received());
        let payload = (N * chunk.len()) as u64;
        eprintln!(
            "published {payload} bytes: the subscriber's host received {}, the other host {}",
            b1 - b0,
            c1 - c0
        );
        assert!(
            b1 - b0 >= payload,
            "the count works: the subscriber's host got it all"
        );
        assert!(
            c1 - c0 < payload / 20,
            "the host without subscribers received {} bytes of a {payload}-byte stream",
            c1 - c0
        );
    });
}

/// Presence: who is in a channel, cluster-wide, and join/leave notices to
/// members who ask for them.
#[test]
fn presence_is_cluster_wide_with_join_and_leave_notices() {
    netns(|| async {
        let lan = Lan::with_gateways(3, &[]).await;
        let mut watcher = Client::connect(&lan.gateways[0].ws("/ws?key=watcher")).await;
        watcher
            .send(json!({"type":"subscribe","channel":"room","presence":true,"id":1}))
            .await;
        // The subscription's ok first, then the join it caused.
        assert_eq!(watcher.next().await, json!({"type":"ok","id":1}));
        let own = watcher.next().await;
        assert_eq!(own["type"], "join", "{own}");
        assert_eq!(own["member"]["conn"], watcher.conn());
        let mut bob = Client::connect(&lan.gateways[1].ws("/ws?key=bob")).await;
        bob.subscribe("room", false).await;
        let carol = Client::connect(&lan.gateways[2].ws("/ws/room?key=carol")).await;
        assert_eq!(carol.welcome["channels"], json!(["room"]));
        // Joins from the two other nodes, in any order.
        let mut joins = std::collections::BTreeMap::new();
        while joins.len() < 2 {
            let v = watcher.next().await;
            assert_eq!(
                (v["type"].as_str(), v["channel"].as_str()),
                (Some("join"), Some("room")),
                "{v}"
            );
            let m = &v["member"];
            assert!(joins
                .insert(m["conn"].as_str().unwrap().to_string(), m.clone())
                .is_none());
        }
        assert_eq!(joins[bob.conn()]["key"], "bob");
        assert_eq!(joins[bob.conn()]["node"], bob.node());
        assert_eq!(joins[carol.conn()]["key"], "carol");
        assert_eq!(joins[carol.conn()]["node"], carol.node());
        // Every node answers the same, and so does the protocol.
        for g in 0..3 {
            lan.wait_members(g, "room", 3).await;
        }
        let (_, all) = http("GET", &format!("{}/channels", lan.url(1)), None).await;
        let room = &all["channels"]["room"];
        assert_eq!(room.as_object().map(|o| o.len()), Some(3), "{all}");
        assert!(room.as_object().unwrap().values().all(|n| *n == 1), "{all}");
        let p = watcher
            .request(json!({"type":"presence","channel":"room"}), 5)
            .await;
        assert_eq!(p["type"], "presence");
        let keys: Vec<&str> = p["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys.len(), 3);
        for k in ["watcher", "bob", "carol"] {
            assert!(keys.contains(&k), "{p}");
        }
        // Leaving: by unsubscribing, and by disconnecting.
        let ok = bob
            .request(json!({"type":"unsubscribe","channel":"room"}), 6)
            .await;
        assert_eq!(ok["type"], "ok");
        let l = watcher.until(|v| v["type"] == "leave").await;
        assert_eq!(l["member"]["conn"], bob.conn());
        let carol_conn = carol.conn().to_string();
        drop(carol);
        let l = watcher.until(|v| v["type"] == "leave").await;
        assert_eq!(l["member"]["conn"], carol_conn);
        let p = watcher
            .request(json!({"type":"presence","channel":"room"}), 7)
            .await;
        assert_eq!(p["members"].as_array().map(Vec::len), Some(1), "{p}");
    });
}

/// `DELETE /channels/{ch}` on one node: every subscriber on every node gets
/// `channel-closed` and is unsubscribed.
#[test]
fn deleting_a_channel_closes_it_on_every_node() {
    netns(|| async {
        let lan = Lan::with_gateways(3, &["--open-api"]).await;
        let mut subs = Vec::new();
        for g in 0..3 {
            subs.push(Client::connect(&lan.gateways[g].ws("/ws/doomed")).await);
        }
        lan.wait_members(1, "doomed", 3).await;
        let url = format!("{}/channels/doomed", lan.url(1));
        let (status, body) = http("DELETE", &url, None).await;
        assert_eq!(status, 200, "{body}");
        for s in subs.iter_mut() {
            let v = s.next().await;
            assert_eq!(v, json!({"type":"channel-closed","channel":"doomed"}));
        }
        lan.wait_members(1, "doomed", 0).await;
        // Nothing more of it reaches them.
        let (status, _) = http("POST", &url, Some(r#""after""#)).await;
        assert_eq!(status, 200);
        for s in subs.iter_mut() {
            let before = s.ping().await;
            assert!(before.is_empty(), "{before:?}");
        }
        // The unsubscribe says so.
        let r = subs[0]
            .request(json!({"type":"unsubscribe","channel":"doomed"}), 3)
            .await;
        assert_eq!(r["code"], "not-subscribed", "{r}");
    });
}

/// A backend publishes over HTTP on one node; subscribers on the others
/// get it, from that node and no connection.
#[test]
fn a_backend_publishes_over_http() {
    netns(|| async {
        let lan = Lan::with_gateways(3, &["--open-api"]).await;
        let mut a = Client::connect(&lan.gateways[0].ws("/ws/news")).await;
        let mut b = Client::connect(&lan.gateways[1].ws("/ws/news")).await;
        lan.wait_members(2, "news", 2).await;
        let url = format!("{}/channels/news", lan.url(2));
        let (status, body) = http("POST", &url, Some(r#"{"headline":"hi"}"#)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["nodes"], 2, "{body}");
        let node = lan.gateways[2].node.clone();
        for c in [&mut a, &mut b] {
            let m = c.next().await;
            assert_eq!(
                m,
                json!({"type":"message","channel":"news","from":{"node":node},"data":{"headline":"hi"}})
            );
        }
        let (status, body) = http("POST", &url, Some("not json")).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("bad-json")));
        let (status, body) =
            http("POST", &format!("{}/channels/a%20b", lan.url(2)), Some("1")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad-channel")),
            "{body}"
        );
    });
}
