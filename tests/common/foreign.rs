//! mDNS records that no tcpnet node announced: a second responder in the
//! test's namespace, and records of tcpnet's service type made by hand.

use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};
use tcpnet::SERVICE_TYPE;

/// A second mDNS responder in the namespace (IPv4 only, as the nodes
/// listen on IPv4).
pub(crate) fn foreign_daemon() -> ServiceDaemon {
    let d = ServiceDaemon::new().expect("mDNS daemon");
    d.disable_interface(IfKind::IPv6).expect("IPv4 only");
    d
}

/// A record of tcpnet's service type, announced without probing as nodes
/// announce theirs.
pub(crate) fn record(
    instance: &str,
    host: &str,
    ip: &str,
    port: u16,
    props: &[(&str, &str)],
) -> ServiceInfo {
    let mut info = ServiceInfo::new(SERVICE_TYPE, instance, host, ip, port, props)
        .unwrap_or_else(|e| panic!("record {instance}: {e}"));
    info.set_requires_probe(false);
    info
}
