//! What an existing install reports: `status` (daemons, API, node, pods, routes, the service
//! proxy) and `logs`.

use std::path::Path;

use anyhow::{bail, Result};

use crate::k3s_settings::{self, Checked};
use crate::kubectl::Kubectl;
use crate::services::{self, CONTAINERD, K3S, SVCPROXY};
use crate::state::State;
use crate::supervise;
use crate::userenv;

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
    let manifest = crate::copy_bundle::installed(&paths).map(|installed| installed.manifest);
    match &manifest {
        Ok(manifest) => {
            for component in &manifest.components {
                println!("  component {} {}", component.name, component.version);
            }
        }
        Err(error) => println!("  components: unknown ({error:#})"),
    }
    let mut healthy = true;
    let mut checked = None;
    if services::has_k3s(&paths) {
        // As the next start will check them: the config files may have changed since.
        match Checked::new(
            &paths.bin(K3S),
            state.k3s_command(),
            &state.k3s_flags,
            &state.env,
        ) {
            Ok(settings) => {
                for line in k3s_settings::describe(&settings.settings) {
                    println!("k3s {line}");
                }
                checked = Some(settings);
            }
            Err(error) => {
                healthy = false;
                println!("k3s settings: {error:#} (the next start refuses them)");
            }
        }
    }
    let containerd = services::daemon(&paths, CONTAINERD);
    match containerd.running_pid() {
        None if state.control_plane_only => {
            println!("containerd: not used (control-plane-only: no kubelet, no pods)")
        }
        Some(pid) => {
            let socket = if services::containerd::healthy(&paths) {
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
                let api_ready = Kubectl::admin(&paths).api_ready();
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
        let service_proxy = services::svcproxy::service_proxy(&paths, state);
        println!("service proxy: {}", service_proxy.describe());
        if service_proxy.is_svcproxy() {
            match services::daemon(&paths, SVCPROXY).running_pid() {
                Some(pid) => println!(
                    "svcproxy: running (pid {pid}), {}",
                    svcproxy_summary(&services::svcproxy::status_file(&paths))
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
        if let Some(settings) = &checked {
            let helm = crate::helm::HelmController::decide(settings, manifest.as_ref().ok());
            println!("helm-controller: {}", helm.describe());
        }
        println!(
            "kubeconfig: {}\ntools: {}",
            paths.kubeconfig().display(),
            userenv::export_line(&paths, !state.control_plane_only)
        );
        print_tool_links(state);
    } else {
        println!("k3s: not in this bundle");
    }
    // What each daemon's keeper saw: restarts, a crash loop (keeper.rs).
    for name in [CONTAINERD, K3S, SVCPROXY, services::NODE_ROUTES] {
        let daemon = services::daemon(&paths, name);
        let Some(kept) = daemon.keeper_status() else {
            continue;
        };
        if kept.last_exit.is_some() {
            println!("{name}: {}", kept.describe());
            healthy &= !kept.crash_loop();
        }
    }
    for mount in &state.mounts {
        println!("mounted by install: {}", mount.display());
    }
    if !healthy {
        bail!("not everything is running: `start` starts it; `logs` shows why it stopped");
    }
    Ok(())
}

fn print_tool_links(state: &State) {
    if !state.tool_links.is_empty() {
        let links: Vec<String> = state
            .tool_links
            .iter()
            .map(|l| l.display().to_string())
            .collect();
        println!(
            "tools on PATH: {} (wrappers of this install's)",
            links.join(", ")
        );
    }
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
            let ready = Kubectl::with(&paths, kubeconfig).node_ready(&node);
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
    print_tool_links(state);
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
    let kubectl = Kubectl::admin(paths);
    let nodes = kubectl
        .jsonpath(
            &["get", "nodes"],
            "{range .items[*]}{.metadata.name} \
             {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
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
    let phases = kubectl
        .jsonpath(
            &["get", "pods", "--all-namespaces"],
            "{range .items[*]}{.status.phase}{\"\\n\"}{end}",
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

pub fn logs(state: &State, only: Option<Log>, lines: usize, follow: bool) -> Result<()> {
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
    let mut followed = Vec::new();
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
        followed.push(file);
    }
    if follow {
        follow_files(&followed)?;
    }
    Ok(())
}

/// Prints what is appended to `files` from now on, reopening a file that was rotated (its inode
/// changed or it shrank), with a `==> file <==` line when the output switches files.
fn follow_files(files: &[std::path::PathBuf]) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    struct Followed {
        path: std::path::PathBuf,
        file: Option<std::fs::File>,
        inode: u64,
        offset: u64,
    }
    let mut followed: Vec<Followed> = files
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok();
            Followed {
                path: path.clone(),
                file: std::fs::File::open(path).ok(),
                inode: meta.as_ref().map_or(0, MetadataExt::ino),
                offset: meta.map_or(0, |m| m.len()),
            }
        })
        .collect();
    let mut last = files.len().saturating_sub(1);
    let mut out = std::io::stdout();
    loop {
        for (index, f) in followed.iter_mut().enumerate() {
            let Ok(meta) = std::fs::metadata(&f.path) else {
                continue;
            };
            if meta.ino() != f.inode || meta.len() < f.offset {
                // Rotated: the new file is read from its start.
                f.file = std::fs::File::open(&f.path).ok();
                f.inode = meta.ino();
                f.offset = 0;
            }
            let Some(file) = f.file.as_mut() else {
                continue;
            };
            if meta.len() <= f.offset {
                continue;
            }
            file.seek(SeekFrom::Start(f.offset))?;
            let mut buf = Vec::new();
            file.take(meta.len() - f.offset).read_to_end(&mut buf)?;
            f.offset += buf.len() as u64;
            if index != last && files.len() > 1 {
                writeln!(out, "\n==> {} <==", f.path.display())?;
                last = index;
            }
            out.write_all(&buf)?;
            out.flush()?;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
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
