//! A mass start: N demo processes (`examples/demo.rs`) launched together in
//! the caller's private network namespace, watched until they form a full
//! mesh and for a while after, with the timeouts they report and the CPU
//! they take.
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

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    /// UDP datagrams the namespace's kernel dropped for a full receive
    /// buffer (mDNS packets lost), over the whole start.
    pub udp_drops: u64,
    /// UDP datagrams the processes received (each multicast datagram
    /// counts once per process that reads it), over the whole start.
    pub udp_received: u64,
    /// The processes' CPU from the gate until the mesh was full (or the
    /// end), by thread: the mDNS daemons, the tokio workers, the rest.
    pub cpu_by_thread: Vec<(&'static str, f64)>,
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
        vec![
            format!("links up each second, % of all: {}", progress.join(" ")),
            format!(
                "all {} processes launched and waiting at the gate {:?} after the first \
                 launch; full mesh {} after the first launch",
                self.nodes,
                self.launched,
                self.mesh
                    .map_or("never".into(), |m| format!("{:?}", self.launched + m)),
            ),
            format!("duplicate links closed: {}", self.duplicates),
            format!(
                "UDP datagrams received: {}; dropped at full receive buffers: {}",
                self.udp_received, self.udp_drops
            ),
            format!(
                "CPU from the gate to the mesh by thread: {}",
                self.cpu_by_thread
                    .iter()
                    .map(|(t, s)| format!("{t} {s:.1} s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ]
    }
}

enum Seen {
    Links(usize, usize),
    Log(String),
}

const SAMPLE: Duration = Duration::from_millis(500);
/// What a node logs (at debug level) when it closes a duplicate link.
const DUPLICATE: &str = "duplicate link closed";

/// Launches `n` demo processes of `cluster` held at a gate, opens it, and
/// watches them until they hold a full mesh and then `hold` longer (so
/// that timeouts soon after it are counted), or until `deadline` passes.
/// The processes are ended with SIGTERM (then killed if they linger).
pub(crate) fn mass_start(
    demo: &Path,
    n: usize,
    cluster: &str,
    hold: Duration,
    deadline: Duration,
) -> MassStart {
    let ifs = std::fs::read_to_string("/proc/thread-self/net/dev").expect("read net/dev");
    let names: Vec<&str> = ifs
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(
        names,
        ["lo"],
        "a mass start runs only in a private namespace holding only lo"
    );
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
            .arg(demo)
            .arg(cluster)
            .env("TCPNET_LINKS", "1")
            .env("RUST_LOG", &log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", demo.display()));
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let err = BufReader::new(child.stderr.take().expect("stderr"));
        let to = tx.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Some(k) = line
                    .strip_prefix("links ")
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
        udp_drops: 0,
        udp_received: 0,
        cpu_by_thread: Vec::new(),
    };
    let drops_before = udp_count("RcvbufErrors");
    let received_before = udp_count("InDatagrams");
    let (mut cpu_at, mut cpu) = (Instant::now(), cpu_secs(&pids));
    let cpu_start = cpu;
    let mut full = false;
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
                    got.cpu_to_mesh = Some(cpu_secs(&pids) - cpu_start);
                    got.cpu_by_thread = cpu_by_thread(&pids);
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
    got.udp_drops = udp_count("RcvbufErrors").saturating_sub(drops_before);
    got.udp_received = udp_count("InDatagrams").saturating_sub(received_before);
    if got.cpu_by_thread.is_empty() {
        got.cpu_by_thread = cpu_by_thread(&pids);
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
            std::thread::sleep(Duration::from_millis(20));
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

/// CPU time (user + system) of these processes' threads so far, in
/// seconds, summed by kind of thread (the processes were gated before they
/// ran, so this is their CPU since the gate opened).
fn cpu_by_thread(pids: &[u32]) -> Vec<(&'static str, f64)> {
    // SAFETY: sysconf reads a constant.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let kinds = ["mDNS daemons", "tokio workers", "other threads"];
    let mut ticks = [0u64; 3];
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // The thread's name is in parentheses.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = &stat[open + 1..close];
            let kind = if name.starts_with("mDNS") {
                0
            } else if name.starts_with("tokio") {
                1
            } else {
                2
            };
            ticks[kind] += stat_ticks(&stat);
        }
    }
    kinds
        .into_iter()
        .zip(ticks)
        .map(|(k, t)| (k, t as f64 / tick))
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
