//! The node: finding peers, the one-link rule, and the [`Service`] handle.
//!
//! The pure [`mesh`] decides which peers to dial and which link each pair
//! keeps; the [`actor`] is the one task that owns it and carries out what it
//! says; the [`tasks`] around it accept, browse mDNS ([`discovery`]) and dial,
//! and peers' lists of links give [`hints`] of where members listen;
//! [`events`] hands what happens to the user's streams; [`Service`] is the
//! user's handle on all of it, configured by [`Settings`].

pub(crate) mod actor;
pub(crate) mod address;
pub(crate) mod caps;
pub(crate) mod discovery;
pub(crate) mod events;
#[cfg(feature = "metrics")]
pub(crate) mod export;
pub(crate) mod gate;
pub(crate) mod hints;
pub(crate) mod members;
pub(crate) mod mesh;
pub(crate) mod ready;
pub(crate) mod running;
pub(crate) mod service;
pub(crate) mod settings;
pub(crate) mod tasks;

pub use ready::Ready;
pub use service::Service;
pub use settings::Settings;
