//! Pod networking across nodes, the way flannel's host-gw backend does it: every node routes
//! each other node's pod range (its `spec.podCIDR`, assigned by k3s's controller manager) via
//! that node's InternalIP. Nodes must share an L2 segment (their IPs are on-link), which is
//! what sandboxes joined by one bridge or one VPC subnet have; no encapsulation, no NAT.
//!
//! `installer node-routes` (started by `start` beside k3s on every node with a kubelet, as the
//! daemon `node-routes`) lists the nodes every few seconds with the credentials k3s gives its
//! own node-level controllers (flannel uses them to watch nodes) and reconciles: it adds a route for each other node with a podCIDR and an InternalIP, and
//! removes the routes it added for nodes that went away or moved. Polling, not a watch: a
//! `kubectl` every POLL is cheap next to k3s, it needs no state across server restarts (the
//! agent's kubelet reaches the server through its local load balancer and simply fails a poll
//! while the server is down), and a route appears within one POLL of a node's registration,
//! which is well before its kubelet is Ready.
//!
//! Routes are added with protocol 44 (`ip route` shows `proto 44`) and recorded in
//! `data/run/node-routes.json` with the ip_forward value found before this install turned
//! forwarding on; `uninstall` deletes those routes and puts ip_forward back.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::kubectl::Kubectl;
use crate::paths::Paths;
use crate::state::State;

/// How often the nodes are listed.
const POLL: Duration = Duration::from_secs(5);
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// One route: DST/PREFIX via GATEWAY, for NODE's pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub node: String,
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// The routing protocol our routes carry (`ip route` shows `proto 44`): 44 is unassigned in
/// iproute2's rt_protos, so an operator can tell these routes from their own.
pub const ROUTE_PROTOCOL: u8 = 44;

impl Route {
    /// `device`: the interface towards the gateway, named when adding (gVisor does not
    /// resolve it from the gateway); a delete needs none.
    fn request(&self, device: Option<u32>) -> netif::Route {
        netif::Route {
            dst: self.dst,
            prefix: self.prefix,
            gateway: self.gateway,
            device,
            protocol: ROUTE_PROTOCOL,
        }
    }
}

fn delete_route(route: &Route) -> std::io::Result<()> {
    netif::Netlink::open()?.delete_route(&route.request(None))
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} via {} (node {})",
            self.dst, self.prefix, self.gateway, self.node
        )
    }
}

/// What the daemon changed on the host, for itself after a restart and for uninstall.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Record {
    /// ip_forward before the daemon set it to 1 (None: it was 1 already, or never touched).
    pub ip_forward_before: Option<String>,
    pub routes: Vec<Route>,
    /// Routes that could not be added because another route to the range exists (reported
    /// once each).
    #[serde(default)]
    pub conflicts: Vec<Route>,
}

fn record_file(paths: &Paths) -> PathBuf {
    paths.run_dir().join("node-routes.json")
}

pub fn load(paths: &Paths) -> Record {
    fs::read_to_string(record_file(paths))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

fn save(paths: &Paths, record: &Record) -> Result<()> {
    let file = record_file(paths);
    let text = serde_json::to_string_pretty(record)?;
    crate::files::write_replacing(&file, text.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", file.display()))
}

/// The credentials the kubelet uses: they exist on servers with an agent and on agents alike,
/// and may read this node's own Node object (not the others').
pub fn kubelet_kubeconfig(paths: &Paths) -> PathBuf {
    paths.k3s_data_dir().join("agent/kubelet.kubeconfig")
}

/// What k3s's agent gives its own controllers (flannel, the network policy controller, the
/// tunnel): user system:k3s-controller, whose ClusterRole may get, list and watch nodes. The
/// kubelet's credentials cannot list nodes since Kubernetes 1.34 (measured: `node
/// 'k3sg-server' cannot read all nodes, only its own Node object`).
pub fn controller_kubeconfig(paths: &Paths) -> PathBuf {
    paths.k3s_data_dir().join("agent/k3scontroller.kubeconfig")
}

/// The jsonpath that prints `kubectl get nodes` as "name podCIDR InternalIP" lines.
const NODES_JSONPATH: &str = "{range .items[*]}{.metadata.name} {.spec.podCIDR} \
     {.status.addresses[?(@.type==\"InternalIP\")].address}{\"\\n\"}{end}";

/// Parses [`NODES_JSONPATH`] output into the routes every node but `this_node` needs. Nodes
/// without a podCIDR yet, or whose range or address is not IPv4, get no route.
pub fn wanted_routes(listing: &str, this_node: &str) -> Vec<Route> {
    let mut routes = Vec::new();
    for line in listing.lines() {
        let mut fields = line.split_whitespace();
        let (Some(node), Some(cidr), Some(address)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if node == this_node {
            continue;
        }
        let Some((dst, prefix)) = parse_cidr(cidr) else {
            continue;
        };
        // InternalIP may list an IPv6 address too: the first IPv4 one is the gateway.
        let gateway = std::iter::once(address)
            .chain(fields)
            .find_map(|a| a.parse::<Ipv4Addr>().ok());
        if let Some(gateway) = gateway {
            routes.push(Route {
                node: node.to_string(),
                dst,
                prefix,
                gateway,
            });
        }
    }
    routes
}

pub fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (address, prefix) = text.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some(())?;
    Some((address.parse().ok()?, prefix))
}

/// The IPv4 routes in the main table, from /proc/net/route (it exists in gVisor too):
/// (destination, prefix, gateway). Its addresses are hex in network byte order as read by a
/// little- or big-endian host alike, i.e. the u32's native bytes are the address's octets.
pub fn present_routes(proc_net_route: &str) -> Vec<(Ipv4Addr, u8, Ipv4Addr)> {
    let hex = |text: &str| u32::from_str_radix(text, 16).ok().map(|v| v.to_ne_bytes());
    proc_net_route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (dst, gateway, mask) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
            let prefix = u32::from_be_bytes(hex(mask)?).count_ones() as u8;
            Some((
                Ipv4Addr::from(hex(dst)?),
                prefix,
                Ipv4Addr::from(hex(gateway)?),
            ))
        })
        .collect()
}

