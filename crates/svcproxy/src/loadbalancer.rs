//! `status.loadBalancer` of the LoadBalancer Services this proxy serves, written as k3s's
//! servicelb writes it (k3s v1.34.1, pkg/cloudprovider/servicelb.go), so `kubectl get svc`
//! shows the EXTERNAL-IP a k3s user expects:
//! - the ingress is the addresses of the nodes that serve the Service's ports: every Ready
//!   node (svcproxy runs on each node of the install, as servicelb's DaemonSet does), or, once
//!   any node carries the label `svccontroller.k3s.cattle.io/enablelb`, only those labelled
//!   `true` (and, for a Service labelled `svccontroller.k3s.cattle.io/lbpool=P`, in pool P);
//! - with `externalTrafficPolicy: Local`, only nodes with a ready endpoint of the Service;
//! - the nodes' ExternalIPs when any of them has one, else their InternalIPs; IPv4 only (the
//!   pods' network is IPv4), sorted; `{ip}` entries without `ipMode`, like servicelb's;
//! - Services with a `loadBalancerClass` are another controller's and are not touched.
//!
//! Who writes: only a proxy whose credentials may patch `services/status`, asked once through
//! a SelfSubjectAccessReview. On a server that is the admin kubeconfig; an agent's proxy runs
//! as system:kube-proxy (ClusterRole system:node-proxier), which may not, so it only serves
//! the ports on its node and leaves the status to the server's. Several servers compute the
//! same status from the same objects, so they agree.

use crate::log::Throttle;
use crate::model::{Plan, SERVICE_NAME_LABEL};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// servicelb's node label: once any node has it, only nodes with `true` serve LoadBalancers.
pub const ENABLE_LB_LABEL: &str = "svccontroller.k3s.cattle.io/enablelb";
/// servicelb's pool label, on nodes and on Services.
pub const LB_POOL_LABEL: &str = "svccontroller.k3s.cattle.io/lbpool";

/// The ingress addresses `service` should have, from the nodes and the Service's
/// EndpointSlices (servicelb's `getStatus` and `podIPs`, with "a node running a ready
/// klipper-lb pod" read as "a Ready node allowed by the labels").
pub fn ingress(service: &Service, nodes: &[&Node], slices: &[&EndpointSlice]) -> Vec<Ipv4Addr> {
    let spec = service.spec.as_ref();
    let labelled = nodes.iter().any(|n| label(n, ENABLE_LB_LABEL).is_some());
    let pool = service
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LB_POOL_LABEL))
        .filter(|p| !p.is_empty());
    let local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
    let name = service.metadata.name.as_deref().unwrap_or("");
    let namespace = service.metadata.namespace.as_deref().unwrap_or("");
    // Nodes with a ready pod endpoint of the Service (for `Local`).
    let endpoint_nodes: BTreeSet<&str> = slices
        .iter()
        .filter(|s| {
            s.metadata.namespace.as_deref().unwrap_or("") == namespace
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|n| n == name)
        })
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| {
            e.target_ref.as_ref().and_then(|t| t.kind.as_deref()) == Some("Pod")
                && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
        })
        .filter_map(|e| e.node_name.as_deref())
        .collect();

    let mut external = BTreeSet::new();
    let mut internal = BTreeSet::new();
    for node in nodes {
        if !is_ready(node)
            || (labelled && label(node, ENABLE_LB_LABEL) != Some("true"))
            || (labelled && pool.is_some_and(|p| label(node, LB_POOL_LABEL) != Some(p)))
            || (local && !endpoint_nodes.contains(node.metadata.name.as_deref().unwrap_or("")))
        {
            continue;
        }
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for address in addresses.into_iter().flatten() {
            let Ok(ip) = address.address.parse::<Ipv4Addr>() else {
                continue;
            };
            match address.type_.as_str() {
                "ExternalIP" => external.insert(ip),
                "InternalIP" => internal.insert(ip),
                _ => false,
            };
        }
    }
    let chosen = if external.is_empty() {
        internal
    } else {
        external
    };
    chosen.into_iter().collect()
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The ingress IPs a Service has now, if it has only IPs (a hostname entry is someone else's
/// doing and is replaced like any other difference).
fn current(service: &Service) -> Option<Vec<Ipv4Addr>> {
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let mut out = Vec::new();
    for entry in ingress.into_iter().flatten() {
        if entry.hostname.is_some() || entry.ip_mode.is_some() || entry.ports.is_some() {
            return None;
        }
        out.push(entry.ip.as_deref()?.parse().ok()?);
    }
    out.sort();
    Some(out)
}

/// Whether this proxy writes the status, once known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not asked yet, or the question failed (the API is not up): asked again next sync.
    Unknown,
    Writer,
    /// Not allowed or turned off, with the reason for the status file and the log.
    Reader(String),
}

pub struct StatusWriter {
    client: Client,
    role: Role,
    /// What was last patched per Service (namespace, name) and when: the watch shows a
    /// patch a moment later, and a sync in between must not patch again.
    written: BTreeMap<(String, String), (Vec<Ipv4Addr>, Instant)>,
    errors: Throttle,
}

