//! The replicated key-value cache (`examples/kv.rs`) as separate processes
//! in a private network namespace: writes reach every node, a late joiner
//! catches up, a node killed with SIGKILL costs the others no error that is
//! not churn, and a node frozen (SIGSTOP) while a write goes by resyncs when
//! it wakes (SIGCONT).

mod common;

use std::process::Stdio;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// One kv process: its stdin, and its stdout and stderr lines as they come.
struct Kv {
    child: Child,
    stdin: ChildStdin,
    out: UnboundedReceiver<String>,
    err: UnboundedReceiver<String>,
}

impl Kv {
    /// Starts the example in cluster "kv" (heartbeats every 200 ms, 1 s of
    /// silence ends a link) and waits until it is ready.
    async fn start() -> Kv {
        let mut child = Command::new(example_binary("kv"))
            .arg("kv")
            .env("TCPNET_HEARTBEAT", "200,1000")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the kv example");
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        let stdin = child.stdin.take().unwrap();
        let mut kv = Kv {
            child,
            stdin,
            out,
            err,
        };
        kv.expect(|l| l.starts_with("ready as ")).await;
        kv
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// Waits for a stdout line that `want` accepts, and returns it.
    async fn expect(&mut self, want: impl Fn(&str) -> bool) -> String {
        within("a line from kv", async {
            loop {
                let line = self.out.recv().await.expect("kv ended");
                if want(&line) {
                    return line;
                }
            }
        })
        .await
    }

    /// The value of `key` as this node has it.
    async fn get(&mut self, key: &str) -> String {
        self.send(&format!("get {key}")).await;
        let prefix = format!("get {key}: ");
        let line = self.expect(|l| l.starts_with(&prefix)).await;
        line[prefix.len()..].to_string()
    }

    /// Waits until this node has `key = value`.
    async fn has(&mut self, key: &str, value: &str) {
        let line = format!("{key} = {value}");
        self.expect(|l| l == line).await;
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY: a plain syscall on a process we own.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// The stderr lines so far.
    fn errors(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(l) = self.err.try_recv() {
            lines.push(l);
        }
        lines
    }
}

/// The lines `r` yields, as they come.
fn lines(r: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> UnboundedReceiver<String> {
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = tx.send(l);
        }
    });
    rx
}

#[test]
fn the_kv_cache_replicates_catches_up_and_resyncs_after_a_freeze() {
    netns(|| async {
        let mut a = Kv::start().await;
        let mut b = Kv::start().await;
        a.expect(|l| l.starts_with("joined ")).await;
        a.send("set colour blue").await;
        b.has("colour", "blue").await;
        b.send("set size 3").await;
        a.has("size", "3").await;
        b.send("del size").await;
        a.expect(|l| l == "size deleted").await;

        // A late joiner gets what was written before it came.
        let mut c = Kv::start().await;
        assert_eq!(c.get("colour").await, "blue");
        assert_eq!(c.get("size").await, "none");

        // kill -9: the others go on, and see nothing but churn.
        b.signal(libc::SIGKILL);
        a.expect(|l| l.starts_with("left ")).await;
        c.expect(|l| l.starts_with("left ")).await;
        a.send("set after kill").await;
        c.has("after", "kill").await;

        // A node frozen while a write goes by resyncs when it wakes: the
        // write is made once a has dropped the link, so the event never
        // reaches c, and only the resync brings it.
        c.signal(libc::SIGSTOP);
        a.expect(|l| l.starts_with("left ")).await;
        a.send("set during freeze").await;
        a.has("during", "freeze").await;
        c.signal(libc::SIGCONT);
        c.has("during", "freeze").await;
        assert_eq!(c.get("during").await, "freeze");
        // Writes flow again both ways.
        c.send("set woke yes").await;
        a.has("woke", "yes").await;

        // What a showed an operator: the frozen peer's timeout (a fault),
        // and nothing about the killed one.
        let shown = a.errors();
        assert!(!shown.is_empty());
        assert!(
            shown
                .iter()
                .all(|l| l.starts_with("fault: ") && l.contains("nothing heard")),
            "{shown:?}"
        );
    });
}
