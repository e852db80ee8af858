//! A node's list of links: the body of a
//! [`Op::Neighbors`](crate::wire::envelope::Op::Neighbors) envelope. One
//! linked member a line: its id and, where the teller knows it, where that
//! member listens as the teller sees it (the IP its link comes from, the
//! port its hello names), so that a node that has not found the member
//! itself can dial it:
//!
//! ```text
//! id LF                   a member whose listen address the teller does not know
//! id SP ip:port LF        IPv6 in brackets: [fd00::1]:4000
//! ```
//!
//! An address here is the teller's word, not a fact: the handshake of a
//! dial to it proves (or not) the member's key.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::id::NodeId;

/// One line of a list: a member, and where the teller says it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    /// The member's id, in its normal form (see [`NodeId::normal`]).
    pub id: Cow<'a, str>,
    /// Where it listens, if the teller knows.
    pub at: Option<SocketAddr>,
}

/// What is wrong with a list of links.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LinksError {
    #[error("a list of links that is not UTF-8")]
    NotUtf8,
    #[error("line {line} of a list of links: {text:?} is not a node id")]
    Id { line: usize, text: String },
    #[error("line {line} of a list of links: {text:?} is not an address (ip:port)")]
    Address { line: usize, text: String },
}

/// At most this much of a bad field is quoted in an error.
const QUOTED: usize = 72;

fn quoted(s: &str) -> String {
    match s.char_indices().nth(QUOTED) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// The body listing `members`, each with where it listens if known.
pub(crate) fn encode<'a>(members: impl Iterator<Item = (&'a NodeId, Option<SocketAddr>)>) -> Bytes {
    let mut line = String::new();
    let mut b = BytesMut::new();
    for (id, at) in members {
        b.put_slice(id.as_str().as_bytes());
        if let Some(at) = at {
            line.clear();
            let _ = write!(line, " {at}");
            b.put_slice(line.as_bytes());
        }
        b.put_u8(b'\n');
    }
    b.freeze()
}

/// The lines of `body`, in order, each an entry or what is wrong with it.
/// Empty lines are skipped.
pub(crate) fn decode(body: &[u8]) -> impl Iterator<Item = Result<Entry<'_>, LinksError>> {
    let (text, bad) = match std::str::from_utf8(body) {
        Ok(text) => (text, None),
        Err(_) => ("", Some(Err(LinksError::NotUtf8))),
    };
    bad.into_iter().chain(
        text.split('\n')
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(|(i, l)| entry(i + 1, l)),
    )
}

fn entry(line: usize, l: &str) -> Result<Entry<'_>, LinksError> {
    let (id, at) = match l.split_once(' ') {
        Some((id, at)) => (id, Some(at)),
        None => (l, None),
    };
    let id = NodeId::normal(id).ok_or_else(|| LinksError::Id {
        line,
        text: quoted(id),
    })?;
    let at = at
        .map(|at| {
            v4(at)
                .or_else(|| at.parse().ok())
                .ok_or_else(|| LinksError::Address {
                    line,
                    text: quoted(at),
                })
        })
        .transpose()?;
    Ok(Entry { id, at })
}

/// `a.b.c.d:port` as an address, if written so (no sign, no leading zero,
/// each number in range): what [`encode`] writes for IPv4, read without the
/// general parser (a mesh forming reads lists by the thousand, each with an
/// address a line). `None` for anything else, which the general parser
/// then reads or refuses.
fn v4(text: &str) -> Option<SocketAddr> {
    fn number(s: &[u8], max: u32) -> Option<u32> {
        let leading_zero = s.len() > 1 && s[0] == b'0';
        if s.is_empty() || s.len() > 5 || leading_zero || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = s.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        (n <= max).then_some(n)
    }
    let (ip, port) = text.split_once(':')?;
    let port = number(port.as_bytes(), 65535)?;
    let mut octets = [0u8; 4];
    let mut parts = ip.split('.');
    for o in &mut octets {
        *o = number(parts.next()?.as_bytes(), 255)? as u8;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(SocketAddr::from((octets, port as u16)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::id;

    #[test]
    fn round_trip_with_and_without_addresses() {
        let (a, b, c) = (id("0a"), id("0b"), id("0c"));
        let v4: SocketAddr = "10.99.0.2:4000".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:4001".parse().unwrap();
        let body = encode([(&a, Some(v4)), (&b, None), (&c, Some(v6))].into_iter());
        assert_eq!(
            &body[..],
            b"0a 10.99.0.2:4000\n0b\n0c [fd00::1]:4001\n".as_slice()
        );
        let got: Vec<Entry> = decode(&body).collect::<Result<_, _>>().unwrap();
        let want = [("0a", Some(v4)), ("0b", None), ("0c", Some(v6))];
        assert_eq!(got.len(), want.len());
        for (e, (i, at)) in got.iter().zip(want) {
            assert_eq!((e.id.as_ref(), e.at), (i, at));
        }
    }

    /// The quick reading of IPv4 addresses reads what `encode` writes, and
    /// agrees with the general parser on whatever it reads.
    #[test]
    fn ipv4_addresses_read_as_the_general_parser_reads_them() {
        for text in ["10.99.0.2:4000", "0.0.0.0:0", "255.255.255.255:65535"] {
            let at: SocketAddr = text.parse().unwrap();
            assert_eq!(v4(&at.to_string()), Some(at), "{text}");
        }
        for text in [
            "1.2.3.4:65536",
            "256.0.0.1:80",
            "01.2.3.4:80",
            "1.2.3.4:080",
            "1.2.3:80",
            "1.2.3.4.5:80",
            "1.2.3.4:",
            ":80",
            "+1.2.3.4:80",
            "[::1]:80",
            "1.2.3.4:8 0",
            "1.2.3.4:123456",
        ] {
            if let Some(quick) = v4(text) {
                assert_eq!(text.parse::<SocketAddr>().ok(), Some(quick), "{text}");
            }
        }
    }

    #[test]
    fn ids_are_normalised_and_empty_lines_skipped() {
        let got: Vec<Entry> = decode(b"\n0A\n\n").collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "0a");
    }

    #[test]
    fn each_fault_is_named_with_its_line() {
        let first_err = |b: &[u8]| decode(b).find_map(Result::err).unwrap();
        assert_eq!(first_err(b"\xff\n"), LinksError::NotUtf8);
        assert_eq!(
            first_err(b"0a\nzz 10.0.0.1:1\n"),
            LinksError::Id {
                line: 2,
                text: "zz".into()
            }
        );
        for at in ["10.0.0.1", "10.0.0.1:99999", "host:80", "", "10.0.0.1:1 x"] {
            let body = format!("0a {at}\n");
            assert_eq!(
                first_err(body.as_bytes()),
                LinksError::Address {
                    line: 1,
                    text: at.into()
                },
                "{at:?}"
            );
        }
        let long = format!("0a {}\n", "9".repeat(200));
        match first_err(long.as_bytes()) {
            LinksError::Address { text, .. } => assert_eq!(text.len(), QUOTED + 3),
            other => panic!("{other:?}"),
        }
    }
}
