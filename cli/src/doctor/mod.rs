//! `tcpnet doctor`: checks this host for what stops tcpnet nodes finding
//! each other, and prints a diagnosis with the fix for each problem.
//!
//! In order: the interfaces (up, multicast), the mDNS port (bindable,
//! shared), a node's own announcement (a real tcpnet node of a cluster of
//! its own announces itself; the record must come back, and shows which
//! addresses a node announces on which interface), the nodes of CLUSTER
//! (do they answer, can each address be dialed, does a node of ours link
//! with them), and the clock (the kernel's word, and the start times the
//! cluster's nodes gave in their hellos).

mod clock;
mod interfaces;
mod port;
mod report;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use futures::{FutureExt, StreamExt};
use tcpnet::{MemberState, NodeId, Settings, SERVICE_TYPE};

use crate::args::{DoctorArgs, NodeArgs};
use crate::browse::view::{will_not_link, Entry, What};
use crate::browse::Browser;
use crate::node;
use crate::table::{count, millis};
use crate::term::Progress;
use crate::Failure;
use report::{Finding, Report};

/// The cluster of the node that checks its own announcement: no real
/// cluster's nodes link with it.
const PROBE_CLUSTER: &str = "tcpnet-doctor";
/// How long a TCP connect to a node may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `tcpnet doctor`; `Ok(true)` when no problem was found.
pub(crate) async fn run(args: DoctorArgs) -> Result<bool, Failure> {
    if let Some(cluster) = &args.cluster {
        tcpnet::tcpnet(cluster.as_str()).map_err(|e| Failure::Usage(e.to_string()))?;
    }
    let mut progress = Progress::new();
    let mut report = Report::default();

    progress.show("checking interfaces");
    let ifaces = interfaces::list().map_err(Failure::Error)?;
    report.section("interfaces", interfaces::check(&ifaces));

    // Before this process binds the port itself.
    progress.show("checking UDP 5353");
    let ipv6 = ifaces.iter().any(|i| i.addrs.iter().any(|a| a.is_ipv6()));
    report.section("mDNS port (UDP 5353)", port::check(ipv6));

    progress.show("announcing a node of our own");
    let mut browser = Browser::start(None)?;
    let started = Instant::now();
    let probe =
        tcpnet::tcpnet(Settings::new(PROBE_CLUSTER)).map_err(|e| Failure::Error(e.to_string()))?;
    let probe_instance = format!("{}.{SERVICE_TYPE}", probe.id());
    let listened = probe.listen(0, "0.0.0.0").await;

    // Watch the answers: until our own record is back (and, for a
    // cluster, for the whole browse time).
    let deadline = tokio::time::Instant::now() + args.duration;
    let mut came_back: Option<Duration> = None;
    loop {
        let own = browser.view().get(&probe_instance).is_some_and(is_node);
        if own && came_back.is_none() {
            came_back = Some(started.elapsed());
        }
        if own && args.cluster.is_none() {
            break;
        }
        progress.show(&match &args.cluster {
            Some(c) => format!("listening for nodes of {c}"),
            None => "waiting for our own announcement".to_string(),
        });
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            event = browser.next() => if event.is_none() { break },
        }
    }
    browser.expire_unresolved();
    let expected: BTreeSet<String> = ifaces
        .iter()
        .filter(|i| i.up && i.running && i.multicast && !i.point_to_point)
        .filter(|i| i.addrs.iter().any(|a| a.is_ipv4()))
        .map(|i| i.name.clone())
        .collect();
    report.section(
        "own announcement (a node listening on 0.0.0.0)",
        announcement(
            listened.map(drop),
            browser.view().get(&probe_instance),
            came_back,
            &ifaces,
            &expected,
            args.duration,
        ),
    );

    let mut clock = clock::check(SystemTime::now(), clock::kernel_sync());
    if let Some(cluster) = &args.cluster {
        progress.show(&format!("dialing the nodes of {cluster}"));
        let entries: Vec<Entry> = browser.view().entries().cloned().collect();
        let mut findings = cluster_findings(cluster, &entries, args.duration).await;
        let answered: Vec<NodeId> = entries
            .iter()
            .filter_map(|e| match &e.what {
                What::Node(node, _) if &node.cluster == cluster => Some(node.id.clone()),
                _ => None,
            })
            .collect();
        if !answered.is_empty() {
            progress.show(&format!("joining {cluster}"));
            let (links, started) = join_findings(&args, cluster, &answered).await?;
            findings.extend(links);
            clock.extend(clock::peers(SystemTime::now(), &started));
        }
        report.section(format!("cluster {cluster}"), findings);
    }
    probe.close().await;
    browser.stop();

    report.section("clock", clock);
    progress.clear();
    print!("{}", report.render());
    Ok(report.problems() == 0)
}

