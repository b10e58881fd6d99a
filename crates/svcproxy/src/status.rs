//! `--status-file`: a small JSON summary rewritten at every sync, for `./install doctor` and
//! for people. It says which proxy runs, since when it last synced, and what it serves.
//!
//! ```json
//! {"proxy": "svcproxy", "pid": 4242, "bridge": "gvcni0", "serviceCIDR": "10.43.0.0/16",
//!  "startedAt": 1764300000, "lastSync": 1764300120, "services": 3, "servicePorts": 4,
//!  "clusterIPs": 3, "listeners": 5, "tcpConnections": 2, "withoutEndpoints": ["default/web:http"],
//!  "failingListeners": {"10.88.0.1:30080/TCP": "Address in use (os error 98)"},
//!  "addressErrors": [], "loadBalancers": 1,
//!  "loadBalancerStatus": "written by this proxy"}
//! ```
//! `lastSync` advances every `--resync` seconds while the proxy is healthy.

use crate::listeners::Listeners;
use crate::loadbalancer::Role;
use crate::model::Plan;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    proxy: &'static str,
    pid: u32,
    bridge: String,
    #[serde(rename = "serviceCIDR")]
    service_cidr: String,
    started_at: u64,
    last_sync: u64,
    services: usize,
    service_ports: usize,
    #[serde(rename = "clusterIPs")]
    cluster_ips: usize,
    listeners: usize,
    /// TCP connections open through the proxy at the sync.
    tcp_connections: usize,
    without_endpoints: Vec<String>,
    failing_listeners: BTreeMap<String, String>,
    address_errors: Vec<String>,
    /// LoadBalancer Services served (their ports on the node's addresses).
    load_balancers: usize,
    /// Whether this proxy writes their status.loadBalancer, or why not.
    load_balancer_status: String,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Status {
    pub fn new(bridge: &str, service_cidr: &str) -> Self {
        Status {
            proxy: "svcproxy",
            pid: std::process::id(),
            bridge: bridge.to_string(),
            service_cidr: service_cidr.to_string(),
            started_at: now(),
            last_sync: 0,
            services: 0,
            service_ports: 0,
            cluster_ips: 0,
            listeners: 0,
            tcp_connections: 0,
            without_endpoints: Vec::new(),
            failing_listeners: BTreeMap::new(),
            address_errors: Vec::new(),
            load_balancers: 0,
            load_balancer_status: String::new(),
        }
    }

    pub fn update(
        &mut self,
        plan: &Plan,
        listeners: &Listeners,
        address_errors: &[String],
        load_balancer_role: &Role,
    ) {
        self.last_sync = now();
        self.services = plan
            .ports
            .iter()
            .map(|p| (&p.service.namespace, &p.service.name))
            .collect::<BTreeSet<_>>()
            .len();
        self.service_ports = plan.ports.len();
        self.cluster_ips = plan.cluster_ips().len();
        self.listeners = listeners.running();
        self.tcp_connections = listeners.tcp_connections();
        self.without_endpoints = plan
            .ports
            .iter()
            .filter(|p| p.endpoints.is_empty())
            .map(|p| format!("{} {}", p.service, p.protocol))
            .collect();
        self.failing_listeners = listeners
            .failing()
            .iter()
            .map(|(k, e)| (k.to_string(), e.clone()))
            .collect();
        self.address_errors = address_errors.to_vec();
        self.load_balancers = plan
            .ports
            .iter()
            .filter(|p| p.load_balancer)
            .map(|p| (&p.service.namespace, &p.service.name))
            .collect::<BTreeSet<_>>()
            .len();
        self.load_balancer_status = match load_balancer_role {
            Role::Unknown => "not known yet: asking the API whether this proxy may write it".into(),
            Role::Writer => "written by this proxy".into(),
            Role::Reader(why) => format!("not written by this proxy: {why}"),
        };
    }

    /// Written to a temporary file and renamed, so a reader never sees half of it.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }
}
