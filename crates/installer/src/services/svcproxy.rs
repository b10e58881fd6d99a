//! svcproxy, the service proxy where kube-proxy cannot run (docs/services.md): who serves
//! Services on this install, svcproxy's command line, its start and the wait for its first sync.
//!
//! Never under the launcher: it reads nothing under /proc/sys, and a traced proxy would pay a
//! ptrace stop on every path syscall of every forwarded connection.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::wait::Started;
use super::{daemon, daemon_env, SVCPROXY};
use crate::cluster::ServiceProxy;
use crate::cni_host;
use crate::k3s_settings::Checked;
use crate::node_ip;
use crate::paths::Paths;
use crate::state::State;

/// svcproxy's first sync needs the API's first lists of Services and EndpointSlices.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Who serves Services on this install (cluster.rs decides; the prefix says whether svcproxy
/// is there).
pub fn service_proxy(paths: &Paths, state: &State) -> ServiceProxy {
    ServiceProxy::decide(
        state.control_plane_only,
        state.kube_proxy_off.as_deref(),
        paths.bin(SVCPROXY).is_file(),
    )
}

/// Where svcproxy writes its JSON summary at every sync (removed when it exits).
pub fn status_file(paths: &Paths) -> PathBuf {
    paths.run_dir().join("svcproxy-status.json")
}

/// What svcproxy does on this install.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Serves ClusterIP, NodePort and LoadBalancer Services in place of kube-proxy.
    Services,
    /// Only writes LoadBalancer Services' status: kube-proxy serves them.
    LoadBalancerStatus,
}

/// svcproxy's role here, or None where it does not run. Where kube-proxy serves Services, a
/// server's svcproxy still gives LoadBalancer Services the node's address, as servicelb would
/// (its image is not shipped); kube-proxy's rules then serve that address (docs/services.md).
/// An agent's could not write the status.
fn role(paths: &Paths, state: &State) -> Option<Role> {
    match service_proxy(paths, state) {
        ServiceProxy::Svcproxy { .. } => Some(Role::Services),
        ServiceProxy::KubeProxy if !state.is_agent() && paths.bin(SVCPROXY).is_file() => {
            Some(Role::LoadBalancerStatus)
        }
        _ => None,
    }
}

/// Starts svcproxy where it has a role (else does nothing) and waits for its first sync.
pub fn start(paths: &Paths, state: &State, settings: &Checked) -> Result<()> {
    let Some(role) = role(paths, state) else {
        return Ok(());
    };
    let daemon = daemon(paths, SVCPROXY);
    if let Some(pid) = daemon.running_pid() {
        println!("svcproxy already running (pid {pid})");
        return Ok(());
    }
    let status_file = status_file(paths);
    let _ = fs::remove_file(&status_file);
    let bridge = pods_bridge(paths);
    let args = args(paths, state, settings, role, &bridge);
    let pid = daemon.start(&paths.bin(SVCPROXY), &args, &daemon_env(paths))?;
    let role_text = match role {
        Role::LoadBalancerStatus => "for LoadBalancer status only (kube-proxy serves Services)",
        Role::Services => "in place of kube-proxy",
    };
    println!(
        "svcproxy started (pid {pid}) {role_text}, log {}",
        daemon.log_file.display()
    );
    let started = Started { paths, daemon, pid };
    started.wait_for("svcproxy's first sync of Services", SYNC_TIMEOUT, || {
        status_file.is_file()
    })?;
    match role {
        Role::LoadBalancerStatus => println!(
            "svcproxy gives LoadBalancer Services the node's address; kube-proxy serves them"
        ),
        Role::Services => println!(
            "svcproxy is serving ClusterIP, NodePort and LoadBalancer Services (ClusterIPs on \
             {bridge})"
        ),
    }
    Ok(())
}

/// The pods' bridge, from our CNI config: svcproxy puts the ClusterIPs on it, the one place
/// gVisor delivers a pod's packets to (docs/services.md).
fn pods_bridge(paths: &Paths) -> String {
    cni_host::bridges_in(&paths.cni_conf_dir())
        .into_iter()
        .next()
        .unwrap_or_else(|| "gvcni0".to_string())
}

fn args(paths: &Paths, state: &State, settings: &Checked, role: Role, bridge: &str) -> Vec<String> {
    // An agent has no admin kubeconfig. It has kube-proxy's, which k3s's agent writes whether
    // or not kube-proxy runs: user system:kube-proxy, ClusterRole system:node-proxier, which
    // may list and watch Services and EndpointSlices, all that svcproxy reads.
    let kubeconfig = if state.is_agent() {
        paths.k3s_data_dir().join("agent/kubeproxy.kubeconfig")
    } else {
        paths.kubeconfig()
    };
    let mut args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--bridge={bridge}"),
        format!("--status-file={}", status_file(paths).display()),
    ];
    // k3s's --service-cidr where the user set one (svcproxy's default is k3s's, 10.43.0.0/16).
    // On an agent the server decides it; an agent's own flags cannot say.
    if let Some(cidr) = settings.value("service-cidr") {
        args.push(format!("--service-cidr={cidr}"));
    }
    if role == Role::LoadBalancerStatus {
        args.push("--load-balancer-status-only".to_string());
    } else if let Some(address) = node_ip::current_ipv4() {
        // On the bridge beside the ClusterIPs, so pods reach the node's own ports (the
        // kubelet's, which metrics-server scrapes) by the node IP (svcproxy --help).
        args.push(format!("--node-ip={address}"));
    }
    args
}
