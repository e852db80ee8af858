//! Typed messages: serde values instead of bytes, on the same primitives.
//!
//! With the `typed` cargo feature, a [`Service`](crate::Service) hands out
//! typed handles, each a name with a type:
//!
//! | handle | from | sends | receives |
//! |---|---|---|---|
//! | [`Event<T>`] | [`Service::event`](crate::Service::event) | `emit`, `emit_to` | `receiver` |
//! | [`Topic<T>`] | [`Service::topic`](crate::Service::topic) | `publish` | `subscribe` |
//! | [`Inbox<T>`] | [`Service::inbox`](crate::Service::inbox) | `send_to`, `broadcast` | `messages` |
//! | [`Rpc<Q, A>`] | [`Service::rpc`](crate::Service::rpc) | `call` | `serve` |
//!
//! Values travel in [`Format::Postcard`] (compact, binary) unless a handle is
//! switched to [`Format::Json`] (the `json` feature) with `with_format`; both
//! ends of a name must use one format.
//!
//! A typed stream yields `Result`s and goes on after an `Err`:
//! [`Error::Decode`] for a payload that is not a `T` (a node running another
//! version of the application), [`Error::Dropped`] where the stream's queue
//! was full and messages were lost (see the README's guide on what to do
//! then). A request that does not decode is answered with the named error
//! `bad-request` for the caller.
//!
//! ```no_run
//! use futures::StreamExt;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Set { key: String, value: String }
//!
//! # async fn demo(service: tcpnet::Service) -> tcpnet::Result<()> {
//! let sets = service.event::<Set>("set");
//! let mut incoming = sets.receiver()?;       // before listen: misses nothing
//! service.listen(0, "0.0.0.0").await?;
//! sets.emit(&Set { key: "a".into(), value: "1".into() }).await?;
//! while let Some(set) = incoming.next().await {
//!     match set {
//!         Ok(set) => println!("{} set {}", set.from(), set.value().key),
//!         Err(e) => eprintln!("{e}"), // Decode or Dropped; the stream goes on
//!     }
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::messaging::rpc;
use crate::messaging::streams::{Message, Messages as RawMessages};
use crate::messaging::Messaging;

/// How typed values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Format {
    /// [postcard](https://docs.rs/postcard): compact and fast; the default.
    #[default]
    Postcard,
    /// JSON, with serde_json: readable by anything (the `json` feature).
    #[cfg(feature = "json")]
    Json,
}

impl Format {
    /// Encodes `value`. Fails with [`Error::Encode`] for a value the format
    /// cannot represent.
    ///
    /// ```
    /// use tcpnet::typed::Format;
    /// let bytes = Format::Postcard.encode(&(1u8, "a"))?;
    /// assert_eq!(Format::Postcard.decode::<(u8, String)>(&bytes).unwrap(), (1, "a".into()));
    /// # Ok::<(), tcpnet::Error>(())
    /// ```
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes> {
        let encoded = match self {
            Format::Postcard => postcard::to_allocvec(value).map_err(|e| e.to_string()),
            #[cfg(feature = "json")]
            Format::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        };
        encoded.map(Bytes::from).map_err(|reason| Error::Encode {
            what: std::any::type_name::<T>(),
            reason,
        })
    }

    /// Decodes a `T`; the error is the decoder's message.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Format::Postcard => postcard::from_bytes(bytes).map_err(|e| e.to_string()),
            #[cfg(feature = "json")]
            Format::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        }
    }

    /// Decodes what `from` sent under `name`, or says why it is not a `T`.
    fn decode_from<T: DeserializeOwned>(
        self,
        from: &NodeId,
        name: &str,
        bytes: &[u8],
    ) -> Result<T> {
        self.decode(bytes).map_err(|reason| Error::Decode {
            from: from.clone(),
            name: name.to_string(),
            what: std::any::type_name::<T>(),
            reason,
        })
    }
}

/// A value received: who sent it, under which name, and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<T> {
    from: NodeId,
    name: String,
    value: T,
}

impl<T> Received<T> {
    /// The node that sent it.
    pub fn from(&self) -> &NodeId {
        &self.from
    }

