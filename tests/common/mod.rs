//! Test harness: private network namespaces and waiting with deadlines.
//!
//! Every test that starts discovery runs inside [`netns`]: a thread of its
//! own that moves into a fresh network namespace (`unshare(CLONE_NEWNET)`),
//! brings its loopback up with multicast on, and runs a tokio runtime there.
//! Threads spawned from it (tokio's workers, the mDNS daemon, child
//! processes) inherit the namespace, so nothing a test does can reach a real
//! network, and parallel tests never see each other.
#![allow(dead_code)]

pub(crate) mod attacker;
pub(crate) mod foreign;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tcpnet::{Connection, Service, Settings};
use tokio::time::{timeout_at, Instant};

/// Bound on anything that should take milliseconds: a deadline against
/// hangs, not a performance assertion, so generous enough for a debug build
/// on a shared machine (two cores at a load average of 100 or more).
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

const HOW_TO_RUN: &str = "tests need their own network namespaces: run them as root, \
or inside a user namespace that maps you to root: `unshare --user --map-root-user cargo test`";

/// The demo example, built by `cargo test` next to the test binaries.
pub(crate) fn demo_binary() -> std::path::PathBuf {
    example_binary("demo")
}

/// An example, built by `cargo test` next to the test binaries.
pub(crate) fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let example = dir.join("examples").join(name);
    assert!(
        example.exists(),
        "{} is missing: run the tests with `cargo test`, which builds the examples, \
         or build it with `cargo build --example {name}`",
        example.display()
    );
    example
}

/// The resident set of process `pid`, in bytes.
pub(crate) fn rss_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// The time the threads of a process ran and waited to run, from the
/// scheduler's counts (`/proc/<pid>/task/*/schedstat`): how starved a
/// process of a test's was.
pub(crate) struct Scheduled {
    at: Instant,
    ran: Duration,
    waited: Duration,
}

impl Scheduled {
    /// The counts of process `pid` now (of the threads it has now).
    pub(crate) fn of(pid: u32) -> Scheduled {
        let (mut ran, mut waited) = (0, 0);
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("its threads");
        for task in tasks.flatten() {
            let Ok(counts) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue; // a thread that ended meanwhile
            };
            let mut ns = counts
                .split_whitespace()
                .map(|n| n.parse::<u64>().unwrap_or(0));
            ran += ns.next().unwrap_or(0);
            waited += ns.next().unwrap_or(0);
        }
        Scheduled {
            at: Instant::now(),
            ran: Duration::from_nanos(ran),
            waited: Duration::from_nanos(waited),
        }
    }

    /// What the process did between `earlier` and these counts, in words.
    pub(crate) fn since(&self, earlier: &Scheduled) -> String {
        format!(
            "ran {:?} and waited {:?} to run in {:?}",
            self.ran.saturating_sub(earlier.ran),
            self.waited.saturating_sub(earlier.waited),
            self.at - earlier.at
        )
    }
}

/// `n` fresh identities, ordered by id: the first decides each of its pairs.
pub(crate) fn identities(n: usize) -> Vec<tcpnet::Identity> {
    let mut ids: Vec<tcpnet::Identity> = (0..n).map(|_| tcpnet::Identity::generate()).collect();
    ids.sort_by(|a, b| a.id().cmp(b.id()));
    ids
}

/// A key file holding `identity`, in a temporary directory of its own
/// (for a process started with it).
pub(crate) fn key_file(identity: &tcpnet::Identity) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tcpnet-test-{}", identity.id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("node.key");
    std::fs::write(&path, identity.to_pkcs8()).expect("write the key file");
    path
}

/// Runs `test` in a fresh network namespace that holds only loopback.
pub(crate) fn netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    logs();
    let handle = std::thread::spawn(move || {
        enter_private_netns();
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

/// With `RUST_LOG` set, the library's tracing goes to the test's output
/// (timestamped, per thread), as the test harness captures it: what a
/// failing run did, e.g. `RUST_LOG=tcpnet=debug`.
pub(crate) fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_thread_names(true)
            .with_test_writer()
            .try_init();
    }
}

/// Moves the calling thread into a new network namespace and brings `lo` up.
/// Panics (never falls back to the host's network) if that is not possible.
pub(crate) fn enter_private_netns() {
    // SAFETY: plain syscalls on this thread's own state.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            panic!(
                "unshare(CLONE_NEWNET) failed: {}; {HOW_TO_RUN}",
                std::io::Error::last_os_error()
            );
        }
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(sock >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        assert_eq!(libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req), 0);
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_MULTICAST) as libc::c_short;
        assert_eq!(
            libc::ioctl(sock, libc::SIOCSIFFLAGS, &req),
            0,
            "bringing lo up: {}",
            std::io::Error::last_os_error()
        );
        libc::close(sock);
    }
    // Belt and braces: the namespace must hold nothing but loopback.
    assert_only_loopback("the private namespace");
}