fn is_node(e: &Entry) -> bool {
    matches!(e.what, What::Node(..))
}

/// Did our own node announce itself, and did the record come back on every
/// interface that should carry it?
fn announcement(
    listened: tcpnet::Result<()>,
    own: Option<&Entry>,
    came_back: Option<Duration>,
    ifaces: &[interfaces::Interface],
    expected: &BTreeSet<String>,
    waited: Duration,
) -> Vec<Finding> {
    const FIREWALL: &str = "a firewall may drop mDNS: allow UDP 5353 in and out \
                            (ufw allow 5353/udp; firewall-cmd --add-service=mdns)";
    if let Err(e) = listened {
        return vec![Finding::problem(
            format!("a node cannot announce itself: {e}"),
            "see the interfaces above: an interface must be up with multicast on",
        )];
    }
    let (Some(own), Some(after)) = (own, came_back) else {
        return vec![Finding::problem(
            format!(
                "a node announced itself, but its record did not come back within {} s",
                waited.as_secs_f32()
            ),
            FIREWALL,
        )];
    };
    let What::Node(node, _) = &own.what else {
        unreachable!("came_back is set for a node's record only")
    };
    let on: Vec<&str> = own.interfaces.iter().map(String::as_str).collect();
    // Each address with the interface of this host that holds it.
    let addrs: Vec<String> = node
        .addrs
        .iter()
        .map(|a| {
            let on = ifaces.iter().find(|i| i.addrs.contains(&a.ip()));
            match on {
                Some(i) => format!("{} ({})", a.ip(), i.name),
                None => a.ip().to_string(),
            }
        })
        .collect();
    let mut out = vec![Finding::ok(format!(
        "announces {}; the record came back in {} ms on {}",
        addrs.join(", "),
        after.as_millis(),
        if on.is_empty() {
            "-".to_string()
        } else {
            on.join(", ")
        }
    ))];
    for missing in expected.iter().filter(|i| !own.interfaces.contains(*i)) {
        out.push(Finding::problem(
            format!("the record did not come back on {missing}: nodes on its LAN may not hear this host"),
            FIREWALL,
        ));
    }
    out
}

