//! What a browse has seen: the nodes announced, grouped by cluster, and the
//! bad records, with what is wrong with each. A pure state fed with mDNS
//! events; it renders as a table or as JSON objects.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use mdns_sd::{ResolvedService, ScopedIp};
use serde_json::{json, Value};
use tcpnet::{Announcement, PROTOCOL_VERSION};

/// The prefix of a metadata key in a node's TXT record (`m.role=gateway`).
const META_PREFIX: &str = "m.";

use crate::table::{ago, count, meta_cell, meta_json, unix_ms, Table};

/// How long an instance may stay announced but unresolved (no SRV, TXT or
/// address record) before it counts as a bad record.
pub(crate) const UNRESOLVED_GRACE: Duration = Duration::from_secs(2);

/// One instance of the tcpnet service type, as last seen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The mDNS instance full name.
    pub(crate) instance: String,
    /// A node, or what is wrong with the record.
    pub(crate) what: What,
    /// The interfaces of this host its addresses came in on.
    pub(crate) interfaces: BTreeSet<String>,
    /// When it was first seen, and when its record last arrived changed.
    pub(crate) first_seen: SystemTime,
    /// See `first_seen`.
    pub(crate) last_seen: SystemTime,
}

/// What an instance's record says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum What {
    /// A tcpnet node, with its record's TXT keys that tcpnet does not
    /// read (not `c`, `v`, `k` nor metadata `m.<key>`): another program's, or a
    /// newer tcpnet's.
    Node(Announcement, BTreeMap<String, String>),
    /// A record that is not a usable tcpnet node, and why.
    Bad {
        /// The cluster the record names, if it names one.
        cluster: Option<String>,
        /// What is wrong with it.
        problem: String,
    },
    /// Announced, but not (yet) resolved.
    Unresolved,
}

/// A change to what is seen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// A new instance.
    Added(Entry),
    /// An instance whose record changed.
    Updated(Entry),
    /// An instance gone (a goodbye, or its record expired).
    Removed(Entry),
}

/// Everything seen, for one cluster or all of them.
#[derive(Debug)]
pub(crate) struct View {
    cluster: Option<String>,
    entries: BTreeMap<String, Entry>,
}

impl View {
    /// An empty view of `cluster`'s nodes, or of every cluster's.
    pub(crate) fn new(cluster: Option<String>) -> View {
        View {
            cluster,
            entries: BTreeMap::new(),
        }
    }

    /// The entry of an instance.
    pub(crate) fn get(&self, instance: &str) -> Option<&Entry> {
        self.entries.get(instance)
    }

