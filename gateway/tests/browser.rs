//! The demo page and the JavaScript client in headless Chromium, against
//! three gateway processes on a private LAN (Chromium runs in the test's
//! network namespace too). Each case saves screenshots in `target/browser/`.
//!
//! Needs Chromium and chromedriver (`apt-get install chromium
//! chromium-driver`); without them every case fails saying so.

mod chrome;
mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrome::{Chrome, Page};
use common::{http, netns, Client, Lan};
use serde_json::{json, Value};

/// One case at a time: three gateways and up to three browsers already
/// share the machine's cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    netns(test);
}

/// A JavaScript string literal.
fn js_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

/// Opens the demo page on gateway `g` as `key` in `channels`; waits until
/// it is connected, and checks it is on that gateway's node.
async fn demo(chrome: &Chrome, lan: &Lan, g: usize, key: &str, channels: &str) -> Page {
    let url = format!("{}/?key={key}&channels={channels}", lan.url(g));
    let page = chrome.page(key, &url).await;
    let node = page
        .wait(
            "connected",
            "document.querySelector('#status').textContent === 'open' \
             && document.querySelector('#node').dataset.node",
        )
        .await;
    assert_eq!(node, json!(lan.gateways[g].node), "{key}: the node shown");
    assert!(
        page.text("#conn").await.starts_with(&lan.gateways[g].node),
        "{key}: the connection shown is one of its node"
    );
    page
}

/// Three gateways; alice's page on the first and bob's on the second, both
/// in `channels`, every node seeing both in `room`.
async fn alice_and_bob(channels: &str) -> (Lan, Chrome, Page, Page) {
    let lan = Lan::with_gateways(3, &["--open-api"]).await;
    let chrome = Chrome::start().await;
    let alice = demo(&chrome, &lan, 0, "alice", channels).await;
    let bob = demo(&chrome, &lan, 1, "bob", channels).await;
    for g in 0..3 {
        lan.wait_members(g, "room", 2).await;
    }
    (lan, chrome, alice, bob)
}

/// Saves each page's screenshot for `case`, then closes them.
async fn finish(case: &str, pages: Vec<Page>) {
    for page in pages {
        page.screenshot(case).await;
        page.close().await;
    }
}

/// The node of the member `key` listed in the page's presence panel.
fn member_node(key: &str) -> String {
    format!(
        "document.querySelector('#members li[data-key={}]')?.dataset.node",
        js_str(key)
    )
}

/// The node shown with the chat message `text`.
fn message_node(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#messages .msg:not(.notice)')]\
         .find(m => m.querySelector('.text').textContent === {})?.dataset.node",
        js_str(text)
    )
}

async fn say(page: &Page, text: &str) {
    page.submit("#send-input", text, "#send-form button").await;
}

