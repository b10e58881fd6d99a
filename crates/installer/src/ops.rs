//! Subcommands on an existing install: start, stop, status, logs, uninstall.

use std::path::Path;

use anyhow::{bail, Result};

use crate::cni_host;
use crate::loopback;
use crate::mounts;
use crate::node_ip;
use crate::pod_logs;
use crate::probe::{self, HostFacts};
use crate::services::{self, CONTAINERD, K3S, SVCPROXY};
use crate::state::State;
use crate::supervise;
use crate::userenv;

/// Starts containerd, imports the images, then k3s (when the bundle has it), and prints the
/// line that puts kubectl, crictl and ctr on PATH.
pub fn start(state: &mut State) -> Result<()> {
    let paths = state.paths();
    restore_host_changes(state)?;
    // k3s, and containerd's CRI streaming server (exec, attach), listen on 127.0.0.1.
    loopback::ensure_up(state)?;
    if state.control_plane_only && services::has_k3s(&paths) {
        // No kubelet, so no pods: containerd is not needed.
        services::start_k3s(&paths, state)?;
        println!("to use kubectl:\n  {}", userenv::export_line(&paths, false));
        return Ok(());
    }
    let containerd_was_running = services::daemon(&paths, CONTAINERD).running_pid().is_some();
    services::start_containerd(&paths)?;
    if !containerd_was_running {
        services::import_images(&paths, &state.snapshotter)?;
    }
    if services::has_k3s(&paths) {
        services::start_k3s(&paths, state)?;
        services::start_node_routes(&paths)?;
        if state.is_agent() {
            // An agent has no admin kubeconfig: kubectl works on the server.
            println!(
                "agent node {} is Ready; use kubectl on the server. crictl and ctr here:\n  {}",
                state.node_name(),
                userenv::agent_export_line(&paths)
            );
            return Ok(());
        }
        println!(
            "to use kubectl, crictl and ctr:\n  {}",
            userenv::export_line(&paths, true)
        );
    } else {
        println!(
            "this bundle has no k3s binary: containerd is running on {} for CRI clients \
             (e.g. crictl --runtime-endpoint unix://{})",
            paths.containerd_socket().display(),
            paths.containerd_socket().display()
        );
    }
    Ok(())
}

/// After a sandbox restart /dev and /sys are fresh: the install's mounts are gone while the
/// prefix and data dir (on the persistent root) remain. Forget the lost host changes and make
/// them again, recording the new ones.
fn restore_host_changes(state: &mut State) -> Result<()> {
    let mounted = probe::read_mounts();
    let is_mounted = |path: &Path| mounted.iter().any(|m| m.mount_point == path);
    if state.mounts.iter().all(|p| is_mounted(p)) {
        return Ok(());
    }
    println!("mounts made at install are gone (was the sandbox restarted?): making them again");
    for mount in state.mounts.iter().rev().filter(|p| is_mounted(p)) {
        let _ = mounts::unmount(mount);
    }
    state.mounts.clear();
    for file in state.created_files.drain(..) {
        let _ = std::fs::remove_file(file);
    }
    state.created_dirs.retain(|dir| dir.exists());
    state.save()?;
    let facts = HostFacts::probe(&[]);
    if !facts.has_dev_kmsg {
        mounts::provide_dev_kmsg(state)?;
        println!("/dev/kmsg: bind-mounted /dev/null");
    }
    if facts.needs_cgroup_mounts() {
        let outcome = mounts::mount_cgroups(state)?;
        println!("cgroup v1 mounted: {}", outcome.mounted.join(","));
    }
    Ok(())
}

pub fn stop(state: &State) -> Result<()> {
    let report = services::stop_all(&state.paths());
    if report.is_empty() {
        println!("nothing was running");
    }
    for line in report {
        println!("{line}");
    }
    Ok(())
}

