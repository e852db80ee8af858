//! `tcpnet join`: netcat for a cluster. Lines on stdin go to every node (or
//! a topic, or one node); every message received prints with its sender's id.

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tcpnet::{Connection, Events, NodeId, Service};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::args::JoinArgs;
use crate::node;
use crate::table::count;
use crate::term::stderr_is_terminal;
use crate::Failure;

/// Where the lines typed go, and what prints.
enum Mode {
    /// Messages: each line broadcast to every node.
    All,
    /// Messages: each line to one node.
    To(NodeId),
    /// A topic: each line published, the topic's messages printed.
    Topic(String),
    /// Raw link frames: each line (with its line end) a frame on every link.
    Raw,
}

/// How long a topic's first subscriber must have been seen before the
/// first line is published (see `join`).
const TOPIC_SETTLE: Duration = Duration::from_millis(50);

/// Runs `tcpnet join`; `Ok(true)` when every line was sent.
pub(crate) async fn run(args: JoinArgs) -> Result<bool, Failure> {
    let mode = match (&args.topic, &args.to, args.raw) {
        (Some(topic), _, _) => Mode::Topic(topic.clone()),
        (_, Some(to), _) => {
            Mode::To(NodeId::parse(to).map_err(|e| Failure::Usage(format!("--to {to:?}: {e}")))?)
        }
        (_, _, true) => Mode::Raw,
        _ => Mode::All,
    };
    let service = node::join(&args.node)?;
    let me = service.id().clone();

    // Subscribe before listening, so that nothing received is missed.
    let (closed_tx, closed) = watch::channel(false);
    let printer = match &mode {
        Mode::Topic(topic) => {
            let msgs = service.subscribe(topic).map_err(usage)?;
            // A topic's stream has this node's own messages too.
            let others = msgs.filter(move |m| std::future::ready(*m.from() != me));
            tokio::spawn(print_messages(others, closed))
        }
        Mode::All | Mode::To(_) => tokio::spawn(print_messages(service.messages(), closed)),
        Mode::Raw => tokio::spawn(print_frames(service.clone(), closed)),
    };
    let outcome = tokio::select! {
        r = join(&service, &args, &mode) => r,
        _ = crate::shutdown_signal() => Ok(true),
    };
    // Every link closes gracefully: what the peers sent before is received.
    service.close().await;
    let _ = closed_tx.send(true);
    let _ = printer.await;
    outcome
}

/// Starts the node, then sends every line of stdin until its end.
async fn join(service: &Service, args: &JoinArgs, mode: &Mode) -> Result<bool, Failure> {
    // A topic's publisher sends only to the nodes it knows subscribe, and
    // learns that from each node shortly after linking: wait for one. The
    // messaging layer takes a new link in just after the connection event;
    // a publish in between goes to no one, so a subscriber must have been
    // seen for a moment before the first line goes out.
    let first_seen = std::cell::Cell::new(None);
    let ready = |s: &Service| match mode {
        Mode::Topic(topic) => {
            if !s.topic_members(topic).iter().any(|id| id != s.id()) {
                first_seen.set(None);
                return false;
            }
            let since = first_seen.get().unwrap_or_else(Instant::now);
            first_seen.set(Some(since));
            since.elapsed() >= TOPIC_SETTLE
        }
        _ => true,
    };
    // Subscribed before starting, so that no link is missed; told after,
    // so that the notes do not cut through the progress line.
    let links = service.on_connection();
    node::start(service, &args.node, ready).await?;
    if stderr_is_terminal() {
        let linked = service.connections();
        eprintln!(
            "# joined {} as {}, linked to {}; type lines, Ctrl-D or Ctrl-C ends",
            args.node.cluster,
            service.id(),
            count(linked.len(), "node")
        );
        tokio::spawn(tell_links(linked, links));
    }
    let mut lines = stdin_lines();
    let mut all_sent = true;
    while let Some(line) = lines.recv().await {
        if let Err(why) = send(service, mode, line).await {
            eprintln!("tcpnet: line not sent: {why}");
            all_sent = false;
        }
    }
    Ok(all_sent)
}

