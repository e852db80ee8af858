//! Scale and races: full meshes of many nodes in one namespace, and many
//! repeated simultaneous starts. Links are counted on both ends and as TCP
//! sockets in the namespace.

mod common;

use common::*;
use tcpnet::Service;

async fn start_together(n: usize) -> Vec<Service> {
    futures::future::join_all((0..n).map(|_| start("race"))).await
}

async fn mesh_of(n: usize) {
    let nodes = start_together(n).await;
    full_mesh(&nodes).await;
    wait_for_sockets(&nodes, n * (n - 1)).await;
    assert_one_link_per_pair(&nodes);
    close_all(&nodes).await;
    wait_for_sockets(&[], 0).await;
}

#[test]
fn mesh_of_2() {
    netns(|| mesh_of(2));
}

#[test]
fn mesh_of_8() {
    netns(|| mesh_of(8));
}

#[test]
fn mesh_of_32() {
    netns(|| mesh_of(32));
}

#[test]
fn simultaneous_starts_of_2_repeated_200_times() {
    for _ in 0..200 {
        netns(|| mesh_of(2));
    }
}

#[test]
fn simultaneous_starts_of_16_repeated_20_times() {
    for _ in 0..20 {
        netns(|| mesh_of(16));
    }
}

#[test]
fn late_joiner_links_to_everyone() {
    netns(|| async {
        let mut nodes = start_together(8).await;
        full_mesh(&nodes).await;
        nodes.push(start("race").await);
        full_mesh(&nodes).await;
        wait_for_sockets(&nodes, 9 * 8).await;
        close_all(&nodes).await;
    });
}

#[test]
fn a_peer_that_leaves_and_returns_with_its_id_links_again() {
    netns(|| async {
        let ids = identities(2);
        let a = start(tcpnet::Settings::new("c").identity(ids[0].clone())).await;
        for _ in 0..3 {
            let b = start(tcpnet::Settings::new("c").identity(ids[1].clone())).await;
            full_mesh(&[a.clone(), b.clone()]).await;
            b.close().await;
            wait_until(std::slice::from_ref(&a), "a to drop b", || {
                a.connections().is_empty()
            })
            .await;
        }
        a.close().await;
    });
}