/// Panics unless this thread's network namespace holds nothing but `lo`:
/// `what` (a test, a child process, a node that announces itself over
/// mDNS) must never reach a real network.
pub(crate) fn assert_only_loopback(what: &str) {
    let ifs = std::fs::read_to_string("/proc/thread-self/net/dev").expect("read net/dev");
    let names: Vec<&str> = ifs
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(
        names,
        ["lo"],
        "{what} runs only in a private network namespace holding only lo"
    );
}

/// Lifts the soft limit on open files (flood tests hold thousands of
/// sockets, on both ends, in this one process).
pub(crate) fn raise_fd_limit(need: u64) {
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < need as libc::rlim_t {
            assert!(
                lim.rlim_max >= need as libc::rlim_t,
                "this test needs {need} open files; the hard limit is {}",
                lim.rlim_max
            );
            lim.rlim_cur = need as libc::rlim_t;
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
                0,
                "setrlimit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Runs a shell command in the calling thread's namespace (for `ip`).
pub(crate) fn sh(cmd: &str) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .expect("sh");
    assert!(status.success(), "`{cmd}` failed: {status}");
}

/// A service of `cluster` listening on all IPv4 interfaces of the namespace.
pub(crate) async fn start(settings: impl Into<Settings>) -> Service {
    let s = tcpnet::Service::new(settings).expect("settings");
    s.listen(0, "0.0.0.0").await.expect("listen");
    s
}

/// Waits until `cond` holds, re-checking whenever any of the services opens a
/// link or a step of 20 ms elapses; panics with `what` once [`DEADLINE`] of
/// this process's scheduled time has passed.
pub(crate) async fn wait_until(services: &[Service], what: &str, mut cond: impl FnMut() -> bool) {
    // The bound counts this process's scheduled time, as `within_scheduled`
    // does: each step counts at most its nominal length however late it
    // ends, so a starved process (a busy machine) waits longer on the clock
    // while one that is scheduled and makes no progress still fails at
    // DEADLINE; the clock bound stops a step that never ends from waiting
    // for good.
    const STEP: Duration = Duration::from_millis(20);
    let started = Instant::now();
    let mut scheduled = Duration::ZERO;
    let mut events = futures::stream::select_all(services.iter().map(|s| s.on_connection()));
    while !cond() {
        if scheduled > DEADLINE || started.elapsed() > SCHEDULED_DEADLINE_CAP {
            panic!(
                "timed out waiting for {what} ({scheduled:?} scheduled, {:?} on the clock)",
                started.elapsed()
            );
        }
        // Links close without an event on the service, so re-check every
        // few milliseconds as well as on every new link.
        let t = Instant::now();
        let step = t + STEP;
        match timeout_at(step, events.next()).await {
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => tokio::time::sleep_until(step).await, // no services
        }
        scheduled += t.elapsed().min(STEP);
    }
}

/// The longest [`wait_until`] waits on the clock, however starved the
/// process: a bound for CI, well above what a starved run has taken.
const SCHEDULED_DEADLINE_CAP: Duration = Duration::from_secs(300);

/// Waits until every service holds exactly one link to every other one, and
/// checks that both ends of each pair hold the *same* TCP link.
pub(crate) async fn full_mesh(services: &[Service]) {
    let n = services.len();
    wait_until(services, &format!("a full mesh of {n}"), || {
        services.iter().all(|s| s.connections().len() == n - 1)
    })
    .await;
    assert_one_link_per_pair(services);
}

/// Every pair has one link, and both ends see the same socket pair.
pub(crate) fn assert_one_link_per_pair(services: &[Service]) {
    for a in services {
        let conns = a.connections();
        assert_eq!(conns.len(), services.len() - 1, "links of {}", a.id());
        for b in services {
            if a.id() == b.id() {
                continue;
            }
            let ab: Vec<Connection> = conns
                .iter()
                .filter(|c| c.peer_id() == b.id())
                .cloned()
                .collect();
            assert_eq!(
                ab.len(),
                1,
                "{} holds {} links to {}",
                a.id(),
                ab.len(),
                b.id()
            );
            let ba: Vec<Connection> = b
                .connections()
                .into_iter()
                .filter(|c| c.peer_id() == a.id())
                .collect();
            assert_eq!(
                ba.len(),
                1,
                "{} holds {} links to {}",
                b.id(),
                ba.len(),
                a.id()
            );
            assert_eq!(
                ab[0].local_addr(),
                ba[0].remote_addr(),
                "{}/{} disagree on their link",
                a.id(),
                b.id()
            );
        }
    }
}

/// Awaits a future with the deadline.
pub(crate) async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The period of the clock [`within_scheduled`] counts in.
const SCHEDULED_TICK: Duration = Duration::from_millis(50);

/// Awaits `f` for `limit` of this process's scheduled time, counted in
/// ticks of the runtime's timer: a tick that fires late, because the
/// process was not being scheduled (or its runtime was busy), counts as
/// one tick all the same, as the library counts its own timeouts (see
/// `link::patience`). For a bound on what the library's timers and steps
/// take in this process, which a starved machine stretches in wall-clock
/// time. Gives the wall-clock time waited if `f` did not finish within
/// `limit` so counted (or within [`DEADLINE`] in any case).
pub(crate) async fn within_scheduled<T>(
    limit: Duration,
    f: impl Future<Output = T>,
) -> Result<T, Duration> {
    let t0 = Instant::now();
    let ticks = limit.as_nanos().div_ceil(SCHEDULED_TICK.as_nanos());
    let counted = async {
        for _ in 0..ticks {
            tokio::time::sleep(SCHEDULED_TICK).await;
        }
    };
    tokio::select! {
        v = f => Ok(v),
        _ = counted => Err(t0.elapsed()),
        _ = tokio::time::sleep(DEADLINE) => Err(t0.elapsed()),
    }
}

/// This process's scheduled time, counted as [`within_scheduled`] counts
/// it: ticks of the runtime's timer, each [`SCHEDULED_TICK`] however late
/// it fired, from [`start`](Self::start) until the runtime ends. For
/// telling apart, by how long they took, things that this process's own
/// starvation stretches on the clock (a redial at once from one after a
/// longer wait, say).
#[derive(Clone)]
pub(crate) struct ScheduledClock(Arc<AtomicU64>);

impl ScheduledClock {
    /// Starts counting (call from inside the runtime).
    pub(crate) fn start() -> Self {
        let ticks = Arc::new(AtomicU64::new(0));
        let counting = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SCHEDULED_TICK).await;
                counting.fetch_add(1, Ordering::Relaxed);
            }
        });
        ScheduledClock(ticks)
    }

    /// The scheduled time counted so far.
    pub(crate) fn now(&self) -> Duration {
        SCHEDULED_TICK * self.0.load(Ordering::Relaxed) as u32
    }
}

