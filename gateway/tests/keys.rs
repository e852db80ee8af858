//! Keys across three gateway processes: routing to every connection of a
//! key, online/offline status, disconnecting a connection wherever it is.

mod common;

use common::{http, netns, until, Client, Lan};
use serde_json::json;

/// A key with connections on two nodes (two tabs): a message to it reaches
/// both, once each, from a client and from the HTTP API.
#[test]
fn a_message_to_a_key_reaches_each_of_its_connections_on_every_node() {
    netns(|| async {
        let lan = Lan::with_gateways(3, &["--open-api"]).await;
        let mut tab1 = Client::connect(&lan.gateways[0].ws("/ws?key=alice")).await;
        let mut tab2 = Client::connect(&lan.gateways[1].ws("/ws?key=alice")).await;
        let mut bob = Client::connect(&lan.gateways[2].ws("/ws?key=bob")).await;
        assert_eq!(tab1.welcome["key"], "alice");
        // Bob's node knows both holders.
        let url = format!("{}/keys/alice", lan.url(2));
        until("both holders known on bob's node", || async {
            let (_, v) = http("GET", &url, None).await;
            v["nodes"].as_array().map(Vec::len) == Some(2)
        })
        .await;
        let r = bob
            .request(json!({"type":"send","key":"alice","data":{"hi":1}}), 2)
            .await;
        assert_eq!(r, json!({"type":"ok","id":2}));
        for t in [&mut tab1, &mut tab2] {
            let m = t.next().await;
            assert_eq!(
                m,
                json!({"type":"direct","key":"alice","from":{"node":bob.node(),"conn":bob.conn(),"key":"bob"},"data":{"hi":1}})
            );
            assert!(t.ping().await.is_empty(), "exactly once");
        }
        let (status, body) = http(
            "POST",
            &format!("{}/keys/alice", lan.url(0)),
            Some(r#""api""#),
        )
        .await;
        assert_eq!((status, body["nodes"].as_u64()), (200, Some(2)), "{body}");
        for t in [&mut tab1, &mut tab2] {
            let m = t.next().await;
            assert_eq!(m["data"], "api");
            assert_eq!(m["from"], json!({"node": lan.gateways[0].node}));
        }
        // Nobody holds "zed".
        let r = bob
            .request(json!({"type":"send","key":"zed","data":1}), 3)
            .await;
        assert_eq!(r["code"], "key-offline", "{r}");
        let (status, body) = http("POST", &format!("{}/keys/zed", lan.url(0)), Some("1")).await;
        assert_eq!((status, body["error"].as_str()), (404, Some("key-offline")));
        let (_, v) = http("GET", &format!("{}/keys/zed", lan.url(0)), None).await;
        assert_eq!(v, json!({"key":"zed","online":false,"nodes":[]}));
        let (_, v) = http("GET", &format!("{}/keys/alice", lan.url(0)), None).await;
        assert_eq!(v["online"], true);
    });
}

/// A key goes online with its first connection anywhere and offline with
/// its last, including when the node holding it is killed.
#[test]
fn key_status_follows_connections_and_node_death() {
    netns(|| async {
        let mut lan = Lan::with_gateways(3, &[]).await;
        let mut watcher = Client::connect(&lan.gateways[0].ws("/ws")).await;
        watcher
            .send(json!({"type":"watch","keys":["carol"],"id":1}))
            .await;
        assert_eq!(
            watcher.next().await,
            json!({"type":"status","key":"carol","online":false})
        );
        assert_eq!(watcher.next().await, json!({"type":"ok","id":1}));

        let first = Client::connect(&lan.gateways[1].ws("/ws?key=carol")).await;
        assert_eq!(
            watcher.next().await,
            json!({"type":"status","key":"carol","online":true})
        );
        let second = Client::connect(&lan.gateways[2].ws("/ws?key=carol")).await;
        // A second connection changes nothing; the first leaving neither.
        let mut second_seen = Client::connect(&lan.gateways[0].ws("/ws")).await;
        second_seen
            .send(json!({"type":"watch","keys":["carol"]}))
            .await;
        assert_eq!(second_seen.next().await["online"], true);
        let url = format!("{}/connections", lan.url(0));
        until("both of carol's connections listed", || async {
            let (_, v) = http("GET", &url, None).await;
            v["connections"]
                .as_array()
                .is_some_and(|a| a.iter().filter(|c| c["key"] == "carol").count() == 2)
        })
        .await;
        drop(first);
        until("the first connection gone", || async {
            let (_, v) = http("GET", &url, None).await;
            v["connections"]
                .as_array()
                .is_some_and(|a| a.iter().filter(|c| c["key"] == "carol").count() == 1)
        })
        .await;
        assert!(
            watcher.ping().await.is_empty(),
            "no status change while one remains"
        );

        // kill -9 of the node holding the last one.
        let t0 = tokio::time::Instant::now();
        lan.gateways[2].kill().await;
        assert_eq!(
            watcher.next().await,
            json!({"type":"status","key":"carol","online":false})
        );
        eprintln!("offline {:?} after kill -9", t0.elapsed());
        // The killed node has left the directory of the others.
        let dead = lan.gateways[2].node.clone();
        for g in 0..2 {
            let url = format!("{}/nodes", lan.url(g));
            until("the killed node out of GET /nodes", || async {
                let (_, v) = http("GET", &url, None).await;
                v["nodes"]
                    .as_array()
                    .is_some_and(|a| a.len() == 2 && a.iter().all(|n| n["node"] != dead.as_str()))
            })
            .await;
        }
        drop(second);
        // And online again with a new connection.
        let _again = Client::connect(&lan.gateways[1].ws("/ws?key=carol")).await;
        assert_eq!(
            watcher.next().await,
            json!({"type":"status","key":"carol","online":true})
        );
        let r = watcher
            .request(json!({"type":"unwatch","keys":["carol"]}), 9)
            .await;
        assert_eq!(r, json!({"type":"ok","id":9}));
    });
}

/// `DELETE /connections/{id}` on another node: the client gets a
/// `disconnected` notice, then a close frame with the reason.
#[test]
fn deleting_a_connection_on_another_node_disconnects_it_with_a_reason() {
    netns(|| async {
        let lan = Lan::with_gateways(3, &["--open-api"]).await;
        let mut victim = Client::connect(&lan.gateways[2].ws("/ws?key=v")).await;
        let mut bystander = Client::connect(&lan.gateways[2].ws("/ws?key=b")).await;
        let url = format!("{}/connections/{}", lan.url(0), victim.conn());
        let (status, body) = http("DELETE", &url, None).await;
        assert_eq!(status, 200, "{body}");
        let (frames, close) = victim.until_closed().await;
        assert_eq!(
            frames,
            vec![json!({"type":"disconnected","reason":"disconnected by the server's API"})]
        );
        assert_eq!(
            close,
            Some((1000, "disconnected by the server's API".to_string()))
        );
        assert!(bystander.ping().await.is_empty());
        let (status, body) = http("DELETE", &url, None).await;
        assert_eq!((status, body["error"].as_str()), (404, Some("not-found")));
        let bogus = format!("{}/connections/nonsense", lan.url(0));
        assert_eq!(http("DELETE", &bogus, None).await.0, 404);
    });
}

/// A node that goes silent (SIGSTOP: a host asleep, a cut cable) takes its
/// keys offline once the mesh's heartbeat timeout passes (1 s here).
#[test]
fn keys_of_a_frozen_node_go_offline_within_the_heartbeat_timeout() {
    netns(|| async {
        let lan = Lan::with_gateways(2, &[]).await;
        let mut watcher = Client::connect(&lan.gateways[0].ws("/ws")).await;
        watcher
            .send(json!({"type":"watch","keys":["dave"],"id":1}))
            .await;
        assert_eq!(watcher.next().await["online"], false);
        assert_eq!(watcher.next().await, json!({"type":"ok","id":1}));
        let _dave = Client::connect(&lan.gateways[1].ws("/ws?key=dave")).await;
        assert_eq!(
            watcher.next().await,
            json!({"type":"status","key":"dave","online":true})
        );
        let t0 = tokio::time::Instant::now();
        lan.gateways[1].freeze();
        assert_eq!(
            watcher.next().await,
            json!({"type":"status","key":"dave","online":false})
        );
        let after = t0.elapsed();
        eprintln!("offline {after:?} after the freeze (heartbeat timeout 1 s)");
        assert!(
            after >= std::time::Duration::from_millis(900),
            "not before the timeout: {after:?}"
        );
    });
}
