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
//! One concept per module:
//!
//! | module | what it holds |
//! |---|---|
//! | `settings` | [`Settings`]: cluster name, id and options |
//! | `id` | [`NodeId`]: fixed-length hex ids, whose order decides links |
//! | `discovery` | mDNS with `mdns-sd`: announce, browse, parse records |
//! | `frame` | the wire format: length prefix, kind byte, payload |
//! | `hello` | the first frame of a link, and its checks |
//! | `mesh` | the pure state machine of peers, links and the one-link rule |
//! | `link` | one TCP link: handshake, then a reader and a writer, heartbeats |
//! | `secure` | the cluster secret: Noise handshake, sealed records |
//! | `gate` | slots for accepted connections still in their handshake |
//! | `queue` | a link's two bounded queues (items and bytes), cheap per item |
//! | `outbox` | the send queue's store: frames encoded by their senders, small ones written at once on an idle link |
//! | `writer` | a link's write side: vectored writes, large payloads not copied |
//! | `reader` | a link's read side: large payloads read into reused buffers of their own |
//! | `connection` | the public handles of a link: [`Connection`], [`Sender`] |
//! | `events` | event streams ([`Events`]) and the list of open links |
//! | `message` | the messaging envelope (`MSG` frames) |
//! | `router` | pure messaging state: interest, members, duplicates, relaying |
//! | `messaging` | the messaging layer: [`Messages`], [`Request`]s, relaying |
//! | `actor` | the running node: the actor that owns the mesh, accept and dial tasks |
//! | `service` | the [`Service`] handle: `listen`, `close`, links and events |
//!
//! The mesh is a pure state machine, tested without sockets; everything that
//! does I/O is a thin task around it. One task, the *actor*, owns the mesh and
//! applies the one-link rule in order; other tasks (accept loops, the mDNS
//! browser, dials, links) send it commands. See `mesh` for the rule itself:
//! the smaller id of a pair decides which link the pair keeps, and says so on
//! the link before any user data, so both ends keep the same single link.
//!
//! ## Policies
//!
//! - **Backpressure**: each link has a send queue and a receive queue of
//!   [`Settings::queue_len`] frames and [`Settings::queue_bytes`] bytes.
//!   `send` waits while the send queue is full; a full receive queue stops
//!   reading from the socket, so TCP slows the sender. A graceful close (from either end) delivers everything
//!   `send` accepted; a link that fails instead reports it (see
//!   [`CloseReason::is_failure`]).
//! - **Events**: each subscriber has its own queue; the mesh never waits for
//!   a subscriber. Error queues are bounded and count what they drop (see
//!   [`Events`]).
//! - **Errors** on [`Service::on_error`] are non-fatal: the service goes on.
//! - **Failures**: heartbeats on idle links, a timeout on silence, redial
//!   with jittered backoff while a peer is known (see `mesh`), handshakes
//!   bounded in time, size and number (see `gate`).
//! - **Secret**: optional; with it no link counts before both ends proved
//!   they hold it, and every byte after is sealed (see `secure`).

#![deny(missing_docs)]

// The README's Rust examples compile as doctests, so the README cannot drift
// from the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod actor;
mod connection;
mod discovery;
mod error;
mod events;
mod frame;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod gate;
mod hello;
mod id;
mod link;
mod mesh;
mod message;
mod messaging;
mod outbox;
mod queue;
mod reader;
mod router;
mod secure;
mod service;
mod settings;
mod writer;

pub use connection::{CloseReason, Connection, Sender};
pub use discovery::SERVICE_TYPE;
pub use error::{Error, Result};
pub use events::{Events, MAX_QUEUED_ERRORS};
pub use hello::PROTOCOL_VERSION;
pub use id::NodeId;
pub use mesh::MAX_PEERS;
pub use message::MAX_NAME_LEN;
pub use messaging::{Message, Messages, RelayFilter, Request, Requests};
pub use service::{tcpnet, Address, Service};
pub use settings::{
    Settings, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_MAX_FRAME_LEN, DEFAULT_QUEUE_LEN,
};
