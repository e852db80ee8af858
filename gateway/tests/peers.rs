//! Servers added by address at run time: gateways without mDNS find each
//! other only through `POST /peers`.

mod common;

use common::{http, netns, Client, Lan};
use serde_json::json;

#[test]
fn gateways_without_mdns_link_through_a_peer_added_at_run_time() {
    netns(|| async {
        let mut lan = Lan::new(2).await;
        lan.start_gateway(1, &["--no-mdns", "--open-api"]).await;
        lan.start_gateway(2, &["--no-mdns", "--open-api"]).await;
        let url = format!("{}/peers", lan.url(0));
        // Bad input: named, and nothing changes.
        for (body, why) in [("42", "not a string"), ("\"no-port\"", "no port")] {
            let (status, v) = http("POST", &url, Some(body)).await;
            assert_eq!(
                (status, v["error"].as_str()),
                (400, Some("bad-peer")),
                "{why}: {v}"
            );
        }
        let (status, v) = http("POST", &url, Some("{")).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some("bad-json")),
            "{v}"
        );
        let (_, health) = http("GET", &format!("{}/health", lan.url(0)), None).await;
        assert_eq!(
            health["links"], 0,
            "linked before any peer was added: {health}"
        );

        let peer = format!("10.99.0.2:{}", lan.gateways[1].mesh_port);
        let (status, v) = http("POST", &url, Some(&json!(peer).to_string())).await;
        assert_eq!((status, &v["peer"]), (200, &json!(peer)), "{v}");
        lan.wait_for_nodes(2).await;

        // A channel across the two.
        let mut a = Client::connect(&lan.gateways[0].ws("/ws/room")).await;
        let mut b = Client::connect(&lan.gateways[1].ws("/ws/room")).await;
        lan.wait_members(0, "room", 2).await;
        a.send(json!({"type":"publish","channel":"room","data":"hi"}))
            .await;
        let m = b.until(|v| v["type"] == "message").await;
        assert_eq!(
            (&m["data"], &m["from"]["conn"]),
            (&json!("hi"), &json!(a.conn()))
        );
    });
}
