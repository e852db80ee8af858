//! Multi-process test on a simulated LAN: one demo process per host, hosts
//! in network namespaces on a private bridge (see `tests/lan.sh`).

mod common;

use std::process::Command;

use common::{demo_binary, identities, key_file};

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

/// Two hosts on two segments that a third routes between never hear each
/// other's mDNS, and link all the same: the third's list of links says
/// where each listens.
#[test]
fn hosts_that_never_hear_each_others_mdns_link_through_a_third() {
    lan(&["hint"], &[]);
}

/// The restart scenario with h1's and the restarting h2's key files; `h2_decides`
/// orders their ids so that h2's sorts first.
fn restart(h2_decides: bool) {
    let ids = identities(2);
    let (h1, h2) = if h2_decides {
        (&ids[1], &ids[0])
    } else {
        (&ids[0], &ids[1])
    };
    let (k1, k2) = (key_file(h1), key_file(h2));
    lan(
        &["restart"],
        &[
            ("TCPNET_TEST_KEY_1", k1.to_str().unwrap()),
            ("TCPNET_TEST_KEY_2", k2.to_str().unwrap()),
        ],
    );
}

/// The restarting node's id sorts first, so it decides the pair's link.
#[test]
fn a_restarted_decider_replaces_its_stale_link() {
    restart(true);
}

/// The restarting node's id sorts last, so the peer that kept the stale link
/// decides.
#[test]
fn a_restarted_peer_replaces_its_stale_link_at_the_decider() {
    restart(false);
}

/// A cut cable: heartbeats notice it on every host, and the mesh heals when
/// the cable is back. The figures go to the test's output.
#[test]
fn a_cut_cable_is_noticed_by_heartbeats_and_the_mesh_heals() {
    let out = lan(&["partition"], &[]);
    eprintln!("{}", out.lines().last().unwrap_or_default());
}
