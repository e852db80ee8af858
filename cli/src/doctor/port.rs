//! The mDNS port, UDP 5353: can tcpnet bind it, and who else holds it.
//!
//! tcpnet (through mdns-sd) binds it with `SO_REUSEADDR` and
//! `SO_REUSEPORT`, so it shares the port with other responders that do the
//! same (Avahi, other tcpnet nodes); one that holds it alone keeps tcpnet
//! from hearing mDNS at all.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Socket, Type};

use super::report::Finding;

/// The mDNS port.
pub(crate) const MDNS_PORT: u16 = 5353;

/// Binds UDP 5353 alone, then shared, on IPv4 (and IPv6 if the host has
/// it), and names the processes holding it. Run before this process starts
/// any mDNS daemon of its own.
pub(crate) fn check(ipv6: bool) -> Vec<Finding> {
    let holders = holders();
    let holders_text = if holders.is_empty() {
        String::new()
    } else {
        format!(
            " (held by {})",
            holders.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    let mut out = Vec::new();
    let mut families = vec![("IPv4", SocketAddr::from((Ipv4Addr::UNSPECIFIED, MDNS_PORT)))];
    if ipv6 {
        families.push(("IPv6", SocketAddr::from((Ipv6Addr::UNSPECIFIED, MDNS_PORT))));
    }
    for (family, addr) in families {
        out.push(match (bind(addr, false), bind(addr, true)) {
            (Ok(()), _) => Finding::ok(format!("{family} {addr}: free, can be bound")),
            (Err(_), Ok(())) => Finding::ok(format!(
                "{family} {addr}: shared with another mDNS responder{holders_text}; \
                 fine, tcpnet shares it"
            )),
            (Err(_), Err(e)) => Finding::problem(
                format!("{family} {addr}: cannot be bound: {e}{holders_text}"),
                "another program holds UDP 5353 without sharing it: stop it, or configure it \
                 to share the port (SO_REUSEADDR); Avahi shares it",
            ),
        });
    }
    out
}

/// Binds `addr` (UDP), with or without the sharing options tcpnet uses.
fn bind(addr: SocketAddr, shared: bool) -> std::io::Result<()> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    if shared {
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
    }
    sock.bind(&addr.into())
}

/// The processes (other than this one) with a UDP socket on port 5353 in
/// this network namespace, as `name (pid N)`. Empty where `/proc` does not
/// tell (another user's processes, without root).
fn holders() -> BTreeSet<String> {
    let inodes: BTreeSet<u64> = ["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().skip(1).filter_map(udp_inode).collect::<Vec<_>>())
        .collect();
    if inodes.is_empty() {
        return BTreeSet::new();
    }
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| l.to_str().map(str::to_string))
                .and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
                .is_some_and(|inode: u64| inodes.contains(&inode))
        });
        if holds {
            let name = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.insert(format!("{} (pid {pid})", name.trim()));
        }
    }
    out
}

/// The socket inode of a `/proc/net/udp` line whose local port is 5353.
fn udp_inode(line: &str) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let port = fields.get(1)?.rsplit(':').next()?;
    if u16::from_str_radix(port, 16).ok()? != MDNS_PORT {
        return None;
    }
    fields.get(9)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inode_of_a_5353_socket_is_read() {
        let line = "  12: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 \
                    00000000     0        0 123456 2 0000000000000000 0";
        assert_eq!(udp_inode(line), Some(123456));
        let other = line.replace(":14E9", ":0035");
        assert_eq!(udp_inode(&other), None);
    }
}
