//! The fan-out's subscribers: WebSocket clients (tungstenite) on
//! non-blocking sockets, all read by one thread through one epoll. A
//! delivery costs this load generator its socket's readiness, one `recv`
//! and the frame's parsing; no task, waker or second `recv` per delivery.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tokio_tungstenite::tungstenite::{self, protocol::WebSocketConfig, Message, WebSocket};

/// A subscriber's socket: blocking for the handshake, non-blocking after.
/// Then a read that comes back short means the socket is empty until epoll
/// says otherwise (mio's events are edge-triggered), so the `recv` that
/// would only say so is not made.
#[derive(Debug)]
pub(crate) struct Conn {
    tcp: TcpStream,
    edge: bool,
    drained: bool,
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let r = self.tcp.read(buf);
        match &r {
            Ok(n) if self.edge && *n < buf.len() => self.drained = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
            _ => {}
        }
        r
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

pub(crate) type Sub = WebSocket<Conn>;

/// A subscriber at `url` (`ws://host:port/ws/<channel>`), welcomed.
fn connect(url: &str) -> Sub {
    let addr = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .expect("a ws:// URL");
    let tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let conn = Conn {
        tcp,
        edge: false,
        drained: false,
    };
    // Reads of 1 KiB: a delivery is about 200 bytes, and each read zeroes
    // the part of the buffer it reads into.
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    let (mut ws, _) = tungstenite::client::client_with_config(url, conn, Some(config))
        .unwrap_or_else(|e| panic!("handshake {url}: {e}"));
    match ws.read() {
        Ok(Message::Text(_)) => {}
        other => panic!("no welcome from {url}: {other:?}"),
    }
    let conn = ws.get_mut();
    conn.tcp.set_nonblocking(true).expect("non-blocking");
    conn.edge = true;
    ws
}

/// Subscribers at `urls`, in that order, connected by a few threads.
pub(crate) async fn connect_many(urls: Vec<String>) -> Vec<Sub> {
    let tasks: Vec<_> = urls
        .chunks(urls.len().div_ceil(8).max(1))
        .map(|chunk| {
            let chunk = chunk.to_vec();
            tokio::task::spawn_blocking(move || {
                chunk.iter().map(|u| connect(u)).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut out = Vec::with_capacity(urls.len());
    for t in tasks {
        out.extend(t.await.expect("connecting subscribers"));
    }
    out
}

/// The publish time (microseconds since the run's start) and number of a
/// channel message, read from the end of its frame, where the publisher's
/// data comes verbatim: `..."data":{"t":T,"n":N}}`. Only these two numbers
/// are needed, so the frame is not parsed as a whole.
pub(crate) fn stamp(frame: &str) -> Option<(u64, u64)> {
    const DATA: &str = "\"data\":{\"t\":";
    let rest = &frame[frame.rfind(DATA)? + DATA.len()..];
    let (t, n) = rest.split_once(",\"n\":")?;
    Some((t.parse().ok()?, n.strip_suffix("}}")?.parse().ok()?))
}

/// Deliveries counted by one reading thread, alone on its cache line so
/// that the threads do not slow each other counting.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Counter(pub AtomicU64);

/// What the subscribers saw.
#[derive(Default)]
pub(crate) struct Seen {
    /// Publish-to-read latency of each delivery, in microseconds.
    pub samples: Vec<u32>,
    /// Deliveries out of order for their publisher (a repeat, a gap or a
    /// swap).
    pub disorder: u64,
    /// Frames other than the channel's messages (an error, say), and
    /// connections that ended.
    pub other: u64,
}

/// Reads every subscriber until each has had `total` messages or `stop` is
/// set; counts deliveries in `count` as they come. Message `n` comes from
/// publisher `n % publishers`, each publisher's in order.
pub(crate) fn read(
    mut subs: Vec<Sub>,
    total: u64,
    publishers: u64,
    start: Instant,
    count: &Counter,
    stop: &AtomicBool,
) -> Seen {
    let mut poll = Poll::new().expect("epoll");
    for (i, ws) in subs.iter().enumerate() {
        let fd = ws.get_ref().tcp.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
            .expect("register a subscriber");
    }
    let mut seen = Seen {
        samples: Vec::with_capacity(total as usize * subs.len()),
        ..Seen::default()
    };
    let mut got = vec![0u64; subs.len()];
    let mut ended = vec![false; subs.len()];
    // The number expected next from each publisher, per subscriber.
    let mut next: Vec<Vec<u64>> = vec![(0..publishers).collect(); subs.len()];
    let mut open = subs.len();
    let mut events = Events::with_capacity(1024);
    while open > 0 && !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("epoll: {e}"),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if ended[i] {
                continue;
            }
            let ws = &mut subs[i];
            ws.get_mut().drained = false;
            loop {
                match ws.read() {
                    Ok(Message::Text(t)) => {
                        let Some((sent, n)) = stamp(&t) else {
                            seen.other += 1;
                            continue;
                        };
                        let now = start.elapsed().as_micros() as u64;
                        seen.samples.push(now.saturating_sub(sent) as u32);
                        count.0.fetch_add(1, Ordering::Relaxed);
                        let p = (n % publishers) as usize;
                        if n != next[i][p] {
                            seen.disorder += 1;
                        }
                        next[i][p] = n + publishers;
                        got[i] += 1;
                        if got[i] == total {
                            ended[i] = true;
                            open -= 1;
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        break
                    }
                    Err(_) => {
                        seen.other += 1;
                        ended[i] = true;
                        open -= 1;
                        break;
                    }
                }
            }
        }
    }
    seen
}
