//! The read path of a link as a pure state machine: one decoded frame in,
//! one [`Effect`] out, no sockets, no clocks.
//!
//! A link that does not decide its pair waits for the decider's verdict
//! before it takes any user data or messaging envelope; the decider's link
//! takes them at once. Heartbeats say the peer is there, and carry the
//! stamps that time the link; pings are answered in any state. Other kinds
//! `0x80..=0xFF` are optional and ignored; any other unknown kind, an
//! undecodable frame, or a frame the state does not allow ends the link.
//!
//! A sealed link's peer ends its side with a `CLOSE` record: an end of
//! stream before it is a cut (someone on the path, or a peer that died
//! mid-way) and ends the link as a failure; anything after it is a
//! protocol error.

use bytes::Bytes;

use crate::error::CloseReason;
use crate::wire::frame::{self, CodecError, Frame};
use crate::wire::timing::{ping_number, Beat};
use crate::wire::verdict::Verdict;

/// What the reader must do with one frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing: a heartbeat without stamps, or an optional kind.
    None,
    /// A heartbeat's stamps, for the link's timing.
    Beat(Beat),
    /// The peer pings: answer with a pong of this number.
    Ping(u64),
    /// The answer to our ping of this number.
    Pong(u64),
    /// User data, for the receive queue.
    Data(Bytes),
    /// A messaging envelope, for the messaging layer.
    Message(Bytes),
    /// The decider's verdict: tell the node; the link then ends with `end`
    /// if that is `Some`.
    Verdict {
        verdict: Verdict,
        end: Option<CloseReason>,
    },
    /// The link ends. [`CloseReason::IdConflict`] here means the peer said a
    /// newer live node holds our id.
    End(CloseReason),
    /// The peer refused an older live node holding our key: report it.
    Twin,
}

/// Where a link's read path is.
#[derive(Debug)]
pub(crate) struct ReadState {
    awaiting_verdict: bool,
    /// The link is sealed: its end must come after a `CLOSE` record.
    sealed: bool,
    /// The sealed `CLOSE` record has come.
    closed: bool,
}

impl ReadState {
    /// A link that does not decide its pair starts awaiting the verdict.
    pub(crate) fn new(awaiting_verdict: bool, sealed: bool) -> Self {
        ReadState {
            awaiting_verdict,
            sealed,
            closed: false,
        }
    }

    /// True until the decider's verdict has come (on the follower's side).
    pub(crate) fn awaiting_verdict(&self) -> bool {
        self.awaiting_verdict
    }

    /// True if a user data frame would now be [`Effect::Data`].
    pub(crate) fn takes_data(&self) -> bool {
        !self.awaiting_verdict && !self.closed
    }

    /// Acts on the next item from the decoder: a frame, the stream's end
    /// (`None`), or a decoding error.
    pub(crate) fn handle(&mut self, next: Option<Result<Frame, CodecError>>) -> Effect {
        let frame = match next {
            None => return Effect::End(self.ended(CloseReason::PeerClosed)),
            Some(Ok(f)) => f,
            Some(Err(e)) => return Effect::End(self.ended(decode_failed(e))),
        };
        if self.closed {
            return Effect::End(CloseReason::Protocol(format!(
                "frame kind {:#04x} after the close record",
                frame.kind
            )));
        }
        let awaiting = self.awaiting_verdict;
        match frame.kind {
            frame::CLOSE if self.sealed => {
                self.closed = true;
                Effect::None
            }
            frame::TWIN if !awaiting => Effect::Twin,
            frame::DATA if !awaiting => Effect::Data(frame.payload),
            frame::MSG if !awaiting => Effect::Message(frame.payload),
            frame::HEARTBEAT => match Beat::decode(&frame.payload) {
                Ok(Some(beat)) => Effect::Beat(beat),
                Ok(None) => Effect::None,
                Err(e) => Effect::End(CloseReason::Protocol(e)),
            },
            frame::PING | frame::PONG => match ping_number(&frame.payload) {
                Ok(n) if frame.kind == frame::PING => Effect::Ping(n),
                Ok(n) => Effect::Pong(n),
                Err(e) => Effect::End(CloseReason::Protocol(e)),
            },
            k if awaiting && Verdict::of_kind(k).is_some() => {
                self.awaiting_verdict = false;
                let verdict = Verdict::of_kind(k).expect("checked");
                let end = match verdict {
                    Verdict::Accept => None,
                    Verdict::Reject => Some(CloseReason::PeerClosed),
                    Verdict::Conflict => Some(CloseReason::IdConflict),
                };
                Effect::Verdict { verdict, end }
            }
            // The follower refuses the link we accepted: a newer node holds
            // our id.
            frame::CONFLICT => Effect::End(CloseReason::IdConflict),
            k if k >= frame::FIRST_OPTIONAL => {
                tracing::trace!(kind = k, "ignored an optional frame kind");
                Effect::None
            }
            k => Effect::End(CloseReason::Protocol(format!(
                "unexpected frame kind {k:#04x}{}",
                if awaiting { " before the verdict" } else { "" }
            ))),
        }
    }

