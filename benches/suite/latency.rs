//! Section 2: round-trip latency.

use crate::*;

pub(crate) fn latency(cfg: &Config) -> Vec<Row> {
    let cfg = cfg.clone();
    in_netns(move |rt| rt.block_on(latency_async(cfg)))
}

pub(crate) async fn latency_async(cfg: Config) -> Vec<Row> {
    const SIZE: usize = 64;
    let rtts = cfg.rtts.unwrap_or(if cfg.quick { 2_000 } else { 20_000 });
    let block = if cfg.quick { 500 } else { 1_000 }.min(rtts);
    let warmup = block;
    let payload = Bytes::from(vec![0x5au8; SIZE]);

    // tcpnet: node 0 pings, node 1 echoes every message back.
    let mut tcpnet_side = None;
    if cfg.side.tcpnet() {
        let nodes = meshed_nodes("bench-latency", 2, cfg.variant).await;
        let ping = link_to(&nodes[0], &nodes[1]);
        let mut echo = link_to(&nodes[1], &nodes[0]);
        let echo_task = tokio::spawn(async move {
            while let Some(m) = echo.next().await {
                if echo.send(m).await.is_err() {
                    break;
                }
            }
        });
        tcpnet_side = Some((nodes, Some(ping), echo_task));
    }
    // Baselines: the same over a plain connection each, flushed per message.
    let mut plain_side = Vec::new();
    for kind in cfg.side.plain() {
        let ((r, w), (mut er, mut ew)) = plain_pair(kind).await;
        let echo_task = tokio::spawn(async move {
            while let Some(m) = er.read_frame().await {
                ew.write_frame(&m).await;
                ew.flush().await;
            }
        });
        plain_side.push((kind, Some((r, w)), echo_task, Vec::new()));
    }

    let mut t_us = Vec::new();
    let mut done = 0;
    let mut first = true;
    // Blocks alternate between the two; the first block of each is a
    // warm-up and not counted.
    while done < rtts {
        let k = if first {
            warmup
        } else {
            block.min(rtts - done)
        };
        if let Some((_, slot, _)) = tcpnet_side.as_mut() {
            let mut ping: Connection = slot.take().expect("ping");
            let p = payload.clone();
            let samples = tokio::spawn(async move {
                let mut v = Vec::with_capacity(k);
                for _ in 0..k {
                    let t0 = Instant::now();
                    ping.send(p.clone()).await.expect("send");
                    let m = ping.next().await.expect("echo");
                    v.push(t0.elapsed().as_secs_f64() * 1e6);
                    assert_eq!(m.len(), SIZE);
                }
                (v, ping)
            });
            let (v, ping) = within("tcpnet latency", samples).await.expect("pinger");
            *slot = Some(ping);
            if !first {
                t_us.extend(v);
            }
        }
        for (_, slot, _, us) in plain_side.iter_mut() {
            let (mut r, mut w): (PlainReader, PlainWriter) = slot.take().expect("ping");
            let p = payload.clone();
            let samples = tokio::spawn(async move {
                let mut v = Vec::with_capacity(k);
                for _ in 0..k {
                    let t0 = Instant::now();
                    w.write_frame(&p).await;
                    w.flush().await;
                    let m = r.read_frame().await.expect("echo");
                    v.push(t0.elapsed().as_secs_f64() * 1e6);
                    assert_eq!(m.len(), SIZE);
                }
                (v, r, w)
            });
            let (v, r, w) = within("baseline latency", samples).await.expect("pinger");
            *slot = Some((r, w));
            if !first {
                us.extend(v);
            }
        }
        if !first {
            done += k;
        }
        first = false;
        eprintln!("  latency: {done}/{rtts} round trips each");
    }
    if let Some((nodes, _, echo)) = tcpnet_side {
        common::close_all(&nodes).await;
        echo.abort();
    }
    let mut samples_of = |kind: Plain| {
        plain_side
            .iter_mut()
            .find(|(k, ..)| *k == kind)
            .map_or(Vec::new(), |(.., us)| std::mem::take(us))
    };
    let (mut b_us, mut n_us) = (samples_of(Plain::Careful), samples_of(Plain::Naive));
    for (_, _, echo, _) in plain_side {
        echo.abort();
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| percentile(v, p))
    };
    let setup = format!(
        "{} round trips of 64 B, one at a time, after {} of warm-up; blocks of {} alternate",
        count(rtts),
        count(warmup),
        count(block)
    );
    let mut rows = Vec::new();
    for (p, target) in [
        (50.0, Some(Target::RatioAtMost(1.1))),
        (99.0, Some(Target::RatioAtMost(1.2))),
    ] {
        rows.push(Row {
            section: "2. latency",
            measure: format!("64 B round trip p{p:.0}"),
            param: format!("p{p:.0}"),
            unit: "µs",
            tcpnet: pct(&mut t_us, p),
            baseline: pct(&mut b_us, p),
            naive: pct(&mut n_us, p),
            beating: None,
            target,
            setup: setup.clone(),
            samples: Samples::default(),
        });
    }
    rows
}
