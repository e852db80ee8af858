//! A TCP relay for tests: it forwards every connection it accepts to one
//! upstream address, counts them, and on command stalls one (nothing moves
//! either way, and neither end is told), holds what one carries (and
//! releases it in one write), resumes it, cuts it (both ends see it close),
//! or splits what it forwards into small pieces with a pause
//! between them (so the sender's socket stays nearly full and its writes are
//! taken in part), or delays each piece it forwards (a slower network: this
//! kernel has no netem).
//!
//! It runs in the caller's network namespace and tokio runtime, on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What one forwarded connection is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    /// Read nothing more: the bytes wait in the sockets' buffers (what a
    /// read under way brings is held, and forwarded on resume).
    Stall,
    /// Read and keep: forwarded, in one write each way, on resume.
    Hold,
    Cut,
}

/// How bytes are forwarded: in pieces of at most `piece` bytes, `pause`
/// apart (`None`: as they come).
type Split = Option<(usize, Duration)>;

/// One relayed connection: what it is told to do, and the bytes it holds.
struct Conn {
    mode: watch::Sender<Mode>,
    held: AtomicUsize,
    /// Of `held`, the bytes the dialing end sent.
    held_from_dialer: AtomicUsize,
}

struct Shared {
    upstream: SocketAddr,
    conns: Mutex<Vec<Arc<Conn>>>,
    split: watch::Sender<Split>,
    /// How long each piece waits before it is forwarded.
    delay: watch::Sender<Duration>,
    /// Bumped on every accepted connection, so tests can wait for one.
    accepted: watch::Sender<usize>,
    /// What a newly accepted connection is told to do first.
    first: Mutex<Mode>,
}