/// Two pages on two nodes chat in a channel and see each other present; a
/// page on the third node in another channel sees nothing of it; when one
/// leaves, the other sees it leave and its key go offline.
#[test]
fn two_pages_on_two_nodes_chat_and_a_third_sees_nothing() {
    serial(|| async {
        let lan = Lan::with_gateways(3, &["--open-api"]).await;
        let chrome = Chrome::start().await;
        let alice = demo(&chrome, &lan, 0, "alice", "room").await;
        let bob = demo(&chrome, &lan, 1, "bob", "room").await;
        let carol = demo(&chrome, &lan, 2, "carol", "other").await;
        let (n0, n1, n2) = (
            lan.gateways[0].node.as_str(),
            lan.gateways[1].node.as_str(),
            lan.gateways[2].node.as_str(),
        );

        // Presence, cluster-wide, in both pages, with each member's node.
        assert_eq!(alice.wait("bob present", &member_node("bob")).await, n1);
        assert_eq!(bob.wait("alice present", &member_node("alice")).await, n0);
        for g in 0..3 {
            lan.wait_members(g, "room", 2).await;
        }

        say(&alice, "hello from alice").await;
        assert_eq!(
            bob.wait("alice's message", &message_node("hello from alice"))
                .await,
            n0
        );
        assert_eq!(
            alice
                .wait("her own message", &message_node("hello from alice"))
                .await,
            n0
        );
        say(&bob, "hi alice, bob here").await;
        assert_eq!(
            alice
                .wait("bob's answer", &message_node("hi alice, bob here"))
                .await,
            n1
        );

        // Carol's page receives (her own channel's message comes through)
        // but nothing of the room.
        say(&carol, "carol alone").await;
        assert_eq!(
            carol
                .wait("her message", &message_node("carol alone"))
                .await,
            n2
        );
        let seen = carol
            .js("return [...document.querySelectorAll('#messages .msg')].map(m => m.textContent)")
            .await;
        assert_eq!(
            seen.as_array().map(Vec::len),
            Some(1),
            "carol sees only her own: {seen}"
        );
        assert!(alice.text("#messages").await.find("carol").is_none());
        assert!(carol.text("#members").await.find("alice").is_none());

        alice.screenshot("chat").await;
        bob.screenshot("chat").await;
        carol.screenshot("chat").await;

        // Bob leaves: alice sees him go, and his key go offline.
        alice
            .wait(
                "bob's key online",
                "document.querySelector('#keys li[data-key=\"bob\"].online')",
            )
            .await;
        bob.close().await;
        alice
            .wait("bob gone", &format!("!({})", member_node("bob")))
            .await;
        alice
            .wait(
                "bob's key offline",
                "document.querySelector('#keys li[data-key=\"bob\"].offline')",
            )
            .await;
        alice.screenshot("presence-after-leave").await;
        alice.close().await;
        carol.close().await;
    });
}

/// kill -9 of the node a page is on: the page reconnects to another node,
/// its subscription comes back, and it receives the next message.
#[test]
fn a_page_whose_node_is_killed_reconnects_elsewhere_and_gets_the_next_message() {
    serial(|| async {
        let (mut lan, _chrome, alice, bob) = alice_and_bob("room").await;
        let before = alice.text("#conn").await;
        lan.gateways[0].kill().await;

        let node = alice
            .wait(
                "reconnected elsewhere",
                &format!(
                    "document.querySelector('#status').textContent === 'open' \
                     && document.querySelector('#node').dataset.node !== {} \
                     && document.querySelector('#node').dataset.node",
                    js_str(&lan.gateways[0].node)
                ),
            )
            .await;
        assert!(
            node == lan.gateways[1].node.as_str() || node == lan.gateways[2].node.as_str(),
            "alice is on a live node: {node}"
        );
        assert_ne!(alice.text("#conn").await, before, "a new connection");
        // The client says what the server restored.
        alice
            .wait(
                "the restore reported",
                "document.querySelector('#log').textContent.includes('restored #room')",
            )
            .await;
        assert_eq!(
            alice
                .js("return window.demo.client.channel('room').state")
                .await,
            "subscribed"
        );
        for g in 1..3 {
            lan.wait_members(g, "room", 2).await;
        }

        say(&bob, "after the failover").await;
        assert_eq!(
            alice
                .wait("the next message", &message_node("after the failover"))
                .await,
            lan.gateways[1].node.as_str()
        );
        finish("failover", vec![alice, bob]).await;
    });
}

/// The kick button (DELETE /connections/{id}) on one page disconnects the
/// other, which shows it; the first sees it leave.
#[test]
fn a_page_disconnected_through_the_api_shows_it() {
    serial(|| async {
        let (lan, _chrome, alice, bob) = alice_and_bob("room").await;
        alice.wait("bob present", &member_node("bob")).await;
        let bob_conn = bob.text("#conn").await;

        alice
            .click("#members li[data-key=\"bob\"] button.kick")
            .await;
        let banner = bob
            .wait(
                "the disconnect shown",
                "!document.querySelector('#banner').hidden \
                 && document.querySelector('#status').textContent === 'closed' \
                 && document.querySelector('#banner').textContent",
            )
            .await;
        assert!(
            banner
                .as_str()
                .unwrap_or_default()
                .contains("Disconnected by the server"),
            "{banner}"
        );
        alice
            .wait("bob gone", &format!("!({})", member_node("bob")))
            .await;
        let (_, connections) = http("GET", &format!("{}/connections", lan.url(2)), None).await;
        assert!(
            !connections.to_string().contains(&bob_conn),
            "{bob_conn} is gone from the cluster: {connections}"
        );
        finish("kicked", vec![alice, bob]).await;
    });
}

