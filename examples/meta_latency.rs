//! How long a metadata change takes to reach linked peers on a LAN.
//!
//! Run one `set` and two `watch` on three hosts of one LAN, in cluster
//! `lat`. The setter waits for its two links, then changes its metadata
//! key `v` 20 times, 200 ms apart, printing `set I MICROS` (the wall clock
//! just before `set_meta`); each watcher prints `got I MICROS` when its
//! member event says the change arrived. The difference of the two stamps
//! is the latency, so the hosts must share a clock: network namespaces of
//! one machine do. It discovers peers by mDNS on every interface, so run
//! it only on a LAN of your own; the README's figure was taken on three
//! network namespaces joined by veth pairs on one bridge, nothing else on it.
//!
//! ```text
//! cargo build --release --example meta_latency
//! # on h2 and h3:  target/release/examples/meta_latency watch
//! # on h1:         target/release/examples/meta_latency set
//! ```
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tcpnet::{MemberChange, Service, Settings};

const CHANGES: u32 = 20;

fn micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_micros()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let role = std::env::args().nth(1).unwrap_or_default();
    let node = Service::new(Settings::new("lat").meta("v", "start"))?;
    let mut members = node.on_member();
    node.listen(0, "0.0.0.0").await?;
    match role.as_str() {
        "set" => {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut links = node.on_connection();
            while node.connections().len() < 2 {
                if Instant::now() > deadline {
                    return Err("no link to two watchers within 30 s".into());
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), links.next()).await;
            }
            // Let the watchers' views settle on this node's first record.
            tokio::time::sleep(Duration::from_secs(1)).await;
            for i in 0..CHANGES {
                let at = micros();
                node.set_meta("v", &i.to_string())?;
                println!("set {i} {at}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        "watch" => {
            let mut got = 0;
            while let Some(e) = members.next().await {
                let v = e.member.meta.get("v").unwrap_or("start");
                if e.change == MemberChange::Updated && v != "start" {
                    println!("got {v} {}", micros());
                    got += 1;
                    if got == CHANGES {
                        break;
                    }
                }
            }
        }
        _ => return Err("usage: meta_latency set|watch".into()),
    }
    node.close().await;
    Ok(())
}
