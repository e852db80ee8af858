//! The bytes on the wire, with no sockets of their own to drive: frames,
//! the hello, the verdict, lists of links, the heartbeat's stamps, the messaging envelope, metadata, and the cluster secret's
//! handshake and sealed records.
//!
//! Everything here is a codec or a parser, bounded in what it accepts and
//! unit-tested (and fuzzed, see `fuzz/`) without a network. The layers above
//! decide what to do with what it decodes.

pub(crate) mod decoder;
pub(crate) mod envelope;
pub(crate) mod frame;
pub(crate) mod hello;
pub(crate) mod links;
pub(crate) mod meta;
pub(crate) mod noise;
pub(crate) mod record;
pub(crate) mod secure;
pub(crate) mod timing;
pub(crate) mod verdict;
