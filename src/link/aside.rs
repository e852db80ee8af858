//! Frames a node sends on a link by itself, kept apart while the link's send
//! queue is full: the latest of each state, and a bounded list of answers.
//!
//! A node tells its peers things of its own accord: which topics a node has,
//! which nodes it is linked to, a call's answer it gives itself (no such
//! procedure, busy, unanswered). None of that may wait in a task of its own
//! for room on a link whose peer stopped reading (a task and a frame per
//! change, held for as long as the peer is stalled), nor be lost because the
//! queue was full at that moment. So when the send queue is full they wait
//! here, beside it, and go out with the next batch the link's task takes:
//!
//! - a *state* (a set of topics, a list of links) under its [`StateKey`]:
//!   a newer one replaces the one waiting, so a link holds at most one per
//!   key whatever the number of changes;
//! - an *answer*, in order, at most [`MAX_ANSWERS`] per link; beyond that
//!   the answer is dropped and the caller's timeout ends its call.
//!
//! The send queue's bounds hold for what users send; what waits here is
//! bounded by the node's own tables (one state per key) and by
//! [`MAX_ANSWERS`].

use std::collections::{HashMap, VecDeque};

use crate::id::NodeId;
use crate::wire::frame::Frame;

/// What a state is about: a kind (the envelope's operation) and the node it
/// describes.
pub(crate) type StateKey = (u8, NodeId);

/// Most answers kept apart on one link.
pub(crate) const MAX_ANSWERS: usize = 1024;

/// Frames waiting beside a full send queue.
#[derive(Default)]
pub(crate) struct Aside {
    /// The latest frame of each state, by key ...
    states: HashMap<StateKey, Frame>,
    /// ... and the keys in the order they were first set aside.
    order: Vec<StateKey>,
    answers: VecDeque<Frame>,
}

impl Aside {
    /// True if a state under `key` waits here.
    pub(crate) fn holds(&self, key: &StateKey) -> bool {
        self.states.contains_key(key)
    }

    /// Keeps `frame` as the latest state under `key`, replacing any older.
    pub(crate) fn put_state(&mut self, key: StateKey, frame: Frame) {
        if self.states.insert(key.clone(), frame).is_none() {
            self.order.push(key);
        }
    }

    /// Keeps an answer; false (and it is dropped) if [`MAX_ANSWERS`] wait.
    pub(crate) fn put_answer(&mut self, frame: Frame) -> bool {
        if self.answers.len() >= MAX_ANSWERS {
            return false;
        }
        self.answers.push_back(frame);
        true
    }

    /// Everything kept, in order: answers first, then states.
    pub(crate) fn take(&mut self) -> impl Iterator<Item = Frame> + '_ {
        let states = &mut self.states;
        self.answers.drain(..).chain(
            self.order
                .drain(..)
                .filter_map(move |key| states.remove(&key)),
        )
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.answers.is_empty() && self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(b: &'static [u8]) -> Frame {
        Frame::data(Bytes::from_static(b))
    }

    #[test]
    fn one_state_per_key_the_latest_and_answers_bounded() {
        let (a, b) = (NodeId::parse("0a").unwrap(), NodeId::parse("0b").unwrap());
        let mut aside = Aside::default();
        for i in 0..1000u32 {
            let f = Frame::data(Bytes::from(i.to_be_bytes().to_vec()));
            aside.put_state((1, a.clone()), f);
        }
        aside.put_state((1, b.clone()), frame(b"b"));
        aside.put_state((2, a.clone()), frame(b"other kind"));
        assert!(aside.holds(&(1, a.clone())));
        for _ in 0..MAX_ANSWERS {
            assert!(aside.put_answer(frame(b"answer")));
        }
        assert!(!aside.put_answer(frame(b"one too many")));
        let taken: Vec<Bytes> = aside.take().map(|f| f.payload).collect();
        assert_eq!(taken.len(), MAX_ANSWERS + 3);
        assert_eq!(
            &taken[MAX_ANSWERS..],
            [
                Bytes::from(999u32.to_be_bytes().to_vec()),
                Bytes::from_static(b"b"),
                Bytes::from_static(b"other kind")
            ]
        );
        assert!(aside.is_empty() && !aside.holds(&(1, a)));
    }
}
