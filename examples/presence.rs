//! Presence: who is here, kept current. The link stream starts with the
//! nodes linked now and then says who comes and goes, so the set never
//! needs merging with a separate list. Each node announces a display name
//! as a typed event to every node it links to, the moment it links.
//!
//! ```text
//! cargo run --example presence -- NAME [CLUSTER]
//! ```

use std::collections::BTreeMap;

use futures::StreamExt;
use tcpnet::LinkEvent;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().ok_or("usage: presence NAME [CLUSTER]")?;
    let service = tcpnet::tcpnet(args.next().unwrap_or_else(|| "presence".into()).as_str())?;
    let hello = service.event::<String>("presence.name");
    let mut names = hello.receiver()?;
    let mut links = service.on_link();
    service.listen(0, "0.0.0.0").await?;

    let mut here = BTreeMap::new();
    loop {
        tokio::select! {
            Some(event) = links.next() => match event {
                // Tell each peer who we are as it links; it does the same.
                LinkEvent::Up(conn) => {
                    // Its name may have come first.
                    here.entry(conn.peer_id().clone()).or_insert_with(|| "?".into());
                    let _ = hello.emit_to(conn.peer_id(), &name).await;
                }
                LinkEvent::Down(conn, _) => {
                    here.remove(conn.peer_id());
                }
                _ => continue,
            },
            Some(Ok(msg)) = names.next() => {
                here.insert(msg.from().clone(), msg.into_value());
            }
            else => break,
        }
        let mut who: Vec<&str> = here.values().map(String::as_str).collect();
        who.push(&name);
        println!("here: {}", who.join(", "));
    }
    Ok(())
}
