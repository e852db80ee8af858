//! An example program as a whole other process: lines to its stdin, its
//! stdout and stderr lines as they come, signals. It inherits the calling
//! thread's network namespace, and is killed when dropped.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// One running example.
pub(crate) struct Example {
    child: Child,
    stdin: ChildStdin,
    out: UnboundedReceiver<String>,
    err: UnboundedReceiver<String>,
}

impl Example {
    /// Starts the example `name` with `args` and `env`.
    pub(crate) fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Example {
        let mut child = Command::new(super::example_binary(name))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start the {name} example: {e}"));
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        let stdin = child.stdin.take().unwrap();
        Example {
            child,
            stdin,
            out,
            err,
        }
    }

    /// Writes `line` to its stdin.
    pub(crate) async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// Waits for a stdout line that `want` accepts, and returns it.
    pub(crate) async fn expect(&mut self, want: impl Fn(&str) -> bool) -> String {
        super::within("a line from the example", async {
            loop {
                let line = self.out.recv().await.expect("the example ended");
                if want(&line) {
                    return line;
                }
            }
        })
        .await
    }

    /// Waits until it exits; its exit status.
    pub(crate) async fn exit(&mut self) -> std::process::ExitStatus {
        super::within("the example to exit", self.child.wait())
            .await
            .unwrap()
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends the process `sig`.
    pub(crate) fn signal(&self, sig: i32) {
        let pid = self.pid() as i32;
        // SAFETY: a plain syscall on a process we own.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// The stderr lines so far.
    pub(crate) fn errors(&mut self) -> Vec<String> {
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