    /// Every entry, by instance name.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// How many nodes are seen.
    pub(crate) fn nodes(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.what, What::Node(..)))
            .count()
    }

    /// An instance was announced (not resolved yet).
    pub(crate) fn found(&mut self, instance: &str, now: SystemTime) {
        self.entries
            .entry(instance.to_string())
            .or_insert_with(|| Entry {
                instance: instance.to_string(),
                what: What::Unresolved,
                interfaces: BTreeSet::new(),
                first_seen: now,
                last_seen: now,
            });
    }

    /// An instance's record resolved (or changed).
    pub(crate) fn resolved(&mut self, rec: &ResolvedService, now: SystemTime) -> Option<Change> {
        let what = match Announcement::parse(rec) {
            Ok(node) => {
                let txt = rec
                    .txt_properties
                    .iter()
                    .filter(|p| {
                        !matches!(p.key(), "c" | "v" | "k") && !p.key().starts_with(META_PREFIX)
                    })
                    .map(|p| (p.key().to_string(), p.val_str().to_string()))
                    .collect();
                What::Node(node, txt)
            }
            Err(tcpnet::Error::BadRecord { reason, .. }) => What::Bad {
                cluster: rec
                    .txt_properties
                    .get_property_val_str("c")
                    .map(str::to_string),
                problem: reason,
            },
            Err(other) => What::Bad {
                cluster: None,
                problem: other.to_string(),
            },
        };
        if !self.wanted(&what) {
            // A record that moved to another cluster leaves this view.
            return self.removed(&rec.fullname);
        }
        let interfaces = rec
            .addresses
            .iter()
            .flat_map(|ip| match ip {
                ScopedIp::V4(v4) => v4.interface_ids().iter().map(|i| i.name.clone()).collect(),
                ScopedIp::V6(v6) => vec![v6.scope_id().name.clone()],
                _ => vec![],
            })
            .filter(|name| !name.is_empty())
            .collect();
        let old = self.entries.get(&rec.fullname);
        let entry = Entry {
            instance: rec.fullname.clone(),
            what,
            interfaces,
            first_seen: old.map_or(now, |o| o.first_seen),
            last_seen: now,
        };
        let change = match old {
            Some(old) if old.what == What::Unresolved => Change::Added(entry.clone()),
            Some(_) => Change::Updated(entry.clone()),
            None => Change::Added(entry.clone()),
        };
        self.entries.insert(rec.fullname.clone(), entry);
        Some(change)
    }

    /// An instance is gone.
    pub(crate) fn removed(&mut self, instance: &str) -> Option<Change> {
        let old = self.entries.remove(instance)?;
        (old.what != What::Unresolved).then_some(Change::Removed(old))
    }

    /// Instances announced but unresolved for longer than the grace time
    /// become bad records; returns them.
    pub(crate) fn expire_unresolved(&mut self, now: SystemTime) -> Vec<Change> {
        let mut changes = Vec::new();
        for e in self.entries.values_mut() {
            let waited = now.duration_since(e.first_seen).unwrap_or_default();
            if e.what == What::Unresolved && waited >= UNRESOLVED_GRACE {
                e.what = What::Bad {
                    cluster: None,
                    problem: format!(
                        "announced, but no complete record (SRV, TXT and address) \
                         came within {} s",
                        UNRESOLVED_GRACE.as_secs()
                    ),
                };
                changes.push(Change::Added(e.clone()));
            }
        }
        changes
    }

    fn wanted(&self, what: &What) -> bool {
        let Some(want) = &self.cluster else {
            return true;
        };
        match what {
            What::Node(node, _) => &node.cluster == want,
            // A bad record that might be this cluster's: it names it, or none.
            What::Bad { cluster, .. } => cluster.as_ref().is_none_or(|c| c == want),
            What::Unresolved => true,
        }
    }

    /// The nodes by cluster, and the bad records.
    fn grouped(&self) -> (BTreeMap<&str, Vec<&Entry>>, Vec<&Entry>) {
        let mut clusters: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
        let mut bad = Vec::new();
        for e in self.entries.values() {
            match &e.what {
                What::Node(node, _) => clusters.entry(&node.cluster).or_default().push(e),
                What::Bad { .. } => bad.push(e),
                What::Unresolved => {}
            }
        }
        (clusters, bad)
    }

    /// The table: one block per cluster, then the bad records.
    pub(crate) fn table(&self, now: SystemTime, width: Option<usize>) -> Vec<String> {
        let (clusters, bad) = self.grouped();
        let mut out = Vec::new();
        if clusters.is_empty() {
            out.push(match &self.cluster {
                Some(c) => format!("no node of cluster {c} seen"),
                None => "no tcpnet node seen".to_string(),
            });
        }
        for (cluster, nodes) in &clusters {
            out.push(format!("cluster {cluster}: {}", count(nodes.len(), "node")));
            let mut t = Table::new(&[
                "ID",
                "ADDRESSES",
                "PORT",
                "VERSION",
                "META",
                "SEEN ON",
                "FIRST SEEN",
                "LAST SEEN",
            ]);
            for e in nodes {
                let What::Node(node, txt) = &e.what else {
                    continue;
                };
                t.row(vec![
                    node.id.to_string(),
                    node.addrs
                        .iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    node.addrs[0].port().to_string(),
                    version_cell(node),
                    meta_text(node, txt),
                    e.interfaces.iter().cloned().collect::<Vec<_>>().join(","),
                    ago(now, e.first_seen),
                    ago(now, e.last_seen),
                ]);
            }
            out.extend(t.lines(2, width));
        }
        if !bad.is_empty() {
            out.push(format!("bad records: {}", bad.len()));
            let mut t = Table::new(&["INSTANCE", "CLUSTER", "PROBLEM"]);
            for e in bad {
                let What::Bad { cluster, problem } = &e.what else {
                    continue;
                };
                t.row(vec![
                    e.instance.clone(),
                    cluster.clone().unwrap_or_else(|| "-".into()),
                    problem.clone(),
                ]);
            }
            out.extend(t.lines(2, width));
        }
        out
    }

    /// One JSON object per node and bad record.
    pub(crate) fn json(&self) -> Vec<Value> {
        self.entries
            .values()
            .filter(|e| e.what != What::Unresolved)
            .map(entry_json)
            .collect()
    }
}

