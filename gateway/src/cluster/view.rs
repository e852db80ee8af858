//! The cluster state as one node sees it: which keys each gateway node
//! holds and who is in each channel. A pure state machine: every operation
//! returns the [`Change`]s it caused (a key online or offline cluster-wide,
//! a join, a leave), which the caller turns into notices for clients.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::wire::{Op, Snapshot};
use crate::protocol::Member;

/// A change visible to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key has its first connection in the cluster.
    Online(String),
    /// The key's last connection in the cluster is gone.
    Offline(String),
    /// A connection joined a channel.
    Join(String, Member),
    /// A connection left a channel.
    Leave(String, Member),
}

#[derive(Debug, Default)]
struct NodeState {
    keys: HashSet<String>,
    /// channel -> conn -> key
    presence: HashMap<String, HashMap<String, String>>,
}

/// Every known gateway node's keys and channel members.
#[derive(Debug, Default)]
pub struct View {
    nodes: HashMap<String, NodeState>,
    /// key -> how many nodes hold it.
    holders: HashMap<String, usize>,
}

impl View {
    /// Applies one change of `node`'s state.
    pub fn apply(&mut self, node: &str, op: Op) -> Vec<Change> {
        let mut out = Vec::new();
        let st = self.nodes.entry(node.to_string()).or_default();
        match op {
            Op::KeyOn { key } => {
                if st.keys.insert(key.clone()) {
                    let n = self.holders.entry(key.clone()).or_default();
                    *n += 1;
                    if *n == 1 {
                        out.push(Change::Online(key));
                    }
                }
            }
            Op::KeyOff { key } => {
                if st.keys.remove(&key) {
                    self.key_dropped(key, &mut out);
                }
            }
            Op::Join { channel, conn, key } => {
                let members = st.presence.entry(channel.clone()).or_default();
                if members.get(&conn) != Some(&key) {
                    members.insert(conn.clone(), key.clone());
                    out.push(Change::Join(
                        channel,
                        Member {
                            conn,
                            key,
                            node: node.to_string(),
                        },
                    ));
                }
            }
            Op::Leave { channel, conn } => {
                if let Some(members) = st.presence.get_mut(&channel) {
                    if let Some(key) = members.remove(&conn) {
                        if members.is_empty() {
                            st.presence.remove(&channel);
                        }
                        out.push(Change::Leave(
                            channel,
                            Member {
                                conn,
                                key,
                                node: node.to_string(),
                            },
                        ));
                    }
                }
            }
        }
        out
    }

