//! Section 5: memory and CPU of an idle node, in child processes.

use crate::*;

/// A figure reported by an idle child process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) rss_kib: f64,
    pub(crate) cpu_ns: f64,
    pub(crate) links: usize,
}

/// An idle node in a child process: this binary again, with `CHILD_ENV` set.
pub(crate) struct ChildNode {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: BufReader<ChildStdout>,
    pub(crate) port: u16,
}

impl ChildNode {
    /// Starts one; call from the namespace's thread, so the child is in it.
    pub(crate) fn spawn(kind: &str, cluster: &str) -> ChildNode {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .env(CHILD_ENV, kind)
            .env(CLUSTER_ENV, cluster)
            .env(NETNS_ENV, netns_id("/proc/thread-self/ns/net"))
            // The process's main thread never leaves the host's namespace.
            .env(HOST_NETNS_ENV, netns_id("/proc/self/ns/net"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("child ready");
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("child {kind} did not start: {line:?}"));
        ChildNode {
            child,
            stdin,
            stdout,
            port,
        }
    }

    pub(crate) fn stat(&mut self) -> Stat {
        writeln!(self.stdin, "stat").expect("ask child");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("child stat");
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["stat", rss, cpu, links] => Stat {
                rss_kib: rss.parse().expect("rss"),
                cpu_ns: cpu.parse().expect("cpu"),
                links: links.parse().expect("links"),
            },
            _ => panic!("bad stat line from child: {line:?}"),
        }
    }

