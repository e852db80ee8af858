//! With the `metrics` feature: a running node's figures (see
//! [`Service::stats`](crate::Service::stats)) handed to the `metrics`
//! facade once a second, under the names the README lists, labelled with
//! the node's id (and the peer's, for a link's).

use std::sync::Arc;
use std::time::Duration;

use crate::node::running::Node;
use crate::stats::Stats;

/// How often the figures are handed over.
const EVERY: Duration = Duration::from_secs(1);

/// Hands the node's figures over every [`EVERY`] until it closes.
pub(crate) async fn run(node: Arc<Node>) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = node.cancel().cancelled() => return,
            _ = tick.tick() => record(&node.id().to_string(), &node.stats()),
        }
    }
}

/// Sets every metric to its figure in `s`.
fn record(id: &str, s: &Stats) {
    use metrics::{counter, gauge, Label};
    let node = Label::new("node", id.to_string());
    for (name, v) in [
        ("tcpnet_dials_total", s.dials),
        ("tcpnet_redials_total", s.redials),
        ("tcpnet_bad_mdns_records_total", s.bad_mdns_records),
        ("tcpnet_relayed_total", s.relayed),
        ("tcpnet_relay_dropped_total", s.relay_dropped),
        ("tcpnet_deduplicated_total", s.deduplicated),
        ("tcpnet_stalled_links_total", s.stalled_links),
        ("tcpnet_unanswered_hints_total", s.unanswered_hints),
        ("tcpnet_unread_links_total", s.unread_links),
        ("tcpnet_missed_errors_total", s.missed_errors),
        ("tcpnet_early_dropped_total", s.early_dropped),
    ] {
        counter!(name, vec![node.clone()]).absolute(v);
    }
    let h = &s.handshake_failures;
    for (cause, v) in [
        ("timeout", h.timeout),
        ("refused", h.refused),
        ("malformed", h.malformed),
        ("secret", h.secret),
        ("no_slot", h.no_slot),
        ("version", h.version),
        ("identity", h.identity),
        ("too_many_links", h.too_many_links),
    ] {
        let labels = vec![node.clone(), Label::new("cause", cause)];
        counter!("tcpnet_handshake_failures_total", labels).absolute(v);
    }
    let r = &s.refused_messages;
    for (cause, v) in [
        ("signature", r.signature),
        ("ahead", r.ahead),
        ("over_budget", r.over_budget),
        ("unknown", r.unknown),
    ] {
        let labels = vec![node.clone(), Label::new("cause", cause)];
        counter!("tcpnet_refused_messages_total", labels).absolute(v);
    }
    gauge!("tcpnet_links", vec![node.clone()]).set(s.links.len() as f64);
    gauge!("tcpnet_queued_bytes", vec![node.clone()]).set(s.queued_bytes as f64);
    for l in &s.links {
        let labels = vec![node.clone(), Label::new("peer", l.peer.to_string())];
        for (name, v) in [
            ("tcpnet_link_frames_in_total", l.frames_in),
            ("tcpnet_link_bytes_in_total", l.bytes_in),
            ("tcpnet_link_frames_out_total", l.frames_out),
            ("tcpnet_link_bytes_out_total", l.bytes_out),
            ("tcpnet_link_dropped_total", l.dropped),
        ] {
            counter!(name, labels.clone()).absolute(v);
        }
        for (name, v) in [
            ("tcpnet_link_send_queue", l.send_queue as f64),
            ("tcpnet_link_send_queue_bytes", l.send_queue_bytes as f64),
            ("tcpnet_link_receive_queue", l.receive_queue as f64),
        ] {
            gauge!(name, labels.clone()).set(v);
        }
        if let (Some(srtt), Some(rttvar)) = (l.srtt, l.rttvar) {
            gauge!("tcpnet_link_srtt_seconds", labels.clone()).set(srtt.as_secs_f64());
            gauge!("tcpnet_link_rttvar_seconds", labels).set(rttvar.as_secs_f64());
        }
    }
}
