//! Limits and bad input: every bad message answered with an error frame
//! naming it while the connection stays up; the hard limits close it with
//! a reason; a client that stops reading is disconnected without slowing
//! the others; origins; the API's token rules.

mod common;

use std::time::Duration;

use common::{http, http_with, netns, until, Client, Lan};
use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Each bad input gets its own error code; the connection stays up.
#[test]
fn every_bad_input_is_named_and_the_connection_stays_up() {
    netns(|| async {
        let mut lan = Lan::new(1).await;
        lan.start_gateway(
            1,
            &[
                "--max-message",
                "1000",
                "--max-frame",
                "4096",
                "--max-subscriptions",
                "2",
                "--max-watches",
                "2",
                "--max-calls",
                "1",
            ],
        )
        .await;
        let mut c = Client::connect(&lan.gateways[0].ws("/ws")).await;
        let long = "c".repeat(129);
        let cases: Vec<(String, &str)> = vec![
            ("{not json".into(), "bad-json"),
            ("[1,2]".into(), "bad-json"),
            (r#"{"channel":"a"}"#.into(), "missing-type"),
            (r#"{"type":"teleport","id":1}"#.into(), "unknown-type"),
            (r#"{"type":"publish","channel":"a"}"#.into(), "bad-field"),
            (
                r#"{"type":"publish","channel":"a","data":1,"extra":2}"#.into(),
                "bad-field",
            ),
            (
                r#"{"type":"subscribe","channel":"no spaces"}"#.into(),
                "bad-channel",
            ),
            (
                format!(r#"{{"type":"subscribe","channel":"{long}"}}"#),
                "bad-channel",
            ),
            (r#"{"type":"send","key":"","data":1}"#.into(), "bad-key"),
            (
                r#"{"type":"watch","keys":["ok","bad\u0007"]}"#.into(),
                "bad-key",
            ),
            (
                r#"{"type":"transmit","event":"a/b","data":1}"#.into(),
                "bad-event",
            ),
            (
                r#"{"type":"invoke","id":2,"procedure":"","data":1}"#.into(),
                "bad-procedure",
            ),
            (
                r#"{"type":"invoke","procedure":"p","data":1}"#.into(),
                "bad-field",
            ),
            (
                format!(
                    r#"{{"type":"publish","channel":"a","data":"{}"}}"#,
                    "x".repeat(1500)
                ),
                "too-large",
            ),
            (
                r#"{"type":"unsubscribe","channel":"never"}"#.into(),
                "not-subscribed",
            ),
        ];
        for (text, code) in &cases {
            c.send_text(text).await;
            let e = c.next().await;
            assert_eq!(
                (e["type"].as_str(), e["code"].as_str()),
                (Some("error"), Some(*code)),
                "{text} -> {e}"
            );
            assert!(!e["message"].as_str().unwrap_or("").is_empty(), "{e}");
        }
        c.ws.send(Message::Binary(vec![1, 2, 3].into()))
            .await
            .unwrap();
        assert_eq!(c.next().await["code"], "binary-frame");
        // The id comes back when the message had one.
        let e = c.request(json!({"type":"teleport"}), 77).await;
        assert_eq!(e["code"], "unknown-type");
        // Per-connection bounds.
        c.subscribe("a", false).await;
        c.subscribe("b", false).await;
        let e = c
            .request(json!({"type":"subscribe","channel":"c"}), 3)
            .await;
        assert_eq!(e["code"], "too-many-subscriptions", "{e}");
        c.send(json!({"type":"watch","keys":["k1","k2"]})).await;
        let _ = c.ping().await;
        let e = c.request(json!({"type":"watch","keys":["k3"]}), 4).await;
        assert_eq!(e["code"], "too-many-watches", "{e}");
        assert!(c.ping().await.is_empty(), "still up, nothing pending");

        // Past the hard limit the message is not even read: closed, 1009.
        c.send_text(&format!(
            r#"{{"type":"ping","pad":"{}"}}"#,
            "x".repeat(5000)
        ))
        .await;
        let (_, close) = c.until_closed().await;
        let (code, reason) = close.expect("a close frame");
        assert_eq!(code, 1009);
        assert!(reason.contains("4096"), "{reason}");
        // The node goes on.
        let mut d = Client::connect(&lan.gateways[0].ws("/ws")).await;
        assert!(d.ping().await.is_empty());
        // A bad channel in the path is refused before the upgrade.
        let url = lan.gateways[0].ws("/ws/bad%20name");
        let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
        assert!(err.to_string().contains("400"), "{err}");
    });
}

/// Over the rate, messages are refused one by one with `rate-limited`; the
/// connection stays up and every message gets an answer.
#[test]
fn a_client_over_its_rate_is_refused_message_by_message() {
    netns(|| async {
        let mut lan = Lan::new(1).await;
        lan.start_gateway(1, &["--rate", "5", "--burst", "10"])
            .await;
        let mut c = Client::connect(&lan.gateways[0].ws("/ws")).await;
        for id in 0..40 {
            c.send(json!({"type":"ping","id":id})).await;
        }
        let (mut pongs, mut limited) = (0, 0);
        for _ in 0..40 {
            let v = c.next().await;
            match (v["type"].as_str(), v["code"].as_str()) {
                (Some("pong"), _) => pongs += 1,
                (Some("error"), Some("rate-limited")) => limited += 1,
                _ => panic!("{v}"),
            }
        }
        assert!(
            pongs >= 10 && limited > 0,
            "{pongs} pongs, {limited} refused"
        );
        assert_eq!(pongs + limited, 40);
    });
}

/// A client that stops reading is disconnected (out of its channels at
/// once, the reason in its close frame if it reads again); the other
/// subscribers get every message at the publisher's pace.
#[test]
fn a_slow_client_is_disconnected_while_the_others_keep_up() {
    netns(|| async {
        // The slow client's side of the wire holds little (a small receive
        // buffer on its socket, small send buffers on its gateway's host),
        // so its outbox fills soon after it stops reading: after about
        // 2 MiB, 2 s of the 4 s run. The readers of the others run in this
        // process, which a loaded machine may stall for a while: their
        // outboxes (2 MiB too, plus their sockets' buffers) let them be
        // late by 2 s or more without being taken for slow.
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
                "2097152",
            ],
        )
        .await;
        lan.hosts[1].sysctl("net.ipv4.tcp_wmem", "4096 16384 65536");
        let mut slow =
            Client::connect_small_window(&lan.gateways[1].ws("/ws/firehose"), 4096).await;
        let slow_conn = slow.conn().to_string();
        let mut fast = Vec::new();
        for g in 0..3 {
            fast.push(Client::connect(&lan.gateways[g].ws("/ws/firehose")).await);
        }
        let mut publisher = Client::connect(&lan.gateways[0].ws("/ws")).await;
        lan.wait_members(0, "firehose", 4).await;
        const N: u64 = 4000;
        let pad = "p".repeat(1000);
        let readers: Vec<_> = fast
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    for n in 0..N {
                        let m = c.next().await;
                        assert_eq!(m["data"]["n"], json!(n), "{m}");
                    }
                    tokio::time::Instant::now()
                })
            })
            .collect();
        // The slow client reads nothing until the gateways no longer list
        // it, then reads what is left: the close frame waits only a while
        // for a client that does not read, so it must start reading as soon
        // as it is dropped, not after the publisher is done (which under
        // load may be later than that while).
        let conns = format!("{}/connections", lan.url(2));
        let slow_reader = tokio::spawn(async move {
            until("the slow client gone", || async {
                let (_, v) = http("GET", &conns, None).await;
                v["connections"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|c| c["conn"] != slow_conn.as_str()))
            })
            .await;
            slow.until_closed().await
        });
        // 1000 messages a second of 1 KB, for 4 s.
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for n in 0..N {
            tick.tick().await;
            publisher
                .send(json!({"type":"publish","channel":"firehose","data":{"n":n,"pad":pad}}))
                .await;
        }
        let published = tokio::time::Instant::now();
        for r in readers {
            let done = r.await.expect("a fast reader got every message in order");
            let lag = done.saturating_duration_since(published);
            eprintln!("a fast reader finished {lag:?} after the publisher");
            assert!(
                lag < Duration::from_secs(5),
                "a fast reader fell {lag:?} behind"
            );
        }
        let (frames, close) = slow_reader.await.expect("the slow client's reader");
        eprintln!("the slow client had {} frames waiting", frames.len());
        assert!((frames.len() as u64) < N);
        let (code, reason) = close.expect("the close frame, read in time");
        assert_eq!(code, 1008);
        assert_eq!(reason, "outgoing queue full: the client did not read");
    });
}

