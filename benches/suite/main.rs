//! The benchmark suite: tcpnet and a plain tokio TCP baseline,
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
//!   `formation`, `memory`, `secret`, `mass` (default: all). `mass` launches
//!   demo processes: build them first (`cargo build --release --example demo`).
//! - `--out DIR`: where `results.md` (the table), `results.csv` (the same,
//!   for scripts) and `samples.csv` (every run's figure) go (default `target/bench`).
//! - `--side tcpnet|batch|baseline|naive|beating`: measure one side only
//!   (for profilers; `batch` is tcpnet's throughput through a `Batch`,
//!   `beating` the memory section's plain TCP with heartbeats).
//! - `--sizes 64,1024`, `--msgs N`, `--runs N`, `--rtts N`, `--idle-secs N`,
//!   `--nodes 2,8,16,32,64`: override the throughput sizes and counts, the
//!   round trips, the idle window and the formation sizes (16 is the late
//!   joiner's case); `--procs 32,64,128`: the mass start's process counts.
//! - `--secret`: every section's tcpnet nodes hold a cluster secret (the
//!   `secret` section does this for throughput and latency in any case).
//!
//! Everything that starts a tcpnet `Service` (which speaks mDNS) runs inside
//! a private network namespace holding only loopback, made with
//! `tests/common/mod.rs`; so does the baseline, for fairness. The memory
//! section runs idle nodes as child processes (this binary again, with
//! `TCPNET_BENCH_CHILD` set) inside that namespace; a child checks it is in
//! the parent's private namespace before it does anything; the measured
//! node's peers are tcpnet nodes in child processes of their own. Nothing here
//! asserts on wall time: figures are printed, never checked.
//!
//! The baseline is what a performance-minded application would write on
//! plain tokio (see `baseline.rs`): a `TcpStream` pair on 127.0.0.1 with
//! `TCP_NODELAY`, frames of a u32 big-endian length then the payload, small
//! ones batched in 64 KiB, large ones written and read without a copy
//! through its buffers. Every ratio is taken against it; the suite's earlier
//! baseline (8 KiB buffers) is measured too where it is cheap, as an extra
//! "naive" column. All sides run on the same runtime: tokio multi-thread,
//! 2 workers.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/mass.rs"]
mod mass;

mod baseline;
mod beating;
mod cli;
mod fanout;
mod formation;
mod harness;
mod latency;
mod mass_start;
mod memory;
mod report;
mod secret;
mod throughput;

use baseline::*;
use beating::*;
use cli::*;
use fanout::*;
use formation::*;
use harness::*;
use latency::*;
use mass_start::*;
use memory::*;
use report::*;
use secret::*;
use throughput::*;

/// Counts the heap in use in the memory section's child processes.
#[global_allocator]
static ALLOC: Counting = Counting;

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

/// Worker threads of every runtime in the suite (a 2-core machine's worth).
pub(crate) const WORKERS: usize = 2;
/// Every node and every baseline socket listens here, in its namespace.
pub(crate) const LISTEN_ADDR: &str = "127.0.0.1";
/// The baseline refuses frames over this, as tcpnet does by default.
pub(crate) const MAX_FRAME: usize = tcpnet::limits::DEFAULT_MAX_FRAME_LEN;
/// Bound on any one step, against hangs (not a performance check).
pub(crate) const DEADLINE: Duration = Duration::from_secs(300);
/// Peers of the node whose memory and CPU are measured with links, in
/// steps (meshes of 64 and 128 nodes).
pub(crate) const IDLE_PEERS: [usize; 2] = [63, 127];
/// Set in a child process: which idle node to be (`tcpnet` or `baseline`).
pub(crate) const CHILD_ENV: &str = "TCPNET_BENCH_CHILD";
/// The parent's network namespace, which a child must find itself in.
pub(crate) const NETNS_ENV: &str = "TCPNET_BENCH_NETNS";
/// The host's network namespace, which a child must not be in.
pub(crate) const HOST_NETNS_ENV: &str = "TCPNET_BENCH_HOST_NETNS";
pub(crate) const CLUSTER_ENV: &str = "TCPNET_BENCH_CLUSTER";

pub(crate) fn sh_out(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
/// binary with no arguments or libtest's, and gets no benchmark (a full run
/// takes minutes). Any other arguments (a profiler running the binary
/// directly) mean a run.
pub(crate) fn under_cargo_test() -> bool {
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

pub(crate) fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(mass::DISCOVER_ARG) {
        // A node of the mass section's discovery alone.
        mass::discover_node(args.get(1).expect("the cluster"));
        return;
    }
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
            Section::Mass => mass(&cfg),
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
        "baseline (careful): plain tokio `TcpStream`s with TCP_NODELAY, frames of a u32 BE \
         length + payload; frames under 16 KiB copied into a 64 KiB batch written when full or \
         when the sender has nothing more queued (once at the end of a throughput run, after \
         every message for latency), frames of 16 KiB or more written with the batch in one \
         vectored write, not copied; read into a 64 KiB buffer, one `Bytes` per message, \
         frames of 16 KiB or more read straight into a buffer of their own. Naive baseline \
         (throughput, latency and fan-out only, an extra column): an 8 KiB `BufWriter`, and an \
         8 KiB `BytesMut` read buffer grown as tokio-util's `FramedRead` grows it. Each \
         baseline is checked to deliver frames of 0 B to the largest intact before it is timed"
            .to_string(),
    );
    if sections(Section::Throughput) || sections(Section::Fanout) {
        notes.push(
            "throughput and fan-out: the clock runs from the first send until the receivers \
             hold every message; MB/s counts payload bytes (10^6); runs of tcpnet and the \
             baseline alternate; tcpnet sends with `Sender::send` and reads its `Connection` \
             stream, except in the rows \"through a Batch\" (messages under 16 KiB), where it \
             sends with `Batch::feed` and one `Batch::flush` at the end, as the baseline \
             writes into its batch and flushes once; fan-out sends each message to the 8 links in turn (each link's `Sender`, \
             not `Service::broadcast`) while 8 receivers read, in a full mesh of 9 nodes"
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
    if sections(Section::Mass) {
        notes.push(
            "mass start: N processes of `examples/demo.rs` (one node each, default settings, \
             each writing to every peer once a second) launched one after another in one fresh \
             namespace, each held at a gate (a `sh` that execs the demo once it reads a line) \
             until all wait; the clock starts as the gate opens and stops when each has said (a `links N` line, `TCPNET_LINKS=1`) that it holds \
             N - 1 links; timeouts are the processes' own log lines (`no hello within`, `no \
             verdict within`, `nothing heard from the peer`); peak CPU is the processes' \
             user + system time over the busiest 0.5 s, in cores (the machine has 2); CPU \
             once meshed is theirs from the full mesh to the end of the watch. Beside each \
             start, in the same run: the same number of nodes' handshakes in memory in one \
             thread (every pair, no socket; CPU), and discovery alone (as many processes of \
             nodes that announce and browse but dial no one, gated the same way, timed until \
             each has resolved all others)"
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
