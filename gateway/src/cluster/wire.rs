//! What gateway nodes (and backends) say to each other over tcpnet: the
//! names of the tcpnet topics, events and procedures the gateway uses, and
//! the JSON bodies carried under them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::Origin;

/// tcpnet topic of a channel: a node subscribes to it while it has a
/// subscriber, so a publish reaches only nodes with subscribers.
pub fn channel_topic(channel: &str) -> String {
    format!("gw.ch:{channel}")
}

/// tcpnet topic a backend subscribes to for a client event: transmits go
/// only to the nodes that receive them.
pub fn event_topic(event: &str) -> String {
    format!("gw.ev:{event}")
}

/// tcpnet procedure (and topic, to be found by) that a backend serves for a
/// client procedure.
pub fn procedure_name(procedure: &str) -> String {
    format!("gw.rpc:{procedure}")
}

/// tcpnet event carrying [`Sync`] messages between gateway nodes.
pub const SYNC_EVENT: &str = "gw.sync";
/// tcpnet event carrying a [`KeyMessage`] to a node that holds the key.
pub const KEY_EVENT: &str = "gw.key";
/// tcpnet event carrying a [`Control`] message to every gateway node.
pub const CONTROL_EVENT: &str = "gw.ctl";
/// tcpnet procedure: disconnect the connection named in the request.
pub const KICK_PROCEDURE: &str = "gw.kick";
/// tcpnet procedure: list this node's connections.
pub const CONNECTIONS_PROCEDURE: &str = "gw.conns";
/// The named error a gateway answers [`KICK_PROCEDURE`] and
/// [`CONNECTIONS_PROCEDURE`] with when the caller does not advertise a
/// gateway URL ([`URL_META`](crate::URL_META)): those, and [`CONTROL_EVENT`],
/// are the HTTP API's cross-node actions, so only gateways ask them.
pub const NOT_A_GATEWAY: &str = "not-a-gateway";

/// A channel message as published on the channel's topic (the node is the
/// tcpnet sender).
#[derive(Debug, Serialize, Deserialize)]
pub struct ChannelMessage {
    /// The sending connection; none for the HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// Its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The client's data, as sent.
    pub data: Box<RawValue>,
}

/// A message to every connection of `key` on the receiving node.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyMessage {
    /// The key.
    pub key: String,
    /// Who sent it.
    pub from: Origin,
    /// The data, as sent.
    pub data: Box<RawValue>,
}

/// The node a connection id names: a connection id is the id of the node
/// holding it, a dot, a number.
pub fn conn_node(conn: &str) -> Option<&str> {
    conn.rsplit_once('.').map(|(node, _)| node)
}

/// A message claiming an origin its tcpnet sender cannot speak for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sent by {sender} but claims node {node:?} and connection {conn:?}")]
pub struct ForgedOrigin {
    /// The tcpnet sender: proven by the link's handshake, or by the
    /// signature of a flooded message.
    pub sender: String,
    /// The node the message claims.
    pub node: String,
    /// The connection the message claims, if any.
    pub conn: Option<String>,
}

/// Whether a message sent by `sender` may claim to come from `node` and,
/// if any, from `conn`: a node speaks only for itself and its own
/// connections, so `node` must be the sender and `conn` one of its
/// connection ids.
pub fn check_origin(sender: &str, node: &str, conn: Option<&str>) -> Result<(), ForgedOrigin> {
    let own_conn = conn.is_none_or(|c| conn_node(c) == Some(sender));
    if node == sender && own_conn {
        Ok(())
    } else {
        Err(ForgedOrigin {
            sender: sender.to_string(),
            node: node.to_string(),
            conn: conn.map(str::to_string),
        })
    }
}

impl ChannelMessage {
    /// [`check_origin`] of the message's connection, if any: a channel
    /// message names no node, its node is its tcpnet sender.
    pub fn check_sender(&self, sender: &str) -> Result<(), ForgedOrigin> {
        check_origin(sender, sender, self.conn.as_deref())
    }
}

impl KeyMessage {
    /// [`check_origin`] of the message's `from`.
    pub fn check_sender(&self, sender: &str) -> Result<(), ForgedOrigin> {
        check_origin(sender, &self.from.node, self.from.conn.as_deref())
    }
}

impl FromClient {
    /// [`check_origin`] of the client's node and connection.
    pub fn check_sender(&self, sender: &str) -> Result<(), ForgedOrigin> {
        check_origin(sender, &self.node, Some(&self.conn))
    }
}

/// Instructions for every gateway node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Control {
    /// Unsubscribe every connection from the channel, with a
    /// `channel-closed` notice.
    CloseChannel {
        /// The channel.
        channel: String,
    },
}

/// A client event or call as a backend receives it.
#[derive(Debug, Serialize, Deserialize)]
pub struct FromClient {
    /// The client connection.
    pub conn: String,
    /// Its key.
    pub key: String,
    /// The gateway node holding it.
    pub node: String,
    /// The event or procedure name.
    pub name: String,
    /// The client's data, as sent.
    pub data: Box<RawValue>,
}

/// One change to a node's share of the cluster state. Each is an
/// assignment, so applying one twice, or replaying changes a snapshot
/// already holds, ends in the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// The node holds a connection with this key.
    KeyOn {
        /// The key.
        key: String,
    },
    /// The node holds no connection with this key.
    KeyOff {
        /// The key.
        key: String,
    },
    /// A connection of the node is in a channel.
    Join {
        /// The channel.
        channel: String,
        /// The connection.
        conn: String,
        /// Its key.
        key: String,
    },
    /// A connection of the node is not in a channel.
    Leave {
        /// The channel.
        channel: String,
        /// The connection.
        conn: String,
    },
}

/// A node's whole share of the cluster state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Keys with a connection on the node.
    pub keys: Vec<String>,
    /// Channel -> (connection, key) of the node's members.
    pub presence: BTreeMap<String, Vec<(String, String)>>,
}

/// What gateway nodes tell each other under [`SYNC_EVENT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "sync", rename_all = "kebab-case")]
pub enum Sync {
    /// The sender's whole state: replaces what the receiver had for it.
    Snapshot {
        /// The state.
        state: Snapshot,
    },
    /// Changes since, in order.
    Delta {
        /// The changes.
        ops: Vec<Op>,
    },
    /// The receiver should send its snapshot (the sender missed messages).
    Resync,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_speaks_only_for_itself_and_its_connections() {
        assert_eq!(conn_node("abc.12"), Some("abc"));
        assert_eq!(conn_node("abc"), None);
        assert!(check_origin("a", "a", None).is_ok());
        assert!(check_origin("a", "a", Some("a.1")).is_ok());
        assert!(check_origin("a", "b", None).is_err(), "another node");
        assert!(
            check_origin("a", "b", Some("b.1")).is_err(),
            "another node's client"
        );
        assert!(
            check_origin("a", "a", Some("b.1")).is_err(),
            "another node's connection"
        );
        assert!(
            check_origin("a", "a", Some("a")).is_err(),
            "not a connection id"
        );
    }
}
