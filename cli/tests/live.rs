//! The commands in a real terminal: tmux runs them, the test reads the
//! screen with `capture-pane`: the live browse table sees a node appear and
//! go, and ping counts its rounds, then leaves only its summary.

mod common;

use std::process::Command;

use common::{netns, tcpnet_bin, wait_for, Node};
use tcpnet::Settings;

/// A tmux server of the test's own (its own socket), so the browse runs in
/// the test's namespace and no one else's server is touched.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    /// A server named `name` (unique among the tests of this file) running
    /// `cmd`.
    fn start(name: &str, cmd: &str) -> Tmux {
        let socket =
            std::env::temp_dir().join(format!("tcpnet-cli-tmux-{}-{name}", std::process::id()));
        let tmux = Tmux { socket };
        tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "160",
            "-y",
            "40",
            cmd,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux (Debian: apt-get install tmux)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        wait_for(what, || {
            last = self.screen();
            cond(&last)
        });
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[test]
fn the_live_table_shows_a_node_come_and_go() {
    netns(|h| {
        // The shell stays after the browse, to show its exit status.
        let tmux = Tmux::start(
            "browse",
            &format!(
                "{} browse live; echo \"exit status $?\"; read wait",
                tcpnet_bin()
            ),
        );
        tmux.wait_screen("the empty table", |s| {
            s.contains("tcpnet browse: 0 nodes") && s.contains("no node of cluster live seen")
        });
        let node = Node::start(&h, Settings::new("live"));
        let id = node.id.clone();
        let screen = tmux.wait_screen("the node to appear", |s| s.contains(id.as_str()));
        assert!(screen.contains("tcpnet browse: 1 node on"), "{screen}");
        assert!(screen.contains("cluster live: 1 node"), "{screen}");
        node.close();
        tmux.wait_screen("the node to go", |s| {
            !s.contains(id.as_str()) && s.contains("no node of cluster live seen")
        });
        // Ctrl-C ends it: the terminal is given back, the last table printed.
        tmux.run(&["send-keys", "-t", "t", "C-c"]);
        let screen = tmux.wait_screen("browse to exit", |s| s.contains("exit status"));
        assert!(screen.contains("exit status 0"), "{screen}");
        assert!(screen.contains("no node of cluster live seen"), "{screen}");
        assert!(
            !screen.contains("tcpnet browse:"),
            "the alternate screen is gone: {screen}"
        );
    });
}

#[test]
fn ping_counts_its_rounds_then_leaves_the_summary() {
    netns(|h| {
        let node = Node::start(&h, Settings::new("counted"));
        let tmux = Tmux::start(
            "ping",
            &format!(
                "{} ping counted -c 40 -i 100ms; echo \"exit status $?\"; read wait",
                tcpnet_bin()
            ),
        );
        let screen = tmux.wait_screen("the counter", |s| s.contains("pinging 1 node: "));
        assert!(screen.contains(" of 40 ("), "{screen}");
        let screen = tmux.wait_screen("ping to exit", |s| s.contains("exit status"));
        assert!(screen.contains("exit status 0"), "{screen}");
        assert!(
            screen.contains("--- cluster counted: 1 node pinged ---"),
            "{screen}"
        );
        let row = screen
            .lines()
            .find(|l| l.starts_with(node.id.as_str()))
            .unwrap_or_else(|| panic!("no row for the node: {screen}"));
        assert!(row.contains(" 40    40        0% "), "{row}");
        // The counter's line was erased before the summary.
        assert!(!screen.contains("pinging"), "{screen}");
    });
}
