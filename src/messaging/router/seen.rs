//! Which of each origin's numbered messages were seen: a window of
//! [`WINDOW`] numbers per origin, for at most [`MAX_ORIGINS`] origins.
//!
//! A new window takes any number, so a window forgotten would make the
//! origin's old messages new again: a peer that kept them could replay
//! them. Keys are free to make, and every made-up key is an origin whose
//! signature checks out, so a peer can bring origins by the thousand. The
//! table therefore never forgets a member's window (a linked peer, or a
//! node of the membership view: far fewer than [`MAX_ORIGINS`]) to make
//! room. Once it is full, a member's new window takes the place of the
//! non-member's heard from least recently; a non-member's new window takes
//! it only if that one was not heard from for [`NUMBERS_KEPT`], and
//! otherwise its message is refused, not given a window. So made-up origins
//! fill the table for at most that long, and a non-member's window is
//! forgotten only after that long a silence.
//!
//! Numbers start at the origin's start time and grow by one per message,
//! so they do not tell when a message was sent: a node up for days sends
//! numbers from days ago, and a message of an origin with no window cannot
//! be refused for its number. An origin whose window was given up (a node
//! that left, silent that long) can therefore have its old messages
//! replayed, each once while its new window lasts.

use std::collections::HashMap;

use crate::id::NodeId;
use crate::limits::NUMBERS_KEPT;

/// Most nodes whose message numbers are remembered.
pub(crate) const MAX_ORIGINS: usize = 4096;

// Members are at most MAX_PEERS linked, MAX_PEERS relayed and MAX_PEERS
// waiting (see `node::members::view`): their windows fit, with room for
// others.
const _: () = assert!(MAX_ORIGINS > 3 * crate::limits::MAX_PEERS);
/// How far below the highest number seen a message may still be new.
pub(crate) const WINDOW: u64 = 1024;

/// The numbers seen from one origin.
#[derive(Debug)]
struct Window {
    highest: u64,
    /// Bit `i` set: `highest - i` was seen.
    bits: [u64; (WINDOW / 64) as usize],
    /// When a message of the origin was last recorded (nanoseconds since
    /// the Unix epoch, this node's clock).
    heard: u64,
}

impl Window {
    fn new(seq: u64, now: u64) -> Window {
        let mut bits = [0u64; (WINDOW / 64) as usize];
        bits[0] = 1;
        Window {
            highest: seq,
            bits,
            heard: now,
        }
    }

    fn bit(&mut self, i: u64) -> (&mut u64, u64) {
        (&mut self.bits[(i / 64) as usize], 1u64 << (i % 64))
    }

    /// Records `seq`; true if it was not seen before.
    fn record(&mut self, seq: u64) -> bool {
        if seq > self.highest {
            let shift = seq - self.highest;
            self.shift(shift);
            self.highest = seq;
            let (w, b) = self.bit(0);
            *w |= b;
            return true;
        }
        let back = self.highest - seq;
        if back >= WINDOW {
            return false;
        }
        let (w, b) = self.bit(back);
        let fresh = *w & b == 0;
        *w |= b;
        fresh
    }

    /// Moves the window up by `n` numbers.
    fn shift(&mut self, n: u64) {
        if n >= WINDOW {
            self.bits = [0; (WINDOW / 64) as usize];
            return;
        }
        let (words, bits) = ((n / 64) as usize, (n % 64) as u32);
        let len = self.bits.len();
        for i in (0..len).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.bits[s] << bits);
            let lo = match src.and_then(|s| s.checked_sub(1)) {
                Some(s) if bits > 0 => self.bits[s] >> (64 - bits),
                _ => 0,
            };
            self.bits[i] = hi | lo;
        }
    }
}

/// What [`Seen::record`] made of a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seq {
    /// Not seen before; now recorded.
    Fresh,
    /// Seen before, or older than its origin's window.
    Stale,
    /// Of an origin with no window, that is not a member, while the table
    /// is full and no non-member's window is older than [`NUMBERS_KEPT`]:
    /// not recorded.
    Unknown,
}

/// The windows of every origin heard from; when full, a new window takes
/// the place of the non-member's heard from least recently (a non-member's
/// only if that one is older than [`NUMBERS_KEPT`]).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    windows: HashMap<NodeId, Window>,
    /// While the table is full: no non-member's window is older than
    /// [`NUMBERS_KEPT`] before this time, so a non-member's message is
    /// refused without a look at the table. Windows are only heard from
    /// later or replaced by newer ones, so this stays a lower bound (but
    /// for a member that stops being one: its window is given up at most
    /// [`NUMBERS_KEPT`] later than it could be).
    none_ripe_before: u64,
}

