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
    /// Entries in `presence`, over every channel.
    members: usize,
}

/// The most another node's share of the view may hold. Every node keeps
/// every other's keys and members, so without a bound one member of the
/// cluster could make every gateway hold whatever it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareLimits {
    /// Keys one node may hold (an honest node holds at most one per
    /// connection).
    pub keys: usize,
    /// Channel members one node may hold, over every channel (an honest
    /// node holds at most one per subscription).
    pub members: usize,
}

impl Default for ShareLimits {
    fn default() -> Self {
        ShareLimits {
            keys: 65_536,
            members: 1 << 20,
        }
    }
}

/// A node's share passed a [`ShareLimits`] bound: the whole share was
/// dropped (its keys went offline, its members left: `changes`), and the
/// node's changes are ignored until it sends a snapshot within the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node} passed the most {what} a node may hold in the view ({max}): its keys and members are dropped until a snapshot within the limit")]
pub struct OverLimit {
    /// The node.
    pub node: String,
    /// `keys` or `members`.
    pub what: &'static str,
    /// The limit.
    pub max: usize,
    /// What dropping the node's share changed.
    pub changes: Vec<Change>,
}

/// Every known gateway node's keys and channel members.
#[derive(Debug, Default)]
pub struct View {
    nodes: HashMap<String, NodeState>,
    /// key -> how many nodes hold it.
    holders: HashMap<String, usize>,
    /// The node keeping this view: its own share is bounded by its own
    /// limits on connections, not by `limits`.
    local: String,
    limits: ShareLimits,
    /// Nodes whose share passed a limit: their changes are ignored until
    /// a snapshot within the limits.
    refused: HashSet<String>,
}

impl View {
    /// An empty view kept by node `local`, holding at most `limits` of
    /// every other node.
    pub fn new(local: &str, limits: ShareLimits) -> View {
        View {
            local: local.to_string(),
            limits,
            ..View::default()
        }
    }

