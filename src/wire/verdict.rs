//! The one-link rule's words on the wire: which end of a pair decides, and
//! the verdict it sends (see [`crate::node::mesh`] for the rule itself).

use crate::id::NodeId;
use crate::wire::frame::{self, Frame};

/// The decider's word on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    Reject,
    /// The id is held by a newer live node: the link closes, and the node
    /// that gets this does not redial.
    Conflict,
}

impl Verdict {
    /// The verdict's control frame.
    pub(crate) fn frame(self) -> Frame {
        Frame::control(match self {
            Verdict::Accept => frame::ACCEPT,
            Verdict::Reject => frame::REJECT,
            Verdict::Conflict => frame::CONFLICT,
        })
    }

    /// The verdict a frame kind carries, if it carries one.
    pub(crate) fn of_kind(kind: u8) -> Option<Verdict> {
        match kind {
            frame::ACCEPT => Some(Verdict::Accept),
            frame::REJECT => Some(Verdict::Reject),
            frame::CONFLICT => Some(Verdict::Conflict),
            _ => None,
        }
    }
}

/// True if `me` decides which link the pair (`me`, `peer`) keeps: the
/// smaller id of the two (ids have one length, so string order is numeric).
pub(crate) fn decides(me: &NodeId, peer: &NodeId) -> bool {
    me < peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_survives_its_frame() {
        for v in [Verdict::Accept, Verdict::Reject, Verdict::Conflict] {
            assert_eq!(Verdict::of_kind(v.frame().kind), Some(v));
        }
        assert_eq!(Verdict::of_kind(frame::DATA), None);
    }

    #[test]
    fn exactly_one_end_of_a_pair_decides() {
        let (a, b) = (NodeId::parse("0a").unwrap(), NodeId::parse("0b").unwrap());
        assert!(decides(&a, &b));
        assert!(!decides(&b, &a));
    }
}
