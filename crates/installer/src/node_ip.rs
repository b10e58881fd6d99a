//! The node IP k3s runs with.
//!
//! k3s takes the address of the interface that holds the default route (Kubernetes'
//! `ChooseHostInterface`) and refuses to start without one: `no default routes found in
//! "/proc/net/route" or "/proc/net/ipv6_route"`. Users' sandboxes have an interface and a
//! default route, and there k3s chooses as upstream does. A sandbox with no default route (a
//! gVisor run with `--network=none`, an offline agent) gets a node IP from the installer, passed
//! as `--node-ip`, chosen in this order:
//!   1. an address already on an interface, other interfaces before lo, IPv4 first;
//!   2. else `LOOPBACK_NODE_ADDRESS`, added to lo as a /32 and recorded in the state file, so
//!      uninstall removes it and `start` adds it again after a sandbox restart.
//!
//! Why not 127.0.0.1: the kubelet refuses it (`failed to validate nodeIP: nodeIP can't be
//! loopback address`, every sync) and so does the apiserver for the `kubernetes` endpoints
//! (`may not be in the loopback range`). It refuses link-local addresses too, and requires the
//! node IP to be on a local interface: a private /32 on lo is all of that. Measured inside both
//! gVisors (`runsc --network=none do`): `ip addr add 10.255.255.254/32 dev lo` succeeds and a
//! TCP connection to the address works.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use netif::Address as InterfaceAddress;
use serde::{Deserialize, Serialize};

use crate::state::State;

/// The address the installer adds to lo when it has to. Private, outside k3s's default cluster
/// (10.42.0.0/16) and service (10.43.0.0/16) ranges; it can collide with nothing, because it is
/// only ever added where no other interface has an address.
pub const LOOPBACK_NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 254);

/// An address the installer put on an interface (recorded in state.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedAddress {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub interface: String,
}

/// Where the node IP comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// k3s picks it: the address of the interface that holds the default route.
    DefaultRoute {
        interface: String,
        address: Option<IpAddr>,
    },
    /// No default route; this address is already on an interface.
    Existing(InterfaceAddress),
    /// No default route and no usable address: add this one to lo.
    AddToLoopback(Ipv4Addr),
}

impl Choice {
    /// The node IP, where known.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            Choice::DefaultRoute { address, .. } => *address,
            other => other.node_ip(),
        }
    }

    /// The `--node-ip` to pass, if k3s must be told.
    pub fn node_ip(&self) -> Option<IpAddr> {
        match self {
            Choice::DefaultRoute { .. } => None,
            Choice::Existing(found) => Some(found.address),
            Choice::AddToLoopback(address) => Some(IpAddr::V4(*address)),
        }
    }
}

/// Interfaces that hold a default route, as Kubernetes reads them: an IPv4 route whose
/// destination is 0.0.0.0, or an IPv6 route to :: with a gateway (the gateway-less ::/0 entry
/// on lo is Linux's "unreachable" route, not a default route).
pub fn default_route_interfaces(ipv4_routes: &str, ipv6_routes: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in ipv4_routes.lines().filter(|l| !l.starts_with("Iface")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [interface, "00000000", ..] = fields.as_slice() {
            found.push(interface.to_string());
        }
    }
    let zero = "0".repeat(32);
    for line in ipv6_routes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 10 && fields[0] == zero && fields[4] != zero {
            found.push(fields[9].to_string());
        }
    }
    found.dedup();
    found
}

