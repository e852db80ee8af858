//! The demo: every node writes to every other node
//! once a second and prints what it receives.
//!
//! ```text
//! cargo run --example demo -- [cluster-name]
//! ```
//!
//! Start it in several terminals (or on several hosts) with the same cluster
//! name. Logs go to stderr (`RUST_LOG=debug` for more); stdout carries only
//! `write to N nodes` lines and the frames received, as they arrive.
//! `TCPNET_KEY_FILE=<path>` keeps the node's key pair, so its id, in that
//! file (made if missing; default: a new key pair and id every start);
//! `TCPNET_SECRET=<secret>` sets the cluster secret (default: none, an open
//! cluster); `TCPNET_HEARTBEAT=<interval ms>,<timeout ms>` the failure
//! detection (default: 1000,3000); `TCPNET_META=<key>=<value>,...` the
//! node's metadata (default: none).

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "my-cluster".into());

    let mut settings = tcpnet::Settings::new(name.as_str());
    if let Ok(path) = std::env::var("TCPNET_KEY_FILE") {
        settings = settings.key_file(path);
    }
    if let Ok(secret) = std::env::var("TCPNET_SECRET") {
        settings = settings.secret(secret);
    }
    if let Ok(meta) = std::env::var("TCPNET_META") {
        for pair in meta.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("TCPNET_META={meta:?}: want <key>=<value>,..."))?;
            settings = settings.meta(key, value);
        }
    }
    if let Ok(hb) = std::env::var("TCPNET_HEARTBEAT") {
        let ms: Vec<u64> = hb
            .split(',')
            .map(|v| v.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("TCPNET_HEARTBEAT={hb:?}: {e}"))?;
        let [interval, timeout] = ms[..] else {
            return Err(format!("TCPNET_HEARTBEAT={hb:?}: want <interval ms>,<timeout ms>").into());
        };
        settings = settings.heartbeat(
            Duration::from_millis(interval),
            Duration::from_millis(timeout),
        );
    }
    let service = tcpnet::tcpnet(settings)?;
    let mut conns = service.on_connection();
    let count_links = std::env::var("TCPNET_LINKS").is_ok_and(|v| v == "1");
    let address = service.listen(0, "0.0.0.0").await?;
    tracing::info!(id = %service.id(), port = address.port, cluster = %name, "node started");

    // Pipe every link to stdout, frame by frame.
    let node = service.clone();
    tokio::spawn(async move {
        while let Some(mut conn) = conns.next().await {
            let node = node.clone();
            if count_links {
                println!("links {}", node.connections().len());
            }
            tokio::spawn(async move {
                while let Some(frame) = conn.next().await {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&frame).and_then(|_| out.flush());
                }
                if count_links {
                    conn.closed().await;
                    println!("links {}", node.connections().len());
                }
            });
        }
    });

    let message = format!("message from {}\n", service.id());
    // Like setInterval: the first write comes one second after the start.
    let second = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let conns = service.connections();
                println!("write to {} nodes", conns.len());
                for conn in conns {
                    // A link that closed meanwhile just fails this one send.
                    let _ = conn.send(message.clone()).await;
                }
            }
            _ = &mut stop => break,
        }
    }
    service.close().await;
    tracing::info!("closed");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
