//! Discovery: clusters stay apart, foreign and broken records are reported
//! without harming the mesh, and nodes bound to one address advertise there.

mod common;

use std::collections::HashSet;

use common::foreign::{foreign_daemon, record};
use common::*;
use futures::StreamExt;
use mdns_sd::ServiceDaemon;
use tcpnet::{Error, Service};

/// The protocol version, as a TXT record says it.
const V: &str = match tcpnet::PROTOCOL_VERSION {
    4 => "4",
    _ => panic!("update V to the protocol version"),
};

#[test]
fn two_clusters_on_one_lan_stay_apart() {
    netns(|| async {
        let nodes =
            futures::future::join_all(["alpha", "beta", "alpha", "beta", "alpha"].map(start)).await;
        let alpha: Vec<Service> = nodes
            .iter()
            .filter(|s| s.name() == "alpha")
            .cloned()
            .collect();
        let beta: Vec<Service> = nodes
            .iter()
            .filter(|s| s.name() == "beta")
            .cloned()
            .collect();
        full_mesh(&alpha).await;
        full_mesh(&beta).await;
        // 3 alpha links and 1 beta link, two sockets each: nothing across.
        wait_for_sockets(&nodes, 2 * (3 + 1)).await;
        assert_one_link_per_pair(&alpha);
        assert_one_link_per_pair(&beta);
        close_all(&nodes).await;
    });
}

/// Announces a record of tcpnet's service type from a daemon of its own.
fn announce(daemon: &ServiceDaemon, instance: &str, port: u16, props: &[(&str, &str)]) {
    let host = format!(
        "foreign-{}.local.",
        instance.len() + props.len() + port as usize
    );
    daemon
        .register(record(instance, &host, "127.0.0.1", port, props))
        .unwrap();
}

#[test]
fn foreign_and_broken_records_are_errors_and_the_mesh_still_forms() {
    netns(|| async {
        const CLUSTER: &str = "real";
        let id = |c: char| c.to_string().repeat(32);
        // A port that speaks HTTP, not tcpnet.
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_port = http.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut s, _)) = http.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });

        let watcher = tcpnet::tcpnet(CLUSTER).unwrap();
        let mut errors = watcher.on_error();
        watcher.listen(0, "0.0.0.0").await.unwrap();

        let foreign = foreign_daemon();
        announce(&foreign, "not-a-node-id", 1000, &[("c", CLUSTER), ("v", V)]);
        announce(
            &foreign,
            &id('a'),
            1001,
            &[("junk", "\u{1}\u{2}"), ("x", "")],
        );
        announce(&foreign, &id('b'), 1002, &[("c", CLUSTER), ("v", "99")]);
        announce(&foreign, "0bad", 1003, &[("c", CLUSTER), ("v", V)]);
        // A well-formed record of a node that is not there: its port
        // answers in HTTP.
        let ghost = tcpnet::Identity::generate();
        let k = hex::encode(ghost.public_key());
        announce(
            &foreign,
            ghost.id().as_str(),
            http_port,
            &[("c", CLUSTER), ("v", V), ("k", &k)],
        );

        let others = futures::future::join_all((0..3).map(|_| start(CLUSTER))).await;
        let mut all = others.clone();
        all.push(watcher.clone());
        full_mesh(&all).await;

        // Every broken record and the HTTP port gave its own error.
        let mut seen = HashSet::new();
        let wanted = [
            "not-a-node-id",
            "TXT c",
            "version",
            "TXT k",
            "not a tcpnet node",
        ];
        within("an error for each foreign record", async {
            while seen.len() < wanted.len() {
                let e = errors.next().await.expect("error stream");
                let text = e.to_string();
                match &e {
                    Error::BadRecord { .. } | Error::Handshake { .. } => {}
                    other => panic!("unexpected error {other:?}"),
                }
                for w in wanted {
                    if text.contains(w) {
                        seen.insert(w);
                    }
                }
            }
        })
        .await;

        // The real mesh carries data.
        let conn = watcher.connections().pop().unwrap();
        let peer = all.iter().find(|s| s.id() == conn.peer_id()).unwrap();
        let mut back = peer
            .connections()
            .into_iter()
            .find(|c| c.peer_id() == watcher.id())
            .unwrap();
        conn.send("still here").await.unwrap();
        assert_eq!(
            &within("data", back.next()).await.unwrap()[..],
            b"still here"
        );
        drop(foreign.shutdown());
        close_all(&all).await;
    });
}

