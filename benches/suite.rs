//! The benchmark suite of issue 5: tcpnet and a plain tokio TCP baseline,
//! measured side by side in one run, with a table of tcpnet / baseline.
//!
//! ```text
//! cargo bench --bench suite                   # full run (a few minutes)
//! cargo bench --bench suite -- --quick        # smoke run (under a minute)
//! cargo bench --bench suite -- --only throughput,latency --out bench
//! python3 scripts/chart.py bench/results.csv bench/throughput.png
//! scripts/bench.sh [--quick]                  # the suite, then the chart
//! ```
//!
//! Options (after `--`):
//!
//! - `--quick`: fewer messages, fewer runs, 5 s idle windows instead of 60 s.
//! - `--only A,B`: sections among `throughput`, `latency`, `fanout`,
//!   `formation`, `memory`, `secret` (default: all).
//! - `--out DIR`: where `results.md` (the table), `results.csv` (the same,
//!   for scripts) and `samples.csv` (every run's figure) go (default `target/bench`).
//! - `--side tcpnet|baseline`: measure one side only (for profilers).
//! - `--sizes 64,1024`, `--msgs N`, `--runs N`, `--rtts N`, `--idle-secs N`,
//!   `--nodes 2,8,16,32,64`: override the throughput sizes and counts, the
//!   round trips, the idle window and the formation sizes (16 is the late
//!   joiner's case).
//! - `--secret`: every section's tcpnet nodes hold a cluster secret (the
//!   `secret` section does this for throughput and latency in any case).
//!
//! Everything that starts a tcpnet `Service` (which speaks mDNS) runs inside
//! a private network namespace holding only loopback, made with
//! `tests/common/mod.rs`; so does the baseline, for fairness. The memory
//! section runs idle nodes as child processes (this binary again, with
//! `TCPNET_BENCH_CHILD` set) inside that namespace; a child checks it is in
//! the parent's private namespace before it does anything. Nothing here
//! asserts on wall time: figures are printed, never checked.
//!
//! The baseline is what an application would write on plain tokio: a
//! `TcpStream` pair on 127.0.0.1 with `TCP_NODELAY`, frames of a u32
//! big-endian length then the payload, written through an 8 KiB `BufWriter`
//! and decoded from a
//! `BytesMut` read buffer managed the way tokio-util's `FramedRead` does it.
//! Both sides run on the same runtime: tokio multi-thread, 2 workers.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::future::Future;
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use tcpnet::{Connection, Service, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

/// Worker threads of every runtime in the suite (the issue's 2-core setup).
const WORKERS: usize = 2;
/// Every node and every baseline socket listens here, in its namespace.
const LISTEN_ADDR: &str = "127.0.0.1";
/// The baseline refuses frames over this, as tcpnet does by default.
const MAX_FRAME: usize = tcpnet::limits::DEFAULT_MAX_FRAME_LEN;
/// The baseline's write buffer (tcpnet's `FramedWrite` flushes at 8 KiB too).
const WRITE_BUF: usize = 8 * 1024;
/// Bound on any one step, against hangs (not a performance check).
const DEADLINE: Duration = Duration::from_secs(300);
/// Peers of the node whose memory and CPU are measured with links.
const IDLE_PEERS: usize = 63;
/// Set in a child process: which idle node to be (`tcpnet` or `baseline`).
const CHILD_ENV: &str = "TCPNET_BENCH_CHILD";
/// The parent's network namespace, which a child must find itself in.
const NETNS_ENV: &str = "TCPNET_BENCH_NETNS";
/// The host's network namespace, which a child must not be in.
const HOST_NETNS_ENV: &str = "TCPNET_BENCH_HOST_NETNS";
const CLUSTER_ENV: &str = "TCPNET_BENCH_CLUSTER";

// ---------------------------------------------------------------------------
// Options

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Section {
    Throughput,
    Latency,
    Fanout,
    Formation,
    Memory,
    /// Items 1 and 2 again, with the cluster secret on.
    Secret,
}

const SECTIONS: [Section; 6] = [
    Section::Throughput,
    Section::Latency,
    Section::Fanout,
    Section::Formation,
    Section::Memory,
    Section::Secret,
];

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Throughput => "throughput",
            Section::Latency => "latency",
            Section::Fanout => "fanout",
            Section::Formation => "formation",
            Section::Memory => "memory",
            Section::Secret => "secret",
        }
    }
}

/// Which tcpnet is measured: open links, or links sealed with the cluster
/// secret (the `secret` section, and `--secret` for every section).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Plain,
    Secret,
}

/// The cluster secret of the `Secret` variant.
const BENCH_KEY: &str = "benchmark-suite-cluster-secret-0123456789";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Both,
    Tcpnet,
    Baseline,
}

impl Side {
    fn tcpnet(self) -> bool {
        self != Side::Baseline
    }
    fn baseline(self) -> bool {
        self != Side::Tcpnet
    }
}

#[derive(Clone, Debug)]
struct Config {
    quick: bool,
    sections: Vec<Section>,
    out: PathBuf,
    side: Side,
    variant: Variant,
    sizes: Vec<usize>,
    msgs: Option<usize>,
    runs: Option<usize>,
    rtts: Option<usize>,
    idle_secs: Option<u64>,
    /// Formation sizes to run (16 is the late joiner's case); `None`: all.
    nodes: Option<Vec<usize>>,
    args: Vec<String>,
}

const USAGE: &str =
    "usage: cargo bench --bench suite -- [--quick] [--only SECTION,..] [--out DIR] \
[--side tcpnet|baseline] [--sizes B,..] [--msgs N] [--runs N] [--rtts N] [--idle-secs N] \
[--nodes 2,8,16,32,64] [--secret]
sections: throughput, latency, fanout, formation, memory, secret";

