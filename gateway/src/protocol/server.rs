//! What the server sends: each frame built once as JSON text (a channel
//! message is built once and shared by every connection it goes to).

use serde::Serialize;
use serde_json::value::RawValue;

use super::code::{Code, Problem};

/// Who sent a message: a client connection (with its key), or a backend
/// through the HTTP API (no connection, no key), and the node it came from.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Origin {
    /// The node the message entered the cluster on.
    pub node: String,
    /// The sending connection; absent for the HTTP API.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub conn: Option<String>,
    /// The sending connection's key; absent for the HTTP API.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
}

/// A connection in a channel's presence.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// The connection id.
    pub conn: String,
    /// Its key.
    pub key: String,
    /// The node holding it.
    pub node: String,
}

fn text(v: &impl Serialize) -> String {
    serde_json::to_string(v).expect("frames serialize")
}

/// `welcome`: the first frame on every connection.
pub fn welcome(conn: &str, node: &str, key: &str, channels: &[String]) -> String {
    #[derive(Serialize)]
    struct W<'a> {
        r#type: &'static str,
        conn: &'a str,
        node: &'a str,
        key: &'a str,
        channels: &'a [String],
    }
    text(&W {
        r#type: "welcome",
        conn,
        node,
        key,
        channels,
    })
}

/// `ok`: a request with an `id` was done.
pub fn ok(id: u64) -> String {
    format!(r#"{{"type":"ok","id":{id}}}"#)
}

/// `pong`: the answer to `ping`.
pub fn pong(id: Option<u64>) -> String {
    match id {
        Some(id) => format!(r#"{{"type":"pong","id":{id}}}"#),
        None => r#"{"type":"pong"}"#.to_string(),
    }
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    code: Code,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
}

/// `error`: a problem with a message (carrying its `id` if it had one).
pub fn error(id: Option<u64>, p: &Problem) -> String {
    text(&ErrorFrame {
        r#type: "error",
        id,
        code: p.code,
        message: &p.message,
        name: None,
        channel: None,
        count: None,
    })
}

/// `error` with code `remote`: a procedure's named error.
pub fn remote_error(id: u64, name: &str, message: &str) -> String {
    text(&ErrorFrame {
        r#type: "error",
        id: Some(id),
        code: Code::Remote,
        message,
        name: Some(name),
        channel: None,
        count: None,
    })
}

/// `error` with code `messages-lost`: `count` messages of `channel` were
/// lost on this node.
pub fn lost(channel: &str, count: u64) -> String {
    text(&ErrorFrame {
        r#type: "error",
        id: None,
        code: Code::MessagesLost,
        message: "this node's reader of the channel fell behind",
        name: None,
        channel: Some(channel),
        count: Some(count),
    })
}

/// `message`: a channel message.
pub fn message(channel: &str, from: &Origin, data: &RawValue) -> String {
    #[derive(Serialize)]
    struct M<'a> {
        r#type: &'static str,
        channel: &'a str,
        from: &'a Origin,
        data: &'a RawValue,
    }
    text(&M {
        r#type: "message",
        channel,
        from,
        data,
    })
}

/// `direct`: a message sent to this connection's key.
pub fn direct(key: &str, from: &Origin, data: &RawValue) -> String {
    #[derive(Serialize)]
    struct D<'a> {
        r#type: &'static str,
        key: &'a str,
        from: &'a Origin,
        data: &'a RawValue,
    }
    text(&D {
        r#type: "direct",
        key,
        from,
        data,
    })
}

/// `status`: a watched key went online or offline (or is, on `watch`).
pub fn status(key: &str, online: bool) -> String {
    #[derive(Serialize)]
    struct S<'a> {
        r#type: &'static str,
        key: &'a str,
        online: bool,
    }
    text(&S {
        r#type: "status",
        key,
        online,
    })
}

/// `join` or `leave`: presence in a channel changed.
pub fn presence_change(joined: bool, channel: &str, member: &Member) -> String {
    #[derive(Serialize)]
    struct P<'a> {
        r#type: &'static str,
        channel: &'a str,
        member: &'a Member,
    }
    text(&P {
        r#type: if joined { "join" } else { "leave" },
        channel,
        member,
    })
}

/// `presence`: who is in a channel, cluster-wide.
pub fn presence(id: Option<u64>, channel: &str, members: &[Member]) -> String {
    #[derive(Serialize)]
    struct P<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        channel: &'a str,
        members: &'a [Member],
    }
    text(&P {
        r#type: "presence",
        id,
        channel,
        members,
    })
}

/// `result`: a procedure's answer.
pub fn result(id: u64, data: &RawValue) -> String {
    #[derive(Serialize)]
    struct R<'a> {
        r#type: &'static str,
        id: u64,
        data: &'a RawValue,
    }
    text(&R {
        r#type: "result",
        id,
        data,
    })
}

/// `channel-closed`: the channel was closed (HTTP `DELETE /channels/{ch}`);
/// the connection is no longer subscribed.
pub fn channel_closed(channel: &str) -> String {
    #[derive(Serialize)]
    struct C<'a> {
        r#type: &'static str,
        channel: &'a str,
    }
    text(&C {
        r#type: "channel-closed",
        channel,
    })
}

/// `disconnected`: the server is about to close this connection, and why.
pub fn disconnected(reason: &str) -> String {
    #[derive(Serialize)]
    struct D<'a> {
        r#type: &'static str,
        reason: &'a str,
    }
    text(&D {
        r#type: "disconnected",
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_json_objects_with_a_type() {
        let raw = RawValue::from_string("{\"a\":1}".into()).unwrap();
        let o = Origin {
            node: "n".into(),
            conn: None,
            key: None,
        };
        let m = Member {
            conn: "c".into(),
            key: "k".into(),
            node: "n".into(),
        };
        for f in [
            welcome("c", "n", "k", &["a".into()]),
            ok(1),
            pong(None),
            error(Some(2), &Problem::new(Code::BadKey, "x")),
            remote_error(3, "bad", "m"),
            lost("a", 4),
            message("a", &o, &raw),
            direct("k", &o, &raw),
            status("k", true),
            presence_change(false, "a", &m),
            presence(None, "a", std::slice::from_ref(&m)),
            result(5, &raw),
            channel_closed("a"),
            disconnected("bye"),
        ] {
            let v: serde_json::Value = serde_json::from_str(&f).unwrap();
            assert!(v["type"].is_string(), "{f}");
        }
        assert_eq!(
            message("a", &o, &raw),
            r#"{"type":"message","channel":"a","from":{"node":"n"},"data":{"a":1}}"#
        );
    }
}
