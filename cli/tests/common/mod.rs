//! Test harness of the `tcpnet` command: private network namespaces, hosts
//! on a private LAN, nodes started in them, and waiting with deadlines.
//!
//! Every test runs inside [`netns`]: a thread of its own that moves into a
//! fresh network namespace holding only loopback (up, multicast on).
//! Threads and processes started from it inherit the namespace, so nothing
//! a test does reaches a real network. More hosts are namespaces of their
//! own ([`Host`], [`Lan`]: veth pairs on a bridge); the processes and nodes
//! of a host enter its namespace before they start.
#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mdns_sd::{DaemonEvent, ServiceDaemon, ServiceInfo};
use tcpnet::SERVICE_TYPE;

/// Bound on anything that should take milliseconds: a deadline against
/// hangs, not a performance assertion, so generous enough for a debug build
/// on a shared machine (two cores at a load average of 100 or more).
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

const HOW_TO_RUN: &str = "these tests need their own network namespaces: run them as root, \
or inside a user namespace that maps you to root: `unshare --user --map-root-user cargo test`";

/// The `tcpnet` binary under test.
pub(crate) fn tcpnet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tcpnet")
}

/// Runs `test` on a thread of its own in a fresh network namespace that
/// holds only loopback (up, multicast on), given that namespace as a host.
pub(crate) fn netns(test: impl FnOnce(Host) + Send + 'static) {
    let handle = std::thread::spawn(move || {
        enter_private_netns();
        only_loopback();
        let here = File::open("/proc/thread-self/ns/net").expect("open our namespace");
        test(Host {
            ns: here,
            name: "h1".into(),
        })
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Moves the calling thread into a new network namespace, with `lo` up and
/// multicast on. Panics (never falls back to the host's network) if that
/// is not possible.
fn enter_private_netns() {
    // SAFETY: a plain syscall on this thread's own state.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        panic!(
            "unshare(CLONE_NEWNET) failed: {}; {HOW_TO_RUN}",
            std::io::Error::last_os_error()
        );
    }
    sh("ip link set lo up && ip link set lo multicast on");
}

/// Belt and braces: the namespace of this thread holds nothing but `lo`.
fn only_loopback() {
    assert_eq!(
        interfaces(),
        ["lo"],
        "the private namespace must hold only lo"
    );
}

/// The interfaces of this thread's namespace.
fn interfaces() -> Vec<String> {
    let ifs = std::fs::read_to_string("/proc/thread-self/net/dev").expect("read net/dev");
    ifs.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect()
}

/// Runs a shell command (for `ip`) in the calling thread's namespace.
pub(crate) fn sh(cmd: &str) {
    run_sh(Command::new("sh"), cmd, "here");
}

/// Runs `cmd` through `shell` (a `sh` command, perhaps set to enter a
/// namespace) and returns its stdout; panics with its error output if it
/// fails.
fn run_sh(mut shell: Command, cmd: &str, on: &str) -> String {
    let out = shell
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("sh (and iproute2's ip)");
    assert!(
        out.status.success(),
        "`{cmd}` on {on} failed: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Another host: a network namespace of its own, held open by a file.
pub(crate) struct Host {
    ns: File,
    /// Its name on the LAN (`h2`), for messages.
    pub(crate) name: String,
}

impl Host {
    /// A new namespace with only `lo` (up; multicast as on a usual host:
    /// off).
    pub(crate) fn new(name: &str) -> Host {
        let ns = std::thread::spawn(|| {
            // SAFETY: a plain syscall on this (short-lived) thread's state.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!(
                    "unshare(CLONE_NEWNET) failed: {}; {HOW_TO_RUN}",
                    std::io::Error::last_os_error()
                );
            }
            File::open("/proc/thread-self/ns/net").expect("open the new namespace")
        })
        .join()
        .expect("namespace thread");
        let host = Host {
            ns,
            name: name.to_string(),
        };
        host.sh("ip link set lo up");
        host
    }

    /// The path of this namespace, as `ip ... netns PATH` takes it.
    fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.ns.as_raw_fd())
    }

    /// A command that runs in this host's namespace.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the child enters the
        // namespace between fork and exec, and fails to start otherwise.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// The `tcpnet` binary, run on this host.
    pub(crate) fn tcpnet(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(tcpnet_bin());
        cmd.args(args);
        cmd
    }

    /// Runs a shell command on this host.
    pub(crate) fn sh(&self, cmd: &str) {
        run_sh(self.command("sh"), cmd, &self.name);
    }

    /// Runs a shell command on this host and returns its stdout.
    pub(crate) fn output(&self, cmd: &str) -> String {
        run_sh(self.command("sh"), cmd, &self.name)
    }

    /// Announces a record of tcpnet's service type at `ip` from an mDNS
    /// daemon on this host, and returns the daemon (the record lives as
    /// long as it does) once the record is out.
    pub(crate) fn plant(
        &self,
        instance: &str,
        ip: &str,
        port: u16,
        props: &[(&str, &str)],
    ) -> ServiceDaemon {
        let mut info = ServiceInfo::new(SERVICE_TYPE, instance, "planted.local.", ip, port, props)
            .expect("record");
        info.set_requires_probe(false);
        let fullname = info.get_fullname().to_string();
        self.run(move || async move {
            let daemon = ServiceDaemon::new().expect("mDNS daemon");
            let events = daemon.monitor().expect("monitor");
            daemon.register(info).expect("register");
            loop {
                match events.recv_timeout(DEADLINE) {
                    Ok(DaemonEvent::Announce(name, _)) if name == fullname => return daemon,
                    Ok(_) => {}
                    Err(e) => panic!("the planted record {fullname} was not announced: {e}"),
                }
            }
        })
        .join()
        .expect("plant a record")
    }

    /// Runs `f` on a thread in this host's namespace, with a tokio runtime
    /// of its own, and returns its result.
    pub(crate) fn run<T: Send + 'static, Fut: Future<Output = T>>(
        &self,
        f: impl FnOnce() -> Fut + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = self.ns.try_clone().expect("dup the namespace file");
        std::thread::spawn(move || {
            // SAFETY: moves this new thread into the host's namespace.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!("setns: {}", std::io::Error::last_os_error());
            }
            runtime().block_on(f())
        })
    }
}

