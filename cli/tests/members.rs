//! `tcpnet members` as a process on a private LAN: the view it prints
//! matches the nodes running (ids, addresses, metadata, state), and a
//! cluster with no node is an error.

mod common;

use std::collections::BTreeMap;

use common::{netns, Lan, Node};
use serde_json::{json, Value};
use tcpnet::Settings;

#[test]
fn members_matches_the_nodes() {
    netns(|_| {
        let lan = Lan::new(3);
        let db = Node::start(
            &lan.hosts[1],
            Settings::new("crew").meta("role", "db").meta("zone", "a"),
        );
        let web = Node::start(&lan.hosts[2], Settings::new("crew").meta("role", "web"));
        let plain = Node::start(&lan.hosts[2], Settings::new("crew"));
        let _stranger = Node::start(&lan.hosts[1], Settings::new("other"));
        for n in [&db, &web, &plain] {
            n.wait_links(2);
        }
        let want: BTreeMap<&str, (&str, Value)> = [
            (
                db.id.as_str(),
                ("10.99.0.2", json!({"role": "db", "zone": "a"})),
            ),
            (web.id.as_str(), ("10.99.0.3", json!({"role": "web"}))),
            (plain.id.as_str(), ("10.99.0.3", json!({}))),
        ]
        .into();

        let out = lan.hosts[0]
            .tcpnet(&["members", "crew", "--json", "--wait", "20s"])
            .output()
            .expect("run tcpnet members");
        let stdout = String::from_utf8(out.stdout).expect("UTF-8");
        assert!(out.status.success(), "{}: {stdout}", out.status);
        let mut seen = BTreeMap::new();
        for line in stdout.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let id = v["id"].as_str().expect("id").to_string();
            let (ip, meta) = want
                .get(id.as_str())
                .unwrap_or_else(|| panic!("{id} is not a node of crew: {stdout}"));
            assert_eq!(v["state"], "linked", "{line}");
            assert_eq!(&v["meta"], meta, "{line}");
            let addrs = v["addrs"].as_array().expect("addrs");
            assert!(
                addrs.len() == 1 && addrs[0].as_str().unwrap().starts_with(&format!("{ip}:")),
                "{line}"
            );
            assert!(v["link"]["age_ms"].is_u64(), "{line}");
            // Every link was pinged once: its smoothed RTT has a sample.
            let srtt = v["link"]["srtt_ms"].as_f64().expect("srtt_ms");
            assert!(srtt > 0.0, "{line}");
            assert!(v["started_ms"].as_u64().unwrap() > 0, "{line}");
            assert!(seen.insert(id, ()).is_none(), "listed twice: {stdout}");
        }
        assert_eq!(
            seen.keys().map(String::as_str).collect::<Vec<_>>(),
            want.keys().copied().collect::<Vec<_>>(),
            "{stdout}"
        );

        // The table: a title, then a row per member with its state and metadata.
        let out = lan.hosts[0]
            .tcpnet(&["members", "crew", "--wait", "20s"])
            .output()
            .expect("run tcpnet members");
        let table = String::from_utf8(out.stdout).expect("UTF-8");
        assert!(out.status.success(), "{table}");
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("cluster crew: 3 members"), "{table}");
        for (id, (ip, _)) in &want {
            let row = lines
                .iter()
                .find(|l| l.trim_start().starts_with(id))
                .unwrap_or_else(|| panic!("no row for {id}: {table}"));
            assert!(
                row.contains(" linked ") && row.contains(ip) && row.contains(" ms ± "),
                "{row}"
            );
        }
        assert!(table.contains("role=db,zone=a"), "{table}");
    });
}

#[test]
fn a_cluster_without_nodes_is_an_error() {
    netns(|h| {
        let _other = Node::start(&h, Settings::new("other"));
        let out = h
            .tcpnet(&["members", "nobody", "--wait", "1s"])
            .output()
            .expect("run tcpnet members");
        assert_eq!(out.status.code(), Some(1));
        let stdout = String::from_utf8(out.stdout).expect("UTF-8");
        assert!(stdout.starts_with("cluster nobody: 0 members"), "{stdout}");
        let stderr = String::from_utf8(out.stderr).expect("UTF-8");
        assert!(
            stderr.contains("no node of nobody linked within 1 s"),
            "{stderr}"
        );
    });
}
