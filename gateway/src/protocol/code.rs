//! Error codes of the client protocol: one per problem, named in every error
//! frame (`{"type":"error","code":...}`) and listed in `PROTOCOL.md`.

use std::fmt;

/// What went wrong with a client's message (or with the connection).
///
/// ```
/// use tcpnet_gateway::Code;
/// assert_eq!(Code::BadChannel.as_str(), "bad-channel");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The frame is not JSON, or not a JSON object.
    BadJson,
    /// A binary frame: the protocol is JSON text frames only.
    BinaryFrame,
    /// The object has no `type` field, or it is not a string.
    MissingType,
    /// The `type` is not one the server knows.
    UnknownType,
    /// A field is missing, has the wrong JSON type, or is not known for the type.
    BadField,
    /// The text frame is larger than the message size limit.
    TooLarge,
    /// A channel name is empty, too long, or has a character outside `[A-Za-z0-9._:@-]`.
    BadChannel,
    /// A key is empty, too long, or has a control character.
    BadKey,
    /// An event name is invalid (the same rules as channels).
    BadEvent,
    /// A procedure name is invalid (the same rules as channels).
    BadProcedure,
    /// The connection sends faster than its rate limit; the message was dropped.
    RateLimited,
    /// The connection already has the most subscriptions allowed.
    TooManySubscriptions,
    /// The connection already watches the most keys allowed.
    TooManyWatches,
    /// The connection already has the most procedure calls under way.
    TooManyCalls,
    /// The channel authorization hook refused the subscription or publish.
    Forbidden,
    /// The message hook stopped the message: it went nowhere.
    Stopped,
    /// Unsubscribe from a channel the connection is not subscribed to.
    NotSubscribed,
    /// Send to a key that has no connection anywhere in the cluster.
    KeyOffline,
    /// A transmitted event has no receiver on this node nor on any backend.
    NoReceiver,
    /// No procedure of that name is served on this node nor on any backend.
    UnknownProcedure,
    /// The procedure did not answer within the call's timeout.
    Timeout,
    /// The procedure answered with a named error (see `name` and `message`).
    Remote,
    /// The call failed another way: the serving node left, was busy, dropped
    /// the call, or answered with something that is not JSON.
    CallFailed,
    /// The message could not be handed to the cluster (the node is closing).
    Unavailable,
    /// Messages of a channel were lost on this node because its reader fell
    /// behind (the `count` field says how many).
    MessagesLost,
}

impl Code {
    /// Every code, in the order `PROTOCOL.md` lists them.
    pub const ALL: [Code; 25] = [
        Code::BadJson,
        Code::BinaryFrame,
        Code::MissingType,
        Code::UnknownType,
        Code::BadField,
        Code::TooLarge,
        Code::BadChannel,
        Code::BadKey,
        Code::BadEvent,
        Code::BadProcedure,
        Code::RateLimited,
        Code::TooManySubscriptions,
        Code::TooManyWatches,
        Code::TooManyCalls,
        Code::Forbidden,
        Code::Stopped,
        Code::NotSubscribed,
        Code::KeyOffline,
        Code::NoReceiver,
        Code::UnknownProcedure,
        Code::Timeout,
        Code::Remote,
        Code::CallFailed,
        Code::Unavailable,
        Code::MessagesLost,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadJson => "bad-json",
            Code::BinaryFrame => "binary-frame",
            Code::MissingType => "missing-type",
            Code::UnknownType => "unknown-type",
            Code::BadField => "bad-field",
            Code::TooLarge => "too-large",
            Code::BadChannel => "bad-channel",
            Code::BadKey => "bad-key",
            Code::BadEvent => "bad-event",
            Code::BadProcedure => "bad-procedure",
            Code::RateLimited => "rate-limited",
            Code::TooManySubscriptions => "too-many-subscriptions",
            Code::TooManyWatches => "too-many-watches",
            Code::TooManyCalls => "too-many-calls",
            Code::Forbidden => "forbidden",
            Code::Stopped => "stopped",
            Code::NotSubscribed => "not-subscribed",
            Code::KeyOffline => "key-offline",
            Code::NoReceiver => "no-receiver",
            Code::UnknownProcedure => "unknown-procedure",
            Code::Timeout => "timeout",
            Code::Remote => "remote",
            Code::CallFailed => "call-failed",
            Code::Unavailable => "unavailable",
            Code::MessagesLost => "messages-lost",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A problem with one client message: its code, a message naming what was
/// wrong, and the message's `id` when it had one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Problem {
    /// The code.
    pub code: Code,
    /// What was wrong, for a person.
    pub message: String,
}

impl Problem {
    /// A problem with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Problem {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PROTOCOL.md` documents every code, in one table row each.
    #[test]
    fn the_protocol_document_lists_every_code() {
        let doc = include_str!("../../PROTOCOL.md");
        for code in Code::ALL {
            let row = format!("\n| `{code}` |");
            assert_eq!(doc.matches(&row).count(), 1, "{row} in PROTOCOL.md");
        }
    }
}
