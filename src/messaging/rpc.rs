//! Request/reply: the caller's side ([`Messaging::request`]) and the
//! handler's ([`Request`], [`Requests`]), and the answers the node gives by
//! itself (no such procedure, every handler busy, dropped unanswered).

use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{CallError, CloseReason, Error, Result};
use crate::id::NodeId;
use crate::limits::MAX_NAME_LEN;
use crate::link::outbox::OutTx;
use crate::link::queue::Weighed;
use crate::link::LinkId;
use crate::messaging::early::{Held, Waits};
use crate::messaging::streams::{prune, Feed, FeedRx};
use crate::messaging::{check_name, envelope_frame, Messaging, State};
use crate::sync::lock;
use crate::wire::envelope::{Envelope, Op};
use crate::wire::frame::Frame;

/// Why a call failed, as carried in a `Fail` envelope's first body byte.
const FAIL_USER: u8 = 0;
pub(crate) const FAIL_NO_PROCEDURE: u8 = 1;
pub(crate) const FAIL_UNANSWERED: u8 = 2;
pub(crate) const FAIL_BUSY: u8 = 3;

/// A stream of [`Request`]s for one procedure, from
/// [`Service::procedure`](crate::Service::procedure). Dropping it takes its
/// queue out of the node's table of procedures.
#[derive(Debug)]
pub struct Requests {
    pub(crate) rx: FeedRx<Request>,
    /// The node's messaging and the procedure's name.
    pub(crate) of: (Weak<Messaging>, String),
}

impl Drop for Requests {
    fn drop(&mut self) {
        // Closed first, so that the table sees this queue as gone.
        self.rx.close();
        if let Some(m) = self.of.0.upgrade() {
            prune(&mut lock(&m.state).procedures, &self.of.1, |(feeds, _)| {
                feeds
            });
        }
    }
}

impl Stream for Requests {
    type Item = Request;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Request>> {
        self.rx.poll_recv(cx)
    }
}

/// A call to a procedure of this node. Answer it once, with
/// [`end`](Self::end) or [`error`](Self::error); dropped unanswered, the
/// caller gets [`CallError::Unanswered`].
///
/// ```no_run
/// use futures::StreamExt;
/// # async fn demo(service: tcpnet::Service) -> tcpnet::Result<()> {
/// let mut calls = service.procedure("upper")?;
/// while let Some(req) = calls.next().await {
///     let upper = std::str::from_utf8(req.data()).map(str::to_uppercase);
///     match upper {
///         Ok(s) => req.end(s).await?,
///         Err(_) => req.error("bad-input", "not UTF-8").await?,
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Request {
    from: NodeId,
    procedure: String,
    data: Bytes,
    reply: Option<ReplyTo>,
}

impl Weighed for Request {
    fn weight(&self) -> usize {
        self.data.len()
    }
}

#[derive(Debug)]
struct ReplyTo {
    tx: OutTx,
    me: NodeId,
    corr: u64,
    max_frame_len: usize,
}

impl ReplyTo {
    /// The answer's frame, if it fits the link.
    fn checked(&self, op: Op, name: &str, body: Bytes) -> Result<Frame> {
        if name.len() > MAX_NAME_LEN {
            return Err(Error::BadName {
                name: name.to_string(),
                reason: "must be at most 255 bytes",
            });
        }
        let f = self.frame(op, name, body);
        if f.payload.len() > self.max_frame_len {
            return Err(Error::FrameTooLarge {
                len: f.payload.len(),
                max: self.max_frame_len,
            });
        }
        Ok(f)
    }

    fn frame(&self, op: Op, name: &str, body: Bytes) -> Frame {
        envelope_frame(&Envelope {
            op,
            flags: 0,
            hops: 0,
            origin: self.me.clone(),
            seq: 0,
            corr: self.corr,
            name: name.to_string(),
            body,
            signature: None,
        })
    }
}

impl Request {
    /// The calling node.
    pub fn from(&self) -> &NodeId {
        &self.from
    }

    /// The procedure's name.
    pub fn procedure(&self) -> &str {
        &self.procedure
    }

    /// The request's data.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Answers with `data`, waiting for room on the caller's link. Fails
    /// with [`Error::Closed`] if the caller's link has closed, and with
    /// [`Error::FrameTooLarge`] if the answer does not fit a frame (the
    /// caller then gets [`CallError::Unanswered`], as it does if this future
    /// is dropped before the answer was queued).
    pub async fn end(mut self, data: impl Into<Bytes>) -> Result<()> {
        self.answer(Op::Reply, "", data.into()).await
    }

