//! The examples of the guide's patterns other than replication (that is
//! `tests/kv.rs`), as separate processes in a private network namespace:
//! work spread over a pool of workers, and presence.

mod common;

use std::collections::HashSet;

use common::example::Example;
use common::*;

/// Two workers and a dispatcher: every one of the 20 jobs is answered
/// right (the number of primes below 1000, 2000, ...), both workers get
/// some, and the dispatcher ends with success.
#[test]
fn a_dispatcher_spreads_jobs_over_the_workers() {
    netns(|| async {
        let mut workers = Vec::new();
        let mut ids = HashSet::new();
        for _ in 0..2 {
            let mut w = Example::start("work", &["worker", "w"], &[]);
            let line = w.expect(|l| l.starts_with("worker ")).await;
            ids.insert(line["worker ".len()..].to_string());
            workers.push(w);
        }
        let mut dispatch = Example::start("work", &["dispatch", "w"], &[]);
        // pi(1000 k) for k = 1..=20.
        let primes = [
            168, 303, 430, 550, 669, 783, 900, 1007, 1117, 1229, 1335, 1438, 1547, 1652, 1754,
            1862, 1960, 2064, 2158, 2262,
        ];
        let mut by = HashSet::new();
        for (i, n) in primes.iter().enumerate() {
            let below = 1000 * (i + 1);
            let want = format!("job {i}: {n} primes below {below} (by ");
            let line = dispatch.expect(|l| l.starts_with("job ")).await;
            assert!(line.starts_with(&want), "{line:?}, wanted {want:?}");
            by.insert(line[want.len()..line.len() - 1].to_string());
        }
        assert!(dispatch.exit().await.success());
        assert_eq!(by, ids, "both workers took jobs");
    });
}

/// Two presence processes see each other by name; when one is killed, the
/// other sees it go.
#[test]
fn presence_shows_who_comes_and_goes() {
    netns(|| async {
        let mut alice = Example::start("presence", &["alice", "p"], &[]);
        let mut bob = Example::start("presence", &["bob", "p"], &[]);
        alice.expect(|l| l == "here: bob, alice").await;
        bob.expect(|l| l == "here: alice, bob").await;
        bob.signal(libc::SIGKILL);
        alice.expect(|l| l == "here: alice").await;
    });
}
