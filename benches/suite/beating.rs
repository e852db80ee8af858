//! The memory section's second baseline: careful plain TCP links with
//! heartbeats, at tcpnet's default settings.
//!
//! What a careful engineer would give plain links to tell an idle peer from
//! a gone one, and no more:
//!
//! - **one timer per process**, ticking on multiples of a quarter of the
//!   interval on the system clock (as tcpnet's ticker does, so processes on
//!   one host tick at the same instants). On beat ticks (every 4th: once a
//!   second, on the second) it writes one heartbeat frame on every link, a
//!   frame of the size of tcpnet's (a u32 length and 21 bytes: 25 bytes);
//!   on every tick it closes the links not heard from for the timeout
//!   (3 s: 12 ticks, counted in the ticker's passes, so that a process
//!   whose ticker comes late because it was starved does not take its
//!   peers for gone, as tcpnet's ticker does not), and those whose
//!   heartbeat found no room in the socket for as long (stalled);
//! - **a reader per link**, a tokio task with a 256-byte buffer held in its
//!   future, that reads frames and notes the ticker's pass it last heard something in
//!   (one relaxed store); it ends at the end of stream, and is aborted when
//!   the ticker closes the link.
//!
//! Nothing else: no round-trip stamps, no queues, no messages (a frame
//! other than a heartbeat is read and dropped). The measured process's
//! peers are processes running the same code ([`PEERS_PER_PROCESS`] links
//! each), so it reads a heartbeat a second on every link as tcpnet's idle
//! node does.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, OnceLock};

use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::*;

/// The heartbeat interval and timeout: tcpnet's defaults.
const INTERVAL: Duration = tcpnet::limits::DEFAULT_HEARTBEAT_INTERVAL;
const TIMEOUT: Duration = tcpnet::limits::DEFAULT_HEARTBEAT_TIMEOUT;
/// A heartbeat: a u32 big-endian length (21), then 21 bytes, the size of
/// tcpnet's (a kind byte and 20 bytes of round-trip stamps).
const BEAT: [u8; 25] = {
    let mut b = [0u8; 25];
    b[3] = 21;
    b[4] = 0x04;
    b
};
/// The reader's buffer.
const READ_BUF: usize = 256;
/// Set in a child of kind `beating-peers`: the measured child's port.
const PORT_ENV: &str = "TCPNET_BENCH_PORT";

/// What a link's reader and the ticker share.
#[derive(Default)]
struct Heard {
    /// The ticker's pass in which the reader last read something.
    tick: AtomicU64,
    /// The reader has ended (end of stream or an error); stored after
    /// `why`, with release, so the ticker that sees it sees `why` too.
    ended: AtomicBool,
    /// Why, unless at a clean end of stream (the peer's quitting).
    why: OnceLock<String>,
}

/// A link as the ticker holds it.
struct Beating {
    wr: OwnedWriteHalf,
    heard: Arc<Heard>,
    reader: AbortHandle,
    /// Bytes of the last heartbeat not yet written, and since which pass.
    unsent: usize,
    unsent_since: u64,
}

/// The links of one process, and the ticker's count of passes.
pub(crate) struct Beats {
    links: Mutex<Vec<Beating>>,
    /// The ticker's passes so far: silence is counted in passes, not on
    /// the clock, so a process starved for a while (its ticker late) does
    /// not take its peers for gone, as tcpnet's ticker does not.
    tick: AtomicU64,
    /// The ticker's task was started (with the first link).
    ticking: AtomicBool,
}

/// The ticker's tick: a quarter of the interval or of the timeout,
/// whichever is shorter, as tcpnet's.
fn tick_ns() -> u64 {
    (INTERVAL.min(TIMEOUT) / 4).as_nanos() as u64
}

/// Nanoseconds since the epoch, on the system clock.
fn since_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

impl Beats {
    pub(crate) fn new() -> Arc<Beats> {
        Arc::new(Beats {
            links: Mutex::default(),
            tick: AtomicU64::new(0),
            ticking: AtomicBool::new(false),
        })
    }

    /// Links held.
    pub(crate) fn len(&self) -> usize {
        self.links.lock().expect("links").len()
    }

    /// Takes a connected socket as a link: its reader starts, the ticker
    /// beats on it. Call from within the runtime.
    pub(crate) fn add(self: &Arc<Self>, s: TcpStream) {
        s.set_nodelay(true).expect("nodelay");
        let (rd, wr) = s.into_split();
        let heard = Arc::new(Heard::default());
        let now = self.tick.load(Ordering::Relaxed);
        heard.tick.store(now, Ordering::Relaxed);
        let reader = tokio::spawn(read_beats(rd, heard.clone(), self.clone())).abort_handle();
        self.links.lock().expect("links").push(Beating {
            wr,
            heard,
            reader,
            unsent: 0,
            unsent_since: now,
        });
        if !self.ticking.swap(true, Ordering::Relaxed) {
            tokio::spawn(self.clone().tick());
        }
    }

