//! Section 6: throughput and latency again, with a cluster secret.

use crate::*;

/// Throughput and latency again, with the secret on. Only the 64 KiB
/// throughput has a target (at least 0.5 of the baseline).
pub(crate) fn secret(cfg: &Config) -> Vec<Row> {
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
