//! The client protocol: JSON text frames, specified in `PROTOCOL.md`.
//! Parsing and building frames only; no I/O.

mod client;
mod code;
mod names;
pub mod server;

pub use client::{parse, ClientMessage, Request};
pub use code::{Code, Problem};
pub use names::{check_key, check_name, MAX_KEY_LEN, MAX_NAME_LEN};
pub use server::{Member, Origin};
