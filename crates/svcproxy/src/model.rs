//! The service/endpoint model: from the API's Services and EndpointSlices to what the proxy
//! must serve. Pure functions over API objects, no I/O, so every rule here is unit-tested.
//!
//! Two steps:
//! - [`plan`]: one [`PortPlan`] per (Service, port): its ClusterIPs, NodePort, protocol and the
//!   endpoints traffic may go to now;
//! - [`bindings`]: the sockets those plans need on this node (ClusterIP:port, and for each
//!   node address: NodePort, and the Service's own port for a LoadBalancer), each with the
//!   endpoints behind it.
//!
//! The rules follow kube-proxy's where this proxy can follow them:
//! - an endpoint is used while it is ready (`ready` unset counts as ready, as the API says);
//!   when a port has no ready endpoint, endpoints that are both `serving` and `terminating`
//!   are used instead, so connections drain during a rolling update as with kube-proxy;
//! - a service port's endpoints come from every EndpointSlice labelled
//!   `kubernetes.io/service-name=<service>` in its namespace, matched by port name and protocol;
//! - no ClusterIP (headless), ExternalName, non-IPv4 addresses and SCTP are not proxied; each
//!   skip has a reason the proxy logs once;
//! - a `LoadBalancer` Service is served as k3s's servicelb serves it: its ports on the node's
//!   addresses (servicelb's klipper-lb pods bind them as hostPorts), unless it names a
//!   `loadBalancerClass`, which makes it another controller's (servicelb skips those too, as
//!   the cloud provider's service controller does). Its status is `loadbalancer.rs`'s job.

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (the API's default, 3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The API's protocol field (unset means TCP); `None` for SCTP and anything unknown.
    fn from_api(value: Option<&str>) -> Option<Protocol> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// `namespace/name:port-name`, the name logs and the status file use for one service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    /// The port's `name`; empty for the single unnamed port a Service may have.
    pub port: String,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Everything the proxy needs to know about one port of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    pub service: ServicePortName,
    pub protocol: Protocol,
    /// The Service's IPv4 ClusterIPs (usually one).
    pub cluster_ips: Vec<Ipv4Addr>,
    pub port: u16,
    /// Set for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// A LoadBalancer Service this proxy serves (no `loadBalancerClass`): `port` is also
    /// served on every node address, as servicelb's hostPorts are.
    pub load_balancer: bool,
    /// Where traffic may go now, sorted and without duplicates.
    pub endpoints: Vec<SocketAddrV4>,
    /// `sessionAffinity: ClientIP`: how long a client sticks to its endpoint.
    pub affinity: Option<Duration>,
}

/// The result of [`plan`]: what to serve, and what was left out and why.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ports: Vec<PortPlan>,
    /// `(namespace/name, reason)` for each Service (or part of one) not proxied.
    pub skipped: Vec<(String, String)>,
}

impl Plan {
    /// Every ClusterIP the proxy must own, whether or not its ports have endpoints: a
    /// ClusterIP without endpoints must refuse connections at once (as kube-proxy's REJECT
    /// rule does), not leave clients waiting for a timeout.
    pub fn cluster_ips(&self) -> BTreeSet<Ipv4Addr> {
        self.ports
            .iter()
            .flat_map(|p| p.cluster_ips.iter().copied())
            .collect()
    }
}

