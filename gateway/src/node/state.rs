//! This node's share of the gateway (its connections, their channels, keys
//! and watches) beside the cluster view, under one lock, so that a change
//! and the notices it causes are ordered the same way for everyone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

use crate::cluster::view::{Change, ShareLimits, View};
use crate::cluster::wire::Op;
use crate::hooks::Client;
use crate::protocol::{server, Member};
use crate::session::Outbox;

/// A connection of this node.
pub(crate) struct LocalConn {
    pub client: Client,
    pub outbox: Arc<Outbox>,
    /// Subscribed channels, each with whether it wants presence notices.
    pub channels: HashMap<String, bool>,
    pub watching: HashSet<String>,
}

/// A channel with subscribers on this node.
pub(crate) struct LocalChannel {
    pub subs: HashMap<String, Arc<Outbox>>,
    /// Subscribers that asked for join/leave notices.
    pub notify: HashSet<String>,
    /// The task reading the channel's tcpnet topic; aborted (which
    /// unsubscribes the topic) when the last subscriber leaves.
    pub reader: tokio::task::AbortHandle,
}

pub(crate) struct State {
    pub me: String,
    pub conns: HashMap<String, LocalConn>,
    pub channels: HashMap<String, LocalChannel>,
    /// key -> this node's connections with it.
    pub keys: HashMap<String, HashMap<String, Arc<Outbox>>>,
    /// key -> this node's connections watching it.
    pub watchers: HashMap<String, HashMap<String, Arc<Outbox>>>,
    pub view: View,
    /// This node's changes, in order, for the sync task to tell the others
    /// (a bounded queue: see `ops_lost`).
    pub ops: mpsc::Sender<Op>,
    /// A change found the queue full: it is in the view but was not
    /// queued, so the sync task sends every peer a snapshot (which holds
    /// it) instead.
    pub ops_lost: bool,
}

impl State {
    pub(crate) fn new(me: String, share: ShareLimits, ops: mpsc::Sender<Op>) -> Self {
        let view = View::new(&me, share);
        State {
            me,
            conns: HashMap::new(),
            channels: HashMap::new(),
            keys: HashMap::new(),
            watchers: HashMap::new(),
            view,
            ops,
            ops_lost: false,
        }
    }

    /// A change of this node's state: applied to the view (with its
    /// notices) and queued for the other nodes.
    pub(crate) fn local(&mut self, op: Op) {
        let changes = self.view.apply(&self.me.clone(), op.clone());
        self.notify(changes.expect("this node's own share is not bounded by the view"));
        if self.ops.try_send(op).is_err() {
            self.ops_lost = true;
        }
    }

    /// Sends the notices for `changes` to the connections that asked.
    pub(crate) fn notify(&self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Online(key) => self.status(&key, true),
                Change::Offline(key) => self.status(&key, false),
                Change::Join(channel, member) => self.presence(true, &channel, &member),
                Change::Leave(channel, member) => self.presence(false, &channel, &member),
            }
        }
    }

    fn status(&self, key: &str, online: bool) {
        if let Some(w) = self.watchers.get(key) {
            let frame = Utf8Bytes::from(server::status(key, online));
            for o in w.values() {
                o.push(frame.clone());
            }
        }
    }

    fn presence(&self, joined: bool, channel: &str, member: &Member) {
        let Some(ch) = self.channels.get(channel) else {
            return;
        };
        if ch.notify.is_empty() {
            return;
        }
        let frame = Utf8Bytes::from(server::presence_change(joined, channel, member));
        for conn in &ch.notify {
            if let Some(o) = ch.subs.get(conn) {
                o.push(frame.clone());
            }
        }
    }
}