    /// The reason a link ends that the peer seems to have closed: on a
    /// sealed link, an end (or a reset) before the peer's sealed close
    /// record is a cut, whoever made it, and a failure.
    fn ended(&self, reason: CloseReason) -> CloseReason {
        match reason {
            CloseReason::PeerClosed if self.sealed && !self.closed => CloseReason::Protocol(
                "the link was cut: it ended without the peer's sealed close record".into(),
            ),
            other => other,
        }
    }
}

/// Why a frame could not be read, as the reason the link ends.
fn decode_failed(e: CodecError) -> CloseReason {
    match e {
        CodecError::TooLarge { len, max } => CloseReason::FrameTooLarge { len, max },
        CodecError::Empty => CloseReason::Protocol("frame of length 0".into()),
        CodecError::Crypto(reason) => CloseReason::Protocol(reason),
        CodecError::Io(e) => read_failed(e),
    }
}

/// A read error; the ones that mean the peer went away are a peer close.
fn read_failed(e: std::io::Error) -> CloseReason {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => CloseReason::PeerClosed,
        _ => CloseReason::Io(std::sync::Arc::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &'static [u8]) -> Option<Result<Frame, CodecError>> {
        Some(Ok(Frame {
            kind,
            payload: Bytes::from_static(payload),
        }))
    }

    #[test]
    fn the_decider_takes_data_and_messages_at_once() {
        let mut r = ReadState::new(false, false);
        assert_eq!(
            r.handle(frame(frame::DATA, b"hi")),
            Effect::Data("hi".into())
        );
        assert_eq!(
            r.handle(frame(frame::MSG, b"m")),
            Effect::Message("m".into())
        );
        assert_eq!(r.handle(frame(frame::HEARTBEAT, b"")), Effect::None);
    }

    #[test]
    fn heartbeats_carry_stamps_and_pings_are_answered_before_the_verdict() {
        let beat = Beat {
            sent: 5,
            echo: 3,
            held: 1,
        };
        let mut r = ReadState::new(true, false);
        let stamps = Some(Ok(Frame {
            kind: frame::HEARTBEAT,
            payload: beat.encode(),
        }));
        assert_eq!(r.handle(stamps), Effect::Beat(beat));
        let ping = |kind| {
            Some(Ok(Frame {
                kind,
                payload: Bytes::copy_from_slice(&9u64.to_be_bytes()),
            }))
        };
        assert_eq!(r.handle(ping(frame::PING)), Effect::Ping(9));
        assert_eq!(r.handle(ping(frame::PONG)), Effect::Pong(9));
        assert!(r.awaiting_verdict());
        for (kind, payload) in [
            (frame::HEARTBEAT, &b"short"[..]),
            (frame::PING, b"1234567"),
            (frame::PONG, b""),
        ] {
            assert!(matches!(
                r.handle(frame(kind, payload)),
                Effect::End(CloseReason::Protocol(_))
            ));
        }
    }

    #[test]
    fn the_follower_takes_nothing_before_the_verdict() {
        for kind in [frame::DATA, frame::MSG, frame::HELLO, frame::NOISE] {
            let mut r = ReadState::new(true, false);
            match r.handle(frame(kind, b"x")) {
                Effect::End(CloseReason::Protocol(s)) => {
                    assert!(s.ends_with("before the verdict"), "{s}")
                }
                other => panic!("kind {kind:#04x}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_heartbeat_or_an_optional_kind_waits_with_the_verdict() {
        let mut r = ReadState::new(true, false);
        assert_eq!(r.handle(frame(frame::HEARTBEAT, b"")), Effect::None);
        assert_eq!(r.handle(frame(0x90, b"hint")), Effect::None);
        assert_eq!(r.handle(frame(0xff, b"")), Effect::None);
        assert!(r.awaiting_verdict());
    }

    #[test]
    fn accept_opens_the_follower_to_data() {
        let mut r = ReadState::new(true, false);
        assert!(!r.takes_data());
        assert_eq!(
            r.handle(frame(frame::ACCEPT, b"")),
            Effect::Verdict {
                verdict: Verdict::Accept,
                end: None
            }
        );
        assert!(!r.awaiting_verdict());
        assert!(r.takes_data());
        assert_eq!(r.handle(frame(frame::DATA, b"d")), Effect::Data("d".into()));
    }

    #[test]
    fn reject_ends_the_link_as_a_duplicate_and_conflict_as_a_conflict() {
        let mut r = ReadState::new(true, false);
        assert_eq!(
            r.handle(frame(frame::REJECT, b"")),
            Effect::Verdict {
                verdict: Verdict::Reject,
                end: Some(CloseReason::PeerClosed)
            }
        );
        let mut r = ReadState::new(true, false);
        assert_eq!(
            r.handle(frame(frame::CONFLICT, b"")),
            Effect::Verdict {
                verdict: Verdict::Conflict,
                end: Some(CloseReason::IdConflict)
            }
        );
    }

    #[test]
    fn a_second_verdict_is_a_protocol_error_but_conflict_is_always_heard() {
        let mut r = ReadState::new(true, false);
        r.handle(frame(frame::ACCEPT, b""));
        assert!(matches!(
            r.handle(frame(frame::ACCEPT, b"")),
            Effect::End(CloseReason::Protocol(_))
        ));
        // On the decider's side too: the follower says a newer node holds
        // our id.
        let mut r = ReadState::new(false, false);
        assert_eq!(
            r.handle(frame(frame::CONFLICT, b"")),
            Effect::End(CloseReason::IdConflict)
        );
        assert!(matches!(
            r.handle(frame(frame::REJECT, b"")),
            Effect::End(CloseReason::Protocol(_))
        ));
    }

    #[test]
    fn a_sealed_link_ends_cleanly_only_after_its_close_record() {
        let mut r = ReadState::new(false, true);
        assert_eq!(r.handle(frame(frame::DATA, b"d")), Effect::Data("d".into()));
        match r.handle(None) {
            Effect::End(CloseReason::Protocol(s)) => assert!(s.contains("cut"), "{s}"),
            other => panic!("{other:?}"),
        }
        let mut r = ReadState::new(false, true);
        assert!(r.takes_data());
        assert_eq!(r.handle(frame(frame::CLOSE, b"")), Effect::None);
        assert!(!r.takes_data(), "nothing after the close record");
        assert_eq!(r.handle(None), Effect::End(CloseReason::PeerClosed));
        let mut r = ReadState::new(false, true);
        r.handle(frame(frame::CLOSE, b""));
        assert!(matches!(
            r.handle(frame(frame::DATA, b"late")),
            Effect::End(CloseReason::Protocol(_))
        ));
        // A link in the clear has no close record to wait for.
        let mut r = ReadState::new(false, false);
        assert!(matches!(
            r.handle(frame(frame::CLOSE, b"")),
            Effect::End(CloseReason::Protocol(_))
        ));
    }

    #[test]
    fn a_twin_is_heard_on_an_open_link_only() {
        assert_eq!(
            ReadState::new(false, false).handle(frame(frame::TWIN, b"")),
            Effect::Twin
        );
        assert!(matches!(
            ReadState::new(true, false).handle(frame(frame::TWIN, b"")),
            Effect::End(CloseReason::Protocol(_))
        ));
    }

    #[test]
    fn an_unknown_required_kind_ends_the_link() {
        let mut r = ReadState::new(false, false);
        match r.handle(frame(0x7f, b"")) {
            Effect::End(CloseReason::Protocol(s)) => assert_eq!(s, "unexpected frame kind 0x7f"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_end_of_stream_and_decoding_errors_end_the_link() {
        use std::io::{Error, ErrorKind};
        let mut r = ReadState::new(false, false);
        assert_eq!(r.handle(None), Effect::End(CloseReason::PeerClosed));
        let too_large = Some(Err(CodecError::TooLarge { len: 9, max: 8 }));
        assert_eq!(
            r.handle(too_large),
            Effect::End(CloseReason::FrameTooLarge { len: 9, max: 8 })
        );
        assert!(matches!(
            r.handle(Some(Err(CodecError::Empty))),
            Effect::End(CloseReason::Protocol(_))
        ));
        let reset = || Error::from(ErrorKind::ConnectionReset);
        assert_eq!(
            r.handle(Some(Err(CodecError::Io(reset())))),
            Effect::End(CloseReason::PeerClosed)
        );
        // A sealed link reset before the close record was cut; after it,
        // the peer has closed.
        let mut sealed = ReadState::new(false, true);
        match sealed.handle(Some(Err(CodecError::Io(reset())))) {
            Effect::End(CloseReason::Protocol(s)) => assert!(s.contains("cut"), "{s}"),
            other => panic!("{other:?}"),
        }
        sealed.handle(frame(frame::CLOSE, b""));
        assert_eq!(
            sealed.handle(Some(Err(CodecError::Io(reset())))),
            Effect::End(CloseReason::PeerClosed)
        );
        let other = Error::other("disk on fire");
        assert!(matches!(
            r.handle(Some(Err(CodecError::Io(other)))),
            Effect::End(CloseReason::Io(_))
        ));
    }
}