/// Makes the routes on the host match `wanted`: deletes the recorded routes no longer wanted,
/// adds the wanted ones that are missing. Returns one line per change or problem.
fn reconcile(
    record: &mut Record,
    wanted: &[Route],
    present: &[(Ipv4Addr, u8, Ipv4Addr)],
) -> Vec<String> {
    let mut lines = Vec::new();
    let is_present = |r: &Route| present.contains(&(r.dst, r.prefix, r.gateway));
    record
        .conflicts
        .retain(|r| wanted.contains(r) && !is_present(r));
    record.routes.retain(|route| {
        if wanted.contains(route) {
            return true;
        }
        match delete_route(route) {
            Ok(()) => lines.push(format!("removed route {route}")),
            Err(error) if !is_present(route) => {
                lines.push(format!("forgot route {route} (already gone: {error})"))
            }
            Err(error) => {
                lines.push(format!("cannot remove route {route}: {error}"));
                return true;
            }
        }
        false
    });
    for route in wanted {
        if is_present(route) {
            if !record.routes.contains(route) {
                // Ours from before a restart whose record was lost, or an operator's: either
                // way the route is right; record it so it goes with the install.
                record.routes.push(route.clone());
            }
            continue;
        }
        let Some(index) = interface_for(route.gateway) else {
            lines.push(format!(
                "cannot add route {route}: no interface here has an address in {}'s network \
                 (host-gw routing needs the nodes on one network segment)",
                route.gateway
            ));
            continue;
        };
        match netif::Netlink::open()
            .and_then(|netlink| netlink.add_route(&route.request(Some(index))))
        {
            Ok(()) => {
                lines.push(format!("added route {route}"));
                if !record.routes.contains(route) {
                    record.routes.push(route.clone());
                }
            }
            // A route to that range exists and is not this one (present_routes would have
            // found it): someone else's. Said once: it is recorded as failed, not retried
            // into the log every poll.
            Err(error) if error.raw_os_error() == Some(libc::EEXIST) => {
                if !record.conflicts.contains(route) {
                    lines.push(format!(
                        "cannot add route {route}: another route to {}/{} is in the way (`ip \
                         route` shows it); remove it, or this node's pods cannot reach {}'s",
                        route.dst, route.prefix, route.node
                    ));
                    record.conflicts.push(route.clone());
                }
            }
            Err(error) => lines.push(format!("cannot add route {route}: {error}")),
        }
    }
    lines
}

/// The interface with an IPv4 address whose network holds `gateway`.
fn interface_for(gateway: Ipv4Addr) -> Option<u32> {
    let on_link = |address: Ipv4Addr, prefix: u8| {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        u32::from(address) & mask == u32::from(gateway) & mask
    };
    let found = netif::addresses(None)
        .unwrap_or_default()
        .into_iter()
        .find(|a| {
            matches!(a.address, std::net::IpAddr::V4(v4) if a.interface != "lo" && on_link(v4, a.prefix))
        })?;
    netif::index(&found.interface).ok().flatten()
}

/// Turns IPv4 forwarding on (pods' packets to other nodes' pods pass through this node's
/// netstack, and other nodes' packets to our pods too), remembering the old value once.
fn ensure_forwarding(record: &mut Record) -> Option<String> {
    let before = fs::read_to_string(IP_FORWARD).ok()?.trim().to_string();
    if before == "1" {
        return None;
    }
    match fs::write(IP_FORWARD, "1") {
        Ok(()) => {
            record.ip_forward_before.get_or_insert(before);
            Some(format!(
                "{IP_FORWARD}: set to 1 (was {})",
                record.ip_forward_before.as_deref().unwrap_or("?")
            ))
        }
        Err(error) => Some(format!(
            "cannot turn on IP forwarding ({IP_FORWARD}: {error}): pods on other nodes cannot \
             reach this node's pods"
        )),
    }
}