    /// The ticker's task, from the first link on.
    async fn tick(self: Arc<Self>) {
        let tick_ns = tick_ns();
        let beat_every = INTERVAL.as_nanos() as u64 / tick_ns;
        let timeout_ticks = TIMEOUT.as_nanos() as u64 / tick_ns;
        let mut now = 0;
        loop {
            // The next multiple of the tick on the system clock.
            let since_epoch = since_epoch();
            let wait = tick_ns - since_epoch % tick_ns;
            tokio::time::sleep(Duration::from_nanos(wait)).await;
            let beat = (since_epoch + wait) / tick_ns % beat_every == 0;
            now += 1;
            self.tick.store(now, Ordering::Relaxed);
            self.links.lock().expect("links").retain_mut(|l| {
                let heard = l.heard.tick.load(Ordering::Relaxed);
                let silent = now.saturating_sub(heard) >= timeout_ticks;
                let stalled = l.unsent > 0 && now - l.unsent_since >= timeout_ticks;
                let ended = l.heard.ended.load(Ordering::Acquire);
                if silent || stalled || ended {
                    // Said, so that a run that loses links tells why (a
                    // clean end of stream is the peer's quitting).
                    let why = match (silent, stalled) {
                        (true, _) => Some("nothing heard for the timeout"),
                        (_, true) => Some("a heartbeat unwritten for the timeout"),
                        _ => l.heard.why.get().map(String::as_str),
                    };
                    if let Some(why) = why {
                        eprintln!("  memory: plain TCP with heartbeats: a link closed: {why}");
                    }
                    // Dropping the write half and the reader closes it.
                    l.reader.abort();
                    return false;
                }
                if beat && l.unsent == 0 {
                    l.unsent = BEAT.len();
                    l.unsent_since = now;
                }
                if l.unsent > 0 {
                    match l.wr.try_write(&BEAT[BEAT.len() - l.unsent..]) {
                        Ok(n) => l.unsent -= n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            eprintln!("  memory: plain TCP with heartbeats: a link closed: {e}");
                            l.reader.abort();
                            return false;
                        }
                    }
                }
                true
            });
        }
    }
}

/// A link's reader: reads frames into a small buffer, dropping them, and
/// notes the ticker's pass it heard something in.
async fn read_beats(mut rd: OwnedReadHalf, heard: Arc<Heard>, beats: Arc<Beats>) {
    let mut buf = [0u8; READ_BUF];
    let mut have = 0;
    // Bytes still to drop of a frame longer than the buffer.
    let mut skip = 0usize;
    loop {
        // A read that leaves room in the buffer clears the socket's
        // readiness (tokio's `poll_read`), so the next waits for the socket
        // without asking it again for nothing.
        match rd.read(&mut buf[have..]).await {
            Ok(0) => break,
            Ok(n) => {
                heard
                    .tick
                    .store(beats.tick.load(Ordering::Relaxed), Ordering::Relaxed);
                have += n;
                let mut at = 0;
                loop {
                    if skip > 0 {
                        let k = skip.min(have - at);
                        skip -= k;
                        at += k;
                        if skip > 0 {
                            break;
                        }
                    }
                    if have - at < 4 {
                        break;
                    }
                    let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4")) as usize;
                    if len > MAX_FRAME {
                        let _ = heard
                            .why
                            .set(format!("a frame of {len} bytes, over {MAX_FRAME}"));
                        heard.ended.store(true, Ordering::Release);
                        return;
                    }
                    if have - at >= 4 + len {
                        at += 4 + len;
                    } else if 4 + len > READ_BUF {
                        skip = len;
                        at += 4;
                    } else {
                        break;
                    }
                }
                buf.copy_within(at..have, 0);
                have -= at;
            }
            Err(e) => {
                let _ = heard.why.set(format!("read: {e}"));
                break;
            }
        }
    }
    heard.ended.store(true, Ordering::Release);
}

/// A child of kind `beating` (the measured process: it accepts links) or
/// `beating-peers` (its peers: [`PEERS_ENV`] links dialed to the port in
/// [`PORT_ENV`]).
pub(crate) async fn beating_child(kind: &str, peers: usize, quit: oneshot::Sender<()>) {
    let beats = Beats::new();
    let port = match kind {
        "beating" => {
            let l = TcpListener::bind((LISTEN_ADDR, 0)).await.expect("bind");
            let port = l.local_addr().expect("addr").port();
            let accepting = beats.clone();
            tokio::spawn(async move {
                loop {
                    let (s, _) = l.accept().await.expect("accept");
                    accepting.add(s);
                }
            });
            port
        }
        _ => {
            let port: u16 = std::env::var(PORT_ENV)
                .ok()
                .and_then(|p| p.parse().ok())
                .expect("beating peers need a port");
            for _ in 0..peers {
                let s = TcpStream::connect((LISTEN_ADDR, port))
                    .await
                    .expect("connect");
                beats.add(s);
            }
            port
        }
    };
    let counted = beats.clone();
    serve_stats(port, move || counted.len(), quit);
}

/// The environment of a `beating-peers` child dialing `port`.
pub(crate) fn beating_peers_env(n: usize, port: u16) -> Vec<(&'static str, String)> {
    vec![(PEERS_ENV, n.to_string()), (PORT_ENV, port.to_string())]
}