/// Prints what runs, its health, and versions. Returns an error (exit 1) when something that
/// should run does not.
pub fn status(state: &State) -> Result<()> {
    let paths = state.paths();
    println!(
        "k3s-gvisor {} at {} (data {})",
        state.bundle_version,
        paths.prefix.display(),
        paths.data_dir.display()
    );
    if let Some(manifest) = services::installed_manifest(&paths) {
        for component in &manifest.components {
            println!("  component {} {}", component.name, component.version);
        }
    }
    let mut healthy = true;
    let containerd = services::daemon(&paths, CONTAINERD);
    match containerd.running_pid() {
        None if state.control_plane_only => {
            println!("containerd: not used (control-plane-only: no kubelet, no pods)")
        }
        Some(pid) => {
            let socket = if services::containerd_healthy(&paths) {
                "socket answers"
            } else {
                healthy = false;
                "socket NOT answering"
            };
            println!("containerd: running (pid {pid}), {socket}");
        }
        None => {
            healthy = false;
            println!("containerd: stopped");
        }
    }
    if services::has_k3s(&paths) && state.is_agent() {
        healthy &= agent_status(state);
    } else if services::has_k3s(&paths) {
        match services::daemon(&paths, K3S).running_pid() {
            Some(pid) => {
                let api_ready = services::kubectl(&paths, &["get", "--raw=/readyz"]).is_ok();
                println!(
                    "k3s: running (pid {pid}), API {}",
                    if api_ready { "ready" } else { "NOT ready" }
                );
                healthy &= api_ready;
                if api_ready {
                    healthy &= cluster_status(&paths, state);
                }
            }
            None => {
                healthy = false;
                println!("k3s: stopped");
            }
        }
        if let Some(reason) = &state.kube_proxy_off {
            println!("kube-proxy: off ({reason})");
        }
        let service_proxy = services::service_proxy(&paths, state);
        println!("service proxy: {}", service_proxy.describe());
        if service_proxy.is_svcproxy() {
            match services::daemon(&paths, SVCPROXY).running_pid() {
                Some(pid) => println!(
                    "svcproxy: running (pid {pid}), {}",
                    svcproxy_summary(&services::svcproxy_status_file(&paths))
                ),
                None => {
                    healthy = false;
                    println!("svcproxy: stopped (ClusterIP and NodePort Services do not route)");
                }
            }
        }
        for addon in &state.addons_off {
            println!("add-on {}: off ({})", addon.name, addon.reason);
        }
        println!(
            "kubeconfig: {}\ntools: {}",
            paths.kubeconfig().display(),
            userenv::export_line(&paths, !state.control_plane_only)
        );
    } else {
        println!("k3s: not in this bundle");
    }
    for mount in &state.mounts {
        println!("mounted by install: {}", mount.display());
    }
    if !healthy {
        bail!("not everything is running: `start` starts it; `logs` shows why it stopped");
    }
    Ok(())
}

/// An agent's k3s, its node (asked with the kubelet's credentials: an agent has no admin
/// kubeconfig) and the node routes. False when something is down.
fn agent_status(state: &State) -> bool {
    let paths = state.paths();
    let server = state.server.as_deref().unwrap_or("?");
    let node = state.node_name();
    let mut healthy = true;
    match services::daemon(&paths, K3S).running_pid() {
        Some(pid) => {
            let kubeconfig = crate::node_routes::kubelet_kubeconfig(&paths);
            let ready = services::node_ready(&paths, &kubeconfig, &node);
            println!("k3s agent: running (pid {pid}), joined {server}");
            println!(
                "node {node}: {}",
                match ready {
                    Some(true) => "Ready",
                    Some(false) => "NOT Ready",
                    None => "unknown (the server does not answer)",
                }
            );
            healthy &= ready == Some(true);
        }
        None => {
            healthy = false;
            println!("k3s agent: stopped (joined {server})");
        }
    }
    healthy &= routes_status(&paths);
    println!("tools: {}", userenv::agent_export_line(&paths));
    healthy
}

/// The node-routes daemon and the routes it keeps; false when it is not running.
fn routes_status(paths: &crate::paths::Paths) -> bool {
    let running = services::daemon(paths, services::NODE_ROUTES).running_pid();
    let record = crate::node_routes::load(paths);
    let routes: Vec<String> = record.routes.iter().map(ToString::to_string).collect();
    println!(
        "node-routes: {}, routes to other nodes' pods: {}",
        running.map_or("stopped".to_string(), |pid| format!("running (pid {pid})")),
        if routes.is_empty() {
            "none".to_string()
        } else {
            routes.join(", ")
        }
    );
    running.is_some()
}