    /// The event or topic name; empty for direct messages and broadcasts.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The value, owned.
    pub fn into_value(self) -> T {
        self.value
    }
}

/// A typed stream of values: from [`Event::receiver`], [`Topic::subscribe`]
/// or [`Inbox::messages`]. Yields [`Error::Decode`] for a payload that is
/// not a `T` and [`Error::Dropped`] where messages were dropped because the
/// stream was not read fast enough (before the next message, or as soon as
/// the queue is empty), and goes on after either.
pub struct Messages<T> {
    raw: RawMessages,
    format: Format,
    /// The stream as drop reports name it.
    stream: String,
    /// Drops already reported.
    reported: u64,
    /// A message held back while a drop is reported first.
    held: Option<Message>,
    _t: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Messages<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Messages")
            .field("format", &self.format)
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> Messages<T> {
    fn new(raw: RawMessages, format: Format, stream: String) -> Self {
        Messages {
            raw,
            format,
            stream,
            reported: 0,
            held: None,
            _t: PhantomData,
        }
    }

    /// The drops up to `dropped` not yet reported, as the error that
    /// reports them.
    fn drops_until(&mut self, dropped: u64) -> Option<Error> {
        (dropped > self.reported).then(|| {
            let count = dropped - self.reported;
            self.reported = dropped;
            Error::Dropped {
                stream: self.stream.clone(),
                count,
            }
        })
    }

    /// How many messages this stream dropped so far (see
    /// [`Messages::dropped`](crate::Messages::dropped)).
    pub fn dropped(&self) -> u64 {
        self.raw.dropped()
    }
}

impl<T: DeserializeOwned> Messages<T> {
    fn decoded(&self, m: Message) -> Result<Received<T>> {
        let value = self.format.decode_from(&m.from, &m.name, &m.data)?;
        Ok(Received {
            from: m.from,
            name: m.name,
            value,
        })
    }
}

impl<T: DeserializeOwned> Stream for Messages<T> {
    type Item = Result<Received<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(m) = self.held.take() {
            return Poll::Ready(Some(self.decoded(m)));
        }
        match self.raw.poll_queued(cx) {
            // Drops before this message are reported first.
            Poll::Ready(Some((dropped, m))) => match self.drops_until(dropped) {
                Some(e) => {
                    self.held = Some(m);
                    Poll::Ready(Some(Err(e)))
                }
                None => Poll::Ready(Some(self.decoded(m))),
            },
            // The queue is empty: drops since the last message are reported
            // now (the message after them will not report them again).
            end => {
                let dropped = self.raw.dropped();
                match self.drops_until(dropped) {
                    Some(e) => Poll::Ready(Some(Err(e))),
                    None => end.map(|_| None),
                }
            }
        }
    }
}

/// A named event whose data is a `T`, from [`Service::event`](crate::Service::event).
/// Cheap to clone.
pub struct Event<T> {
    messaging: Arc<Messaging>,
    name: String,
    format: Format,
    _t: PhantomData<fn() -> T>,
}

/// A topic whose messages are `T`s, from [`Service::topic`](crate::Service::topic).
/// Cheap to clone.
pub struct Topic<T> {
    messaging: Arc<Messaging>,
    name: String,
    format: Format,
    _t: PhantomData<fn() -> T>,
}

/// Direct messages and broadcasts that are `T`s, from
/// [`Service::inbox`](crate::Service::inbox). Every direct message and
/// broadcast a node receives goes to each of its inboxes, whatever its
/// type: use one type per cluster here, or named events.
pub struct Inbox<T> {
    messaging: Arc<Messaging>,
    format: Format,
    _t: PhantomData<fn() -> T>,
}

/// A procedure taking a `Q` and answering an `A`, from
/// [`Service::rpc`](crate::Service::rpc). Cheap to clone.
pub struct Rpc<Q, A> {
    messaging: Arc<Messaging>,
    name: String,
    format: Format,
    _t: PhantomData<fn(Q) -> A>,
}