/// A node or a bad record as a JSON object.
pub(crate) fn entry_json(e: &Entry) -> Value {
    let mut v = match &e.what {
        What::Node(node, txt) => json!({
            "kind": "node",
            "cluster": node.cluster,
            "id": node.id.to_string(),
            "addrs": node.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "port": node.addrs[0].port(),
            "version": node.version,
            "compatible": will_not_link(node).is_none(),
            "key": node.key.map(|k| k.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            "meta": node.meta.as_ref().map_or(Value::Null, meta_json),
            "meta_error": node.meta.as_ref().err().map(|e| e.to_string()),
            "txt": txt,
        }),
        What::Bad { cluster, problem } => json!({
            "kind": "bad",
            "cluster": cluster,
            "problem": problem,
        }),
        What::Unresolved => json!({ "kind": "unresolved" }),
    };
    v["instance"] = json!(e.instance);
    v["interfaces"] = json!(e.interfaces);
    v["first_seen_ms"] = json!(unix_ms(e.first_seen));
    v["last_seen_ms"] = json!(unix_ms(e.last_seen));
    v
}

/// A change as one line of text.
pub(crate) fn change_line(change: &Change) -> String {
    let (sign, e) = match change {
        Change::Added(e) => ('+', e),
        Change::Updated(e) => ('~', e),
        Change::Removed(e) => ('-', e),
    };
    let on = e.interfaces.iter().cloned().collect::<Vec<_>>().join(",");
    match &e.what {
        What::Node(node, txt) => {
            let addrs: Vec<String> = node.addrs.iter().map(|a| a.to_string()).collect();
            let mut line = format!(
                "{sign} node {} cluster {} at {} version {}",
                node.id,
                node.cluster,
                addrs.join(","),
                version_cell(node)
            );
            let meta = meta_text(node, txt);
            if meta != "-" {
                line.push_str(&format!(" meta {meta}"));
            }
            if !on.is_empty() {
                line.push_str(&format!(" on {on}"));
            }
            line
        }
        What::Bad { problem, .. } => format!("{sign} bad record {}: {problem}", e.instance),
        What::Unresolved => format!("{sign} unresolved {}", e.instance),
    }
}

/// A change as a JSON object: the entry, with `"event"`.
pub(crate) fn change_json(change: &Change) -> Value {
    let (event, e) = match change {
        Change::Added(e) => ("added", e),
        Change::Updated(e) => ("updated", e),
        Change::Removed(e) => ("removed", e),
    };
    let mut v = entry_json(e);
    v["event"] = json!(event);
    v
}

/// Why a node of its cluster would not link with a node of this build of
/// tcpnet: another protocol version, or no key to prove in the handshake.
pub(crate) fn will_not_link(node: &Announcement) -> Option<String> {
    if node.version != PROTOCOL_VERSION.to_string() {
        Some(format!(
            "it speaks protocol version {}, this tcpnet speaks {PROTOCOL_VERSION}",
            node.version
        ))
    } else if node.key.is_none() {
        Some("its record has no key (TXT k) to prove in the handshake".into())
    } else {
        None
    }
}

/// The version, flagged when a node of this build of tcpnet would not link
/// with it.
fn version_cell(node: &Announcement) -> String {
    let version = &node.version;
    if version != &PROTOCOL_VERSION.to_string() {
        format!("{version} (not {PROTOCOL_VERSION}: will not link)")
    } else if node.key.is_none() {
        format!("{version} (no key: will not link)")
    } else {
        version.to_string()
    }
}

/// The metadata a node announces (or what is wrong with it: tcpnet dials
/// such a node all the same and takes its metadata from its hello), then
/// any TXT keys tcpnet does not read, in brackets.
fn meta_text(node: &Announcement, txt: &BTreeMap<String, String>) -> String {
    let mut text = match &node.meta {
        Ok(meta) => meta_cell(meta),
        Err(e) => format!("(unreadable: {e})"),
    };
    if !txt.is_empty() {
        let other: Vec<String> = txt.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text = format!("{text} [txt {}]", other.join(","));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdns_sd::ServiceInfo;
    use tcpnet::SERVICE_TYPE;

    use std::time::UNIX_EPOCH;

    fn record(name: &str, props: &[(&str, &str)]) -> ResolvedService {
        ServiceInfo::new(SERVICE_TYPE, name, "h.local.", "10.99.0.2", 7, props)
            .unwrap()
            .as_resolved_service()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn nodes_group_by_cluster_and_bad_records_say_why() {
        let v = PROTOCOL_VERSION.to_string();
        let mut view = View::new(None);
        view.resolved(&record("0a", &[("c", "x"), ("v", &v)]), at(0));
        view.resolved(
            &record("0b", &[("c", "y"), ("v", &v), ("m.role", "db"), ("x", "1")]),
            at(1),
        );
        view.resolved(&record("zz", &[("c", "x"), ("v", &v)]), at(2));
        let table = view.table(at(5), None).join("\n");
        assert!(table.contains("cluster x: 1 node"), "{table}");
        assert!(table.contains("cluster y: 1 node"), "{table}");
        assert!(table.contains("role=db [txt x=1]"), "{table}");
        assert!(table.contains("bad records: 1"), "{table}");
        assert!(table.contains("not a node id"), "{table}");
        assert!(table.contains("5s ago"), "{table}");
        // A record of our version without a key (TXT k) cannot link.
        assert!(
            table.contains(&format!("{v} (no key: will not link)")),
            "{table}"
        );
        let json = view.json();
        assert_eq!(json.len(), 3);
        assert_eq!(json[0]["id"], "0a");
        assert_eq!(json[0]["meta"], json!({}));
        assert_eq!(json[1]["meta"], json!({"role": "db"}));
        assert_eq!(json[1]["txt"], json!({"x": "1"}));
        assert_eq!(json[2]["kind"], "bad");
    }

    #[test]
    fn metadata_that_breaks_the_bounds_is_shown_with_what_is_wrong() {
        let v = PROTOCOL_VERSION.to_string();
        let mut view = View::new(None);
        let change = view.resolved(
            &record("0a", &[("c", "x"), ("v", &v), ("m.Role", "db")]),
            at(0),
        );
        let Some(Change::Added(e)) = change else {
            panic!("{change:?}")
        };
        // Still a node: tcpnet dials it and takes its metadata from its hello.
        assert!(matches!(e.what, What::Node(..)));
        let line = change_line(&Change::Added(e.clone()));
        assert!(
            line.contains("meta (unreadable: key \"Role\" has 'R'"),
            "{line}"
        );
        let v = entry_json(&e);
        assert_eq!(v["meta"], Value::Null);
        assert!(v["meta_error"].as_str().unwrap().contains("Role"), "{v}");
    }

    #[test]
    fn a_cluster_filter_keeps_its_nodes_and_bad_records_that_may_be_its() {
        let v = PROTOCOL_VERSION.to_string();
        let mut view = View::new(Some("x".into()));
        assert!(view
            .resolved(&record("0a", &[("c", "x"), ("v", &v)]), at(0))
            .is_some());
        assert!(view
            .resolved(&record("0b", &[("c", "y"), ("v", &v)]), at(0))
            .is_none());
        assert!(view.resolved(&record("0c", &[("v", &v)]), at(0)).is_some());
        assert!(view.resolved(&record("0d", &[("c", "y")]), at(0)).is_none());
        // A node that moves to another cluster leaves the view.
        let gone = view.resolved(&record("0a", &[("c", "y"), ("v", &v)]), at(1));
        assert!(matches!(gone, Some(Change::Removed(_))));
        assert_eq!(view.json().len(), 1);
    }

    #[test]
    fn changes_added_updated_removed_and_unresolved_after_grace() {
        let v = PROTOCOL_VERSION.to_string();
        let name = format!("0a.{SERVICE_TYPE}");
        let mut view = View::new(None);
        view.found(&name, at(0));
        assert!(view.expire_unresolved(at(1)).is_empty());
        let added = view.resolved(&record("0a", &[("c", "x"), ("v", &v)]), at(1));
        assert!(matches!(added, Some(Change::Added(_))));
        let updated = view.resolved(&record("0a", &[("c", "x"), ("v", "9")]), at(2));
        let Some(Change::Updated(e)) = updated else {
            panic!("{updated:?}")
        };
        assert_eq!((e.first_seen, e.last_seen), (at(0), at(2)));
        assert!(change_line(&Change::Updated(e)).contains("will not link"));
        assert!(matches!(view.removed(&name), Some(Change::Removed(_))));

        let never = format!("0e.{SERVICE_TYPE}");
        view.found(&never, at(10));
        let bad = view.expire_unresolved(at(13));
        assert_eq!(bad.len(), 1);
        assert!(change_json(&bad[0])["problem"]
            .as_str()
            .unwrap()
            .contains("no complete record"));
    }
}
