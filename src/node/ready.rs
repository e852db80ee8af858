//! Waiting until discovery has settled ([`Service::ready`](crate::Service::ready)),
//! and what it found ([`Ready`]).

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::link::patience::scheduled_sleep;
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
/// linked or failed, at most until `bound` after `listened`.
///
/// Both are counted in the node's scheduled time ([`scheduled_sleep`]), as
/// the handshakes of the dials it waits for are ([`patient_while`]): on a
/// starved node a dial may take twice the handshake timeout, and longer on
/// the clock, and a bound on the clock would run out before it. The ticks
/// are a quarter of the handshake's slices, so that a late tick loses no
/// more than a late slice does. Called after `listened`, what is left of
/// both on the clock is counted so.
///
/// [`patient_while`]: crate::link::patience::patient_while
pub(crate) async fn settled(
    node: &Node,
    incarnation: u64,
    listened: Instant,
    window: Duration,
    bound: Duration,
) -> Result<Ready> {
    let tick = node.links.config.handshake_timeout / 16;
    let since = listened.elapsed();
    scheduled_sleep(window.saturating_sub(since), tick).await;
    let rest = bound.saturating_sub(since.max(window));
    let ask = |wait| {
        let (reply, answer) = oneshot::channel();
        node.send(Command::Settled { reply, wait });
        answer
    };
    let me = node.id();
    tokio::select! {
        biased;
        settle = ask(true) => match settle {
            Ok(settle) => Ok(Ready::new(settle, incarnation, me, false)),
            Err(_) => Err(Error::Closed),
        },
        () = scheduled_sleep(rest, tick) => match ask(false).await {
            Ok(settle) => Ok(Ready::new(settle, incarnation, me, true)),
            Err(_) => Err(Error::Closed),
        },
    }
}
