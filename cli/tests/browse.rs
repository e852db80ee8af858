//! `tcpnet browse` as a process, against tcpnet nodes and planted records.

mod common;

use std::collections::BTreeSet;

use assert_cmd::assert::OutputAssertExt;
use common::{netns, wait_with_deadline, Host, Node, Running};
use serde_json::Value;
use tcpnet::{Settings, PROTOCOL_VERSION, SERVICE_TYPE};

/// (cluster, id) of nodes.
type Nodes = BTreeSet<(String, String)>;
/// (instance, problem) of bad records.
type Bad = Vec<(String, String)>;

/// `--once --json` output: the nodes and the bad records; checks that the
/// real nodes (planted records have none) announce their key.
fn browse_json(host: &Host, args: &[&str], real: &[&Node]) -> (Nodes, Bad) {
    let mut all = vec!["browse", "--once", "--json"];
    all.extend_from_slice(args);
    let out = host.tcpnet(&all).output().expect("run tcpnet browse");
    out.clone().assert().success();
    let mut nodes = BTreeSet::new();
    let mut bad = Vec::new();
    let mut keyed = BTreeSet::new();
    for line in String::from_utf8(out.stdout).expect("UTF-8").lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        match v["kind"].as_str() {
            Some("node") => {
                assert_eq!(v["interfaces"], serde_json::json!(["lo"]), "{line}");
                // A node links with ours if it speaks our version and has a key.
                let ours = v["version"].as_str() == Some(&PROTOCOL_VERSION.to_string())
                    && v["key"].is_string();
                assert_eq!(v["compatible"], ours, "{line}");
                // The key (TXT k) is read, not listed with the unread keys.
                assert_eq!(v["txt"], serde_json::json!({}), "{line}");
                if let Some(key) = v["key"].as_str() {
                    assert!(
                        key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()),
                        "{line}"
                    );
                    keyed.insert(v["id"].as_str().unwrap().to_string());
                }
                nodes.insert((
                    v["cluster"].as_str().unwrap().to_string(),
                    v["id"].as_str().unwrap().to_string(),
                ));
            }
            Some("bad") => bad.push((
                v["instance"].as_str().unwrap().to_string(),
                v["problem"].as_str().unwrap().to_string(),
            )),
            _ => panic!("unexpected object {line}"),
        }
    }
    for node in real {
        assert!(keyed.contains(&node.id), "{} announced no key", node.id);
    }
    (nodes, bad)
}

#[test]
fn browse_once_lists_exactly_the_nodes_and_clusters_present_and_a_bad_record() {
    netns(|h| {
        let a1 = Node::start(&h, Settings::new("alpha"));
        let a2 = Node::start(&h, Settings::new("alpha"));
        let b1 = Node::start(&h, Settings::new("beta"));
        let v = PROTOCOL_VERSION.to_string();
        let _planted = h.plant(
            "zz-not-an-id",
            "127.0.0.1",
            1006,
            &[("c", "alpha"), ("v", &v)],
        );

        let (nodes, bad) = browse_json(&h, &[], &[&a1, &a2, &b1]);
        let want: BTreeSet<(String, String)> =
            [("alpha", &a1.id), ("alpha", &a2.id), ("beta", &b1.id)]
                .into_iter()
                .map(|(c, id)| (c.to_string(), id.clone()))
                .collect();
        assert_eq!(nodes, want);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].0, format!("zz-not-an-id.{SERVICE_TYPE}"));
        assert!(bad[0].1.contains("not a node id"), "{bad:?}");

        // One cluster: its nodes, and the bad record that names it.
        let (nodes, bad) = browse_json(&h, &["beta"], &[&b1]);
        assert_eq!(nodes, [("beta".to_string(), b1.id.clone())].into());
        assert!(bad.is_empty(), "{bad:?}");

        // The table groups by cluster and shows what is wrong.
        let out = h
            .tcpnet(&["browse", "--once", "--for", "1s"])
            .output()
            .expect("run");
        let table = String::from_utf8(out.stdout).unwrap();
        assert!(table.contains("cluster alpha: 2 nodes"), "{table}");
        assert!(table.contains("cluster beta: 1 node"), "{table}");
        assert!(table.contains("bad records: 1"), "{table}");
        for id in [&a1.id, &a2.id, &b1.id] {
            assert!(table.contains(id.as_str()), "{table}");
        }
    });
}

#[test]
fn another_protocol_version_and_a_missing_cluster_are_reported() {
    netns(|h| {
        let ok = Node::start(&h, Settings::new("alpha"));
        let newer = h.plant(
            &"e".repeat(32),
            "127.0.0.1",
            1007,
            &[("c", "alpha"), ("v", "99")],
        );
        let _no_cluster = h.plant(&"d".repeat(32), "127.0.0.1", 1008, &[("v", "1")]);
        let (nodes, bad) = browse_json(&h, &["alpha"], &[&ok]);
        // A node of another version is a node (it says which), not a bad record.
        assert_eq!(
            nodes,
            [
                ("alpha".to_string(), ok.id.clone()),
                ("alpha".to_string(), "e".repeat(32)),
            ]
            .into()
        );
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].1.contains("TXT c"), "{bad:?}");
        let out = h
            .tcpnet(&["browse", "alpha", "--once", "--for", "1s"])
            .output()
            .expect("run");
        let table = String::from_utf8(out.stdout).unwrap();
        let flagged = format!("99 (not {PROTOCOL_VERSION}: will not link)");
        assert!(table.contains(&flagged), "{table}");
        drop(newer);
    });
}

/// Piped, browse prints a line as each node comes and goes.
#[test]
fn piped_browse_prints_nodes_as_they_come_and_go() {
    netns(|h| {
        let mut cmd = h.tcpnet(&["browse", "--json", "gamma"]);
        cmd.stderr(std::process::Stdio::null());
        let mut browse = Running::start(cmd);
        let node = Node::start(&h, Settings::new("gamma"));
        let id = node.id.clone();
        let has = |event: &'static str, id: String| {
            move |line: &str| {
                let v: Value = serde_json::from_str(line).expect("JSON");
                v["event"] == event && v["id"] == id.as_str()
            }
        };
        browse.wait_line("adding the node", has("added", id.clone()));
        node.close();
        browse.wait_line("removing the node", has("removed", id.clone()));
        // Ends cleanly on SIGTERM.
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(browse.child.id() as i32, libc::SIGTERM) };
        let status = wait_with_deadline(&mut browse.child);
        assert!(status.success(), "{status}");
    });
}
