//! What other nodes ask of this one: messages to keys held here, channel
//! closes, disconnecting a connection, listing connections.

use std::sync::Arc;

use futures::StreamExt;

use super::wire::{
    Control, KeyMessage, CONNECTIONS_PROCEDURE, CONTROL_EVENT, KEY_EVENT, KICK_PROCEDURE,
};
use crate::node::Node;

pub(crate) fn start(node: &Arc<Node>) -> tcpnet::Result<()> {
    let service = &node.service;
    let mut keys = service.receiver(KEY_EVENT)?;
    let mut control = service.receiver(CONTROL_EVENT)?;
    let mut kicks = service.procedure(KICK_PROCEDURE)?;
    let mut lists = service.procedure(CONNECTIONS_PROCEDURE)?;
    let n = node.clone();
    tokio::spawn(async move {
        while let Some(msg) = keys.next().await {
            match serde_json::from_slice::<KeyMessage>(msg.data()) {
                // The sender is the node the link's handshake proved: a
                // message claiming another node or another node's client
                // is refused, so no member can speak for a client.
                Ok(m) => match m.check_sender(msg.from().as_str()) {
                    Ok(()) => n.deliver_to_key(&m.key, &m.from, &m.data),
                    Err(e) => tracing::warn!("a key message refused: {e}"),
                },
                Err(e) => tracing::warn!(from = %msg.from(), "a malformed key message: {e}"),
            }
        }
    });
    let n = node.clone();
    tokio::spawn(async move {
        while let Some(msg) = control.next().await {
            match serde_json::from_slice::<Control>(msg.data()) {
                Ok(Control::CloseChannel { channel }) => {
                    n.close_channel_local(&channel);
                }
                Err(e) => tracing::warn!(from = %msg.from(), "a malformed control message: {e}"),
            }
        }
    });
    let n = node.clone();
    tokio::spawn(async move {
        while let Some(req) = kicks.next().await {
            let conn = String::from_utf8_lossy(req.data()).into_owned();
            let found = n.kick_local(&conn, "disconnected by the server's API");
            let _ = req.end(if found { "1" } else { "0" }).await;
        }
    });
    let n = node.clone();
    tokio::spawn(async move {
        while let Some(req) = lists.next().await {
            let list = serde_json::to_vec(&n.local_connections()).expect("serializes");
            let _ = req.end(list).await;
        }
    });
    Ok(())
}