/// The close button (DELETE /channels/{ch}) on one page: both pages show
/// the channel closed.
#[test]
fn a_closed_channel_shows_closed_in_both_pages() {
    serial(|| async {
        let (lan, _chrome, alice, bob) = alice_and_bob("room,lobby").await;
        alice
            .click("#channels li[data-channel=\"room\"] button.close-channel")
            .await;
        let closed = "document.querySelector('#channels li[data-channel=\"room\"].closed .state')\
                      ?.textContent === 'closed' \
                      && document.querySelector('#banner').textContent.includes('#room was closed')";
        alice.wait("room closed", closed).await;
        bob.wait("room closed", closed).await;
        for page in [&alice, &bob] {
            assert_eq!(
                page.js("return window.demo.client.channel('lobby').state")
                    .await,
                "subscribed",
                "{}: the other channel stays",
                page.name
            );
        }
        lan.wait_members(2, "room", 0).await;
        finish("channel-closed", vec![alice, bob]).await;
    });
}

/// The client library's calls in a page: a backend's procedure answers, its
/// named error rejects with that name, an unknown procedure with its code;
/// a transmitted event reaches the backend (which publishes it back); a
/// message to a key reaches that key's connection on another node; and a
/// client that cannot connect queues up to its bound, refuses past it with
/// `queue-full`, and rejects what it queued with `closed` when closed.
const CALLS_SCRIPT: &str = r#"
return (async () => {
  const { Client, GatewayError } = await import('/client.js');
  const c = new Client(location.origin, { key: 'alice' });
  await new Promise((resolve) => c.on('connect', resolve));
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const failure = (e) => ({ code: e.code, name: e.name, message: e.message, gateway: e instanceof GatewayError });
  // The backend's procedures are known once its topics reach the node.
  let upper;
  for (let i = 0; i < 400 && upper === undefined; i++) {
    try {
      upper = await c.invoke('upper', 'hello');
    } catch (e) {
      if (e.code !== 'unknown-procedure') throw e;
      await sleep(25);
    }
  }
  const named = await c.invoke('fail', null).then(() => null, failure);
  const unknown = await c.invoke('nothing-serves-this', null).then(() => null, failure);
  // The backend publishes each note to `notes`; it may miss the first ones
  // until it learns this node subscribed.
  const notes = c.subscribe('notes');
  await notes.ready;
  const next = notes[Symbol.asyncIterator]().next();
  let note = null;
  for (let i = 0; i < 200 && note === null; i++) {
    await c.transmit('note', 'from the browser');
    note = await Promise.race([next, sleep(100).then(() => null)]);
  }
  await c.send('bob', { text: 'to bob' });
  const offline = await c.send('nobody-has-this-key', 1).then(() => null, failure);
  // Nothing listens on port 9: this client never connects.
  const q = new Client('http://127.0.0.1:9', { queueLimit: 3, minDelay: 20, maxDelay: 100 });
  const queued = [1, 2, 3].map((i) => q.publish('x', i).then(() => 'sent', (e) => e.code));
  const refused = await q.publish('x', 4).then(() => 'sent', (e) => e.code);
  const waiting = { status: q.status, queued: q.queued };
  q.close();
  const result = {
    conn: c.conn, upper, named, unknown, note: note && note.value.data, offline,
    refused, waiting, afterClose: await Promise.all(queued),
  };
  document.body.innerText = JSON.stringify(result, null, 2);
  return result;
})();
"#;

