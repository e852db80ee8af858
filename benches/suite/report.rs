//! Results: rows of tcpnet against the baseline, and the table and CSV files made of them.

use crate::*;

/// What a figure is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
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
pub(crate) struct Row {
    pub(crate) section: &'static str,
    pub(crate) measure: String,
    /// The message size in bytes, node count, … (for scripts).
    pub(crate) param: String,
    pub(crate) unit: &'static str,
    pub(crate) tcpnet: Option<f64>,
    /// The careful baseline, which the ratio and the target use.
    pub(crate) baseline: Option<f64>,
    /// The naive baseline, where measured (an extra column).
    pub(crate) naive: Option<f64>,
    /// Plain TCP with heartbeats, where measured (the memory section's
    /// second baseline, an extra column).
    pub(crate) beating: Option<f64>,
    pub(crate) target: Option<Target>,
    pub(crate) setup: String,
    /// Every run's figure, in the row's unit (for `samples.csv`).
    pub(crate) samples: Samples,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Samples {
    pub(crate) tcpnet: Vec<f64>,
    pub(crate) baseline: Vec<f64>,
    pub(crate) naive: Vec<f64>,
}

impl Row {
    pub(crate) fn ratio(&self) -> Option<f64> {
        match (self.tcpnet, self.baseline) {
            (Some(t), Some(b)) if b > 0.0 => Some(t / b),
            _ => None,
        }
    }

    /// tcpnet / the naive baseline.
    pub(crate) fn naive_ratio(&self) -> Option<f64> {
        match (self.tcpnet, self.naive) {
            (Some(t), Some(b)) if b > 0.0 => Some(t / b),
            _ => None,
        }
    }

    /// tcpnet / plain TCP with heartbeats.
    pub(crate) fn beating_ratio(&self) -> Option<f64> {
        match (self.tcpnet, self.beating) {
            (Some(t), Some(b)) if b > 0.0 => Some(t / b),
            _ => None,
        }
    }

    pub(crate) fn met(&self) -> Option<bool> {
        let t = self.tcpnet?;
        Some(match self.target? {
            Target::RatioAtLeast(r) => self.ratio()? >= r,
            Target::RatioAtMost(r) => self.ratio()? <= r,
            Target::AtMost(v) => t <= v,
            Target::Below(v) => t < v,
        })
    }

    pub(crate) fn target_text(&self) -> String {
        match self.target {
            None => String::new(),
            Some(Target::RatioAtLeast(r)) => format!("ratio ≥ {r}"),
            Some(Target::RatioAtMost(r)) => format!("ratio ≤ {r}"),
            Some(Target::AtMost(v)) => format!("≤ {}", fmt_value(v, self.unit)),
            Some(Target::Below(v)) => format!("< {}", fmt_value(v, self.unit)),
        }
    }
}

pub(crate) fn fmt_value(v: f64, unit: &str) -> String {
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
        "cores" => format!("{v:.2} cores"),
        "s" => format!("{v:.1} s"),
        "timeouts" | "warnings" | "files" => format!("{v:.0} {unit}"),
        "blocks" => format!("{v:.1} {unit}"),
        _ => format!("{v} {unit}"),
    }
}

/// Three decimals below 10, so a ratio just under a target does not print
/// as the target itself.
pub(crate) fn fmt_ratio(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.1}")
    }
}

pub(crate) fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("—".into(), |v| fmt_value(v, unit))
}

pub(crate) struct Report {
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
}

impl Report {
    pub(crate) fn markdown(&self, header: &str) -> String {
        let mut s = String::new();
        s.push_str(header);
        s.push_str(
            "\n| section | measure | tcpnet | baseline | tcpnet / baseline | target | met \
             | naive baseline | tcpnet / naive | baseline with heartbeats \
             | tcpnet / with heartbeats | setup |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
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
                opt(r.naive, r.unit),
                r.naive_ratio().map_or("—".into(), fmt_ratio),
                opt(r.beating, r.unit),
                r.beating_ratio().map_or("—".into(), fmt_ratio),
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
    pub(crate) fn samples_csv(&self) -> String {
        let mut s = String::from("section,measure,param,unit,side,run,value\n");
        for r in &self.rows {
            for (side, v) in [
                ("tcpnet", &r.samples.tcpnet),
                ("baseline", &r.samples.baseline),
                ("naive", &r.samples.naive),
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

    pub(crate) fn csv(&self) -> String {
        let mut s = String::from(
            "section,measure,param,unit,tcpnet,baseline,ratio,target,met,setup,naive,naive_ratio,\
             beating,beating_ratio\n",
        );
        let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
        let q = |t: &str| format!("\"{}\"", t.replace('"', "\"\""));
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
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
                num(r.naive),
                num(r.naive_ratio()),
                num(r.beating),
                num(r.beating_ratio()),
            );
        }
        s
    }
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MIN, f64::max)
}

/// Nearest-rank percentile of sorted samples.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn size_name(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

pub(crate) fn count(n: usize) -> String {
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

/// The last run's time, for the progress lines.
pub(crate) fn last_run(secs: &[f64]) -> String {
    secs.last().map_or("—".into(), |s| format!("{s:.3} s"))
}

/// The last run of each baseline, named, for the progress lines.
pub(crate) fn last_runs(kinds: &[Plain], secs: &[Vec<f64>]) -> String {
    kinds
        .iter()
        .zip(secs)
        .map(|(kind, secs)| format!("{kind:?} {}", last_run(secs)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The runs of baseline `kind`, if it was measured.
pub(crate) fn secs_of(kinds: &[Plain], secs: &[Vec<f64>], kind: Plain) -> Vec<f64> {
    kinds
        .iter()
        .position(|k| *k == kind)
        .map_or(Vec::new(), |i| secs[i].clone())
}
