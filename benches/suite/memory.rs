//! Section 5: memory and CPU of an idle node, in child processes.
//!
//! The node measured is a child process of its own; its peers are tcpnet
//! nodes in other child processes ([`PEERS_PER_PROCESS`] each), so that no
//! process holds more sockets than its file limit allows and the peers'
//! heartbeats come from many processes at once, as on a LAN. Beside it run
//! two baselines, each a child process too: plain TCP connections (the
//! careful baseline's reader, no heartbeats) and plain TCP with heartbeats
//! at tcpnet's default settings (`beating.rs`), whose peers are child
//! processes of [`PEERS_PER_PROCESS`] links each.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize};

use crate::*;

/// Most peers of the measured node in one child process.
pub(crate) const PEERS_PER_PROCESS: usize = 16;
/// Set in a child of kind `peers`: how many nodes it runs.
pub(crate) const PEERS_ENV: &str = "TCPNET_BENCH_PEERS";
/// A command the measured node's child runs under (a profiler), given in
/// the parent's environment: `TCPNET_BENCH_WRAP="heaptrack -o FILE"`.
const WRAP_ENV: &str = "TCPNET_BENCH_WRAP";

/// The system allocator, counting the bytes and blocks in use once
/// [`count_heap`] has been called (in the memory section's children only:
/// elsewhere it adds one relaxed load per allocation).
pub(crate) struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static HEAP_BYTES: AtomicIsize = AtomicIsize::new(0);
static HEAP_BLOCKS: AtomicIsize = AtomicIsize::new(0);