    fn key_dropped(&mut self, key: String, out: &mut Vec<Change>) {
        if let Some(n) = self.holders.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.holders.remove(&key);
                out.push(Change::Offline(key));
            }
        }
    }

    /// Replaces `node`'s state with a snapshot: the changes are the
    /// difference only.
    pub fn replace(&mut self, node: &str, snap: Snapshot) -> Vec<Change> {
        let mut ops = Vec::new();
        let new_keys: HashSet<String> = snap.keys.into_iter().collect();
        let mut new_presence: HashMap<String, HashMap<String, String>> = HashMap::new();
        for (channel, members) in snap.presence {
            new_presence.entry(channel).or_default().extend(members);
        }
        if let Some(old) = self.nodes.get(node) {
            for key in old.keys.difference(&new_keys) {
                ops.push(Op::KeyOff { key: key.clone() });
            }
            for (channel, members) in &old.presence {
                for conn in members.keys() {
                    let still = new_presence
                        .get(channel)
                        .is_some_and(|m| m.contains_key(conn));
                    if !still {
                        ops.push(Op::Leave {
                            channel: channel.clone(),
                            conn: conn.clone(),
                        });
                    }
                }
            }
        }
        for key in new_keys {
            ops.push(Op::KeyOn { key });
        }
        for (channel, members) in new_presence {
            for (conn, key) in members {
                ops.push(Op::Join {
                    channel: channel.clone(),
                    conn,
                    key,
                });
            }
        }
        let mut out = Vec::new();
        for op in ops {
            out.extend(self.apply(node, op));
        }
        out
    }

    /// Forgets `node` (it left the cluster): its keys and members go.
    pub fn remove(&mut self, node: &str) -> Vec<Change> {
        let Some(st) = self.nodes.remove(node) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (channel, members) in st.presence {
            for (conn, key) in members {
                out.push(Change::Leave(
                    channel.clone(),
                    Member {
                        conn,
                        key,
                        node: node.to_string(),
                    },
                ));
            }
        }
        for key in st.keys {
            self.key_dropped(key, &mut out);
        }
        out
    }

    /// `node`'s state, as a snapshot to send.
    pub fn snapshot(&self, node: &str) -> Snapshot {
        let Some(st) = self.nodes.get(node) else {
            return Snapshot::default();
        };
        Snapshot {
            keys: st.keys.iter().cloned().collect(),
            presence: st
                .presence
                .iter()
                .map(|(ch, m)| {
                    let mut v: Vec<_> = m.iter().map(|(c, k)| (c.clone(), k.clone())).collect();
                    v.sort();
                    (ch.clone(), v)
                })
                .collect(),
        }
    }

    /// Whether the key has a connection anywhere.
    pub fn online(&self, key: &str) -> bool {
        self.holders.contains_key(key)
    }

    /// The nodes holding a connection with the key.
    pub fn holders(&self, key: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, st)| st.keys.contains(key))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// Everyone in a channel, sorted.
    pub fn members(&self, channel: &str) -> Vec<Member> {
        let mut v: Vec<Member> = self
            .nodes
            .iter()
            .flat_map(|(node, st)| {
                st.presence.get(channel).into_iter().flat_map(move |m| {
                    m.iter().map(move |(conn, key)| Member {
                        conn: conn.clone(),
                        key: key.clone(),
                        node: node.clone(),
                    })
                })
            })
            .collect();
        v.sort();
        v
    }

    /// Channel -> node -> member count, cluster-wide.
    pub fn channels(&self) -> BTreeMap<String, BTreeMap<String, usize>> {
        let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for (node, st) in &self.nodes {
            for (channel, m) in &st.presence {
                out.entry(channel.clone())
                    .or_default()
                    .insert(node.clone(), m.len());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(k: &str) -> Op {
        Op::KeyOn { key: k.into() }
    }
    fn off(k: &str) -> Op {
        Op::KeyOff { key: k.into() }
    }
    fn join(ch: &str, c: &str, k: &str) -> Op {
        Op::Join {
            channel: ch.into(),
            conn: c.into(),
            key: k.into(),
        }
    }
    fn member(c: &str, k: &str, n: &str) -> Member {
        Member {
            conn: c.into(),
            key: k.into(),
            node: n.into(),
        }
    }

    #[test]
    fn a_key_is_online_from_its_first_node_to_its_last() {
        let mut v = View::default();
        assert_eq!(v.apply("a", on("k")), vec![Change::Online("k".into())]);
        assert_eq!(v.apply("b", on("k")), vec![]);
        assert_eq!(v.apply("a", on("k")), vec![], "an assignment, not a count");
        assert_eq!(v.holders("k"), vec!["a", "b"]);
        assert_eq!(v.apply("a", off("k")), vec![]);
        assert!(v.online("k"));
        assert_eq!(v.apply("b", off("k")), vec![Change::Offline("k".into())]);
        assert_eq!(v.apply("b", off("k")), vec![]);
        assert!(!v.online("k"));
    }

    #[test]
    fn a_node_that_leaves_takes_its_keys_and_members() {
        let mut v = View::default();
        v.apply("a", on("k"));
        v.apply("a", on("only-a"));
        v.apply("b", on("k"));
        v.apply("a", join("room", "a.1", "k"));
        let mut changes = v.remove("a");
        changes.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            changes,
            vec![
                Change::Leave("room".into(), member("a.1", "k", "a")),
                Change::Offline("only-a".into()),
            ]
        );
        assert!(v.online("k"));
        assert!(v.members("room").is_empty());
        assert!(v.remove("a").is_empty());
    }

    #[test]
    fn presence_joins_and_leaves_once() {
        let mut v = View::default();
        assert_eq!(
            v.apply("a", join("room", "a.1", "k")),
            vec![Change::Join("room".into(), member("a.1", "k", "a"))]
        );
        assert_eq!(v.apply("a", join("room", "a.1", "k")), vec![]);
        v.apply("b", join("room", "b.1", "j"));
        assert_eq!(
            v.members("room"),
            vec![member("a.1", "k", "a"), member("b.1", "j", "b")]
        );
        assert_eq!(v.channels()["room"].len(), 2);
        let leave = Op::Leave {
            channel: "room".into(),
            conn: "a.1".into(),
        };
        assert_eq!(
            v.apply("a", leave.clone()),
            vec![Change::Leave("room".into(), member("a.1", "k", "a"))]
        );
        assert_eq!(v.apply("a", leave), vec![]);
    }

    #[test]
    fn a_snapshot_replaces_with_the_difference_only() {
        let mut v = View::default();
        v.apply("a", on("stay"));
        v.apply("a", on("go"));
        v.apply("a", join("room", "a.1", "stay"));
        let mut snap = Snapshot {
            keys: vec!["stay".into(), "new".into()],
            ..Default::default()
        };
        snap.presence
            .insert("room".into(), vec![("a.2".into(), "new".into())]);
        let mut changes = v.replace("a", snap.clone());
        changes.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            changes,
            vec![
                Change::Join("room".into(), member("a.2", "new", "a")),
                Change::Leave("room".into(), member("a.1", "stay", "a")),
                Change::Offline("go".into()),
                Change::Online("new".into()),
            ]
        );
        let mut again = v.snapshot("a");
        again.keys.sort();
        snap.keys.sort();
        assert_eq!(again, snap);
        assert!(v.replace("a", snap).is_empty());
    }

    /// Replaying changes a snapshot already holds ends in the snapshot's state.
    #[test]
    fn replayed_changes_after_a_snapshot_change_nothing() {
        let ops = vec![on("k"), join("room", "a.1", "k"), off("k"), on("j")];
        let mut source = View::default();
        for op in &ops {
            source.apply("a", op.clone());
        }
        let snap = source.snapshot("a");
        let mut v = View::default();
        v.replace("a", snap.clone());
        for op in ops {
            v.apply("a", op);
        }
        let mut got = v.snapshot("a");
        let mut want = snap;
        got.keys.sort();
        want.keys.sort();
        assert_eq!(got, want);
    }
}