    /// Answers with an error: the caller gets [`CallError::Remote`] with this
    /// name (at most 255 bytes, else [`Error::BadName`] here and
    /// [`CallError::Unanswered`] there) and message.
    pub async fn error(mut self, name: &str, message: &str) -> Result<()> {
        self.answer(Op::Fail, name, fail_body(FAIL_USER, message))
            .await
    }

    /// Answers with an error at once, without waiting for room: an answer
    /// the node gives by itself, such as a refusal of a request that does
    /// not decode (see `answer_now`), so a peer that sends many and reads
    /// nothing costs no waiting task per request.
    #[cfg(feature = "typed")]
    pub(crate) fn refuse(mut self, name: &str, message: &str) {
        if let Some(reply) = self.reply.take() {
            let f = reply.frame(Op::Fail, name, fail_body(FAIL_USER, message));
            answer_now(&reply.tx, f);
        }
    }

    /// Queues the answer, waiting for room. The request counts as answered
    /// only once the answer is queued: if this future is dropped first (a
    /// handler that gave up waiting), the request's drop still tells the
    /// caller it went unanswered.
    async fn answer(&mut self, op: Op, name: &str, body: Bytes) -> Result<()> {
        let Some(reply) = &self.reply else {
            return Err(Error::Closed); // answered already
        };
        let f = reply.checked(op, name, body)?;
        reply.tx.send(f).await.map_err(|_| Error::Closed)?;
        self.reply = None;
        Ok(())
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            let f = reply.frame(Op::Fail, "", fail_body(FAIL_UNANSWERED, ""));
            answer_now(&reply.tx, f);
        }
    }
}

/// Answers `req` with the node's own refusal `kind` (no such procedure,
/// busy), at once.
pub(crate) fn refuse(mut req: Request, kind: u8) {
    // Answered here, so not as "unanswered" on drop.
    let to = req.reply.take().expect("not yet answered");
    answer_now(&to.tx, to.frame(Op::Fail, "", fail_body(kind, "")));
}

/// Queues an answer the node gives by itself (a refusal, or a request
/// dropped unanswered) without waiting. If the link's send queue is full, it
/// waits beside it, up to a bound (see [`crate::link::aside`]); past that it
/// is dropped and the caller's timeout ends the call: a peer that floods
/// requests and reads nothing must not make the node hold more.
fn answer_now(tx: &OutTx, f: Frame) {
    if !tx.send_answer(f) {
        tracing::debug!("an answer was dropped: the link is full or closed");
    }
}

fn fail_body(kind: u8, message: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + message.len());
    b.put_u8(kind);
    b.put_slice(message.as_bytes());
    b.freeze()
}

/// A call waiting for its answer.
pub(crate) struct Call {
    peer: NodeId,
    /// The link it went out on: only that link's close interrupts it.
    pub(crate) link: LinkId,
    tx: oneshot::Sender<Result<Bytes, CallError>>,
}