/// Prints each node's Ready condition and the pods per phase; false when a node is not Ready
/// (or, with an agent, when there is no node at all).
fn cluster_status(paths: &crate::paths::Paths, state: &State) -> bool {
    let nodes = services::kubectl(
        paths,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} \
             {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ],
    )
    .unwrap_or_default();
    let mut all_ready = true;
    let mut any = false;
    for line in nodes.lines() {
        let (name, ready) = line.split_once(' ').unwrap_or((line, ""));
        any = true;
        let ready = ready.trim() == "True";
        all_ready &= ready;
        println!("node {name}: {}", if ready { "Ready" } else { "NOT Ready" });
    }
    if !any {
        println!("nodes: none registered");
    }
    let phases = services::kubectl(
        paths,
        &[
            "get",
            "pods",
            "--all-namespaces",
            "-o",
            "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
        ],
    )
    .unwrap_or_default();
    println!("pods (all namespaces): {}", count_phases(&phases));
    if state.control_plane_only {
        return true;
    }
    let routes = routes_status(paths);
    any && all_ready && routes
}

/// What svcproxy's status file says, in a few words: "3 Services, 5 listeners, last sync 4 s
/// ago" (plus any listener it cannot open), or why there is nothing to say.
fn svcproxy_summary(status_file: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(status_file) else {
        return format!("no first sync yet ({} absent)", status_file.display());
    };
    let Ok(status) = serde_json::from_str::<serde_json::Value>(&text) else {
        return format!("{} is not JSON", status_file.display());
    };
    let number = |key: &str| status[key].as_u64().unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut summary = format!(
        "{} Services, {} listeners, last sync {} s ago",
        number("services"),
        number("listeners"),
        now.saturating_sub(number("lastSync"))
    );
    if let Some(failing) = status["failingListeners"]
        .as_object()
        .filter(|f| !f.is_empty())
    {
        let failing: Vec<String> = failing
            .iter()
            .map(|(listener, error)| format!("{listener}: {}", error.as_str().unwrap_or("?")))
            .collect();
        summary.push_str(&format!("; cannot listen on {}", failing.join(", ")));
    }
    summary
}

