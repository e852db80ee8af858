//! The gateway running on one tcpnet node: its shared state and every
//! operation on it, used by the WebSocket sessions, the HTTP API and the
//! cluster tasks alike.

mod calls;
mod channels;
mod keys;
pub(crate) mod state;

pub(crate) use calls::error_frame as calls_error_frame;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tcpnet::Service;

use crate::cluster::wire::{Op, CONNECTIONS_PROCEDURE, KICK_PROCEDURE};
use crate::hooks::{lock, Client, Disconnection, Hooks};
use crate::limits::Limits;
use crate::protocol::server;
use crate::session::{Outbox, CLOSE_NORMAL};
use state::{LocalConn, State};

/// Who may use the HTTP API.
#[derive(Debug, Clone)]
pub(crate) struct ApiAccess {
    pub token: Option<String>,
    pub open: bool,
}

pub(crate) struct Node {
    pub service: Service,
    pub me: String,
    pub state: Mutex<State>,
    pub limits: Limits,
    pub hooks: Hooks,
    pub api: ApiAccess,
    next_conn: AtomicU64,
    /// Round robin over backends serving a procedure.
    next_backend: AtomicUsize,
}

/// One connection, as `GET /connections` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ConnSummary {
    pub conn: String,
    pub key: String,
    pub node: String,
    pub channels: Vec<String>,
}

impl Node {
    pub(crate) fn new(
        service: Service,
        limits: Limits,
        hooks: Hooks,
        api: ApiAccess,
        ops: tokio::sync::mpsc::Sender<Op>,
    ) -> Node {
        let me = service.id().to_string();
        Node {
            state: Mutex::new(State::new(me.clone(), limits.share(), ops)),
            me,
            service,
            limits,
            hooks,
            api,
            next_conn: AtomicU64::new(1),
            next_backend: AtomicUsize::new(0),
        }
    }

    /// A new connection id: this node's id, a dot, a number.
    pub(crate) fn conn_id(&self) -> String {
        format!(
            "{}.{}",
            self.me,
            self.next_conn.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// How many connections this node holds.
    pub(crate) fn connection_count(&self) -> usize {
        lock(&self.state).conns.len()
    }

    /// Registers a connection: its key goes online here.
    pub(crate) fn register(&self, client: Client, outbox: Arc<Outbox>) {
        let mut st = lock(&self.state);
        let holders = st.keys.entry(client.key.clone()).or_default();
        let first = holders.is_empty();
        holders.insert(client.conn.clone(), outbox.clone());
        if first {
            st.local(Op::KeyOn {
                key: client.key.clone(),
            });
        }
        st.conns.insert(
            client.conn.clone(),
            LocalConn {
                client: client.clone(),
                outbox,
                channels: Default::default(),
                watching: Default::default(),
            },
        );
        drop(st);
        self.hooks.connections.emit(&client);
    }

    /// Forgets a connection: it leaves its channels, its watches go, and
    /// its key goes offline here if it was the last.
    pub(crate) fn unregister(&self, conn: &str, reason: String) {
        let mut st = lock(&self.state);
        let Some(c) = st.conns.remove(conn) else {
            return;
        };
        for channel in c.channels.keys() {
            channels::leave(&mut st, channel, conn);
        }
        for key in &c.watching {
            keys::unwatch_one(&mut st, key, conn);
        }
        let key = &c.client.key;
        if let Some(holders) = st.keys.get_mut(key) {
            holders.remove(conn);
            if holders.is_empty() {
                st.keys.remove(key);
                st.local(Op::KeyOff { key: key.clone() });
            }
        }
        drop(st);
        self.hooks.disconnections.emit(&Disconnection {
            client: c.client,
            reason,
        });
    }

    /// Disconnects a connection of this node: a `disconnected` notice, then
    /// a close frame with the reason. False if there is no such connection.
    pub(crate) fn kick_local(&self, conn: &str, reason: &str) -> bool {
        let st = lock(&self.state);
        let Some(c) = st.conns.get(conn) else {
            return false;
        };
        c.outbox
            .close(server::disconnected(reason), CLOSE_NORMAL, reason);
        true
    }

    /// Disconnects a connection wherever it is. `Ok(false)` if its node
    /// does not know it.
    pub(crate) async fn kick(&self, conn: &str) -> Result<bool, String> {
        const REASON: &str = "disconnected by the server's API";
        let Some((node, _)) = conn.rsplit_once('.') else {
            return Ok(false);
        };
        if node == self.me {
            return Ok(self.kick_local(conn, REASON));
        }
        let Ok(peer) = tcpnet::NodeId::parse(node) else {
            return Ok(false);
        };
        match self
            .service
            .request(
                &peer,
                KICK_PROCEDURE,
                conn.to_string(),
                std::time::Duration::from_secs(5),
            )
            .await
        {
            Ok(answer) => Ok(answer.as_ref() == b"1"),
            Err(tcpnet::Error::NotLinked { .. }) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// This node's connections.
    pub(crate) fn local_connections(&self) -> Vec<ConnSummary> {
        let st = lock(&self.state);
        let mut v: Vec<ConnSummary> = st
            .conns
            .values()
            .map(|c| {
                let mut channels: Vec<String> = c.channels.keys().cloned().collect();
                channels.sort();
                ConnSummary {
                    conn: c.client.conn.clone(),
                    key: c.client.key.clone(),
                    node: self.me.clone(),
                    channels,
                }
            })
            .collect();
        v.sort_by(|a, b| a.conn.cmp(&b.conn));
        v
    }

    /// Every gateway node's connections; a node that does not answer is
    /// named in the second list.
    pub(crate) async fn all_connections(&self) -> (Vec<ConnSummary>, Vec<String>) {
        let mut all = self.local_connections();
        let mut missing = Vec::new();
        for peer in crate::directory::peers(&self.service) {
            let answer = self
                .service
                .request(
                    &peer,
                    CONNECTIONS_PROCEDURE,
                    "",
                    std::time::Duration::from_secs(5),
                )
                .await;
            match answer
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<ConnSummary>>(&b).ok())
            {
                Some(list) => all.extend(list),
                None => missing.push(peer.to_string()),
            }
        }
        (all, missing)
    }
}
