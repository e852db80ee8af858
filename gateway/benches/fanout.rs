//! The gateway's benchmark: WebSocket clients subscribed to one channel,
//! spread over three gateway processes on a private LAN, against the same
//! clients on a single gateway process, in one run.
//!
//! ```sh
//! cargo bench -p tcpnet-gateway            # 2,000 clients; under a minute
//! cargo bench -p tcpnet-gateway -- --quick # 200 clients, short phases
//! cargo bench -p tcpnet-gateway -- --clients 1000 --rate 20 --seconds 5
//! ```
//!
//! Measures, for each setup: deliveries per second and publish-to-delivery
//! latency (p50, p99) at a fixed publish rate; the most deliveries per
//! second when publishers go faster than the clients can take (saturation);
//! the memory each idle connection costs a gateway process (its RSS growth
//! over 2,000 idle connections); and, on three nodes, 10,000 idle
//! connections held; and the CPU time each delivery costs the gateways and
//! the clients. The subscribers run in this process (tungstenite, one
//! thread reading them all), on the same two cores as the gateways, and
//! check that each gets every message once and in order per publisher.
//! Nothing is asserted: it prints a table for the README.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "fanout/subscribers.rs"]
mod subscribers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{http, netns, Lan};
use futures::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

struct Args {
    clients: usize,
    rate: u64,
    seconds: u64,
    idle: usize,
    held: usize,
    /// Threads reading the subscribers.
    readers: usize,
}

fn args() -> Args {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut a = if quick {
        Args {
            clients: 200,
            rate: 100,
            seconds: 3,
            idle: 200,
            held: 1000,
            readers: 2,
        }
    } else {
        Args {
            clients: 2000,
            rate: 10,
            seconds: 10,
            idle: 2000,
            held: 10_000,
            readers: 2,
        }
    };
    let argv: Vec<String> = std::env::args().collect();
    for w in argv.windows(2) {
        match w[0].as_str() {
            "--clients" => a.clients = w[1].parse().expect("--clients N"),
            "--rate" => a.rate = w[1].parse().expect("--rate N"),
            "--seconds" => a.seconds = w[1].parse().expect("--seconds N"),
            "--readers" => a.readers = w[1].parse::<usize>().expect("--readers N").max(1),
            _ => {}
        }
    }
    a
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    // The welcome.
    match ws.next().await {
        Some(Ok(Message::Text(_))) => ws,
        other => panic!("no welcome: {other:?}"),
    }
}

/// `n` connections to `path`, round robin over the gateways, 100 at a time.
async fn connect_many(lan: &Lan, gateways: &[usize], path: &str, n: usize) -> Vec<Ws> {
    let mut out = Vec::with_capacity(n);
    let urls: Vec<String> = (0..n)
        .map(|i| lan.gateways[gateways[i % gateways.len()]].ws(path))
        .collect();
    for chunk in urls.chunks(100) {
        let batch = futures::future::join_all(chunk.iter().map(|u| connect(u))).await;
        out.extend(batch);
    }
    out
}

/// `n` subscribers of `channel` (the `/ws/<channel>` path), round robin
/// over the gateways.
async fn subscribe_many(
    lan: &Lan,
    gateways: &[usize],
    channel: &str,
    n: usize,
) -> Vec<subscribers::Sub> {
    let urls = (0..n)
        .map(|i| lan.gateways[gateways[i % gateways.len()]].ws(&format!("/ws/{channel}")))
        .collect();
    subscribers::connect_many(urls).await
}

