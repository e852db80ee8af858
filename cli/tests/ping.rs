//! `tcpnet ping` as a process on a private LAN: every node is reported
//! with as many replies as rounds, the nodes named only, a node that is not
//! there fails the run, and piped output carries no counter.

mod common;

use std::collections::BTreeMap;

use common::{netns, Host, Lan, Node};
use serde_json::Value;
use tcpnet::Settings;

/// `tcpnet ping crew --json ARGS` on `h`: the status, each node's object
/// by id, and stderr.
fn ping(h: &Host, args: &[&str]) -> (Option<i32>, BTreeMap<String, Value>, String) {
    let mut all = vec!["ping", "crew", "--json"];
    all.extend_from_slice(args);
    let out = h.tcpnet(&all).output().expect("run tcpnet ping");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let nodes = stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            (v["id"].as_str().expect("id").to_string(), v)
        })
        .collect();
    let stderr = String::from_utf8(out.stderr).expect("UTF-8");
    (out.status.code(), nodes, stderr)
}

#[test]
fn ping_reports_every_node() {
    netns(|_| {
        let lan = Lan::new(3);
        let a = Node::start(&lan.hosts[1], Settings::new("crew"));
        let b = Node::start(&lan.hosts[2], Settings::new("crew"));
        let c = Node::start(&lan.hosts[2], Settings::new("crew"));
        let _stranger = Node::start(&lan.hosts[1], Settings::new("other"));
        for n in [&a, &b, &c] {
            n.wait_links(2);
        }

        let h1 = &lan.hosts[0];
        let (code, nodes, stderr) = ping(h1, &["-c", "4", "-i", "20ms", "--wait", "20s"]);
        assert_eq!(code, Some(0), "{nodes:?} {stderr}");
        let mut want = vec![a.id.clone(), b.id.clone(), c.id.clone()];
        want.sort();
        assert_eq!(nodes.keys().cloned().collect::<Vec<_>>(), want);
        for (id, v) in &nodes {
            assert_eq!(
                (v["sent"].as_u64(), v["received"].as_u64()),
                (Some(4), Some(4)),
                "{id}: {v}"
            );
            assert_eq!(v["loss_percent"], 0, "{v}");
            let ms = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
            let (min, p50, p99, max) = (ms("min_ms"), ms("p50_ms"), ms("p99_ms"), ms("max_ms"));
            assert!(0.0 < min && min <= p50 && p50 <= p99 && p99 <= max, "{v}");
        }
        // Piped: the summary only, no counter.
        assert!(!stderr.contains("pinging"), "{stderr}");

        // The nodes named, and only those.
        let (code, nodes, _) = ping(h1, &["-c", "2", "--wait", "20s", b.id.as_str()]);
        assert_eq!(code, Some(0));
        assert_eq!(nodes.keys().collect::<Vec<_>>(), [&b.id]);
        assert_eq!(nodes[&b.id]["received"], 2);

        // The table: a row per node.
        let out = h1
            .tcpnet(&["ping", "crew", "-c", "2", "-i", "20ms", "--wait", "20s"])
            .output()
            .expect("run tcpnet ping");
        let table = String::from_utf8(out.stdout).expect("UTF-8");
        assert!(out.status.success(), "{table}");
        assert!(
            table.starts_with("--- cluster crew: 3 nodes pinged ---\nID "),
            "{table}"
        );
        for id in &want {
            let row = table
                .lines()
                .find(|l| l.starts_with(id.as_str()))
                .unwrap_or_else(|| panic!("no row for {id}: {table}"));
            assert!(row.contains(" 2     2         0% "), "{row}");
        }
    });
}

#[test]
fn a_node_that_is_not_there_fails_the_run() {
    netns(|_| {
        let lan = Lan::new(2);
        let there = Node::start(&lan.hosts[1], Settings::new("crew"));
        let ghost = "0a".repeat(16);
        let args = ["-c", "2", "-i", "20ms", "--wait", "2s", &there.id, &ghost];
        let (code, nodes, _) = ping(&lan.hosts[0], &args);
        assert_eq!(code, Some(1));
        assert_eq!(nodes[&there.id]["received"], 2, "{nodes:?}");
        assert_eq!(nodes[&ghost]["received"], 0, "{nodes:?}");
        assert_eq!(
            nodes[&ghost]["errors"][format!("not linked to peer {ghost}")],
            2,
            "{nodes:?}"
        );
    });
}

#[test]
fn no_node_is_an_error() {
    netns(|h| {
        let out = h
            .tcpnet(&["ping", "nobody", "--wait", "500ms"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("no node of nobody linked within 0.5 s"),
            "{stderr}"
        );
    });
}

/// Bad command lines are refused with status 2 and a message naming them.
#[test]
fn bad_arguments_are_named() {
    netns(|h| {
        for (args, says) in [
            (vec!["ping", "c", "xyz"], "\"xyz\": invalid node id"),
            (vec!["ping", "c", "-c", "0"], "0 is not in 1.."),
            (vec!["ping", "bad_name"], "invalid cluster name"),
            (vec!["members", "bad_name"], "invalid cluster name"),
            (vec!["ping", "c", "-i", "soon"], "not a duration"),
        ] {
            let out = h.tcpnet(&args).output().expect("run");
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(says), "{args:?}: {err}");
        }
    });
}
