//! A backend: a plain tcpnet node (no HTTP, no WebSocket) that serves the
//! gateway clients' procedures and receives their events.
//!
//! ```sh
//! cargo run -p tcpnet-gateway --example backend -- my-cluster
//! ```
//!
//! Procedures: `upper` answers a string in upper case (anything else: the
//! named error `bad-input`); `fail` always answers the named error `nope`;
//! `slow` answers after 30 s (for timeouts). Events: each `note` a client
//! transmits is published to the channel `notes`, naming its sender.
//! `TCPNET_HEARTBEAT=<interval ms>,<timeout ms>` sets the mesh's heartbeats.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tcpnet_gateway::Backend;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = std::env::args().nth(1).ok_or("usage: backend CLUSTER")?;
    let mut settings = tcpnet::Settings::new(cluster);
    if let Ok(hb) = std::env::var("TCPNET_HEARTBEAT") {
        let (a, b) = hb
            .split_once(',')
            .ok_or("TCPNET_HEARTBEAT=interval,timeout")?;
        settings = settings.heartbeat(
            Duration::from_millis(a.parse()?),
            Duration::from_millis(b.parse()?),
        );
    }
    let service = tcpnet::tcpnet(settings)?;
    service.listen(0, "0.0.0.0").await?;
    let backend = Backend::new(service.clone());

    let mut upper = backend.procedure("upper")?;
    tokio::spawn(async move {
        while let Some(call) = upper.next().await {
            let _ = match serde_json::from_str::<String>(call.data.get()) {
                Ok(s) => call.end(s.to_uppercase()).await,
                Err(_) => call.error("bad-input", "upper takes a string").await,
            };
        }
    });
    let mut fail = backend.procedure("fail")?;
    tokio::spawn(async move {
        while let Some(call) = fail.next().await {
            let _ = call.error("nope", "this procedure always fails").await;
        }
    });
    let mut slow = backend.procedure("slow")?;
    tokio::spawn(async move {
        while let Some(call) = slow.next().await {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let _ = call.end("late").await;
            });
        }
    });
    let mut notes = backend.receiver("note")?;
    let b = backend.clone();
    tokio::spawn(async move {
        while let Some(ev) = notes.next().await {
            let data: serde_json::Value = serde_json::from_str(ev.data.get()).unwrap_or_default();
            let _ = b
                .publish("notes", json!({"from": ev.client.conn, "note": data}))
                .await;
        }
    });
    println!("backend {} ready", service.id());
    tokio::signal::ctrl_c().await?;
    service.close().await;
    Ok(())
}