impl Messaging {
    /// Calls `procedure` on `peer` and waits for the answer, at most
    /// `timeout`.
    pub(crate) async fn request(
        &self,
        peer: &NodeId,
        procedure: &str,
        data: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        check_name(procedure)?;
        let conn = self.link_to(peer)?;
        let (tx, rx) = oneshot::channel();
        let corr = {
            let mut st = lock(&self.state);
            st.next_corr += 1;
            let corr = st.next_corr;
            st.calls.insert(
                corr,
                Call {
                    peer: peer.clone(),
                    link: conn.link().id,
                    tx,
                },
            );
            corr
        };
        // Taken out of the table however this ends, so nothing leaks.
        struct Forget<'a>(&'a Messaging, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                lock(&self.0.state).calls.remove(&self.1);
            }
        }
        let _forget = Forget(self, corr);
        let e = Envelope {
            op: Op::Request,
            flags: 0,
            hops: 0,
            origin: self.me.clone(),
            seq: 0,
            corr,
            name: procedure.to_string(),
            body: data,
            signature: None,
        };
        let f = envelope_frame(&e);
        if f.payload.len() > self.max_frame_len {
            return Err(Error::FrameTooLarge {
                len: f.payload.len(),
                max: self.max_frame_len,
            });
        }
        let failed = |error| Error::Call {
            peer: peer.clone(),
            procedure: procedure.to_string(),
            error,
        };
        if conn.sender().send_frame(f).await.is_err() {
            // The link closed before the request was sent.
            let reason = conn.link().reason().unwrap_or(CloseReason::Local);
            return Err(failed(CallError::Interrupted(reason)));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result.map_err(failed),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(failed(CallError::Timeout(timeout))),
        }
    }

    /// A `Request` envelope arrived from the link whose send queue is
    /// `reply`: handed to a handler, or refused at once.
    pub(crate) fn requested(&self, st: &mut State, e: Envelope, reply: &OutTx) {
        let req = Request {
            from: e.origin.clone(),
            procedure: e.name.clone(),
            data: e.body.clone(),
            reply: Some(ReplyTo {
                tx: reply.clone(),
                me: self.me.clone(),
                corr: e.corr,
                max_frame_len: self.max_frame_len,
            }),
        };
        let handlers = st.procedures.get_mut(&e.name);
        let req = match offer_request(handlers, req) {
            Ok(()) => return,
            // No stream serves it yet: held while the node is young.
            Err((req, FAIL_NO_PROCEDURE)) => match st.early.as_mut() {
                Some(early) => {
                    let waits = Waits::Procedure(e.name.clone());
                    match early.hold(waits, Held::Request(req), Instant::now()) {
                        Ok(()) => return,
                        Err(Held::Request(req)) => (req, FAIL_NO_PROCEDURE),
                        Err(Held::Message(_)) => unreachable!("a request was held"),
                    }
                }
                None => (req, FAIL_NO_PROCEDURE),
            },
            Err(refused) => refused,
        };
        refuse(req.0, req.1);
    }
}

/// A `Reply` or `Fail` envelope arrived from `peer`: the call it answers
/// ends. An answer from a node the call was not made to is an error.
pub(crate) fn answered(st: &mut State, peer: &NodeId, e: Envelope) -> Result<(), String> {
    let Some(call) = st.calls.remove(&e.corr) else {
        return Ok(()); // timed out meanwhile
    };
    if &call.peer != peer {
        st.calls.insert(e.corr, call);
        return Err(format!("{peer} answered a call made to another node"));
    }
    let result = if e.op == Op::Reply {
        Ok(e.body)
    } else {
        Err(fail_error(&e))
    };
    let _ = call.tx.send(result);
    Ok(())
}

/// Ends the calls that `which` picks with [`CallError::Interrupted`].
pub(crate) fn fail_calls(st: &mut State, which: impl Fn(&Call) -> bool, reason: &CloseReason) {
    let failed: Vec<u64> = st
        .calls
        .iter()
        .filter(|(_, c)| which(c))
        .map(|(k, _)| *k)
        .collect();
    for k in failed {
        let call = st.calls.remove(&k).expect("listed");
        let _ = call.tx.send(Err(CallError::Interrupted(reason.clone())));
    }
}

/// Hands a request to the next handler with room (round robin), or gives it
/// back with the reason to refuse it.
#[allow(clippy::result_large_err)] // the request goes back to be answered
fn offer_request(
    handlers: Option<&mut (Vec<Feed<Request>>, usize)>,
    mut req: Request,
) -> Result<(), (Request, u8)> {
    let Some((subs, next)) = handlers else {
        return Err((req, FAIL_NO_PROCEDURE));
    };
    subs.retain(Feed::is_open);
    if subs.is_empty() {
        return Err((req, FAIL_NO_PROCEDURE));
    }
    for i in 0..subs.len() {
        let k = (*next + i) % subs.len();
        match subs[k].push(req) {
            Ok(()) => {
                *next = k + 1;
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Full(r)) | Err(mpsc::error::TrySendError::Closed(r)) => {
                req = r
            }
        }
    }
    Err((req, FAIL_BUSY))
}

/// The error a `Fail` answer means.
fn fail_error(e: &Envelope) -> CallError {
    let (kind, text) = match e.body.split_first() {
        Some((k, rest)) => (*k, String::from_utf8_lossy(rest).into_owned()),
        None => (FAIL_USER, String::new()),
    };
    match kind {
        FAIL_NO_PROCEDURE => CallError::NoProcedure,
        FAIL_UNANSWERED => CallError::Unanswered,
        FAIL_BUSY => CallError::Busy,
        _ => CallError::Remote {
            name: e.name.clone(),
            message: text,
        },
    }
}
