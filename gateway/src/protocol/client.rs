//! What clients send: parsed from a text frame into a [`ClientMessage`], or
//! a [`Problem`] naming exactly what was wrong. Pure: no I/O.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::code::{Code, Problem};
use super::names::{check_key, check_name};

/// One request from a client, with its optional correlation `id`.
#[derive(Debug)]
pub struct ClientMessage {
    /// The client's id for this message, echoed in the answer (`ok`,
    /// `result` or `error`). Required for `invoke`.
    pub id: Option<u64>,
    /// What the client asks for.
    pub request: Request,
}

/// The requests of the client protocol (see `PROTOCOL.md`).
#[derive(Debug)]
pub enum Request {
    /// Join a channel; with `presence`, also get join/leave notices.
    Subscribe {
        /// The channel.
        channel: String,
        /// Send join/leave notices of this channel to this connection.
        presence: bool,
    },
    /// Leave a channel.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Send `data` to every subscriber of a channel, cluster-wide.
    Publish {
        /// The channel.
        channel: String,
        /// Any JSON value.
        data: Box<RawValue>,
    },
    /// Send `data` to every connection of a key, cluster-wide.
    Send {
        /// The key.
        key: String,
        /// Any JSON value.
        data: Box<RawValue>,
    },
    /// Get `status` notices for these keys (and their status now).
    Watch {
        /// The keys.
        keys: Vec<String>,
    },
    /// Stop the `status` notices for these keys.
    Unwatch {
        /// The keys.
        keys: Vec<String>,
    },
    /// Ask who is in a channel, cluster-wide.
    Presence {
        /// The channel.
        channel: String,
    },
    /// A named event for the server's receivers.
    Transmit {
        /// The event name.
        event: String,
        /// Any JSON value.
        data: Box<RawValue>,
    },
    /// Call a procedure; answered with `result` or `error` carrying the `id`.
    Invoke {
        /// The procedure.
        procedure: String,
        /// Any JSON value.
        data: Box<RawValue>,
        /// How long to wait for the answer, in milliseconds (capped by the
        /// server's limit).
        timeout_ms: Option<u64>,
    },
    /// Answered with `pong`.
    Ping,
}

/// The fields of one message, taken out one by one so that a missing,
/// mistyped or unknown field is named.
struct Fields<'a> {
    ty: &'a str,
    map: BTreeMap<String, &'a RawValue>,
}

impl<'a> Fields<'a> {
    fn take<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, Problem> {
        match self.map.remove(name) {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|e| {
                Problem::new(
                    Code::BadField,
                    format!("field {name:?} of {:?}: {e}", self.ty),
                )
            }),
        }
    }

    fn need<T: DeserializeOwned>(&mut self, name: &str) -> Result<T, Problem> {
        self.take(name)?.ok_or_else(|| {
            Problem::new(
                Code::BadField,
                format!("{:?} needs the field {name:?}", self.ty),
            )
        })
    }

    fn data(&mut self) -> Result<Box<RawValue>, Problem> {
        match self.map.remove("data") {
            Some(raw) => Ok(raw.to_owned()),
            None => Err(Problem::new(
                Code::BadField,
                format!("{:?} needs the field \"data\"", self.ty),
            )),
        }
    }

    fn channel(&mut self) -> Result<String, Problem> {
        let c: String = self.need("channel")?;
        check_name(&c, Code::BadChannel)?;
        Ok(c)
    }

    fn keys(&mut self) -> Result<Vec<String>, Problem> {
        let keys: Vec<String> = self.need("keys")?;
        for k in &keys {
            check_key(k)?;
        }
        Ok(keys)
    }

    /// Every field was used: any left is unknown.
    fn done(self) -> Result<(), Problem> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(Problem::new(
                Code::BadField,
                format!("unknown field {k:?} for {:?}", self.ty),
            )),
        }
    }
}

/// Parses one text frame. On error, the `id` is returned too when the frame
/// had a readable one, so the error frame can carry it.
///
/// ```
/// use tcpnet_gateway::protocol::{parse, Code, Request};
/// let m = parse(r#"{"type":"publish","channel":"room","data":{"n":1}}"#).unwrap();
/// assert!(matches!(m.request, Request::Publish { .. }));
/// let (_, problem) = parse(r#"{"type":"fly","id":3}"#).unwrap_err();
/// assert_eq!(problem.code, Code::UnknownType);
/// ```
pub fn parse(text: &str) -> Result<ClientMessage, (Option<u64>, Problem)> {
    let map: BTreeMap<String, &RawValue> = serde_json::from_str(text).map_err(|e| {
        (
            None,
            Problem::new(Code::BadJson, format!("not a JSON object: {e}")),
        )
    })?;
    let id = match map.get("id") {
        None => None,
        Some(raw) => match serde_json::from_str::<u64>(raw.get()) {
            Ok(id) => Some(id),
            Err(_) => {
                return Err((
                    None,
                    Problem::new(
                        Code::BadField,
                        format!(
                            "field \"id\" must be an unsigned integer, got {}",
                            raw.get()
                        ),
                    ),
                ))
            }
        },
    };
    parse_fields(map, id).map_err(|p| (id, p))
}

