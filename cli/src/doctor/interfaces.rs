//! This host's network interfaces: which are up, which have multicast (mDNS
//! needs it), which are point-to-point (mDNS skips them).

use std::collections::BTreeMap;
use std::net::IpAddr;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

use super::report::Finding;

/// One interface and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interface {
    /// Its name (`eth0`).
    pub(crate) name: String,
    /// Administratively up.
    pub(crate) up: bool,
    /// Carrier present (the kernel's `RUNNING`).
    pub(crate) running: bool,
    /// The loopback interface.
    pub(crate) loopback: bool,
    /// Multicast on.
    pub(crate) multicast: bool,
    /// A point-to-point link (most VPNs).
    pub(crate) point_to_point: bool,
    /// Its IP addresses.
    pub(crate) addrs: Vec<IpAddr>,
}

impl Interface {
    /// Up, with carrier, and with an address: mDNS can use it if multicast
    /// is on.
    fn usable(&self) -> bool {
        self.up && self.running && !self.addrs.is_empty()
    }
}

/// The interfaces of this host (of the network namespace this runs in).
pub(crate) fn list() -> Result<Vec<Interface>, String> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for ifa in getifaddrs().map_err(|e| format!("listing interfaces: {e}"))? {
        let f = ifa.flags;
        let entry = by_name
            .entry(ifa.interface_name.clone())
            .or_insert_with(|| Interface {
                name: ifa.interface_name.clone(),
                up: f.contains(InterfaceFlags::IFF_UP),
                running: f.contains(InterfaceFlags::IFF_RUNNING),
                loopback: f.contains(InterfaceFlags::IFF_LOOPBACK),
                multicast: f.contains(InterfaceFlags::IFF_MULTICAST),
                point_to_point: f.contains(InterfaceFlags::IFF_POINTOPOINT),
                addrs: Vec::new(),
            });
        let ip = ifa.address.as_ref().and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        });
        if let Some(ip) = ip {
            entry.addrs.push(ip);
        }
    }
    Ok(by_name.into_values().collect())
}

/// What is wrong with the interfaces, and what is fine.
pub(crate) fn check(ifaces: &[Interface]) -> Vec<Finding> {
    let mut out = Vec::new();
    for i in ifaces {
        let addrs = i
            .addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let name = &i.name;
        if !i.up {
            out.push(Finding::ok(format!("{name}: down (not used)")));
            continue;
        }
        if i.loopback {
            let mc = if i.multicast {
                "multicast on: nodes of this host find each other over it"
            } else {
                "multicast off (usual): not used for mDNS"
            };
            out.push(Finding::ok(format!("{name}: loopback, {mc}; {addrs}")));
            continue;
        }
        if !i.running {
            out.push(Finding::hint(
                format!("{name}: up but no carrier (cable out, Wi-Fi not associated)"),
                format!("connect {name}, or ignore it if it is not your LAN"),
            ));
            continue;
        }
        if i.addrs.is_empty() {
            out.push(Finding::hint(
                format!("{name}: up with no IP address: nothing is announced on it"),
                format!("give {name} an address (DHCP), or ignore it if it is not your LAN"),
            ));
            continue;
        }
        if i.point_to_point {
            out.push(Finding::hint(
                format!(
                    "{name}: point-to-point (a VPN or tunnel): mDNS is not sent on it; {addrs}"
                ),
                "nodes across it need static peers: --peer HOST:PORT, Settings::peer",
            ));
            continue;
        }
        if !i.multicast {
            out.push(Finding::problem(
                format!("{name}: up, but multicast is off: mDNS, which is multicast, may not go out or come in on it; {addrs}"),
                format!("sudo ip link set {name} multicast on"),
            ));
            continue;
        }
        out.push(Finding::ok(format!("{name}: up, multicast; {addrs}")));
    }
    let lan = ifaces
        .iter()
        .filter(|i| i.usable() && !i.loopback && !i.point_to_point)
        .count();
    if lan == 0 {
        out.push(Finding::problem(
            "no interface but loopback is up: nodes on other hosts cannot find or reach this one",
            "connect this host to the LAN (bring a NIC up: ip link set DEV up); \
             for nodes of this host only, turn multicast on on loopback: \
             sudo ip link set lo multicast on",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Level;

    fn iface(name: &str, multicast: bool) -> Interface {
        Interface {
            name: name.into(),
            up: true,
            running: true,
            loopback: name == "lo",
            multicast,
            point_to_point: false,
            addrs: vec![if name == "lo" {
                "127.0.0.1".parse().unwrap()
            } else {
                "10.99.0.1".parse().unwrap()
            }],
        }
    }

    fn problems(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .filter(|f| f.level == Level::Problem)
            .map(|f| f.what.as_str())
            .collect()
    }

    #[test]
    fn a_lan_with_multicast_is_fine() {
        assert!(problems(&check(&[iface("lo", false), iface("eth0", true)])).is_empty());
    }

    #[test]
    fn multicast_off_is_named_with_its_fix() {
        let f = check(&[iface("lo", false), iface("eth0", false)]);
        assert_eq!(problems(&f).len(), 1);
        assert!(problems(&f)[0].starts_with("eth0: up, but multicast is off"));
        assert_eq!(
            f[1].fix.as_deref(),
            Some("sudo ip link set eth0 multicast on")
        );
    }

    #[test]
    fn only_loopback_is_a_problem() {
        let mut down = iface("eth0", true);
        down.up = false;
        let f = check(&[iface("lo", true), down]);
        assert_eq!(problems(&f).len(), 1);
        assert!(problems(&f)[0].starts_with("no interface but loopback"));
    }

    #[test]
    fn a_vpn_is_a_hint_not_a_lan() {
        let mut vpn = iface("wg0", false);
        vpn.point_to_point = true;
        let f = check(&[iface("lo", false), vpn, iface("eth0", true)]);
        assert!(problems(&f).is_empty());
        assert_eq!(f[1].level, Level::Hint);
    }
}
