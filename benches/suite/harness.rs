//! What every section runs in: a private namespace, a runtime, tcpnet nodes.

use crate::*;

pub(crate) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `f` on a thread of its own in a fresh private network namespace
/// (panics, never falls back to the host's network, if one cannot be made),
/// with a runtime built there, so its workers are in the namespace too.
pub(crate) fn in_netns<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&Runtime) -> T + Send + 'static,
{
    std::thread::spawn(move || {
        common::enter_private_netns();
        let rt = runtime();
        let out = f(&rt);
        rt.shutdown_timeout(Duration::from_secs(2));
        out
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

pub(crate) async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

// ---------------------------------------------------------------------------
// tcpnet nodes

/// `n` nodes of `cluster` whose `listen` calls are issued together.
pub(crate) fn new_nodes(cluster: &str, n: usize, variant: Variant) -> Vec<Service> {
    (0..n)
        .map(|_| Service::new(node_settings(cluster, variant)).expect("settings"))
        .collect()
}

pub(crate) async fn listen_all(nodes: &[Service]) {
    let started = futures::future::join_all(nodes.iter().map(|s| s.listen(0, LISTEN_ADDR))).await;
    for r in started {
        r.expect("listen");
    }
}

/// `n` nodes of `cluster`, started together and fully meshed.
pub(crate) async fn meshed_nodes(cluster: &str, n: usize, variant: Variant) -> Vec<Service> {
    let nodes = new_nodes(cluster, n, variant);
    listen_all(&nodes).await;
    common::full_mesh(&nodes).await;
    nodes
}

/// What `node` holds to `peer`.
pub(crate) fn link_to(node: &Service, peer: &Service) -> Connection {
    node.connections()
        .into_iter()
        .find(|c| c.peer_id() == peer.id())
        .expect("a link to the peer")
}

/// Sends one message on every link of a node, with each link's `Sender`:
/// the raw links, compared with the baseline's sockets
/// (`Service::broadcast` would add the messaging layer's envelope).
pub(crate) async fn broadcast(links: &[tcpnet::Sender], msg: &Bytes) {
    for l in links {
        l.send(msg.clone()).await.expect("send");
    }
}

/// Reads `n` messages of `len` bytes from `rx`, then hands it back.
pub(crate) async fn tcpnet_receive(mut rx: Connection, n: usize, len: usize) -> Connection {
    let mut bytes = 0;
    for _ in 0..n {
        bytes += rx.next().await.expect("link closed during the run").len();
    }
    assert_eq!(bytes, n * len, "tcpnet delivered other sizes");
    rx
}