/// The Services and EndpointSlices the API holds now, turned into per-port plans. Only
/// ClusterIPs inside `service_cidr` are taken: the proxy adds and removes addresses in that
/// range only, so a bad ClusterIP cannot make it touch other addresses of the node.
pub fn plan<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    service_cidr: Ipv4Net,
) -> Plan {
    // Slices grouped by (namespace, service name).
    let mut slices_by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            continue;
        };
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        slices_by_service
            .entry((namespace, service.clone()))
            .or_default()
            .push(slice);
    }

    let mut plan = Plan::default();
    for service in services {
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let key = format!("{namespace}/{name}");
        let Some(spec) = &service.spec else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            plan.skipped.push((
                key,
                "ExternalName: answered by DNS, nothing to proxy".into(),
            ));
            continue;
        }
        let listed: Vec<&String> = match (&spec.cluster_ips, &spec.cluster_ip) {
            (Some(ips), _) if !ips.is_empty() => ips.iter().collect(),
            (_, Some(ip)) => vec![ip],
            _ => Vec::new(),
        };
        if listed.is_empty() || listed.iter().any(|ip| ip.as_str() == "None") {
            // Headless: clients use the endpoints' own addresses (via DNS).
            continue;
        }
        let mut cluster_ips = Vec::new();
        for ip in listed {
            match ip.parse::<Ipv4Addr>() {
                Ok(ip) if service_cidr.contains(&ip) => cluster_ips.push(ip),
                Ok(ip) => plan.skipped.push((
                    key.clone(),
                    format!("ClusterIP {ip} is outside the service CIDR {service_cidr}"),
                )),
                // IPv6 ClusterIPs of dual-stack Services: the CNI network is IPv4 only.
                Err(_) => {}
            }
        }
        if cluster_ips.is_empty() {
            plan.skipped
                .push((key, "no IPv4 ClusterIP in the service CIDR".into()));
            continue;
        }
        if spec.external_ips.as_ref().is_some_and(|v| !v.is_empty()) {
            plan.skipped.push((
                key.clone(),
                "externalIPs are not served (ClusterIP, NodePort and LoadBalancer are)".into(),
            ));
        }
        let load_balancer = spec.type_.as_deref() == Some("LoadBalancer");
        if let (true, Some(class)) = (load_balancer, &spec.load_balancer_class) {
            plan.skipped.push((
                key.clone(),
                format!(
                    "loadBalancerClass {class}: its load balancer is that controller's, as with \
                     k3s's servicelb (its ClusterIP and NodePorts are served)"
                ),
            ));
        }
        let load_balancer = load_balancer && spec.load_balancer_class.is_none();
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s as u64))
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let service_slices = slices_by_service
            .get(&(namespace.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for port in spec.ports.iter().flatten() {
            let port_name = port.name.clone().unwrap_or_default();
            let Some(protocol) = Protocol::from_api(port.protocol.as_deref()) else {
                plan.skipped.push((
                    key.clone(),
                    format!(
                        "port {} uses protocol {}: only TCP and UDP are proxied",
                        port.port,
                        port.protocol.as_deref().unwrap_or("?")
                    ),
                ));
                continue;
            };
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            plan.ports.push(PortPlan {
                service: ServicePortName {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    port: port_name.clone(),
                },
                protocol,
                cluster_ips: cluster_ips.clone(),
                port: number,
                node_port: port
                    .node_port
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0),
                load_balancer,
                endpoints: endpoints_for(service_slices, &port_name, protocol, service_cidr),
                affinity,
            });
        }
    }
    plan
}

/// The endpoints of one service port: ready ones, or, when none is ready, the ones still
/// serving while they terminate. Sorted, without duplicates (an endpoint can appear in two
/// slices while the EndpointSlice controller moves it). Addresses inside the service CIDR are
/// dropped: they are ClusterIPs, which this proxy answers itself, so a hand-made EndpointSlice
/// pointing a Service at one (its own, or another's) would loop connections through the proxy
/// until its file descriptors run out (each hop opens a new connection to itself).
pub fn endpoints_for(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    service_cidr: Ipv4Net,
) -> Vec<SocketAddrV4> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        // The slice's number for this port: same name (unnamed = ""), same protocol.
        let Some(number) = slice.ports.iter().flatten().find_map(|p| {
            let same_name = p.name.as_deref().unwrap_or("") == port_name;
            let same_protocol = Protocol::from_api(p.protocol.as_deref()) == Some(protocol);
            (same_name && same_protocol)
                .then_some(p.port)
                .flatten()
                .and_then(|n| u16::try_from(n).ok())
        }) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            // The API: unset `ready` and `serving` mean ready/serving; unset `terminating`
            // means not terminating.
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<Ipv4Addr>() else {
                    continue;
                };
                if service_cidr.contains(&ip) {
                    continue;
                }
                let target = SocketAddrV4::new(ip, number);
                if is_ready {
                    ready.insert(target);
                } else if is_serving && is_terminating {
                    terminating.insert(target);
                }
            }
        }
    }
    if ready.is_empty() {
        terminating.into_iter().collect()
    } else {
        ready.into_iter().collect()
    }
}

/// One socket the proxy listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenKey {
    pub protocol: Protocol,
    pub addr: SocketAddrV4,
}

impl fmt::Display for ListenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol)
    }
}