/// A relay listening on 127.0.0.1; dropping it stops accepting and closes
/// every connection it forwards.
pub(crate) struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Starts relaying connections to `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let addr = listener.local_addr().expect("relay address");
        let shared = Arc::new(Shared {
            upstream,
            conns: Mutex::new(Vec::new()),
            split: watch::channel(None).0,
            delay: watch::channel(Duration::ZERO).0,
            accepted: watch::channel(0).0,
            first: Mutex::new(Mode::Forward),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Relay {
            addr,
            shared,
            accept,
        }
    }

    /// Where to connect to be relayed.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` of [`addr`](Self::addr), for `Settings::peer`.
    pub(crate) fn peer(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far (numbered from 0 in that order).
    pub(crate) fn accepted(&self) -> usize {
        *self.shared.accepted.borrow()
    }

    /// Waits (with the harness's deadline) until `n` connections were
    /// accepted.
    pub(crate) async fn wait_accepted(&self, n: usize) {
        let mut rx = self.shared.accepted.subscribe();
        super::within(
            &format!("{n} relayed connections"),
            rx.wait_for(|a| *a >= n),
        )
        .await
        .expect("relay alive");
    }

    fn conn(&self, conn: usize) -> Arc<Conn> {
        let conns = self.shared.conns.lock().unwrap();
        conns
            .get(conn)
            .unwrap_or_else(|| panic!("no relayed connection {conn}"))
            .clone()
    }

    fn set(&self, conn: usize, mode: Mode) {
        self.conn(conn).mode.send_replace(mode);
    }

    /// Connection `conn` stops moving bytes either way, with both of its
    /// sockets left open: to each end, the other has gone silent.
    pub(crate) fn stall(&self, conn: usize) {
        self.set(conn, Mode::Stall);
    }

    /// Connection `conn` reads what comes, either way, and keeps it until
    /// [`resume`](Self::resume).
    pub(crate) fn hold(&self, conn: usize) {
        self.set(conn, Mode::Hold);
    }

    /// Bytes connection `conn` holds, both ways together.
    pub(crate) fn held(&self, conn: usize) -> usize {
        self.conn(conn).held.load(Ordering::Relaxed)
    }

    /// Of what connection `conn` holds, the bytes its dialing end sent.
    pub(crate) fn held_from_dialer(&self, conn: usize) -> usize {
        self.conn(conn).held_from_dialer.load(Ordering::Relaxed)
    }

    /// The next connection accepted holds what it reads from its first
    /// byte, until [`resume`](Self::resume); later ones forward.
    pub(crate) fn hold_next(&self) {
        *self.shared.first.lock().unwrap() = Mode::Hold;
    }

    /// Connection `conn` moves bytes again; what it held goes first, in one
    /// write each way.
    pub(crate) fn resume(&self, conn: usize) {
        self.set(conn, Mode::Forward);
    }

    /// Connection `conn` is closed on both sides.
    pub(crate) fn cut(&self, conn: usize) {
        self.set(conn, Mode::Cut);
    }

    /// From now on, every connection forwards what it reads in pieces of at
    /// most `piece` bytes, `pause` apart; `None` forwards as it comes.
    pub(crate) fn split(&self, split: Option<(usize, Duration)>) {
        self.shared.split.send_replace(split);
    }

    /// From now on, every connection holds what it reads for `delay`
    /// before forwarding it, each way: a round trip through the relay
    /// takes at least twice `delay`.
    pub(crate) fn delay(&self, delay: Duration) {
        self.shared.delay.send_replace(delay);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        for conn in self.shared.conns.lock().unwrap().iter() {
            conn.mode.send_replace(Mode::Cut);
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((down, _)) = listener.accept().await else {
            continue;
        };
        let Ok(up) = TcpStream::connect(shared.upstream).await else {
            continue; // dropping `down` tells the dialer
        };
        let _ = (down.set_nodelay(true), up.set_nodelay(true));
        let first = std::mem::replace(&mut *shared.first.lock().unwrap(), Mode::Forward);
        let conn = Arc::new(Conn {
            mode: watch::channel(first).0,
            held: AtomicUsize::new(0),
            held_from_dialer: AtomicUsize::new(0),
        });
        shared.conns.lock().unwrap().push(conn.clone());
        let (dr, dw) = down.into_split();
        let (ur, uw) = up.into_split();
        let ways = || (shared.split.subscribe(), shared.delay.subscribe());
        tokio::spawn(pump(dr, uw, conn.clone(), true, ways()));
        tokio::spawn(pump(ur, dw, conn, false, ways()));
        shared.accepted.send_modify(|n| *n += 1);
    }
}

/// Forwards one direction until either end closes or the connection is cut.
/// Split, it reads no more than one piece at a time, so the sender's socket
/// drains only at the pace of the pieces.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    conn: Arc<Conn>,
    from_dialer: bool,
    (split, delay): (watch::Receiver<Split>, watch::Receiver<Duration>),
) {
    let count_from_dialer = |n: usize, add: bool| {
        if from_dialer && add {
            conn.held_from_dialer.fetch_add(n, Ordering::Relaxed);
        } else if from_dialer {
            conn.held_from_dialer.fetch_sub(n, Ordering::Relaxed);
        }
    };
    let mut mode = conn.mode.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    let mut held = Vec::new();
    loop {
        let now = match mode.wait_for(|m| *m != Mode::Stall).await {
            Ok(m) => *m,
            Err(_) => Mode::Cut,
        };
        match now {
            Mode::Cut => return, // both halves drop: both ends see the close
            Mode::Forward if !held.is_empty() => {
                if to.write_all(&held).await.is_err() {
                    return;
                }
                conn.held.fetch_sub(held.len(), Ordering::Relaxed);
                count_from_dialer(held.len(), false);
                held.clear();
                continue;
            }
            _ => {}
        }
        let split = *split.borrow();
        let room = split.map_or(buf.len(), |(piece, _)| piece.clamp(1, buf.len()));
        let read = tokio::select! {
            r = from.read(&mut buf[..room]) => r,
            // A new mode while waiting for bytes takes effect at once.
            _ = mode.wait_for(|m| *m != now) => continue,
        };
        // The end of the stream (or a failed read) is passed on like bytes.
        let n = read.unwrap_or(0);
        // What a read brings becomes what the connection is told now: what
        // was sent after a `hold` or `stall` returned is held, whatever the
        // read raced with.
        let told = *mode.borrow();
        match (told, n) {
            (Mode::Cut, _) => return,
            (Mode::Forward, 0) => {
                let _ = to.shutdown().await;
                return;
            }
            (Mode::Forward, n) => {
                let delay = *delay.borrow();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            (Mode::Hold | Mode::Stall, 0) => {
                // Held too: passed on after what is held, on resume.
                let resumed = match mode.wait_for(|m| *m != told).await {
                    Ok(m) => *m,
                    Err(_) => Mode::Cut,
                };
                if resumed == Mode::Forward && to.write_all(&held).await.is_ok() {
                    conn.held.fetch_sub(held.len(), Ordering::Relaxed);
                    count_from_dialer(held.len(), false);
                    let _ = to.shutdown().await;
                }
                return;
            }
            (Mode::Hold | Mode::Stall, n) => {
                held.extend_from_slice(&buf[..n]);
                conn.held.fetch_add(n, Ordering::Relaxed);
                count_from_dialer(n, true);
                continue;
            }
        }
        if let Some((_, pause)) = split {
            tokio::time::sleep(pause).await;
        }
    }
}
