//! `tcpnet doctor` as a process: healthy on a good LAN, and naming the
//! problem on a host whose NIC has multicast off, on a host with only
//! loopback, and for a node whose port does not answer.

mod common;

use std::process::Output;

use common::{netns, Host, Lan, Node};
use tcpnet::{Settings, PROTOCOL_VERSION};

fn doctor(h: &Host, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["doctor", "--for", "2s"];
    all.extend_from_slice(args);
    let Output { status, stdout, .. } = h.tcpnet(&all).output().expect("run tcpnet doctor");
    (status.code(), String::from_utf8(stdout).expect("UTF-8"))
}

#[test]
fn healthy_on_a_good_lan() {
    netns(|_| {
        let lan = Lan::new(2);
        let node = Node::start(&lan.hosts[1], Settings::new("good"));
        let (code, report) = doctor(&lan.hosts[0], &["good"]);
        assert_eq!(code, Some(0), "{report}");
        assert!(
            report.contains("ok       lan0: up, multicast; 10.99.0.1"),
            "{report}"
        );
        assert!(report.contains("the record came back in"), "{report}");
        assert!(
            report.contains(&format!("1 node answered: {}", node.id)),
            "{report}"
        );
        assert!(
            report.contains(&format!("{} at 10.99.0.2:", node.id))
                && report.contains("connected in"),
            "{report}"
        );
        assert!(report.ends_with("healthy: no problem found\n"), "{report}");
    });
}

#[test]
fn names_a_nic_with_multicast_off() {
    netns(|_| {
        let lan = Lan::new(2);
        lan.hosts[0].sh("ip link set lan0 multicast off");
        let (code, report) = doctor(&lan.hosts[0], &[]);
        assert_eq!(code, Some(1), "{report}");
        assert!(
            report.contains("PROBLEM  lan0: up, but multicast is off")
                && report.contains("fix: sudo ip link set lan0 multicast on"),
            "{report}"
        );
    });
}

#[test]
fn names_a_host_with_only_loopback() {
    netns(|h| {
        let (code, report) = doctor(&h, &[]);
        assert_eq!(code, Some(1), "{report}");
        assert!(
            report.contains("PROBLEM  no interface but loopback is up"),
            "{report}"
        );
        assert!(report.ends_with("1 problem found\n"), "{report}");
    });
}

/// A record whose port nothing listens on (a node killed without its
/// goodbye): the dial fails and the report says how.
#[test]
fn names_a_node_that_cannot_be_dialed() {
    netns(|_| {
        let lan = Lan::new(2);
        let ghost = "9".repeat(32);
        let v = PROTOCOL_VERSION.to_string();
        let _ghost = lan.hosts[1].plant(&ghost, "10.99.0.2", 9, &[("c", "good"), ("v", &v)]);
        let (code, report) = doctor(&lan.hosts[0], &["good"]);
        assert_eq!(code, Some(1), "{report}");
        assert!(
            report.contains(&format!(
                "PROBLEM  {ghost} at 10.99.0.2:9 (seen on lan0): Connection refused"
            )),
            "{report}"
        );
        assert!(report.contains("fix: nothing listens there"), "{report}");
    });
}

#[test]
fn names_a_cluster_with_no_node() {
    netns(|_| {
        let lan = Lan::new(2);
        let _other = Node::start(&lan.hosts[1], Settings::new("other"));
        let (code, report) = doctor(&lan.hosts[0], &["wanted"]);
        assert_eq!(code, Some(1), "{report}");
        assert!(
            report.contains("PROBLEM  no node of wanted answered within 2 s")
                && report.contains("clusters that answered: other"),
            "{report}"
        );
    });
}
