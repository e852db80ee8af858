//! # tcpnet-gateway: a WebSocket cluster server on a tcpnet mesh
//!
//! Browsers and apps connect over WebSocket to any gateway node; the nodes
//! find each other with tcpnet (mDNS, one TCP link per pair) and need no
//! broker. Channels with presence, keys with online/offline status,
//! procedures and events served by the application or by backends, and an
//! HTTP API. The client protocol is in `PROTOCOL.md`; running, the API and
//! the limits are in `README.md`.
//!
//! ```no_run
//! use tcpnet_gateway::Gateway;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let service = tcpnet::tcpnet("my-cluster")?;
//! // Built before `listen`: the node's first hello carries the gateway's URL.
//! let gateway = Gateway::builder(service.clone(), "http://10.0.0.5:8080").build()?;
//! service.listen(0, "0.0.0.0").await?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! axum::serve(listener, gateway.router()).await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | `protocol` | the client protocol, pure: parsing client frames, building server frames, error codes, name rules |
//! | `cluster::wire` | what gateway nodes and backends say to each other over tcpnet |
//! | `cluster::view` | pure: which node holds which keys and channel members; the changes each update causes |
//! | `cluster::sync` | the task keeping every node's view in sync: deltas, snapshots, nodes that leave |
//! | `cluster::inbox` | the task serving other nodes: messages to keys, channel closes, kicks, listings |
//! | `directory` | which nodes run a gateway, at which URL (from tcpnet's member metadata) |
//! | `node` | the gateway on one node: its state and every operation (channels, keys, calls) |
//! | `session` | one WebSocket connection: its reader, its writer, its bounded outbox |
//! | `http` | the HTTP API and the WebSocket endpoint |
//! | `hooks` | what the application sees and decides: clients, hooks, streams, calls |
//! | `gateway` | the embedding API: [`Gateway`], its builder |
//! | `backend` | [`Backend`]: procedures and events served by plain tcpnet nodes |
//! | `limits` | [`Limits`] and the per-connection rate limiter |
//! | `web` | the JavaScript client and the demo page, embedded, served at `/` |
//!
//! Imports point down: `protocol` and `cluster::wire`/`view` know nothing
//! of the others; `node` uses them; `session` and `http` use `node`;
//! `gateway` puts it together.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

// The README's Rust examples compile as doctests, so it cannot drift from
// the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod backend;
pub mod cluster;
mod directory;
mod gateway;
mod hooks;
mod http;
mod limits;
mod node;
pub mod protocol;
mod session;
mod web;

pub use backend::{Backend, FORGED_ORIGIN};
pub use directory::{NodeInfo, URL_META};
pub use gateway::{Gateway, GatewayBuilder};
pub use hooks::{
    default_key, Access, Action, AnswerError, AuthorizeFn, Call, Calls, Client, ClientEvent,
    ClientEvents, Disconnection, Events, KeyFn, MessageHook,
};
pub use limits::Limits;
pub use protocol::{Code, Problem};
