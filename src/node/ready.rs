//! Waiting until discovery has settled ([`Service::ready`](crate::Service::ready)),
//! and what it found ([`Ready`]).

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::node::mesh::Settle;
use crate::node::running::{Command, Node};

/// How long after `listen` the answers to the node's first mDNS query are
/// waited for. Responders delay answers of shared records by 20 to 120 ms
/// (RFC 6762, section 6); on a LAN they arrive well within this.
pub(crate) const DISCOVERY_WINDOW: Duration = Duration::from_millis(250);

/// What discovery had found when it settled, from
/// [`Service::ready`](crate::Service::ready).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ready {
    /// The peers linked, sorted by id.
    pub linked: Vec<NodeId>,
    /// The linked peers that started before this node, sorted by id: where
    /// a node that joins late catches up from. Of nodes that start
    /// together, all but the one that started first see an older peer
    /// here, so "no older peer" singles out one founder.
    pub older: Vec<NodeId>,
    /// Peers found but not linked: their dial failed or their link closed
    /// (a node that died and is still advertised, say). tcpnet goes on
    /// dialing them.
    pub unreached: usize,
    /// Peers still being reached when the wait ran out: a dial or a
    /// handshake under way (0 unless `timed_out`).
    pub pending: usize,
    /// The wait ran out before every peer found was linked or had failed.
    pub timed_out: bool,
}

impl Ready {
    fn new(settle: Settle, me: u64, me_id: &NodeId, timed_out: bool) -> Ready {
        // Start times tie only by chance; the id breaks the tie.
        let older = settle
            .linked
            .iter()
            .filter(|(id, started)| (*started, id) < (me, me_id))
            .map(|(id, _)| id.clone())
            .collect();
        Ready {
            linked: settle.linked.into_iter().map(|(id, _)| id).collect(),
            older,
            unreached: settle.unreached,
            pending: settle.pending,
            timed_out,
        }
    }
}

/// Waits until `node` has settled: `window` after `listened` (for the
/// answers to the first query), then until every peer found so far is
/// linked or failed, at most until `bound`.
pub(crate) async fn settled(
    node: &Node,
    incarnation: u64,
    listened: Instant,
    window: Duration,
    bound: Duration,
) -> Result<Ready> {
    tokio::time::sleep_until(listened + window).await;
    let ask = |wait| {
        let (reply, answer) = oneshot::channel();
        node.send(Command::Settled { reply, wait });
        answer
    };
    let me = node.id();
    match tokio::time::timeout_at(listened + bound, ask(true)).await {
        Ok(Ok(settle)) => Ok(Ready::new(settle, incarnation, me, false)),
        Ok(Err(_)) => Err(Error::Closed),
        Err(_) => match ask(false).await {
            Ok(settle) => Ok(Ready::new(settle, incarnation, me, true)),
            Err(_) => Err(Error::Closed),
        },
    }
}
