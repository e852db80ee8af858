//! Embedding: a gateway built in-process over a tcpnet service, with every
//! hook and stream of the builder.

mod common;

use common::{netns, Client};
use futures::StreamExt;
use serde_json::json;
use tcpnet_gateway::{Access, Action, Gateway};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn connect_as(url: &str, user: &str) -> Client {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("x-user", user.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    let mut c = Client {
        ws,
        welcome: serde_json::Value::Null,
    };
    c.welcome = c.next().await;
    assert_eq!(c.welcome["type"], "welcome");
    c
}

#[test]
fn hooks_and_streams_of_an_embedded_gateway() {
    netns(|| async {
        let service = tcpnet::tcpnet(tcpnet::Settings::new("embed").mdns(false)).unwrap();
        service.listen(0, "127.0.0.1").await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gateway = Gateway::builder(service.clone(), format!("http://{addr}"))
            .key(|parts| {
                parts
                    .headers
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .map(|u| format!("user:{u}"))
            })
            .authorize(|client, channel, access| {
                channel != "admin" || (client.key == "user:root" && access == Access::Subscribe)
            })
            .on_message(|_, action| {
                !matches!(
                    action,
                    Action::Publish {
                        channel: "muted",
                        ..
                    }
                )
            })
            .build()
            .unwrap();
        // Built on a listening service: its URL is in its metadata at once.
        let nodes = gateway.nodes();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].url, format!("http://{addr}"));
        assert_eq!(
            service.meta().get(tcpnet_gateway::URL_META),
            Some(nodes[0].url.as_str())
        );
        let mut joined = gateway.connections();
        let mut left = gateway.disconnections();
        let mut hellos = gateway.receiver("hello").unwrap();
        let mut adds = gateway.procedure("add").unwrap();
        tokio::spawn(async move {
            while let Some(call) = adds.next().await {
                let nums: Result<Vec<i64>, _> = serde_json::from_str(call.data.get());
                let _ = match nums {
                    Ok(n) => call.end(n.iter().sum::<i64>()).await,
                    Err(_) => {
                        call.error("not-numbers", "add takes an array of integers")
                            .await
                    }
                };
            }
        });
        let app = axum::Router::new().merge(gateway.router());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let ws = format!("ws://{addr}/ws");

        let mut alice = connect_as(&ws, "alice").await;
        assert_eq!(alice.welcome["key"], "user:alice");
        assert_eq!(alice.welcome["node"], service.id().as_str());
        let client = joined.next().await.unwrap();
        assert_eq!(
            (client.conn.as_str(), client.key.as_str()),
            (alice.conn(), "user:alice")
        );

        // Authorization, per connection and channel.
        let r = alice
            .request(json!({"type":"subscribe","channel":"admin"}), 1)
            .await;
        assert_eq!(r["code"], "forbidden");
        let mut root = connect_as(&ws, "root").await;
        root.subscribe("admin", false).await;
        let r = root
            .request(json!({"type":"publish","channel":"admin","data":1}), 2)
            .await;
        assert_eq!(r["code"], "forbidden", "subscribe only");
        let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/admin")).await;
        assert!(refused.unwrap_err().to_string().contains("403"));

        // The message hook stops a publish; others go on.
        alice.subscribe("muted", false).await;
        alice.subscribe("open", false).await;
        let r = alice
            .request(json!({"type":"publish","channel":"muted","data":1}), 3)
            .await;
        assert_eq!(r["code"], "stopped");
        // The message may come before or after the ok: read both.
        alice
            .send(json!({"type":"publish","channel":"open","data":2,"id":4}))
            .await;
        let mut two = [alice.next().await, alice.next().await];
        two.sort_by_key(|v| v["type"].to_string());
        assert_eq!(two[0]["type"], "message");
        assert_eq!(
            (two[0]["channel"].as_str(), two[0]["data"].as_i64()),
            (Some("open"), Some(2))
        );
        assert_eq!(two[1], json!({"type":"ok","id":4}));
        assert!(
            alice.ping().await.is_empty(),
            "nothing of the muted channel"
        );
        // A client refused a channel gets nothing of it: the message to
        // `admin` reaches its subscriber, and alice's next frame is the
        // message to `open` published after it.
        gateway
            .publish("admin", json!({"for":"root"}))
            .await
            .unwrap();
        let m = root.next().await;
        assert_eq!(
            (m["channel"].as_str(), &m["data"]),
            (Some("admin"), &json!({"for":"root"}))
        );
        gateway
            .publish("open", json!({"from":"app"}))
            .await
            .unwrap();
        let m = alice.next().await;
        assert_eq!(
            (m["channel"].as_str(), &m["data"]),
            (Some("open"), &json!({"from":"app"}))
        );

        // receiver(event) and procedure(name) with end and error.
        let r = alice
            .request(json!({"type":"transmit","event":"hello","data":"hi"}), 5)
            .await;
        assert_eq!(r["type"], "ok");
        let ev = hellos.next().await.unwrap();
        assert_eq!(
            (ev.event.as_str(), ev.data.get(), ev.client.key.as_str()),
            ("hello", "\"hi\"", "user:alice")
        );
        let r = alice
            .request(json!({"type":"invoke","procedure":"add","data":[1,2,3]}), 6)
            .await;
        assert_eq!(r, json!({"type":"result","id":6,"data":6}));
        let r = alice
            .request(json!({"type":"invoke","procedure":"add","data":"x"}), 7)
            .await;
        assert_eq!(
            r,
            json!({"type":"error","id":7,"code":"remote","name":"not-numbers","message":"add takes an array of integers"})
        );
        let r = alice
            .request(json!({"type":"invoke","procedure":"mul","data":1}), 8)
            .await;
        assert_eq!(r["code"], "unknown-procedure");

        // Disconnections, with the reason.
        let conn = alice.conn().to_string();
        drop(alice);
        let gone = left.next().await.unwrap();
        assert_eq!(gone.client.conn, conn);
        assert!(!gone.reason.is_empty());
        service.close().await;
    });
}
