//! Test harness: a private LAN of gateway processes, WebSocket clients and
//! an HTTP client.
//!
//! Each test runs on a thread of its own that first moves into a fresh
//! network namespace (`unshare(CLONE_NEWNET)`): the test's "switch". There
//! it makes a bridge `br0` (10.99.0.254/24) and, per host, a namespace held
//! by a small process (`unshare --net`), joined to the bridge by a veth pair
//! (`lan0`, 10.99.0.I/24). Gateways run in their host's namespace
//! (`nsenter`); the test's clients reach them over the bridge. Nothing can
//! reach a real network, parallel tests never see each other, and every
//! process dies with the test (killed on drop, and by `PR_SET_PDEATHSIG` if
//! the test process dies).
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Bound on anything that should take milliseconds: a deadline against
/// hangs, not a performance assertion, so generous enough for a debug build
/// on a shared machine (two cores at a load average of 100 or more).
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

const HOW_TO_RUN: &str = "the gateway tests need network namespaces: run them as root, \
or inside a user namespace mapped to root (`unshare --user --map-root-user cargo test`), \
with iproute2 and util-linux (ip, nsenter, unshare) installed";

/// Runs `test` on a thread in a fresh network namespace holding only `lo`.
pub(crate) fn netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let handle = std::thread::spawn(move || {
        // SAFETY: a plain syscall on this thread's own state.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!(
                "unshare(CLONE_NEWNET) failed: {}; {HOW_TO_RUN}",
                std::io::Error::last_os_error()
            );
        }
        run_ok(&["ip", "link", "set", "lo", "up"]);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(test());
        rt.shutdown_timeout(Duration::from_secs(2));
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A shell line writing a sysctl (`net.ipv4.tcp_rmem`) through /proc, so
/// the tests need no `sysctl` command.
fn sysctl_script(name: &str, value: &str) -> String {
    format!("echo '{value}' > /proc/sys/{}", name.replace('.', "/"))
}

fn run_ok(cmd: &[&str]) {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}; {HOW_TO_RUN}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}; {HOW_TO_RUN}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Children die with the thread that spawned them, even if the test
/// process is killed.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; it runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The gateway binary under test.
pub(crate) fn gateway_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tcpnet-gateway"))
}

