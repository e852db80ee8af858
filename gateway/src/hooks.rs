//! What an embedding application sees and decides: the client a message
//! comes from, the hooks it may set (key, authorization, message hook), and
//! the streams it may read (connections, disconnections, client events,
//! procedure calls).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::http::request::Parts;
use futures::Stream;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

/// One WebSocket connection, as hooks and streams see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The connection id, unique in the cluster (`<node id>.<n>`).
    pub conn: String,
    /// The key computed from its HTTP request (the connection id if the key
    /// function gave none).
    pub key: String,
    /// The gateway node holding it.
    pub node: String,
}

/// What a connection asks to do with a channel, for the authorization hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive the channel's messages.
    Subscribe,
    /// Send to the channel.
    Publish,
}

/// A client's message that is about to go somewhere, for the message hook.
#[derive(Debug)]
pub enum Action<'a> {
    /// A publish to a channel.
    Publish {
        /// The channel.
        channel: &'a str,
        /// The data, as the client sent it.
        data: &'a RawValue,
    },
    /// A message to a key.
    Send {
        /// The key.
        key: &'a str,
        /// The data.
        data: &'a RawValue,
    },
    /// A transmitted event.
    Transmit {
        /// The event.
        event: &'a str,
        /// The data.
        data: &'a RawValue,
    },
    /// A procedure call.
    Invoke {
        /// The procedure.
        procedure: &'a str,
        /// The data.
        data: &'a RawValue,
    },
}