    /// Applies one change of `node`'s state. A change of a node whose share
    /// was dropped for passing a limit changes nothing; one that makes a
    /// node's share pass a limit drops the share (see [`OverLimit`]).
    pub fn apply(&mut self, node: &str, op: Op) -> Result<Vec<Change>, OverLimit> {
        if self.refused.contains(node) {
            return Ok(Vec::new());
        }
        let limits = self.limits;
        let bounded = node != self.local;
        let mut out = Vec::new();
        let st = self.nodes.entry(node.to_string()).or_default();
        match op {
            Op::KeyOn { key } => {
                if bounded && st.keys.len() >= limits.keys && !st.keys.contains(&key) {
                    return Err(self.over(node, "keys", limits.keys));
                }
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
                let known = st.presence.get(&channel).and_then(|m| m.get(&conn));
                if known.is_none() && bounded && st.members >= limits.members {
                    return Err(self.over(node, "members", limits.members));
                }
                if known != Some(&key) {
                    if known.is_none() {
                        st.members += 1;
                    }
                    let members = st.presence.entry(channel.clone()).or_default();
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
                        st.members -= 1;
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
        Ok(out)
    }

    /// Drops `node`'s share for passing the limit on `what`, and ignores
    /// its changes until a snapshot within the limits.
    fn over(&mut self, node: &str, what: &'static str, max: usize) -> OverLimit {
        let changes = self.remove(node);
        self.refused.insert(node.to_string());
        OverLimit {
            node: node.to_string(),
            what,
            max,
            changes,
        }
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
    /// difference only. A snapshot passing a limit drops the node's share
    /// (see [`OverLimit`]); one within the limits is taken even from a node
    /// whose share was dropped.
    pub fn replace(&mut self, node: &str, snap: Snapshot) -> Result<Vec<Change>, OverLimit> {
        let mut ops = Vec::new();
        let new_keys: HashSet<String> = snap.keys.into_iter().collect();
        let mut new_presence: HashMap<String, HashMap<String, String>> = HashMap::new();
        for (channel, members) in snap.presence {
            new_presence.entry(channel).or_default().extend(members);
        }
        if node != self.local {
            let members: usize = new_presence.values().map(HashMap::len).sum();
            if new_keys.len() > self.limits.keys {
                return Err(self.over(node, "keys", self.limits.keys));
            }
            if members > self.limits.members {
                return Err(self.over(node, "members", self.limits.members));
            }
        }
        self.refused.remove(node);
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
            out.extend(
                self.apply(node, op)
                    .expect("within the limits, checked above"),
            );
        }
        Ok(out)
    }

    /// Forgets `node` (it left the cluster): its keys and members go.
    pub fn remove(&mut self, node: &str) -> Vec<Change> {
        self.refused.remove(node);
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

    fn ap(v: &mut View, node: &str, op: Op) -> Vec<Change> {
        v.apply(node, op).expect("within the limits")
    }
    fn rp(v: &mut View, node: &str, snap: Snapshot) -> Vec<Change> {
        v.replace(node, snap).expect("within the limits")
    }
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
        assert_eq!(ap(&mut v, "a", on("k")), vec![Change::Online("k".into())]);
        assert_eq!(ap(&mut v, "b", on("k")), vec![]);
        assert_eq!(
            ap(&mut v, "a", on("k")),
            vec![],
            "an assignment, not a count"
        );
        assert_eq!(v.holders("k"), vec!["a", "b"]);
        assert_eq!(ap(&mut v, "a", off("k")), vec![]);
        assert!(v.online("k"));
        assert_eq!(ap(&mut v, "b", off("k")), vec![Change::Offline("k".into())]);
        assert_eq!(ap(&mut v, "b", off("k")), vec![]);
        assert!(!v.online("k"));
    }

    #[test]
    fn a_node_that_leaves_takes_its_keys_and_members() {
        let mut v = View::default();
        ap(&mut v, "a", on("k"));
        ap(&mut v, "a", on("only-a"));
        ap(&mut v, "b", on("k"));
        ap(&mut v, "a", join("room", "a.1", "k"));
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
            ap(&mut v, "a", join("room", "a.1", "k")),
            vec![Change::Join("room".into(), member("a.1", "k", "a"))]
        );
        assert_eq!(ap(&mut v, "a", join("room", "a.1", "k")), vec![]);
        ap(&mut v, "b", join("room", "b.1", "j"));
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
            ap(&mut v, "a", leave.clone()),
            vec![Change::Leave("room".into(), member("a.1", "k", "a"))]
        );
        assert_eq!(ap(&mut v, "a", leave), vec![]);
    }

    #[test]
    fn a_snapshot_replaces_with_the_difference_only() {
        let mut v = View::default();
        ap(&mut v, "a", on("stay"));
        ap(&mut v, "a", on("go"));
        ap(&mut v, "a", join("room", "a.1", "stay"));
        let mut snap = Snapshot {
            keys: vec!["stay".into(), "new".into()],
            ..Default::default()
        };
        snap.presence
            .insert("room".into(), vec![("a.2".into(), "new".into())]);
        let mut changes = rp(&mut v, "a", snap.clone());
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
        assert!(rp(&mut v, "a", snap).is_empty());
    }

    /// Replaying changes a snapshot already holds ends in the snapshot's state.
    #[test]
    fn replayed_changes_after_a_snapshot_change_nothing() {
        let ops = vec![on("k"), join("room", "a.1", "k"), off("k"), on("j")];
        let mut source = View::default();
        for op in &ops {
            ap(&mut source, "a", op.clone());
        }
        let snap = source.snapshot("a");
        let mut v = View::default();
        rp(&mut v, "a", snap.clone());
        for op in ops {
            ap(&mut v, "a", op);
        }
        let mut got = v.snapshot("a");
        let mut want = snap;
        got.keys.sort();
        want.keys.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn a_node_passing_a_limit_loses_its_share_until_a_snapshot_within_it() {
        let limits = ShareLimits {
            keys: 2,
            members: 2,
        };
        let mut v = View::new("me", limits);
        ap(&mut v, "a", on("k1"));
        ap(&mut v, "a", on("k2"));
        ap(&mut v, "a", on("k2"));
        ap(&mut v, "a", join("room", "a.1", "k1"));
        ap(&mut v, "b", on("k1"));
        let over = v.apply("a", on("k3")).unwrap_err();
        assert_eq!((over.what, over.max), ("keys", 2));
        assert!(over.changes.contains(&Change::Offline("k2".into())));
        assert!(over
            .changes
            .contains(&Change::Leave("room".into(), member("a.1", "k1", "a"))));
        assert_eq!(
            over.changes.len(),
            2,
            "k1 stays online on b: {:?}",
            over.changes
        );
        assert!(v.online("k1") && !v.online("k2") && !v.online("k3"));
        // Its changes are ignored from then on.
        assert_eq!(ap(&mut v, "a", on("k4")), vec![]);
        assert!(!v.online("k4"));
        // A snapshot past a limit is refused too; one within them is taken.
        let big = Snapshot {
            keys: vec!["x".into(), "y".into(), "z".into()],
            ..Default::default()
        };
        assert_eq!(v.replace("a", big).unwrap_err().what, "keys");
        let small = Snapshot {
            keys: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(rp(&mut v, "a", small), vec![Change::Online("x".into())]);
        assert_eq!(ap(&mut v, "a", on("y")), vec![Change::Online("y".into())]);

        // Members, over every channel; a member already known is no more.
        ap(&mut v, "c", join("r1", "c.1", "k"));
        ap(&mut v, "c", join("r2", "c.1", "k"));
        ap(&mut v, "c", join("r2", "c.1", "k"));
        let over = v.apply("c", join("r3", "c.1", "k")).unwrap_err();
        assert_eq!((over.what, over.max), ("members", 2));
        assert_eq!(over.changes.len(), 2);
        assert!(v.members("r1").is_empty());
        let mut many = Snapshot::default();
        many.presence.insert(
            "r".into(),
            (1..=3).map(|i| (format!("c.{i}"), "k".into())).collect(),
        );
        assert_eq!(v.replace("c", many).unwrap_err().what, "members");

        // The local node's own share is bounded by its own limits.
        for k in ["1", "2", "3"] {
            ap(&mut v, "me", on(k));
        }
        assert!(v.online("3"));
        // A node that leaves is forgotten, refusal included.
        v.remove("c");
        assert_eq!(ap(&mut v, "c", join("r1", "c.1", "k")).len(), 1);
    }
}
