//! The `metrics` feature: a node's figures reach the `metrics` facade under
//! the documented names, equal to what `Service::stats` says. A recorder of
//! the test's own keeps every value set; the test runs in a private network
//! namespace.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use tcpnet::{Service, Settings};

/// Every metric's last value, by name and labels (`name{k=v,...}`).
#[derive(Default)]
struct Values(Mutex<HashMap<String, f64>>);

/// One metric, writing to [`Values`].
struct Slot(Arc<Values>, String);

impl CounterFn for Slot {
    fn increment(&self, v: u64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += v as f64;
    }
    fn absolute(&self, v: u64) {
        self.0 .0.lock().unwrap().insert(self.1.clone(), v as f64);
    }
}

impl GaugeFn for Slot {
    fn increment(&self, v: f64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += v;
    }
    fn decrement(&self, v: f64) {
        GaugeFn::increment(self, -v);
    }
    fn set(&self, v: f64) {
        self.0 .0.lock().unwrap().insert(self.1.clone(), v);
    }
}

struct Keep(Arc<Values>);

fn name(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Keep {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Slot(self.0.clone(), name(key))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Slot(self.0.clone(), name(key))))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn the_figures_of_stats_reach_the_metrics_facade() {
    let values = Arc::new(Values::default());
    metrics::set_global_recorder(Keep(values.clone())).expect("the only recorder");
    netns(move || async move {
        let quiet = || {
            Settings::new("c")
                .mdns(false)
                .heartbeat(Duration::from_secs(20), Duration::from_secs(60))
        };
        let a = start(quiet()).await;
        let port = a.address().unwrap().port;
        let b = start(quiet().peer(format!("127.0.0.1:{port}"))).await;
        full_mesh(&[a.clone(), b.clone()]).await;
        let conn = a.connections().pop().unwrap();
        for _ in 0..10 {
            conn.send("x").await.unwrap();
        }
        let get = |key: String| values.0.lock().unwrap().get(&key).copied();
        let out = |s: &Service, peer: &Service| {
            format!(
                "tcpnet_link_frames_out_total{{node={},peer={}}}",
                s.id(),
                peer.id()
            )
        };
        // Exported once a second: wait until the export shows what `stats`
        // shows, and stays so.
        wait_until(&[a.clone(), b.clone()], "the export to catch up", || {
            let sent = a.stats().links[0].frames_out as f64;
            get(out(&a, &b)) == Some(sent) && sent >= 10.0
        })
        .await;
        assert_eq!(
            get(format!("tcpnet_dials_total{{node={}}}", b.id())),
            Some(1.0)
        );
        assert_eq!(
            get(format!(
                "tcpnet_handshake_failures_total{{node={},cause=refused}}",
                a.id()
            )),
            Some(0.0)
        );
        for cause in ["version", "identity", "too_many_links"] {
            let key = format!(
                "tcpnet_handshake_failures_total{{node={},cause={cause}}}",
                a.id()
            );
            assert_eq!(get(key), Some(0.0), "{cause}");
        }
        for cause in ["signature", "ahead", "over_budget", "unknown"] {
            let key = format!(
                "tcpnet_refused_messages_total{{node={},cause={cause}}}",
                a.id()
            );
            assert_eq!(get(key), Some(0.0), "{cause}");
        }
        assert!(get(format!("tcpnet_queued_bytes{{node={}}}", a.id())).is_some());
        assert_eq!(get(format!("tcpnet_links{{node={}}}", a.id())), Some(1.0));
        close_all(&[a, b]).await;
    });
}