fn counted(bytes: isize, blocks: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        HEAP_BYTES.fetch_add(bytes, Ordering::Relaxed);
        HEAP_BLOCKS.fetch_add(blocks, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            counted(layout.size() as isize, 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            counted(layout.size() as isize, 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        counted(-(layout.size() as isize), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            counted(new_size as isize - layout.size() as isize, 0);
        }
        p
    }
}

/// Starts counting heap bytes and blocks (what was allocated before is
/// not counted, so only differences mean anything).
fn count_heap() {
    COUNTING.store(true, Ordering::Relaxed);
}

/// A figure reported by an idle child process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) rss_kib: f64,
    /// The anonymous part of it (heap and stacks; not the binary's pages).
    pub(crate) anon_kib: f64,
    pub(crate) cpu_ns: f64,
    pub(crate) links: usize,
    /// Open file descriptors.
    pub(crate) fds: f64,
    /// Heap bytes and blocks in use (counted from the child's start).
    pub(crate) heap_bytes: f64,
    pub(crate) heap_blocks: f64,
}

/// An idle node in a child process: this binary again, with `CHILD_ENV` set.
pub(crate) struct ChildNode {
    kind: String,
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: BufReader<ChildStdout>,
    pub(crate) port: u16,
}

impl ChildNode {
    /// Starts one; call from the namespace's thread, so the child is in it.
    pub(crate) fn spawn(kind: &str, cluster: &str) -> ChildNode {
        Self::spawn_with(kind, cluster, &[])
    }

    /// Starts one with more environment.
    pub(crate) fn spawn_with(kind: &str, cluster: &str, env: &[(&str, String)]) -> ChildNode {
        let exe = std::env::current_exe().expect("current exe");
        // A profiler for the measured node, e.g. `heaptrack -o FILE`.
        let wrap = std::env::var(WRAP_ENV).ok().filter(|_| kind == "tcpnet");
        let mut command = match wrap.as_deref().map(str::split_whitespace) {
            Some(mut words) => {
                let mut c = Command::new(words.next().expect("a command to wrap in"));
                c.args(words).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let mut child = command
            .env(CHILD_ENV, kind)
            .env(CLUSTER_ENV, cluster)
            .env(NETNS_ENV, netns_id("/proc/thread-self/ns/net"))
            // The process's main thread never leaves the host's namespace.
            .env(HOST_NETNS_ENV, netns_id("/proc/self/ns/net"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        // A profiler wrapped around the child may say things first.
        while {
            line.clear();
            stdout.read_line(&mut line).expect("child ready") > 0 && !line.starts_with("ready ")
        } {}
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("child {kind} did not start: {line:?}"));
        ChildNode {
            kind: kind.to_string(),
            child,
            stdin,
            stdout,
            port,
        }
    }

    /// Starts a child running `n` tcpnet nodes of `cluster`, the measured
    /// node's peers.
    fn spawn_peers(cluster: &str, n: usize) -> ChildNode {
        Self::spawn_with("peers", cluster, &[(PEERS_ENV, n.to_string())])
    }

    pub(crate) fn stat(&mut self) -> Stat {
        writeln!(self.stdin, "stat").expect("ask child");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("child stat");
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |s: &str| {
            s.parse::<f64>()
                .unwrap_or_else(|_| panic!("bad stat: {line:?}"))
        };
        match f.as_slice() {
            ["stat", rss, anon, cpu, links, fds, bytes, blocks] => Stat {
                rss_kib: num(rss),
                anon_kib: num(anon),
                cpu_ns: num(cpu),
                links: links.parse().expect("links"),
                fds: num(fds),
                heap_bytes: num(bytes),
                heap_blocks: num(blocks),
            },
            _ => panic!("bad stat line from child: {line:?}"),
        }
    }

    /// Polls until the child holds `n` links (its nodes in all); panics
    /// if it does not by [`MESH_DEADLINE`].
    pub(crate) fn wait_links(&mut self, n: usize) -> Stat {
        self.try_wait_links(n)
            .unwrap_or_else(|s| panic!("child {} linked to {} of {n}", self.kind, s.links))
    }

    /// Polls until the child holds `n` links; gives the last figures as an
    /// error at [`MESH_DEADLINE`] or as soon as the count falls (for the
    /// baseline with heartbeats, which never dials a lost link again, so
    /// a count that fell cannot reach `n`).
    pub(crate) fn try_wait_links(&mut self, n: usize) -> Result<Stat, Stat> {
        let deadline = Instant::now() + MESH_DEADLINE;
        let mut most = 0;
        loop {
            let s = self.stat();
            if s.links == n {
                return Ok(s);
            }
            let fell = self.kind.starts_with("beating") && s.links < most;
            if fell || Instant::now() >= deadline {
                return Err(s);
            }
            most = most.max(s.links);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

/// How long a mesh of idle nodes may take to form: a mesh of 128 on a
/// loaded 2-core machine takes well over the tests' deadline.
const MESH_DEADLINE: Duration = Duration::from_secs(300);

pub(crate) fn netns_id(path: &str) -> String {
    std::fs::read_link(path)
        .expect("read netns link")
        .to_string_lossy()
        .into_owned()
}

pub(crate) fn memory(cfg: &Config) -> (Vec<Row>, String) {
    let cfg = cfg.clone();
    in_netns(move |rt| memory_in_netns(rt, &cfg))
}

/// The measured children, in the order of [`Sides`]: tcpnet, plain TCP,
/// plain TCP with heartbeats.
type Sides<T> = [T; 3];

/// The links a side held at a window's start and end (`None`: not run).
type Held = Option<(usize, usize)>;

/// What one idle window saw of the measured children.
struct Window {
    s0: Sides<Option<Stat>>,
    s1: Sides<Option<Stat>>,
    idle: Duration,
}

impl Window {
    /// Settles, then watches the children's CPU clocks over `idle`.
    fn watch(children: &mut Sides<Option<ChildNode>>, settle: Duration, idle: Duration) -> Window {
        std::thread::sleep(settle);
        let s0 = children.each_mut().map(|c| c.as_mut().map(ChildNode::stat));
        std::thread::sleep(idle);
        Window {
            s0,
            s1: children.each_mut().map(|c| c.as_mut().map(ChildNode::stat)),
            idle,
        }
    }

    /// Percent of a core over the window, of each side.
    fn cpu(&self) -> Sides<Option<f64>> {
        let idle = self.idle.as_nanos() as f64;
        std::array::from_fn(|i| Some((self.s1[i]?.cpu_ns - self.s0[i]?.cpu_ns) / idle * 100.0))
    }

    /// The links each side held at the window's start and end; a side
    /// that did not hold `links` at both loses its figures (they would be
    /// those of fewer links, or of links going away).
    fn keep_if_held(&mut self, links: usize) -> Sides<Held> {
        std::array::from_fn(|i| {
            let held = (self.s0[i]?.links, self.s1[i]?.links);
            if held != (links, links) {
                (self.s0[i], self.s1[i]) = (None, None);
            }
            Some(held)
        })
    }

    /// A figure at the window's end, of each side.
    fn end(&self, f: impl Fn(&Stat) -> f64) -> Sides<Option<f64>> {
        self.s1.map(|s| s.as_ref().map(&f))
    }
}

/// Measures three idle children side by side (tcpnet, plain TCP, plain TCP
/// with heartbeats): alone, then with 63 idle links each, then with 127.
pub(crate) fn memory_in_netns(rt: &Runtime, cfg: &Config) -> (Vec<Row>, String) {
    let idle = Duration::from_secs(cfg.idle_secs.unwrap_or(if cfg.quick { 5 } else { 60 }));
    let settle = Duration::from_secs(if cfg.quick { 2 } else { 5 });
    const CLUSTER: &str = "bench-idle";
    let mut children: Sides<Option<ChildNode>> = [
        cfg.side
            .tcpnet()
            .then(|| ChildNode::spawn("tcpnet", CLUSTER)),
        cfg.side
            .baseline()
            .then(|| ChildNode::spawn("baseline", CLUSTER)),
        cfg.side
            .beating()
            .then(|| ChildNode::spawn("beating", CLUSTER)),
    ];

    eprintln!("  memory: idle alone for {settle:?} + {idle:?}");
    let alone = Window::watch(&mut children, settle, idle);

    // Linked: tcpnet nodes in child processes of their own join the
    // measured child's cluster, 63 of them (a mesh of 64), then 64 more (a
    // mesh of 128); as many plain connections go to the baseline child, and
    // as many links with heartbeats, from child processes of their own, to
    // the third.
    let mut peers: Vec<(ChildNode, usize)> = Vec::new();
    let mut beating_peers: Vec<(ChildNode, usize)> = Vec::new();
    let mut plain_links = Vec::new();
    let mut linked = Vec::new();
    // Links each side held at the start and the end of each step's window.
    let mut held_at: Vec<(usize, Sides<Held>)> = Vec::new();
    let steps = cfg.idle_links.clone().unwrap_or(IDLE_PEERS.to_vec());
    for &links in &steps {
        eprintln!("  memory: linking {links} peers to each child");
        let [t, b, h] = &mut children;
        if t.is_some() {
            let mut more = links.saturating_sub(peers.iter().map(|(_, n)| n).sum());
            while more > 0 {
                let n = more.min(PEERS_PER_PROCESS);
                peers.push((ChildNode::spawn_peers(CLUSTER, n), n));
                more -= n;
            }
            if let Some(t) = t.as_mut() {
                t.wait_links(links);
            }
            for (p, n) in &mut peers {
                p.wait_links(*n * links);
            }
        }
        if let Some(b) = b.as_mut() {
            let port = b.port;
            rt.block_on(async {
                while plain_links.len() < links {
                    let s = TcpStream::connect((LISTEN_ADDR, port))
                        .await
                        .expect("connect");
                    s.set_nodelay(true).expect("nodelay");
                    plain_links.push(s);
                }
            });
            b.wait_links(links);
        }
        if let Some(h) = h.as_mut() {
            let mut more = links.saturating_sub(beating_peers.iter().map(|(_, n)| n).sum());
            while more > 0 {
                let n = more.min(PEERS_PER_PROCESS);
                let env = beating_peers_env(n, h.port);
                beating_peers.push((ChildNode::spawn_with("beating-peers", CLUSTER, &env), n));
                more -= n;
            }
            // Links it lost before are gone for good: wait for the rest.
            let lost = held_at.last().map_or(0, |(n, held)| {
                held[2].map_or(0, |(_, end)| n.saturating_sub(end))
            });
            let want = links - lost.min(links);
            if let Err(s) = h.try_wait_links(want) {
                eprintln!(
                    "  memory: baseline with heartbeats holds {} of {links} links",
                    s.links
                );
            }
            // Its peers dialed all their links before saying they were ready.
            for (p, n) in &mut beating_peers {
                let held = p.stat().links;
                if held != *n {
                    eprintln!("  memory: a peer of the baseline with heartbeats holds {held} of {n} links");
                }
            }
        }
        eprintln!("  memory: idle with {links} links for {settle:?} + {idle:?}");
        let mut w = Window::watch(&mut children, settle, idle);
        held_at.push((links, w.keep_if_held(links)));
        linked.push((links, w));
    }

    // Still linked to all at the end?
    let held = children.each_mut().map(|c| {
        c.as_mut()
            .map_or("—".into(), |c| c.stat().links.to_string())
    });
    let processes = peers.len();
    let beating_processes = beating_peers.len();
    for c in children
        .into_iter()
        .flatten()
        .chain(peers.into_iter().chain(beating_peers).map(|(p, _)| p))
    {
        c.quit();
    }
    drop(plain_links);

    let mib = |k: Option<f64>| k.map(|k| k / 1024.0);
    let idle_text = format!("{} s", idle.as_secs());
    let row = |measure: String,
               param: String,
               unit,
               [tcpnet, baseline, beating]: Sides<_>,
               target,
               setup| Row {
        section: "5. memory",
        measure,
        param,
        unit,
        tcpnet,
        baseline,
        naive: None,
        beating,
        target,
        setup,
        samples: Samples::default(),
    };
    let rss = |w: &Window| w.end(|s| s.rss_kib);
    let mut rows = vec![
        row(
            "RSS of an idle node, no links".into(),
            "rss0".into(),
            "MiB",
            rss(&alone).map(mib),
            Some(Target::Below(10.0)),
            format!(
                "child process, VmRSS after {} s + {idle_text}",
                settle.as_secs()
            ),
        ),
        row(
            "CPU of an idle node, no links".into(),
            "cpu0".into(),
            "% of a core",
            alone.cpu(),
            Some(Target::Below(0.1)),
            format!("process CPU clock over {idle_text}"),
        ),
    ];
    for (links, w) in &linked {
        let links = *links;
        let per_link = |f: fn(&Stat) -> f64, scale: f64| {
            let (s0, s1) = (alone.end(f), w.end(f));
            std::array::from_fn(|i| Some((s1[i]? - s0[i]?) / scale / links as f64))
        };
        rows.push(row(
            format!("RSS of an idle node, {links} links"),
            format!("rss{links}"),
            "MiB",
            rss(w).map(mib),
            None,
            format!("the same child, mesh of {}", links + 1),
        ));
        rows.push(row(
            format!("RSS growth per idle link, {links} links"),
            format!("per-link{links}"),
            "KiB",
            per_link(|s| s.rss_kib, 1.0),
            Some(Target::AtMost(16.0)),
            format!("(RSS with {links} links − RSS alone) / {links}"),
        ));
        rows.push(row(
            format!("anonymous RSS growth per idle link, {links} links"),
            format!("anon-per-link{links}"),
            "KiB",
            per_link(|s| s.anon_kib, 1.0),
            None,
            "the same with RssAnon: without pages of the binary read in".into(),
        ));
        rows.push(row(
            format!("heap growth per idle link, {links} links"),
            format!("heap-per-link{links}"),
            "KiB",
            per_link(|s| s.heap_bytes, 1024.0),
            None,
            format!("bytes allocated and not freed, (with {links} links − alone) / {links}"),
        ));
        rows.push(row(
            format!("heap blocks per idle link, {links} links"),
            format!("blocks-per-link{links}"),
            "blocks",
            per_link(|s| s.heap_blocks, 1.0),
            None,
            "allocations not freed, the same way".into(),
        ));
        rows.push(row(
            format!("open files of an idle node, {links} links"),
            format!("fds{links}"),
            "files",
            w.end(|s| s.fds),
            None,
            "entries of /proc/self/fd".into(),
        ));
        rows.push(row(
            format!("CPU of an idle node, {links} links"),
            format!("cpu{links}"),
            "% of a core",
            w.cpu(),
            Some(Target::AtMost(0.1)),
            format!("process CPU clock over {idle_text}"),
        ));
    }
    let held_text = held_at
        .iter()
        .map(|(links, sides)| {
            let sides = sides.map(|h| h.map_or("—".into(), |(a, b)| format!("{a}/{b}")));
            format!("{links} links: {}", sides.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let note = format!(
        "memory: each idle node is a child process (this binary, `{CHILD_ENV}`) with a tokio \
         runtime of {WORKERS} workers, listening on {LISTEN_ADDR}; tcpnet's is one `Service`, the \
         baseline's accepts plain connections, each read by a task of the careful baseline \
         (whose 64 KiB read buffer is reserved at the socket's first readiness, with one page \
         of it touched: the heap row's 64.8 KiB a link). All three run at once; each settles {} s, then RSS (VmRSS), open files and the heap (bytes and blocks \
         allocated and not freed, counted by the child's global allocator) are read and the \
         CPU clock (`CLOCK_PROCESS_CPUTIME_ID`) is watched for {idle_text}. Then tcpnet nodes \
         in {processes} child processes of at most {PEERS_PER_PROCESS} nodes each (every one \
         a real tcpnet node with default settings) join tcpnet's child ({:?} of them in all, \
         in steps: meshes of {:?} nodes) and as many plain connections from the parent reach \
         the baseline's; the same again at each step. The baseline with heartbeats \
         (`beating.rs`) is the plain one given the liveness of tcpnet's default settings and \
         no more: one timer per process on ticks of 250 ms aligned to the system clock, \
         which writes a 25-byte frame (the size of tcpnet's heartbeat) on every link once a \
         second, on the second, and closes links silent for 3 s; a reader task per link \
         with a 256-byte buffer that notes the tick it last heard something; its links come \
         from {beating_processes} child processes of at most {PEERS_PER_PROCESS} links each \
         running the same code, so it reads a heartbeat a second on every link too. The loads \
         differ: each of those processes writes {PEERS_PER_PROCESS} heartbeats a tick, \
         while each of tcpnet's peer processes runs {PEERS_PER_PROCESS} nodes of the whole \
         mesh (in a mesh of 128, 2,032 heartbeats a tick in all), so tcpnet's measured node \
         gets its peers' beats spread over 25-175 ms after the tick, the baseline's within \
         20 ms. The suite's tcpnet nodes are built with the `metrics` feature: each runs a \
         once-a-second export task that a default build does not have. Links \
         held at the start and the end of each step's window (tcpnet, baseline, baseline \
         with heartbeats; a side that did not hold the step's count at both has no figures \
         for that step): {}. Links held at the end: tcpnet {}, baseline {}, baseline with \
         heartbeats {}.",
        settle.as_secs(),
        steps,
        steps.iter().map(|p| p + 1).collect::<Vec<_>>(),
        held_text,
        held[0],
        held[1],
        held[2],
    );
    (rows, note)
}

/// An idle child process, in the parent's private namespace: the measured
/// node (`tcpnet`), the baselines' (`baseline`, `beating`), the measured
/// node's peers (`peers`, [`PEERS_ENV`] of them), or the peers of the
/// baseline with heartbeats (`beating-peers`). Answers `stat` on stdin with
/// `stat <VmRSS KiB> <RssAnon KiB> <CPU ns> <links> <open files> <heap
/// bytes> <heap blocks>`; ends on `quit` or end of input.
pub(crate) fn child_main(kind: &str) {
    count_heap();
    // Never run outside the parent's private namespace (which holds only lo).
    let expected = std::env::var(NETNS_ENV).unwrap_or_default();
    let actual = netns_id("/proc/self/ns/net");
    assert_eq!(actual, expected, "child is not in the parent's namespace");
    let host = std::env::var(HOST_NETNS_ENV).unwrap_or_default();
    assert!(!host.is_empty(), "child needs {HOST_NETNS_ENV}");
    assert_ne!(actual, host, "child is in the host's network namespace");
    common::assert_only_loopback("a child of the memory section");

    let rt = runtime();
    rt.block_on(async {
        let (quit_tx, quit_rx) = tokio::sync::oneshot::channel::<()>();
        match kind {
            "tcpnet" | "peers" => {
                let cluster = std::env::var(CLUSTER_ENV).expect("cluster");
                let n = match kind {
                    "peers" => peers_count(kind),
                    _ => 1,
                };
                let nodes = new_nodes(&cluster, n, Variant::Plain);
                let listening =
                    futures::future::join_all(nodes.iter().map(|s| s.listen(0, LISTEN_ADDR))).await;
                let ports: Vec<u16> = listening
                    .into_iter()
                    .map(|a| a.expect("listen").port)
                    .collect();
                let port = ports[0];
                let all = nodes.clone();
                let links = move || all.iter().map(|s| s.connections().len()).sum();
                serve_stats(port, links, quit_tx);
                let _ = quit_rx.await;
                common::close_all(&nodes).await;
            }
            "beating" | "beating-peers" => {
                let peers = match kind {
                    "beating-peers" => peers_count(kind),
                    _ => 0,
                };
                beating_child(kind, peers, quit_tx).await;
                let _ = quit_rx.await;
            }
            "baseline" => {
                let l = TcpListener::bind((LISTEN_ADDR, 0)).await.expect("bind");
                let port = l.local_addr().expect("addr").port();
                let live = Arc::new(AtomicUsize::new(0));
                let counted = live.clone();
                tokio::spawn(async move {
                    loop {
                        let (s, _) = l.accept().await.expect("accept");
                        let live = counted.clone();
                        live.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(async move {
                            let (mut r, _w) = plain_ends(Plain::Careful, s);
                            while r.read_frame().await.is_some() {}
                            live.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                });
                serve_stats(port, move || live.load(Ordering::SeqCst), quit_tx);
                let _ = quit_rx.await;
            }
            other => panic!("unknown child kind {other}"),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
}

/// The count of nodes or links a child of kind `peers` or `beating-peers`
/// is given in [`PEERS_ENV`].
fn peers_count(kind: &str) -> usize {
    std::env::var(PEERS_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a {kind} child needs a count in {PEERS_ENV}"))
}

/// Says `ready <port>`, then answers `stat` lines from stdin on a thread of
/// its own (blocked in `read` while idle, so it costs no CPU).
pub(crate) fn serve_stats(
    port: u16,
    links: impl Fn() -> usize + Send + 'static,
    quit: tokio::sync::oneshot::Sender<()>,
) {
    println!("ready {port}");
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line.as_deref().map(str::trim) {
                Ok("stat") => {
                    let status = std::fs::read_to_string("/proc/self/status").expect("status");
                    let field = |name: &str| {
                        status
                            .lines()
                            .find_map(|l| l.strip_prefix(name))
                            .and_then(|v| v.split_whitespace().next())
                            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
                            .to_string()
                    };
                    let (rss, anon) = (field("VmRSS:"), field("RssAnon:"));
                    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
                    println!(
                        "stat {rss} {anon} {} {} {fds} {} {}",
                        process_cpu_ns(),
                        links(),
                        HEAP_BYTES.load(Ordering::Relaxed),
                        HEAP_BLOCKS.load(Ordering::Relaxed),
                    );
                }
                _ => break,
            }
        }
        let _ = quit.send(());
    });
}

/// CPU time of the whole process (every thread, live or ended), in ns.
pub(crate) fn process_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into the timespec we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}
