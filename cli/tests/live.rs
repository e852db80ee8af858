//! The live browse table in a real terminal: tmux runs `tcpnet browse`, the
//! test reads the screen with `capture-pane` and sees a node appear and go.

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
    fn start(cmd: &str) -> Tmux {
        let socket = std::env::temp_dir().join(format!("tcpnet-cli-tmux-{}", std::process::id()));
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
        let tmux = Tmux::start(&format!(
            "{} browse live; echo \"exit status $?\"; read wait",
            tcpnet_bin()
        ));
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
