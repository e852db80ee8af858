//! Measures mesh formation in a private network namespace (it makes its own:
//! run as root, or under `unshare --user --map-root-user`).
//!
//! ```text
//! cargo run --release --example formation -- [NODES] [RUNS]
//! ```
//!
//! For each run: NODES services start at once; the clock starts when the last
//! of them is started (all `listen` calls are issued together) and stops when
//! every node holds a link to every other. Then a late joiner is started and
//! timed until it is linked to all NODES. Prints each run, then the median
//! and the maximum.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().map_or(16, |a| a.parse().expect("NODES"));
    let runs: usize = args.next().map_or(7, |a| a.parse().expect("RUNS"));
    let mut mesh = Vec::new();
    let mut late = Vec::new();
    for run in 1..=runs {
        let (m, l) = std::thread::spawn(move || {
            common::enter_private_netns();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(one_run(nodes))
        })
        .join()
        .expect("run");
        println!("run {run}: full mesh of {nodes} in {m:?}; late joiner linked to all in {l:?}");
        mesh.push(m);
        late.push(l);
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (m50, mmax) = stats(&mut mesh);
    let (l50, lmax) = stats(&mut late);
    println!("{nodes} nodes, {runs} runs: mesh median {m50:?} max {mmax:?}; late joiner median {l50:?} max {lmax:?}");
}

async fn one_run(n: usize) -> (Duration, Duration) {
    let services: Vec<tcpnet::Service> = (0..n)
        .map(|_| tcpnet::tcpnet("formation").unwrap())
        .collect();
    let t0 = Instant::now();
    let started = futures::future::join_all(services.iter().map(|s| s.listen(0, "0.0.0.0"))).await;
    for r in started {
        r.expect("listen");
    }
    common::full_mesh(&services).await;
    let mesh = t0.elapsed();

    let joiner = tcpnet::tcpnet("formation").unwrap();
    let t1 = Instant::now();
    joiner.listen(0, "0.0.0.0").await.expect("listen");
    let mut all = services.clone();
    all.push(joiner);
    common::full_mesh(&all).await;
    let late = t1.elapsed();
    common::close_all(&all).await;
    (mesh, late)
}
