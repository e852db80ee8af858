//! One WebSocket connection: a reader that handles the client's messages in
//! order (so a client's publishes stay in order), and a writer that drains
//! the connection's [`Outbox`].

mod outbox;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};

use crate::hooks::{Action, Client};
use crate::limits::Bucket;
use crate::node::calls_error_frame;
use crate::node::Node;
use crate::protocol::{self, server, Code, Origin, Problem, Request};
pub(crate) use outbox::{Out, Outbox, CLOSE_NORMAL};

/// Close code for a message too large to read (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;
/// How long a close frame may take to go out to a client that does not read
/// (it gets the reason if it reads again within that time).
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Most frames written between two flushes.
const WRITE_BATCH: usize = 64;

/// Runs a connection until it closes. `channel` is the channel of the
/// `/ws/<channel>` path form, already checked and authorized.
pub(crate) async fn run(
    node: Arc<Node>,
    socket: WebSocket,
    client: Client,
    channel: Option<String>,
) {
    let limits = &node.limits;
    let outbox = Arc::new(Outbox::new(limits.queue_len, limits.queue_bytes));
    let (sink, mut stream) = socket.split();
    node.register(client.clone(), outbox.clone());
    let channels: Vec<String> = channel.iter().cloned().collect();
    outbox.text(server::welcome(
        &client.conn,
        &client.node,
        &client.key,
        &channels,
    ));
    if let Some(ch) = &channel {
        if let Err(p) = node.subscribe(&client, ch, false, None) {
            outbox.text(server::error(None, &p));
        }
    }
    let mut writer = tokio::spawn(write(sink, outbox.clone()));
    let mut session = Session {
        node: node.clone(),
        client: client.clone(),
        outbox: outbox.clone(),
        bucket: Bucket::new(limits.rate, limits.burst),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let mut killed = outbox.killed();
    let reason = loop {
        tokio::select! {
            // Killed (a full outbox): out of every channel at once, while
            // the writer still tries to say why.
            _ = killed.changed() => {
                break killed.borrow().clone().map(|(_, r)| r).unwrap_or_default();
            }
            frame = stream.next() => match frame {
                None => break "the client went away".to_string(),
                Some(Ok(Message::Text(t))) => session.handle(t.as_str()).await,
                Some(Ok(Message::Binary(_))) => {
                    session.problem(None, Problem::new(Code::BinaryFrame, "binary frames are not part of the protocol; send JSON text"));
                }
                Some(Ok(Message::Close(_))) => break "the client closed the connection".to_string(),
                Some(Ok(_)) => {} // ping and pong: answered by the WebSocket layer
                Some(Err(e)) => {
                    let reason = format!("unreadable message: {e}");
                    outbox.kill(CLOSE_TOO_BIG, &format!("message larger than {} bytes or malformed", limits.max_frame));
                    break reason;
                }
            },
            r = &mut writer => {
                break match r {
                    Ok(reason) => reason,
                    Err(e) => format!("the writer failed: {e}"),
                };
            }
        }
    };
    node.unregister(&client.conn, reason);
    if !writer.is_finished() {
        outbox.kill(CLOSE_NORMAL, "closing");
        if tokio::time::timeout(2 * CLOSE_WAIT, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
}

/// Writes what the outbox holds, in batches, until a close or a kill.
/// Returns why it stopped.
async fn write(mut sink: SplitSink<WebSocket, Message>, outbox: Arc<Outbox>) -> String {
    let mut batch = VecDeque::new();
    loop {
        if !outbox.take(&mut batch).await {
            break;
        }
        // The batch first: it is usually written at once, and a kill is
        // only looked for while a write waits on the client.
        let sent = tokio::select! {
            biased;
            r = send_batch(&mut sink, &mut batch, &outbox) => r,
            _ = outbox.until_killed() => break,
        };
        match sent {
            Ok(None) => {}
            Ok(Some(reason)) => return reason,
            Err(e) => return format!("write failed: {e}"),
        }
    }
    let (code, reason) = outbox
        .kill_reason()
        .unwrap_or((CLOSE_NORMAL, "closing".into()));
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.clone().into(),
    }));
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(frame)).await;
    reason
}

/// Sends what the writer took, in writes of up to a batch of frames each
/// followed by a flush (after which the outbox counts them written).
/// `Some(reason)` after a close frame.
async fn send_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &mut VecDeque<Out>,
    outbox: &Outbox,
) -> Result<Option<String>, axum::Error> {
    while !batch.is_empty() {
        let (mut frames, mut bytes) = (0, 0);
        for _ in 0..WRITE_BATCH {
            match batch.pop_front() {
                None => break,
                Some(Out::Text(t)) => {
                    frames += 1;
                    bytes += t.len();
                    sink.feed(Message::Text(t)).await?;
                }
                Some(Out::Close(code, reason)) => {
                    sink.send(Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.clone().into(),
                    })))
                    .await?;
                    return Ok(Some(reason));
                }
            }
        }
        sink.flush().await?;
        outbox.sent(frames, bytes);
    }
    Ok(None)
}

