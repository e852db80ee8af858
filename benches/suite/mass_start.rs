//! Section 7: the mass start of demo processes (one node each), and, side
//! by side in the same run, the parts of it measured alone: the
//! handshakes of as many nodes in memory, and discovery alone.

use crate::*;

/// The cluster secret of the handshakes measured with a secret.
const SECRET: &[u8] = b"bench-suite-mass-start-cluster-secret";

/// Process counts measured by default.
pub(crate) const MASS_PROCS: [usize; 3] = [32, 64, 128];

pub(crate) fn mass(cfg: &Config) -> Vec<Row> {
    let counts = cfg.procs.clone().unwrap_or_else(|| {
        if cfg.quick {
            vec![32]
        } else {
            MASS_PROCS.to_vec()
        }
    });
    let hold = Duration::from_secs(if cfg.quick { 2 } else { 5 });
    let demo = common::demo_binary();
    let me = std::env::current_exe().expect("the suite's path");
    let mut rows = Vec::new();
    for n in counts {
        rows.extend(handshakes(n));
        let program = mass::Program::discover_only(&me, "bench-discover");
        rows.extend(discovery(n, program, hold));
        let program = mass::Program::demo(&demo, "bench-mass");
        rows.extend(demo_start(n, program, hold));
    }
    rows
}

/// A row of this section: tcpnet's figure, nothing to compare it with.
fn row(
    measure: String,
    param: String,
    unit: &'static str,
    value: Option<f64>,
    target: Option<Target>,
    setup: &str,
) -> Row {
    Row {
        section: "7. mass start",
        measure,
        param,
        unit,
        tcpnet: value,
        baseline: None,
        naive: None,
        beating: None,
        target,
        setup: setup.to_string(),
        samples: Samples::default(),
    }
}

/// One gated start of `n` processes of `program`, in a fresh namespace
/// (no mDNS cache of an earlier start), with its details on stderr.
fn gated(n: usize, program: mass::Program, hold: Duration) -> mass::MassStart {
    let what = program.what;
    let m = in_netns(move |_| mass::mass_start(&program, n, hold, Duration::from_secs(120)));
    eprintln!(
        "  {n} processes, all {what}: {:?}, timeouts {} handshake {} heartbeat {} dial, \
         peak CPU {:.2} cores, CPU until then {:?} s, load {}",
        m.mesh,
        m.handshake_timeouts,
        m.heartbeat_timeouts,
        m.dial_timeouts,
        m.peak_cpu,
        m.cpu_to_mesh,
        loadavg()
    );
    for line in m.details().iter().chain(&m.samples) {
        eprintln!("    {line}");
    }
    m
}

/// `n` nodes that only discover, until each has resolved all others.
fn discovery(n: usize, program: mass::Program, hold: Duration) -> Vec<Row> {
    let d = gated(n, program, hold);
    let setup = format!(
        "{n} nodes that only discover (the suite again, `{}`: listen, announce and browse as \
         any node, dial no one), gated as the demos are, timed from the gate until each has \
         resolved all others",
        mass::DISCOVER_ARG
    );
    let mdns = d.cpu_by_thread.iter().find(|(t, _)| t.starts_with("mDNS"));
    let row = |measure: &str, param: &str, unit, value| {
        let (measure, param) = (
            format!("{n} processes, discovery alone: {measure}"),
            format!("{param}{n}"),
        );
        row(measure, param, unit, value, None, &setup)
    };
    vec![
        row(
            "gate to all discovered",
            "discover",
            "ms",
            d.mesh.map(|t| t.as_secs_f64() * 1e3),
        ),
        row("CPU until then", "discover-cpu", "s", d.cpu_to_mesh),
        // What it takes of the 6 CPU-s that 3 s on two cores hold.
        row(
            "CPU in its first 3 s",
            "discover-cpu-3s",
            "s",
            d.cpu_each_second.get(2).copied(),
        ),
        row(
            "of it the mDNS daemons' threads",
            "discover-mdns",
            "s",
            d.mesh.and(mdns.map(|(_, c)| *c)),
        ),
    ]
}

/// `n` demo processes, until they form a full mesh.
fn demo_start(n: usize, program: mass::Program, hold: Duration) -> Vec<Row> {
    let m = gated(n, program, hold);
    let setup = format!(
        "{n} demo processes launched held at a gate in one namespace, timed from the gate's \
         opening; watched until {} s after the full mesh (or 120 s)",
        hold.as_secs()
    );
    let row = |measure: &str, param: &str, unit, value, target| {
        let (measure, param) = (format!("{n} processes: {measure}"), format!("{param}{n}"));
        row(measure, param, unit, value, target, &setup)
    };
    vec![
        row(
            "gate to full mesh",
            "mesh",
            "ms",
            m.mesh.map(|d| d.as_secs_f64() * 1e3),
            Some(Target::AtMost(3000.0)),
        ),
        row(
            "handshake and heartbeat timeouts",
            "timeouts",
            "timeouts",
            Some((m.handshake_timeouts + m.heartbeat_timeouts) as f64),
            Some(Target::AtMost(0.0)),
        ),
        row(
            "dial timeouts, warnings in all",
            "warnings",
            "warnings",
            Some(m.warnings as f64),
            None,
        ),
        row(
            "peak CPU (busiest 0.5 s)",
            "peak-cpu",
            "cores",
            Some(m.peak_cpu),
            None,
        ),
        row(
            "CPU from the gate to full mesh",
            "cpu-to-mesh",
            "s",
            m.cpu_to_mesh,
            None,
        ),
        row(
            &format!(
                "CPU in the {} s after the full mesh (formation's tail, messages, heartbeats, mDNS)",
                hold.as_secs()
            ),
            "cpu-meshed",
            "cores",
            m.cpu_meshed_total(),
            None,
        ),
    ]
}

/// The handshakes of a start of `n` nodes, in memory in one thread, in the
/// clear and with a secret: CPU per link and in all.
fn handshakes(n: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for (mode, secret) in [("", None), (", with a secret", Some(SECRET))] {
        let (links, cpu) = mass::handshake_cpu(n, secret);
        eprintln!(
            "  {links} handshakes of {n} nodes{mode}: {cpu:.2} CPU-s, {:.0} µs a link, load {}",
            cpu / links as f64 * 1e6,
            loadavg()
        );
        let setup = format!(
            "the {links} handshakes of {n} nodes, one after the other in one thread, in memory: \
             tcpnet's own hellos, Noise XX{} with both proofs of identity, {}both ends' check \
             of the other's signed member record (`tcpnet::bench::Cluster`); no socket; the \
             thread's CPU clock",
            if secret.is_some() { "psk3" } else { "" },
            if secret.is_some() {
                "the key confirmation, "
            } else {
                ""
            },
        );
        let param = if secret.is_some() { "hs-secret" } else { "hs" };
        rows.push(row(
            format!("handshake CPU per link, of {n} nodes{mode}"),
            format!("{param}-link{n}"),
            "µs",
            Some(cpu / links as f64 * 1e6),
            None,
            &setup,
        ));
        rows.push(row(
            format!("{n} nodes: handshake CPU in all ({links} links){mode}"),
            format!("{param}{n}"),
            "s",
            Some(cpu),
            None,
            &setup,
        ));
    }
    rows
}
