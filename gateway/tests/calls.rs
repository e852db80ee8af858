//! Procedures and events served by a backend: a plain tcpnet node (the
//! `backend` example) on a fourth host, called by clients of the gateways.

mod common;

use common::{http, netns, Client, Lan};
use serde_json::json;

async fn lan_with_backend() -> Lan {
    let mut lan = Lan::new(4).await;
    for i in 1..=3 {
        lan.start_gateway(i, &["--call-timeout-ms", "3000"]).await;
    }
    lan.wait_for_nodes(3).await;
    lan.start_backend(4).await;
    lan
}

/// Answer, named error, unknown procedure, timeout, and a client's event
/// that the backend turns into a channel message.
#[test]
fn clients_call_procedures_and_transmit_events_served_by_a_backend() {
    netns(|| async {
        let lan = lan_with_backend().await;
        let mut c = Client::connect(&lan.gateways[0].ws("/ws?key=caller")).await;
        // The backend's procedures are known once its topics reach the node.
        let end = tokio::time::Instant::now() + common::DEADLINE;
        for id in 100.. {
            let r = c
                .request(json!({"type":"invoke","procedure":"upper","data":"x"}), id)
                .await;
            if r["type"] == "result" {
                break;
            }
            assert_eq!(r["code"], "unknown-procedure", "{r}");
            assert!(
                tokio::time::Instant::now() < end,
                "the backend was never found"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The backend is a member of the cluster but runs no gateway: each
        // node lists the three gateways, from their tcpnet metadata.
        for g in 0..3 {
            let (_, v) = http("GET", &format!("{}/nodes", lan.url(g)), None).await;
            let nodes = v["nodes"].as_array().expect("a list");
            assert_eq!(nodes.len(), 3, "{v}");
            assert_eq!(
                nodes[0]["node"],
                lan.gateways[g].node.as_str(),
                "itself first: {v}"
            );
            assert_eq!(
                (&nodes[0]["self"], &nodes[0]["state"]),
                (&json!(true), &json!("local"))
            );
            for gw in &lan.gateways {
                let n = nodes
                    .iter()
                    .find(|n| n["node"] == gw.node.as_str())
                    .expect("listed");
                assert_eq!(n["url"], gw.url.as_str(), "{v}");
                assert_eq!(n["meta"]["gw.url"], gw.url.as_str(), "{v}");
            }
            for n in &nodes[1..] {
                assert_eq!(n["self"], false, "{v}");
                assert!(n["state"] == "linked" || n["state"] == "suspect", "{v}");
            }
        }
        let r = c
            .request(
                json!({"type":"invoke","procedure":"upper","data":"hello"}),
                1,
            )
            .await;
        assert_eq!(r, json!({"type":"result","id":1,"data":"HELLO"}));
        let r = c
            .request(json!({"type":"invoke","procedure":"upper","data":5}), 2)
            .await;
        assert_eq!(
            r,
            json!({"type":"error","id":2,"code":"remote","name":"bad-input","message":"upper takes a string"})
        );
        let r = c
            .request(json!({"type":"invoke","procedure":"fail","data":null}), 3)
            .await;
        assert_eq!(
            (r["code"].as_str(), r["name"].as_str()),
            (Some("remote"), Some("nope")),
            "{r}"
        );
        let r = c
            .request(json!({"type":"invoke","procedure":"nobody","data":null}), 4)
            .await;
        assert_eq!(r["code"], "unknown-procedure", "{r}");
        let t0 = tokio::time::Instant::now();
        let r = c
            .request(
                json!({"type":"invoke","procedure":"slow","data":null,"timeout_ms":300}),
                5,
            )
            .await;
        assert_eq!(r["code"], "timeout", "{r}");
        assert!(t0.elapsed() >= std::time::Duration::from_millis(300));
        // The server caps a timeout asked for at its limit (3 s here).
        let t0 = tokio::time::Instant::now();
        let r = c
            .request(
                json!({"type":"invoke","procedure":"slow","data":null,"timeout_ms":60000}),
                6,
            )
            .await;
        assert_eq!(r["code"], "timeout", "{r}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(10));

        // Events: the backend publishes each note to the channel "notes".
        let mut reader = Client::connect(&lan.gateways[1].ws("/ws/notes")).await;
        lan.wait_members(0, "notes", 1).await;
        let r = c
            .request(
                json!({"type":"transmit","event":"note","data":"remember"}),
                7,
            )
            .await;
        assert_eq!(r, json!({"type":"ok","id":7}));
        let m = reader.next().await;
        assert_eq!(
            m["data"],
            json!({"from": c.conn(), "note": "remember"}),
            "{m}"
        );
        let r = c
            .request(json!({"type":"transmit","event":"unheard","data":1}), 8)
            .await;
        assert_eq!(r["code"], "no-receiver", "{r}");
    });
}