impl Config {
    fn parse() -> Config {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut cfg = Config {
            quick: false,
            sections: SECTIONS.to_vec(),
            out: PathBuf::from("target/bench"),
            side: Side::Both,
            variant: Variant::Plain,
            sizes: vec![64, 1024, 64 * 1024, 1024 * 1024],
            msgs: None,
            runs: None,
            rtts: None,
            idle_secs: None,
            nodes: None,
            args: args.clone(),
        };
        let mut it = args.into_iter();
        let num = |v: Option<String>, what: &str| -> usize {
            v.and_then(|s| s.replace('_', "").parse().ok())
                .unwrap_or_else(|| die(&format!("{what} needs a number")))
        };
        while let Some(a) = it.next() {
            match a.as_str() {
                // `cargo bench` passes `--bench` to every bench target.
                "--bench" => {}
                "--quick" => cfg.quick = true,
                "--only" => {
                    let list = it.next().unwrap_or_else(|| die("--only needs sections"));
                    cfg.sections = list
                        .split(',')
                        .map(|s| {
                            *SECTIONS
                                .iter()
                                .find(|x| x.name() == s.trim())
                                .unwrap_or_else(|| die(&format!("unknown section {s}")))
                        })
                        .collect();
                }
                "--out" => cfg.out = it.next().unwrap_or_else(|| die("--out needs a dir")).into(),
                "--side" => {
                    cfg.side = match it.next().as_deref() {
                        Some("tcpnet") => Side::Tcpnet,
                        Some("baseline") => Side::Baseline,
                        Some("both") => Side::Both,
                        _ => die("--side needs tcpnet, baseline or both"),
                    }
                }
                "--sizes" => {
                    let list = it.next().unwrap_or_else(|| die("--sizes needs sizes"));
                    cfg.sizes = list
                        .split(',')
                        .map(|s| num(Some(s.into()), "--sizes"))
                        .collect();
                }
                "--msgs" => cfg.msgs = Some(num(it.next(), "--msgs")),
                "--nodes" => {
                    let list = it.next().unwrap_or_else(|| die("--nodes needs counts"));
                    cfg.nodes = Some(
                        list.split(',')
                            .map(|s| num(Some(s.into()), "--nodes"))
                            .collect(),
                    );
                }
                "--runs" => cfg.runs = Some(num(it.next(), "--runs").max(1)),
                "--rtts" => cfg.rtts = Some(num(it.next(), "--rtts").max(1)),
                "--idle-secs" => cfg.idle_secs = Some(num(it.next(), "--idle-secs").max(1) as u64),
                "--secret" => cfg.variant = Variant::Secret,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => die(&format!("unknown argument {other}")),
            }
        }
        cfg
    }

    fn mode(&self) -> &'static str {
        if self.quick {
            "quick"
        } else {
            "full"
        }
    }
}

fn die(msg: &str) -> ! {
    eprintln!("suite: {msg}\n{USAGE}");
    std::process::exit(2);
}

/// The settings of every tcpnet node of the suite.
fn node_settings(cluster: &str, variant: Variant) -> Settings {
    match variant {
        Variant::Plain => Settings::new(cluster),
        Variant::Secret => Settings::new(cluster).secret(BENCH_KEY),
    }
}

// ---------------------------------------------------------------------------
// Results

/// What a figure is held to.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// tcpnet / baseline at least this.
    RatioAtLeast(f64),
    /// tcpnet / baseline at most this.
    RatioAtMost(f64),
    /// tcpnet's figure at most this (in the row's unit).
    AtMost(f64),
    /// tcpnet's figure under this (in the row's unit).
    Below(f64),
}

#[derive(Clone, Debug)]
struct Row {
    section: &'static str,
    measure: String,
    /// The message size in bytes, node count, … (for scripts).
    param: String,
    unit: &'static str,
    tcpnet: Option<f64>,
    baseline: Option<f64>,
    target: Option<Target>,
    setup: String,
    /// Every run's figure, in the row's unit (for `samples.csv`).
    samples: Samples,
}

#[derive(Clone, Debug, Default)]
struct Samples {
    tcpnet: Vec<f64>,
    baseline: Vec<f64>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        match (self.tcpnet, self.baseline) {
            (Some(t), Some(b)) if b > 0.0 => Some(t / b),
            _ => None,
        }
    }

    fn met(&self) -> Option<bool> {
        let t = self.tcpnet?;
        Some(match self.target? {
            Target::RatioAtLeast(r) => self.ratio()? >= r,
            Target::RatioAtMost(r) => self.ratio()? <= r,
            Target::AtMost(v) => t <= v,
            Target::Below(v) => t < v,
        })
    }

    fn target_text(&self) -> String {
        match self.target {
            None => String::new(),
            Some(Target::RatioAtLeast(r)) => format!("ratio ≥ {r}"),
            Some(Target::RatioAtMost(r)) => format!("ratio ≤ {r}"),
            Some(Target::AtMost(v)) => format!("≤ {}", fmt_value(v, self.unit)),
            Some(Target::Below(v)) => format!("< {}", fmt_value(v, self.unit)),
        }
    }
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "msg/s" if v >= 1e6 => format!("{:.2} M msg/s", v / 1e6),
        "msg/s" => format!("{:.0} k msg/s", v / 1e3),
        "MB/s" if v >= 100.0 => format!("{v:.0} MB/s"),
        "MB/s" => format!("{v:.1} MB/s"),
        "µs" => format!("{v:.1} µs"),
        "ms" if v >= 10.0 => format!("{v:.1} ms"),
        "ms" => format!("{v:.2} ms"),
        "MiB" => format!("{v:.2} MiB"),
        "KiB" => format!("{v:.1} KiB"),
        "% of a core" => format!("{v:.3} %"),
        _ => format!("{v} {unit}"),
    }
}

/// Three decimals below 10, so a ratio just under a target does not print
/// as the target itself.
fn fmt_ratio(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.1}")
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("—".into(), |v| fmt_value(v, unit))
}

struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn markdown(&self, header: &str) -> String {
        let mut s = String::new();
        s.push_str(header);
        s.push_str(
            "\n| section | measure | tcpnet | baseline | tcpnet / baseline | target | met | setup |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.section,
                r.measure,
                opt(r.tcpnet, r.unit),
                opt(r.baseline, r.unit),
                r.ratio().map_or("—".into(), fmt_ratio),
                r.target_text(),
                match r.met() {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "—",
                },
                r.setup,
            );
        }
        if !self.notes.is_empty() {
            s.push_str("\nSetup:\n\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }

    /// One line per run of every figure that has runs.
    fn samples_csv(&self) -> String {
        let mut s = String::from("section,measure,param,unit,side,run,value\n");
        for r in &self.rows {
            for (side, v) in [
                ("tcpnet", &r.samples.tcpnet),
                ("baseline", &r.samples.baseline),
            ] {
                for (i, x) in v.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "{},\"{}\",{},\"{}\",{side},{},{x}",
                        r.section,
                        r.measure,
                        r.param,
                        r.unit,
                        i + 1
                    );
                }
            }
        }
        s
    }

    fn csv(&self) -> String {
        let mut s =
            String::from("section,measure,param,unit,tcpnet,baseline,ratio,target,met,setup\n");
        let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
        let q = |t: &str| format!("\"{}\"", t.replace('"', "\"\""));
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{}",
                r.section,
                q(&r.measure),
                r.param,
                q(r.unit),
                num(r.tcpnet),
                num(r.baseline),
                num(r.ratio()),
                q(&r.target_text()),
                r.met().map_or("", |m| if m { "yes" } else { "no" }),
                q(&r.setup),
            );
        }
        s
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MIN, f64::max)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn size_name(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------
// Namespaces and runtimes

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `f` on a thread of its own in a fresh private network namespace
/// (panics, never falls back to the host's network, if one cannot be made),
/// with a runtime built there, so its workers are in the namespace too.
fn in_netns<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&Runtime) -> T + Send + 'static,
{
    std::thread::spawn(move || {
        common::enter_private_netns();
        let rt = runtime();
        let out = f(&rt);
        rt.shutdown_timeout(Duration::from_secs(2));
        out
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

// ---------------------------------------------------------------------------
// tcpnet nodes

/// `n` nodes of `cluster` whose `listen` calls are issued together.
fn new_nodes(cluster: &str, n: usize, variant: Variant) -> Vec<Service> {
    (0..n)
        .map(|_| Service::new(node_settings(cluster, variant)).expect("settings"))
        .collect()
}

async fn listen_all(nodes: &[Service]) {
    let started = futures::future::join_all(nodes.iter().map(|s| s.listen(0, LISTEN_ADDR))).await;
    for r in started {
        r.expect("listen");
    }
}

/// `n` nodes of `cluster`, started together and fully meshed.
async fn meshed_nodes(cluster: &str, n: usize, variant: Variant) -> Vec<Service> {
    let nodes = new_nodes(cluster, n, variant);
    listen_all(&nodes).await;
    common::full_mesh(&nodes).await;
    nodes
}

/// What `node` holds to `peer`.
fn link_to(node: &Service, peer: &Service) -> Connection {
    node.connections()
        .into_iter()
        .find(|c| c.peer_id() == peer.id())
        .expect("a link to the peer")
}

/// Sends one message to every link of a node. tcpnet has no broadcast call
/// yet; when it has one, this is the single place to call it instead.
async fn broadcast(links: &[tcpnet::Sender], msg: &Bytes) {
    for l in links {
        l.send(msg.clone()).await.expect("send");
    }
}

/// Reads `n` messages of `len` bytes from `rx`, then hands it back.
async fn tcpnet_receive(mut rx: Connection, n: usize, len: usize) -> Connection {
    let mut bytes = 0;
    for _ in 0..n {
        bytes += rx.next().await.expect("link closed during the run").len();
    }
    assert_eq!(bytes, n * len, "tcpnet delivered other sizes");
    rx
}

// ---------------------------------------------------------------------------
// The baseline: plain tokio TCP with a length-prefixed framing of its own

/// The write side: a u32 big-endian length, then the payload, through an
/// 8 KiB buffer.
struct PlainWriter {
    wr: BufWriter<OwnedWriteHalf>,
}

impl PlainWriter {
    fn new(wr: OwnedWriteHalf) -> Self {
        PlainWriter {
            wr: BufWriter::with_capacity(WRITE_BUF, wr),
        }
    }

    async fn write_frame(&mut self, payload: &[u8]) {
        assert!(payload.len() <= MAX_FRAME);
        self.wr
            .write_all(&(payload.len() as u32).to_be_bytes())
            .await
            .expect("write");
        self.wr.write_all(payload).await.expect("write");
    }

    async fn flush(&mut self) {
        self.wr.flush().await.expect("flush");
    }
}

/// The read side: decodes frames from a `BytesMut`, reserving as tokio-util's
/// `FramedRead` and tcpnet's codec do; each message is a `Bytes` of its own.
struct PlainReader {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

impl PlainReader {
    fn new(rd: OwnedReadHalf) -> Self {
        PlainReader {
            rd,
            buf: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// The next message, or `None` at end of stream.
    async fn read_frame(&mut self) -> Option<Bytes> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
                assert!(len <= MAX_FRAME, "frame too large");
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Some(self.buf.split_to(len).freeze());
                }
                self.buf.reserve(4 + len - self.buf.len());
            }
            self.buf.reserve(1);
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

/// One plain TCP connection on loopback: (dialer's ends, acceptor's ends).
async fn plain_pair() -> ((PlainReader, PlainWriter), (PlainReader, PlainWriter)) {
    let listener = TcpListener::bind((LISTEN_ADDR, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let ends = |s: TcpStream| {
        s.set_nodelay(true).expect("nodelay");
        let (rd, wr) = s.into_split();
        (PlainReader::new(rd), PlainWriter::new(wr))
    };
    (
        ends(dialed.expect("connect")),
        ends(accepted.expect("accept").0),
    )
}

async fn plain_receive(mut rx: PlainReader, n: usize, len: usize) -> PlainReader {
    let mut bytes = 0;
    for _ in 0..n {
        bytes += rx.read_frame().await.expect("closed during the run").len();
    }
    assert_eq!(bytes, n * len, "the baseline delivered other sizes");
    rx
}

// ---------------------------------------------------------------------------
// 1. One-link throughput

fn throughput_count(size: usize, quick: bool) -> usize {
    let full = match size {
        s if s <= 64 => 1_000_000,
        s if s <= 1024 => 400_000,
        s if s <= 64 * 1024 => 16_000,
        _ => 1_000,
    };
    if quick {
        (full / 20).max(10)
    } else {
        full
    }
}

fn throughput(cfg: &Config) -> Vec<Row> {
    let cfg = cfg.clone();
    in_netns(move |rt| rt.block_on(throughput_async(cfg)))
}

async fn throughput_async(cfg: Config) -> Vec<Row> {
    let runs = cfg.runs.unwrap_or(if cfg.quick { 1 } else { 5 });
    let mut pair = None;
    if cfg.side.tcpnet() {
        let nodes = meshed_nodes("bench-throughput", 2, cfg.variant).await;
        let (tx, rx) = (link_to(&nodes[0], &nodes[1]), link_to(&nodes[1], &nodes[0]));
        pair = Some((nodes, tx.sender(), tx, Some(rx)));
    }
    let mut plain = None;
    if cfg.side.baseline() {
        let ((_, w), (r, _)) = plain_pair().await;
        plain = Some((Some(w), Some(r)));
    }
    let mut rows = Vec::new();
    for &size in &cfg.sizes {
        let n = cfg
            .msgs
            .unwrap_or_else(|| throughput_count(size, cfg.quick));
        let payload = Bytes::from(vec![0xa5u8; size]);
        let (mut t_secs, mut b_secs) = (Vec::new(), Vec::new());
        // Runs alternate between the two, so a change in the machine's load
        // falls on both.
        for run in 0..runs {
            if let Some((_, tx, _, rx_slot)) = pair.as_mut() {
                let rx = rx_slot.take().expect("rx");
                let recv = tokio::spawn(tcpnet_receive(rx, n, size));
                let t0 = Instant::now();
                let (tx, p) = (tx.clone(), payload.clone());
                let send = tokio::spawn(async move {
                    for _ in 0..n {
                        tx.send(p.clone()).await.expect("send");
                    }
                });
                within("tcpnet throughput", send).await.expect("sender");
                *rx_slot = Some(within("tcpnet throughput", recv).await.expect("receiver"));
                t_secs.push(t0.elapsed().as_secs_f64());
            }
            if let Some((w_slot, r_slot)) = plain.as_mut() {
                let (mut w, r) = (w_slot.take().expect("w"), r_slot.take().expect("r"));
                let recv = tokio::spawn(plain_receive(r, n, size));
                let t0 = Instant::now();
                let p = payload.clone();
                let send = tokio::spawn(async move {
                    for _ in 0..n {
                        w.write_frame(&p).await;
                    }
                    w.flush().await;
                    w
                });
                *w_slot = Some(within("baseline throughput", send).await.expect("sender"));
                *r_slot = Some(within("baseline throughput", recv).await.expect("receiver"));
                b_secs.push(t0.elapsed().as_secs_f64());
            }
            eprintln!(
                "  throughput {} run {}/{runs}: tcpnet {} baseline {}",
                size_name(size),
                run + 1,
                t_secs.last().map_or("—".into(), |s| format!("{:.3} s", s)),
                b_secs.last().map_or("—".into(), |s| format!("{:.3} s", s)),
            );
        }
        let rate = |secs: &Vec<f64>| (!secs.is_empty()).then(|| n as f64 / median(secs));
        let (t, b) = (rate(&t_secs), rate(&b_secs));
        let mb = |r: Option<f64>| r.map(|r| r * size as f64 / 1e6);
        let ratio = if size >= 1024 { 0.9 } else { 0.7 };
        let setup = format!(
            "{} msgs of {} one way, median of {runs} run{}",
            count(n),
            size_name(size),
            if runs == 1 { "" } else { "s" }
        );
        let per_run = |secs: &Vec<f64>, scale: f64| -> Vec<f64> {
            secs.iter().map(|s| n as f64 / s * scale).collect()
        };
        let mb_scale = size as f64 / 1e6;
        for (measure, unit, t, b, scale) in [
            ("messages/s", "msg/s", t, b, 1.0),
            ("MB/s", "MB/s", mb(t), mb(b), mb_scale),
        ] {
            rows.push(Row {
                section: "1. throughput",
                measure: format!("{} {measure}", size_name(size)),
                param: size.to_string(),
                unit,
                tcpnet: t,
                baseline: b,
                target: Some(Target::RatioAtLeast(ratio)),
                setup: setup.clone(),
                samples: Samples {
                    tcpnet: per_run(&t_secs, scale),
                    baseline: per_run(&b_secs, scale),
                },
            });
        }
    }
    if let Some((nodes, ..)) = pair {
        common::close_all(&nodes).await;
    }
    rows
}

/// Item 6: throughput and latency again, with the secret on. Only the 64 KiB
/// throughput has a target (at least 0.5 of the baseline).
fn secret(cfg: &Config) -> Vec<Row> {
    let cfg = Config {
        variant: Variant::Secret,
        ..cfg.clone()
    };
    let mut rows = throughput(&cfg);
    rows.extend(latency(&cfg));
    for r in &mut rows {
        r.section = "6. secret";
        r.measure = format!("{} (secret)", r.measure);
        r.target = (r.param == (64 * 1024).to_string() && r.unit == "msg/s"
            || r.param == (64 * 1024).to_string() && r.unit == "MB/s")
            .then_some(Target::RatioAtLeast(0.5));
    }
    rows
}

// ---------------------------------------------------------------------------
// 2. Round-trip latency

fn latency(cfg: &Config) -> Vec<Row> {
    let cfg = cfg.clone();
    in_netns(move |rt| rt.block_on(latency_async(cfg)))
}

async fn latency_async(cfg: Config) -> Vec<Row> {
    const SIZE: usize = 64;
    let rtts = cfg.rtts.unwrap_or(if cfg.quick { 2_000 } else { 20_000 });
    let block = if cfg.quick { 500 } else { 1_000 }.min(rtts);
    let warmup = block;
    let payload = Bytes::from(vec![0x5au8; SIZE]);

    // tcpnet: node 0 pings, node 1 echoes every message back.
    let mut tcpnet_side = None;
    if cfg.side.tcpnet() {
        let nodes = meshed_nodes("bench-latency", 2, cfg.variant).await;
        let ping = link_to(&nodes[0], &nodes[1]);
        let mut echo = link_to(&nodes[1], &nodes[0]);
        let echo_task = tokio::spawn(async move {
            while let Some(m) = echo.next().await {
                if echo.send(m).await.is_err() {
                    break;
                }
            }
        });
        tcpnet_side = Some((nodes, Some(ping), echo_task));
    }
    // Baseline: the same over a plain connection, flushed per message.
    let mut plain_side = None;
    if cfg.side.baseline() {
        let ((r, w), (mut er, mut ew)) = plain_pair().await;
        let echo_task = tokio::spawn(async move {
            while let Some(m) = er.read_frame().await {
                ew.write_frame(&m).await;
                ew.flush().await;
            }
        });
        plain_side = Some((Some((r, w)), echo_task));
    }

    let (mut t_us, mut b_us) = (Vec::new(), Vec::new());
    let mut done = 0;
    let mut first = true;
    // Blocks alternate between the two; the first block of each is a
    // warm-up and not counted.
    while done < rtts {
        let k = if first {
            warmup
        } else {
            block.min(rtts - done)
        };
        if let Some((_, slot, _)) = tcpnet_side.as_mut() {
            let mut ping: Connection = slot.take().expect("ping");
            let p = payload.clone();
            let samples = tokio::spawn(async move {
                let mut v = Vec::with_capacity(k);
                for _ in 0..k {
                    let t0 = Instant::now();
                    ping.send(p.clone()).await.expect("send");
                    let m = ping.next().await.expect("echo");
                    v.push(t0.elapsed().as_secs_f64() * 1e6);
                    assert_eq!(m.len(), SIZE);
                }
                (v, ping)
            });
            let (v, ping) = within("tcpnet latency", samples).await.expect("pinger");
            *slot = Some(ping);
            if !first {
                t_us.extend(v);
            }
        }
        if let Some((slot, _)) = plain_side.as_mut() {
            let (mut r, mut w): (PlainReader, PlainWriter) = slot.take().expect("ping");
            let p = payload.clone();
            let samples = tokio::spawn(async move {
                let mut v = Vec::with_capacity(k);
                for _ in 0..k {
                    let t0 = Instant::now();
                    w.write_frame(&p).await;
                    w.flush().await;
                    let m = r.read_frame().await.expect("echo");
                    v.push(t0.elapsed().as_secs_f64() * 1e6);
                    assert_eq!(m.len(), SIZE);
                }
                (v, r, w)
            });
            let (v, r, w) = within("baseline latency", samples).await.expect("pinger");
            *slot = Some((r, w));
            if !first {
                b_us.extend(v);
            }
        }
        if !first {
            done += k;
        }
        first = false;
        eprintln!("  latency: {done}/{rtts} round trips each");
    }
    if let Some((nodes, _, echo)) = tcpnet_side {
        common::close_all(&nodes).await;
        echo.abort();
    }
    if let Some((_, echo)) = plain_side {
        echo.abort();
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| percentile(v, p))
    };
    let setup = format!(
        "{} round trips of 64 B, one at a time, after {} of warm-up; blocks of {} alternate",
        count(rtts),
        count(warmup),
        count(block)
    );
    let mut rows = Vec::new();
    for (p, target) in [(50.0, Some(Target::RatioAtMost(1.2))), (99.0, None)] {
        rows.push(Row {
            section: "2. latency",
            measure: format!("64 B round trip p{p:.0}"),
            param: format!("p{p:.0}"),
            unit: "µs",
            tcpnet: pct(&mut t_us, p),
            baseline: pct(&mut b_us, p),
            target,
            setup: setup.clone(),
            samples: Samples::default(),
        });
    }
    rows
}

// ---------------------------------------------------------------------------
// 3. Broadcast fan-out

const FANOUT_PEERS: usize = 8;

fn fanout(cfg: &Config) -> Vec<Row> {
    let cfg = cfg.clone();
    in_netns(move |rt| rt.block_on(fanout_async(cfg)))
}

async fn fanout_async(cfg: Config) -> Vec<Row> {
    let runs = cfg.runs.unwrap_or(if cfg.quick { 1 } else { 3 });
    // tcpnet: a full mesh of 1 + 8 nodes (the peers' links among themselves
    // stay idle); node 0 sends every message to each of its 8 links.
    let mut tcpnet_side = None;
    if cfg.side.tcpnet() {
        let nodes = meshed_nodes("bench-fanout", 1 + FANOUT_PEERS, cfg.variant).await;
        let senders: Vec<tcpnet::Sender> = nodes[1..]
            .iter()
            .map(|p| link_to(&nodes[0], p).sender())
            .collect();
        let receivers: Vec<Option<Connection>> = nodes[1..]
            .iter()
            .map(|p| Some(link_to(p, &nodes[0])))
            .collect();
        tcpnet_side = Some((nodes, senders, receivers));
    }
    // Baseline: one sender holding 8 plain connections.
    let mut plain_side = None;
    if cfg.side.baseline() {
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..FANOUT_PEERS {
            let ((_, w), (r, _)) = plain_pair().await;
            writers.push(w);
            readers.push(Some(r));
        }
        plain_side = Some((Some(writers), readers));
    }
    let mut rows = Vec::new();
    for &size in &[64usize, 1024] {
        let n = cfg
            .msgs
            .unwrap_or(if size <= 64 { 100_000 } else { 50_000 } / if cfg.quick { 20 } else { 1 });
        let payload = Bytes::from(vec![0x3cu8; size]);
        let (mut t_secs, mut b_secs) = (Vec::new(), Vec::new());
        for run in 0..runs {
            if let Some((_, senders, receivers)) = tcpnet_side.as_mut() {
                let recv: Vec<_> = receivers
                    .iter_mut()
                    .map(|r| tokio::spawn(tcpnet_receive(r.take().expect("rx"), n, size)))
                    .collect();
                let t0 = Instant::now();
                let (senders, p) = (senders.clone(), payload.clone());
                let send = tokio::spawn(async move {
                    for _ in 0..n {
                        broadcast(&senders, &p).await;
                    }
                });
                within("tcpnet fan-out", send).await.expect("sender");
                for (slot, r) in receivers.iter_mut().zip(recv) {
                    *slot = Some(within("tcpnet fan-out", r).await.expect("receiver"));
                }
                t_secs.push(t0.elapsed().as_secs_f64());
            }
            if let Some((w_slot, receivers)) = plain_side.as_mut() {
                let recv: Vec<_> = receivers
                    .iter_mut()
                    .map(|r| tokio::spawn(plain_receive(r.take().expect("rx"), n, size)))
                    .collect();
                let t0 = Instant::now();
                let (mut ws, p) = (w_slot.take().expect("writers"), payload.clone());
                let send = tokio::spawn(async move {
                    for _ in 0..n {
                        for w in ws.iter_mut() {
                            w.write_frame(&p).await;
                        }
                    }
                    for w in ws.iter_mut() {
                        w.flush().await;
                    }
                    ws
                });
                *w_slot = Some(within("baseline fan-out", send).await.expect("sender"));
                for (slot, r) in receivers.iter_mut().zip(recv) {
                    *slot = Some(within("baseline fan-out", r).await.expect("receiver"));
                }
                b_secs.push(t0.elapsed().as_secs_f64());
            }
            eprintln!(
                "  fan-out {} run {}/{runs}: tcpnet {} baseline {}",
                size_name(size),
                run + 1,
                t_secs.last().map_or("—".into(), |s| format!("{:.3} s", s)),
                b_secs.last().map_or("—".into(), |s| format!("{:.3} s", s)),
            );
        }
        let delivered = (n * FANOUT_PEERS) as f64;
        let rate = |secs: &Vec<f64>| (!secs.is_empty()).then(|| delivered / median(secs));
        let per_run = |secs: &Vec<f64>| secs.iter().map(|s| delivered / s).collect();
        rows.push(Row {
            section: "3. fan-out",
            measure: format!("1 → 8 peers, {} delivered messages/s", size_name(size)),
            param: size.to_string(),
            unit: "msg/s",
            tcpnet: rate(&t_secs),
            baseline: rate(&b_secs),
            target: None,
            setup: format!(
                "{} msgs × 8 links, send to each link in turn, median of {runs} run{}",
                count(n),
                if runs == 1 { "" } else { "s" }
            ),
            samples: Samples {
                tcpnet: per_run(&t_secs),
                baseline: per_run(&b_secs),
            },
        });
    }
    if let Some((nodes, ..)) = tcpnet_side {
        common::close_all(&nodes).await;
    }
    rows
}

// ---------------------------------------------------------------------------
// 4. Mesh formation

/// One formation run of tcpnet in the caller's (fresh) namespace: the time
/// from issuing all `listen` calls together to a full mesh, and, if asked,
/// the time from a late joiner's `listen` to its link to every node.
async fn tcpnet_formation(n: usize, late: bool, variant: Variant) -> (f64, Option<f64>) {
    let nodes = new_nodes("bench-formation", n, variant);
    let t0 = Instant::now();
    listen_all(&nodes).await;
    common::full_mesh(&nodes).await;
    let mesh = t0.elapsed().as_secs_f64() * 1e3;
    let mut all = nodes;
    let mut joined = None;
    if late {
        let joiner = new_nodes("bench-formation", 1, variant)
            .pop()
            .expect("node");
        let t1 = Instant::now();
        joiner.listen(0, LISTEN_ADDR).await.expect("listen");
        all.push(joiner);
        common::full_mesh(&all).await;
        joined = Some(t1.elapsed().as_secs_f64() * 1e3);
    }
    common::close_all(&all).await;
    (mesh, joined)
}

/// A plain node of the baseline: a listener that accepts `expect` links.
async fn plain_node(expect: usize, done: mpsc::UnboundedSender<TcpStream>) -> std::net::SocketAddr {
    let l = TcpListener::bind((LISTEN_ADDR, 0)).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        for _ in 0..expect {
            let (s, _) = l.accept().await.expect("accept");
            s.set_nodelay(true).expect("nodelay");
            let _ = done.send(s);
        }
    });
    addr
}

fn plain_dial(to: std::net::SocketAddr, done: mpsc::UnboundedSender<TcpStream>) {
    tokio::spawn(async move {
        let s = TcpStream::connect(to).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let _ = done.send(s);
    });
}

/// The baseline's formation: plain TCP with every address known (no
/// discovery, no handshake), one connect per pair; the clock starts before
/// the listeners are bound and stops when both ends of every pair hold
/// their socket. The late joiner binds, then dials each of the `n` nodes.
async fn plain_formation(n: usize, late: bool) -> (f64, Option<f64>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut held = Vec::new();
    let t0 = Instant::now();
    // Node i accepts from the i nodes before it and dials the ones after.
    let addrs =
        futures::future::join_all((0..n).map(|i| plain_node(i + late as usize, tx.clone()))).await;
    for i in 0..n {
        for &to in &addrs[i + 1..] {
            plain_dial(to, tx.clone());
        }
    }
    for _ in 0..n * (n - 1) {
        held.push(within("baseline mesh", rx.recv()).await.expect("socket"));
    }
    let mesh = t0.elapsed().as_secs_f64() * 1e3;
    let mut joined = None;
    if late {
        let t1 = Instant::now();
        let _joiner = plain_node(0, tx.clone()).await;
        for &to in &addrs {
            plain_dial(to, tx.clone());
        }
        for _ in 0..2 * n {
            held.push(
                within("baseline late joiner", rx.recv())
                    .await
                    .expect("socket"),
            );
        }
        joined = Some(t1.elapsed().as_secs_f64() * 1e3);
    }
    (mesh, joined)
}

fn formation(cfg: &Config) -> Vec<Row> {
    const LATE_TO: usize = 16;
    // (nodes, full runs, quick runs); 16 is for the late joiner.
    let plan: [(usize, usize, usize); 5] = [
        (2, 9, 3),
        (8, 9, 3),
        (LATE_TO, 9, 3),
        (32, 7, 2),
        (64, 5, 1),
    ];
    let mut rows = Vec::new();
    for (n, full, quick) in plan {
        if cfg.nodes.as_ref().is_some_and(|l| !l.contains(&n)) {
            continue;
        }
        let runs = cfg.runs.unwrap_or(if cfg.quick { quick } else { full });
        let late = n == LATE_TO;
        let (mut tm, mut bm, mut tl, mut bl) = (vec![], vec![], vec![], vec![]);
        for run in 0..runs {
            // Each run in a fresh namespace: no mDNS cache of earlier runs.
            let (side, variant) = (cfg.side, cfg.variant);
            let (t, b) = in_netns(move |rt| {
                rt.block_on(async move {
                    let b = if side.baseline() {
                        Some(within("baseline formation", plain_formation(n, late)).await)
                    } else {
                        None
                    };
                    let t = if side.tcpnet() {
                        Some(within("tcpnet formation", tcpnet_formation(n, late, variant)).await)
                    } else {
                        None
                    };
                    (t, b)
                })
            });
            if let Some((m, l)) = t {
                tm.push(m);
                tl.extend(l);
            }
            if let Some((m, l)) = b {
                bm.push(m);
                bl.extend(l);
            }
            let ms = |r: Option<(f64, Option<f64>)>| match r {
                None => "—".to_string(),
                Some((m, None)) => format!("mesh {m:.2} ms"),
                Some((m, Some(l))) => format!("mesh {m:.2} ms, late joiner {l:.2} ms"),
            };
            eprintln!(
                "  formation of {n} run {}/{runs}: tcpnet {}; baseline {}",
                run + 1,
                ms(t),
                ms(b)
            );
        }
        let stat = |v: &Vec<f64>, f: fn(&[f64]) -> f64| (!v.is_empty()).then(|| f(v));
        let runs_text = format!("{runs} run{}", if runs == 1 { "" } else { "s" });
        if late {
            for (what, f) in [("median", median as fn(&[f64]) -> f64), ("max", max)] {
                rows.push(Row {
                    section: "4. formation",
                    measure: format!("late joiner linked to all of {n}, {what}"),
                    param: format!("late{n}-{what}"),
                    unit: "ms",
                    tcpnet: stat(&tl, f),
                    baseline: stat(&bl, f),
                    target: Some(Target::AtMost(100.0)),
                    setup: format!("{runs_text}, each in a fresh namespace"),
                    samples: Samples {
                        tcpnet: tl.clone(),
                        baseline: bl.clone(),
                    },
                });
            }
            continue;
        }
        for (what, f) in [("median", median as fn(&[f64]) -> f64), ("max", max)] {
            rows.push(Row {
                section: "4. formation",
                measure: format!("full mesh of {n}, {what}"),
                param: format!("mesh{n}-{what}"),
                unit: "ms",
                tcpnet: stat(&tm, f),
                baseline: stat(&bm, f),
                target: (n == 32).then_some(Target::AtMost(300.0)),
                setup: format!("{runs_text}, each in a fresh namespace"),
                samples: Samples {
                    tcpnet: tm.clone(),
                    baseline: bm.clone(),
                },
            });
        }
    }
    rows
}

// ---------------------------------------------------------------------------
// 5. Memory and CPU of an idle node

/// A figure reported by an idle child process.
#[derive(Debug, Clone, Copy)]
struct Stat {
    rss_kib: f64,
    cpu_ns: f64,
    links: usize,
}

/// An idle node in a child process: this binary again, with `CHILD_ENV` set.
struct ChildNode {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl ChildNode {
    /// Starts one; call from the namespace's thread, so the child is in it.
    fn spawn(kind: &str, cluster: &str) -> ChildNode {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .env(CHILD_ENV, kind)
            .env(CLUSTER_ENV, cluster)
            .env(NETNS_ENV, netns_id("/proc/thread-self/ns/net"))
            // The process's main thread never leaves the host's namespace.
            .env(HOST_NETNS_ENV, netns_id("/proc/self/ns/net"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("child ready");
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("child {kind} did not start: {line:?}"));
        ChildNode {
            child,
            stdin,
            stdout,
            port,
        }
    }

    fn stat(&mut self) -> Stat {
        writeln!(self.stdin, "stat").expect("ask child");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("child stat");
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["stat", rss, cpu, links] => Stat {
                rss_kib: rss.parse().expect("rss"),
                cpu_ns: cpu.parse().expect("cpu"),
                links: links.parse().expect("links"),
            },
            _ => panic!("bad stat line from child: {line:?}"),
        }
    }

    /// Polls until the child holds `n` links.
    fn wait_links(&mut self, n: usize) -> Stat {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.stat();
            if s.links == n {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "child linked to {} of {n}",
                s.links
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

fn netns_id(path: &str) -> String {
    std::fs::read_link(path)
        .expect("read netns link")
        .to_string_lossy()
        .into_owned()
}

fn memory(cfg: &Config) -> (Vec<Row>, String) {
    let cfg = cfg.clone();
    in_netns(move |rt| memory_in_netns(rt, &cfg))
}

/// Measures two idle children side by side (tcpnet, baseline): alone, then
/// with 63 idle links each.
fn memory_in_netns(rt: &Runtime, cfg: &Config) -> (Vec<Row>, String) {
    let idle = Duration::from_secs(cfg.idle_secs.unwrap_or(if cfg.quick { 5 } else { 60 }));
    let settle = Duration::from_secs(if cfg.quick { 2 } else { 5 });
    const CLUSTER: &str = "bench-idle";
    let mut t = cfg
        .side
        .tcpnet()
        .then(|| ChildNode::spawn("tcpnet", CLUSTER));
    let mut b = cfg
        .side
        .baseline()
        .then(|| ChildNode::spawn("baseline", CLUSTER));

    // Alone: settle, then watch the CPU clock over the idle window.
    let window = |t: &mut Option<ChildNode>, b: &mut Option<ChildNode>| {
        std::thread::sleep(settle);
        let t0 = t.as_mut().map(ChildNode::stat);
        let b0 = b.as_mut().map(ChildNode::stat);
        std::thread::sleep(idle);
        let t1 = t.as_mut().map(ChildNode::stat);
        let b1 = b.as_mut().map(ChildNode::stat);
        let cpu = |s0: Option<Stat>, s1: Option<Stat>| {
            Some((s1?.cpu_ns - s0?.cpu_ns) / idle.as_nanos() as f64 * 100.0)
        };
        let rss = |s: Option<Stat>| s.map(|s| s.rss_kib);
        (rss(t1), rss(b1), cpu(t0, t1), cpu(b0, b1))
    };
    eprintln!("  memory: idle alone for {settle:?} + {idle:?}");
    let (t_rss0, b_rss0, t_cpu0, b_cpu0) = window(&mut t, &mut b);

    // Linked: 63 tcpnet nodes of this process join the child's cluster (a
    // mesh of 64); 63 plain connections go to the baseline child.
    eprintln!("  memory: linking {IDLE_PEERS} peers to each child");
    let peers = if t.is_some() {
        let peers = rt.block_on(async {
            let peers = new_nodes(CLUSTER, IDLE_PEERS, cfg.variant);
            listen_all(&peers).await;
            common::wait_until(&peers, "a mesh of 64", || {
                peers.iter().all(|p| p.connections().len() == IDLE_PEERS)
            })
            .await;
            peers
        });
        if let Some(t) = t.as_mut() {
            t.wait_links(IDLE_PEERS);
        }
        peers
    } else {
        Vec::new()
    };
    let mut plain_links = Vec::new();
    if let Some(b) = b.as_mut() {
        let port = b.port;
        plain_links = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..IDLE_PEERS {
                let s = TcpStream::connect((LISTEN_ADDR, port))
                    .await
                    .expect("connect");
                s.set_nodelay(true).expect("nodelay");
                v.push(s);
            }
            v
        });
        b.wait_links(IDLE_PEERS);
    }
    eprintln!("  memory: idle with {IDLE_PEERS} links for {settle:?} + {idle:?}");
    let (t_rss1, b_rss1, t_cpu1, b_cpu1) = window(&mut t, &mut b);

    // Still linked to all at the end?
    let t_links = t.as_mut().map(|c| c.stat().links);
    let b_links = b.as_mut().map(|c| c.stat().links);
    for c in [t, b].into_iter().flatten() {
        c.quit();
    }
    drop(plain_links);
    rt.block_on(common::close_all(&peers));

    let mib = |k: Option<f64>| k.map(|k| k / 1024.0);
    let per_link = |a: Option<f64>, z: Option<f64>| Some((z? - a?) / IDLE_PEERS as f64);
    let idle_text = format!("{} s", idle.as_secs());
    let rows = vec![
        Row {
            section: "5. memory",
            measure: "RSS of an idle node, no links".into(),
            param: "rss0".into(),
            unit: "MiB",
            tcpnet: mib(t_rss0),
            baseline: mib(b_rss0),
            target: Some(Target::Below(10.0)),
            setup: format!(
                "child process, VmRSS after {} s + {idle_text}",
                settle.as_secs()
            ),
            samples: Samples::default(),
        },
        Row {
            section: "5. memory",
            measure: format!("RSS of an idle node, {IDLE_PEERS} links"),
            param: "rss63".into(),
            unit: "MiB",
            tcpnet: mib(t_rss1),
            baseline: mib(b_rss1),
            target: None,
            setup: "the same child, mesh of 64".into(),
            samples: Samples::default(),
        },
        Row {
            section: "5. memory",
            measure: "RSS growth per idle link".into(),
            param: "per-link".into(),
            unit: "KiB",
            tcpnet: per_link(t_rss0, t_rss1),
            baseline: per_link(b_rss0, b_rss1),
            target: Some(Target::Below(64.0)),
            setup: format!("(RSS with {IDLE_PEERS} links − RSS alone) / {IDLE_PEERS}"),
            samples: Samples::default(),
        },
        Row {
            section: "5. memory",
            measure: "CPU of an idle node, no links".into(),
            param: "cpu0".into(),
            unit: "% of a core",
            tcpnet: t_cpu0,
            baseline: b_cpu0,
            target: Some(Target::Below(0.1)),
            setup: format!("process CPU clock over {idle_text}"),
            samples: Samples::default(),
        },
        Row {
            section: "5. memory",
            measure: format!("CPU of an idle node, {IDLE_PEERS} links"),
            param: "cpu63".into(),
            unit: "% of a core",
            tcpnet: t_cpu1,
            baseline: b_cpu1,
            target: None,
            setup: format!("process CPU clock over {idle_text}"),
            samples: Samples::default(),
        },
    ];
    let note = format!(
        "memory: each idle node is a child process (this binary, `{CHILD_ENV}`) with a tokio \
         runtime of {WORKERS} workers, listening on {LISTEN_ADDR}; tcpnet's is one `Service`, the \
         baseline's accepts plain connections, each read by a task with an 8 KiB buffer and an \
         8 KiB `BufWriter` held. Both run at once; each settles {} s, then RSS (VmRSS) is read and \
         the CPU clock (`CLOCK_PROCESS_CPUTIME_ID`) is watched for {idle_text}. Then {IDLE_PEERS} \
         tcpnet nodes in the parent join tcpnet's child (a mesh of 64 nodes) and {IDLE_PEERS} plain \
         connections reach the baseline's; the same again. Links held at the end: tcpnet {}, \
         baseline {}.",
        settle.as_secs(),
        t_links.map_or("—".into(), |l| l.to_string()),
        b_links.map_or("—".into(), |l| l.to_string()),
    );
    (rows, note)
}

/// An idle node in a child process, in the parent's private namespace.
/// Answers `stat` on stdin with `stat <VmRSS KiB> <CPU ns> <links>`; ends on
/// `quit` or end of input.
fn child_main(kind: &str) {
    // Never run outside the parent's private namespace (which holds only lo).
    let expected = std::env::var(NETNS_ENV).unwrap_or_default();
    let actual = netns_id("/proc/self/ns/net");
    assert_eq!(actual, expected, "child is not in the parent's namespace");
    let host = std::env::var(HOST_NETNS_ENV).unwrap_or_default();
    assert!(!host.is_empty(), "child needs {HOST_NETNS_ENV}");
    assert_ne!(actual, host, "child is in the host's network namespace");
    let ifs = std::fs::read_to_string("/proc/self/net/dev").expect("read net/dev");
    let names: Vec<&str> = ifs
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo"], "child's namespace must hold only lo");

    let rt = runtime();
    rt.block_on(async {
        let (quit_tx, quit_rx) = tokio::sync::oneshot::channel::<()>();
        match kind {
            "tcpnet" => {
                let cluster = std::env::var(CLUSTER_ENV).expect("cluster");
                let s = Service::new(node_settings(&cluster, Variant::Plain)).expect("settings");
                let addr = s.listen(0, LISTEN_ADDR).await.expect("listen");
                let node = s.clone();
                serve_stats(addr.port, move || node.connections().len(), quit_tx);
                let _ = quit_rx.await;
                s.close().await;
            }
            "baseline" => {
                let l = TcpListener::bind((LISTEN_ADDR, 0)).await.expect("bind");
                let port = l.local_addr().expect("addr").port();
                let live = Arc::new(AtomicUsize::new(0));
                let counted = live.clone();
                tokio::spawn(async move {
                    loop {
                        let (s, _) = l.accept().await.expect("accept");
                        s.set_nodelay(true).expect("nodelay");
                        let live = counted.clone();
                        live.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(async move {
                            let (rd, wr) = s.into_split();
                            let (mut r, _w) = (PlainReader::new(rd), PlainWriter::new(wr));
                            while r.read_frame().await.is_some() {}
                            live.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                });
                serve_stats(port, move || live.load(Ordering::SeqCst), quit_tx);
                let _ = quit_rx.await;
            }
            other => panic!("unknown child kind {other}"),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
}

/// Says `ready <port>`, then answers `stat` lines from stdin on a thread of
/// its own (blocked in `read` while idle, so it costs no CPU).
fn serve_stats(
    port: u16,
    links: impl Fn() -> usize + Send + 'static,
    quit: tokio::sync::oneshot::Sender<()>,
) {
    println!("ready {port}");
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line.as_deref().map(str::trim) {
                Ok("stat") => {
                    let status = std::fs::read_to_string("/proc/self/status").expect("status");
                    let rss = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next())
                        .expect("VmRSS");
                    println!("stat {rss} {} {}", process_cpu_ns(), links());
                }
                _ => break,
            }
        }
        let _ = quit.send(());
    });
}

/// CPU time of the whole process (every thread, live or ended), in ns.
fn process_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into the timespec we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

// ---------------------------------------------------------------------------
// Run everything

fn sh_out(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
/// binary with no arguments or libtest's, and gets no benchmark (a full run
/// takes minutes). Any other arguments (a profiler running the binary
/// directly) mean a run.
fn under_cargo_test() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    const LIBTEST: [&str; 9] = [
        "--nocapture",
        "--show-output",
        "--quiet",
        "--list",
        "--ignored",
        "--include-ignored",
        "--exact",
        "--test-threads",
        "--color",
    ];
    !args.iter().any(|a| a == "--bench")
        && args
            .first()
            .is_none_or(|a| LIBTEST.iter().any(|f| a.starts_with(f)))
}

fn main() {
    if let Ok(kind) = std::env::var(CHILD_ENV) {
        child_main(&kind);
        return;
    }
    if under_cargo_test() {
        eprintln!("suite: not run under `cargo test`; run `cargo bench --bench suite`");
        return;
    }
    let cfg = Config::parse();
    let load_before = loadavg();
    let started = Instant::now();
    let date = sh_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = sh_out("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "?".into());
    let dirty = sh_out("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());

    let mut report = Report {
        rows: Vec::new(),
        notes: Vec::new(),
    };
    for &section in &cfg.sections {
        eprintln!("suite: {} ({} run)", section.name(), cfg.mode());
        let rows = match section {
            Section::Throughput => throughput(&cfg),
            Section::Latency => latency(&cfg),
            Section::Fanout => fanout(&cfg),
            Section::Formation => formation(&cfg),
            Section::Memory => {
                let (rows, note) = memory(&cfg);
                report.notes.push(note);
                rows
            }
            Section::Secret => secret(&cfg),
        };
        report.rows.extend(rows);
    }
    let sections = |s: Section| cfg.sections.contains(&s);
    let mut notes = vec![format!(
        "every section in a private network namespace of its own holding only loopback; \
         nodes listen on {LISTEN_ADDR}; each section's runtime is tokio multi-thread with \
         {WORKERS} workers, shared by tcpnet and the baseline; tcpnet nodes have default \
         settings (queue of {} frames each way)",
        tcpnet::limits::DEFAULT_QUEUE_LEN,
    )];
    notes.push(
        "baseline: plain tokio `TcpStream`s with TCP_NODELAY, frames of a u32 BE length + \
         payload written through an 8 KiB `BufWriter` (flushed once at the end of a \
         throughput run, after every message for latency) and decoded from a `BytesMut` \
         (one `Bytes` per message)"
            .to_string(),
    );
    if sections(Section::Throughput) || sections(Section::Fanout) {
        notes.push(
            "throughput and fan-out: the clock runs from the first send until the receivers \
             hold every message; MB/s counts payload bytes (10^6); runs of tcpnet and the \
             baseline alternate; tcpnet sends with `Sender::send` and reads its `Connection` \
             stream; fan-out sends each message to the 8 links in turn (no broadcast call \
             in tcpnet yet) while 8 receivers read, in a full mesh of 9 nodes"
                .to_string(),
        );
    }
    if sections(Section::Formation) {
        notes.push(
            "formation: tcpnet's clock starts as all `listen` calls are issued together (so it \
             includes binding and starting mDNS) and stops when every node holds one link to \
             every other (the tests' `full_mesh` check); the late joiner's starts at its `listen` \
             and stops when all 17 hold a full mesh. The baseline is plain TCP with every address \
             known: no discovery, no handshake, one connect per pair; a lower bound, not a \
             like-for-like program. All nodes of a run share one process and the machine's cores"
                .to_string(),
        );
    }
    notes.push(format!(
        "tcpnet variant of sections 1 to 5: {:?}; section 6 runs 1 and 2 again with every \
         tcpnet node holding a cluster secret (Noise handshake, every frame sealed with \
         AES-256-GCM where both ends have AES hardware, as here, else ChaCha20-Poly1305); \
         the baseline stays plain TCP",
        cfg.variant
    ));
    report.notes.splice(0..0, notes);

    let elapsed = started.elapsed().as_secs();
    let header = format!(
        "tcpnet {} benchmark suite, {} run ({}), {date}\n\n\
         Machine: {cores} cores ({cpu}); load average before {load_before}, after {}; \
         commit {commit}{}; {elapsed} s in all. Command: `cargo bench --bench suite{}`\n",
        env!("CARGO_PKG_VERSION"),
        cfg.mode(),
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        },
        loadavg(),
        if dirty { " (with local changes)" } else { "" },
        if cfg.args.iter().any(|a| a != "--bench") {
            format!(
                " -- {}",
                cfg.args
                    .iter()
                    .filter(|a| *a != "--bench")
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        } else {
            String::new()
        },
    );
    let md = report.markdown(&header);
    println!("{md}");
    std::fs::create_dir_all(&cfg.out).expect("create the output dir");
    std::fs::write(cfg.out.join("results.md"), &md).expect("write results.md");
    std::fs::write(cfg.out.join("results.csv"), report.csv()).expect("write results.csv");
    std::fs::write(cfg.out.join("samples.csv"), report.samples_csv()).expect("write samples.csv");
    eprintln!(
        "suite: wrote results.md, results.csv (the table) and samples.csv (every run) to {}",
        cfg.out.display()
    );
}
