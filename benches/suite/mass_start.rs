//! Section 7: the mass start of demo processes (one node each).

use crate::*;

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
    let mut rows = Vec::new();
    for n in counts {
        let demo = demo.clone();
        // A fresh namespace each: no mDNS cache of an earlier start.
        let m = in_netns(move |_| {
            mass::mass_start(&demo, n, "bench-mass", hold, Duration::from_secs(120))
        });
        eprintln!(
            "  mass start of {n}: mesh {:?}, timeouts {} handshake {} heartbeat {} dial, \
             peak CPU {:.2} cores, load {}",
            m.mesh,
            m.handshake_timeouts,
            m.heartbeat_timeouts,
            m.dial_timeouts,
            m.peak_cpu,
            loadavg()
        );
        for line in m.details() {
            eprintln!("    {line}");
        }
        for line in &m.samples {
            eprintln!("    {line}");
        }
        let row = |measure: String, param: &str, unit, value, target| Row {
            section: "7. mass start",
            measure,
            param: format!("{param}{n}"),
            unit,
            tcpnet: value,
            baseline: None,
            naive: None,
            target,
            setup: format!(
                "{n} demo processes launched held at a gate in one namespace, timed from \
                 the gate's opening; watched until {} s after the full mesh (or 120 s)",
                hold.as_secs()
            ),
            samples: Samples::default(),
        };
        rows.push(row(
            format!("{n} processes: gate to full mesh"),
            "mesh",
            "ms",
            m.mesh.map(|d| d.as_secs_f64() * 1e3),
            Some(Target::AtMost(3000.0)),
        ));
        rows.push(row(
            format!("{n} processes: handshake and heartbeat timeouts"),
            "timeouts",
            "timeouts",
            Some((m.handshake_timeouts + m.heartbeat_timeouts) as f64),
            Some(Target::AtMost(0.0)),
        ));
        rows.push(row(
            format!("{n} processes: dial timeouts, warnings in all"),
            "warnings",
            "warnings",
            Some(m.warnings as f64),
            None,
        ));
        rows.push(row(
            format!("{n} processes: peak CPU (busiest 0.5 s)"),
            "peak-cpu",
            "cores",
            Some(m.peak_cpu),
            None,
        ));
        rows.push(row(
            format!("{n} processes: CPU from the gate to full mesh"),
            "cpu-to-mesh",
            "s",
            m.cpu_to_mesh,
            None,
        ));
    }
    rows
}