/// The backend example, built by `cargo test` beside the test binaries.
pub(crate) fn backend_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join("examples").join("backend");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test`, which builds the examples",
        path.display()
    );
    path
}

/// One host of the LAN: a network namespace held by a sleeping process.
pub(crate) struct Host {
    pub index: usize,
    holder: Child,
    pub holder_pid: u32,
}

impl Host {
    pub(crate) fn ip(&self) -> String {
        format!("10.99.0.{}", self.index)
    }

    /// A command run in this host's namespace.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.holder_pid.to_string())
            .arg("-n")
            .arg("--")
            .arg(program);
        die_with_parent(&mut cmd);
        cmd.kill_on_drop(true);
        cmd
    }

    /// Sets a sysctl of this host's network namespace.
    pub(crate) fn sysctl(&self, name: &str, value: &str) {
        let t = self.holder_pid.to_string();
        let script = sysctl_script(name, value);
        run_ok(&["nsenter", "-t", &t, "-n", "sh", "-c", &script]);
    }

    /// Bytes this host's network stack has received (all interfaces).
    pub(crate) fn bytes_received(&self) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/net/netstat", self.holder_pid))
            .expect("read the host's netstat");
        let mut lines = text.lines().filter(|l| l.starts_with("IpExt:"));
        let names: Vec<&str> = lines
            .next()
            .expect("IpExt names")
            .split_whitespace()
            .collect();
        let values: Vec<&str> = lines
            .next()
            .expect("IpExt values")
            .split_whitespace()
            .collect();
        let i = names
            .iter()
            .position(|n| *n == "InOctets")
            .expect("InOctets");
        values[i].parse().expect("a number")
    }
}

/// A gateway process on a host.
pub(crate) struct Gateway {
    pub host: usize,
    pub node: String,
    pub url: String,
    /// Its tcpnet port.
    pub mesh_port: u16,
    child: Child,
    pub log: PathBuf,
}

impl Gateway {
    pub(crate) fn ws(&self, path: &str) -> String {
        format!("{}{}", self.url.replacen("http://", "ws://", 1), path)
    }

    /// kill -9.
    pub(crate) async fn kill(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGSTOP: the process stays, silent (a host asleep).
    pub(crate) fn freeze(&self) {
        let pid = self.child.id().expect("running") as libc::pid_t;
        // SAFETY: a plain syscall sending a signal to our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// The private LAN of a test.
pub(crate) struct Lan {
    pub hosts: Vec<Host>,
    pub gateways: Vec<Gateway>,
    pub others: Vec<Child>,
    cluster: String,
}

impl Lan {
    /// `n` hosts on a bridge. Call from inside [`netns`].
    pub(crate) async fn new(n: usize) -> Lan {
        run_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        run_ok(&["ip", "addr", "add", "10.99.0.254/24", "dev", "br0"]);
        run_ok(&["ip", "link", "set", "br0", "up"]);
        let mut hosts = Vec::new();
        for i in 1..=n {
            let mut cmd = Command::new("unshare");
            cmd.args([
                "--net",
                "--",
                "sh",
                "-c",
                "echo ready && exec sleep infinity",
            ])
            .stdout(Stdio::piped())
            .kill_on_drop(true);
            die_with_parent(&mut cmd);
            let mut holder = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("unshare: {e}; {HOW_TO_RUN}"));
            let pid = holder.id().expect("pid");
            let mut out = BufReader::new(holder.stdout.take().expect("stdout")).lines();
            let line = timeout_at(Instant::now() + DEADLINE, out.next_line())
                .await
                .expect("the namespace holder did not start")
                .expect("read");
            assert_eq!(line.as_deref(), Some("ready"), "{HOW_TO_RUN}");
            let veth = format!("veth{i}");
            run_ok(&[
                "ip",
                "link",
                "add",
                &veth,
                "type",
                "veth",
                "peer",
                "name",
                "lan0",
                "netns",
                &pid.to_string(),
            ]);
            run_ok(&["ip", "link", "set", &veth, "master", "br0", "up"]);
            let t = pid.to_string();
            let ip = format!("10.99.0.{i}/24");
            run_ok(&["nsenter", "-t", &t, "-n", "ip", "link", "set", "lo", "up"]);
            run_ok(&[
                "nsenter", "-t", &t, "-n", "ip", "addr", "add", &ip, "dev", "lan0",
            ]);
            run_ok(&["nsenter", "-t", &t, "-n", "ip", "link", "set", "lan0", "up"]);
            hosts.push(Host {
                index: i,
                holder,
                holder_pid: pid,
            });
        }
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let cluster = format!(
            "gw-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        Lan {
            hosts,
            gateways: Vec::new(),
            others: Vec::new(),
            cluster,
        }
    }

    /// Starts a gateway on host `i` (1-based) with extra flags; waits for
    /// its line saying where it is.
    pub(crate) async fn start_gateway(&mut self, i: usize, extra: &[&str]) -> usize {
        let host = &self.hosts[i - 1];
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{}-h{i}-{}.log",
            self.cluster,
            self.gateways.len()
        ));
        let mut cmd = host.command(gateway_binary());
        cmd.args([
            "--cluster",
            &self.cluster,
            "--http",
            &format!("{}:8080", host.ip()),
            "--heartbeat",
            "250,1000",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"));
        let mut child = cmd.spawn().expect("start the gateway");
        let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = timeout_at(Instant::now() + DEADLINE, out.next_line())
            .await
            .expect("the gateway did not start in time")
            .expect("read")
            .unwrap_or_else(|| {
                panic!(
                    "the gateway exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let v: Value = serde_json::from_str(&line).expect("the gateway's first line is JSON");
        self.gateways.push(Gateway {
            host: i,
            node: v["node"].as_str().expect("node").to_string(),
            url: v["url"].as_str().expect("url").to_string(),
            mesh_port: v["mesh_port"].as_u64().expect("mesh_port") as u16,
            child,
            log,
        });
        self.gateways.len() - 1
    }

    /// Starts the backend example on host `i`.
    pub(crate) async fn start_backend(&mut self, i: usize) {
        let host = &self.hosts[i - 1];
        let mut cmd = host.command(backend_binary());
        cmd.arg(&self.cluster)
            .env("TCPNET_HEARTBEAT", "250,1000")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start the backend");
        let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = timeout_at(Instant::now() + DEADLINE, out.next_line())
            .await
            .expect("the backend did not start in time")
            .expect("read");
        assert!(line.is_some(), "the backend exited");
        self.others.push(child);
    }

    /// `n` gateways on hosts 1..=n, each listing all n in `GET /nodes`.
    pub(crate) async fn with_gateways(n: usize, extra: &[&str]) -> Lan {
        let mut lan = Lan::new(n).await;
        for i in 1..=n {
            lan.start_gateway(i, extra).await;
        }
        lan.wait_for_nodes(n).await;
        lan
    }

    /// Waits until every running gateway lists `n` gateway nodes.
    pub(crate) async fn wait_for_nodes(&self, n: usize) {
        for g in &self.gateways {
            let url = format!("{}/nodes", g.url);
            let end = Instant::now() + DEADLINE;
            loop {
                let (status, v) = http("GET", &url, None).await;
                if status == 200 && v["nodes"].as_array().map(Vec::len) == Some(n) {
                    break;
                }
                if Instant::now() > end {
                    let health = http("GET", &format!("{}/health", g.url), None).await;
                    panic!(
                        "timed out waiting for {} to list {n} nodes: {v}; health {health:?}\n{}",
                        g.url,
                        self.logs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Waits until gateway `g` sees `n` members in `channel`, cluster-wide.
    pub(crate) async fn wait_members(&self, g: usize, channel: &str, n: usize) {
        let url = format!("{}/channels/{channel}", self.url(g));
        until(
            &format!("{n} members of {channel} on {}", self.url(g)),
            || async {
                http("GET", &url, None).await.1["members"]
                    .as_array()
                    .map(Vec::len)
                    == Some(n)
            },
        )
        .await;
    }

    pub(crate) fn url(&self, g: usize) -> &str {
        &self.gateways[g].url
    }

    pub(crate) fn logs(&self) -> String {
        self.gateways
            .iter()
            .map(|g| format!("--- gateway on h{}\n{}", g.host, g.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Polls `cond` every 20 ms until it holds; panics at the deadline.
pub(crate) async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTP request (hyper, HTTP/1.1); the status and the JSON body
/// (`Value::Null` if the body is not JSON).
pub(crate) async fn http(method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    http_with(method, url, body, &[]).await
}

/// [`http`] with extra headers.
pub(crate) async fn http_with(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let uri: hyper::Uri = url.parse().expect("a URL");
    let authority = uri.authority().expect("host:port").clone();
    let stream = TcpStream::connect(authority.as_str())
        .await
        .unwrap_or_else(|e| panic!("connect to {authority}: {e}"));
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", authority.as_str());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .expect("request");
    let resp = timeout_at(Instant::now() + DEADLINE, sender.send_request(req))
        .await
        .expect("HTTP answer in time")
        .expect("HTTP answer");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub(crate) type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A WebSocket client of the test.
pub(crate) struct Client {
    pub ws: WsStream,
    pub welcome: Value,
}

impl Client {
    /// Connects and reads the welcome.
    pub(crate) async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client::welcomed(ws).await
    }

    /// [`connect`](Self::connect) over a socket whose receive buffer is
    /// held at `bytes` (the kernel doubles it; no autotuning): a client
    /// that stops reading then blocks its server soon, while the others
    /// keep the system's buffers.
    pub(crate) async fn connect_small_window(url: &str, bytes: u32) -> Client {
        let uri: hyper::Uri = url.parse().expect("a URL");
        let addr = uri
            .authority()
            .expect("host:port")
            .as_str()
            .parse()
            .expect("ip:port");
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let tcp = socket
            .connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let (ws, _) =
            tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
                .await
                .unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"));
        Client::welcomed(ws).await
    }

    async fn welcomed(ws: WsStream) -> Client {
        let mut c = Client {
            ws,
            welcome: Value::Null,
        };
        let w = c.next().await;
        assert_eq!(w["type"], "welcome", "{w}");
        c.welcome = w;
        c
    }

    pub(crate) fn conn(&self) -> &str {
        self.welcome["conn"].as_str().expect("conn")
    }

    pub(crate) fn node(&self) -> &str {
        self.welcome["node"].as_str().expect("node")
    }

    pub(crate) async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub(crate) async fn send_text(&mut self, t: &str) {
        self.ws.send(Message::Text(t.into())).await.expect("send");
    }

    /// The next text frame, as JSON.
    pub(crate) async fn next(&mut self) -> Value {
        loop {
            let m = timeout_at(Instant::now() + DEADLINE, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the connection is open")
                .expect("a frame");
            match m {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    }

    /// Reads until a frame satisfies `pred` (skipping others); returns it.
    pub(crate) async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.next().await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// Sends a request with `id` and reads until its answer.
    pub(crate) async fn request(&mut self, mut v: Value, id: u64) -> Value {
        v["id"] = json!(id);
        self.send(v).await;
        self.until(|f| f["id"] == json!(id)).await
    }

    /// Subscribes and waits for the ok.
    pub(crate) async fn subscribe(&mut self, channel: &str, presence: bool) {
        let r = self
            .request(
                json!({"type":"subscribe","channel":channel,"presence":presence}),
                u64::MAX,
            )
            .await;
        assert_eq!(r["type"], "ok", "{r}");
    }

    /// Round trip: every frame queued before the pong is read first.
    pub(crate) async fn ping(&mut self) -> Vec<Value> {
        self.send(json!({"type":"ping","id": 424242})).await;
        let mut before = Vec::new();
        loop {
            let v = self.next().await;
            if v["type"] == "pong" && v["id"] == 424242 {
                return before;
            }
            before.push(v);
        }
    }

    /// Reads until the connection closes; returns the frames before and the
    /// close frame's code and reason, if one came.
    pub(crate) async fn until_closed(&mut self) -> (Vec<Value>, Option<(u16, String)>) {
        let mut frames = Vec::new();
        loop {
            match timeout_at(Instant::now() + DEADLINE, self.ws.next())
                .await
                .expect("the connection closes in time")
            {
                Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(&t).expect("JSON")),
                Some(Ok(Message::Close(c))) => {
                    return (frames, c.map(|c| (u16::from(c.code), c.reason.to_string())))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (frames, None),
            }
        }
    }
}
