//! `tcpnet ping`: joins a cluster, measures round trips to every node (or
//! the ones named) over their links, and prints min/p50/p99 per node, like
//! `ping`'s summary.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};
use tcpnet::{MemberState, NodeId, Service};

use crate::args::PingArgs;
use crate::node;
use crate::table::{count, millis, ms_json, Table};
use crate::term::Progress;
use crate::Failure;

/// Runs `tcpnet ping`; `Ok(false)` when a node never answered (or none was
/// linked).
pub(crate) async fn run(args: PingArgs) -> Result<bool, Failure> {
    let wanted = args
        .ids
        .iter()
        .map(|id| NodeId::parse(id).map_err(|e| Failure::Usage(format!("{id:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let service = node::join(&args.node)?;
    let outcome = ping(&service, &args, wanted).await;
    service.close().await;
    outcome
}

async fn ping(service: &Service, args: &PingArgs, wanted: Vec<NodeId>) -> Result<bool, Failure> {
    // Named nodes: linked to each of them is enough.
    let ready = |s: &Service| {
        let linked = linked(s);
        wanted.iter().all(|id| linked.contains(id))
    };
    node::start(service, &args.node, ready).await?;
    let targets = if wanted.is_empty() {
        linked(service)
    } else {
        wanted
    };
    if targets.is_empty() {
        return Err(Failure::Error(format!(
            "no node of {} linked within {} s (tcpnet doctor {0} says why)",
            args.node.cluster,
            args.node.wait.as_secs_f32()
        )));
    }
    let mut results: BTreeMap<NodeId, Results> = targets
        .iter()
        .map(|id| (id.clone(), Results::default()))
        .collect();
    let mut progress = Progress::new();
    let mut tick = tokio::time::interval(args.interval);
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    for round in 1..=args.count {
        progress.show(&format!(
            "pinging {}: {round} of {}",
            count(targets.len(), "node"),
            args.count
        ));
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        // One round: every node at once, each ping on its own link.
        let round = tokio::select! {
            _ = &mut stop => break,
            r = join_all(targets.iter().map(|id| async move { (id, service.ping(id).await) })) => r,
        };
        for (id, result) in round {
            let r = results.get_mut(id).expect("a target");
            r.sent += 1;
            match result {
                Ok(rtt) => r.rtts.push(rtt),
                Err(e) => {
                    *r.errors.entry(e.to_string()).or_default() += 1;
                }
            }
        }
    }
    progress.clear();
    let mut out = std::io::stdout().lock();
    if args.json {
        for (id, r) in &results {
            let _ = writeln!(out, "{}", r.json(id));
        }
    } else {
        for line in summary(&args.node.cluster, &results) {
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = out.flush();
    Ok(results.values().all(|r| !r.rtts.is_empty()))
}

/// The nodes this node is linked to, by its membership view.
fn linked(service: &Service) -> Vec<NodeId> {
    service
        .members()
        .into_iter()
        .filter(|m| matches!(m.state, MemberState::Linked | MemberState::Suspect))
        .map(|m| m.id)
        .collect()
}

/// The pings of one node.
#[derive(Debug, Default)]
struct Results {
    sent: usize,
    rtts: Vec<Duration>,
    /// Each error, and how often it came.
    errors: BTreeMap<String, usize>,
}

/// The spread of round trips.
#[derive(Debug, PartialEq)]
struct Spread {
    min: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Results {
    /// min, p50, p99 and max by the nearest rank; `None` without a reply.
    fn spread(&self) -> Option<Spread> {
        let mut sorted = self.rtts.clone();
        sorted.sort();
        let rank = |p: usize| sorted[(sorted.len() * p).div_ceil(100).max(1) - 1];
        Some(Spread {
            min: *sorted.first()?,
            p50: rank(50),
            p99: rank(99),
            max: *sorted.last()?,
        })
    }

    /// The share of pings without a reply, in percent.
    fn loss(&self) -> usize {
        if self.sent == 0 {
            return 0;
        }
        (self.sent - self.rtts.len()) * 100 / self.sent
    }

    fn json(&self, id: &NodeId) -> Value {
        let spread = self.spread();
        json!({
            "id": id.to_string(),
            "sent": self.sent,
            "received": self.rtts.len(),
            "loss_percent": self.loss(),
            "min_ms": spread.as_ref().map(|s| ms_json(s.min)),
            "p50_ms": spread.as_ref().map(|s| ms_json(s.p50)),
            "p99_ms": spread.as_ref().map(|s| ms_json(s.p99)),
            "max_ms": spread.as_ref().map(|s| ms_json(s.max)),
            "errors": self.errors,
        })
    }
}

/// The summary: a title, a row per node, then the errors seen.
fn summary(cluster: &str, results: &BTreeMap<NodeId, Results>) -> Vec<String> {
    let mut lines = vec![format!(
        "--- cluster {cluster}: {} pinged ---",
        count(results.len(), "node")
    )];
    let mut t = Table::new(&["ID", "SENT", "RECEIVED", "LOSS", "MIN", "P50", "P99", "MAX"]);
    for (id, r) in results {
        let cell = |f: fn(&Spread) -> Duration| r.spread().map_or("-".into(), |s| millis(f(&s)));
        t.row(vec![
            id.to_string(),
            r.sent.to_string(),
            r.rtts.len().to_string(),
            format!("{}%", r.loss()),
            cell(|s| s.min),
            cell(|s| s.p50),
            cell(|s| s.p99),
            cell(|s| s.max),
        ]);
    }
    lines.extend(t.lines(0, None));
    for (id, r) in results {
        for (e, n) in &r.errors {
            lines.push(format!("{id}: {n} x {e}"));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Results {
        Results {
            sent: v.len() + 1,
            rtts: v.iter().map(|&m| Duration::from_millis(m)).collect(),
            errors: [("no answer".to_string(), 1)].into(),
        }
    }

    #[test]
    fn spread_by_nearest_rank() {
        let r = ms(&[5, 1, 3, 2, 4]);
        let s = r.spread().unwrap();
        let d = Duration::from_millis;
        assert_eq!(
            s,
            Spread {
                min: d(1),
                p50: d(3),
                p99: d(5),
                max: d(5)
            }
        );
        assert_eq!(r.loss(), 16);
        let hundred: Vec<u64> = (1..=100).collect();
        let s = ms(&hundred).spread().unwrap();
        assert_eq!((s.p50, s.p99), (d(50), d(99)));
        assert_eq!(ms(&[]).spread(), None);
        assert_eq!(ms(&[]).loss(), 100);
    }

    #[test]
    fn the_summary_has_a_row_per_node_and_the_errors() {
        let id = NodeId::parse(&"0a".repeat(16)).unwrap();
        let lines = summary("lab", &[(id.clone(), ms(&[1, 2]))].into());
        assert_eq!(lines[0], "--- cluster lab: 1 node pinged ---");
        assert!(lines[1].starts_with("ID "), "{lines:?}");
        assert!(
            lines[2].starts_with(&format!("{id}  3     2         33%   1.00 ms")),
            "{lines:?}"
        );
        assert_eq!(lines[3], format!("{id}: 1 x no answer"));
    }
}
