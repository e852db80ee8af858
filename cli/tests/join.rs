//! `tcpnet join` as processes: two of them in one cluster send lines both
//! ways, by broadcast, to one node, on a topic and as raw frames, and end
//! with status 0 at the end of their input.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{netns, Host, Node, Running};
use tcpnet::Settings;

/// A key file holding a fresh key pair, and the id it gives.
fn key() -> (std::path::PathBuf, String) {
    let key = tcpnet::Identity::generate();
    let dir = std::env::temp_dir().join(format!("tcpnet-cli-key-{}", key.id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.key");
    std::fs::write(&path, key.to_pkcs8()).unwrap();
    (path, key.id().to_string())
}

/// `tcpnet join CLUSTER --key-file KEY EXTRA...`, waiting long for its peer.
fn join(h: &Host, cluster: &str, key: &std::path::Path, extra: &[String]) -> Running {
    let mut cmd = h.tcpnet(&["join", cluster, "--wait", "20s", "--key-file"]);
    cmd.arg(key);
    cmd.args(extra);
    Running::start(cmd)
}

fn type_line(p: &mut Running, line: &str) {
    let stdin = p.child.stdin.as_mut().expect("piped stdin");
    writeln!(stdin, "{line}").expect("write to join's stdin");
}

/// A and B each type a line; each prints the other's with its id; both end
/// with status 0 when their input ends.
/// `to`: each sends to the other node only (`--to ID`).
fn both_ways(extra: &[&str], to: bool) {
    let ((ka, a_id), (kb, b_id)) = (key(), key());
    let owned = |v: &[&str], to_id: &str| {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        if to {
            v.extend(["--to".to_string(), to_id.to_string()]);
        }
        v
    };
    let (extra_a, extra_b) = (owned(extra, &b_id), owned(extra, &a_id));
    netns(move |h| {
        let mut a = join(&h, "chat", &ka, &extra_a);
        let mut b = join(&h, "chat", &kb, &extra_b);
        type_line(&mut a, "hello from a");
        type_line(&mut b, "hello from b");
        b.wait_line("from a at b", |l| l == format!("{a_id}: hello from a"));
        a.wait_line("from b at a", |l| l == format!("{b_id}: hello from b"));
        let (status, _) = a.finish();
        assert!(status.success(), "a: {status}");
        let (status, out) = b.finish();
        assert!(status.success(), "b: {status}");
        assert_eq!(
            out,
            [format!("{a_id}: hello from a")],
            "b printed only a's line"
        );
    });
}

#[test]
fn lines_go_to_every_node_both_ways() {
    both_ways(&[], false);
}

#[test]
fn lines_go_to_one_node() {
    both_ways(&[], true);
}

#[test]
fn lines_go_to_a_topic() {
    both_ways(&["--topic", "news"], false);
}

#[test]
fn raw_frames_both_ways() {
    both_ways(&["--raw"], false);
}

#[test]
fn the_secret_comes_from_a_file() {
    let dir = std::env::temp_dir().join(format!("tcpnet-cli-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, "a long random string shared by the cluster\n").unwrap();
    let path = file.to_str().unwrap().to_string();
    both_ways(&["--secret-file", &path], false);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `cmd` with one line on its stdin, to its end.
fn with_one_line(mut cmd: Command, line: &str) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            writeln!(c.stdin.take().expect("piped stdin"), "{line}")?;
            c.wait_with_output()
        })
        .expect("run tcpnet join")
}

/// A line that reaches no node is an error, and the status says so.
#[test]
fn a_line_with_no_node_linked_fails() {
    netns(|h| {
        let out = with_one_line(h.tcpnet(&["join", "alone", "--wait", "100ms"]), "anyone?");
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("line not sent: no node linked"), "{err}");
    });
}

/// A node of another secret never links: the line is not sent.
#[test]
fn another_secret_does_not_link() {
    netns(|h| {
        let _node = Node::start(
            &h,
            Settings::new("locked").secret("the right one, thirty-two bytes or more"),
        );
        let file = std::env::temp_dir().join(format!("tcpnet-cli-wrong-{}", std::process::id()));
        std::fs::write(&file, "the wrong one, thirty-two bytes or more\n").unwrap();
        let mut cmd = h.tcpnet(&["join", "locked", "--wait", "1s", "--secret-file"]);
        cmd.arg(&file);
        let out = with_one_line(cmd, "let me in");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no node linked"), "{err}");
    });
}

/// Bad command lines are refused with status 2 and a message naming them.
#[test]
fn bad_arguments_are_named() {
    netns(|h| {
        for (args, says) in [
            (vec!["join", "bad_name"], "invalid cluster name"),
            (vec!["join", "c", "--to", "xyz"], "--to \"xyz\""),
            (
                vec!["join", "c", "--secret-file", "/nonexistent"],
                "--secret-file /nonexistent",
            ),
            (
                vec!["join", "c", "--topic", "t", "--raw"],
                "cannot be used with",
            ),
        ] {
            let out = h.tcpnet(&args).stdin(Stdio::null()).output().expect("run");
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(says), "{args:?}: {err}");
        }
    });
}
