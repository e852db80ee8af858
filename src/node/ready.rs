//! Waiting until discovery has settled ([`Service::ready`](crate::Service::ready)),
//! and what it found ([`Ready`]).

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::node::mesh::{Settle, FOLLOWER_GRACE};
use crate::node::running::{Command, Node};

/// How long after `listen` a node waits before it looks at where discovery
/// stands. Answers to its first mDNS query come within 120 ms or so
/// (responders delay answers of shared records by up to that, RFC 6762,
/// section 6), but in our runs they often came only with the peers' next
/// announcement, a second later; what does not wait is a peer that saw
/// this node's announcement, which it does at once. Such a peer dials at
/// once if it decides the pair, and otherwise after waiting for this
/// node's dial, at most 1.5 times [`FOLLOWER_GRACE`] (750 ms). The window
/// covers that wait and 250 ms for the handshake that follows.
pub(crate) const DISCOVERY_WINDOW: Duration =
    Duration::from_millis(FOLLOWER_GRACE.as_millis() as u64 * 3 / 2 + 250);

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
