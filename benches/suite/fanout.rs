//! Section 3: fan-out to the links of a full mesh.

use crate::*;

pub(crate) const FANOUT_PEERS: usize = 8;

pub(crate) fn fanout(cfg: &Config) -> Vec<Row> {
    let cfg = cfg.clone();
    in_netns(move |rt| rt.block_on(fanout_async(cfg)))
}

pub(crate) async fn fanout_async(cfg: Config) -> Vec<Row> {
    let runs = cfg.runs.unwrap_or(if cfg.quick { 1 } else { 3 });
    // tcpnet: a full mesh of 1 + 8 nodes (the peers' links among themselves
    // stay idle); node 0 sends every message to each of its 8 links.
    let mut tcpnet_side = None;
    if cfg.side.tcpnet() {
        let nodes = meshed_nodes("bench-fanout", 1 + FANOUT_PEERS, cfg.variant).await;
        let senders: Vec<tcpnet::Sender> = nodes[1..]
            .iter()
            .map(|p| link_to(&nodes[0], p).sender())
            .collect();
        let receivers: Vec<Option<Connection>> = nodes[1..]
            .iter()
            .map(|p| Some(link_to(p, &nodes[0])))
            .collect();
        tcpnet_side = Some((nodes, senders, receivers));
    }
    // Baselines: one sender holding 8 plain connections, for each kind.
    let mut plain_side = Vec::new();
    let kinds = cfg.side.plain();
    for &kind in &kinds {
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..FANOUT_PEERS {
            let ((_, w), (r, _)) = plain_pair(kind).await;
            writers.push(w);
            readers.push(Some(r));
        }
        plain_side.push((kind, Some(writers), readers));
    }
    let mut rows = Vec::new();
    for &size in &[64usize, 1024] {
        let n = cfg
            .msgs
            .unwrap_or(if size <= 64 { 100_000 } else { 50_000 } / if cfg.quick { 20 } else { 1 });
        let payload = Bytes::from(vec![0x3cu8; size]);
        let mut t_secs = Vec::new();
        let mut p_secs = vec![Vec::new(); plain_side.len()];
        for run in 0..runs {
            if let Some((_, senders, receivers)) = tcpnet_side.as_mut() {
                let recv: Vec<_> = receivers
                    .iter_mut()
                    .map(|r| tokio::spawn(tcpnet_receive(r.take().expect("rx"), n, size)))
                    .collect();
                let t0 = Instant::now();
                let (senders, p) = (senders.clone(), payload.clone());
                let send = tokio::spawn(async move {
                    for _ in 0..n {
                        broadcast(&senders, &p).await;
                    }
                });
                within("tcpnet fan-out", send).await.expect("sender");
                for (slot, r) in receivers.iter_mut().zip(recv) {
                    *slot = Some(within("tcpnet fan-out", r).await.expect("receiver"));
                }
                t_secs.push(t0.elapsed().as_secs_f64());
            }
            for ((_, w_slot, receivers), b_secs) in plain_side.iter_mut().zip(&mut p_secs) {
                let recv: Vec<_> = receivers
                    .iter_mut()
                    .map(|r| tokio::spawn(plain_receive(r.take().expect("rx"), n, size)))
                    .collect();
                let t0 = Instant::now();
                let (mut ws, p) = (w_slot.take().expect("writers"), payload.clone());
                let send = tokio::spawn(async move {
                    for _ in 0..n {
                        for w in ws.iter_mut() {
                            w.write_frame(&p).await;
                        }
                    }
                    for w in ws.iter_mut() {
                        w.flush().await;
                    }
                    ws
                });
                *w_slot = Some(within("baseline fan-out", send).await.expect("sender"));
                for (slot, r) in receivers.iter_mut().zip(recv) {
                    *slot = Some(within("baseline fan-out", r).await.expect("receiver"));
                }
                b_secs.push(t0.elapsed().as_secs_f64());
            }
            eprintln!(
                "  fan-out {} run {}/{runs}: tcpnet {} {}",
                size_name(size),
                run + 1,
                last_run(&t_secs),
                last_runs(&kinds, &p_secs),
            );
        }
        let (b_secs, n_secs) = (
            secs_of(&kinds, &p_secs, Plain::Careful),
            secs_of(&kinds, &p_secs, Plain::Naive),
        );
        let delivered = (n * FANOUT_PEERS) as f64;
        let rate = |secs: &Vec<f64>| (!secs.is_empty()).then(|| delivered / median(secs));
        let per_run = |secs: &Vec<f64>| secs.iter().map(|s| delivered / s).collect();
        rows.push(Row {
            section: "3. fan-out",
            measure: format!("1 → 8 peers, {} delivered messages/s", size_name(size)),
            param: size.to_string(),
            unit: "msg/s",
            tcpnet: rate(&t_secs),
            baseline: rate(&b_secs),
            naive: rate(&n_secs),
            beating: None,
            target: None,
            setup: format!(
                "{} msgs × 8 links, send to each link in turn, median of {runs} run{}",
                count(n),
                if runs == 1 { "" } else { "s" }
            ),
            samples: Samples {
                tcpnet: per_run(&t_secs),
                baseline: per_run(&b_secs),
                naive: per_run(&n_secs),
            },
        });
    }
    if let Some((nodes, ..)) = tcpnet_side {
        common::close_all(&nodes).await;
    }
    rows
}
