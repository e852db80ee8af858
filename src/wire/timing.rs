//! The payloads that time a link: the heartbeat's stamps and a ping's
//! number.
//!
//! A heartbeat carries the sender's clock and echoes the last stamp it
//! received from the peer, with how long it held it before this heartbeat
//! went (as TCP's timestamps option, plus the hold, as QUIC's ack delay):
//!
//! ```text
//! sent: u64 BE | echo: u64 BE | held: u32 BE
//! ```
//!
//! `sent` and `echo` are microseconds on the stamping end's clock, from 1
//! (0 in `echo`: nothing to echo yet); `held` is in microseconds too. An
//! empty heartbeat (as nodes without timing send) is allowed and times
//! nothing; bytes after the 20 are left for later versions.
//!
//! A [`PING`](crate::wire::frame::PING) carries an 8-byte number which the
//! [`PONG`](crate::wire::frame::PONG) sends back as it is. Both are optional
//! kinds, so a node that does not know them ignores them (and a ping to it
//! goes unanswered).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of a heartbeat's stamps.
pub(crate) const BEAT_LEN: usize = 20;
/// Bytes of a ping's number.
pub(crate) const PING_LEN: usize = 8;

/// A heartbeat's stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Beat {
    /// The sender's clock, in microseconds from 1.
    pub sent: u64,
    /// The last `sent` the sender received from us; 0 for none.
    pub echo: u64,
    /// Microseconds from the arrival of `echo` to this heartbeat's going.
    pub held: u32,
}

impl Beat {
    pub(crate) fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(BEAT_LEN);
        b.put_u64(self.sent);
        b.put_u64(self.echo);
        b.put_u32(self.held);
        b.freeze()
    }

    /// `Ok(None)` for an empty heartbeat; an error for one cut short.
    pub(crate) fn decode(mut b: &[u8]) -> Result<Option<Beat>, String> {
        if b.is_empty() {
            return Ok(None);
        }
        if b.len() < BEAT_LEN {
            return Err(format!(
                "heartbeat of {} bytes: stamps take {BEAT_LEN}",
                b.len()
            ));
        }
        Ok(Some(Beat {
            sent: b.get_u64(),
            echo: b.get_u64(),
            held: b.get_u32(),
        }))
    }
}

/// A ping's (or its pong's) number.
pub(crate) fn ping_number(b: &[u8]) -> Result<u64, String> {
    let raw: [u8; PING_LEN] = b
        .try_into()
        .map_err(|_| format!("ping of {} bytes: its number takes {PING_LEN}", b.len()))?;
    Ok(u64::from_be_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_may_grow() {
        let beat = Beat {
            sent: 7,
            echo: u64::MAX,
            held: 1234,
        };
        assert_eq!(Beat::decode(&beat.encode()), Ok(Some(beat)));
        let mut longer = beat.encode().to_vec();
        longer.extend_from_slice(b"later");
        assert_eq!(Beat::decode(&longer), Ok(Some(beat)));
    }

    #[test]
    fn an_empty_heartbeat_times_nothing_and_a_cut_one_is_an_error() {
        assert_eq!(Beat::decode(&[]), Ok(None));
        let beat = Beat {
            sent: 1,
            echo: 0,
            held: 0,
        }
        .encode();
        for n in 1..BEAT_LEN {
            assert!(Beat::decode(&beat[..n]).is_err());
        }
    }

    #[test]
    fn a_ping_number_takes_eight_bytes() {
        assert_eq!(ping_number(&42u64.to_be_bytes()), Ok(42));
        assert!(ping_number(&[1, 2, 3]).is_err());
        assert!(ping_number(&[0; 9]).is_err());
    }
}
