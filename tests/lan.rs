//! Multi-process test on a simulated LAN: one demo process per host, hosts
//! in network namespaces on a private bridge (see `tests/lan.sh`).

mod common;

use std::process::Command;

use common::demo_binary;

fn lan(args: &[&str], env: &[(&str, &str)]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lan.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(args[0])
        .arg(demo_binary())
        .args(&args[1..])
        .envs(env.iter().copied())
        .output()
        .expect("run tests/lan.sh (needs bash and iproute2)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "lan.sh failed ({}); it needs root (or `unshare --user --map-root-user`) and \
         iproute2\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(stdout.contains("lan.sh: ok"), "{stdout}");
    stdout.into_owned()
}

#[test]
fn four_hosts_on_a_bridge_form_a_full_mesh() {
    lan(&["mesh", "4"], &[]);
}

#[test]
fn six_hosts_on_a_bridge_form_a_full_mesh() {
    lan(&["mesh", "6"], &[]);
}

/// The restarting node's id sorts first, so it decides the pair's link.
#[test]
fn a_restarted_decider_replaces_its_stale_link() {
    lan(&["restart"], &[("TCPNET_TEST_ID", &"0".repeat(32))]);
}

/// The restarting node's id sorts last, so the peer that kept the stale link
/// decides.
#[test]
fn a_restarted_peer_replaces_its_stale_link_at_the_decider() {
    lan(&["restart"], &[("TCPNET_TEST_ID", &"f".repeat(32))]);
}

/// A cut cable: heartbeats notice it on every host, and the mesh heals when
/// the cable is back. The figures go to the test's output.
#[test]
fn a_cut_cable_is_noticed_by_heartbeats_and_the_mesh_heals() {
    let out = lan(&["partition"], &[]);
    eprintln!("{}", out.lines().last().unwrap_or_default());
}
