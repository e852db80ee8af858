//! What comes for a stream before the stream exists: while the node is
//! young (the first [`HOLD_EARLY`](crate::limits::HOLD_EARLY) after
//! `listen`), a request for a procedure no stream serves, and an event or a
//! message no stream takes, is held, up to [`MAX_HELD`] items and
//! [`MAX_HELD_BYTES`] bytes, and handed to the first stream made for it.
//! So a handler or receiver made just after `listen` misses nothing, and a
//! caller is answered `NoProcedure` only once the node is no longer young.
//! A message or event past those bounds, or still held when the node grows
//! up, is dropped and counted
//! ([`Stats::early_dropped`](crate::Stats::early_dropped)).
//! Pure: the time comes with each call.

use std::time::Instant;

use crate::limits::{MAX_HELD, MAX_HELD_BYTES};
use crate::messaging::rpc::Request;
use crate::messaging::streams::Message;

/// The stream a held item waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Waits {
    /// A stream of direct messages and broadcasts.
    Inbox,
    /// A receiver of the event of this name.
    Event(String),
    /// A stream of calls to the procedure of this name.
    Procedure(String),
}

/// An item held.
#[derive(Debug)]
pub(crate) enum Held {
    Message(Message),
    Request(Request),
}

impl Held {
    fn weight(&self) -> usize {
        match self {
            Held::Message(m) => m.data().len() + m.name().len(),
            Held::Request(r) => r.data().len() + r.procedure().len(),
        }
    }
}

/// The items held for streams not made yet, until the node is no longer
/// young.
#[derive(Debug)]
pub(crate) struct Early {
    until: Instant,
    held: Vec<(Waits, Held)>,
    bytes: usize,
}

impl Early {
    /// Holds what comes before `until`.
    pub(crate) fn new(until: Instant) -> Early {
        Early {
            until,
            held: Vec::new(),
            bytes: 0,
        }
    }

    /// Holds `item` for the first stream of `waits`, if the node is still
    /// young at `now` and there is room; gives it back otherwise.
    #[allow(clippy::result_large_err)] // the item goes back to be refused
    pub(crate) fn hold(&mut self, waits: Waits, item: Held, now: Instant) -> Result<(), Held> {
        let weight = item.weight();
        if now >= self.until || self.held.len() >= MAX_HELD || self.bytes + weight > MAX_HELD_BYTES
        {
            return Err(item);
        }
        self.bytes += weight;
        self.held.push((waits, item));
        Ok(())
    }

    /// True if the node is still young at `now`: what comes is held, if
    /// there is room.
    pub(crate) fn young(&self, now: Instant) -> bool {
        now < self.until
    }

    /// Takes what waits for `waits`, in the order it came.
    pub(crate) fn take(&mut self, waits: &Waits) -> Vec<Held> {
        let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(w, _)| w == waits);
        self.held = kept;
        let taken: Vec<Held> = taken.into_iter().map(|(_, h)| h).collect();
        self.bytes -= taken.iter().map(Held::weight).sum::<usize>();
        taken
    }

    /// Everything still held: no stream came for it in time.
    pub(crate) fn into_held(self) -> Vec<(Waits, Held)> {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;
    use bytes::Bytes;
    use std::time::Duration;

    fn message(name: &str, len: usize) -> Held {
        Held::Message(Message {
            from: NodeId::parse("0a").unwrap(),
            name: name.to_string(),
            data: Bytes::from(vec![0; len]),
        })
    }

    fn name(h: &Held) -> &str {
        match h {
            Held::Message(m) => m.name(),
            Held::Request(r) => r.procedure(),
        }
    }

    #[test]
    fn held_items_go_to_the_first_stream_of_their_kind_in_order() {
        let t = Instant::now();
        let mut early = Early::new(t + Duration::from_secs(5));
        for n in ["a", "b", "a"] {
            early
                .hold(Waits::Event(n.into()), message(n, 1), t)
                .unwrap();
        }
        early.hold(Waits::Inbox, message("", 1), t).unwrap();
        let a = early.take(&Waits::Event("a".into()));
        assert_eq!(a.iter().map(name).collect::<Vec<_>>(), ["a", "a"]);
        assert!(early.take(&Waits::Event("a".into())).is_empty());
        assert!(early.take(&Waits::Procedure("a".into())).is_empty());
        assert_eq!(early.take(&Waits::Inbox).len(), 1);
        let left = early.into_held();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, Waits::Event("b".into()));
    }

    #[test]
    fn holding_is_bounded_and_ends_when_the_node_grows_up() {
        let t = Instant::now();
        let until = t + Duration::from_secs(5);
        let mut early = Early::new(until);
        assert!(early.hold(Waits::Inbox, message("", 1), until).is_err());
        for _ in 0..MAX_HELD {
            early.hold(Waits::Inbox, message("", 0), t).unwrap();
        }
        assert!(early.hold(Waits::Inbox, message("", 0), t).is_err());
        early.take(&Waits::Inbox);
        early
            .hold(Waits::Inbox, message("", MAX_HELD_BYTES), t)
            .unwrap();
        assert!(early.hold(Waits::Inbox, message("", 1), t).is_err());
        early.take(&Waits::Inbox);
        assert!(early.hold(Waits::Inbox, message("", 1), t).is_ok());
    }
}