#[test]
fn the_client_calls_sends_transmits_and_bounds_its_queue() {
    serial(|| async {
        let mut lan = Lan::new(4).await;
        for i in 1..=3 {
            lan.start_gateway(i, &[]).await;
        }
        lan.wait_for_nodes(3).await;
        lan.start_backend(4).await;
        let mut bob = Client::connect(&lan.gateways[1].ws("/ws?key=bob")).await;
        let chrome = Chrome::start().await;
        let page = chrome
            .page("calls", &format!("{}/health", lan.url(0)))
            .await;
        let r = page.js(CALLS_SCRIPT).await;
        page.screenshot("calls").await;
        assert_eq!(r["upper"], "HELLO", "{r}");
        assert_eq!(
            r["named"],
            json!({"code":"remote","name":"nope","message":"this procedure always fails","gateway":true})
        );
        assert_eq!(r["unknown"]["code"], "unknown-procedure", "{r}");
        assert_eq!(
            r["note"],
            json!({"from": r["conn"], "note": "from the browser"})
        );
        assert_eq!(r["offline"]["code"], "key-offline", "{r}");
        assert_eq!(r["refused"], "queue-full", "{r}");
        assert_eq!(r["waiting"], json!({"status":"connecting","queued":3}));
        assert_eq!(r["afterClose"], json!(["closed", "closed", "closed"]));
        let direct = bob.until(|f| f["type"] == "direct").await;
        assert_eq!(direct["data"], json!({"text":"to bob"}));
        assert_eq!(direct["from"]["key"], "alice");
        assert_eq!(direct["from"]["node"], lan.gateways[0].node.as_str());
        page.close().await;
    });
}

/// Subscriptions of the load page, messages a second over all of them, and
/// for how long.
const LOAD_CHANNELS: usize = 50;
const LOAD_RATE: u64 = 1_000;
const LOAD_SECONDS: u64 = 10;
const PUBLISHERS: usize = 4;

/// The load page's receiving side: subscribes, checks each channel's
/// numbers arrive in order with none missing, and keeps figures.
const LOAD_SCRIPT: &str = r#"
return (async () => {
  const { Client } = await import('/client.js');
  const client = new Client(location.origin, { key: 'load' });
  const stats = {
    received: 0, outOfOrder: [], lost: 0, disconnects: 0, latencies: [],
    perSecond: {}, maxBacklog: 0, next: {},
  };
  window.load = { client, stats };
  client.on('disconnect', () => stats.disconnects++);
  const channels = [];
  for (let i = 0; i < CHANNELS; i++) {
    const ch = client.subscribe('load-' + i);
    ch.on('lost', ({ count }) => (stats.lost += count));
    channels.push(ch);
    stats.next[ch.name] = 0;
    (async () => {
      for await (const m of ch) {
        const now = Date.now();
        if (m.data.n !== stats.next[m.channel]) {
          stats.outOfOrder.push([m.channel, stats.next[m.channel], m.data.n]);
        }
        stats.next[m.channel] = m.data.n + 1;
        stats.received++;
        stats.latencies.push(now - m.data.t);
        const second = Math.floor(now / 1000);
        stats.perSecond[second] = (stats.perSecond[second] || 0) + 1;
      }
    })();
  }
  setInterval(() => {
    const backlog = channels.reduce((n, ch) => n + ch.backlog, 0);
    stats.maxBacklog = Math.max(stats.maxBacklog, backlog);
    // What the page shows (and a timed-out wait prints).
    document.body.innerText = JSON.stringify({
      status: client.status, received: stats.received, lost: stats.lost,
      disconnects: stats.disconnects, outOfOrder: stats.outOfOrder.length,
      maxBacklog: stats.maxBacklog,
    });
  }, 50);
  await Promise.all(channels.map((ch) => ch.ready));
  return client.conn;
})();
"#;