/// Computes a connection's key from its HTTP request.
pub type KeyFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;
/// Decides whether a client may subscribe or publish to a channel.
pub type AuthorizeFn = dyn Fn(&Client, &str, Access) -> bool + Send + Sync;
/// Decides whether a client's message goes on (`false` stops it; the client
/// gets a `stopped` error).
pub type MessageHook = dyn Fn(&Client, &Action<'_>) -> bool + Send + Sync;

/// The default key function: the `X-Key` header, else the `key` cookie,
/// else the `key` query parameter (browsers cannot set headers on a
/// WebSocket). Values that are not valid keys are ignored.
///
/// ```
/// let req = axum::http::Request::get("/ws?key=alice").body(()).unwrap();
/// let (parts, _) = req.into_parts();
/// assert_eq!(tcpnet_gateway::default_key(&parts).as_deref(), Some("alice"));
/// ```
pub fn default_key(parts: &Parts) -> Option<String> {
    let valid = |k: &str| crate::protocol::check_key(k).is_ok();
    if let Some(k) = parts.headers.get("x-key").and_then(|v| v.to_str().ok()) {
        if valid(k) {
            return Some(k.to_string());
        }
    }
    for cookies in parts.headers.get_all("cookie") {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for c in cookies.split(';') {
            if let Some(("key", v)) = c.trim().split_once('=') {
                if valid(v) {
                    return Some(v.to_string());
                }
            }
        }
    }
    let query = parts.uri.query().unwrap_or("");
    for pair in query.split('&') {
        if let Some(("key", v)) = pair.split_once('=') {
            let v = percent_decode(v)?;
            if valid(&v) {
                return Some(v);
            }
        }
    }
    None
}

/// Decodes `%XX` escapes and `+`; `None` if that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A stream of events for the embedding application (connections,
/// disconnections). Each stream has its own queue of 1024: an event for a
/// full queue is dropped and counted ([`dropped`](Self::dropped)), so a
/// stream nobody reads never slows the gateway.
#[derive(Debug)]
pub struct Events<T> {
    rx: mpsc::Receiver<T>,
    dropped: Arc<AtomicU64>,
}

impl<T> Events<T> {
    /// How many events this stream missed because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl<T> Stream for Events<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
}

/// The queue length of every stream handed to the application.
const STREAM_QUEUE: usize = 1024;

/// The senders of every stream of one kind.
pub(crate) struct Fanout<T> {
    subs: Mutex<Vec<(mpsc::Sender<T>, Arc<AtomicU64>)>>,
}

impl<T: Clone> Fanout<T> {
    pub(crate) fn new() -> Self {
        Fanout {
            subs: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn subscribe(&self) -> Events<T> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        lock(&self.subs).push((tx, dropped.clone()));
        Events { rx, dropped }
    }

    pub(crate) fn emit(&self, item: &T) {
        lock(&self.subs).retain(|(tx, dropped)| match tx.try_send(item.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

/// Locks a mutex, going on if a panicking thread poisoned it (the data
/// guarded here stays consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection closed.
#[derive(Debug, Clone)]
pub struct Disconnection {
    /// The connection.
    pub client: Client,
    /// Why it closed.
    pub reason: String,
}

/// An event a client transmitted.
#[derive(Debug, Clone)]
pub struct ClientEvent {
    /// Who sent it.
    pub client: Client,
    /// The event name.
    pub event: String,
    /// The data, as the client sent it.
    pub data: Box<RawValue>,
}

/// A stream of [`ClientEvent`]s of one name, from
/// [`Gateway::receiver`](crate::Gateway::receiver) (this node's clients) or
/// [`Backend::receiver`](crate::Backend::receiver) (every gateway's clients).
pub struct ClientEvents {
    pub(crate) inner: Pin<Box<dyn Stream<Item = ClientEvent> + Send>>,
}

impl Stream for ClientEvents {
    type Item = ClientEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// How a call's answer travels back.
#[derive(Debug)]
pub(crate) enum Reply {
    /// To a connection of this node.
    Local(oneshot::Sender<Answer>),
    /// Over tcpnet, to the gateway that holds the connection.
    Remote(tcpnet::Request),
}

/// A call's outcome: the data, or a named error.
pub(crate) type Answer = Result<Box<RawValue>, (String, String)>;

/// A client's call to a procedure. Answer it once with [`end`](Self::end)
/// or [`error`](Self::error); dropped unanswered, the client gets a
/// `call-failed` error.
#[derive(Debug)]
pub struct Call {
    /// Who called.
    pub client: Client,
    /// The procedure.
    pub procedure: String,
    /// The data, as the client sent it.
    pub data: Box<RawValue>,
    pub(crate) reply: Reply,
}

/// Why an answer could not be given.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The answer is not serializable as JSON.
    #[error("the answer is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The caller is gone (it disconnected, or its call timed out).
    #[error("the caller is gone")]
    Gone,
    /// The answer could not go back over tcpnet.
    #[error("the answer could not be sent: {0}")]
    Tcpnet(#[from] tcpnet::Error),
}

impl Call {
    /// Answers with `data` (any serializable value); the client gets a
    /// `result`.
    pub async fn end(self, data: impl serde::Serialize) -> Result<(), AnswerError> {
        let raw = serde_json::value::to_raw_value(&data)?;
        match self.reply {
            Reply::Local(tx) => tx.send(Ok(raw)).map_err(|_| AnswerError::Gone),
            Reply::Remote(req) => Ok(req.end(raw.get().to_string()).await?),
        }
    }

    /// Answers with a named error; the client gets an `error` with code
    /// `remote`, this `name` and `message`.
    pub async fn error(self, name: &str, message: &str) -> Result<(), AnswerError> {
        match self.reply {
            Reply::Local(tx) => tx
                .send(Err((name.to_string(), message.to_string())))
                .map_err(|_| AnswerError::Gone),
            Reply::Remote(req) => Ok(req.error(name, message).await?),
        }
    }
}

/// A stream of [`Call`]s of one procedure, from
/// [`Gateway::procedure`](crate::Gateway::procedure) or
/// [`Backend::procedure`](crate::Backend::procedure).
pub struct Calls {
    pub(crate) inner: Pin<Box<dyn Stream<Item = Call> + Send>>,
}

impl Stream for Calls {
    type Item = Call;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Call>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Everything the application set or subscribed to.
pub(crate) struct Hooks {
    pub key: Arc<KeyFn>,
    pub authorize: Option<Arc<AuthorizeFn>>,
    pub on_message: Option<Arc<MessageHook>>,
    pub connections: Fanout<Client>,
    pub disconnections: Fanout<Disconnection>,
    pub receivers: Mutex<HashMap<String, Vec<mpsc::Sender<ClientEvent>>>>,
    pub procedures: Mutex<HashMap<String, Vec<mpsc::Sender<Call>>>>,
}

impl Hooks {
    pub(crate) fn allowed(&self, client: &Client, channel: &str, access: Access) -> bool {
        self.authorize
            .as_ref()
            .is_none_or(|f| f(client, channel, access))
    }

    pub(crate) fn passes(&self, client: &Client, action: &Action<'_>) -> bool {
        self.on_message.as_ref().is_none_or(|f| f(client, action))
    }

    /// Hands an event to this node's receivers; false if there are none.
    pub(crate) fn receive(&self, ev: ClientEvent) -> bool {
        let mut map = lock(&self.receivers);
        let Some(subs) = map.get_mut(&ev.event) else {
            return false;
        };
        subs.retain(|tx| !tx.is_closed());
        if subs.is_empty() {
            map.remove(&ev.event);
            return false;
        }
        for tx in subs.iter() {
            // A full receiver misses it: the client must never wait for the
            // application.
            let _ = tx.try_send(ev.clone());
        }
        true
    }

    /// Hands a call to this node's handlers, round robin over those with
    /// room; gives it back if there is none.
    #[allow(clippy::result_large_err)]
    pub(crate) fn call(&self, mut call: Call) -> Result<(), (Call, bool)> {
        let mut map = lock(&self.procedures);
        let Some(subs) = map.get_mut(&call.procedure) else {
            return Err((call, false));
        };
        subs.retain(|tx| !tx.is_closed());
        if subs.is_empty() {
            map.remove(&call.procedure);
            return Err((call, false));
        }
        for _ in 0..subs.len() {
            let tx = subs.remove(0);
            let r = tx.try_send(call);
            subs.push(tx);
            match r {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(c))
                | Err(mpsc::error::TrySendError::Closed(c)) => call = c,
            }
        }
        Err((call, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = axum::http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_default_key_comes_from_header_cookie_or_query() {
        assert_eq!(
            default_key(&parts("/ws?key=q", &[("x-key", "h"), ("cookie", "key=c")])),
            Some("h".into())
        );
        assert_eq!(
            default_key(&parts("/ws?key=q", &[("cookie", "a=1; key=c")])),
            Some("c".into())
        );
        assert_eq!(
            default_key(&parts("/ws?x=1&key=user%3Aal+ice", &[])),
            Some("user:al ice".into())
        );
        assert_eq!(default_key(&parts("/ws?key=%zz", &[])), None);
        assert_eq!(default_key(&parts("/ws?key=%0a", &[])), None);
        assert_eq!(default_key(&parts("/ws", &[])), None);
    }
}