/// What one socket forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub service: ServicePortName,
    pub endpoints: Vec<SocketAddrV4>,
    pub affinity: Option<Duration>,
}

/// The sockets the plans need, given this node's addresses: ClusterIP:port for every port,
/// node-address:NodePort for every node address, and node-address:port for LoadBalancer
/// Services (servicelb's hostPorts). Only ports with endpoints get sockets:
/// with no socket, a TCP client is refused and a UDP client gets "port unreachable" at once,
/// which is what kube-proxy's REJECT rule gives for a Service without endpoints.
///
/// NodePorts are bound per node address, not to 0.0.0.0: gVisor ignores IP_PKTINFO's source
/// address on send (ARCHITECTURE.md), so a UDP socket on 0.0.0.0 would answer a client from
/// the wrong address; and a wildcard socket would also claim that port on every ClusterIP.
pub fn bindings(plan: &Plan, node_addresses: &[Ipv4Addr]) -> BTreeMap<ListenKey, Binding> {
    // (socket, rank, service port): the lowest wins a socket two plans want. The API never
    // gives two Services one ClusterIP:port or one NodePort, but a LoadBalancer's port on the
    // node's addresses can collide with another LoadBalancer's or with a NodePort: NodePorts
    // (rank 0) keep theirs, and among LoadBalancers (rank 1) the first by namespace/name, so
    // the winner does not depend on the order the API listed them in (which would restart
    // the socket at every sync). servicelb's second klipper-lb pod on a taken hostPort stays
    // Pending; here the loser gets no socket on that address.
    let mut wanted: BTreeMap<ListenKey, (u8, &PortPlan)> = BTreeMap::new();
    for port in plan.ports.iter().filter(|p| !p.endpoints.is_empty()) {
        let mut addrs: Vec<(SocketAddrV4, u8)> = port
            .cluster_ips
            .iter()
            .map(|ip| (SocketAddrV4::new(*ip, port.port), 0))
            .collect();
        if let Some(node_port) = port.node_port {
            addrs.extend(
                node_addresses
                    .iter()
                    .map(|ip| (SocketAddrV4::new(*ip, node_port), 0)),
            );
        }
        if port.load_balancer {
            addrs.extend(
                node_addresses
                    .iter()
                    .map(|ip| (SocketAddrV4::new(*ip, port.port), 1)),
            );
        }
        for (addr, rank) in addrs {
            let key = ListenKey {
                protocol: port.protocol,
                addr,
            };
            match wanted.get(&key) {
                Some((held, holder)) if (*held, &holder.service) <= (rank, &port.service) => {}
                _ => {
                    wanted.insert(key, (rank, port));
                }
            }
        }
    }
    wanted
        .into_iter()
        .map(|(key, (_, port))| {
            let binding = Binding {
                service: port.service.clone(),
                endpoints: port.endpoints.clone(),
                affinity: port.affinity,
            };
            (key, binding)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn cidr() -> Ipv4Net {
        "10.43.0.0/16".parse().unwrap()
    }

    fn service(value: Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn slice(value: Value) -> EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    fn web_service() -> Service {
        service(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 8053}]}
        }))
    }

    fn web_slice(name: &str, endpoints: Value) -> EndpointSlice {
        slice(json!({
            "metadata": {"namespace": "default", "name": name,
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 8053, "protocol": "UDP"}],
            "endpoints": endpoints
        }))
    }

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn a_nodeport_service_gives_one_plan_per_port_with_its_own_endpoint_ports() {
        let slices = [web_slice(
            "web-1",
            json!([{"addresses": ["10.88.0.3"], "conditions": {"ready": true}},
                   {"addresses": ["10.88.0.4"]}]),
        )];
        let plan = plan([&web_service()], &slices, cidr());
        assert!(plan.skipped.is_empty(), "{:?}", plan.skipped);
        assert_eq!(plan.ports.len(), 2);
        let http = &plan.ports[0];
        assert_eq!(http.service.to_string(), "default/web:http");
        assert_eq!(http.protocol, Protocol::Tcp);
        assert_eq!(http.cluster_ips, vec![Ipv4Addr::new(10, 43, 0, 20)]);
        assert_eq!((http.port, http.node_port), (80, Some(30080)));
        // `ready` unset counts as ready.
        assert_eq!(
            http.endpoints,
            vec![addr("10.88.0.3:8080"), addr("10.88.0.4:8080")]
        );
        let dns = &plan.ports[1];
        assert_eq!(
            (dns.protocol, dns.port, dns.node_port),
            (Protocol::Udp, 53, None)
        );
        assert_eq!(
            dns.endpoints,
            vec![addr("10.88.0.3:8053"), addr("10.88.0.4:8053")]
        );
        assert_eq!(
            plan.cluster_ips(),
            BTreeSet::from([Ipv4Addr::new(10, 43, 0, 20)])
        );
    }

    #[test]
    fn not_ready_endpoints_are_dropped_and_terminating_ones_used_only_when_nothing_is_ready() {
        let slices = [web_slice(
            "web-1",
            json!([{"addresses": ["10.88.0.3"], "conditions": {"ready": true}},
                   {"addresses": ["10.88.0.4"], "conditions": {"ready": false}},
                   {"addresses": ["10.88.0.5"], "conditions": {"ready": false, "serving": true, "terminating": true}}]),
        )];
        let plan = plan([&web_service()], &slices, cidr());
        assert_eq!(plan.ports[0].endpoints, vec![addr("10.88.0.3:8080")]);

        let draining = [web_slice(
            "web-1",
            json!([{"addresses": ["10.88.0.4"], "conditions": {"ready": false}},
                   {"addresses": ["10.88.0.5"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                   {"addresses": ["10.88.0.6"], "conditions": {"ready": false, "serving": false, "terminating": true}}]),
        )];
        let plan = super::plan([&web_service()], &draining, cidr());
        assert_eq!(plan.ports[0].endpoints, vec![addr("10.88.0.5:8080")]);
    }

    #[test]
    fn endpoints_of_every_slice_of_the_service_are_merged_and_deduplicated() {
        let slices = [
            web_slice(
                "web-1",
                json!([{"addresses": ["10.88.0.4"]}, {"addresses": ["10.88.0.3"]}]),
            ),
            web_slice(
                "web-2",
                json!([{"addresses": ["10.88.0.3"]}, {"addresses": ["10.88.0.9"]}]),
            ),
            // Another service's slice, and a slice of another namespace, do not count.
            slice(
                json!({"metadata": {"namespace": "default", "name": "other-1",
                                      "labels": {"kubernetes.io/service-name": "other"}},
                         "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
                         "endpoints": [{"addresses": ["10.88.0.66"]}]}),
            ),
            slice(
                json!({"metadata": {"namespace": "kube-system", "name": "web-x",
                                      "labels": {"kubernetes.io/service-name": "web"}},
                         "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
                         "endpoints": [{"addresses": ["10.88.0.77"]}]}),
            ),
        ];
        let plan = plan([&web_service()], &slices, cidr());
        assert_eq!(
            plan.ports[0].endpoints,
            vec![
                addr("10.88.0.3:8080"),
                addr("10.88.0.4:8080"),
                addr("10.88.0.9:8080")
            ]
        );
    }

    #[test]
    fn ports_match_by_name_and_protocol_and_an_unnamed_port_matches_an_unnamed_one() {
        let svc = service(json!({
            "metadata": {"namespace": "ns", "name": "dns"},
            "spec": {"clusterIP": "10.43.0.10",
                     "ports": [{"port": 53, "protocol": "UDP"}]}
        }));
        let slices = [slice(json!({
            "metadata": {"namespace": "ns", "name": "dns-1", "labels": {"kubernetes.io/service-name": "dns"}},
            "addressType": "IPv4",
            // Same (empty) name, TCP: not this port. Then the UDP one.
            "ports": [{"port": 5300, "protocol": "TCP"}, {"name": "", "port": 5353, "protocol": "UDP"}],
            "endpoints": [{"addresses": ["10.88.0.8"]}]
        }))];
        let plan = plan([&svc], &slices, cidr());
        assert_eq!(plan.ports[0].service.to_string(), "ns/dns");
        assert_eq!(plan.ports[0].endpoints, vec![addr("10.88.0.8:5353")]);
    }

    #[test]
    fn ipv6_and_fqdn_slices_are_ignored() {
        let slices = [slice(json!({
            "metadata": {"namespace": "default", "name": "web-v6", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv6", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["fd00::3"]}]
        }))];
        assert!(plan([&web_service()], &slices, cidr()).ports[0]
            .endpoints
            .is_empty());
    }

    #[test]
    fn headless_externalname_sctp_and_out_of_range_services_are_not_proxied() {
        let services = [
            service(json!({"metadata": {"namespace": "a", "name": "headless"},
                           "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})),
            service(json!({"metadata": {"namespace": "a", "name": "ext"},
                           "spec": {"type": "ExternalName", "externalName": "example.org"}})),
            service(json!({"metadata": {"namespace": "a", "name": "sctp"},
                           "spec": {"clusterIP": "10.43.0.30", "ports": [{"port": 9, "protocol": "SCTP"}, {"port": 10}]}})),
            service(json!({"metadata": {"namespace": "a", "name": "far"},
                           "spec": {"clusterIP": "192.168.1.1", "ports": [{"port": 80}]}})),
            service(json!({"metadata": {"namespace": "a", "name": "v6"},
                           "spec": {"clusterIPs": ["fd00:43::1"], "ports": [{"port": 80}]}})),
        ];
        let plan = plan(&services, [], cidr());
        // Only the TCP port of "sctp" survives.
        assert_eq!(plan.ports.len(), 1);
        assert_eq!(plan.ports[0].service.name, "sctp");
        assert_eq!(plan.ports[0].port, 10);
        let reasons: Vec<String> = plan
            .skipped
            .iter()
            .map(|(k, r)| format!("{k}: {r}"))
            .collect();
        assert!(
            reasons.iter().any(|r| r.starts_with("a/ext: ExternalName")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r.contains("protocol SCTP")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("192.168.1.1 is outside the service CIDR")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("a/v6: no IPv4 ClusterIP")),
            "{reasons:?}"
        );
        assert!(
            !reasons.iter().any(|r| r.contains("headless")),
            "{reasons:?}"
        );
    }

    #[test]
    fn client_ip_affinity_takes_the_configured_timeout_or_the_default() {
        let mut svc = web_service();
        let spec = svc.spec.as_mut().unwrap();
        spec.session_affinity = Some("ClientIP".into());
        assert_eq!(
            plan([&svc], [], cidr()).ports[0].affinity,
            Some(DEFAULT_AFFINITY_TIMEOUT)
        );
        let spec = svc.spec.as_mut().unwrap();
        spec.session_affinity_config =
            serde_json::from_value(json!({"clientIP": {"timeoutSeconds": 60}})).unwrap();
        assert_eq!(
            plan([&svc], [], cidr()).ports[0].affinity,
            Some(Duration::from_secs(60))
        );
        assert_eq!(plan([&web_service()], [], cidr()).ports[0].affinity, None);
    }

    #[test]
    fn bindings_cover_clusterips_and_every_node_address_but_only_ports_with_endpoints() {
        let slices = [web_slice("web-1", json!([{"addresses": ["10.88.0.3"]}]))];
        let mut plan = plan([&web_service()], &slices, cidr());
        let nodes = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(10, 88, 0, 1)];
        let keys: Vec<String> = bindings(&plan, &nodes)
            .keys()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "10.43.0.20:80/TCP",
                "10.88.0.1:30080/TCP",
                "127.0.0.1:30080/TCP",
                "10.43.0.20:53/UDP",
            ]
        );
        let binding = &bindings(&plan, &nodes)[&ListenKey {
            protocol: Protocol::Tcp,
            addr: addr("10.88.0.1:30080"),
        }];
        assert_eq!(binding.service.to_string(), "default/web:http");
        assert_eq!(binding.endpoints, vec![addr("10.88.0.3:8080")]);

        // No endpoints: no socket, but the ClusterIP stays owned (so clients are refused).
        plan.ports[1].endpoints.clear();
        let keys: Vec<String> = bindings(&plan, &nodes)
            .keys()
            .map(|k| k.to_string())
            .collect();
        assert!(!keys.iter().any(|k| k.ends_with("/UDP")), "{keys:?}");
        assert!(plan.cluster_ips().contains(&Ipv4Addr::new(10, 43, 0, 20)));
    }

    fn lb_service(name: &str, port: u16, class: Option<&str>) -> Service {
        let mut spec = json!({"type": "LoadBalancer", "clusterIP": "10.43.0.30",
                 "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080, "nodePort": 31080}]});
        if let Some(class) = class {
            spec["loadBalancerClass"] = json!(class);
        }
        service(json!({"metadata": {"namespace": "default", "name": name}, "spec": spec}))
    }

    fn lb_slice(service: &str) -> EndpointSlice {
        slice(json!({
            "metadata": {"namespace": "default", "name": format!("{service}-1"),
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.88.0.3"]}]
        }))
    }

    fn keys(plan: &Plan, nodes: &[Ipv4Addr]) -> Vec<String> {
        bindings(plan, nodes)
            .iter()
            .map(|(k, b)| format!("{k} {}", b.service.name))
            .collect()
    }

    #[test]
    fn a_load_balancer_serves_its_port_on_every_node_address_besides_its_nodeport() {
        let plan = plan([&lb_service("lb", 8081, None)], &[lb_slice("lb")], cidr());
        assert!(plan.skipped.is_empty(), "{:?}", plan.skipped);
        assert!(plan.ports[0].load_balancer);
        let nodes = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(192, 168, 5, 2)];
        assert_eq!(
            keys(&plan, &nodes),
            [
                "10.43.0.30:8081/TCP lb",
                "127.0.0.1:8081/TCP lb",
                "127.0.0.1:31080/TCP lb",
                "192.168.5.2:8081/TCP lb",
                "192.168.5.2:31080/TCP lb",
            ]
        );
        // A NodePort Service is not a load balancer: no socket on the node at its port.
        let plan = super::plan([&web_service()], [], cidr());
        assert!(plan.ports.iter().all(|p| !p.load_balancer));
    }

    #[test]
    fn a_load_balancer_class_leaves_the_service_to_its_controller() {
        let plan = plan(
            [&lb_service("other", 8081, Some("example.com/lb"))],
            &[lb_slice("other")],
            cidr(),
        );
        assert!(!plan.ports[0].load_balancer);
        assert_eq!(plan.skipped.len(), 1);
        assert!(
            plan.skipped[0]
                .1
                .contains("loadBalancerClass example.com/lb"),
            "{:?}",
            plan.skipped
        );
        // Its ClusterIP and NodePort are still served, as kube-proxy serves them.
        let nodes = [Ipv4Addr::new(192, 168, 5, 2)];
        assert_eq!(
            keys(&plan, &nodes),
            ["10.43.0.30:8081/TCP other", "192.168.5.2:31080/TCP other"]
        );
    }

    #[test]
    fn colliding_load_balancer_ports_go_to_a_nodeport_first_then_the_first_service_by_name() {
        let mut b = lb_service("b", 8081, None);
        b.spec.as_mut().unwrap().cluster_ip = Some("10.43.0.31".into());
        b.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(31081);
        // c's port is a's NodePort.
        let mut c = lb_service("c", 31080, None);
        c.spec.as_mut().unwrap().cluster_ip = Some("10.43.0.32".into());
        c.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(31082);
        let a = lb_service("a", 8081, None);
        let slices = [lb_slice("a"), lb_slice("b"), lb_slice("c")];
        let nodes = [Ipv4Addr::new(192, 168, 5, 2)];
        let wanted = [
            "10.43.0.30:8081/TCP a",
            "10.43.0.31:8081/TCP b",
            "10.43.0.32:31080/TCP c",
            "192.168.5.2:8081/TCP a",
            "192.168.5.2:31080/TCP a",
            "192.168.5.2:31081/TCP b",
            "192.168.5.2:31082/TCP c",
        ];
        // Whatever order the API lists them in.
        for order in [[&a, &b, &c], [&c, &b, &a], [&b, &c, &a]] {
            let plan = plan(order, &slices, cidr());
            assert_eq!(keys(&plan, &nodes), wanted);
        }
    }

    #[test]
    fn endpoints_inside_the_service_cidr_are_dropped_so_nothing_loops_into_the_proxy() {
        // A hand-made slice pointing web at its own ClusterIP, and at another Service's.
        let slices = [web_slice(
            "web-1",
            json!([{"addresses": ["10.43.0.20"]}, {"addresses": ["10.43.0.10"]},
                   {"addresses": ["10.88.0.3"]}]),
        )];
        let plan = plan([&web_service()], &slices, cidr());
        assert_eq!(plan.ports[0].endpoints, vec![addr("10.88.0.3:8080")]);
        let only_loops = [web_slice("web-1", json!([{"addresses": ["10.43.0.20"]}]))];
        let plan = super::plan([&web_service()], &only_loops, cidr());
        assert!(plan.ports[0].endpoints.is_empty());
    }
}
