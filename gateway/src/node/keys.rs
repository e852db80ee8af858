//! Keys: a message to a key goes to the nodes that hold it (from the
//! cluster view) and to every connection with it there; watchers get the
//! key's status now and on every change.

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;

use super::state::State;
use super::Node;
use crate::cluster::wire::{KeyMessage, KEY_EVENT};
use crate::hooks::{lock, Client};
use crate::protocol::{server, Code, Origin, Problem};

/// Stops one connection's watch of one key.
pub(super) fn unwatch_one(st: &mut State, key: &str, conn: &str) {
    if let Some(w) = st.watchers.get_mut(key) {
        w.remove(conn);
        if w.is_empty() {
            st.watchers.remove(key);
        }
    }
}

impl Node {
    /// Starts watching keys: their status now, then on every change.
    pub(crate) fn watch(&self, client: &Client, keys: &[String]) -> Result<(), Problem> {
        let mut st = lock(&self.state);
        let st = &mut *st;
        let Some(conn) = st.conns.get_mut(&client.conn) else {
            return Err(Problem::new(Code::Unavailable, "the connection is closing"));
        };
        let new = keys.iter().filter(|k| !conn.watching.contains(*k)).count();
        if conn.watching.len() + new > self.limits.max_watches {
            return Err(Problem::new(
                Code::TooManyWatches,
                format!(
                    "watching {} keys; {new} more would pass the most allowed, {}",
                    conn.watching.len(),
                    self.limits.max_watches
                ),
            ));
        }
        let outbox = conn.outbox.clone();
        for key in keys {
            conn.watching.insert(key.clone());
            st.watchers
                .entry(key.clone())
                .or_default()
                .insert(client.conn.clone(), outbox.clone());
            outbox.text(server::status(key, st.view.online(key)));
        }
        Ok(())
    }

    /// Stops watching keys (keys not watched are ignored).
    pub(crate) fn unwatch(&self, client: &Client, keys: &[String]) {
        let mut st = lock(&self.state);
        for key in keys {
            if let Some(c) = st.conns.get_mut(&client.conn) {
                c.watching.remove(key);
            }
            unwatch_one(&mut st, key, &client.conn);
        }
    }

    /// Sends to every connection of a key, cluster-wide. Returns how many
    /// nodes hold it; a key with none is `key-offline`.
    pub(crate) async fn send_to_key(
        &self,
        key: &str,
        from: Origin,
        data: Box<RawValue>,
    ) -> Result<usize, Problem> {
        let holders = lock(&self.state).view.holders(key);
        if holders.is_empty() {
            return Err(Problem::new(
                Code::KeyOffline,
                format!("no connection has the key {key:?}"),
            ));
        }
        let mut body = None;
        let mut n = 0;
        for node in &holders {
            if *node == self.me {
                self.deliver_to_key(key, &from, &data);
                n += 1;
                continue;
            }
            let Ok(peer) = tcpnet::NodeId::parse(node) else {
                continue;
            };
            let body = body.get_or_insert_with(|| {
                serde_json::to_vec(&KeyMessage {
                    key: key.to_string(),
                    from: from.clone(),
                    data: data.clone(),
                })
                .expect("serializes")
            });
            match self.service.emit_to(&peer, KEY_EVENT, body.clone()).await {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!(%key, %node, "a message to a key missed a node: {e}"),
            }
        }
        if n == 0 {
            return Err(Problem::new(
                Code::Unavailable,
                format!("no node holding {key:?} could be reached"),
            ));
        }
        Ok(n)
    }

    /// Hands a message to this node's connections of a key.
    pub(crate) fn deliver_to_key(&self, key: &str, from: &Origin, data: &RawValue) {
        let st = lock(&self.state);
        if let Some(conns) = st.keys.get(key) {
            let frame = Utf8Bytes::from(server::direct(key, from, data));
            for o in conns.values() {
                o.push(frame.clone());
            }
        }
    }
}