/// Do the nodes of `cluster` answer, and can each be dialed?
async fn cluster_findings(cluster: &str, entries: &[Entry], waited: Duration) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in entries {
        if let What::Bad {
            cluster: c,
            problem,
        } = &e.what
        {
            if c.as_deref().is_none_or(|c| c == cluster) {
                out.push(Finding::problem(
                    format!("bad record {}: {problem}", e.instance),
                    "every node of the cluster reports it as an error: fix or stop what announces it",
                ));
            }
        }
    }
    let nodes: Vec<(&Entry, &tcpnet::Announcement)> = entries
        .iter()
        .filter_map(|e| match &e.what {
            What::Node(node, _) if node.cluster == cluster => Some((e, node)),
            _ => None,
        })
        .collect();
    if nodes.is_empty() {
        let others: BTreeSet<&str> = entries
            .iter()
            .filter_map(|e| match &e.what {
                What::Node(node, _) if node.cluster != PROBE_CLUSTER => Some(node.cluster.as_str()),
                _ => None,
            })
            .collect();
        let seen = if others.is_empty() {
            "no other tcpnet cluster answered either".to_string()
        } else {
            format!(
                "clusters that answered: {}",
                others.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        out.push(Finding::problem(
            format!(
                "no node of {cluster} answered within {} s",
                waited.as_secs_f32()
            ),
            format!("start one, or check the name ({seen}); if they run, see the problems above"),
        ));
        return out;
    }
    out.push(Finding::ok(format!(
        "{} answered: {}",
        count(nodes.len(), "node"),
        nodes
            .iter()
            .map(|(_, n)| n.id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )));
    let lengths: BTreeSet<usize> = nodes.iter().map(|(_, n)| n.id.len()).collect();
    if lengths.len() > 1 {
        out.push(Finding::problem(
            format!("its node ids have different lengths ({lengths:?} hex digits): nodes refuse ids of another length"),
            "give every node of the cluster ids of one length (the default: 32 hex digits)",
        ));
    }
    for (e, node) in nodes {
        if let Some(why) = will_not_link(node) {
            out.push(Finding::problem(
                format!("{}: {why}: tcpnet nodes will not link with it", node.id),
                "run one tcpnet version on every node of the cluster",
            ));
        }
        let dials = futures::future::join_all(node.addrs.iter().map(|a| dial(*a))).await;
        let any_ok = dials.iter().any(|(_, r)| r.is_ok());
        let on = e.interfaces.iter().cloned().collect::<Vec<_>>().join(", ");
        for (addr, result) in dials {
            out.push(match result {
                Ok(took) => Finding::ok(format!(
                    "{} at {addr} (seen on {on}): connected in {}",
                    node.id,
                    millis(took)
                )),
                Err(e) if any_ok => Finding::hint(
                    format!("{} at {addr}: {e}", node.id),
                    "another of its addresses connects, and nodes try each in turn",
                ),
                Err(e) => Finding::problem(
                    format!("{} at {addr} (seen on {on}): {e}", node.id),
                    dial_fix(&e),
                ),
            });
        }
    }
    out
}

/// Joins `cluster` as a node for a moment: does every node that `answered`
/// over mDNS link (its hello accepted, ours accepted by it)? Returns the
/// findings and when each linked node started, as its hello said.
async fn join_findings(
    args: &DoctorArgs,
    cluster: &str,
    answered: &[NodeId],
) -> Result<(Vec<Finding>, Vec<(NodeId, SystemTime)>), Failure> {
    let node_args = NodeArgs {
        cluster: cluster.to_string(),
        secret_file: args.secret_file.clone(),
        key_file: None,
        listen: Ipv4Addr::UNSPECIFIED.into(),
        port: 0,
        peers: Vec::new(),
        wait: args.duration,
    };
    let service = node::join(&node_args)?;
    let mut errors = service.on_error();
    if let Err(Failure::Error(e) | Failure::Usage(e)) =
        node::start(&service, &node_args, |_| true).await
    {
        service.close().await;
        let problem = Finding::problem(
            format!("a node of ours cannot join {cluster}: {e}"),
            "see the interfaces and the mDNS port above",
        );
        return Ok((vec![problem], Vec::new()));
    }
    let members = service.members();
    service.close().await;
    let mut seen = BTreeSet::new();
    while let Some(Some(e)) = errors.next().now_or_never() {
        seen.insert(e.to_string());
    }
    let linked: Vec<&tcpnet::Member> = members
        .iter()
        .filter(|m| matches!(m.state, MemberState::Linked | MemberState::Suspect))
        .collect();
    let mut out = Vec::new();
    let unlinked: Vec<&NodeId> = answered
        .iter()
        .filter(|id| !linked.iter().any(|m| &m.id == *id))
        .collect();
    if !linked.is_empty() {
        out.push(Finding::ok(format!(
            "a node of ours linked with {} of {} within {} s",
            linked.len(),
            count(answered.len(), "node"),
            args.duration.as_secs_f32()
        )));
    }
    for id in unlinked {
        let errors = if seen.is_empty() {
            "no error reported".to_string()
        } else {
            seen.iter().cloned().collect::<Vec<_>>().join("; ")
        };
        out.push(Finding::problem(
            format!("{id} answered over mDNS but did not link with a node of ours: {errors}"),
            if args.secret_file.is_some() {
                "the cluster's nodes must share one secret: check that this --secret-file is \
                 the cluster's, and see the dial results above"
            } else {
                "if the cluster has a secret, pass it: --secret-file FILE (a node without it \
                 fails the handshake); see the dial results above"
            },
        ));
    }
    let started = linked.iter().map(|m| (m.id.clone(), m.started())).collect();
    Ok((out, started))
}

/// A TCP connect to `addr`, and how long it took.
async fn dial(addr: SocketAddr) -> (SocketAddr, Result<Duration, String>) {
    let start = Instant::now();
    let result =
        match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {} s (dropped by a firewall, or a stale address)",
                DIAL_TIMEOUT.as_secs()
            )),
        };
    (addr, result)
}

fn dial_fix(error: &str) -> &'static str {
    if error.contains("refused") {
        "nothing listens there: the node stopped without a goodbye (its record stays until it \
         expires), or a firewall rejects the port"
    } else if error.contains("unreachable") {
        "no route to that address: the node is on another subnet or behind a VPN; \
         use static peers (--peer HOST:PORT, Settings::peer)"
    } else {
        "a firewall on the way may drop the connection: allow the node's TCP port"
    }
}