/// The reading side of one connection.
struct Session {
    node: Arc<Node>,
    client: Client,
    outbox: Arc<Outbox>,
    bucket: Bucket,
    /// Calls under way.
    calls: Arc<AtomicUsize>,
}

impl Session {
    fn problem(&self, id: Option<u64>, p: Problem) {
        self.outbox.text(server::error(id, &p));
    }

    fn done(&self, id: Option<u64>, r: Result<(), Problem>) {
        match r {
            Ok(()) => {
                if let Some(id) = id {
                    self.outbox.text(server::ok(id));
                }
            }
            Err(p) => self.problem(id, p),
        }
    }

    fn stopped(&self, action: &Action<'_>) -> Result<(), Problem> {
        if self.node.hooks.passes(&self.client, action) {
            Ok(())
        } else {
            Err(Problem::new(
                Code::Stopped,
                "the server's message hook stopped this message",
            ))
        }
    }

    async fn handle(&mut self, text: &str) {
        let limits = &self.node.limits;
        if text.len() > limits.max_message {
            return self.problem(
                None,
                Problem::new(
                    Code::TooLarge,
                    format!(
                        "a message of {} bytes; the most is {}",
                        text.len(),
                        limits.max_message
                    ),
                ),
            );
        }
        if !self.bucket.take(tokio::time::Instant::now()) {
            return self.problem(
                None,
                Problem::new(
                    Code::RateLimited,
                    format!(
                        "more than {} messages a second (burst {}); this one was dropped",
                        limits.rate, limits.burst
                    ),
                ),
            );
        }
        let msg = match protocol::parse(text) {
            Ok(m) => m,
            Err((id, p)) => return self.problem(id, p),
        };
        let id = msg.id;
        let node = self.node.clone();
        let client = &self.client;
        match msg.request {
            // Its `ok` is queued by `subscribe`, before its join notices.
            Request::Subscribe { channel, presence } => {
                if let Err(p) = node.subscribe(client, &channel, presence, id) {
                    self.problem(id, p);
                }
            }
            Request::Unsubscribe { channel } => self.done(id, node.unsubscribe(client, &channel)),
            Request::Publish { channel, data } => {
                let r = match self.stopped(&Action::Publish {
                    channel: &channel,
                    data: &data,
                }) {
                    Ok(()) => node.publish(Some(client), &channel, data).await.map(drop),
                    Err(p) => Err(p),
                };
                self.done(id, r)
            }
            Request::Send { key, data } => {
                let r = match self.stopped(&Action::Send {
                    key: &key,
                    data: &data,
                }) {
                    Ok(()) => {
                        let from = Origin {
                            node: node.me.clone(),
                            conn: Some(client.conn.clone()),
                            key: Some(client.key.clone()),
                        };
                        node.send_to_key(&key, from, data).await.map(drop)
                    }
                    Err(p) => Err(p),
                };
                self.done(id, r)
            }
            Request::Watch { keys } => self.done(id, node.watch(client, &keys)),
            Request::Unwatch { keys } => {
                node.unwatch(client, &keys);
                self.done(id, Ok(()))
            }
            Request::Presence { channel } => {
                if !node
                    .hooks
                    .allowed(client, &channel, crate::hooks::Access::Subscribe)
                {
                    return self.problem(
                        id,
                        Problem::new(Code::Forbidden, format!("not allowed to see {channel:?}")),
                    );
                }
                let members = node.members(&channel);
                self.outbox.text(server::presence(id, &channel, &members));
            }
            Request::Transmit { event, data } => {
                let r = match self.stopped(&Action::Transmit {
                    event: &event,
                    data: &data,
                }) {
                    Ok(()) => node.transmit(client, &event, data).await,
                    Err(p) => Err(p),
                };
                self.done(id, r)
            }
            Request::Invoke {
                procedure,
                data,
                timeout_ms,
            } => {
                let id = id.expect("parse requires an id for invoke");
                if let Err(p) = self.stopped(&Action::Invoke {
                    procedure: &procedure,
                    data: &data,
                }) {
                    return self.problem(Some(id), p);
                }
                if self.calls.fetch_add(1, Ordering::AcqRel) >= limits.max_calls {
                    self.calls.fetch_sub(1, Ordering::AcqRel);
                    return self.problem(
                        Some(id),
                        Problem::new(
                            Code::TooManyCalls,
                            format!(
                                "{} calls already under way, the most allowed",
                                limits.max_calls
                            ),
                        ),
                    );
                }
                let timeout = timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(limits.call_timeout)
                    .min(limits.call_timeout);
                let calls = self.calls.clone();
                let outbox = self.outbox.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let r = node.invoke(&client, &procedure, data, timeout).await;
                    calls.fetch_sub(1, Ordering::AcqRel);
                    outbox.text(match r {
                        Ok(answer) => server::result(id, &answer),
                        Err(e) => calls_error_frame(id, e),
                    });
                });
            }
            Request::Ping => {
                self.outbox.text(server::pong(id));
            }
        }
    }
}
