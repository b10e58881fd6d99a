//! Command line.

use clap::{Parser, ValueEnum};
use ipnet::Ipv4Net;
use std::path::PathBuf;

/// Service proxy for k3s where kube-proxy cannot run (gVisor sandboxes: no iptables NAT
/// matches, no nftables, no IPVS, often no CAP_NET_RAW).
///
/// It watches Services and EndpointSlices through the Kubernetes API, puts every ClusterIP
/// on the CNI bridge as a /32, and listens on ClusterIP:port (TCP and UDP) and on each node
/// address:NodePort (and, for LoadBalancer Services, on each node address:port, as k3s's
/// servicelb does), forwarding every new connection or UDP flow to a ready endpoint, in
/// turn. Endpoints that stop being ready get no new traffic from the next sync on (a watch
/// event, so well under a second). Clients that reach a Service through it appear to the
/// endpoint as coming from the bridge's gateway address.
///
/// On plain Linux, k3s's own kube-proxy is the one to use; see docs/services.md.
#[derive(Debug, Parser)]
#[command(name = "svcproxy", version)]
pub struct Args {
    /// kubeconfig to reach the API with (the one k3s writes).
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: PathBuf,

    /// The CNI bridge the pods are attached to; ClusterIPs are added to it. Created (and
    /// later adopted by the CNI plugin) when it does not exist yet.
    #[arg(long, default_value = "gvcni0", value_name = "NAME")]
    pub bridge: String,

    /// This node's address (k3s's node IP), also put on the bridge as a /32, so that pods reach
    /// the node's own ports by it: the kubelet's 10250 (metrics-server scrapes it there),
    /// hostNetwork pods. gVisor's netstack delivers a packet that arrived on the bridge only to
    /// an address of the bridge (docs/services.md); without it a pod's connection to the node
    /// IP times out in gvisor-2025 and the current gVisor alike.
    #[arg(long, value_name = "IPV4")]
    pub node_ip: Option<std::net::Ipv4Addr>,

    /// k3s's --service-cidr. Only /32s inside it are ever added to or removed from the bridge.
    #[arg(long, default_value = "10.43.0.0/16", value_name = "CIDR")]
    pub service_cidr: Ipv4Net,

    /// Serve NodePorts and LoadBalancer ports only on the node addresses inside these CIDRs
    /// (comma-separated), as kube-proxy's --nodeport-addresses; by default on every local
    /// IPv4 address (loopback and the bridge's gateway included), as kube-proxy's default.
    #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
    pub nodeport_addresses: Vec<Ipv4Net>,

    /// Seconds between full syncs (besides the sync after each API change): repairs removed
    /// addresses, binds on new node addresses, retries failed binds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub resync: u64,

    /// Seconds a UDP flow (one client address to one endpoint) lives without traffic.
    #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub udp_idle_timeout: u64,

    /// LoadBalancer Services' status.loadBalancer.ingress (the node addresses, as k3s's
    /// servicelb writes them): `auto` writes it where these credentials may patch
    /// services/status (a server's admin kubeconfig, not an agent's kube-proxy one; asked
    /// once), `never` only serves the ports.
    #[arg(long, value_enum, default_value_t = LoadBalancerStatus::Auto, value_name = "WHEN")]
    pub load_balancer_status: LoadBalancerStatus,

    /// Serve nothing, only write LoadBalancer Services' status: for a node where kube-proxy
    /// serves Services and k3s's servicelb is off. kube-proxy then serves the Service's port
    /// on the address written (the node's), as it does for any LoadBalancer ingress IP. The
    /// bridge and its addresses are not touched.
    #[arg(long, conflicts_with = "load_balancer_status")]
    pub load_balancer_status_only: bool,

    /// Most UDP flows one listening socket keeps (each holds a socket); past it the least
    /// recently used flow is closed for a new client's.
    #[arg(long, default_value_t = 4096, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_udp_flows: u64,

    /// Most UDP flows of one client address per listening socket; past it that client's least
    /// recently used flow is closed (a pod cannot push the other clients out).
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_udp_flows_per_source: u64,

    /// Seconds a proxied TCP connection lives without a byte either way (default 24 h,
    /// kube-proxy's conntrack timeout for established connections). Both sides also get TCP
    /// keepalive once quiet for a minute, so a vanished peer is noticed within about 3 minutes.
    #[arg(long, default_value_t = 86400, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub tcp_idle_timeout: u64,

    /// Most TCP connections through the proxy; past it new ones are reset. Default: as many as
    /// the open-file limit leaves room for (two descriptors each, 1024 kept for the rest).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tcp_connections: Option<u64>,

    /// Most TCP connections from one client address; past it that client's new ones are reset.
    /// At most half of --max-tcp-connections, so one client never takes them all.
    #[arg(long, default_value_t = 4096, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tcp_connections_per_source: u64,

    /// Write a JSON summary here at every sync (removed at exit).
    #[arg(long, value_name = "PATH")]
    pub status_file: Option<PathBuf>,

    /// Log filter: error, warn, info (changes only), debug (every socket and address), or a
    /// tracing filter such as `svcproxy=debug,kube=info`.
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadBalancerStatus {
    Auto,
    Never,
}