/// Origins and the API's rules: with a token every route but health needs
/// it; without one, changes are refused unless the API is opened.
#[test]
fn origins_and_api_tokens_are_enforced() {
    netns(|| async {
        let mut lan = Lan::new(2).await;
        lan.start_gateway(
            1,
            &[
                "--api-token",
                "s3cret",
                "--allowed-origin",
                "http://good.example",
            ],
        )
        .await;
        lan.start_gateway(2, &[]).await;
        let (a, b) = (lan.url(0).to_string(), lan.url(1).to_string());
        let auth = [("authorization", "Bearer s3cret")];
        assert_eq!(http("GET", &format!("{a}/health"), None).await.0, 200);
        // Every API route but health, and whether it changes something.
        let routes = [
            ("GET", "/nodes", false),
            ("GET", "/channels", false),
            ("GET", "/channels/x", false),
            ("POST", "/channels/x", true),
            ("DELETE", "/channels/x", true),
            ("GET", "/connections", false),
            ("DELETE", "/connections/x.1", true),
            ("GET", "/keys/k", false),
            ("POST", "/keys/k", true),
            ("POST", "/peers", true),
        ];
        for (method, path, changes) in routes {
            // With a token, every one needs it, reading ones included.
            let (status, body) = http(method, &format!("{a}{path}"), Some("1")).await;
            let got = (status, body["error"].as_str());
            assert_eq!(got, (401, Some("unauthorized")), "{method} {path}");
            // Without one, reading is open and changing is refused.
            let (status, body) = http(method, &format!("{b}{path}"), Some("1")).await;
            let got = (status, body["error"].as_str());
            if changes {
                assert_eq!(got, (403, Some("api-closed")), "{method} {path}");
            } else {
                assert_eq!(got, (200, None), "{method} {path}: {body}");
            }
        }
        let (status, nodes) = http_with("GET", &format!("{a}/nodes"), None, &auth).await;
        assert_eq!(status, 200, "{nodes}");
        let wrong = [("authorization", "Bearer nope")];
        assert_eq!(
            http_with("GET", &format!("{a}/channels"), None, &wrong)
                .await
                .0,
            401
        );
        let (status, _) = http_with("POST", &format!("{a}/channels/x"), Some("1"), &auth).await;
        assert_eq!(status, 200);
        // Origins: a browser from elsewhere is refused, one from the allowed
        // origin and a non-browser client (no Origin) are not.
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let ws = lan.gateways[0].ws("/ws");
        let mut req = ws.clone().into_client_request().unwrap();
        req.headers_mut()
            .insert("origin", "http://evil.example".parse().unwrap());
        let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
        assert!(err.to_string().contains("403"), "{err}");
        let mut req = ws.clone().into_client_request().unwrap();
        req.headers_mut()
            .insert("origin", "http://good.example".parse().unwrap());
        assert!(tokio_tungstenite::connect_async(req).await.is_ok());
        Client::connect(&ws).await;
    });
}
