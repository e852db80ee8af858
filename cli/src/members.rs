//! `tcpnet members`: joins a cluster for a moment and prints its membership
//! view (state, addresses, metadata, round-trip time, link age and start
//! time of each member), as a table or one JSON object a line.

use std::io::Write;
use std::time::SystemTime;

use futures::future::join_all;
use serde_json::{json, Value};
use tcpnet::{LinkInfo, Member, MemberState, Service};

use crate::args::MembersArgs;
use crate::node;
use crate::table::{ago, count, meta_cell, meta_json, millis, ms_json, span, unix_ms, Table};
use crate::Failure;

/// Runs `tcpnet members`; `Ok(false)` when no other member was found.
pub(crate) async fn run(args: MembersArgs) -> Result<bool, Failure> {
    let service = node::join(&args.node)?;
    let outcome = tokio::select! {
        r = members(&service, &args) => r,
        _ = crate::shutdown_signal() => Ok(false),
    };
    service.close().await;
    outcome
}

async fn members(service: &Service, args: &MembersArgs) -> Result<bool, Failure> {
    node::start(service, &args.node, |_| true).await?;
    // A link's smoothed RTT comes from heartbeats, which go out only after
    // a second of quiet: one ping on each link gives it its first sample.
    let linked: Vec<_> = service
        .members()
        .into_iter()
        .filter(|m| m.link.is_some())
        .map(|m| m.id)
        .collect();
    join_all(linked.iter().map(|id| service.ping(id))).await;
    let now = SystemTime::now();
    // This command's own node is a passer-by, not one of the cluster's.
    let others: Vec<Member> = service
        .members()
        .into_iter()
        .filter(|m| !m.is_local())
        .collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        for m in &others {
            let _ = writeln!(out, "{}", member_json(m));
        }
    } else {
        for line in table(&args.node.cluster, service, &others, now) {
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = out.flush();
    if others.is_empty() {
        eprintln!(
            "tcpnet: no node of {} linked within {} s (tcpnet browse {0} lists what is \
             announced; tcpnet doctor {0} says why not)",
            args.node.cluster,
            args.node.wait.as_secs_f32()
        );
    }
    Ok(!others.is_empty())
}

/// The view as a table, with a title line.
fn table(cluster: &str, service: &Service, members: &[Member], now: SystemTime) -> Vec<String> {
    let mut lines = vec![format!(
        "cluster {cluster}: {} (seen from {}, this command's node, not listed)",
        count(members.len(), "member"),
        service.id()
    )];
    if members.is_empty() {
        return lines;
    }
    let mut t = Table::new(&[
        "ID",
        "STATE",
        "ADDRESSES",
        "META",
        "RTT",
        "LINK AGE",
        "STARTED",
    ]);
    for m in members {
        t.row(vec![
            m.id.to_string(),
            state(m.state),
            if m.addrs.is_empty() {
                "-".to_string()
            } else {
                m.addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            },
            meta_cell(&m.meta),
            m.link.as_ref().map_or("-".into(), rtt),
            m.link.as_ref().map_or("-".into(), |l| span(l.age)),
            ago(now, m.started()),
        ]);
    }
    lines.extend(t.lines(2, None));
    lines
}

/// A link's smoothed round-trip time and how much it varies: `0.21 ms ±
/// 0.05`, or `-` before the first sample.
fn rtt(link: &LinkInfo) -> String {
    match (link.srtt, link.rttvar) {
        (Some(srtt), Some(var)) => {
            format!("{} ± {}", millis(srtt), millis(var).trim_end_matches(" ms"))
        }
        (Some(srtt), None) => millis(srtt),
        _ => "-".into(),
    }
}

/// A member's state as a word: `linked`, `suspect`, `relayed`, `left
/// (goodbye)`.
fn state(state: MemberState) -> String {
    match state {
        MemberState::Local => "local".into(),
        MemberState::Linked => "linked".into(),
        MemberState::Suspect => "suspect".into(),
        MemberState::Relayed => "relayed".into(),
        MemberState::Left(why) => format!("left ({why})"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A member as a JSON object.
fn member_json(m: &Member) -> Value {
    json!({
        "id": m.id.to_string(),
        "state": state(m.state),
        "addrs": m.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "meta": meta_json(&m.meta),
        "incarnation": m.incarnation,
        "started_ms": unix_ms(m.started()),
        "link": m.link.as_ref().map(|l| json!({
            "remote": l.remote.to_string(),
            "local": l.local.to_string(),
            "age_ms": l.age.as_millis() as u64,
            "srtt_ms": l.srtt.map(ms_json),
            "rttvar_ms": l.rttvar.map(ms_json),
        })),
    })
}
