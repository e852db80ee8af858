//! A mass start: N demo processes (`examples/demo.rs`) launched together in
//! the caller's private network namespace, watched until they form a full
//! mesh and for a while after, with the timeouts they report and the CPU
//! they take. Or N nodes that only discover (no dialing), watched until
//! each has resolved all the others: what discovery alone costs.
//!
//! The processes are held at a gate while they are launched: each is a
//! `sh` that waits for a line on its stdin and then execs the demo. Once
//! all are waiting, the gate opens (a line to each), so every demo starts
//! within a few milliseconds of the others, instead of over the seconds
//! that launching 128 processes one after the other takes on a machine
//! the first ones already keep busy. Times are counted from the gate's
//! opening; the launch before it is reported beside them.
//!
//! Included by `examples/formation.rs` and the benchmark suite. Call it from
//! a thread that is in a private namespace (see [`super::enter_private_netns`]):
//! the processes inherit the thread's namespace, and [`mass_start`] refuses
//! to run anywhere that holds more than loopback.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What each process of a mass start runs, and how it says how far it got.
pub(crate) struct Program {
    /// The executable, then its arguments.
    command: Vec<OsString>,
    /// What a line on its stdout starts with when the rest is the number
    /// of peers it holds (linked, or discovered).
    counts: &'static str,
    /// The start is complete when each process holds all the others as...
    pub what: &'static str,
}

impl Program {
    /// The demo (`examples/demo.rs`) of `cluster`: done when each process
    /// holds a link to every other (it says `links N` on every change,
    /// with `TCPNET_LINKS=1`).
    pub(crate) fn demo(demo: &Path, cluster: &str) -> Program {
        Program {
            command: vec![demo.into(), cluster.into()],
            counts: "links ",
            what: "links",
        }
    }

    /// A node of `cluster` that only discovers (see [`discover_node`]),
    /// run as `exe` [`DISCOVER_ARG`] `cluster`: done when each process has
    /// resolved every other's mDNS record.
    pub(crate) fn discover_only(exe: &Path, cluster: &str) -> Program {
        Program {
            command: vec![exe.into(), DISCOVER_ARG.into(), cluster.into()],
            counts: "advertised ",
            what: "discovered peers",
        }
    }
}

/// The first argument that makes the formation example, or the suite, a
/// node that only discovers ([`discover_node`]); the cluster follows.
pub(crate) const DISCOVER_ARG: &str = "--discover-node";

/// Runs a node of `cluster` that listens, announces and browses over mDNS
/// as any node does, but dials no one (`tcpnet::bench::discover_only`),
/// and says `advertised N` on stdout each time the number of peers it has
/// resolved changes (looked at every 50 ms), until it is killed.
pub(crate) fn discover_node(cluster: &str) {
    crate::common::assert_only_loopback("a node that only discovers");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let settings = tcpnet::bench::discover_only(tcpnet::Settings::new(cluster));
        let service = tcpnet::tcpnet(settings).expect("a service");
        service.listen(0, "0.0.0.0").await.expect("listen");
        let mut said = usize::MAX;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            let n = tcpnet::bench::advertised(&service);
            if n != said {
                println!("advertised {n}");
                said = n;
            }
        }
    });
}