/// An address the kubelet accepts as a node IP: not loopback, link-local, multicast or
/// unspecified (kubelet's validateNodeIP).
pub fn usable(address: &IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Decides, from the default routes and the interfaces' addresses (only those of interfaces
/// that are up count).
pub fn choose(default_routes: &[String], addresses: &[InterfaceAddress]) -> Choice {
    let usable: Vec<&InterfaceAddress> = addresses
        .iter()
        .filter(|a| a.up && usable(&a.address))
        .collect();
    // Lower is better: other interfaces before lo, IPv4 before IPv6.
    let rank = |a: &InterfaceAddress| (a.interface == "lo", a.address.is_ipv6());
    if let Some(interface) = default_routes.first() {
        let address = usable
            .iter()
            .filter(|a| &a.interface == interface)
            .min_by_key(|a| rank(a))
            .map(|a| a.address);
        return Choice::DefaultRoute {
            interface: interface.clone(),
            address,
        };
    }
    match usable.into_iter().min_by_key(|a| rank(a)) {
        Some(found) => Choice::Existing(found.clone()),
        None => Choice::AddToLoopback(LOOPBACK_NODE_ADDRESS),
    }
}

/// The addresses of every interface, up or not; none where they cannot be listed.
fn interface_addresses() -> Vec<InterfaceAddress> {
    netif::addresses(None).unwrap_or_default()
}

fn read_default_routes() -> Vec<String> {
    default_route_interfaces(
        &fs::read_to_string("/proc/net/route").unwrap_or_default(),
        &fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default(),
    )
}

/// The node IP of this start.
pub struct NodeIp {
    /// The `--node-ip` to pass, if k3s must be told.
    pub flag: Option<IpAddr>,
    /// The address other nodes reach this one at, where known (for the join command).
    pub address: Option<IpAddr>,
}

/// Decides the node IP for this start, adds the lo address if that is the choice, and prints
/// one line saying which IP and why.
pub fn prepare(state: &mut State) -> Result<NodeIp> {
    forget_vanished_addresses(state)?;
    let choice = choose(&read_default_routes(), &interface_addresses());
    match &choice {
        Choice::DefaultRoute { interface, address } => println!(
            "node IP: {} (k3s's choice: {interface} holds the default route)",
            address.map_or("the address of that interface".to_string(), |a| a
                .to_string())
        ),
        Choice::Existing(found) => println!(
            "node IP: {} on {} (no default route, so k3s is given --node-ip)",
            found.address, found.interface
        ),
        Choice::AddToLoopback(address) => {
            add_to_loopback(state, *address)?;
            println!(
                "node IP: {address}, added to lo as {address}/32 (no default route and no \
                 address besides loopback; the kubelet refuses 127.0.0.1); k3s is given --node-ip"
            );
        }
    }
    Ok(NodeIp {
        flag: choice.node_ip(),
        address: choice.address(),
    })
}

/// The node's IPv4 address as [`prepare`] decides it, without changing anything (None before
/// `prepare` added what it needed, or where the node IP is IPv6).
pub fn current_ipv4() -> Option<Ipv4Addr> {
    match choose(&read_default_routes(), &interface_addresses()).address() {
        Some(IpAddr::V4(v4)) => Some(v4),
        _ => None,
    }
}

pub fn lo_index() -> Result<u32> {
    netif::index("lo")
        .context("cannot find the loopback interface lo")?
        .context("cannot find the loopback interface lo: there is no such interface")
}

fn add_to_loopback(state: &mut State, address: Ipv4Addr) -> Result<()> {
    let added = AddedAddress {
        address,
        prefix: 32,
        interface: "lo".into(),
    };
    let lo = lo_index()?;
    netif::Netlink::open()
        .and_then(|netlink| netlink.add_address(lo, address, added.prefix))
        .with_context(|| {
            format!(
            "cannot add {address}/32 to lo (needed as the node IP: this sandbox has no default \
             route); give the sandbox a network interface with a default route"
        )
        })?;
    state.added_addresses.push(added);
    state.save()
}

/// After a sandbox restart the addresses added at an earlier start are gone; forget them.
fn forget_vanished_addresses(state: &mut State) -> Result<()> {
    let present = interface_addresses();
    let before = state.added_addresses.len();
    state.added_addresses.retain(|added| {
        present
            .iter()
            .any(|p| p.interface == added.interface && p.address == IpAddr::V4(added.address))
    });
    if state.added_addresses.len() != before {
        state.save()?;
    }
    Ok(())
}

/// Removes the addresses the installer added (uninstall). Returns one problem per failure.
pub fn remove_added_addresses(state: &State) -> Vec<String> {
    let present = interface_addresses();
    let mut problems = Vec::new();
    for added in &state.added_addresses {
        let on_interface = present
            .iter()
            .any(|p| p.interface == added.interface && p.address == IpAddr::V4(added.address));
        if !on_interface {
            continue;
        }
        // 0 (no such interface) makes the delete fail with a message naming it.
        let index = netif::index(&added.interface).ok().flatten().unwrap_or(0);
        match netif::Netlink::open()
            .and_then(|netlink| netlink.delete_address(index, added.address, added.prefix))
        {
            Ok(()) => println!(
                "removed {}/{} from {}",
                added.address, added.prefix, added.interface
            ),
            Err(error) => problems.push(format!(
                "cannot remove {}/{} from {}: {error}",
                added.address, added.prefix, added.interface
            )),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4_DEFAULT: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100C80A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000C80A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
    const V4_NONE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n";
    /// Linux's ipv6_route: lo's gateway-less ::/0 is the unreachable route, not a default.
    const V6_LO_ONLY: &str = "\
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000001 00000000 00200001 lo
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo
";

    fn at(interface: &str, address: &str) -> InterfaceAddress {
        InterfaceAddress {
            interface: interface.into(),
            address: address.parse().unwrap(),
            prefix: 32,
            up: true,
        }
    }

    #[test]
    fn default_routes_are_read_like_kubernetes_reads_them() {
        assert_eq!(default_route_interfaces(V4_DEFAULT, V6_LO_ONLY), ["eth0"]);
        assert!(default_route_interfaces(V4_NONE, V6_LO_ONLY).is_empty());
        let v6_default = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                          fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth1\n";
        assert_eq!(default_route_interfaces(V4_NONE, v6_default), ["eth1"]);
    }

    #[test]
    fn with_a_default_route_k3s_chooses() {
        let addresses = [at("lo", "127.0.0.1"), at("eth0", "10.200.0.2")];
        assert_eq!(
            choose(&["eth0".into()], &addresses),
            Choice::DefaultRoute {
                interface: "eth0".into(),
                address: Some("10.200.0.2".parse().unwrap())
            }
        );
        assert_eq!(choose(&["eth0".into()], &addresses).node_ip(), None);
    }

    #[test]
    fn without_a_route_an_existing_address_comes_before_adding_one() {
        let addresses = [
            at("lo", "127.0.0.1"),
            at("lo", "::1"),
            at("eth0", "fe80::1"),
            at("eth0", "fd00::5"),
            at("eth0", "192.168.7.9"),
        ];
        assert_eq!(
            choose(&[], &addresses),
            Choice::Existing(at("eth0", "192.168.7.9"))
        );
        // Only loopback and link-local: the installer adds its own.
        let bare = [
            at("lo", "127.0.0.1"),
            at("lo", "::1"),
            at("eth0", "fe80::1"),
        ];
        let choice = choose(&[], &bare);
        assert_eq!(choice, Choice::AddToLoopback(LOOPBACK_NODE_ADDRESS));
        assert_eq!(
            choice.node_ip(),
            Some(IpAddr::V4(LOOPBACK_NODE_ADDRESS)),
            "k3s must be told"
        );
        // An interface that is down does not count.
        let mut down = at("eth1", "192.168.9.9");
        down.up = false;
        assert_eq!(
            choose(&[], &[at("lo", "127.0.0.1"), down]),
            Choice::AddToLoopback(LOOPBACK_NODE_ADDRESS)
        );
        // Once added (a second start), it is an existing address.
        let added = [at("lo", "127.0.0.1"), at("lo", "10.255.255.254")];
        assert_eq!(
            choose(&[], &added),
            Choice::Existing(at("lo", "10.255.255.254"))
        );
    }

    #[test]
    fn the_kubelets_refusals_are_not_usable() {
        for bad in [
            "127.0.0.1",
            "169.254.1.1",
            "224.0.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
        ] {
            assert!(!usable(&bad.parse().unwrap()), "{bad}");
        }
        for good in ["10.255.255.254", "192.168.1.2", "fd00::1", "2001:db8::1"] {
            assert!(usable(&good.parse().unwrap()), "{good}");
        }
    }
}
