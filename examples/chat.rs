//! A chat room on the mesh: lines typed on stdin go to a topic; messages
//! from the others print with the sender's id; nodes joining and leaving
//! print too.
//!
//! ```text
//! cargo run --example chat -- ROOM [CLUSTER]
//! ```
//!
//! Start it in several terminals (or on several hosts) with the same room.
//! Every line you type reaches every node subscribed to the room, and only
//! those: nodes in other rooms do not even receive the bytes. `TCPNET_SECRET`
//! sets a cluster secret, as for the demo.

use futures::StreamExt;
use tokio::io::AsyncBufReadExt;

/// The first 8 hex digits of an id, enough to tell nodes apart here.
fn short(id: &tcpnet::NodeId) -> &str {
    &id.as_str()[..id.len().min(8)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let room = args.next().unwrap_or_else(|| "lobby".into());
    let cluster = args.next().unwrap_or_else(|| "chat".into());

    let mut settings = tcpnet::Settings::new(cluster.as_str());
    if let Ok(secret) = std::env::var("TCPNET_SECRET") {
        settings = settings.secret(secret);
    }
    let service = tcpnet::tcpnet(settings)?;
    let mut messages = service.subscribe(&room)?;
    let mut links = service.on_connection();
    service.listen(0, "0.0.0.0").await?;
    println!("* you are {} in room {room:?}", short(service.id()));

    // Joins and leaves: a link opening, and later closing.
    tokio::spawn(async move {
        while let Some(conn) = links.next().await {
            println!("* {} joined", short(conn.peer_id()));
            tokio::spawn(async move {
                let why = conn.closed().await;
                println!("* {} left ({why})", short(conn.peer_id()));
            });
        }
    });

    // Messages from the others.
    let me = service.id().clone();
    tokio::spawn(async move {
        while let Some(msg) = messages.next().await {
            if msg.from() != &me {
                println!(
                    "{}: {}",
                    short(msg.from()),
                    String::from_utf8_lossy(msg.data())
                );
            }
        }
    });

    // Lines typed go to the room; end of input (Ctrl-D) leaves.
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if !line.is_empty() {
            service.publish(&room, line).await?;
        }
    }
    service.close().await;
    Ok(())
}