/// A patch is not repeated for this long while the watch has not shown it yet.
const PATCH_SETTLE: Duration = Duration::from_secs(5);
/// One API call may take this long; the sync loop waits for it.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl StatusWriter {
    /// `enabled` false: `--load-balancer-status=never`; the ports are served, no status written.
    pub fn new(client: Client, enabled: bool) -> Self {
        StatusWriter {
            client,
            role: if enabled {
                Role::Unknown
            } else {
                Role::Reader("turned off (--load-balancer-status=never)".into())
            },
            written: BTreeMap::new(),
            errors: Throttle::new(Duration::from_secs(60)),
        }
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    /// Asks the API whether these credentials may patch services/status.
    async fn ask(&mut self) {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some("patch".into()),
                    resource: Some("services".into()),
                    subresource: Some("status".into()),
                    group: Some(String::new()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        match tokio::time::timeout(CALL_TIMEOUT, api.create(&PostParams::default(), &review)).await
        {
            Ok(Ok(answer)) => {
                let status = answer.status.unwrap_or_default();
                self.role = if status.allowed {
                    tracing::info!(
                        "LoadBalancer Services: this proxy writes their status.loadBalancer (it may patch services/status)"
                    );
                    Role::Writer
                } else {
                    let why = format!(
                        "these credentials may not patch services/status{}: the server's svcproxy writes it, this one serves the ports on its node",
                        status
                            .reason
                            .filter(|r| !r.is_empty())
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    );
                    tracing::info!("LoadBalancer Services: {why}");
                    Role::Reader(why)
                };
            }
            Ok(Err(e)) => self.warn(&format!(
                "asking whether this proxy may write LoadBalancer status: {}",
                crate::log::one_line(&e)
            )),
            Err(_) => {
                self.warn("asking whether this proxy may write LoadBalancer status: timed out")
            }
        }
    }

    fn warn(&self, message: &str) {
        if let Some(held) = self.errors.allow() {
            tracing::warn!("{message} (retrying at every sync; {held} such errors not logged)");
        }
    }

    /// Brings the status of every LoadBalancer Service in `plan` to what [`ingress`] says.
    /// Returns how many were patched.
    pub async fn sync(
        &mut self,
        plan: &Plan,
        services: &[Arc<Service>],
        nodes: &[Arc<Node>],
        slices: &[Arc<EndpointSlice>],
    ) -> usize {
        if self.role == Role::Unknown {
            self.ask().await;
        }
        if self.role != Role::Writer {
            return 0;
        }
        let ours: BTreeSet<(&str, &str)> = plan
            .ports
            .iter()
            .filter(|p| p.load_balancer)
            .map(|p| (p.service.namespace.as_str(), p.service.name.as_str()))
            .collect();
        let nodes: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
        let slices: Vec<&EndpointSlice> = slices.iter().map(|s| s.as_ref()).collect();
        let mut patched = 0;
        let mut seen = BTreeSet::new();
        for service in services {
            let namespace = service.metadata.namespace.clone().unwrap_or_default();
            let name = service.metadata.name.clone().unwrap_or_default();
            if !ours.contains(&(namespace.as_str(), name.as_str())) {
                continue;
            }
            let key = (namespace, name);
            seen.insert(key.clone());
            let wanted = ingress(service, &nodes, &slices);
            if current(service).as_ref() == Some(&wanted) {
                self.written.remove(&key);
                continue;
            }
            if let Some((last, at)) = self.written.get(&key) {
                if *last == wanted && at.elapsed() < PATCH_SETTLE {
                    continue;
                }
            }
            let body = if wanted.is_empty() {
                json!({"status": {"loadBalancer": {"ingress": null}}})
            } else {
                let entries: Vec<_> = wanted.iter().map(|ip| json!({"ip": ip})).collect();
                json!({"status": {"loadBalancer": {"ingress": entries}}})
            };
            let api: Api<Service> = Api::namespaced(self.client.clone(), &key.0);
            let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
            let call = api.patch_status(&key.1, &params, &patch);
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(_)) => {
                    let shown: Vec<String> = wanted.iter().map(|ip| ip.to_string()).collect();
                    tracing::info!(
                        "{}/{}: LoadBalancer ingress [{}]{}",
                        key.0,
                        key.1,
                        shown.join(", "),
                        if wanted.is_empty() {
                            " (no Ready node serves it)"
                        } else {
                            ""
                        }
                    );
                    self.written.insert(key, (wanted, Instant::now()));
                    patched += 1;
                }
                Ok(Err(e)) => self.warn(&format!(
                    "{}/{}: writing the LoadBalancer status: {}",
                    key.0,
                    key.1,
                    crate::log::one_line(&e)
                )),
                Err(_) => self.warn(&format!(
                    "{}/{}: writing the LoadBalancer status: timed out",
                    key.0, key.1
                )),
            }
        }
        self.written.retain(|k, _| seen.contains(k));
        patched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn node(name: &str, ready: bool, addresses: Value, labels: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "addresses": addresses
            }
        }))
        .unwrap()
    }

    fn internal(name: &str, ip: &str) -> Node {
        node(
            name,
            true,
            json!([{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]),
            json!({}),
        )
    }

    fn lb(extra: Value) -> Service {
        let mut value = json!({
            "metadata": {"namespace": "default", "name": "web", "labels": {}},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.30",
                     "ports": [{"port": 80, "nodePort": 31080}]}
        });
        for (k, v) in extra.as_object().unwrap() {
            value["spec"][k] = v.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    fn ips(list: &[&str]) -> Vec<Ipv4Addr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn every_ready_nodes_internal_ip_sorted_and_ipv4_only() {
        let a = internal("a", "192.168.5.3");
        let b = node(
            "b",
            true,
            json!([{"type": "InternalIP", "address": "192.168.5.2"},
                   {"type": "InternalIP", "address": "fd00::2"}]),
            json!({}),
        );
        let down = node(
            "down",
            false,
            json!([{"type": "InternalIP", "address": "192.168.5.9"}]),
            json!({}),
        );
        assert_eq!(
            ingress(&lb(json!({})), &[&a, &b, &down], &[]),
            ips(&["192.168.5.2", "192.168.5.3"])
        );
        assert!(ingress(&lb(json!({})), &[&down], &[]).is_empty());
    }

    #[test]
    fn external_ips_win_over_internal_ones_when_any_node_has_one() {
        let a = internal("a", "192.168.5.3");
        let b = node(
            "b",
            true,
            json!([{"type": "InternalIP", "address": "192.168.5.2"},
                   {"type": "ExternalIP", "address": "203.0.113.7"}]),
            json!({}),
        );
        assert_eq!(
            ingress(&lb(json!({})), &[&a, &b], &[]),
            ips(&["203.0.113.7"])
        );
    }

    #[test]
    fn the_enablelb_label_and_pools_select_nodes_as_servicelb_does() {
        let a = node(
            "a",
            true,
            json!([{"type": "InternalIP", "address": "192.168.5.3"}]),
            json!({ENABLE_LB_LABEL: "true", LB_POOL_LABEL: "p1"}),
        );
        let b = node(
            "b",
            true,
            json!([{"type": "InternalIP", "address": "192.168.5.4"}]),
            json!({ENABLE_LB_LABEL: "false"}),
        );
        let c = internal("c", "192.168.5.5");
        let d = node(
            "d",
            true,
            json!([{"type": "InternalIP", "address": "192.168.5.6"}]),
            json!({ENABLE_LB_LABEL: "true", LB_POOL_LABEL: "p2"}),
        );
        let service = lb(json!({}));
        assert_eq!(
            ingress(&service, &[&a, &b, &c, &d], &[]),
            ips(&["192.168.5.3", "192.168.5.6"])
        );
        let mut pooled = service.clone();
        pooled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(LB_POOL_LABEL.into(), "p2".into());
        assert_eq!(
            ingress(&pooled, &[&a, &b, &c, &d], &[]),
            ips(&["192.168.5.6"])
        );
        // Without any labelled node, pools mean nothing.
        assert_eq!(ingress(&pooled, &[&c], &[]), ips(&["192.168.5.5"]));
    }

    #[test]
    fn local_traffic_policy_lists_only_nodes_with_a_ready_pod_endpoint() {
        let a = internal("a", "192.168.5.3");
        let b = internal("b", "192.168.5.4");
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web-1",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.88.0.3"], "nodeName": "b", "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "web-x"}},
                {"addresses": ["10.88.0.4"], "nodeName": "a", "conditions": {"ready": false},
                 "targetRef": {"kind": "Pod", "name": "web-y"}}
            ]
        }))
        .unwrap();
        let local = lb(json!({"externalTrafficPolicy": "Local"}));
        assert_eq!(ingress(&local, &[&a, &b], &[&slice]), ips(&["192.168.5.4"]));
        assert!(ingress(&local, &[&a, &b], &[]).is_empty());
        let cluster = lb(json!({"externalTrafficPolicy": "Cluster"}));
        assert_eq!(
            ingress(&cluster, &[&a, &b], &[&slice]),
            ips(&["192.168.5.3", "192.168.5.4"])
        );
    }

    #[test]
    fn the_current_status_is_read_as_sorted_ips_and_anything_else_differs() {
        let mut service = lb(json!({}));
        assert_eq!(current(&service), Some(vec![]));
        service.status = serde_json::from_value(json!({"loadBalancer": {"ingress":
            [{"ip": "192.168.5.4"}, {"ip": "192.168.5.3"}]}}))
        .unwrap();
        assert_eq!(
            current(&service),
            Some(ips(&["192.168.5.3", "192.168.5.4"]))
        );
        service.status = serde_json::from_value(json!({"loadBalancer": {"ingress":
            [{"hostname": "lb.example"}]}}))
        .unwrap();
        assert_eq!(current(&service), None);
    }
}
