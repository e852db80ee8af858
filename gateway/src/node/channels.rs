//! Channels: a node subscribes to a channel's tcpnet topic while it has a
//! subscriber, and one task per channel hands each message to the node's
//! subscribers (serialized once, queued without waiting on each).

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use serde_json::value::RawValue;

use super::state::{LocalChannel, State};
use super::Node;
use crate::cluster::wire::{channel_topic, ChannelMessage, Op};
use crate::hooks::{lock, Access, Client};
use crate::protocol::{server, Code, Member, Origin, Problem};

/// Takes `conn` out of a channel's subscribers, with its presence leave;
/// the last one out stops the channel's reader (unsubscribing the topic).
pub(super) fn leave(st: &mut State, channel: &str, conn: &str) {
    let Some(ch) = st.channels.get_mut(channel) else {
        return;
    };
    if ch.subs.remove(conn).is_none() {
        return;
    }
    ch.notify.remove(conn);
    if ch.subs.is_empty() {
        let ch = st.channels.remove(channel).expect("present");
        ch.reader.abort();
    }
    st.local(Op::Leave {
        channel: channel.to_string(),
        conn: conn.to_string(),
    });
}

impl Node {
    /// Subscribes a connection of this node to a channel. On success the
    /// `ok` answering request `ack` (if any) is queued for the client under
    /// the state's lock, before the `join` notices the subscription causes
    /// (its own included), so the client learns it is in before anything
    /// happens there.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        client: &Client,
        channel: &str,
        presence: bool,
        ack: Option<u64>,
    ) -> Result<(), Problem> {
        if !self.hooks.allowed(client, channel, Access::Subscribe) {
            return Err(Problem::new(
                Code::Forbidden,
                format!("not allowed to subscribe to {channel:?}"),
            ));
        }
        let mut st = lock(&self.state);
        let st = &mut *st;
        let Some(conn) = st.conns.get_mut(&client.conn) else {
            return Err(Problem::new(Code::Unavailable, "the connection is closing"));
        };
        if let Some(p) = conn.channels.get_mut(channel) {
            // Already in: only the wish for notices may change.
            *p = presence;
            let ch = st.channels.get_mut(channel).expect("subscribed");
            if presence {
                ch.notify.insert(client.conn.clone());
            } else {
                ch.notify.remove(&client.conn);
            }
            if let Some(id) = ack {
                conn.outbox.text(server::ok(id));
            }
            return Ok(());
        }
        if conn.channels.len() >= self.limits.max_subscriptions {
            return Err(Problem::new(
                Code::TooManySubscriptions,
                format!(
                    "already subscribed to {} channels, the most allowed",
                    conn.channels.len()
                ),
            ));
        }
        conn.channels.insert(channel.to_string(), presence);
        let outbox = conn.outbox.clone();
        if !st.channels.contains_key(channel) {
            let messages = self
                .service
                .subscribe(&channel_topic(channel))
                .map_err(|e| Problem::new(Code::BadChannel, e.to_string()))?;
            let reader = tokio::spawn(read_channel(self.clone(), channel.to_string(), messages));
            st.channels.insert(
                channel.to_string(),
                LocalChannel {
                    subs: Default::default(),
                    notify: Default::default(),
                    reader: reader.abort_handle(),
                },
            );
        }
        let ch = st.channels.get_mut(channel).expect("inserted");
        ch.subs.insert(client.conn.clone(), outbox);
        if presence {
            ch.notify.insert(client.conn.clone());
        }
        if let Some(id) = ack {
            ch.subs[&client.conn].text(server::ok(id));
        }
        st.local(Op::Join {
            channel: channel.to_string(),
            conn: client.conn.clone(),
            key: client.key.clone(),
        });
        Ok(())
    }

    /// Unsubscribes a connection of this node from a channel.
    pub(crate) fn unsubscribe(&self, client: &Client, channel: &str) -> Result<(), Problem> {
        let mut st = lock(&self.state);
        let subscribed = st
            .conns
            .get_mut(&client.conn)
            .and_then(|c| c.channels.remove(channel))
            .is_some();
        if !subscribed {
            return Err(Problem::new(
                Code::NotSubscribed,
                format!("not subscribed to {channel:?}"),
            ));
        }
        leave(&mut st, channel, &client.conn);
        Ok(())
    }

    /// Closes a channel on this node: every subscriber gets
    /// `channel-closed` and is unsubscribed. Returns how many there were.
    pub(crate) fn close_channel_local(&self, channel: &str) -> usize {
        let mut st = lock(&self.state);
        let Some(ch) = st.channels.get(channel) else {
            return 0;
        };
        let frame = Utf8Bytes::from(server::channel_closed(channel));
        let conns: Vec<String> = ch.subs.keys().cloned().collect();
        // The notice comes before the leave notices of the others.
        for o in ch.subs.values() {
            o.push(frame.clone());
        }
        for conn in &conns {
            if let Some(c) = st.conns.get_mut(conn) {
                c.channels.remove(channel);
            }
            leave(&mut st, channel, conn);
        }
        conns.len()
    }

    /// Publishes to a channel, cluster-wide. Returns how many nodes it went
    /// to (this one included if it has subscribers).
    pub(crate) async fn publish(
        &self,
        from: Option<&Client>,
        channel: &str,
        data: Box<RawValue>,
    ) -> Result<usize, Problem> {
        if let Some(client) = from {
            if !self.hooks.allowed(client, channel, Access::Publish) {
                return Err(Problem::new(
                    Code::Forbidden,
                    format!("not allowed to publish to {channel:?}"),
                ));
            }
        }
        let body = serde_json::to_vec(&ChannelMessage {
            conn: from.map(|c| c.conn.clone()),
            key: from.map(|c| c.key.clone()),
            data,
        })
        .expect("serializes");
        self.service
            .publish(&channel_topic(channel), body)
            .await
            .map_err(|e| Problem::new(Code::Unavailable, e.to_string()))
    }

    /// Who is in a channel, cluster-wide.
    pub(crate) fn members(&self, channel: &str) -> Vec<Member> {
        lock(&self.state).view.members(channel)
    }
}

/// Hands each message of a channel's topic to this node's subscribers.
async fn read_channel(node: Arc<Node>, channel: String, mut messages: tcpnet::Messages) {
    let mut lost = 0;
    while let Some(msg) = messages.next().await {
        let body: ChannelMessage = match serde_json::from_slice(msg.data()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%channel, from = %msg.from(), "dropped a malformed channel message: {e}");
                continue;
            }
        };
        // The publisher is proven by the message's signature (or the link
        // it came on): it speaks only for its own connections, so no member
        // can make a message look like another node's client's.
        let from = msg.from().as_str();
        if let Err(e) = body.check_sender(from) {
            tracing::warn!(%channel, "a channel message refused: {e}");
            continue;
        }
        let origin = Origin {
            node: from.to_string(),
            conn: body.conn,
            key: body.key,
        };
        let frame = Utf8Bytes::from(server::message(&channel, &origin, &body.data));
        let dropped = messages.dropped();
        let st = lock(&node.state);
        let Some(ch) = st.channels.get(&channel) else {
            continue;
        };
        if dropped > lost {
            // Said, not silent: the subscribers learn how many they missed.
            let notice = Utf8Bytes::from(server::lost(&channel, dropped - lost));
            tracing::error!(%channel, count = dropped - lost, "channel messages lost: this node's reader fell behind");
            for o in ch.subs.values() {
                o.push(notice.clone());
            }
            lost = dropped;
        }
        for o in ch.subs.values() {
            o.push(frame.clone());
        }
    }
}