#[test]
fn nodes_bound_to_one_address_find_each_other_there() {
    netns(|| async {
        sh("ip link add v0 type veth peer name v1 \
            && ip addr add 10.99.0.1/24 dev v0 && ip addr add 10.99.0.2/24 dev v1 \
            && ip link set v0 up && ip link set v1 up \
            && for i in v0 v1; do echo 1 > /proc/sys/net/ipv4/conf/$i/accept_local; echo 0 > /proc/sys/net/ipv4/conf/$i/rp_filter; done \
            && for _ in $(seq 200); do \
                 ip -o link show v0 | grep -q LOWER_UP && ip -o link show v1 | grep -q LOWER_UP && exit 0; \
                 sleep 0.05; done; echo 'veth carrier never came up' >&2; exit 1");
        // (A veth's carrier comes up a moment after `ip link set up`; mDNS
        // cannot announce on it before, hence the wait above.)
        // Both ends of the veth pair are in this one namespace, so each
        // node's multicast arrives from an address local to the namespace:
        // accept_local lets it in, as if it came from another host.
        let (a, b, ra, rb) = listen_pair("10.99.0.1", "10.99.0.2").await;
        assert_eq!(
            ra.addrs,
            vec!["10.99.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            rb.addrs,
            vec!["10.99.0.2".parse::<std::net::IpAddr>().unwrap()]
        );
        full_mesh(&[a.clone(), b.clone()]).await;
        let link = a.connections().pop().unwrap();
        assert_eq!(link.local_addr().ip().to_string(), "10.99.0.1");
        close_all(&[a, b]).await;
    });
}

#[test]
fn loopback_only_nodes_link_on_loopback() {
    netns(|| async {
        let (a, b, _, _) = listen_pair("127.0.0.1", "localhost").await;
        full_mesh(&[a.clone(), b.clone()]).await;
        close_all(&[a, b]).await;
    });
}

#[test]
fn dual_stack_nodes_link() {
    netns(|| async {
        let (a, b, ra, _) = listen_pair("::", "::").await;
        assert!(ra.addrs.contains(&"::1".parse().unwrap()));
        full_mesh(&[a.clone(), b.clone()]).await;
        close_all(&[a, b]).await;
    });
}

#[test]
fn a_dropped_service_says_goodbye_and_closes_its_links() {
    netns(|| async {
        let (a, b) = tokio::join!(start("c"), start("c"));
        full_mesh(&[a.clone(), b.clone()]).await;
        let ba = b.connections().pop().unwrap();
        drop(a);
        assert_eq!(
            within("the dropped node's links to close", ba.closed()).await,
            tcpnet::CloseReason::PeerClosed
        );
        b.close().await;
    });
}

/// Stale records name one node but point at another node's port (ports are
/// reused quickly on one host), or at the port of the node that reads them:
/// a node that is not the one named links nothing (the other node links by
/// its own record), a node never links to itself, and every pair still ends
/// with exactly one link.
#[test]
fn a_record_pointing_at_another_nodes_port_does_not_break_the_mesh() {
    netns(|| async {
        let nodes = futures::future::join_all((0..3).map(|_| start("real"))).await;
        full_mesh(&nodes).await;
        let target = nodes[2].address().unwrap().port;
        let foreign = foreign_daemon();
        let announce_gone = |port: u16| {
            let gone = tcpnet::Identity::generate();
            let k = hex::encode(gone.public_key());
            let props = [("c", "real"), ("v", V), ("k", k.as_str())];
            announce(&foreign, gone.id().as_str(), port, &props);
            gone
        };
        let stale = announce_gone(target);
        // A fourth node sees the bogus record and dials the third node's port.
        let late = tcpnet::tcpnet("real").unwrap();
        let mut errors = late.on_error();
        late.listen(0, "0.0.0.0").await.unwrap();
        // And a record that points at the fourth node's own port: it dials
        // itself, sees its own hello, and drops that link quietly.
        let own = late.address().unwrap().port;
        announce_gone(own);
        let mut all = nodes.clone();
        all.push(late.clone());
        full_mesh(&all).await;
        wait_until(&all, "the self-link to be dropped", || {
            established_sockets() == 4 * 3
        })
        .await;
        assert_one_link_per_pair(&all);
        // The node that answered at the stale record's port is not the one
        // the record names: the dial says so, and links nothing (the record
        // is still announced, so the dial is retried, backing off, and each
        // retry says the same).
        let e = within("the stale record's error", errors.next())
            .await
            .expect("error stream");
        let want = format!("dialed {}, and {} answered", stale.id(), nodes[2].id());
        assert!(e.to_string().contains(&want), "{e}");
        use futures::FutureExt;
        while let Some(more) = errors.next().now_or_never() {
            let more = more.expect("error stream");
            assert!(more.to_string().contains(&want), "{more}");
        }
        drop(foreign.shutdown());
        close_all(&all).await;
    });
}