/// The daemon: reconciles every POLL until killed (`stop` signals its process group).
pub fn run(state: &State) -> Result<()> {
    let paths = state.paths();
    let node = state.node_name();
    let kubeconfig = controller_kubeconfig(&paths);
    println!(
        "node-routes: node {node}, listing nodes every {}s with {}",
        POLL.as_secs(),
        kubeconfig.display()
    );
    let kubectl = Kubectl::with(&paths, kubeconfig);
    let mut record = load(&paths);
    let mut last_error = String::new();
    loop {
        if let Some(line) = ensure_forwarding(&mut record) {
            println!("{line}");
            save(&paths, &record)?;
        }
        match list_nodes(&kubectl) {
            Ok(listing) => {
                last_error.clear();
                let wanted = wanted_routes(&listing, &node);
                let present =
                    present_routes(&fs::read_to_string("/proc/net/route").unwrap_or_default());
                let lines = reconcile(&mut record, &wanted, &present);
                if !lines.is_empty() {
                    lines.iter().for_each(|line| println!("{line}"));
                    save(&paths, &record)?;
                }
            }
            // Expected while the server restarts: say it once, not every poll.
            Err(error) if error.to_string() != last_error => {
                println!("cannot list nodes (routes unchanged): {error}");
                last_error = error.to_string();
            }
            Err(_) => {}
        }
        sleep(POLL);
    }
}

fn list_nodes(kubectl: &Kubectl) -> Result<String> {
    kubectl.jsonpath(&["get", "nodes", "--request-timeout=10s"], NODES_JSONPATH)
}

/// Uninstall: deletes the recorded routes and restores ip_forward. Returns report lines and
/// problems.
pub fn remove_all(paths: &Paths) -> (Vec<String>, Vec<String>) {
    let record = load(paths);
    let present = present_routes(&fs::read_to_string("/proc/net/route").unwrap_or_default());
    let (mut report, mut problems) = (Vec::new(), Vec::new());
    for route in &record.routes {
        if !present.contains(&(route.dst, route.prefix, route.gateway)) {
            continue;
        }
        match delete_route(route) {
            Ok(()) => report.push(format!("removed route {route}")),
            Err(error) => problems.push(format!("cannot remove route {route}: {error}")),
        }
    }
    if let Some(before) = &record.ip_forward_before {
        match fs::write(IP_FORWARD, before) {
            Ok(()) => report.push(format!("{IP_FORWARD}: back to {before}")),
            Err(error) => {
                problems.push(format!("cannot set {IP_FORWARD} back to {before}: {error}"))
            }
        }
    }
    (report, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_node_with_a_range_and_an_ipv4_address_gets_a_route() {
        let listing = "server 10.42.0.0/24 10.200.0.2\n\
                       agent 10.42.1.0/24 10.200.0.3\n\
                       new  \n\
                       dual 10.42.2.0/24 fd00::3 10.200.0.4\n\
                       v6only 10.42.3.0/24 fd00::5\n";
        let routes = wanted_routes(listing, "server");
        let text: Vec<String> = routes.iter().map(Route::to_string).collect();
        assert_eq!(
            text,
            [
                "10.42.1.0/24 via 10.200.0.3 (node agent)",
                "10.42.2.0/24 via 10.200.0.4 (node dual)"
            ]
        );
        assert!(wanted_routes(listing, "agent")
            .iter()
            .any(|r| r.node == "server" && r.dst == Ipv4Addr::new(10, 42, 0, 0)));
    }

    #[test]
    fn proc_net_route_is_read_as_the_kernel_writes_it() {
        // From the two-nodes e2e's server sandbox: a default route, the eth0 subnet, the
        // bridge, and a route to the agent's pods.
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0100C80A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0000C80A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    eth0\t00012A0A\t0300C80A\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = present_routes(text);
        if cfg!(target_endian = "little") {
            assert_eq!(
                routes[2],
                (
                    Ipv4Addr::new(10, 42, 1, 0),
                    24,
                    Ipv4Addr::new(10, 200, 0, 3)
                )
            );
            assert_eq!(
                routes[0],
                (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 200, 0, 1))
            );
        }
        assert_eq!(routes.len(), 3);
    }

    #[test]
    fn cidrs_parse_only_when_ipv4() {
        assert_eq!(
            parse_cidr("10.42.1.0/24"),
            Some((Ipv4Addr::new(10, 42, 1, 0), 24))
        );
        assert_eq!(parse_cidr("fd00::/64"), None);
        assert_eq!(parse_cidr("10.42.1.0/33"), None);
        assert_eq!(parse_cidr(""), None);
    }
}