/// One page with 50 subscriptions receives 1,000 messages a second for 10 s
/// from publishers on the two other nodes, with the gateway's default
/// per-connection limits: it gets every message, in order, is never
/// disconnected (a client more than 1,024 frames behind would be), and its
/// figures go to `target/browser/load.json`.
#[test]
fn one_page_keeps_up_with_1000_messages_a_second_on_50_channels() {
    serial(|| async {
        let lan = Lan::with_gateways(3, &[]).await;
        let chrome = Chrome::start().await;
        let page = chrome.page("load", &format!("{}/health", lan.url(0))).await;
        let script = LOAD_SCRIPT.replace("CHANNELS", &LOAD_CHANNELS.to_string());
        let conn = page.js(&script).await;
        assert!(conn.is_string(), "subscribed: {conn}");
        for g in 1..3 {
            for i in 0..LOAD_CHANNELS {
                lan.wait_members(g, &format!("load-{i}"), 1).await;
            }
        }

        // Each publisher owns the channels i with i % PUBLISHERS == p, so
        // each channel's numbers come from one sender, in order.
        let per_publisher = LOAD_RATE / PUBLISHERS as u64;
        let total = LOAD_RATE * LOAD_SECONDS;
        let mut tasks = Vec::new();
        for p in 0..PUBLISHERS {
            let url = lan.gateways[1 + p % 2].ws("/ws");
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(&url).await;
                let mine: Vec<usize> = (p..LOAD_CHANNELS).step_by(PUBLISHERS).collect();
                let mut next: HashMap<usize, u64> = HashMap::new();
                let mut tick =
                    tokio::time::interval(Duration::from_micros(1_000_000 / per_publisher));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for k in 0..per_publisher * LOAD_SECONDS {
                    tick.tick().await;
                    let ch = mine[k as usize % mine.len()];
                    let n = next.entry(ch).or_default();
                    let t = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .expect("clock")
                        .as_millis() as u64;
                    c.send(json!({"type":"publish","channel":format!("load-{ch}"),"data":{"n":*n,"t":t}}))
                        .await;
                    *n += 1;
                }
                let errors = c.ping().await;
                assert!(errors.is_empty(), "publisher {p}: {errors:?}");
            }));
        }
        for t in tasks {
            t.await.expect("publisher");
        }
        let stats = page
            .wait(
                "every message",
                // Or anything that means it never will: the summary says.
                &format!(
                    "(window.load.stats.received >= {total} || window.load.stats.lost > 0 \
                     || window.load.stats.disconnects > 0) && window.load.stats"
                ),
            )
            .await;
        page.screenshot("load").await;

        let mut lat: Vec<u64> = stats["latencies"]
            .as_array()
            .expect("latencies")
            .iter()
            .map(|v| v.as_u64().unwrap_or(0))
            .collect();
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
        let per_second: Vec<u64> = {
            let m = stats["perSecond"].as_object().expect("per second");
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            keys.iter().map(|k| m[*k].as_u64().unwrap_or(0)).collect()
        };
        let summary = json!({
            "channels": LOAD_CHANNELS,
            "rate_per_s": LOAD_RATE,
            "seconds": LOAD_SECONDS,
            "sent": total,
            "received": stats["received"],
            "out_of_order": stats["outOfOrder"],
            "lost": stats["lost"],
            "disconnects": stats["disconnects"],
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
            "received_per_second": per_second,
            "max_unread_in_page": stats["maxBacklog"],
        });
        let path = chrome::screenshot_dir().join("load.json");
        std::fs::write(&path, serde_json::to_string_pretty(&summary).expect("json"))
            .expect("write load.json");
        println!("browser load: {summary}");
        assert_eq!(stats["received"], json!(total), "{summary}");
        assert_eq!(stats["outOfOrder"], json!([]), "{summary}");
        assert_eq!(stats["lost"], json!(0), "{summary}");
        assert_eq!(stats["disconnects"], json!(0), "{summary}");
        assert_eq!(
            page.js("return window.load.client.status").await,
            "open",
            "{summary}"
        );
        let _: Value = page.js("window.load.client.close(); return null").await;
        page.close().await;
    });
}
