//! The replicated key-value cache (`examples/kv.rs`) as separate processes
//! in a private network namespace: writes reach every node, a late joiner
//! catches up, a node killed with SIGKILL costs the others no error that is
//! not churn, and a node frozen (SIGSTOP) while a write goes by resyncs when
//! it wakes (SIGCONT).

mod common;

use common::example::Example;
use common::*;

/// One kv process.
struct Kv(Example);

impl std::ops::Deref for Kv {
    type Target = Example;
    fn deref(&self) -> &Example {
        &self.0
    }
}

impl std::ops::DerefMut for Kv {
    fn deref_mut(&mut self) -> &mut Example {
        &mut self.0
    }
}

impl Kv {
    /// Starts the example in cluster "kv" (heartbeats every 200 ms, 1 s of
    /// silence ends a link) and waits until it is ready.
    async fn start() -> Kv {
        let mut kv = Kv(Example::start(
            "kv",
            &["kv"],
            &[("TCPNET_HEARTBEAT", "200,1000")],
        ));
        kv.expect(|l| l.starts_with("ready as ")).await;
        kv
    }

    /// The value of `key` as this node has it.
    async fn get(&mut self, key: &str) -> String {
        self.send(&format!("get {key}")).await;
        let prefix = format!("get {key}: ");
        let line = self.expect(|l| l.starts_with(&prefix)).await;
        line[prefix.len()..].to_string()
    }

    /// Waits until this node has `key = value`.
    async fn has(&mut self, key: &str, value: &str) {
        let line = format!("{key} = {value}");
        self.expect(|l| l == line).await;
    }
}

#[test]
fn the_kv_cache_replicates_catches_up_and_resyncs_after_a_freeze() {
    netns(|| async {
        let mut a = Kv::start().await;
        let mut b = Kv::start().await;
        a.expect(|l| l.starts_with("joined ")).await;
        a.send("set colour blue").await;
        b.has("colour", "blue").await;
        b.send("set size 3").await;
        a.has("size", "3").await;
        b.send("del size").await;
        a.expect(|l| l == "size deleted").await;

        // A late joiner gets what was written before it came.
        let mut c = Kv::start().await;
        assert_eq!(c.get("colour").await, "blue");
        assert_eq!(c.get("size").await, "none");

        // kill -9: the others go on, and see nothing but churn.
        b.signal(libc::SIGKILL);
        a.expect(|l| l.starts_with("left ")).await;
        c.expect(|l| l.starts_with("left ")).await;
        a.send("set after kill").await;
        c.has("after", "kill").await;

        // A node frozen while a write goes by resyncs when it wakes: the
        // write is made once a has dropped the link, so the event never
        // reaches c, and only the resync brings it.
        c.signal(libc::SIGSTOP);
        a.expect(|l| l.starts_with("left ")).await;
        a.send("set during freeze").await;
        a.has("during", "freeze").await;
        c.signal(libc::SIGCONT);
        // c comes back as the same run: a says so, and c pulls the write.
        a.expect(|l| l.starts_with("rejoined ")).await;
        c.has("during", "freeze").await;
        assert_eq!(c.get("during").await, "freeze");
        // Writes flow again both ways.
        c.send("set woke yes").await;
        a.has("woke", "yes").await;

        // What a showed an operator: the frozen peer's timeout (a fault),
        // and nothing about the killed one.
        let shown = a.errors();
        assert!(!shown.is_empty());
        assert!(
            shown
                .iter()
                .all(|l| l.starts_with("fault: ") && l.contains("nothing heard")),
            "{shown:?}"
        );
    });
}
