//! A replicated key-value cache: the reference for replication on tcpnet.
//!
//! ```text
//! cargo run --example kv -- [CLUSTER]
//! ```
//!
//! Type `set KEY VALUE`, `del KEY`, `get KEY` or `keys` on stdin. Every node
//! holds every key. Writes go to all nodes as typed events; a node pulls a
//! peer's snapshot and merges it whenever it may have missed the peer's
//! writes: when the peer joins (a late joiner), or comes back after its
//! link was lost (`Relinked` within the leave grace, `Rejoined` after it:
//! a freeze, a partition), and from every peer when its event stream
//! dropped writes or its member stream fell behind (see
//! `Events::fell_behind`). Each entry carries a version (a Lamport counter
//! and the writer's id), and the newer version wins, so
//! merging is idempotent and the order of arrival does not matter; deletes
//! are kept as versioned tombstones. stdout says `joined`, `left`,
//! `relinked` and `rejoined` for peers, `KEY = VALUE` (or `KEY deleted`) for each change applied, and
//! answers `get`; stderr shows errors that are not churn.
//! `TCPNET_HEARTBEAT=<interval ms>,<timeout ms>` sets the failure detection.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tcpnet::{ErrorKind, MemberChange, NodeId, Service};
use tokio::io::AsyncBufReadExt;

/// A write: the key, its value (`None`: deleted) and the write's version.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Write {
    key: String,
    value: Option<String>,
    version: (u64, String),
}

type Store = Arc<Mutex<BTreeMap<String, Write>>>;

/// Applies `w` if it is newer than what the store holds; says so if it is.
fn apply(store: &Store, w: Write) {
    let mut map = store.lock().unwrap();
    if map.get(&w.key).is_some_and(|old| old.version >= w.version) {
        return;
    }
    match &w.value {
        Some(v) => println!("{} = {v}", w.key),
        None => println!("{} deleted", w.key),
    }
    map.insert(w.key.clone(), w);
}

/// Pulls `peer`'s whole store and merges it.
async fn resync(service: &Service, store: &Store, peer: &NodeId) {
    let snapshot = service.rpc::<(), Vec<Write>>("kv.snapshot");
    match snapshot.call(peer, &(), Duration::from_secs(5)).await {
        Ok(writes) => writes.into_iter().for_each(|w| apply(store, w)),
        Err(e) => eprintln!("resync from {peer}: {e}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = std::env::args().nth(1).unwrap_or_else(|| "kv".into());
    let mut settings = tcpnet::Settings::new(cluster);
    if let Ok(hb) = std::env::var("TCPNET_HEARTBEAT") {
        let (i, t) = hb
            .split_once(',')
            .ok_or("TCPNET_HEARTBEAT=<interval ms>,<timeout ms>")?;
        let ms = |v: &str| v.trim().parse().map(Duration::from_millis);
        settings = settings.heartbeat(ms(i)?, ms(t)?);
    }
    let service = tcpnet::tcpnet(settings)?;
    let store: Store = Arc::default();
    let me = service.id().to_string();

    // Everything the node receives is registered before `listen`, so no
    // write and no snapshot call that comes early is missed.
    let writes = service.event::<Write>("kv.write");
    let mut incoming = writes.receiver()?;
    let mut snapshots = service.rpc::<(), Vec<Write>>("kv.snapshot").serve()?;
    let mut members = service.on_member();
    let mut errors = service.on_error();
    service.listen(0, "0.0.0.0").await?;
    let s = store.clone();
    tokio::spawn(async move {
        while let Some(Ok(req)) = snapshots.next().await {
            let all: Vec<Write> = s.lock().unwrap().values().cloned().collect();
            let _ = req.reply(&all).await;
        }
    });
    // Discovery has settled: catch up from every peer found, then serve.
    let ready = service.ready().await?;
    for peer in &ready.linked {
        resync(&service, &store, peer).await;
    }
    println!("ready as {me}: {} peers", ready.linked.len());

    // Every other peer that joins, or comes back after its link was lost,
    // may have missed writes of this node and this node its: pull its
    // snapshot (it pulls this node's).
    let mut synced: HashSet<NodeId> = ready.linked.into_iter().collect();
    let (svc, s) = (service.clone(), store.clone());
    tokio::spawn(async move {
        loop {
            while let Some(ev) = members.next().await {
                let peer = &ev.member.id;
                if ev.member.is_local() {
                    continue;
                }
                match ev.change {
                    MemberChange::Joined => println!("joined {peer}"),
                    MemberChange::Left(why) => println!("left {peer} ({why})"),
                    MemberChange::Relinked { away } => {
                        println!("relinked {peer} after {away:?}")
                    }
                    MemberChange::Rejoined => println!("rejoined {peer}"),
                    _ => {}
                }
                // A peer that `ready` found was pulled already.
                if ev.change.needs_resync() && !synced.remove(peer) {
                    resync(&svc, &s, peer).await;
                }
            }
            // The stream ended: the service was dropped, or this task fell
            // too far behind (resyncs are slow) and missed changes, a
            // peer's return among them perhaps. Watch again: a new stream
            // starts with every member present as `Joined`, so every
            // peer's snapshot is pulled.
            if !members.fell_behind() {
                break;
            }
            eprintln!("member events fell behind: pulling every peer's snapshot");
            synced.clear();
            members = svc.on_member();
        }
    });
    let (svc, s) = (service.clone(), store.clone());
    tokio::spawn(async move {
        while let Some(w) = incoming.next().await {
            match w {
                Ok(w) => apply(&s, w.into_value()),
                // Writes were lost here: pull everything from every peer.
                Err(tcpnet::Error::Dropped { .. }) => {
                    for conn in svc.connections() {
                        resync(&svc, &s, conn.peer_id()).await;
                    }
                }
                Err(e) => eprintln!("{e}"),
            }
        }
    });
    tokio::spawn(async move {
        while let Some(e) = errors.next().await {
            if e.kind() != ErrorKind::Churn {
                eprintln!("{}: {e}", e.kind());
            }
        }
    });

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (key, value) = match words[..] {
            ["set", key, value] => (key, Some(value.to_string())),
            ["del", key] => (key, None),
            ["get", key] => {
                let map = store.lock().unwrap();
                match map.get(key).and_then(|w| w.value.as_ref()) {
                    Some(v) => println!("get {key}: {v}"),
                    None => println!("get {key}: none"),
                }
                continue;
            }
            ["keys"] => {
                let map = store.lock().unwrap();
                let live: Vec<&String> = map
                    .iter()
                    .filter(|(_, w)| w.value.is_some())
                    .map(|(k, _)| k)
                    .collect();
                println!("keys: {live:?}");
                continue;
            }
            _ => {
                eprintln!("usage: set KEY VALUE | del KEY | get KEY | keys");
                continue;
            }
        };
        // A Lamport counter: above every version this node has seen.
        let clock = store
            .lock()
            .unwrap()
            .values()
            .map(|w| w.version.0)
            .max()
            .unwrap_or(0)
            + 1;
        let w = Write {
            key: key.to_string(),
            value,
            version: (clock, me.clone()),
        };
        apply(&store, w.clone());
        writes.emit(&w).await?;
    }
    service.close().await;
    Ok(())
}