/// What one mass start did.
#[derive(Debug, Clone)]
pub(crate) struct MassStart {
    pub nodes: usize,
    /// From the gate's opening until every process held a link to every
    /// other; `None` if that never happened within the deadline.
    pub mesh: Option<Duration>,
    /// Handshakes that timed out ("no hello within", "no verdict within").
    pub handshake_timeouts: usize,
    /// Links dropped for silence ("nothing heard from the peer").
    pub heartbeat_timeouts: usize,
    /// Dials that got no answer in time.
    pub dial_timeouts: usize,
    /// Links that completed their handshake and were closed as a pair's
    /// second link (both ends dialed): counted only when the processes log
    /// them, with `TCPNET_MASS_LOG=info,tcpnet::node::actor=debug`.
    pub duplicates: usize,
    /// Every warning or error line the processes logged.
    pub warnings: usize,
    /// A few of those lines, for the record.
    pub samples: Vec<String>,
    /// The mesh was full at the end of the watch (no link lost after it formed).
    pub full_at_end: bool,
    /// The processes' CPU over the busiest 0.5 s, in cores.
    pub peak_cpu: f64,
    /// The processes' CPU from the gate until the mesh was full, in seconds.
    pub cpu_to_mesh: Option<f64>,
    /// From the first launch until the last process waited at the gate
    /// (the gate opens then).
    pub launched: Duration,
    /// The share of all links up, each second from the gate.
    pub progress: Vec<f64>,
    /// The processes' CPU since the gate, in seconds, each second from
    /// the gate (beside `progress`).
    pub cpu_each_second: Vec<f64>,
    /// UDP datagrams the namespace's kernel dropped for a full receive
    /// buffer (mDNS packets lost), over the whole start.
    pub udp_drops: u64,
    /// UDP datagrams the processes received (each multicast datagram
    /// counts once per process that reads it), over the whole start.
    pub udp_received: u64,
    /// The processes' CPU from the gate until the mesh was full (or the
    /// end), by thread: the mDNS daemons, the tokio workers, the rest.
    pub cpu_by_thread: Vec<(&'static str, f64)>,
    /// The processes' CPU from the full mesh to the end of the watch (the
    /// `hold` after it), in cores (CPU-seconds a second), by thread as
    /// above: formation's tail and the demo's messages, heartbeats and
    /// mDNS; not what a settled mesh costs.
    pub cpu_meshed: Vec<(&'static str, f64)>,
    /// What each process held of all the others when the start was
    /// complete ([`Program::what`]).
    pub what: &'static str,
}

impl MassStart {
    /// How the start went beyond the headline figures, a line each: the
    /// links up each second, how long the launch took, mDNS packets lost.
    pub(crate) fn details(&self) -> Vec<String> {
        let progress: Vec<String> = self
            .progress
            .iter()
            .map(|p| format!("{:.0}", p * 100.0))
            .collect();
        let cpu: Vec<String> = self
            .cpu_each_second
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect();
        vec![
            format!(
                "links up (or peers discovered) each second, % of all: {}",
                progress.join(" ")
            ),
            format!("CPU-s since the gate, each second: {}", cpu.join(" ")),
            format!(
                "all {} processes launched and waiting at the gate {:?} after the first \
                 launch; all {} {} after the first launch",
                self.nodes,
                self.launched,
                self.what,
                self.mesh
                    .map_or("never".into(), |m| format!("{:?}", self.launched + m)),
            ),
            format!("duplicate links closed: {}", self.duplicates),
            format!(
                "UDP datagrams received: {}; dropped at full receive buffers: {}",
                self.udp_received, self.udp_drops
            ),
            format!(
                "CPU from the gate until all {} by thread: {}",
                self.what,
                self.cpu_by_thread
                    .iter()
                    .map(|(t, s)| format!("{t} {s:.1} s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "CPU from all {} to the end of the watch, in cores: {:.2} ({})",
                self.what,
                self.cpu_meshed_total().unwrap_or(f64::NAN),
                self.cpu_meshed
                    .iter()
                    .map(|(t, c)| format!("{t} {c:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ]
    }

    /// The processes' CPU once the mesh was full, in cores, all threads.
    pub(crate) fn cpu_meshed_total(&self) -> Option<f64> {
        (!self.cpu_meshed.is_empty()).then(|| self.cpu_meshed.iter().map(|(_, c)| c).sum())
    }
}

enum Seen {
    Links(usize, usize),
    Log(String),
}

const SAMPLE: Duration = Duration::from_millis(500);
/// What a node logs (at debug level) when it closes a duplicate link.
const DUPLICATE: &str = "duplicate link closed";

/// Launches `n` processes of `program` held at a gate, opens it, and
/// watches them until each holds all the others (a full mesh, or all
/// discovered) and then `hold` longer (so that timeouts soon after it are
/// counted), or until `deadline` passes. The processes are ended with
/// SIGTERM (then killed if they linger).
pub(crate) fn mass_start(
    program: &Program,
    n: usize,
    hold: Duration,
    deadline: Duration,
) -> MassStart {
    crate::common::assert_only_loopback("a mass start");
    // The processes' log filter (warnings and errors are counted; debug
    // lines of duplicate links too).
    let log = std::env::var("TCPNET_MASS_LOG").unwrap_or_else(|_| "info".into());
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    let mut children: Vec<Child> = Vec::with_capacity(n);
    for i in 0..n {
        // `sh` waits at the gate, then becomes the demo (same process, so
        // its pid and CPU count are the demo's); a launcher gone before
        // opening the gate (EOF) starts nothing.
        let mut child = Command::new("/bin/sh")
            .args(["-c", "read -r _ && exec \"$0\" \"$@\""])
            .args(&program.command)
            .env("TCPNET_LINKS", "1")
            .env("RUST_LOG", &log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", program.command));
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let err = BufReader::new(child.stderr.take().expect("stderr"));
        let to = tx.clone();
        let counts = program.counts;
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Some(k) = line
                    .strip_prefix(counts)
                    .and_then(|k| k.trim().parse().ok())
                {
                    if to.send(Seen::Links(i, k)).is_err() {
                        return;
                    }
                }
            }
        });
        let to = tx.clone();
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let counted =
                    line.contains("WARN") || line.contains("ERROR") || line.contains(DUPLICATE);
                if counted && to.send(Seen::Log(line)).is_err() {
                    return;
                }
            }
        });
        children.push(child);
    }
    drop(tx);
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let launched = t0.elapsed();
    // CPU so far (the launch, each process's `sh` included), read while
    // every process waits at the gate, taken off every figure since.
    let cpu_start = cpu_secs(&pids);
    let threads_start = cpu_by_thread(&pids);
    // The gate opens: a line to each.
    let t0 = Instant::now();
    for child in &mut children {
        let mut gate = child.stdin.take().expect("stdin");
        gate.write_all(b"go\n").expect("open the gate");
    }

    let mut links = vec![0usize; n];
    let mut got = MassStart {
        nodes: n,
        mesh: None,
        handshake_timeouts: 0,
        heartbeat_timeouts: 0,
        dial_timeouts: 0,
        duplicates: 0,
        warnings: 0,
        samples: Vec::new(),
        full_at_end: false,
        peak_cpu: 0.0,
        cpu_to_mesh: None,
        launched,
        progress: Vec::new(),
        cpu_each_second: Vec::new(),
        udp_drops: 0,
        udp_received: 0,
        cpu_by_thread: Vec::new(),
        cpu_meshed: Vec::new(),
        what: program.what,
    };
    let drops_before = udp_count("RcvbufErrors");
    let received_before = udp_count("InDatagrams");
    let (mut cpu_at, mut cpu) = (Instant::now(), cpu_start);
    let mut full = false;
    let mut meshed_at = t0;
    loop {
        let now = Instant::now();
        let end = match got.mesh {
            Some(m) => t0 + m + hold,
            None => t0 + deadline,
        };
        if now >= end {
            break;
        }
        while t0 + Duration::from_secs(got.progress.len() as u64 + 1) <= now {
            let up: usize = links.iter().sum();
            got.progress.push(up as f64 / (n * (n - 1)) as f64);
            got.cpu_each_second.push(cpu_secs(&pids) - cpu_start);
        }
        if now.duration_since(cpu_at) >= SAMPLE {
            let c = cpu_secs(&pids);
            let rate = (c - cpu) / now.duration_since(cpu_at).as_secs_f64();
            got.peak_cpu = got.peak_cpu.max(rate);
            (cpu_at, cpu) = (now, c);
        }
        let wait = (end - now).min(SAMPLE / 5);
        match rx.recv_timeout(wait) {
            Ok(Seen::Links(i, k)) => {
                links[i] = k;
                full = links.iter().all(|&k| k == n - 1);
                if full && got.mesh.is_none() {
                    got.mesh = Some(t0.elapsed());
                    let total = cpu_secs(&pids) - cpu_start;
                    got.cpu_to_mesh = Some(total);
                    got.cpu_by_thread = since(cpu_by_thread(&pids), &threads_start, total);
                    meshed_at = Instant::now();
                }
            }
            Ok(Seen::Log(line)) if line.contains(DUPLICATE) => got.duplicates += 1,
            Ok(Seen::Log(line)) => {
                got.warnings += 1;
                if line.contains("no hello") || line.contains("no verdict within") {
                    got.handshake_timeouts += 1;
                } else if line.contains("nothing heard from the peer") {
                    got.heartbeat_timeouts += 1;
                } else if line.contains("no answer within") {
                    got.dial_timeouts += 1;
                }
                if got.samples.len() < 5 {
                    got.samples.push(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    got.full_at_end = full;
    if got.mesh.is_some() {
        let secs = meshed_at.elapsed().as_secs_f64();
        let total = cpu_secs(&pids) - cpu_start - got.cpu_to_mesh.unwrap_or(0.0);
        if !got.cpu_by_thread.is_empty() {
            let by_thread = since(cpu_by_thread(&pids), &threads_start, f64::NAN);
            got.cpu_meshed = since(by_thread, &got.cpu_by_thread, total)
                .into_iter()
                .map(|(t, c)| (t, c / secs))
                .collect();
        }
    }
    got.udp_drops = udp_count("RcvbufErrors").saturating_sub(drops_before);
    got.udp_received = udp_count("InDatagrams").saturating_sub(received_before);
    if got.mesh.is_none() {
        let total = cpu_secs(&pids) - cpu_start;
        got.cpu_by_thread = since(cpu_by_thread(&pids), &threads_start, total);
    }
    for child in &children {
        // SAFETY: a signal to a process we started and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let stop_by = Instant::now() + Duration::from_secs(10);
    for mut child in children {
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= stop_by {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    got
}

/// CPU time (user + system) of these processes so far, in seconds.
fn cpu_secs(pids: &[u32]) -> f64 {
    // SAFETY: sysconf reads a constant.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    for pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        ticks += stat_ticks(&stat);
    }
    ticks as f64 / tick
}

/// The CPU time (user + system, in clock ticks) a `stat` line of `/proc`
/// gives.
fn stat_ticks(stat: &str) -> u64 {
    // The fields after the command name, which is in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Per kind of thread, `now` less `then`; none at all (unknown) when the
/// kinds sum to nothing while the processes' own clock says `total` is
/// not (threads whose `schedstat` could not be read).
fn since(
    now: Vec<(&'static str, f64)>,
    then: &[(&'static str, f64)],
    total: f64,
) -> Vec<(&'static str, f64)> {
    let by_kind: Vec<_> = now
        .into_iter()
        .map(|(t, c)| {
            (
                t,
                c - then.iter().find(|(k, _)| *k == t).map_or(0.0, |(_, c)| *c),
            )
        })
        .collect();
    let sum: f64 = by_kind.iter().map(|(_, c)| c).sum();
    match sum <= 0.0 && total > 0.0 {
        true => Vec::new(),
        false => by_kind,
    }
}

/// CPU time of these processes' threads so far (since each was forked,
/// threads that have ended not counted), in seconds, summed by kind of
/// thread. Read from each thread's `schedstat` (nanoseconds on a CPU)
/// rather than its `stat`, which counts whole clock ticks and so loses
/// about half a tick (5 ms) a thread: 2.5 CPU-s over the 500 threads of a
/// start of 128.
fn cpu_by_thread(pids: &[u32]) -> Vec<(&'static str, f64)> {
    let kinds = ["mDNS daemons", "tokio workers", "other threads"];
    let mut nanos = [0u64; 3];
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let (Ok(name), Ok(sched)) = (
                std::fs::read_to_string(task.path().join("comm")),
                std::fs::read_to_string(task.path().join("schedstat")),
            ) else {
                continue;
            };
            let kind = if name.starts_with("mDNS") {
                0
            } else if name.starts_with("tokio") {
                1
            } else {
                2
            };
            let on_cpu = sched.split_whitespace().next().and_then(|v| v.parse().ok());
            nanos[kind] += on_cpu.unwrap_or(0u64);
        }
    }
    kinds
        .into_iter()
        .zip(nanos)
        .map(|(k, n)| (k, n as f64 / 1e9))
        .collect()
}

/// One of the namespace's UDP counters (`/proc/net/snmp`).
fn udp_count(name: &str) -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The handshakes of a start of `n` nodes, run in memory in this thread
/// (`tcpnet::bench::Cluster`: every pair's hellos, Noise XX with both
/// proofs, the key confirmation with `secret`, both record checks; no
/// socket): the links made, and this thread's CPU time for them, in
/// seconds (the nodes' keys are made before the clock starts).
pub(crate) fn handshake_cpu(n: usize, secret: Option<&[u8]>) -> (usize, f64) {
    let cluster = tcpnet::bench::Cluster::new(n, secret);
    let before = thread_cpu();
    let links = cluster.link_all();
    (links, thread_cpu() - before)
}

/// This thread's CPU time so far, in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the clock into `ts`, which outlives the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "the thread's CPU clock");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
