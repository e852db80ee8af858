//! The directory of gateway nodes: which members of the cluster run a
//! gateway, and the URL of each one's HTTP server.
//!
//! Each gateway node sets its URL in its tcpnet metadata under
//! [`URL_META`]; tcpnet carries metadata in the hello, the mDNS record and
//! member updates, so every node's member list already says which nodes
//! are gateways. Plain tcpnet nodes (backends) do not set it and are not
//! listed. A node that left is not listed; one whose link went silent is
//! listed as `suspect` until the heartbeat timeout decides.

use std::collections::BTreeMap;

use serde::Serialize;
use tcpnet::{Member, MemberState, NodeId, Service};

/// The tcpnet metadata key under which a gateway node advertises its HTTP
/// URL (the WebSocket endpoint is `/ws` under it).
pub const URL_META: &str = "gw.url";

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
    /// How the answering node sees it: `local` (itself), `linked`,
    /// `suspect` (its link silent for longer than a late heartbeat, see
    /// [`tcpnet::MemberState::Suspect`]) or `relayed` (reached only
    /// through another node).
    pub state: &'static str,
    /// How long its link has been up, in milliseconds (none for this node
    /// and for a relayed one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linked_ms: Option<u64>,
    /// Its whole tcpnet metadata, [`URL_META`] included.
    pub meta: BTreeMap<String, String>,
}

/// Advertises `url` as this node's gateway URL.
pub(crate) fn announce(service: &Service, url: &str) -> tcpnet::Result<()> {
    service.set_meta(URL_META, url)
}

/// Every gateway node this one knows, itself first.
pub(crate) fn nodes(service: &Service) -> Vec<NodeInfo> {
    service.members().iter().filter_map(info).collect()
}

/// The other gateway nodes.
pub(crate) fn peers(service: &Service) -> Vec<NodeId> {
    service
        .members()
        .into_iter()
        .filter(|m| !m.is_local() && info(m).is_some())
        .map(|m| m.id)
        .collect()
}

/// Whether `id` is a gateway node this one knows (a member advertising a
/// gateway URL that has not left).
pub(crate) fn is_gateway(service: &Service, id: &NodeId) -> bool {
    service.member(id).as_ref().and_then(info).is_some()
}

fn info(m: &Member) -> Option<NodeInfo> {
    let url = m.meta.get(URL_META)?;
    let state = match m.state {
        MemberState::Local => "local",
        MemberState::Linked => "linked",
        MemberState::Suspect => "suspect",
        MemberState::Relayed => "relayed",
        // Left, and any state a later tcpnet adds: not a gateway to use.
        _ => return None,
    };
    Some(NodeInfo {
        node: m.id.to_string(),
        url: url.to_string(),
        this: m.is_local(),
        state,
        linked_ms: m.link.as_ref().map(|l| l.age.as_millis() as u64),
        meta: m
            .meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}