impl Seen {
    /// Records `(origin, seq)`, heard at `now` (nanoseconds of a monotonic
    /// clock: windows age by it, so that a step of the wall clock neither
    /// ripens every window at once nor keeps any from ripening). `member` says whether a node is a member (see the module's
    /// doc); it is asked only when the table is full and `origin` has no
    /// window.
    pub(crate) fn record(
        &mut self,
        origin: &NodeId,
        seq: u64,
        now: u64,
        member: impl Fn(&NodeId) -> bool,
    ) -> Seq {
        if let Some(w) = self.windows.get_mut(origin) {
            w.heard = w.heard.max(now);
            return if w.record(seq) {
                Seq::Fresh
            } else {
                Seq::Stale
            };
        }
        if self.windows.len() >= MAX_ORIGINS {
            let kept = NUMBERS_KEPT.as_nanos() as u64;
            let is_member = member(origin);
            if !is_member && now < self.none_ripe_before {
                return Seq::Unknown;
            }
            let oldest = self.least_recent(&member);
            if is_member {
                let oldest = oldest
                    .or_else(|| {
                        self.windows
                            .iter()
                            .map(|(id, w)| (w.heard, id.clone()))
                            .min()
                    })
                    .expect("not empty");
                self.windows.remove(&oldest.1);
            } else {
                match oldest {
                    Some((heard, id)) if heard.saturating_add(kept) <= now => {
                        self.windows.remove(&id);
                    }
                    other => {
                        let heard = other.map_or(now, |(heard, _)| heard);
                        self.none_ripe_before = heard.saturating_add(kept);
                        return Seq::Unknown;
                    }
                }
            }
        }
        self.windows.insert(origin.clone(), Window::new(seq, now));
        Seq::Fresh
    }

    /// The non-member heard from least recently, and when; none if every
    /// window is a member's, which the bounds on members rule out.
    fn least_recent(&self, member: impl Fn(&NodeId) -> bool) -> Option<(u64, NodeId)> {
        let mut by_age: Vec<(u64, &NodeId)> =
            self.windows.iter().map(|(id, w)| (w.heard, id)).collect();
        by_age.sort_unstable();
        by_age
            .into_iter()
            .find(|(_, id)| !member(id))
            .map(|(heard, id)| (heard, id.clone()))
    }

    /// Forgets `origin`'s numbers: its next message starts a new window.
    pub(crate) fn forget(&mut self, origin: &NodeId) {
        self.windows.remove(origin);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock in the tests.
    const T: u64 = 1 << 62;

    fn id(n: u64) -> NodeId {
        NodeId::parse(&format!("{n:x}")).unwrap()
    }

    /// A member's window stays whatever other origins come: its old
    /// numbers stay seen. Once the table is full, an origin that is not a
    /// member gets no window, and a new member's takes the place of the
    /// least recent non-member's.
    #[test]
    fn a_members_window_outlasts_any_number_of_other_origins() {
        let mut s = Seen::default();
        let b = id(0xb);
        let member = |n: &NodeId| n == &b || n == &id(0xc);
        for seq in 1000..1100u64 {
            assert_eq!(s.record(&b, seq, T, member), Seq::Fresh);
        }
        assert_eq!(s.record(&b, 1050, T, member), Seq::Stale);
        let made_up = |i: u64| id(0x10_0000 + i);
        for i in 0..MAX_ORIGINS as u64 * 2 {
            let want = if i < MAX_ORIGINS as u64 - 1 {
                Seq::Fresh
            } else {
                Seq::Unknown
            };
            assert_eq!(s.record(&made_up(i), 1, T, member), want, "origin {i}");
        }
        assert_eq!(s.len(), MAX_ORIGINS);
        assert_eq!(s.record(&b, 1050, T, member), Seq::Stale, "a replay of B's");
        // A new member takes the least recent made-up origin's place.
        assert_eq!(s.record(&id(0xc), 7, T, member), Seq::Fresh);
        assert_eq!(s.len(), MAX_ORIGINS);
        assert_eq!(s.record(&made_up(0), 2, T, member), Seq::Unknown);
        assert_eq!(s.record(&made_up(1), 1, T, member), Seq::Stale, "kept");
        assert_eq!(s.record(&b, 1050, T, member), Seq::Stale);
    }

    /// Once the table is full of non-members, a new non-member is refused
    /// while each of them was heard within [`NUMBERS_KEPT`]; past that, it
    /// takes the place of the one heard from least recently, and then the
    /// next one's, each taken once.
    #[test]
    fn a_non_members_window_is_given_up_after_its_silence() {
        let mut s = Seen::default();
        let kept = NUMBERS_KEPT.as_nanos() as u64;
        let no_one = |_: &NodeId| false;
        let made_up = |i: u64| id(0x10_0000 + i);
        for i in 0..MAX_ORIGINS as u64 {
            assert_eq!(s.record(&made_up(i), 1, T + i, no_one), Seq::Fresh);
        }
        // Made-up origin 0 is heard again: 1 is the least recent now.
        assert_eq!(s.record(&made_up(0), 2, T + kept, no_one), Seq::Fresh);
        let newcomer = id(0xa);
        assert_eq!(s.record(&newcomer, 5, T + kept, no_one), Seq::Unknown);
        assert_eq!(s.record(&newcomer, 5, T + kept + 1, no_one), Seq::Fresh);
        assert_eq!(s.record(&newcomer, 5, T + kept + 1, no_one), Seq::Stale);
        assert_eq!(s.len(), MAX_ORIGINS);
        assert_eq!(s.record(&made_up(0), 2, T + kept + 1, no_one), Seq::Stale);
        // The next one, 2, goes only once as old: not yet at T + kept + 1.
        let other = id(0xb);
        assert_eq!(s.record(&other, 5, T + kept + 1, no_one), Seq::Unknown);
        assert_eq!(s.record(&other, 5, T + kept + 2, no_one), Seq::Fresh);
        // 1 and 2 were given up: their old numbers are new again, once
        // there is room.
        assert_eq!(s.record(&made_up(1), 1, T + kept + 2, no_one), Seq::Unknown);
        assert_eq!(s.record(&made_up(2), 1, T + kept + 3, no_one), Seq::Fresh);
        assert_eq!(s.record(&made_up(2), 1, T + kept + 3, no_one), Seq::Stale);
    }
}
