//! Section 4: mesh formation.

use crate::*;

/// One formation run of tcpnet in the caller's (fresh) namespace: the time
/// from issuing all `listen` calls together to a full mesh, and, if asked,
/// the time from a late joiner's `listen` to its link to every node.
pub(crate) async fn tcpnet_formation(n: usize, late: bool, variant: Variant) -> (f64, Option<f64>) {
    let nodes = new_nodes("bench-formation", n, variant);
    let t0 = Instant::now();
    listen_all(&nodes).await;
    common::full_mesh(&nodes).await;
    let mesh = t0.elapsed().as_secs_f64() * 1e3;
    let mut all = nodes;
    let mut joined = None;
    if late {
        let joiner = new_nodes("bench-formation", 1, variant)
            .pop()
            .expect("node");
        let t1 = Instant::now();
        joiner.listen(0, LISTEN_ADDR).await.expect("listen");
        all.push(joiner);
        common::full_mesh(&all).await;
        joined = Some(t1.elapsed().as_secs_f64() * 1e3);
    }
    common::close_all(&all).await;
    (mesh, joined)
}

/// A plain node of the baseline: a listener that accepts `expect` links.
pub(crate) async fn plain_node(
    expect: usize,
    done: mpsc::UnboundedSender<TcpStream>,
) -> std::net::SocketAddr {
    let l = TcpListener::bind((LISTEN_ADDR, 0)).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        for _ in 0..expect {
            let (s, _) = l.accept().await.expect("accept");
            s.set_nodelay(true).expect("nodelay");
            let _ = done.send(s);
        }
    });
    addr
}

pub(crate) fn plain_dial(to: std::net::SocketAddr, done: mpsc::UnboundedSender<TcpStream>) {
    tokio::spawn(async move {
        let s = TcpStream::connect(to).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let _ = done.send(s);
    });
}

/// The baseline's formation: plain TCP with every address known (no
/// discovery, no handshake), one connect per pair; the clock starts before
/// the listeners are bound and stops when both ends of every pair hold
/// their socket. The late joiner binds, then dials each of the `n` nodes.
pub(crate) async fn plain_formation(n: usize, late: bool) -> (f64, Option<f64>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut held = Vec::new();
    let t0 = Instant::now();
    // Node i accepts from the i nodes before it and dials the ones after.
    let addrs =
        futures::future::join_all((0..n).map(|i| plain_node(i + late as usize, tx.clone()))).await;
    for i in 0..n {
        for &to in &addrs[i + 1..] {
            plain_dial(to, tx.clone());
        }
    }
    for _ in 0..n * (n - 1) {
        held.push(within("baseline mesh", rx.recv()).await.expect("socket"));
    }
    let mesh = t0.elapsed().as_secs_f64() * 1e3;
    let mut joined = None;
    if late {
        let t1 = Instant::now();
        let _joiner = plain_node(0, tx.clone()).await;
        for &to in &addrs {
            plain_dial(to, tx.clone());
        }
        for _ in 0..2 * n {
            held.push(
                within("baseline late joiner", rx.recv())
                    .await
                    .expect("socket"),
            );
        }
        joined = Some(t1.elapsed().as_secs_f64() * 1e3);
    }
    (mesh, joined)
}

pub(crate) fn formation(cfg: &Config) -> Vec<Row> {
    const LATE_TO: usize = 16;
    // (nodes, full runs, quick runs); 16 is for the late joiner.
    let plan: [(usize, usize, usize); 5] = [
        (2, 9, 3),
        (8, 9, 3),
        (LATE_TO, 9, 3),
        (32, 7, 2),
        (64, 5, 1),
    ];
    let mut rows = Vec::new();
    for (n, full, quick) in plan {
        if cfg.nodes.as_ref().is_some_and(|l| !l.contains(&n)) {
            continue;
        }
        let runs = cfg.runs.unwrap_or(if cfg.quick { quick } else { full });
        let late = n == LATE_TO;
        let (mut tm, mut bm, mut tl, mut bl) = (vec![], vec![], vec![], vec![]);
        for run in 0..runs {
            // Each run in a fresh namespace: no mDNS cache of earlier runs.
            let (side, variant) = (cfg.side, cfg.variant);
            let (t, b) = in_netns(move |rt| {
                rt.block_on(async move {
                    let b = if side.baseline() {
                        Some(within("baseline formation", plain_formation(n, late)).await)
                    } else {
                        None
                    };
                    let t = if side.tcpnet() {
                        Some(within("tcpnet formation", tcpnet_formation(n, late, variant)).await)
                    } else {
                        None
                    };
                    (t, b)
                })
            });
            if let Some((m, l)) = t {
                tm.push(m);
                tl.extend(l);
            }
            if let Some((m, l)) = b {
                bm.push(m);
                bl.extend(l);
            }
            let ms = |r: Option<(f64, Option<f64>)>| match r {
                None => "—".to_string(),
                Some((m, None)) => format!("mesh {m:.2} ms"),
                Some((m, Some(l))) => format!("mesh {m:.2} ms, late joiner {l:.2} ms"),
            };
            eprintln!(
                "  formation of {n} run {}/{runs}: tcpnet {}; baseline {}",
                run + 1,
                ms(t),
                ms(b)
            );
        }
        let stat = |v: &Vec<f64>, f: fn(&[f64]) -> f64| (!v.is_empty()).then(|| f(v));
        let runs_text = format!("{runs} run{}", if runs == 1 { "" } else { "s" });
        if late {
            for (what, f) in [("median", median as fn(&[f64]) -> f64), ("max", max)] {
                rows.push(Row {
                    section: "4. formation",
                    measure: format!("late joiner linked to all of {n}, {what}"),
                    param: format!("late{n}-{what}"),
                    unit: "ms",
                    tcpnet: stat(&tl, f),
                    baseline: stat(&bl, f),
                    naive: None,
                    beating: None,
                    target: Some(Target::AtMost(100.0)),
                    setup: format!("{runs_text}, each in a fresh namespace"),
                    samples: Samples {
                        tcpnet: tl.clone(),
                        baseline: bl.clone(),
                        naive: Vec::new(),
                    },
                });
            }
            continue;
        }
        for (what, f) in [("median", median as fn(&[f64]) -> f64), ("max", max)] {
            rows.push(Row {
                section: "4. formation",
                measure: format!("full mesh of {n}, {what}"),
                param: format!("mesh{n}-{what}"),
                unit: "ms",
                tcpnet: stat(&tm, f),
                baseline: stat(&bm, f),
                naive: None,
                beating: None,
                target: (n == 32).then_some(Target::AtMost(300.0)),
                setup: format!("{runs_text}, each in a fresh namespace"),
                samples: Samples {
                    tcpnet: tm.clone(),
                    baseline: bm.clone(),
                    naive: Vec::new(),
                },
            });
        }
    }
    rows
}