/// A private LAN: hosts `h1..hN`, each with `lo` and one NIC `lan0`
/// (10.99.0.I/24) on a bridge in a namespace of its own.
pub(crate) struct Lan {
    /// The hosts, `h1` first.
    pub(crate) hosts: Vec<Host>,
    switch: Host,
}

impl Lan {
    /// `n` hosts on one bridge.
    pub(crate) fn new(n: usize) -> Lan {
        let switch = Host::new("switch");
        switch.sh("ip link add br0 type bridge && ip link set br0 up");
        let hosts = (1..=n)
            .map(|i| {
                let h = Host::new(&format!("h{i}"));
                h.sh(&format!(
                    "ip link add lan0 type veth peer name port{i} netns {} \
                     && ip addr add 10.99.0.{i}/24 dev lan0 && ip link set lan0 up",
                    switch.path()
                ));
                switch.sh(&format!("ip link set port{i} master br0 up"));
                h
            })
            .collect::<Vec<Host>>();
        // A NIC whose bridge port just came up may still be without
        // carrier, and an mDNS daemon started then would not use it.
        for h in &hosts {
            wait_for(&format!("lan0 of {} to be up", h.name), || {
                h.output("ip -o link show dev lan0").contains("state UP")
            });
        }
        Lan { hosts, switch }
    }
}

/// A tcpnet node running on a host, closed (with its goodbye) on drop.
pub(crate) struct Node {
    /// Its id.
    pub(crate) id: String,
    /// How many links it holds, as of its last link event.
    links: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    /// Starts a node of `settings` listening on 0.0.0.0 of `host`, and
    /// returns once it is announced.
    pub(crate) fn start(host: &Host, settings: tcpnet::Settings) -> Node {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let links = Arc::new(AtomicUsize::new(0));
        let count = links.clone();
        let thread = host.run(move || async move {
            let service = tcpnet::Service::new(settings).expect("settings");
            let mut events = service.on_link();
            service.listen(0, "0.0.0.0").await.expect("listen");
            ready_tx.send(service.id().to_string()).expect("test waits");
            let counting = async {
                use futures::StreamExt;
                while events.next().await.is_some() {
                    count.store(service.connections().len(), Ordering::Relaxed);
                }
            };
            tokio::select! {
                _ = stopped => {}
                _ = counting => {}
            }
            service.close().await;
        });
        let id = ready_rx
            .recv_timeout(DEADLINE)
            .expect("the node to start listening");
        Node {
            id,
            links,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Waits until the node holds `n` links: the nodes a test starts have
    /// found each other before a command joins them.
    pub(crate) fn wait_links(&self, n: usize) {
        wait_for(&format!("node {} to hold {n} links", self.id), || {
            self.links.load(Ordering::Relaxed) >= n
        });
    }

    /// Closes the node: its goodbye goes out, then this returns.
    pub(crate) fn close(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// A child process whose stdout lines are read on a thread of their own,
/// so a test can wait for a line with a deadline.
pub(crate) struct Running {
    /// The process.
    pub(crate) child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stdout line read so far.
    pub(crate) seen: Vec<String>,
}

impl Running {
    /// Starts `cmd` with stdin and stdout piped (stderr inherited).
    pub(crate) fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the process");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line for which `want` holds; panics with `what`
    /// and everything read at the deadline or when stdout ends.
    pub(crate) fn wait_line(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("no line {what} ({e:?}); read: {:#?}", self.seen),
            }
        }
    }

    /// Closes stdin and waits for the process to end (with the deadline);
    /// returns its exit status and the rest of its stdout.
    pub(crate) fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        drop(self.child.stdin.take());
        let status = wait_with_deadline(&mut self.child);
        let rest: Vec<String> = self.lines.iter().collect();
        self.seen.extend(rest);
        (status, self.seen)
    }
}

/// Waits for a child to exit; kills it and panics at the deadline.
pub(crate) fn wait_with_deadline(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not end within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` every 50 ms until it holds; panics with `what` at the
/// deadline.
pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
