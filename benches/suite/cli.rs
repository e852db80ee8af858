//! Command-line options: which sections, how much, where the results go.

use crate::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Section {
    Throughput,
    Latency,
    Fanout,
    Formation,
    Memory,
    /// Sections 1 and 2 again, with the cluster secret on.
    Secret,
    /// Demo processes started together.
    Mass,
}

pub(crate) const SECTIONS: [Section; 7] = [
    Section::Throughput,
    Section::Latency,
    Section::Fanout,
    Section::Formation,
    Section::Memory,
    Section::Secret,
    Section::Mass,
];

impl Section {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Section::Throughput => "throughput",
            Section::Latency => "latency",
            Section::Fanout => "fanout",
            Section::Formation => "formation",
            Section::Memory => "memory",
            Section::Secret => "secret",
            Section::Mass => "mass",
        }
    }
}

/// Which tcpnet is measured: open links, or links sealed with the cluster
/// secret (the `secret` section, and `--secret` for every section).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Variant {
    Plain,
    Secret,
}

/// The cluster secret of the `Secret` variant.
pub(crate) const BENCH_KEY: &str = "benchmark-suite-cluster-secret-0123456789";

/// Which sides a run measures: all (tcpnet, the careful baseline and, where
/// it is cheap, the naive one; in the memory section the baseline with
/// heartbeats too), or one of them alone (for profilers).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Side {
    Both,
    Tcpnet,
    /// tcpnet sending through a `Batch` (throughput only).
    Batch,
    Baseline,
    Naive,
    /// Plain TCP with heartbeats (memory only).
    Beating,
}

impl Side {
    pub(crate) fn tcpnet(self) -> bool {
        matches!(self, Side::Both | Side::Tcpnet)
    }
    /// tcpnet's throughput through a `Batch` too.
    pub(crate) fn batch(self) -> bool {
        matches!(self, Side::Both | Side::Batch)
    }
    /// The careful baseline, which every ratio is taken against.
    pub(crate) fn baseline(self) -> bool {
        matches!(self, Side::Both | Side::Baseline)
    }
    /// Plain TCP with heartbeats (the memory section's second baseline).
    pub(crate) fn beating(self) -> bool {
        matches!(self, Side::Both | Side::Beating)
    }
    /// The baselines measured, careful first.
    pub(crate) fn plain(self) -> Vec<Plain> {
        match self {
            Side::Both => vec![Plain::Careful, Plain::Naive],
            Side::Baseline => vec![Plain::Careful],
            Side::Naive => vec![Plain::Naive],
            Side::Tcpnet | Side::Batch | Side::Beating => vec![],
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) quick: bool,
    pub(crate) sections: Vec<Section>,
    pub(crate) out: PathBuf,
    pub(crate) side: Side,
    pub(crate) variant: Variant,
    pub(crate) sizes: Vec<usize>,
    pub(crate) msgs: Option<usize>,
    pub(crate) runs: Option<usize>,
    pub(crate) rtts: Option<usize>,
    pub(crate) idle_secs: Option<u64>,
    /// Formation sizes to run (16 is the late joiner's case); `None`: all.
    pub(crate) nodes: Option<Vec<usize>>,
    /// Mass-start process counts; `None`: 32, 64, 128 (quick: 32).
    pub(crate) procs: Option<Vec<usize>>,
    /// Idle links of the memory section, in steps; `None`: 63, 127.
    pub(crate) idle_links: Option<Vec<usize>>,
    pub(crate) args: Vec<String>,
}

pub(crate) const USAGE: &str =
    "usage: cargo bench --bench suite -- [--quick] [--only SECTION,..] [--out DIR] \
[--side tcpnet|batch|baseline|naive|beating] [--sizes B,..] [--msgs N] [--runs N] [--rtts N] [--idle-secs N] \
[--idle-links 63,127] [--nodes 2,8,16,32,64] [--procs 32,64,128] [--secret]
sections: throughput, latency, fanout, formation, memory, secret, mass
(mass needs the demo example built alongside: `cargo build --release --example demo`)";

impl Config {
    pub(crate) fn parse() -> Config {
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
            procs: None,
            idle_links: None,
            args: args.clone(),
        };
        let mut it = args.into_iter();
        let num = |v: Option<String>, what: &str| -> usize {
            v.and_then(|s| s.replace('_', "").parse().ok())
                .unwrap_or_else(|| die(&format!("{what} needs a number")))
        };
        let counts = |v: Option<String>, what: &str| -> Vec<usize> {
            let list = v.unwrap_or_else(|| die(&format!("{what} needs counts")));
            list.split(',').map(|s| num(Some(s.into()), what)).collect()
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
                        Some("batch") => Side::Batch,
                        Some("baseline") => Side::Baseline,
                        Some("naive") => Side::Naive,
                        Some("beating") => Side::Beating,
                        Some("both") => Side::Both,
                        _ => die("--side needs tcpnet, batch, baseline, naive, beating or both"),
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
                "--nodes" => cfg.nodes = Some(counts(it.next(), "--nodes")),
                "--procs" => {
                    let procs = counts(it.next(), "--procs");
                    if procs.iter().any(|&n| n < 2) {
                        die("--procs needs counts of 2 processes or more");
                    }
                    cfg.procs = Some(procs);
                }
                "--runs" => cfg.runs = Some(num(it.next(), "--runs").max(1)),
                "--rtts" => cfg.rtts = Some(num(it.next(), "--rtts").max(1)),
                "--idle-links" => cfg.idle_links = Some(counts(it.next(), "--idle-links")),
                "--idle-secs" => cfg.idle_secs = Some(num(it.next(), "--idle-secs").max(1) as u64),
                "--secret" => cfg.variant = Variant::Secret,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => die(&format!("unknown argument {other}")),
            }
        }
        if cfg.side == Side::Beating {
            if let Some(s) = cfg.sections.iter().find(|s| **s != Section::Memory) {
                die(&format!(
                    "--side beating measures only the memory section, not {}: add --only memory",
                    s.name()
                ));
            }
        }
        cfg
    }

    pub(crate) fn mode(&self) -> &'static str {
        if self.quick {
            "quick"
        } else {
            "full"
        }
    }
}

pub(crate) fn die(msg: &str) -> ! {
    eprintln!("suite: {msg}\n{USAGE}");
    std::process::exit(2);
}

/// The settings of every tcpnet node of the suite.
pub(crate) fn node_settings(cluster: &str, variant: Variant) -> Settings {
    match variant {
        Variant::Plain => Settings::new(cluster),
        Variant::Secret => Settings::new(cluster).secret(BENCH_KEY),
    }
}