/// Sends one line as `mode` says.
async fn send(service: &Service, mode: &Mode, mut line: Vec<u8>) -> Result<(), String> {
    if !matches!(mode, Mode::Raw) {
        // A message is the line; a raw frame keeps its line end, as the
        // demo's frames do.
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
    }
    let line = Bytes::from(line);
    match mode {
        Mode::All => match service.broadcast(line).await {
            Ok(0) => Err("no node linked".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
        Mode::To(peer) => service.send_to(peer, line).await.map_err(|e| e.to_string()),
        Mode::Topic(topic) => service
            .publish(topic, line)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Mode::Raw => {
            let links = service.connections();
            if links.is_empty() {
                return Err("no node linked".into());
            }
            for link in links {
                // A link that closed meanwhile fails this one send.
                if let Err(e) = link.send(line.clone()).await {
                    return Err(format!("to {}: {e}", link.peer_id()));
                }
            }
            Ok(())
        }
    }
}

/// The lines of stdin, read on a thread of their own: a blocking read
/// cannot be cancelled, and must not keep the runtime from ending.
fn stdin_lines() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if tx.blocking_send(line).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("tcpnet: reading stdin: {e}");
                    return;
                }
            }
        }
    });
    rx
}

/// Prints each message as `<sender id>: <text>`; once the node has closed,
/// prints what is left in the stream and returns.
async fn print_messages(
    mut msgs: impl Stream<Item = tcpnet::Message> + Unpin,
    mut closed: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            msg = msgs.next() => match msg {
                Some(msg) => print_line(msg.from(), msg.data()),
                None => return,
            },
            _ = closed.wait_for(|c| *c) => break,
        }
    }
    // The node closed: everything received is in the stream already.
    while let Some(Some(msg)) = msgs.next().now_or_never() {
        print_line(msg.from(), msg.data());
    }
}

/// Prints the raw frames of every link as `<sender id>: <text>`; once the
/// node has closed, waits for its links' last frames.
async fn print_frames(service: Service, mut closed: watch::Receiver<bool>) {
    let mut links = service.on_connection();
    drop(service);
    let mut readers = JoinSet::new();
    loop {
        tokio::select! {
            link = links.next() => match link {
                Some(mut link) => {
                    readers.spawn(async move {
                        while let Some(frame) = link.next().await {
                            print_line(link.peer_id(), &frame);
                        }
                    });
                }
                None => break,
            },
            _ = closed.wait_for(|c| *c) => break,
        }
    }
    // A closed link's stream ends after its last frame.
    while readers.join_next().await.is_some() {}
}

/// One received payload as one line: its own line end is not doubled,
/// bytes that are not UTF-8 show as U+FFFD.
fn print_line(from: &NodeId, data: &[u8]) {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    let text = String::from_utf8_lossy(data);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{from}: {text}").and_then(|_| out.flush());
}

/// On a terminal, says on stderr when links come and go: the links `open`
/// at the start (closes only), then every new one.
async fn tell_links(open: Vec<Connection>, mut links: Events<Connection>) {
    let tell_close = |link: Connection| {
        tokio::spawn(async move {
            let why = link.closed().await;
            eprintln!("# link to {} closed: {why}", link.peer_id());
        });
    };
    let mut told: HashSet<(NodeId, SocketAddr)> = HashSet::new();
    for link in open {
        told.insert((link.peer_id().clone(), link.remote_addr()));
        tell_close(link);
    }
    while let Some(link) = links.next().await {
        if told.insert((link.peer_id().clone(), link.remote_addr())) {
            eprintln!("# linked to {} at {}", link.peer_id(), link.remote_addr());
            tell_close(link);
        }
    }
}

fn usage(e: tcpnet::Error) -> Failure {
    Failure::Usage(e.to_string())
}
