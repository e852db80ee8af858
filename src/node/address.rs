//! Addresses: where a listening node can be reached ([`Address`]), and the
//! listen and static peer addresses the user gives, checked and resolved.

use std::net::{IpAddr, SocketAddr};

use crate::error::{Error, Result};

/// Where a listening node can be reached.
///
/// ```no_run
/// # async fn demo() -> tcpnet::Result<()> {
/// let service = tcpnet::tcpnet("my-cluster")?;
/// let address = service.listen(0, "0.0.0.0").await?;
/// for ip in &address.addrs {
///     println!("reachable at {ip}:{}", address.port);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The TCP port.
    pub port: u16,
    /// Every address the node can be reached at (`0.0.0.0` and `::` are
    /// expanded to the addresses of the interfaces).
    pub addrs: Vec<IpAddr>,
}

/// A static peer must be `host:port` or `ip:port` with a port that is not 0.
pub(crate) fn check_peer_syntax(peer: &str) -> Result<()> {
    let bad = |reason: &str| Error::InvalidAddress {
        addr: peer.to_string(),
        reason: format!("a static peer must be host:port or ip:port ({reason})"),
    };
    if let Ok(sa) = peer.parse::<SocketAddr>() {
        return if sa.port() == 0 {
            Err(bad("port 0"))
        } else {
            Ok(())
        };
    }
    let (host, port) = peer.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(bad("bad port")),
        Ok(_) => {}
    }
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad("bad host name"));
    }
    Ok(())
}

/// Resolves a static peer to the address to dial (IPv4 first).
pub(crate) async fn resolve_peer(peer: &str) -> Result<SocketAddr> {
    check_peer_syntax(peer)?;
    if let Ok(sa) = peer.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host(peer)
        .await
        .map_err(|e| Error::InvalidAddress {
            addr: peer.to_string(),
            reason: format!("cannot resolve: {e}"),
        })?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| Error::InvalidAddress {
            addr: peer.to_string(),
            reason: "resolves to no address".into(),
        })
}

/// Turns the listen address into the IPs to bind.
pub(crate) async fn resolve(addr: &str, port: u16) -> Result<Vec<IpAddr>> {
    let bad = |reason: String| Error::InvalidAddress {
        addr: addr.to_string(),
        reason,
    };
    if let Ok(ip) = addr.parse::<IpAddr>() {
        if ip.is_multicast() {
            return Err(bad("a multicast address cannot be listened on".into()));
        }
        return Ok(vec![ip]);
    }
    if addr.is_empty() {
        return Err(bad("empty".into()));
    }
    if !addr
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad("neither an IP address nor a host name".into()));
    }
    let found = tokio::net::lookup_host((addr, port))
        .await
        .map_err(|e| bad(format!("cannot resolve: {e}")))?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for sa in found {
        if !ips.contains(&sa.ip()) {
            ips.push(sa.ip());
        }
    }
    ips.sort_by_key(|ip| ip.is_ipv6());
    if ips.is_empty() {
        return Err(bad("resolves to no address".into()));
    }
    Ok(ips)
}
