//! What other nodes ask of this one: messages to keys held here, channel
//! closes, disconnecting a connection, listing connections.
//!
//! Closes, disconnections and lists are the HTTP API's actions across
//! nodes: they are taken only from gateways (members advertising a gateway
//! URL), as the view's state is. Any member can advertise one, so the
//! cluster secret is what keeps strangers from asking.

use std::sync::Arc;

use futures::StreamExt;
use tcpnet::{NodeId, Request, Service};

use super::wire::{
    Control, KeyMessage, CONNECTIONS_PROCEDURE, CONTROL_EVENT, KEY_EVENT, KICK_PROCEDURE,
    NOT_A_GATEWAY,
};
use crate::directory::{is_gateway, URL_META};
use crate::node::Node;

/// Why a node that is not a gateway is refused.
fn not_a_gateway(from: &NodeId) -> String {
    format!("{from} does not advertise a gateway URL ({URL_META})")
}

/// `req` if its caller is a gateway; any other caller is answered with
/// the named error [`NOT_A_GATEWAY`].
async fn from_gateway(service: &Service, req: Request) -> Option<Request> {
    if is_gateway(service, req.from()) {
        return Some(req);
    }
    let message = not_a_gateway(req.from());
    tracing::warn!(procedure = req.procedure(), "a request refused: {message}");
    let _ = req.error(NOT_A_GATEWAY, &message).await;
    None
}

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
            if !is_gateway(&n.service, msg.from()) {
                let why = not_a_gateway(msg.from());
                tracing::warn!("a control message refused: {why}");
                continue;
            }
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
            let Some(req) = from_gateway(&n.service, req).await else {
                continue;
            };
            let conn = String::from_utf8_lossy(req.data()).into_owned();
            let found = n.kick_local(&conn, "disconnected by the server's API");
            let _ = req.end(if found { "1" } else { "0" }).await;
        }
    });
    let n = node.clone();
    tokio::spawn(async move {
        while let Some(req) = lists.next().await {
            let Some(req) = from_gateway(&n.service, req).await else {
                continue;
            };
            let list = serde_json::to_vec(&n.local_connections()).expect("serializes");
            let _ = req.end(list).await;
        }
    });
    Ok(())
}
