//! Which of each origin's numbered messages were seen: a window of
//! [`WINDOW`] numbers per origin, for at most [`MAX_ORIGINS`] origins.

use std::collections::HashMap;

use crate::id::NodeId;

/// Most nodes whose message numbers are remembered.
pub(crate) const MAX_ORIGINS: usize = 4096;
/// How far below the highest number seen a message may still be new.
pub(crate) const WINDOW: u64 = 1024;

/// The numbers seen from one origin.
#[derive(Debug)]
struct Window {
    highest: u64,
    /// Bit `i` set: `highest - i` was seen.
    bits: [u64; (WINDOW / 64) as usize],
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

/// The windows of every origin heard from, forgetting the one heard from
/// least recently when full.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    windows: HashMap<NodeId, Window>,
    clock: u64,
}

impl Seen {
    /// Records `(origin, seq)`; true if it was not seen before.
    pub(crate) fn record(&mut self, origin: &NodeId, seq: u64) -> bool {
        self.clock += 1;
        let now = self.clock;
        if let Some(w) = self.windows.get_mut(origin) {
            w.heard = now;
            return w.record(seq);
        }
        if self.windows.len() >= MAX_ORIGINS {
            let oldest = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.heard)
                .map(|(id, _)| id.clone())
                .expect("not empty");
            self.windows.remove(&oldest);
        }
        self.windows.insert(origin.clone(), Window::new(seq, now));
        true
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