/// The handles' shared plumbing: `Clone`, `Debug`, `with_format`, `name`.
macro_rules! handle {
    ($ty:ident < $($p:ident),+ >, $what:literal) => {
        impl<$($p),+> Clone for $ty<$($p),+> {
            fn clone(&self) -> Self {
                $ty {
                    messaging: self.messaging.clone(),
                    name: self.name.clone(),
                    format: self.format,
                    _t: PhantomData,
                }
            }
        }

        impl<$($p),+> fmt::Debug for $ty<$($p),+> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct($what)
                    .field("name", &self.name)
                    .field("format", &self.format)
                    .finish()
            }
        }

        impl<$($p),+> $ty<$($p),+> {
            pub(crate) fn new(messaging: Arc<Messaging>, name: &str) -> Self {
                $ty {
                    messaging,
                    name: name.to_string(),
                    format: Format::default(),
                    _t: PhantomData,
                }
            }

            /// The same handle in another format; both ends must use one.
            pub fn with_format(mut self, format: Format) -> Self {
                self.format = format;
                self
            }

            /// Its name.
            pub fn name(&self) -> &str {
                &self.name
            }
        }
    };
}

handle!(Event<T>, "Event");
handle!(Topic<T>, "Topic");
handle!(Rpc<Q, A>, "Rpc");

impl<T> Clone for Inbox<T> {
    fn clone(&self) -> Self {
        Inbox {
            messaging: self.messaging.clone(),
            format: self.format,
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Inbox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("format", &self.format)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Event<T> {
    /// Sends the event to every other node (see [`Service::emit`](crate::Service::emit)).
    /// Returns the number of links it went out on.
    pub async fn emit(&self, value: &T) -> Result<usize> {
        let data = self.format.encode(value)?;
        self.messaging.emit(&self.name, data).await
    }

    /// Sends the event to one linked node (see [`Service::emit_to`](crate::Service::emit_to)).
    pub async fn emit_to(&self, peer: &NodeId, value: &T) -> Result<()> {
        let data = self.format.encode(value)?;
        self.messaging.emit_to(peer, &self.name, data).await
    }

    /// The events of this name that this node receives, from now on: make
    /// it before [`listen`](crate::Service::listen) to miss none.
    pub fn receiver(&self) -> Result<Messages<T>> {
        let raw = self.messaging.receiver(&self.name)?;
        Ok(Messages::new(
            raw,
            self.format,
            format!("event {}", self.name),
        ))
    }
}

impl<T: Serialize + DeserializeOwned> Topic<T> {
    /// Publishes to the topic (see [`Service::publish`](crate::Service::publish)):
    /// this node's subscribers get it too. Returns the number of nodes it
    /// went to, this one included.
    pub async fn publish(&self, value: &T) -> Result<usize> {
        let data = self.format.encode(value)?;
        self.messaging.publish(&self.name, data).await
    }

    /// Subscribes (see [`Service::subscribe`](crate::Service::subscribe));
    /// dropping the stream unsubscribes.
    pub fn subscribe(&self) -> Result<Messages<T>> {
        let raw = self.messaging.subscribe(&self.name)?;
        Ok(Messages::new(
            raw,
            self.format,
            format!("topic {}", self.name),
        ))
    }

    /// The nodes with a subscriber, this one included, sorted by id.
    pub fn members(&self) -> Vec<NodeId> {
        self.messaging.topic_members(&self.name)
    }
}

impl<T: Serialize + DeserializeOwned> Inbox<T> {
    pub(crate) fn new(messaging: Arc<Messaging>) -> Self {
        Inbox {
            messaging,
            format: Format::default(),
            _t: PhantomData,
        }
    }

    /// The same inbox in another format; both ends must use one.
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Sends to one linked node (see [`Service::send_to`](crate::Service::send_to)).
    pub async fn send_to(&self, peer: &NodeId, value: &T) -> Result<()> {
        let data = self.format.encode(value)?;
        self.messaging.send_to(peer, data).await
    }

    /// Sends to every other node (see [`Service::broadcast`](crate::Service::broadcast)).
    /// Returns the number of links it went out on.
    pub async fn broadcast(&self, value: &T) -> Result<usize> {
        let data = self.format.encode(value)?;
        self.messaging.broadcast(data).await
    }

    /// The direct messages and broadcasts this node receives, from now on:
    /// make it before [`listen`](crate::Service::listen) to miss none.
    pub fn messages(&self) -> Messages<T> {
        Messages::new(self.messaging.messages(), self.format, "messages".into())
    }
}

impl<Q: Serialize + DeserializeOwned, A: Serialize + DeserializeOwned> Rpc<Q, A> {
    /// Calls the procedure on `peer` and waits for the answer, at most
    /// `timeout` (see [`Service::request`](crate::Service::request) for the
    /// errors). An answer that is not an `A` is an [`Error::Decode`].
    pub async fn call(&self, peer: &NodeId, request: &Q, timeout: Duration) -> Result<A> {
        let data = self.format.encode(request)?;
        let answer = self
            .messaging
            .request(peer, &self.name, data, timeout)
            .await?;
        self.format.decode_from(peer, &self.name, &answer)
    }

    /// Serves the procedure on this node: a stream of its calls. Several
    /// streams share the calls, round robin. Make it before
    /// [`listen`](crate::Service::listen): a call that comes before it
    /// exists is answered [`CallError::NoProcedure`](crate::CallError::NoProcedure).
    pub fn serve(&self) -> Result<Requests<Q, A>> {
        let raw = self.messaging.procedure(&self.name)?;
        Ok(Requests {
            raw,
            format: self.format,
            _t: PhantomData,
        })
    }
}

/// The calls to a typed procedure, from [`Rpc::serve`]. A request whose
/// data is not a `Q` is answered with the named error `bad-request` and
/// yielded as an [`Error::Decode`]; the stream goes on.
pub struct Requests<Q, A> {
    raw: rpc::Requests,
    format: Format,
    _t: PhantomData<fn(Q) -> A>,
}

impl<Q, A> fmt::Debug for Requests<Q, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requests")
            .field("format", &self.format)
            .finish()
    }
}

impl<Q: DeserializeOwned, A: Serialize> Stream for Requests<Q, A> {
    type Item = Result<Request<Q, A>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let format = self.format;
        Pin::new(&mut self.raw).poll_next(cx).map(|req| {
            req.map(
                |raw| match format.decode_from::<Q>(raw.from(), raw.procedure(), raw.data()) {
                    Ok(value) => Ok(Request {
                        raw,
                        value,
                        format,
                        _t: PhantomData,
                    }),
                    Err(e) => {
                        raw.refuse(BAD_REQUEST, &e.to_string());
                        Err(e)
                    }
                },
            )
        })
    }
}

