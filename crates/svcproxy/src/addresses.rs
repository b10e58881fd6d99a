//! The node's addresses: which ClusterIPs sit on the CNI bridge, and which addresses NodePorts
//! are served on.
//!
//! Why ClusterIPs go on the bridge as /32s (measured in ARCHITECTURE.md): a pod's packets to a
//! ClusterIP follow its default route to the bridge's gateway address, and gVisor's netstack
//! delivers a packet that arrived on the bridge only to an address of the bridge, not to one
//! on `lo`. Every /32 inside the service CIDR on the bridge is treated as the proxy's own: at
//! each sync the set on the bridge is made equal to the wanted set, which also clears what an
//! earlier run left behind.

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use netif::{Address, Netlink};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

/// The IPv4 address of one of this namespace's addresses, if it is one (svcproxy serves IPv4).
fn ipv4(a: &Address) -> Option<Ipv4Addr> {
    match a.address {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

/// The addresses NodePorts (and LoadBalancer ports) are served on: every local IPv4 address
/// (loopback and the bridge's gateway included, as kube-proxy does) except ClusterIPs, or,
/// where `allowed` lists CIDRs (`--nodeport-addresses`, as kube-proxy's flag of that name),
/// only the addresses inside one of them.
pub fn node_addresses(
    all: &[Address],
    service_cidr: Ipv4Net,
    allowed: &[Ipv4Net],
) -> Vec<Ipv4Addr> {
    let set: BTreeSet<Ipv4Addr> = all
        .iter()
        .filter_map(ipv4)
        .filter(|a| !service_cidr.contains(a))
        .filter(|a| allowed.is_empty() || allowed.iter().any(|net| net.contains(a)))
        .collect();
    set.into_iter().collect()
}

/// The /32s of ours found on `bridge`: those inside the service CIDR (ClusterIPs) and the node
/// IP.
pub fn owned_on(
    all: &[Address],
    bridge: &str,
    service_cidr: Ipv4Net,
    node_ip: Option<Ipv4Addr>,
) -> BTreeSet<Ipv4Addr> {
    all.iter()
        .filter(|a| a.interface == bridge && a.prefix == 32)
        .filter_map(ipv4)
        .filter(|addr| service_cidr.contains(addr) || Some(*addr) == node_ip)
        .collect()
}

/// What one [`ClusterIps::sync`] did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub added: Vec<Ipv4Addr>,
    pub removed: Vec<Ipv4Addr>,
    /// Addresses that could not be added or removed, with the error.
    pub failed: Vec<(Ipv4Addr, String)>,
}

/// Keeps the bridge's ClusterIP /32s equal to the wanted set, with the node IP beside them.
pub struct ClusterIps {
    bridge: String,
    service_cidr: Ipv4Net,
    /// `--node-ip`: on the bridge as long as the ClusterIPs are.
    node_ip: Option<Ipv4Addr>,
    netlink: Netlink,
}

impl ClusterIps {
    pub fn new(bridge: &str, service_cidr: Ipv4Net, node_ip: Option<Ipv4Addr>) -> Result<Self> {
        let netlink = Netlink::open().context("opening a NETLINK_ROUTE socket")?;
        Ok(ClusterIps {
            bridge: bridge.to_string(),
            service_cidr,
            node_ip,
            netlink,
        })
    }

    /// The bridge's index; the bridge is created and brought up when it is missing. The CNI
    /// plugin creates it at the first pod, but ClusterIPs must answer before that (for the
    /// node itself), and the plugin adopts an existing bridge (it adds its gateway address).
    pub fn ensure_bridge(&self) -> Result<u32> {
        if let Some(index) = netif::index(&self.bridge)? {
            return Ok(index);
        }
        match self.netlink.create_bridge(&self.bridge) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => bail!(
                "bridge {} does not exist and cannot be created ({e}): ClusterIPs must live on \
                 the bridge the pods are attached to (docs/services.md)",
                self.bridge
            ),
        }
        let index = netif::index(&self.bridge)?.with_context(|| {
            format!("bridge {} vanished right after it was created", self.bridge)
        })?;
        netif::set_up(&self.bridge, true)
            .with_context(|| format!("bringing bridge {} up", self.bridge))?;
        tracing::info!(bridge = %self.bridge, "created the bridge (the CNI plugin adopts it)");
        Ok(index)
    }

    /// Makes the ClusterIPs on the bridge exactly `cluster_ips`, and puts the node IP there
    /// (other addresses outside the service CIDR are never touched).
    pub fn sync(&self, cluster_ips: &BTreeSet<Ipv4Addr>) -> Result<SyncReport> {
        let mut wanted = cluster_ips.clone();
        wanted.extend(self.node_ip);
        self.make(&wanted)
    }

    /// Takes every address of ours off the bridge (at exit).
    pub fn clear(&self) -> Result<SyncReport> {
        self.make(&BTreeSet::new())
    }

    fn make(&self, wanted: &BTreeSet<Ipv4Addr>) -> Result<SyncReport> {
        let index = self.ensure_bridge()?;
        let present = owned_on(
            &netif::addresses(None).context("listing interface addresses")?,
            &self.bridge,
            self.service_cidr,
            self.node_ip,
        );
        let mut report = SyncReport::default();
        for addr in wanted.difference(&present) {
            if !self.service_cidr.contains(addr) && Some(*addr) != self.node_ip {
                continue;
            }
            match self.netlink.add_address(index, *addr, 32) {
                Ok(()) => report.added.push(*addr),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => report
                    .failed
                    .push((*addr, format!("adding to {}: {e}", self.bridge))),
            }
        }
        for addr in present.difference(wanted) {
            match self.netlink.delete_address(index, *addr, 32) {
                Ok(()) => report.removed.push(*addr),
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => report
                    .failed
                    .push((*addr, format!("removing from {}: {e}", self.bridge))),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(interface: &str, addr: &str, prefix: u8) -> Address {
        Address {
            interface: interface.into(),
            address: addr.parse().unwrap(),
            prefix,
            up: true,
        }
    }

    fn cidr() -> Ipv4Net {
        "10.43.0.0/16".parse().unwrap()
    }

    /// A node's addresses as netif lists them: the same address on two interfaces, a
    /// ClusterIP on the bridge, and an IPv6 address (not served).
    fn node_interfaces() -> Vec<Address> {
        vec![
            entry("lo", "127.0.0.1", 8),
            entry("eth0", "192.168.5.2", 24),
            entry("eth1", "192.168.5.2", 24),
            entry("eth2", "172.16.0.9", 16),
            entry("gvcni0", "10.88.0.1", 16),
            entry("gvcni0", "10.43.0.10", 32),
            entry("eth0", "fd00::2", 64),
        ]
    }

    fn ipv4s(list: &[&str]) -> Vec<Ipv4Addr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn node_addresses_are_every_local_address_but_clusterips() {
        assert_eq!(
            node_addresses(&node_interfaces(), cidr(), &[]),
            ipv4s(&["10.88.0.1", "127.0.0.1", "172.16.0.9", "192.168.5.2"])
        );
    }

    #[test]
    fn nodeport_addresses_keep_only_the_addresses_inside_the_given_cidrs() {
        let all = node_interfaces();
        let allowed: Vec<Ipv4Net> = ["192.168.5.0/24", "127.0.0.0/8", "10.0.0.0/8"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        // ClusterIPs stay out even when a CIDR covers them.
        assert_eq!(
            node_addresses(&all, cidr(), &allowed),
            ipv4s(&["10.88.0.1", "127.0.0.1", "192.168.5.2"])
        );
        let one: Vec<Ipv4Net> = vec!["192.168.5.2/32".parse().unwrap()];
        assert_eq!(node_addresses(&all, cidr(), &one), ipv4s(&["192.168.5.2"]));
    }

    #[test]
    fn only_slash32s_in_the_service_cidr_on_the_bridge_are_owned() {
        let all = [
            entry("gvcni0", "10.88.0.1", 16),
            entry("gvcni0", "10.43.0.10", 32),
            entry("gvcni0", "10.43.9.9", 24),
            entry("eth0", "10.43.0.11", 32),
            entry("gvcni0", "10.44.0.1", 32),
        ];
        assert_eq!(
            owned_on(&all, "gvcni0", cidr(), None),
            BTreeSet::from([Ipv4Addr::new(10, 43, 0, 10)])
        );
        // The node IP's /32 on the bridge is ours too; the same address elsewhere, or as a
        // wider prefix, is not.
        let node_ip = Some(Ipv4Addr::new(10, 44, 0, 1));
        let all = [&all[..], &[entry("eth0", "10.44.0.1", 24)]].concat();
        assert_eq!(
            owned_on(&all, "gvcni0", cidr(), node_ip),
            BTreeSet::from([Ipv4Addr::new(10, 43, 0, 10), Ipv4Addr::new(10, 44, 0, 1)])
        );
    }
}
