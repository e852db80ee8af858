//! Measures mesh formation in a private network namespace (it makes its own:
//! run as root, or under `unshare --user --map-root-user`).
//!
//! ```text
//! cargo run --release --example formation -- [NODES] [RUNS]
//! cargo build --release --example demo
//! cargo run --release --example formation -- --processes 32,64,128
//! ```
//!
//! With `--processes`: a mass start of that many demo processes
//! (`examples/demo.rs`, one node each, not nodes sharing a process) launched
//! together, for each count, in a private namespace of its own: all are
//! launched held at a gate, which then opens for all at once (see
//! `tests/common/mass.rs`). Prints the time from the gate's opening until
//! every process holds a link to every other (each says so on stdout, with
//! `TCPNET_LINKS=1`), and from the first launch, the handshake,
//! heartbeat and dial timeouts they logged until 5 s after that, the
//! processes' peak CPU (busiest 0.5 s, in cores), their CPU to the mesh,
//! and their CPU a second once meshed. Needs the demo built in the same
//! profile.
//!
//! Before each demo start, the parts of it measured alone, side by side
//! in the same run (`--parts handshakes,discover,demo` picks; default all
//! three):
//!
//! - `handshakes`: the n(n - 1)/2 handshakes of n nodes run one after the
//!   other in this process, in memory, in the clear and with a secret:
//!   tcpnet's own handshake code (hellos, Noise XX, both proofs of
//!   identity, the key confirmation, both member record checks) without
//!   sockets (`tcpnet::bench::Cluster`); its CPU time in all and per link.
//! - `discover`: n processes that only discover (this example again, with
//!   `--discover-node`: a node that listens, announces and browses as any
//!   node does, and dials no one), gated as the demos are, timed until
//!   each has resolved every other's mDNS record; their CPU.
//!
//! Otherwise, for each run: NODES services start at once; the clock starts when the last
//! of them is started (all `listen` calls are issued together) and stops when
//! every node holds a link to every other. Then a late joiner is started and
//! timed until it is linked to all NODES. Prints each run, then the median
//! and the maximum.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/mass.rs"]
mod mass;

use std::time::{Duration, Instant};

/// Exits with an error naming the first argument left over, if any: a
/// mistyped flag must not run minutes of mass starts it did not ask for.
fn refuse_the_rest(mut args: impl Iterator<Item = String>) {
    if let Some(a) = args.next() {
        eprintln!("formation: unknown argument {a:?}");
        std::process::exit(2);
    }
}

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some(mass::DISCOVER_ARG) {
        args.next();
        let cluster = args.next().expect("--discover-node CLUSTER");
        refuse_the_rest(args);
        mass::discover_node(&cluster);
        return;
    }
    if args.peek().map(String::as_str) == Some("--processes") {
        args.next();
        let counts = args.next().unwrap_or_else(|| "32,64,128".into());
        const PARTS: [&str; 3] = ["handshakes", "discover", "demo"];
        let mut parts: Vec<String> = PARTS.map(str::to_string).to_vec();
        if args.peek().map(String::as_str) == Some("--parts") {
            args.next();
            let list = args.next().expect("--parts handshakes,discover,demo");
            parts = list.split(',').map(|p| p.trim().to_string()).collect();
            if let Some(bad) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
                eprintln!(
                    "formation: unknown part {bad:?}; the parts are {}",
                    PARTS.join(", ")
                );
                std::process::exit(2);
            }
        }
        refuse_the_rest(args);
        let counts: Vec<usize> = counts
            .split(',')
            .map(|n| n.trim().parse().expect("--processes N,N,.."))
            .collect();
        if counts.iter().any(|&n| n < 2) {
            eprintln!("formation: --processes needs counts of 2 processes or more");
            std::process::exit(2);
        }
        for n in counts {
            if parts.iter().any(|p| p == "handshakes") {
                handshakes(n);
            }
            if parts.iter().any(|p| p == "discover") {
                let me = std::env::current_exe().expect("this example's path");
                mass(n, mass::Program::discover_only(&me, "mass-discover"));
            }
            if parts.iter().any(|p| p == "demo") {
                mass(n, mass::Program::demo(&common::demo_binary(), "mass-start"));
            }
        }
        return;
    }
    let nodes: usize = args.next().map_or(16, |a| a.parse().expect("NODES"));
    let runs: usize = args.next().map_or(7, |a| a.parse().expect("RUNS"));
    refuse_the_rest(args);
    let mut mesh = Vec::new();
    let mut late = Vec::new();
    for run in 1..=runs {
        let (m, l) = std::thread::spawn(move || {
            common::enter_private_netns();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(one_run(nodes))
        })
        .join()
        .expect("run");
        println!("run {run}: full mesh of {nodes} in {m:?}; late joiner linked to all in {l:?}");
        mesh.push(m);
        late.push(l);
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (m50, mmax) = stats(&mut mesh);
    let (l50, lmax) = stats(&mut late);
    println!("{nodes} nodes, {runs} runs: mesh median {m50:?} max {mmax:?}; late joiner median {l50:?} max {lmax:?}");
}

async fn one_run(n: usize) -> (Duration, Duration) {
    let services: Vec<tcpnet::Service> = (0..n)
        .map(|_| tcpnet::tcpnet("formation").unwrap())
        .collect();
    let t0 = Instant::now();
    let started = futures::future::join_all(services.iter().map(|s| s.listen(0, "0.0.0.0"))).await;
    for r in started {
        r.expect("listen");
    }
    common::full_mesh(&services).await;
    let mesh = t0.elapsed();

    let joiner = tcpnet::tcpnet("formation").unwrap();
    let t1 = Instant::now();
    joiner.listen(0, "0.0.0.0").await.expect("listen");
    let mut all = services.clone();
    all.push(joiner);
    common::full_mesh(&all).await;
    let late = t1.elapsed();
    common::close_all(&all).await;
    (mesh, late)
}

/// The handshakes of a start of `n` nodes, in memory in this thread, in
/// the clear and with a secret.
fn handshakes(n: usize) {
    let secret = b"formation-example-cluster-secret";
    for (mode, secret) in [("in the clear", None), ("with a secret", Some(&secret[..]))] {
        let (links, cpu) = mass::handshake_cpu(n, secret);
        println!(
            "{n} nodes: {links} handshakes {mode}, in memory in one thread: {cpu:.2} CPU-s, \
             {:.0} µs a link; load average {}",
            cpu / links as f64 * 1e6,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim(),
        );
    }
}

/// One mass start of `n` processes of `program`, in a private namespace
/// of its own.
fn mass(n: usize, program: mass::Program) {
    let what = program.what;
    let m = std::thread::spawn(move || {
        common::enter_private_netns();
        let hold = Duration::from_secs(5);
        mass::mass_start(&program, n, hold, Duration::from_secs(120))
    })
    .join()
    .expect("mass start");
    let mesh = m
        .mesh
        .map_or("never (within 120 s)".into(), |d| format!("{d:?}"));
    println!(
        "{n} processes: all {what} {mesh} after the gate; timeouts: {} handshake, {} heartbeat, {} dial \
         ({} warnings in all); peak CPU {:.2} cores; CPU until then {}; still all 5 s later: {}; load average {}",
        m.handshake_timeouts,
        m.heartbeat_timeouts,
        m.dial_timeouts,
        m.warnings,
        m.peak_cpu,
        m.cpu_to_mesh.map_or("—".into(), |c| format!("{c:.1} s")),
        m.full_at_end,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    );
    for line in m.details() {
        println!("  {line}");
    }
    for line in &m.samples {
        println!("  {line}");
    }
}
