//! `tcpnet doctor` as a process: healthy on a good LAN, and naming the
//! problem on a host whose NIC has multicast off, on a host with only
//! loopback, for a node whose port does not answer, for a cluster with no
//! node, and for a cluster secret it lacks.

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
        assert!(
            report.contains("announces 10.99.0.1 (lan0), 127.0.0.1 (lo); the record came back in"),
            "{report}"
        );
        assert!(
            report.contains(&format!("1 node answered: {}", node.id)),
            "{report}"
        );
        assert!(
            report.contains("ok       a node of ours linked with 1 of 1 node"),
            "{report}"
        );
        assert!(
            report.contains("ok       the start times of 1 node are in this host's past"),
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

/// A node of a cluster with a secret answers, and can be dialed, but does
/// not link without the secret: the report names it and the fix; with the
/// secret it links, and its start time is checked against this host's
/// clock.
#[test]
fn names_a_secret_it_lacks_and_links_with_it() {
    netns(|_| {
        let lan = Lan::new(2);
        let node = Node::start(
            &lan.hosts[1],
            Settings::new("vault").secret("a long random string of 32 bytes+"),
        );
        let (code, report) = doctor(&lan.hosts[0], &["vault"]);
        assert_eq!(code, Some(1), "{report}");
        assert!(
            report.contains(&format!(
                "PROBLEM  {} answered over mDNS but did not link with a node of ours",
                node.id
            )) && report.contains("pass it: --secret-file FILE"),
            "{report}"
        );
        assert!(report.ends_with("1 problem found\n"), "{report}");

        let file = std::env::temp_dir().join(format!("tcpnet-cli-doctor-{}", std::process::id()));
        std::fs::write(&file, "a long random string of 32 bytes+\n").unwrap();
        let (code, report) = doctor(
            &lan.hosts[0],
            &["vault", "--secret-file", file.to_str().unwrap()],
        );
        std::fs::remove_file(&file).unwrap();
        assert_eq!(code, Some(0), "{report}");
        assert!(
            report.contains("ok       a node of ours linked with 1 of 1 node"),
            "{report}"
        );
        assert!(
            report.contains("ok       the start times of 1 node are in this host's past"),
            "{report}"
        );
    });
}