    /// Polls until the child holds `n` links.
    pub(crate) fn wait_links(&mut self, n: usize) -> Stat {
        let deadline = Instant::now() + MESH_DEADLINE;
        loop {
            let s = self.stat();
            if s.links == n {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "child linked to {} of {n}",
                s.links
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

/// How long a mesh of idle nodes may take to form: a mesh of 128 in one
/// process takes well over the tests' deadline on a loaded 2-core machine.
const MESH_DEADLINE: Duration = Duration::from_secs(300);

/// Waits until each of `peers` holds `links` links (the child among them).
async fn wait_mesh(peers: &[Service], links: usize) {
    let deadline = Instant::now() + MESH_DEADLINE;
    while !peers.iter().all(|p| p.connections().len() == links) {
        assert!(
            Instant::now() < deadline,
            "no mesh of {} within {MESH_DEADLINE:?}",
            links + 1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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

/// Measures two idle children side by side (tcpnet, baseline): alone, then
/// with 63 idle links each, then with 127.
pub(crate) fn memory_in_netns(rt: &Runtime, cfg: &Config) -> (Vec<Row>, String) {
    let idle = Duration::from_secs(cfg.idle_secs.unwrap_or(if cfg.quick { 5 } else { 60 }));
    let settle = Duration::from_secs(if cfg.quick { 2 } else { 5 });
    const CLUSTER: &str = "bench-idle";
    let mut t = cfg
        .side
        .tcpnet()
        .then(|| ChildNode::spawn("tcpnet", CLUSTER));
    let mut b = cfg
        .side
        .baseline()
        .then(|| ChildNode::spawn("baseline", CLUSTER));

    // Alone: settle, then watch the CPU clock over the idle window.
    let window = |t: &mut Option<ChildNode>, b: &mut Option<ChildNode>| {
        std::thread::sleep(settle);
        let t0 = t.as_mut().map(ChildNode::stat);
        let b0 = b.as_mut().map(ChildNode::stat);
        std::thread::sleep(idle);
        let t1 = t.as_mut().map(ChildNode::stat);
        let b1 = b.as_mut().map(ChildNode::stat);
        let cpu = |s0: Option<Stat>, s1: Option<Stat>| {
            Some((s1?.cpu_ns - s0?.cpu_ns) / idle.as_nanos() as f64 * 100.0)
        };
        let rss = |s: Option<Stat>| s.map(|s| s.rss_kib);
        (rss(t1), rss(b1), cpu(t0, t1), cpu(b0, b1))
    };
    eprintln!("  memory: idle alone for {settle:?} + {idle:?}");
    let (t_rss0, b_rss0, t_cpu0, b_cpu0) = window(&mut t, &mut b);

    // Linked: 63 tcpnet nodes of this process join the child's cluster (a
    // mesh of 64), then 64 more (a mesh of 128); as many plain connections
    // go to the baseline child.
    let mut peers: Vec<Service> = Vec::new();
    let mut plain_links = Vec::new();
    let mut linked = Vec::new();
    let steps = cfg.idle_links.clone().unwrap_or(IDLE_PEERS.to_vec());
    for &links in &steps {
        eprintln!("  memory: linking {links} peers to each child");
        if t.is_some() {
            rt.block_on(async {
                let more = new_nodes(CLUSTER, links - peers.len(), cfg.variant);
                listen_all(&more).await;
                peers.extend(more);
                wait_mesh(&peers, links).await;
            });
            if let Some(t) = t.as_mut() {
                t.wait_links(links);
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
        eprintln!("  memory: idle with {links} links for {settle:?} + {idle:?}");
        linked.push((links, window(&mut t, &mut b)));
    }

    // Still linked to all at the end?
    let t_links = t.as_mut().map(|c| c.stat().links);
    let b_links = b.as_mut().map(|c| c.stat().links);
    for c in [t, b].into_iter().flatten() {
        c.quit();
    }
    drop(plain_links);
    rt.block_on(common::close_all(&peers));

    let mib = |k: Option<f64>| k.map(|k| k / 1024.0);
    let idle_text = format!("{} s", idle.as_secs());
    let row = |measure: String, param: String, unit, tcpnet, baseline, target, setup| Row {
        section: "5. memory",
        measure,
        param,
        unit,
        tcpnet,
        baseline,
        naive: None,
        target,
        setup,
        samples: Samples::default(),
    };
    let mut rows = vec![
        row(
            "RSS of an idle node, no links".into(),
            "rss0".into(),
            "MiB",
            mib(t_rss0),
            mib(b_rss0),
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
            t_cpu0,
            b_cpu0,
            Some(Target::Below(0.1)),
            format!("process CPU clock over {idle_text}"),
        ),
    ];
    for (links, (t_rss, b_rss, t_cpu, b_cpu)) in linked {
        let per_link = |a: Option<f64>, z: Option<f64>| Some((z? - a?) / links as f64);
        rows.push(row(
            format!("RSS of an idle node, {links} links"),
            format!("rss{links}"),
            "MiB",
            mib(t_rss),
            mib(b_rss),
            None,
            format!("the same child, mesh of {}", links + 1),
        ));
        rows.push(row(
            format!("RSS growth per idle link, {links} links"),
            format!("per-link{links}"),
            "KiB",
            per_link(t_rss0, t_rss),
            per_link(b_rss0, b_rss),
            Some(Target::AtMost(16.0)),
            format!("(RSS with {links} links − RSS alone) / {links}"),
        ));
        rows.push(row(
            format!("CPU of an idle node, {links} links"),
            format!("cpu{links}"),
            "% of a core",
            t_cpu,
            b_cpu,
            Some(Target::AtMost(0.1)),
            format!("process CPU clock over {idle_text}"),
        ));
    }
    let note = format!(
        "memory: each idle node is a child process (this binary, `{CHILD_ENV}`) with a tokio \
         runtime of {WORKERS} workers, listening on {LISTEN_ADDR}; tcpnet's is one `Service`, the \
         baseline's accepts plain connections, each read by a task of the careful baseline \
         (whose buffers are taken on first use: an idle connection holds none). Both run at \
         once; each settles {} s, then RSS (VmRSS) is read and the CPU clock \
         (`CLOCK_PROCESS_CPUTIME_ID`) is watched for {idle_text}. Then tcpnet nodes in the \
         parent join tcpnet's child ({:?} of them in all, in steps: meshes of {:?} nodes) and \
         as many plain connections reach the baseline's; the same again at each step. Links \
         held at the end: tcpnet {}, baseline {}.",
        settle.as_secs(),
        steps,
        steps.iter().map(|p| p + 1).collect::<Vec<_>>(),
        t_links.map_or("—".into(), |l| l.to_string()),
        b_links.map_or("—".into(), |l| l.to_string()),
    );
    (rows, note)
}

/// An idle node in a child process, in the parent's private namespace.
/// Answers `stat` on stdin with `stat <VmRSS KiB> <CPU ns> <links>`; ends on
/// `quit` or end of input.
pub(crate) fn child_main(kind: &str) {
    // Never run outside the parent's private namespace (which holds only lo).
    let expected = std::env::var(NETNS_ENV).unwrap_or_default();
    let actual = netns_id("/proc/self/ns/net");
    assert_eq!(actual, expected, "child is not in the parent's namespace");
    let host = std::env::var(HOST_NETNS_ENV).unwrap_or_default();
    assert!(!host.is_empty(), "child needs {HOST_NETNS_ENV}");
    assert_ne!(actual, host, "child is in the host's network namespace");
    let ifs = std::fs::read_to_string("/proc/self/net/dev").expect("read net/dev");
    let names: Vec<&str> = ifs
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo"], "child's namespace must hold only lo");

    let rt = runtime();
    rt.block_on(async {
        let (quit_tx, quit_rx) = tokio::sync::oneshot::channel::<()>();
        match kind {
            "tcpnet" => {
                let cluster = std::env::var(CLUSTER_ENV).expect("cluster");
                let s = Service::new(node_settings(&cluster, Variant::Plain)).expect("settings");
                let addr = s.listen(0, LISTEN_ADDR).await.expect("listen");
                let node = s.clone();
                serve_stats(addr.port, move || node.connections().len(), quit_tx);
                let _ = quit_rx.await;
                s.close().await;
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
                    let rss = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next())
                        .expect("VmRSS");
                    println!("stat {rss} {} {}", process_cpu_ns(), links());
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