/// Closes every service.
pub(crate) async fn close_all(services: &[Service]) {
    futures::future::join_all(services.iter().map(|s| s.close())).await;
}

/// Established TCP sockets in this thread's namespace (IPv4 and IPv6).
pub(crate) fn established_sockets() -> usize {
    ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(3) == Some("01"))
                .map(|_| ())
                .collect::<Vec<_>>()
        })
        .count()
}

/// Waits until the namespace holds exactly `n` established TCP sockets: with
/// every node in one namespace, a full mesh of `k` nodes has `k * (k - 1)`
/// (both ends of each link), once duplicate links have finished closing.
pub(crate) async fn wait_for_sockets(services: &[Service], n: usize) {
    wait_until(services, &format!("{n} established sockets"), || {
        established_sockets() == n
    })
    .await;
}

/// Two services of `settings` started together and linked, with each one's
/// connection to the other.
pub(crate) async fn linked_pair(
    settings: impl Fn() -> Settings,
) -> (Service, Service, Connection, Connection) {
    let (a, b) = tokio::join!(start(settings()), start(settings()));
    full_mesh(&[a.clone(), b.clone()]).await;
    let ab = a.connections().pop().unwrap();
    let ba = b.connections().pop().unwrap();
    (a, b, ab, ba)
}

/// Two services of cluster "c" listening together on the given addresses.
pub(crate) async fn listen_pair(
    addr_a: &str,
    addr_b: &str,
) -> (Service, Service, tcpnet::Address, tcpnet::Address) {
    let a = tcpnet::tcpnet("c").unwrap();
    let b = tcpnet::tcpnet("c").unwrap();
    let (ra, rb) = tokio::join!(a.listen(0, addr_a), b.listen(0, addr_b));
    (
        a.clone(),
        b.clone(),
        ra.expect("listen a"),
        rb.expect("listen b"),
    )
}
pub(crate) mod demo;
pub(crate) mod example;
pub(crate) mod relay;
