//! What signing relayed messages costs, measured side by side in one run:
//!
//! 1. the signature alone: SHA-256 of a message then Ed25519 signing (the
//!    origin) and verifying (each node that gets it relayed), per message
//!    size, on this machine's CPU;
//! 2. end to end: node A broadcasts, node C receives, in a full mesh of A,
//!    B, C (nothing signed: no one relays) and in a line A - B - C (C gets
//!    every message through B: A signs, B checks and relays, C checks).
//!    The line also pays the relay hop itself, so its gap to the full mesh
//!    is an upper bound on what signing costs there.
//!
//! ```text
//! cargo bench --bench signing
//! ```
//!
//! Nodes run in a private network namespace holding only loopback (see
//! `tests/common/mod.rs`), with static peers and no mDNS. Nothing is
//! asserted: figures are printed, with the load average before and after.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tcpnet::{Identity, Service, Settings};

const CLUSTER: &str = "signing";

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Microseconds per message to hash and sign, and to hash and verify.
fn signature_alone(size: usize) -> (f64, f64) {
    let key = Identity::generate();
    let id = key.id().clone();
    let body = vec![7u8; size];
    let n = 2000;
    let digest = |b: &[u8]| -> [u8; 32] { Sha256::digest(b).into() };
    let t = Instant::now();
    let mut sig = [0u8; 64];
    for _ in 0..n {
        sig = key.sign(&digest(&body));
    }
    let sign = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let public = key.public_key();
    let t = Instant::now();
    for _ in 0..n {
        assert!(id.verify(&public, &digest(&body), &sig));
    }
    let verify = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    (sign, verify)
}

fn settings() -> Settings {
    // C's stream holds every message of a run: nothing is dropped there.
    Settings::new(CLUSTER).mdns(false).queue_len(1 << 15)
}

fn addr(s: &Service) -> String {
    format!("127.0.0.1:{}", s.address().expect("listening").port)
}

/// A, B, C: a full mesh, or the line A - B - C.
async fn three(line: bool) -> [Service; 3] {
    let a = common::start(settings()).await;
    let b = common::start(settings().peer(addr(&a))).await;
    let c = if line {
        common::start(settings().peer(addr(&b))).await
    } else {
        common::start(settings().peer(addr(&a)).peer(addr(&b))).await
    };
    let nodes = [a, b, c];
    let want = if line { [1, 2, 1] } else { [2, 2, 2] };
    common::wait_until(&nodes, "the links", || {
        nodes
            .iter()
            .zip(want)
            .all(|(s, n)| s.connections().len() == n)
    })
    .await;
    nodes
}

/// Messages per second from A's first broadcast to C's last delivery.
async fn rate(nodes: &[Service; 3], size: usize, n: usize) -> f64 {
    let mut inbox = nodes[2].messages();
    // Until C gets A's messages (the line's relay lists settle), warm up.
    loop {
        nodes[0].broadcast("warm").await.expect("broadcast");
        if tokio::time::timeout(Duration::from_millis(200), inbox.next())
            .await
            .is_ok()
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    while tokio::time::timeout(Duration::from_millis(100), inbox.next())
        .await
        .is_ok()
    {}
    let data = bytes::Bytes::from(vec![1u8; size]);
    let t = Instant::now();
    let send = async {
        for _ in 0..n {
            nodes[0].broadcast(data.clone()).await.expect("broadcast");
        }
    };
    let recv = async {
        let mut got = 0;
        while got < n {
            common::within("C's messages", inbox.next()).await;
            got += 1;
        }
    };
    tokio::join!(send, recv);
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    eprintln!("load average before: {}", loadavg());
    println!("| size | sign (µs) | verify (µs) |");
    println!("|---:|---:|---:|");
    for size in [64, 1024, 16 * 1024] {
        let (s, v) = signature_alone(size);
        println!("| {size} B | {s:.1} | {v:.1} |");
    }
    common::netns(|| async {
        println!();
        println!("| size | full mesh (msg/s) | line, relayed and signed (msg/s) | line / full |");
        println!("|---:|---:|---:|---:|");
        for (size, n) in [(64, 20_000), (1024, 10_000)] {
            let (mut full, mut line) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                for is_line in [false, true] {
                    let nodes = three(is_line).await;
                    let r = rate(&nodes, size, n).await;
                    if is_line { &mut line } else { &mut full }.push(r);
                    common::close_all(&nodes).await;
                }
            }
            let (f, l) = (median(full), median(line));
            println!("| {size} B | {f:.0} | {l:.0} | {:.2} |", l / f);
        }
    });
    eprintln!("load average after: {}", loadavg());
}