fn parse_fields(
    mut map: BTreeMap<String, &RawValue>,
    id: Option<u64>,
) -> Result<ClientMessage, Problem> {
    map.remove("id");
    let ty: String = match map.remove("type") {
        None => return Err(Problem::new(Code::MissingType, "no \"type\" field")),
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
            Problem::new(
                Code::MissingType,
                format!("\"type\" must be a string, got {}", raw.get()),
            )
        })?,
    };
    let mut f = Fields { ty: &ty, map };
    let request = match ty.as_str() {
        "subscribe" => Request::Subscribe {
            channel: f.channel()?,
            presence: f.take("presence")?.unwrap_or(false),
        },
        "unsubscribe" => Request::Unsubscribe {
            channel: f.channel()?,
        },
        "publish" => Request::Publish {
            channel: f.channel()?,
            data: f.data()?,
        },
        "send" => {
            let key: String = f.need("key")?;
            check_key(&key)?;
            Request::Send {
                key,
                data: f.data()?,
            }
        }
        "watch" => Request::Watch { keys: f.keys()? },
        "unwatch" => Request::Unwatch { keys: f.keys()? },
        "presence" => Request::Presence {
            channel: f.channel()?,
        },
        "transmit" => {
            let event: String = f.need("event")?;
            check_name(&event, Code::BadEvent)?;
            Request::Transmit {
                event,
                data: f.data()?,
            }
        }
        "invoke" => {
            if id.is_none() {
                return Err(Problem::new(
                    Code::BadField,
                    "\"invoke\" needs the field \"id\" to carry the answer",
                ));
            }
            let procedure: String = f.need("procedure")?;
            check_name(&procedure, Code::BadProcedure)?;
            Request::Invoke {
                procedure,
                data: f.data()?,
                timeout_ms: f.take("timeout_ms")?,
            }
        }
        "ping" => Request::Ping,
        other => {
            return Err(Problem::new(
                Code::UnknownType,
                format!("unknown type {other:?}"),
            ))
        }
    };
    f.done()?;
    Ok(ClientMessage { id, request })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> (Option<u64>, Code, String) {
        let (id, p) = parse(text).unwrap_err();
        (id, p.code, p.message)
    }

    #[test]
    fn every_request_parses() {
        for text in [
            r#"{"type":"subscribe","channel":"a","presence":true}"#,
            r#"{"type":"unsubscribe","channel":"a"}"#,
            r#"{"type":"publish","channel":"a","data":[1,2]}"#,
            r#"{"type":"send","key":"k","data":null}"#,
            r#"{"type":"watch","keys":["a","b"]}"#,
            r#"{"type":"unwatch","keys":[]}"#,
            r#"{"type":"presence","channel":"a"}"#,
            r#"{"type":"transmit","event":"e","data":"x"}"#,
            r#"{"type":"invoke","id":1,"procedure":"p","data":{},"timeout_ms":50}"#,
            r#"{"type":"ping","id":7}"#,
        ] {
            parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        }
    }

    #[test]
    fn data_is_kept_as_sent() {
        let m = parse(r#"{"type":"publish","channel":"a","data":{"x": [1, 2.5]}}"#).unwrap();
        let Request::Publish { data, .. } = m.request else {
            panic!()
        };
        assert_eq!(data.get(), r#"{"x": [1, 2.5]}"#);
    }

    #[test]
    fn each_bad_input_is_named() {
        assert_eq!(code("{nope").1, Code::BadJson);
        assert_eq!(code("[1]").1, Code::BadJson);
        assert_eq!(code(r#"{"channel":"a"}"#).1, Code::MissingType);
        assert_eq!(code(r#"{"type":5}"#).1, Code::MissingType);
        let (id, c, m) = code(r#"{"type":"fly","id":9}"#);
        assert_eq!((id, c), (Some(9), Code::UnknownType));
        assert!(m.contains("fly"));
        let (_, c, m) = code(r#"{"type":"publish","channel":"a"}"#);
        assert_eq!(c, Code::BadField);
        assert!(m.contains("data"), "{m}");
        let (_, c, m) = code(r#"{"type":"subscribe","channel":7}"#);
        assert_eq!(c, Code::BadField);
        assert!(m.contains("channel"), "{m}");
        let (_, c, m) = code(r#"{"type":"ping","colour":"red"}"#);
        assert_eq!(c, Code::BadField);
        assert!(m.contains("colour"), "{m}");
        assert_eq!(code(r#"{"type":"ping","id":-1}"#).1, Code::BadField);
        assert_eq!(
            code(r#"{"type":"subscribe","channel":"a b"}"#).1,
            Code::BadChannel
        );
        assert_eq!(code(r#"{"type":"send","key":"","data":1}"#).1, Code::BadKey);
        assert_eq!(code(r#"{"type":"watch","keys":[""]}"#).1, Code::BadKey);
        assert_eq!(
            code(r#"{"type":"transmit","event":"","data":1}"#).1,
            Code::BadEvent
        );
        assert_eq!(
            code(r#"{"type":"invoke","id":1,"procedure":"a/b","data":1}"#).1,
            Code::BadProcedure
        );
        assert_eq!(
            code(r#"{"type":"invoke","procedure":"p","data":1}"#).1,
            Code::BadField
        );
    }
}