fn micros(start: std::time::Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

struct Run {
    deliveries: u64,
    expected: u64,
    /// Deliveries out of order for their publisher, and other frames.
    disorder: u64,
    other: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time (user and system) per delivery, in microseconds: of the
    /// gateway processes together, and of this process (the clients).
    gateway_cpu_us: f64,
    client_cpu_us: f64,
}

/// CPU time (user and system) a process has used so far, in microseconds.
fn cpu_us(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name (in parentheses, which may hold
    // spaces) start with the third, the state; utime and stime are the
    // 14th and 15th.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    ticks * 1_000_000 / per_second
}

/// CPU time of the gateways `gateways` and of this process, in microseconds.
fn cpu_now(lan: &Lan, gateways: &[usize]) -> (u64, u64) {
    let gw = gateways
        .iter()
        .map(|&g| cpu_us(&lan.gateways[g].pid().to_string()))
        .sum();
    (gw, cpu_us("self"))
}

/// Publishers on every gateway publish `rate` messages a second in all for
/// `seconds`; every subscriber records each message's latency and checks
/// that each publisher's messages come in order, each once.
async fn fanout(
    lan: &Lan,
    gateways: &[usize],
    subs: Vec<subscribers::Sub>,
    readers: usize,
    channel: &str,
    rate: u64,
    seconds: u64,
) -> Run {
    let start = std::time::Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let total = rate * seconds;
    // Message `n` comes from publisher `n % publishers`.
    let publishers = gateways.len() as u64;
    let n_subs = subs.len() as u64;
    // The subscribers dealt round robin to the reading threads, each
    // counting what it reads.
    let mut groups: Vec<Vec<subscribers::Sub>> = (0..readers).map(|_| Vec::new()).collect();
    for (i, ws) in subs.into_iter().enumerate() {
        groups[i % readers].push(ws);
    }
    let counts: Vec<Arc<subscribers::Counter>> = (0..readers).map(|_| Arc::default()).collect();
    let count = || -> u64 { counts.iter().map(|c| c.0.load(Ordering::Relaxed)).sum() };
    let reading: Vec<_> = groups
        .into_iter()
        .zip(&counts)
        .map(|(group, c)| {
            let (c, stop) = (c.clone(), stop.clone());
            tokio::task::spawn_blocking(move || {
                subscribers::read(group, total, publishers, start, &c, &stop)
            })
        })
        .collect();
    let mut pubs = Vec::new();
    for &g in gateways {
        pubs.push(connect(&lan.gateways[g].ws("/ws")).await);
    }
    let cpu0 = cpu_now(lan, gateways);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let t0 = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let p = &mut pubs[(i % publishers) as usize];
        let msg = format!(
            r#"{{"type":"publish","channel":"{channel}","data":{{"t":{},"n":{i}}}}}"#,
            micros(start)
        );
        p.send(Message::Text(msg.into())).await.expect("publish");
    }
    let expected = total * n_subs;
    // Wait for the deliveries to stop coming (all in, or 10 s without one).
    let mut last = count();
    let mut last_change = Instant::now();
    while count() < expected && last_change.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = count();
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    let cpu1 = cpu_now(lan, gateways);
    let elapsed = if count() < expected {
        last_change.duration_since(t0)
    } else {
        t0.elapsed()
    };
    stop.store(true, Ordering::Relaxed);
    let mut seen = subscribers::Seen::default();
    for r in reading {
        let mut part = r.await.expect("a reader of the subscribers");
        seen.samples.append(&mut part.samples);
        seen.disorder += part.disorder;
        seen.other += part.other;
    }
    let deliveries = count();
    let mut s = seen.samples;
    s.sort_unstable();
    let pct = |p: f64| {
        if s.is_empty() {
            f64::NAN
        } else {
            s[((s.len() - 1) as f64 * p) as usize] as f64 / 1000.0
        }
    };
    let per_delivery = |us: u64| us as f64 / deliveries.max(1) as f64;
    Run {
        deliveries,
        expected,
        disorder: seen.disorder,
        other: seen.other,
        per_second: deliveries as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        gateway_cpu_us: per_delivery(cpu1.0 - cpu0.0),
        client_cpu_us: per_delivery(cpu1.1 - cpu0.1),
    }
}

/// The fixed-rate phase, then the saturation phase, on `gateways`, each
/// with fresh subscribers of a channel of its own (`fixed<tag>`,
/// `sat<tag>`).
async fn phases(lan: &Lan, gateways: &[usize], a: &Args, tag: &str) -> (Run, Run) {
    let mut runs = Vec::new();
    for (phase, rate, seconds) in [
        ("fixed", a.rate, a.seconds),
        ("sat", a.rate * 20, a.seconds.min(5)),
    ] {
        let channel = format!("{phase}{tag}");
        let subs = subscribe_many(lan, gateways, &channel, a.clients).await;
        for &g in gateways {
            wait_members(lan, g, &channel, a.clients).await;
        }
        runs.push(fanout(lan, gateways, subs, a.readers, &channel, rate, seconds).await);
    }
    let sat = runs.pop().expect("two phases");
    let fixed = runs.pop().expect("two phases");
    (fixed, sat)
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// RSS growth per idle connection on one gateway.
async fn idle_cost(lan: &Lan, g: usize, n: usize) -> f64 {
    let pid = lan.gateways[g].pid();
    let before = rss_kib(pid);
    let conns = connect_many(lan, &[g], "/ws", n).await;
    let after = rss_kib(pid);
    drop(conns);
    (after.saturating_sub(before)) as f64 / n as f64
}

async fn wait_members(lan: &Lan, g: usize, channel: &str, n: usize) {
    let url = format!("{}/channels/{channel}", lan.url(g));
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, v) = http("GET", &url, None).await;
        if v["members"].as_array().map(Vec::len) == Some(n) {
            return;
        }
        assert!(
            Instant::now() < end,
            "members of {channel} never reached {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() {
    let a = args();
    let started = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    netns(move || async move {
        let flags = [
            "--rate",
            "100000",
            "--burst",
            "100000",
            "--queue-len",
            "1000000",
            "--queue-bytes",
            "1000000000",
            "--max-connections",
            "20000",
        ];
        let mut lan = Lan::new(4).await;
        for i in 1..=3 {
            lan.start_gateway(i, &flags).await;
        }
        lan.wait_for_nodes(3).await;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "gateway fan-out benchmark, {started}: {} clients, load average before: {}",
            a.clients,
            load.trim()
        );
        let mut rows = Vec::new();

        // Three nodes. The idle cost first, on a fresh process.
        let three = [0, 1, 2];
        let idle3 = idle_cost(&lan, 0, a.idle).await;
        let (fixed3, sat3) = phases(&lan, &three, &a, "3").await;
        let held = connect_many(&lan, &three, "/ws", a.held).await;
        let mut held_ok = 0;
        for g in three {
            let (_, h) = http("GET", &format!("{}/health", lan.url(g)), None).await;
            held_ok += h["connections"].as_u64().unwrap_or(0);
        }
        drop(held);

        // One node, same clients, same rates.
        for g in lan.gateways.iter_mut() {
            g.kill().await;
        }
        let single = lan.start_gateway(4, &flags).await;
        let one = [single];
        let idle1 = idle_cost(&lan, single, a.idle).await;
        let (fixed1, sat1) = phases(&lan, &one, &a, "1").await;

        let offered = a.rate * a.clients as u64;
        let yes = |ok: bool| if ok { "yes" } else { "**no**" };
        let ratio = |r3: &Run, r1: &Run| r3.per_second / r1.per_second;
        let fixed_ratio = ratio(&fixed3, &fixed1);
        let sat_ratio = ratio(&sat3, &sat1);
        rows.push(format!(
            "| fixed rate: {} msg/s to {} clients ({offered} deliveries/s offered), delivered | {} of {} ({:.0}/s) | {} of {} ({:.0}/s) | {fixed_ratio:.2} | ≥ 0.8 | {} |",
            a.rate, a.clients, fixed3.deliveries, fixed3.expected, fixed3.per_second,
            fixed1.deliveries, fixed1.expected, fixed1.per_second, yes(fixed_ratio >= 0.8)
        ));
        rows.push(format!(
            "| fixed rate: latency p50 / p99 | {:.2} / {:.2} ms | {:.2} / {:.2} ms | | p99 ≤ 20 ms | {} |",
            fixed3.p50_ms, fixed3.p99_ms, fixed1.p50_ms, fixed1.p99_ms,
            yes(fixed3.p99_ms <= 20.0 && fixed1.p99_ms <= 20.0)
        ));
        rows.push(format!(
            "| saturation: {} msg/s offered, deliveries/s | {:.0} ({} of {}) | {:.0} ({} of {}) | {sat_ratio:.2} | ≥ 0.8 | {} |",
            a.rate * 20, sat3.per_second, sat3.deliveries, sat3.expected, sat1.per_second,
            sat1.deliveries, sat1.expected, yes(sat_ratio >= 0.8)
        ));
        rows.push(format!(
            "| saturation: latency p50 / p99 | {:.1} / {:.1} ms | {:.1} / {:.1} ms | | | |",
            sat3.p50_ms, sat3.p99_ms, sat1.p50_ms, sat1.p99_ms
        ));
        let faults = |r: &Run| format!("{} out of order, {} other frames", r.disorder, r.other);
        for (what, r3, r1) in [
            ("fixed rate", &fixed3, &fixed1),
            ("saturation", &sat3, &sat1),
        ] {
            let clean = |r: &Run| r.deliveries == r.expected && r.disorder == 0 && r.other == 0;
            rows.push(format!(
                "| {what}: each delivery once and in order per publisher | {} | {} | | every one | {} |",
                faults(r3), faults(r1), yes(clean(r3) && clean(r1))
            ));
        }
        for (what, r3, r1) in [
            ("fixed rate", &fixed3, &fixed1),
            ("saturation", &sat3, &sat1),
        ] {
            rows.push(format!(
                "| {what}: CPU per delivery, gateways / clients | {:.1} / {:.1} µs | {:.1} / {:.1} µs | | | |",
                r3.gateway_cpu_us, r3.client_cpu_us, r1.gateway_cpu_us, r1.client_cpu_us
            ));
        }
        rows.push(format!(
            "| RSS growth per idle connection ({} connections on one process) | {:.1} KiB | {:.1} KiB | | ≤ 16 KiB | {} |",
            a.idle, idle3, idle1, yes(idle3 <= 16.0 && idle1 <= 16.0)
        ));
        rows.push(format!(
            "| idle connections held across 3 nodes | {held_ok} of {} | | | 10,000 | {} |",
            a.held,
            yes(held_ok >= 10_000)
        ));
        println!(
            "The subscribers are read by {} thread(s) of this process (an epoll each), on the same cores as the gateways.",
            a.readers
        );
        println!("| measure | 3 nodes | 1 node | ratio | target | met |");
        println!("|---|---|---|---|---|---|");
        for r in rows {
            println!("{r}");
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("load average after: {}", load.trim());
    });
}
