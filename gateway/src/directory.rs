//! The directory of gateway nodes: which nodes of the cluster run a gateway,
//! the URL of each one's HTTP server, and whether it is live.
//!
//! Built on tcpnet messaging as it is: when a link opens, each gateway tells
//! the peer its URL with a named event ([`DIRECTORY_EVENT`]), and answers a
//! hello from a node it did not list with its own (a hello sent before the
//! peer listened for them is lost; the answer covers that); a node is
//! listed while its link is open (so a dead node leaves the list when its
//! link closes: at once when its process dies, within the heartbeat
//! timeout when its host goes silent). Plain tcpnet nodes (backends) never
//! say anything, so they are not listed.
//!
//! This is the one module to change when tcpnet carries node metadata: the
//! URL then rides in the node's metadata, and the list is the members with
//! the gateway's metadata key.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use tcpnet::{NodeId, Service};

use crate::hooks::lock;
use crate::links::{linked, Closed};

/// tcpnet event carrying a gateway's HTTP URL to a newly linked peer.
pub const DIRECTORY_EVENT: &str = "gw.dir";

/// A gateway node, as `GET /nodes` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// The tcpnet node id.
    pub node: String,
    /// Its HTTP server's URL (the WebSocket endpoint is `/ws` under it).
    pub url: String,
    /// Whether it is the node that answered.
    #[serde(rename = "self")]
    pub this: bool,
    /// How long its link has been up, in milliseconds (none for this node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linked_ms: Option<u64>,
}

struct Peer {
    url: String,
    since: Instant,
}

/// The gateway nodes this one knows.
pub(crate) struct Directory {
    me: String,
    url: String,
    peers: Mutex<BTreeMap<String, Peer>>,
}

impl Directory {
    /// Starts the directory of `service`'s node, which serves HTTP at `url`.
    pub(crate) fn start(service: &Service, url: String) -> tcpnet::Result<Arc<Directory>> {
        let dir = Arc::new(Directory {
            me: service.id().to_string(),
            url,
            peers: Mutex::new(BTreeMap::new()),
        });
        let hellos = service.receiver(DIRECTORY_EVENT)?;
        let links = service.on_connection();
        tokio::spawn(run(dir.clone(), service.clone(), hellos, links));
        Ok(dir)
    }

    /// Every gateway node, this one first.
    pub(crate) fn nodes(&self) -> Vec<NodeInfo> {
        let mut v = vec![NodeInfo {
            node: self.me.clone(),
            url: self.url.clone(),
            this: true,
            linked_ms: None,
        }];
        v.extend(self.peers());
        v
    }

    /// The other gateway nodes.
    pub(crate) fn peers(&self) -> Vec<NodeInfo> {
        lock(&self.peers)
            .iter()
            .map(|(node, p)| NodeInfo {
                node: node.clone(),
                url: p.url.clone(),
                this: false,
                linked_ms: Some(p.since.elapsed().as_millis() as u64),
            })
            .collect()
    }
}

async fn run(
    dir: Arc<Directory>,
    service: Service,
    mut hellos: tcpnet::Messages,
    mut links: tcpnet::Events<tcpnet::Connection>,
) {
    let mut closed = Closed::new();
    let hello = |peer: NodeId| {
        let service = service.clone();
        let url = dir.url.clone();
        tokio::spawn(async move {
            if let Err(e) = service.emit_to(&peer, DIRECTORY_EVENT, url).await {
                tracing::debug!(%peer, "directory hello not sent: {e}");
            }
        });
    };
    for conn in service.connections() {
        hello(conn.peer_id().clone());
        closed.watch(conn);
    }
    loop {
        tokio::select! {
            conn = links.next() => {
                let Some(conn) = conn else { return };
                hello(conn.peer_id().clone());
                closed.watch(conn);
            }
            msg = hellos.next() => {
                let Some(msg) = msg else { return };
                let Ok(url) = std::str::from_utf8(msg.data()) else {
                    tracing::warn!(from = %msg.from(), "a directory hello that is not UTF-8");
                    continue;
                };
                if linked(&service, msg.from()) {
                    let new = lock(&dir.peers)
                        .insert(
                            msg.from().to_string(),
                            Peer { url: url.to_string(), since: Instant::now() },
                        )
                        .is_none();
                    if new {
                        hello(msg.from().clone());
                    }
                }
            }
            peer = closed.next() => {
                if !linked(&service, &peer) {
                    lock(&dir.peers).remove(peer.as_str());
                }
            }
        }
    }
}
