//! One sync: API state in, the node made to match. Runs after every watch event (debounced)
//! and every `--resync` seconds; each run computes the whole wanted state and converges to
//! it, so a missed event, a recreated bridge or a new node address is repaired at the next
//! run without special cases.
//!
//! Order: ClusterIPs are put on the bridge before sockets are bound to them; sockets are then
//! started, updated or stopped. Changes are logged once, as they happen; a sync that changes
//! nothing logs nothing.

use crate::addresses::{self, ClusterIps};
use crate::listeners::Listeners;
use crate::loadbalancer::Role;
use crate::log::Throttle;
use crate::model::{self, Plan, PortPlan, Protocol, ServicePortName};
use crate::status::Status;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct Reconciler {
    service_cidr: Ipv4Net,
    /// `--nodeport-addresses`: empty for every local address.
    nodeport_addresses: Vec<Ipv4Net>,
    /// None with --load-balancer-status-only: nothing is served, only the plan is made.
    cluster_ips: Option<ClusterIps>,
    listeners: Listeners,
    /// The previous sync's plans, to log only what changed.
    previous: BTreeMap<(ServicePortName, Protocol), PortPlan>,
    /// Skip reasons already logged.
    skipped_logged: BTreeSet<(String, String)>,
    address_errors: Throttle,
    /// The last sync's address errors, for the status file.
    address_error_list: Vec<String>,
    status_file: Option<PathBuf>,
    status: Status,
}

impl Reconciler {
    pub fn new(
        service_cidr: Ipv4Net,
        nodeport_addresses: Vec<Ipv4Net>,
        cluster_ips: Option<ClusterIps>,
        listeners: Listeners,
        status_file: Option<PathBuf>,
        status: Status,
    ) -> Self {
        Reconciler {
            service_cidr,
            nodeport_addresses,
            cluster_ips,
            listeners,
            previous: BTreeMap::new(),
            skipped_logged: BTreeSet::new(),
            address_errors: Throttle::new(Duration::from_secs(60)),
            address_error_list: Vec::new(),
            status_file,
            status,
        }
    }

    /// One sync; returns the plan it served, for the LoadBalancer status and the status file.
    pub fn sync(&mut self, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Plan {
        let mut plan = model::plan(
            services.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
            self.service_cidr,
        );
        if self.cluster_ips.is_none() {
            // Status only: the LoadBalancer ports are kube-proxy's to serve.
            plan.ports.retain(|p| p.load_balancer);
            plan.skipped.clear();
            self.log_changes(&plan.ports);
            return plan;
        }
        self.log_changes(&plan.ports);
        let cluster_ips = self.cluster_ips.as_ref().expect("checked above");
        for skipped in &plan.skipped {
            if self.skipped_logged.insert(skipped.clone()) {
                tracing::info!("{}: not proxied: {}", skipped.0, skipped.1);
            }
        }

        let mut address_errors = Vec::new();
        match cluster_ips.sync(&plan.cluster_ips()) {
            Ok(report) => {
                for addr in &report.added {
                    tracing::debug!("ClusterIP {addr} added to the bridge");
                }
                for addr in &report.removed {
                    tracing::debug!("ClusterIP {addr} removed from the bridge");
                }
                for (addr, error) in &report.failed {
                    address_errors.push(format!("{addr}: {error}"));
                }
            }
            Err(e) => address_errors.push(format!("{e:#}")),
        }
        if !address_errors.is_empty() {
            if let Some(held) = self.address_errors.allow() {
                tracing::warn!(
                    "ClusterIP addresses: {} ({held} earlier reports not logged)",
                    address_errors.join("; ")
                );
            }
        }

        let node_addresses = match netif::addresses(None) {
            Ok(all) => addresses::node_addresses(&all, self.service_cidr, &self.nodeport_addresses),
            Err(e) => {
                tracing::warn!("listing this node's addresses for NodePorts: {e}");
                Vec::new()
            }
        };
        let wanted = model::bindings(&plan, &node_addresses);
        let report = self.listeners.apply(&wanted);
        for key in &report.started {
            tracing::debug!("listening on {key} for {}", wanted[key].service);
        }
        for key in &report.stopped {
            tracing::debug!("stopped listening on {key}");
        }
        for (key, error) in &report.new_failures {
            tracing::warn!(
                "cannot listen on {key} for {}: {error} (retrying at every sync)",
                wanted[key].service
            );
        }

        self.address_error_list = address_errors;
        plan
    }

    /// The status file, after a sync and the LoadBalancer status it led to.
    pub fn write_status(&mut self, plan: &Plan, load_balancer_role: &Role) {
        self.status.update(
            plan,
            &self.listeners,
            &self.address_error_list,
            load_balancer_role,
        );
        if let Some(path) = &self.status_file {
            if let Err(e) = self.status.write(path) {
                tracing::warn!("writing the status file {}: {e:#}", path.display());
            }
        }
    }

    /// On shutdown: close every socket and take the ClusterIPs off the bridge, so nothing
    /// answers for Services while no proxy runs (clients then fail fast instead of hanging).
    pub fn shutdown(&mut self) {
        self.listeners.clear();
        match self.cluster_ips.as_ref().map(|c| c.clear()) {
            Some(Ok(report)) if !report.failed.is_empty() => {
                tracing::warn!("removing ClusterIPs at exit: {:?}", report.failed)
            }
            Some(Err(e)) => tracing::warn!("removing ClusterIPs at exit: {e:#}"),
            _ => {}
        }
        if let Some(path) = &self.status_file {
            let _ = std::fs::remove_file(path);
        }
    }

    fn log_changes(&mut self, ports: &[PortPlan]) {
        let current: BTreeMap<(ServicePortName, Protocol), PortPlan> = ports
            .iter()
            .map(|p| ((p.service.clone(), p.protocol), p.clone()))
            .collect();
        for (key, port) in &current {
            if self.previous.get(key) != Some(port) {
                tracing::info!("{}", describe(port));
            }
        }
        for (service, protocol) in self.previous.keys() {
            if !current.contains_key(&(service.clone(), *protocol)) {
                tracing::info!("{service} {protocol}: removed");
            }
        }
        self.previous = current;
    }
}

/// `default/web:http 10.43.0.20:80/TCP nodePort 30080 -> 10.88.0.3:8080, 10.88.0.4:8080`
fn describe(port: &PortPlan) -> String {
    let ips: Vec<String> = port
        .cluster_ips
        .iter()
        .map(|ip| format!("{ip}:{}", port.port))
        .collect();
    let mut line = format!("{} {}/{}", port.service, ips.join(","), port.protocol);
    if let Some(node_port) = port.node_port {
        line.push_str(&format!(" nodePort {node_port}"));
    }
    if port.load_balancer {
        line.push_str(&format!(" loadBalancer :{}", port.port));
    }
    if port.endpoints.is_empty() {
        line.push_str(" -> no endpoints (connections are refused)");
    } else {
        const SHOWN: usize = 8;
        let shown: Vec<String> = port
            .endpoints
            .iter()
            .take(SHOWN)
            .map(|e| e.to_string())
            .collect();
        line.push_str(&format!(" -> {}", shown.join(", ")));
        if port.endpoints.len() > SHOWN {
            line.push_str(&format!(" and {} more", port.endpoints.len() - SHOWN));
        }
    }
    line
}
