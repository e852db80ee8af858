//! # tcpnet: zero-config full-mesh TCP clusters over mDNS
//!
//! Start any number of processes on a LAN with the same cluster name; each
//! finds the others by mDNS and keeps exactly one TCP link to every other
//! node, with a live list of connections and streams of events.
//!
//! ```no_run
//! use futures::StreamExt;
//!
//! #[tokio::main]
//! async fn main() -> tcpnet::Result<()> {
//!     let service = tcpnet::tcpnet("my-cluster")?;
//!     let mut conns = service.on_connection();
//!     service.listen(0, "0.0.0.0").await?;
//!     while let Some(mut conn) = conns.next().await {
//!         conn.send(format!("hello from {}\n", service.id())).await?;
//!         tokio::spawn(async move {
//!             while let Some(msg) = conn.next().await {
//!                 println!("{}: {:?}", conn.peer_id(), msg);
//!             }
//!         });
//!     }
//!     Ok(())
//! }
//! ```
//!
//! ## Architecture
//!
//! tcpnet is four layers, each a folder that imports only from the ones
//! below it (a test, `tests/layers.rs`, keeps it so):
//!
//! - **wire**: the bytes on the wire. Frames (a length, a kind, a payload),
//!   the hello each end sends first, the Noise handshake that proves each
//!   end's key pair (and the cluster secret, if there is one), the decider's
//!   verdict, the messaging envelope, and, with a secret, the sealed
//!   records. Codecs and parsers only, bounded, unit-tested and fuzzed
//!   without sockets.
//! - **link**: one TCP link to one peer. Its task runs the handshake, then a
//!   reader and a writer side by side, heartbeats, and the close that flushes
//!   what `send` accepted. What the reader does with each frame is a pure
//!   state machine (`link::read`: frame in, effect out); the read side is
//!   shared (`link::intake`), so a handle with nothing queued reads the
//!   socket itself. The user's handles
//!   on a link are [`Connection`], [`Sender`] and [`Batch`]. A link reports to its node
//!   through typed events (handshaken, verdict, closed), the way a protocol
//!   connection talks to its endpoint, and hands messaging envelopes up
//!   through one narrow interface.
//! - **messaging**: direct messages, broadcasts, named events, topics and
//!   request/reply on top of the links. Who subscribes to what, which
//!   messages were seen and where one goes is the pure `router`; the rest
//!   moves envelopes between links and the user's streams ([`Messages`],
//!   [`Requests`]).
//! - **node**: the cluster. The pure `mesh` knows the peers, the links and
//!   the one-link rule; one task, the *actor*, owns it and carries out what
//!   it returns, while accept loops, the mDNS browser and dials send it
//!   commands. [`Service`] is the user's handle on the node.
//!
//! Below them sit the few things every layer uses: [`Error`] and
//! [`CloseReason`], [`NodeId`] and the [`Identity`] it derives from, the
//! [`limits`], the [`Stats`] a node counts, and a lock helper.
//!
//! The state machines (`mesh`, `router`, the link's read path) take facts
//! and return what to do, without I/O or clocks, so the races they settle
//! (simultaneous dials, a dial racing an accept, a restarted peer) are
//! replayed deterministically in their unit tests. See `node::mesh` for the
//! one-link rule itself: the smaller id of a pair decides which link the pair
//! keeps, and says so on the link before any user data, so both ends keep
//! the same single link.
//!
//! ## Layout
//!
//! ```text
//! src/
//!   lib.rs      this overview and the public API
//!   error.rs    Error and CloseReason
//!   id.rs       NodeId
//!   identity.rs Identity: the node's key pair, from which its id derives
//!   limits.rs   public bounds and defaults
//!   sync.rs     the lock helper
//!   clock.rs    the wall clock in nanoseconds
//!   wire/       frame, hello, noise, verdict, envelope, decoder, secure
//!   link/       handshake, run, read, intake, queue, outbox, batch, writer, open,
//!               connection
//!   messaging/  router/ (seen, interest, neighbors), streams, rpc, relay,
//!               early, typed (the `typed` feature)
//!   node/       mesh, hints, actor, running, tasks, discovery, gate, caps,
//!               events, members/ (view, member), ready, address,
//!               settings, service
//! ```
//!
//! ## Policies
//!
//! - **Backpressure**: each link has a send queue and a receive queue of
//!   [`Settings::queue_len`] frames and [`Settings::queue_bytes`] bytes,
//!   and all links of a node together hold at most
//!   [`Settings::max_queued_bytes`] (past it, a queue takes a frame only
//!   while empty). `send` waits while the send queue is full; a full
//!   receive queue stops reading from the socket, so TCP slows the sender,
//!   and one that stays full with no message read for
//!   [`Settings::unread_timeout`] closes its link ([`CloseReason::Unread`]).
//!   Each of the application's streams of messages or requests holds at
//!   most as many items and bytes unread, on top of that cap; past them it
//!   drops (counted) or answers `Busy`, and never waits. A graceful close (from either end) delivers everything
//!   `send` accepted; a link that fails instead reports it (see
//!   [`CloseReason::is_failure`]).
//! - **Events**: each subscriber has its own queue; the mesh never waits for
//!   a subscriber. Error queues are bounded and count what they drop;
//!   member queues are bounded and end a stream that falls behind, for the
//!   subscriber to watch again (see [`Events`]).
//! - **Errors** on [`Service::on_error`] are non-fatal: the service goes on.
//!   Each has a kind ([`Error::kind`]) that tells churn from faults and
//!   foreign input.
//! - **State, then changes**: [`Service::on_link`] starts with the open
//!   links and [`Service::on_member`] with the members, then each carries
//!   the changes, with no gap or repeat between the two; a member cut off
//!   and linked again as the same run within the leave grace is one
//!   [`Relinked`](MemberChange::Relinked) event (later, after its `Left`,
//!   [`Rejoined`](MemberChange::Rejoined)). [`Service::ready`] waits until
//!   discovery has settled. Streams made before `listen` miss nothing;
//!   while the node is young ([`limits::HOLD_EARLY`] after `listen`), what
//!   comes for a stream not made yet (a call, an event, a message) is held
//!   for the first one made, so a procedure made just after `listen` does
//!   not make callers see `NoProcedure`; messages that no stream got are
//!   counted ([`Stats::early_dropped`]).
//! - **Failures**: heartbeats on idle links, a timeout on silence, redial
//!   with jittered backoff while a peer is known (see `node::mesh`),
//!   handshakes bounded in time, size and number (see `node::gate`), links
//!   others open capped in all and per network (see `node::caps`).
//! - **Identity**: a node's id is the hash of its key pair ([`Identity`]);
//!   no link counts before both ends proved their keys (see `wire::noise`).
//! - **Secret**: optional; with it no link counts before both ends proved
//!   they hold it, and every byte after is sealed (see `wire::secure`).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

// The README's Rust examples compile as doctests, so the README cannot drift
// from the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
mod clock;
mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod id;
mod identity;
pub mod limits;
mod link;
mod messaging;
mod meta;
mod node;
pub(crate) mod stats;
mod sync;
mod wire;

pub use error::{CallError, CloseReason, Error, ErrorKind, MetaError, Result};
pub use id::NodeId;
pub use identity::{Identity, PUBLIC_KEY_LEN, SIGNATURE_LEN};
pub use link::batch::Batch;
pub use link::connection::{Connection, Sender};
pub use link::open::LinkEvent;
pub use messaging::rpc::{Request, Requests};
pub use messaging::streams::{Message, Messages};
#[cfg(feature = "typed")]
pub use messaging::typed;
pub use meta::Meta;
pub use node::address::Address;
pub use node::discovery::{Announcement, SERVICE_TYPE};
pub use node::events::Events;
pub use node::members::member::{
    LeaveReason, LinkInfo, Member, MemberChange, MemberEvent, MemberState,
};
pub use node::service::tcpnet;
pub use node::{Ready, Service, Settings};
pub use stats::{HandshakeFailures, LinkStats, RefusedMessages, Stats};
pub use wire::hello::PROTOCOL_VERSION;