/// "3 Running, 1 Pending" from one phase per line; "none" when empty.
fn count_phases(lines: &str) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for phase in lines.lines().map(str::trim).filter(|l| !l.is_empty()) {
        *counts.entry(phase).or_default() += 1;
    }
    if counts.is_empty() {
        return "none".to_string();
    }
    counts
        .iter()
        .map(|(phase, n)| format!("{n} {phase}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The logs `./install logs` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Log {
    Containerd,
    K3s,
    /// The service proxy (only where it runs in place of kube-proxy).
    Svcproxy,
    /// The routes to other nodes' pod ranges it added or removed.
    NodeRoutes,
    /// What the launcher redirected for k3s (only where k3s runs under it).
    LauncherK3s,
}

impl Log {
    fn file_name(self) -> String {
        match self {
            Log::Containerd => CONTAINERD.to_string(),
            Log::K3s => K3S.to_string(),
            Log::Svcproxy => SVCPROXY.to_string(),
            Log::NodeRoutes => services::NODE_ROUTES.to_string(),
            Log::LauncherK3s => format!("launcher-{K3S}"),
        }
    }
}

pub fn logs(state: &State, only: Option<Log>, lines: usize) -> Result<()> {
    let paths = state.paths();
    let chosen = match only {
        Some(log) => vec![log],
        None => vec![
            Log::Containerd,
            Log::K3s,
            Log::Svcproxy,
            Log::NodeRoutes,
            Log::LauncherK3s,
        ],
    };
    for log in chosen {
        let file = paths.log_file(&log.file_name());
        if !file.exists() {
            if only.is_some() {
                bail!("no log {} (nothing has written it yet)", file.display());
            }
            continue;
        }
        println!("==> {} <==", file.display());
        println!("{}", supervise::tail(&file, lines));
    }
    Ok(())
}

/// Undoes the install: stops everything, unmounts in reverse order, removes what was created.
pub fn uninstall(state: &State) -> Result<()> {
    let paths = state.paths();
    stop(state)?;
    let mut problems = Vec::new();
    let leftovers = mounts::remove_new_pod_netns(&state.netns_before)
        .into_iter()
        .chain(mounts::unmount_under(&[&state.prefix, &state.data_dir]));
    for line in leftovers {
        println!("{line}");
    }
    for mount in state.mounts.iter().rev() {
        match mounts::unmount(mount) {
            Ok(()) => println!("unmounted {}", mount.display()),
            Err(error) => problems.push(format!("cannot unmount {}: {error}", mount.display())),
        }
    }
    let links = pod_logs::remove_links(Path::new(pod_logs::CONTAINER_LOGS), &paths.data_dir);
    if links > 0 {
        println!(
            "removed {links} container log link(s) from {}",
            pod_logs::CONTAINER_LOGS
        );
    }
    let (removed, failed) = crate::node_routes::remove_all(&paths);
    removed.iter().for_each(|line| println!("{line}"));
    problems.extend(failed);
    problems.extend(node_ip::remove_added_addresses(state));
    problems.extend(loopback::restore(state));
    let sandboxes = services::pod_sandboxes(&paths);
    let results = cni_host::remove_results(
        &paths.cni_conf_dir(),
        &sandboxes,
        Path::new(cni_host::RESULTS_DIR),
    );
    if results > 0 {
        println!(
            "removed {results} cached CNI result(s) from {}",
            cni_host::RESULTS_DIR
        );
    }
    let bridges = cni_host::bridges_in(&paths.cni_conf_dir());
    let (removed, failed) = cni_host::remove_new(&bridges, &state.links_before);
    removed.iter().for_each(|line| println!("{line}"));
    problems.extend(failed);
    for file in state.created_files.iter().rev() {
        if let Err(error) = std::fs::remove_file(file) {
            problems.push(format!("cannot remove {}: {error}", file.display()));
        }
    }
    // k3s links its default kubeconfig location to the one it was told to write.
    let default_kubeconfig = Path::new(K3S_DEFAULT_KUBECONFIG);
    if std::fs::read_link(default_kubeconfig).is_ok_and(|target| target == paths.kubeconfig()) {
        let _ = std::fs::remove_file(default_kubeconfig);
    }
    for path in &state.absent_before {
        if path == Path::new("/etc/rancher") {
            // Written by our k3s (the node's join password); nothing else writes it.
            let _ = std::fs::remove_file("/etc/rancher/node/password");
        }
        remove_empty_dirs(path);
    }
    for dir in state.created_dirs.iter().rev() {
        let ours = *dir == state.prefix || *dir == state.data_dir;
        let result = if ours {
            std::fs::remove_dir_all(dir)
        } else {
            std::fs::remove_dir(dir)
        };
        if let Err(error) = result {
            if error.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("cannot remove {}: {error}", dir.display()));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "uninstall left things behind:\n  - {}",
            problems.join("\n  - ")
        );
    }
    println!(
        "uninstalled: removed {} and {}",
        paths.prefix.display(),
        paths.data_dir.display()
    );
    if let Some(server) = &state.server {
        // Only the server can remove a node from the cluster; the agent has no rights to.
        println!(
            "node {} stays in the cluster of {server} as NotReady: on the server, run \
             `kubectl delete node {}`",
            state.node_name(),
            state.node_name()
        );
    }
    Ok(())
}

/// Where k3s (as root) would write its kubeconfig; given --write-kubeconfig elsewhere, it makes
/// this a symlink to that file.
const K3S_DEFAULT_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// Removes `dir` and its subdirectories if they hold no files. Host paths like /run/containerd
/// and /var/lib/cni may be shared with another containerd that started after install, so only
/// the empty skeleton our daemons left is removed, never anyone's files.
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_phases_are_counted() {
        assert_eq!(count_phases(""), "none");
        assert_eq!(
            count_phases("Running\nPending\nRunning\n"),
            "1 Pending, 2 Running"
        );
    }
}
