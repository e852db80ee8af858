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
    channel_topic, event_topic, procedure_name, ChannelMessage, FromClient, KeyMessage, KEY_EVENT,
};
use tcpnet_gateway::cluster::wire::{
    Control, CONNECTIONS_PROCEDURE, CONTROL_EVENT, KICK_PROCEDURE, NOT_A_GATEWAY,
};
use tcpnet_gateway::cluster::wire::{Op, Snapshot, Sync, SYNC_EVENT};
use tcpnet_gateway::protocol::Origin;
use tcpnet_gateway::{Backend, Gateway, Limits, URL_META};

/// A tcpnet node on loopback without mDNS, linked to `peer` (its mesh
/// port) if given.
async fn node(cluster: &str, peer: Option<u16>) -> Service {
    node_with(Settings::new(cluster).mdns(false), peer).await
}

async fn node_with(settings: Settings, peer: Option<u16>) -> Service {
    let service = tcpnet::tcpnet(settings).unwrap();
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
    gateway_with(Settings::new(cluster).mdns(false), limits).await
}

async fn gateway_with(settings: Settings, limits: Limits) -> (Service, Gateway, String) {
    let service = tcpnet::tcpnet(settings).unwrap();
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

/// A member publishing on a channel's topic cannot make its message look
/// like another node's client's: the gateway drops a message naming a
/// connection that is not the publisher's, and passes on what the member
/// publishes as itself or for its own connection.
#[test]
fn a_member_cannot_publish_on_a_channel_as_another_nodes_client() {
    netns(|| async {
        let (gw, _gateway, ws) = gateway("forge-channel", Limits::default()).await;
        let rogue = node("forge-channel", Some(port(&gw))).await;
        linked(&gw, &rogue).await;
        let mut bob = Client::connect(&format!("{ws}?key=bob")).await;
        bob.subscribe("room", false).await;
        let topic = channel_topic("room");
        until("the rogue sees the gateway's interest", || async {
            rogue.topic_members(&topic).contains(gw.id())
        })
        .await;
        let me = gw.id().to_string();
        let r = rogue.id().to_string();
        let message = |conn: Option<String>, i: u32| {
            serde_json::to_vec(&ChannelMessage {
                conn,
                key: Some("alice".into()),
                data: raw(json!(i)),
            })
            .unwrap()
        };
        let sent = [
            // The gateway's client (its own, bob, included).
            Some(format!("{me}.1")),
            Some(bob.conn().to_string()),
            // Not a connection id at all.
            Some(r.clone()),
            // Its own connection, then itself.
            Some(format!("{r}.7")),
            None,
        ];
        for (i, conn) in sent.into_iter().enumerate() {
            rogue
                .publish(&topic, message(conn, i as u32))
                .await
                .unwrap();
        }
        // One publisher's messages arrive in order: the first two that
        // reach bob are the honest ones.
        let got = [
            bob.until(|f| f["type"] == "message").await,
            bob.until(|f| f["type"] == "message").await,
        ];
        assert_eq!(
            got[0]["data"], 3,
            "a forged message reached bob: {}",
            got[0]
        );
        assert_eq!(
            got[0]["from"],
            json!({"node": r, "conn": format!("{r}.7"), "key": "alice"})
        );
        assert_eq!(got[1]["data"], 4, "{}", got[1]);
        assert_eq!(got[1]["from"], json!({"node": r, "key": "alice"}));
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

/// Only a gateway may close a channel, disconnect a connection or list the
/// connections on another gateway: a member not advertising a gateway URL
/// is answered with the named error `not-a-gateway` and its close is
/// dropped; a member advertising one is served.
#[test]
fn only_gateways_close_channels_and_kick_and_list_connections() {
    netns(|| async {
        let (gw, gateway, ws) = gateway("cross-node", Limits::default()).await;
        let plain = node("cross-node", Some(port(&gw))).await;
        let settings = Settings::new("cross-node")
            .mdns(false)
            .meta(URL_META, "http://127.0.0.1:9");
        let other = node_with(settings, Some(port(&gw))).await;
        linked(&gw, &plain).await;
        linked(&gw, &other).await;
        until("the gateway lists the other one", || async {
            gateway.nodes().len() == 2
        })
        .await;
        let mut alice = Client::connect(&format!("{ws}?key=alice")).await;
        alice.subscribe("room", false).await;
        let conn = alice.conn().to_string();
        let close = serde_json::to_vec(&Control::CloseChannel {
            channel: "room".into(),
        })
        .unwrap();
        let timeout = Duration::from_secs(30);

        plain
            .emit_to(gw.id(), CONTROL_EVENT, close.clone())
            .await
            .unwrap();
        for (procedure, body) in [
            (KICK_PROCEDURE, conn.clone()),
            (CONNECTIONS_PROCEDURE, "".into()),
        ] {
            match plain.request(gw.id(), procedure, body, timeout).await {
                Err(tcpnet::Error::Call {
                    error: tcpnet::CallError::Remote { name, .. },
                    ..
                }) => assert_eq!(name, NOT_A_GATEWAY),
                other => panic!("{procedure} from a plain member was served: {other:?}"),
            }
        }
        // The close came on the same link before the refused requests.
        let frames = alice.ping().await;
        assert_eq!(
            frames,
            Vec::<serde_json::Value>::new(),
            "the plain member's close reached alice"
        );

        let list = other
            .request(gw.id(), CONNECTIONS_PROCEDURE, "", timeout)
            .await
            .expect("a gateway's list is served");
        let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
        assert_eq!(list[0]["conn"], conn.as_str(), "{list}");
        other.emit_to(gw.id(), CONTROL_EVENT, close).await.unwrap();
        let closed = alice.until(|f| f["type"] == "channel-closed").await;
        assert_eq!(closed["channel"], "room");
        let answer = other
            .request(gw.id(), KICK_PROCEDURE, conn.clone(), timeout)
            .await
            .expect("a gateway's kick is served");
        assert_eq!(answer.as_ref(), b"1");
        let (frames, _) = alice.until_closed().await;
        assert!(
            frames.iter().any(|f| f["type"] == "disconnected"),
            "{frames:?}"
        );
    });
}

/// A member speaking the gateways' sync protocol: it reads what the
/// gateway tells it and waits for the gateway's snapshots.
struct Syncer {
    service: Service,
    sync: tcpnet::Messages,
}

impl Syncer {
    /// A node linked to `gw`, advertising a gateway URL if `gateway`, once
    /// it has the snapshot the gateway sends on a new link.
    async fn start(cluster: &str, gw: &Service, gateway: bool) -> Syncer {
        let mut settings = Settings::new(cluster).mdns(false);
        if gateway {
            settings = settings.meta(URL_META, "http://127.0.0.1:9");
        }
        let service = tcpnet::tcpnet(settings).unwrap();
        let sync = service.receiver(SYNC_EVENT).unwrap();
        service.listen(0, "127.0.0.1").await.unwrap();
        service
            .add_peer(&format!("127.0.0.1:{}", port(gw)))
            .await
            .unwrap();
        linked(gw, &service).await;
        let mut s = Syncer { service, sync };
        s.snapshot().await;
        s
    }

    /// Waits for the gateway's next snapshot.
    async fn snapshot(&mut self) -> Snapshot {
        loop {
            if let Sync::Snapshot { state } = self.next().await {
                return state;
            }
        }
    }

    /// The gateway's next sync message.
    async fn next(&mut self) -> Sync {
        let msg = tokio::time::timeout(common::DEADLINE, self.sync.next())
            .await
            .expect("a sync message in time")
            .expect("the stream is open");
        serde_json::from_slice(msg.data()).expect("a sync message")
    }

    /// Sends `msg` to the gateway.
    async fn send(&self, gw: &Service, msg: &Sync) {
        let body = serde_json::to_vec(msg).unwrap();
        self.service
            .emit_to(gw.id(), SYNC_EVENT, body)
            .await
            .unwrap();
    }

    /// Tells the gateway `msg`, then asks for its snapshot and waits for
    /// it: the gateway handles one node's sync messages in order, so by
    /// then it has handled `msg`.
    async fn tell(&mut self, gw: &Service, msg: Sync) {
        for m in [msg, Sync::Resync] {
            self.send(gw, &m).await;
        }
        self.snapshot().await;
    }
}

fn key_on(key: &str) -> Op {
    Op::KeyOn { key: key.into() }
}

/// The statuses and presence notices a client got until now (a ping's
/// round trip), as `(key or conn, online or joined)`.
async fn notices(c: &mut Client) -> Vec<(String, bool)> {
    c.ping()
        .await
        .into_iter()
        .filter_map(|f| match f["type"].as_str() {
            Some("status") => Some((f["key"].as_str()?.to_string(), f["online"] == true)),
            Some(t @ ("join" | "leave")) => {
                Some((f["member"]["conn"].as_str()?.to_string(), t == "join"))
            }
            _ => None,
        })
        .collect()
}

/// Only gateways have a say in the cluster view, and each only up to the
/// limits: a member not advertising a gateway URL changes nothing; a
/// gateway passing a limit loses its whole share, its changes are
/// ignored until it sends a snapshot within the limits.
#[test]
fn only_gateways_within_the_limits_have_a_say_in_the_view() {
    netns(|| async {
        let limits = Limits {
            max_node_keys: 4,
            max_node_members: 4,
            ..Limits::default()
        };
        let (gw, gateway, ws) = gateway("view-limits", limits).await;
        let mut watcher = Client::connect(&format!("{ws}?key=w")).await;
        let keys = json!(["k0", "k1", "k4", "later", "back"]);
        watcher
            .request(json!({"type":"watch","keys":keys}), 1)
            .await;
        watcher.subscribe("room", true).await;
        notices(&mut watcher).await;

        let mut plain = Syncer::start("view-limits", &gw, false).await;
        let join = |conn: &str| Op::Join {
            channel: "room".into(),
            conn: conn.into(),
            key: "k0".into(),
        };
        plain
            .tell(
                &gw,
                Sync::Delta {
                    ops: vec![key_on("k0"), join("plain.1")],
                },
            )
            .await;
        let snap = Snapshot {
            keys: vec!["k1".into()],
            ..Default::default()
        };
        plain.tell(&gw, Sync::Snapshot { state: snap }).await;
        assert_eq!(
            notices(&mut watcher).await,
            vec![],
            "a plain member changed the view"
        );

        let mut fake = Syncer::start("view-limits", &gw, true).await;
        until("the gateway lists the fake one", || async {
            gateway.nodes().len() == 2
        })
        .await;
        // Five keys, one past the limit: on, then all off with the share.
        let five = (0..5).map(|i| key_on(&format!("k{i}"))).collect();
        fake.tell(&gw, Sync::Delta { ops: five }).await;
        let mut got = notices(&mut watcher).await;
        got[2..].sort();
        let want = [("k0", true), ("k1", true), ("k0", false), ("k1", false)];
        let want: Vec<(String, bool)> = want.iter().map(|(k, on)| (k.to_string(), *on)).collect();
        assert_eq!(got, want, "the keys past the limit stayed");
        // Ignored until a snapshot within the limits.
        fake.tell(
            &gw,
            Sync::Delta {
                ops: vec![key_on("later")],
            },
        )
        .await;
        assert_eq!(notices(&mut watcher).await, vec![]);
        let snap = Snapshot {
            keys: vec!["back".into()],
            ..Default::default()
        };
        fake.tell(&gw, Sync::Snapshot { state: snap }).await;
        assert_eq!(notices(&mut watcher).await, vec![("back".into(), true)]);
        // Members, likewise.
        let members = (1..=5).map(|i| join(&format!("fake.{i}"))).collect();
        fake.tell(&gw, Sync::Delta { ops: members }).await;
        let got = notices(&mut watcher).await;
        assert_eq!(got.iter().filter(|(_, on)| *on).count(), 4, "{got:?}");
        assert_eq!(got.last(), Some(&("back".to_string(), false)), "{got:?}");
        let r = watcher
            .request(json!({"type":"presence","channel":"room"}), 2)
            .await;
        assert_eq!(r["members"].as_array().map(Vec::len), Some(1), "{r}");
    });
}

/// A gateway whose link to one node is stalled (the node's whole runtime
/// is blocked, so it reads nothing; the gateway's heartbeat timeout is
/// longer than the test's deadline, so the link stays) keeps telling its
/// changes to the other nodes: no peer's link is waited on by the others'.
#[test]
fn a_stalled_peer_does_not_hold_up_the_others() {
    netns(|| async {
        // Small socket buffers in this namespace and small link queues:
        // the stalled link fills after some tens of kilobytes.
        for dir in ["rmem", "wmem"] {
            std::fs::write(format!("/proc/sys/net/ipv4/tcp_{dir}"), "4096 4096 4096").unwrap();
        }
        let settings = Settings::new("stall")
            .mdns(false)
            .queue_len(16)
            .queue_bytes(16 * 1024)
            .heartbeat(Duration::from_millis(500), Duration::from_secs(600));
        let limits = Limits {
            rate: 1e9,
            burst: 1e9,
            ..Limits::default()
        };
        let (gw, _gateway, ws) = gateway_with(settings, limits).await;
        let mut healthy = Syncer::start("stall", &gw, true).await;

        // The stalled node runs on a runtime of its own, on a thread of its
        // own, which it blocks once linked.
        let (freeze_tx, freeze_rx) = tokio::sync::oneshot::channel::<()>();
        let (thaw_tx, thaw_rx) = std::sync::mpsc::channel::<()>();
        let (node_tx, node_rx) = tokio::sync::oneshot::channel();
        let gw_port = port(&gw);
        let stalled = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let settings = Settings::new("stall")
                    .mdns(false)
                    .meta(URL_META, "http://127.0.0.1:9");
                let s = node_with(settings, Some(gw_port)).await;
                node_tx.send(s.clone()).ok();
                freeze_rx.await.ok();
                // Blocks the runtime's only thread: nothing of `s` runs.
                thaw_rx.recv().ok();
                drop(s);
            });
        });
        let s = node_rx.await.unwrap();
        linked(&gw, &s).await;
        freeze_tx.send(()).unwrap();

        // Changes enough to fill the stalled link many times over.
        let mut churn = Client::connect(&ws).await;
        for i in 0..3000 {
            let t = if i % 2 == 0 {
                "subscribe"
            } else {
                "unsubscribe"
            };
            churn.send(json!({"type": t, "channel": "churn"})).await;
        }
        churn.ping().await;
        let _after = Client::connect(&format!("{ws}?key=after")).await;
        loop {
            match healthy.next().await {
                Sync::Delta { ops } if ops.contains(&key_on("after")) => break,
                Sync::Snapshot { state } if state.keys.contains(&"after".to_string()) => break,
                _ => {}
            }
        }
        thaw_tx.send(()).unwrap();
        stalled.join().unwrap();
    });
}

/// A node asking for snapshots over and over gets one at most every
/// second (`Resync`s in between are answered by one snapshot at its end).
#[test]
fn resyncs_are_answered_at_most_once_a_second() {
    netns(|| async {
        let (gw, _gateway, _ws) = gateway("resync", Limits::default()).await;
        let mut fake = Syncer::start("resync", &gw, true).await;
        let t0 = tokio::time::Instant::now();
        for _ in 0..100 {
            fake.send(&gw, &Sync::Resync).await;
        }
        fake.snapshot().await;
        fake.snapshot().await;
        let second = t0.elapsed();
        fake.send(&gw, &Sync::Resync).await;
        fake.snapshot().await;
        let third = t0.elapsed();
        assert!(
            second >= Duration::from_secs(1) && third >= Duration::from_secs(2),
            "snapshots came {second:?} and {third:?} after 101 resyncs"
        );
    });
}
