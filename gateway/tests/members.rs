//! What another member of the cluster can and cannot make a gateway or a
//! backend believe: each test runs embedded gateways, backends and a rogue
//! tcpnet node in one process, on loopback in a private namespace, and has
//! the rogue send what the gateway's wire format allows.

mod common;

use std::time::Duration;

use common::{netns, until, Client};
use futures::StreamExt;
use serde_json::json;
use serde_json::value::RawValue;
use tcpnet::{Service, Settings};
use tcpnet_gateway::cluster::wire::{
    event_topic, procedure_name, FromClient, KeyMessage, KEY_EVENT,
};
use tcpnet_gateway::protocol::Origin;
use tcpnet_gateway::{Backend, Gateway, Limits};

/// A tcpnet node on loopback without mDNS, linked to `peer` (its mesh
/// port) if given.
async fn node(cluster: &str, peer: Option<u16>) -> Service {
    let service = tcpnet::tcpnet(Settings::new(cluster).mdns(false)).unwrap();
    service.listen(0, "127.0.0.1").await.unwrap();
    if let Some(port) = peer {
        service
            .add_peer(&format!("127.0.0.1:{port}"))
            .await
            .unwrap();
    }
    service
}

/// An embedded gateway serving WebSockets on loopback; its node and its
/// `ws://` base URL.
async fn gateway(cluster: &str, limits: Limits) -> (Service, Gateway, String) {
    let service = tcpnet::tcpnet(Settings::new(cluster).mdns(false)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gateway = Gateway::builder(service.clone(), format!("http://{addr}"))
        .limits(limits)
        .build()
        .unwrap();
    service.listen(0, "127.0.0.1").await.unwrap();
    let app = axum::Router::new().merge(gateway.router());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (service, gateway, format!("ws://{addr}/ws"))
}

fn port(service: &Service) -> u16 {
    service.address().expect("listening").port
}

async fn linked(a: &Service, b: &Service) {
    until("a link", || async {
        a.connections().iter().any(|c| c.peer_id() == b.id())
            && b.connections().iter().any(|c| c.peer_id() == a.id())
    })
    .await;
}

fn raw(v: serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&v).unwrap()
}

/// A member that is not the gateway named in a message to a key cannot
/// make it look like that gateway's client (or that gateway) sent it: the
/// gateway holding the key refuses it; what the member sends as itself
/// arrives, naming it.
#[test]
fn a_member_cannot_send_to_a_key_as_another_nodes_client() {
    netns(|| async {
        let (gw, _gateway, ws) = gateway("forge-key", Limits::default()).await;
        let rogue = node("forge-key", Some(port(&gw))).await;
        linked(&gw, &rogue).await;
        let mut bob = Client::connect(&format!("{ws}?key=bob")).await;
        let me = gw.id().to_string();
        let forged = [
            // The gateway's client.
            Origin {
                node: me.clone(),
                conn: Some(format!("{me}.1")),
                key: Some("alice".into()),
            },
            // The gateway itself (its HTTP API).
            Origin {
                node: me.clone(),
                conn: None,
                key: None,
            },
            // Itself, but the gateway's connection.
            Origin {
                node: rogue.id().to_string(),
                conn: Some(format!("{me}.1")),
                key: Some("alice".into()),
            },
        ];
        let honest = Origin {
            node: rogue.id().to_string(),
            conn: None,
            key: None,
        };
        for (i, from) in forged.into_iter().chain([honest]).enumerate() {
            let body = serde_json::to_vec(&KeyMessage {
                key: "bob".into(),
                from,
                data: raw(json!(i)),
            })
            .unwrap();
            rogue.emit_to(gw.id(), KEY_EVENT, body).await.unwrap();
        }
        // One link, one receiver: the honest message comes after the
        // forged ones, so the first direct frame is the honest one.
        let first = bob.until(|f| f["type"] == "direct").await;
        assert_eq!(first["data"], 3, "a forged message reached bob: {first}");
        assert_eq!(first["from"], json!({"node": rogue.id().as_str()}));
    });
}

/// A backend takes calls and events only for the caller's own clients: a
/// member claiming a gateway's client gets the named error
/// `forged-origin`, and its events are dropped.
#[test]
fn a_backend_refuses_calls_and_events_for_another_nodes_client() {
    netns(|| async {
        let (gw, _gateway, _ws) = gateway("forge-backend", Limits::default()).await;
        let b = node("forge-backend", Some(port(&gw))).await;
        let rogue = node("forge-backend", Some(port(&gw))).await;
        rogue
            .add_peer(&format!("127.0.0.1:{}", port(&b)))
            .await
            .unwrap();
        linked(&b, &rogue).await;
        let backend = Backend::new(b.clone());
        let mut calls = backend.procedure("who").unwrap();
        let mut notes = backend.receiver("note").unwrap();
        tokio::spawn(async move {
            while let Some(call) = calls.next().await {
                let who = call.client.conn.clone();
                let _ = call.end(who).await;
            }
        });
        until("the rogue sees the backend's topics", || async {
            rogue.topic_members(&procedure_name("who")).contains(b.id())
                && rogue.topic_members(&event_topic("note")).contains(b.id())
        })
        .await;
        let me = gw.id().to_string();
        let r = rogue.id().to_string();
        let from = |node: &str, conn: &str, name: &str| {
            serde_json::to_vec(&FromClient {
                conn: conn.into(),
                key: "alice".into(),
                node: node.into(),
                name: name.into(),
                data: raw(json!(null)),
            })
            .unwrap()
        };
        let timeout = Duration::from_secs(30);
        for (node, conn) in [(&me, format!("{me}.1")), (&r, format!("{me}.1"))] {
            let answer = rogue
                .request(
                    b.id(),
                    &procedure_name("who"),
                    from(node, &conn, "who"),
                    timeout,
                )
                .await;
            match answer {
                Err(tcpnet::Error::Call {
                    error: tcpnet::CallError::Remote { name, .. },
                    ..
                }) => assert_eq!(name, tcpnet_gateway::FORGED_ORIGIN),
                other => panic!("a forged call was not refused: {other:?}"),
            }
        }
        let own = format!("{r}.1");
        let answer = rogue
            .request(
                b.id(),
                &procedure_name("who"),
                from(&r, &own, "who"),
                timeout,
            )
            .await
            .expect("its own client's call is served");
        assert_eq!(answer.as_ref(), format!("{own:?}").as_bytes());

        let topic = event_topic("note");
        rogue
            .publish(&topic, from(&me, &format!("{me}.1"), "note"))
            .await
            .unwrap();
        rogue
            .publish(&topic, from(&r, &format!("{me}.1"), "note"))
            .await
            .unwrap();
        rogue.publish(&topic, from(&r, &own, "note")).await.unwrap();
        // One publisher's messages arrive in order: the first event the
        // backend gets is the honest one.
        let ev = tokio::time::timeout(common::DEADLINE, notes.next())
            .await
            .expect("an event in time")
            .expect("the stream is open");
        assert_eq!(ev.client.conn, own, "a forged event reached the backend");
        assert_eq!(ev.client.node, r);
    });
}
