//! Section 1: one-link throughput.

use crate::*;

/// Sizes measured through a `Batch` too.
const BATCHED_UNDER: usize = 16 * 1024;

pub(crate) fn throughput_count(size: usize, quick: bool) -> usize {
    let full = match size {
        s if s <= 64 => 1_000_000,
        s if s <= 1024 => 400_000,
        s if s <= 64 * 1024 => 16_000,
        _ => 1_000,
    };
    if quick {
        (full / 20).max(10)
    } else {
        full
    }
}

pub(crate) fn throughput(cfg: &Config) -> Vec<Row> {
    let cfg = cfg.clone();
    in_netns(move |rt| rt.block_on(throughput_async(cfg)))
}

pub(crate) async fn throughput_async(cfg: Config) -> Vec<Row> {
    let runs = cfg.runs.unwrap_or(if cfg.quick { 1 } else { 5 });
    let mut pair = None;
    if cfg.side.tcpnet() || cfg.side.batch() {
        let nodes = meshed_nodes("bench-throughput", 2, cfg.variant).await;
        let (tx, rx) = (link_to(&nodes[0], &nodes[1]), link_to(&nodes[1], &nodes[0]));
        pair = Some((nodes, tx.sender(), tx, Some(rx)));
    }
    // One connection per baseline, careful first.
    let mut plain = Vec::new();
    let kinds = cfg.side.plain();
    for &kind in &kinds {
        check_plain(kind).await;
        let ((_, w), (r, _)) = plain_pair(kind).await;
        plain.push((kind, Some(w), Some(r)));
    }
    let mut rows = Vec::new();
    for &size in &cfg.sizes {
        let n = cfg
            .msgs
            .unwrap_or_else(|| throughput_count(size, cfg.quick));
        let payload = Bytes::from(vec![0xa5u8; size]);
        let mut t_secs = Vec::new();
        // Through a `Batch`: small messages only (a larger one is copied
        // into a buffer of its own, where `send` takes it as it is).
        let batched = cfg.side.batch() && size < BATCHED_UNDER;
        let mut tb_secs = Vec::new();
        let mut p_secs = vec![Vec::new(); plain.len()];
        // Runs alternate between the sides, so a change in the machine's
        // load falls on all of them.
        for run in 0..runs {
            if let (true, Some((_, tx, _, rx_slot))) = (cfg.side.tcpnet(), pair.as_mut()) {
                let rx = rx_slot.take().expect("rx");
                let recv = tokio::spawn(tcpnet_receive(rx, n, size));
                let t0 = Instant::now();
                let (tx, p) = (tx.clone(), payload.clone());
                let send = tokio::spawn(async move {
                    for _ in 0..n {
                        tx.send(p.clone()).await.expect("send");
                    }
                });
                within("tcpnet throughput", send).await.expect("sender");
                *rx_slot = Some(within("tcpnet throughput", recv).await.expect("receiver"));
                t_secs.push(t0.elapsed().as_secs_f64());
            }
            if let (true, Some((_, tx, _, rx_slot))) = (batched, pair.as_mut()) {
                let rx = rx_slot.take().expect("rx");
                let recv = tokio::spawn(tcpnet_receive(rx, n, size));
                let t0 = Instant::now();
                let (mut batch, p) = (tx.batch(), payload.clone());
                let send = tokio::spawn(async move {
                    for _ in 0..n {
                        batch.feed(&p).await.expect("feed");
                    }
                    batch.flush().await.expect("flush");
                });
                within("tcpnet throughput", send).await.expect("sender");
                *rx_slot = Some(within("tcpnet throughput", recv).await.expect("receiver"));
                tb_secs.push(t0.elapsed().as_secs_f64());
            }
            for ((_, w_slot, r_slot), secs) in plain.iter_mut().zip(&mut p_secs) {
                let (mut w, r) = (w_slot.take().expect("w"), r_slot.take().expect("r"));
                let recv = tokio::spawn(plain_receive(r, n, size));
                let t0 = Instant::now();
                let p = payload.clone();
                let send = tokio::spawn(async move {
                    for _ in 0..n {
                        w.write_frame(&p).await;
                    }
                    w.flush().await;
                    w
                });
                *w_slot = Some(within("baseline throughput", send).await.expect("sender"));
                *r_slot = Some(within("baseline throughput", recv).await.expect("receiver"));
                secs.push(t0.elapsed().as_secs_f64());
            }
            eprintln!(
                "  throughput {} run {}/{runs}: tcpnet {} batched {} {}",
                size_name(size),
                run + 1,
                last_run(&t_secs),
                last_run(&tb_secs),
                last_runs(&kinds, &p_secs),
            );
        }
        let (b_secs, n_secs) = (
            secs_of(&kinds, &p_secs, Plain::Careful),
            secs_of(&kinds, &p_secs, Plain::Naive),
        );
        let rate = |secs: &Vec<f64>| (!secs.is_empty()).then(|| n as f64 / median(secs));
        let mb = |r: Option<f64>| r.map(|r| r * size as f64 / 1e6);
        let ratio = match size {
            s if s < 1024 => 0.9,
            _ => 1.0,
        };
        let setup = format!(
            "{} msgs of {} one way, median of {runs} run{}",
            count(n),
            size_name(size),
            if runs == 1 { "" } else { "s" }
        );
        let per_run = |secs: &Vec<f64>, scale: f64| -> Vec<f64> {
            secs.iter().map(|s| n as f64 / s * scale).collect()
        };
        let mb_scale = size as f64 / 1e6;
        let (t, b, nv) = (rate(&t_secs), rate(&b_secs), rate(&n_secs));
        for (measure, unit, scale) in [("messages/s", "msg/s", 1.0), ("MB/s", "MB/s", mb_scale)] {
            let scaled = |r: Option<f64>| if unit == "MB/s" { mb(r) } else { r };
            rows.push(Row {
                section: "1. throughput",
                measure: format!("{} {measure}", size_name(size)),
                param: size.to_string(),
                unit,
                tcpnet: scaled(t),
                baseline: scaled(b),
                naive: scaled(nv),
                beating: None,
                target: Some(Target::RatioAtLeast(ratio)),
                setup: setup.clone(),
                samples: Samples {
                    tcpnet: per_run(&t_secs, scale),
                    baseline: per_run(&b_secs, scale),
                    naive: per_run(&n_secs, scale),
                },
            });
        }
        if batched {
            // Only in messages a second, so the chart's MB/s lines stay
            // `send`'s.
            rows.push(Row {
                section: "1. throughput",
                measure: format!("{} messages/s, through a Batch", size_name(size)),
                param: format!("{size} batched"),
                unit: "msg/s",
                tcpnet: rate(&tb_secs),
                baseline: b,
                naive: nv,
                beating: None,
                target: Some(Target::RatioAtLeast(ratio)),
                setup: format!("{setup}; tcpnet sends with `Batch::feed`, one `flush` at the end"),
                samples: Samples {
                    tcpnet: per_run(&tb_secs, 1.0),
                    baseline: per_run(&b_secs, 1.0),
                    naive: per_run(&n_secs, 1.0),
                },
            });
        }
    }
    if let Some((nodes, ..)) = pair {
        common::close_all(&nodes).await;
    }
    rows
}