/// The error name a request that does not decode is answered with.
pub const BAD_REQUEST: &str = "bad-request";

/// A call to a typed procedure. Answer it once, with [`reply`](Self::reply)
/// or [`error`](Self::error); dropped unanswered, the caller gets
/// [`CallError::Unanswered`](crate::CallError::Unanswered).
pub struct Request<Q, A> {
    raw: rpc::Request,
    value: Q,
    format: Format,
    _t: PhantomData<fn() -> A>,
}

impl<Q: fmt::Debug, A> fmt::Debug for Request<Q, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("from", self.raw.from())
            .field("procedure", &self.raw.procedure())
            .field("value", &self.value)
            .finish()
    }
}

impl<Q, A: Serialize> Request<Q, A> {
    /// The calling node.
    pub fn from(&self) -> &NodeId {
        self.raw.from()
    }

    /// The request.
    pub fn value(&self) -> &Q {
        &self.value
    }

    /// Answers with `answer`. A value that does not encode fails here with
    /// [`Error::Encode`], and the caller gets
    /// [`CallError::Unanswered`](crate::CallError::Unanswered).
    pub async fn reply(self, answer: &A) -> Result<()> {
        let data = self.format.encode(answer)?;
        self.raw.end(data).await
    }

    /// Answers with an error: the caller gets
    /// [`CallError::Remote`](crate::CallError::Remote) with
    /// this name and message.
    pub async fn error(self, name: &str, message: &str) -> Result<()> {
        self.raw.error(name, message).await
    }
}
