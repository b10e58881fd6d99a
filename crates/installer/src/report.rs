//! What an existing install reports: `status` (daemons, API, node, pods, routes, the service
//! proxy) and `logs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use bundle_format::Snapshotter;
use serde::Serialize;

use crate::cluster::TurnedOff;

use crate::k3s_settings::{self, Checked};
use crate::kubectl::Kubectl;
use crate::services::{self, CONTAINERD, K3S, SVCPROXY};
use crate::state::{LauncherUse, State};
use crate::supervise;
use crate::userenv;

/// Prints what runs, its health, and versions (`--json`: [`Report`] as JSON, for scripts and
/// the e2e's driver). Returns an error (exit 1) when something that should run does not.
pub fn status(state: &State, json: bool) -> Result<()> {
    let report = Report::gather(state);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    if !report.healthy {
        bail!("not everything is running: `start` starts it; `logs` shows why it stopped");
    }
    Ok(())
}

/// What `status` finds: the state file's decisions, each daemon as its pid file and keeper see
/// it, and what the API says. `status` prints it as text, `status --json` as JSON (the field
/// names are the contract: docs/installer.md, "status").
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The version of this JSON's layout; a field renamed or removed makes it 2.
    pub schema: u32,
    pub bundle_name: String,
    pub bundle_version: String,
    pub prefix: PathBuf,
    pub data_dir: PathBuf,
    /// `server` or `agent`.
    pub role: &'static str,
    pub control_plane_only: bool,
    /// An agent's server URL.
    pub server: Option<String>,
    pub node_name: String,
    /// The installed manifest's components; `components_error` when it cannot be read.
    pub components: Vec<ComponentVersion>,
    pub components_error: Option<String>,
    pub snapshotter: Snapshotter,
    pub launcher: LauncherReport,
    pub procsys_overlay: ProcsysReport,
    /// /proc/sys files that refused writes at install (served by the overlay or launcher).
    pub read_only_procsys: Vec<String>,
    /// The workaround lines install printed.
    pub workarounds: Vec<String>,
    /// Whether the install has k3s (early bundles carry containerd only).
    pub has_k3s: bool,
    /// The user's k3s settings, checked as the next start will; `k3s_settings_error` when that
    /// start would refuse them.
    pub k3s_settings: Option<k3s_settings::Summary>,
    pub k3s_settings_error: Option<String>,
    /// containerd, k3s, svcproxy, node-routes: each whose pid file or keeper record exists.
    pub daemons: BTreeMap<String, DaemonReport>,
    /// Whether containerd's socket answers (None: containerd is not running).
    pub containerd_socket_answers: Option<bool>,
    /// A server's `/readyz` (None: k3s is not running, or an agent).
    pub api_ready: Option<bool>,
    /// Each node and its Ready condition (None: the API could not say). A server lists all
    /// nodes, an agent its own.
    pub nodes: Vec<NodeReport>,
    /// Pods per phase in all namespaces (a server whose API is ready).
    pub pods: BTreeMap<String, usize>,
    /// Why kube-proxy is off (None: it runs).
    pub kube_proxy_off: Option<String>,
    /// Who serves Services (None without k3s, or on an agent).
    pub service_proxy: Option<ServiceProxyReport>,
    /// svcproxy's own status file (services, listeners, lastSync, failingListeners).
    pub svcproxy_status: Option<serde_json::Value>,
    #[serde(skip)]
    pub svcproxy_status_file: PathBuf,
    pub addons_off: Vec<TurnedOff>,
    /// helm-controller's line (a server whose settings check).
    pub helm_controller: Option<String>,
    /// The routes node-routes keeps to other nodes' pods.
    pub node_routes: Vec<String>,
    pub kubeconfig: PathBuf,
    /// The line that puts the tools on PATH (None without k3s).
    pub tools: Option<String>,
    /// The tool wrappers on PATH the install wrote.
    pub tool_links: Vec<PathBuf>,
    /// Everything the install mounted, in mount order.
    pub mounts: Vec<PathBuf>,
    /// False when something that should run does not (status exits 1).
    pub healthy: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentVersion {
    pub name: String,
    pub version: String,
}

/// Whether k3s runs under the ptrace launcher.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LauncherReport {
    /// `--launcher` at install: auto, always, never.
    pub choice: LauncherUse,
    /// The process k3s's keeper runs is bin/launcher (None: k3s is not running).
    pub k3s_under_launcher: Option<bool>,
}

/// The /proc/sys overlay (procsys_overlay.rs).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcsysReport {
    pub laid: bool,
    /// This install's mounts on /proc/sys.
    pub mounts: Vec<PathBuf>,
}

/// One daemon: its keeper (the pid file's process) and what the keeper records.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaemonReport {
    pub running: bool,
    /// The keeper's pid, from the pid file, while it runs.
    pub keeper_pid: Option<i32>,
    /// The process the keeper runs now (the daemon, or the launcher in front of k3s) and its
    /// executable.
    pub pid: Option<i32>,
    pub exe: Option<PathBuf>,
    /// Times the keeper started it again after it exited on its own.
    pub restarts: u32,
    pub crash_loop: bool,
    /// How it last exited on its own ("was killed by SIGKILL") and when (Unix seconds).
    pub last_exit: Option<String>,
    pub last_exit_at: Option<u64>,
    /// The keeper's phrase (status's text line), "" when it never exited.
    #[serde(skip)]
    pub describe: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub name: String,
    pub ready: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceProxyReport {
    /// `kube-proxy`, `svcproxy` or `none`.
    pub name: &'static str,
    /// The line install, status and doctor print.
    pub describe: String,
}

/// The daemons status reports, in its order.
const DAEMONS: [&str; 4] = [CONTAINERD, K3S, SVCPROXY, services::NODE_ROUTES];

impl Report {
    pub fn gather(state: &State) -> Report {
        let paths = state.paths();
        let mut r = Report {
            schema: 1,
            bundle_name: state.bundle_name.clone(),
            bundle_version: state.bundle_version.clone(),
            prefix: paths.prefix.clone(),
            data_dir: paths.data_dir.clone(),
            role: if state.is_agent() { "agent" } else { "server" },
            control_plane_only: state.control_plane_only,
            server: state.server.clone(),
            node_name: state.node_name(),
            snapshotter: state.snapshotter,
            read_only_procsys: state.read_only_procsys.clone(),
            workarounds: state.workarounds.clone(),
            has_k3s: services::has_k3s(&paths),
            kube_proxy_off: state.kube_proxy_off.clone(),
            addons_off: state.addons_off.clone(),
            kubeconfig: paths.kubeconfig(),
            tool_links: state.tool_links.clone(),
            mounts: state.mounts.clone(),
            procsys_overlay: ProcsysReport {
                laid: crate::procsys_overlay::is_laid(state),
                mounts: state
                    .mounts
                    .iter()
                    .filter(|m| m.starts_with("/proc/sys"))
                    .cloned()
                    .collect(),
            },
            healthy: true,
            components: Vec::new(),
            components_error: None,
            launcher: LauncherReport::default(),
            k3s_settings: None,
            k3s_settings_error: None,
            daemons: BTreeMap::new(),
            containerd_socket_answers: None,
            api_ready: None,
            nodes: Vec::new(),
            pods: BTreeMap::new(),
            service_proxy: None,
            svcproxy_status: None,
            svcproxy_status_file: services::svcproxy::status_file(&paths),
            helm_controller: None,
            node_routes: Vec::new(),
            tools: None,
        };
        let manifest = crate::copy_bundle::installed(&paths).map(|installed| installed.manifest);
        match &manifest {
            Ok(manifest) => {
                r.components = manifest
                    .components
                    .iter()
                    .map(|c| ComponentVersion {
                        name: c.name.clone(),
                        version: c.version.clone(),
                    })
                    .collect()
            }
            Err(error) => r.components_error = Some(format!("{error:#}")),
        }
        for name in DAEMONS {
            let daemon = services::daemon(&paths, name);
            let keeper_pid = daemon.running_pid();
            let kept = daemon.keeper_status();
            if keeper_pid.is_none() && kept.is_none() && !daemon.pid_file.exists() {
                continue;
            }
            let kept = kept.unwrap_or_default();
            let pid = keeper_pid.and(Some(kept.pid)).filter(|&pid| pid > 0);
            r.daemons.insert(
                name.to_string(),
                DaemonReport {
                    running: keeper_pid.is_some(),
                    keeper_pid,
                    pid,
                    exe: pid.and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok()),
                    restarts: kept.restarts,
                    crash_loop: kept.crash_loop(),
                    last_exit: kept.last_exit.clone(),
                    last_exit_at: kept.last_exit_at,
                    describe: kept.describe(),
                },
            );
        }
        let running = |r: &Report, name: &str| r.daemons.get(name).and_then(|d| d.keeper_pid);
        let mut checked = None;
        if r.has_k3s {
            // As the next start will check them: the config files may have changed since.
            match Checked::new(
                &paths.bin(K3S),
                state.k3s_command(),
                &state.k3s_flags,
                &state.env,
            ) {
                Ok(settings) => {
                    r.k3s_settings = Some(k3s_settings::summary(&settings.settings));
                    checked = Some(settings);
                }
                Err(error) => {
                    r.healthy = false;
                    r.k3s_settings_error = Some(format!("{error:#}"));
                }
            }
        }
        if running(&r, CONTAINERD).is_some() {
            let answers = services::containerd::healthy(&paths);
            r.containerd_socket_answers = Some(answers);
            r.healthy &= answers;
        } else if !state.control_plane_only {
            r.healthy = false;
        }
        if running(&r, K3S).is_some() {
            let launcher = paths.bin("launcher");
            r.launcher.k3s_under_launcher = r.daemons[K3S].exe.as_ref().map(|e| *e == launcher);
        }
        r.launcher.choice = state.launcher;
        if r.has_k3s && state.is_agent() {
            r.tools = Some(userenv::agent_export_line(&paths));
            match running(&r, K3S) {
                Some(_) => {
                    let kubeconfig = crate::node_routes::kubelet_kubeconfig(&paths);
                    let ready = Kubectl::with(&paths, kubeconfig).node_ready(&r.node_name);
                    r.nodes.push(NodeReport {
                        name: r.node_name.clone(),
                        ready,
                    });
                    r.healthy &= ready == Some(true);
                }
                None => r.healthy = false,
            }
            r.healthy &= running(&r, services::NODE_ROUTES).is_some();
        } else if r.has_k3s {
            match running(&r, K3S) {
                Some(_) => {
                    let kubectl = Kubectl::admin(&paths);
                    let api_ready = kubectl.api_ready();
                    r.api_ready = Some(api_ready);
                    r.healthy &= api_ready;
                    if api_ready {
                        r.healthy &= r.ask_cluster(&kubectl, state);
                    }
                }
                None => r.healthy = false,
            }
            let service_proxy = services::svcproxy::service_proxy(&paths, state);
            r.service_proxy = Some(ServiceProxyReport {
                name: match service_proxy {
                    crate::cluster::ServiceProxy::KubeProxy => "kube-proxy",
                    crate::cluster::ServiceProxy::Svcproxy { .. } => "svcproxy",
                    crate::cluster::ServiceProxy::Nothing { .. } => "none",
                },
                describe: service_proxy.describe(),
            });
            if service_proxy.is_svcproxy() && running(&r, SVCPROXY).is_none() {
                r.healthy = false;
            }
            r.svcproxy_status = std::fs::read_to_string(&r.svcproxy_status_file)
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok());
            if let Some(settings) = &checked {
                let helm = crate::helm::HelmController::decide(settings, manifest.as_ref().ok());
                r.helm_controller = Some(helm.describe());
            }
            r.tools = Some(userenv::export_line(&paths, !state.control_plane_only));
        }
        r.node_routes = crate::node_routes::load(&paths)
            .routes
            .iter()
            .map(ToString::to_string)
            .collect();
        for daemon in r.daemons.values() {
            if daemon.last_exit.is_some() {
                r.healthy &= !daemon.crash_loop;
            }
        }
        r
    }

    /// Each node's Ready condition and the pods per phase; false when a node is not Ready (or
    /// there is none), or node-routes does not run where it should.
    fn ask_cluster(&mut self, kubectl: &Kubectl, state: &State) -> bool {
        let nodes = kubectl
            .jsonpath(
                &["get", "nodes"],
                "{range .items[*]}{.metadata.name} \
                 {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            )
            .unwrap_or_default();
        for line in nodes.lines() {
            let (name, ready) = line.split_once(' ').unwrap_or((line, ""));
            self.nodes.push(NodeReport {
                name: name.to_string(),
                ready: Some(ready.trim() == "True"),
            });
        }
        let phases = kubectl
            .jsonpath(
                &["get", "pods", "--all-namespaces"],
                "{range .items[*]}{.status.phase}{\"\\n\"}{end}",
            )
            .unwrap_or_default();
        self.pods = count_phases(&phases);
        if state.control_plane_only {
            return true;
        }
        let all_ready = self.nodes.iter().all(|n| n.ready == Some(true));
        let routes = self
            .daemons
            .get(services::NODE_ROUTES)
            .is_some_and(|d| d.running);
        !self.nodes.is_empty() && all_ready && routes
    }

    /// `status`'s text.
    pub fn text(&self) -> String {
        let mut out = Vec::<String>::new();
        out.push(format!(
            "k3s-gvisor {} at {} (data {})",
            self.bundle_version,
            self.prefix.display(),
            self.data_dir.display()
        ));
        match &self.components_error {
            None => {
                for c in &self.components {
                    out.push(format!("  component {} {}", c.name, c.version));
                }
            }
            Some(error) => out.push(format!("  components: unknown ({error})")),
        }
        if let Some(settings) = &self.k3s_settings {
            for line in k3s_settings::describe_summary(settings) {
                out.push(format!("k3s {line}"));
            }
        }
        if let Some(error) = &self.k3s_settings_error {
            out.push(format!(
                "k3s settings: {error} (the next start refuses them)"
            ));
        }
        let pid = |name: &str| self.daemons.get(name).and_then(|d| d.keeper_pid);
        match (pid(CONTAINERD), self.control_plane_only) {
            (None, true) => {
                out.push("containerd: not used (control-plane-only: no kubelet, no pods)".into())
            }
            (Some(pid), _) => out.push(format!(
                "containerd: running (pid {pid}), {}",
                if self.containerd_socket_answers == Some(true) {
                    "socket answers"
                } else {
                    "socket NOT answering"
                }
            )),
            (None, false) => out.push("containerd: stopped".into()),
        }
        let routes_line = |out: &mut Vec<String>| {
            out.push(format!(
                "node-routes: {}, routes to other nodes' pods: {}",
                pid(services::NODE_ROUTES)
                    .map_or("stopped".to_string(), |pid| format!("running (pid {pid})")),
                if self.node_routes.is_empty() {
                    "none".to_string()
                } else {
                    self.node_routes.join(", ")
                }
            ))
        };
        let tools = self.tools.clone().unwrap_or_default();
        if self.has_k3s && self.role == "agent" {
            let server = self.server.as_deref().unwrap_or("?");
            match pid(K3S) {
                Some(pid) => {
                    out.push(format!("k3s agent: running (pid {pid}), joined {server}"));
                    let ready = self.nodes.first().and_then(|n| n.ready);
                    out.push(format!(
                        "node {}: {}",
                        self.node_name,
                        match ready {
                            Some(true) => "Ready",
                            Some(false) => "NOT Ready",
                            None => "unknown (the server does not answer)",
                        }
                    ));
                }
                None => out.push(format!("k3s agent: stopped (joined {server})")),
            }
            routes_line(&mut out);
            out.push(format!("tools: {tools}"));
            self.tool_links_line(&mut out);
        } else if self.has_k3s {
            match pid(K3S) {
                Some(pid) => {
                    let api_ready = self.api_ready == Some(true);
                    out.push(format!(
                        "k3s: running (pid {pid}), API {}",
                        if api_ready { "ready" } else { "NOT ready" }
                    ));
                    if api_ready {
                        for node in &self.nodes {
                            out.push(format!(
                                "node {}: {}",
                                node.name,
                                if node.ready == Some(true) {
                                    "Ready"
                                } else {
                                    "NOT Ready"
                                }
                            ));
                        }
                        if self.nodes.is_empty() {
                            out.push("nodes: none registered".into());
                        }
                        out.push(format!(
                            "pods (all namespaces): {}",
                            phases_line(&self.pods)
                        ));
                        if !self.control_plane_only {
                            routes_line(&mut out);
                        }
                    }
                }
                None => out.push("k3s: stopped".into()),
            }
            if let Some(reason) = &self.kube_proxy_off {
                out.push(format!("kube-proxy: off ({reason})"));
            }
            if let Some(proxy) = &self.service_proxy {
                out.push(format!("service proxy: {}", proxy.describe));
                if proxy.name == "svcproxy" {
                    match pid(SVCPROXY) {
                        Some(pid) => out.push(format!(
                            "svcproxy: running (pid {pid}), {}",
                            svcproxy_summary(
                                self.svcproxy_status.as_ref(),
                                &self.svcproxy_status_file
                            )
                        )),
                        None => out.push(
                            "svcproxy: stopped (ClusterIP and NodePort Services do not route)"
                                .into(),
                        ),
                    }
                }
            }
            for addon in &self.addons_off {
                out.push(format!("add-on {}: off ({})", addon.name, addon.reason));
            }
            if let Some(helm) = &self.helm_controller {
                out.push(format!("helm-controller: {helm}"));
            }
            out.push(format!(
                "kubeconfig: {}\ntools: {tools}",
                self.kubeconfig.display()
            ));
            self.tool_links_line(&mut out);
        } else {
            out.push("k3s: not in this bundle".into());
        }
        // What each daemon's keeper saw: restarts, a crash loop (crates/keeper).
        for name in DAEMONS {
            if let Some(d) = self.daemons.get(name).filter(|d| d.last_exit.is_some()) {
                out.push(format!("{name}: {}", d.describe));
            }
        }
        for mount in &self.mounts {
            out.push(format!("mounted by install: {}", mount.display()));
        }
        let mut text = out.join("\n");
        text.push('\n');
        text
    }

    fn tool_links_line(&self, out: &mut Vec<String>) {
        if !self.tool_links.is_empty() {
            let links: Vec<String> = self
                .tool_links
                .iter()
                .map(|l| l.display().to_string())
                .collect();
            out.push(format!(
                "tools on PATH: {} (wrappers of this install's)",
                links.join(", ")
            ));
        }
    }
}

/// What svcproxy's status file says, in a few words: "3 Services, 5 listeners, last sync 4 s
/// ago" (plus any listener it cannot open), or why there is nothing to say.
fn svcproxy_summary(status: Option<&serde_json::Value>, status_file: &Path) -> String {
    let Some(status) = status else {
        return match status_file.exists() {
            true => format!("{} is not JSON", status_file.display()),
            false => format!("no first sync yet ({} absent)", status_file.display()),
        };
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

/// Pods per phase from one phase per line.
fn count_phases(lines: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::<String, usize>::new();
    for phase in lines.lines().map(str::trim).filter(|l| !l.is_empty()) {
        *counts.entry(phase.to_string()).or_default() += 1;
    }
    counts
}

/// "3 Running, 1 Pending"; "none" when empty.
fn phases_line(counts: &BTreeMap<String, usize>) -> String {
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

    /// An install's state under `root` (containerd only: no bin/k3s), as state.json has it.
    fn state_at(root: &Path) -> State {
        serde_json::from_value(serde_json::json!({
            "bundle_name": "k3s-gvisor", "bundle_version": "v1.34.1+k3s1-gvisor.3",
            "snapshotter": "native",
            "prefix": root.join("prefix"), "data_dir": root.join("data"),
            "control_plane_only": false,
            "created_dirs": [], "created_files": [],
            "mounts": ["/proc/sys/net/ipv4", root.join("data/kmsg")], "absent_before": [],
            "workarounds": ["w1"], "launcher": "auto",
            "addons_off": [{"name": "traefik", "reason": "its image"}],
        }))
        .unwrap()
    }

    #[test]
    fn json_has_the_state_files_decisions_and_each_daemons_keeper_record() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_at(dir.path());
        let paths = state.paths();
        std::fs::create_dir_all(paths.run_dir()).unwrap();
        std::fs::create_dir_all(paths.prefix.join("bin")).unwrap();
        // containerd "runs": a process whose executable is in PREFIX/bin, with no socket.
        let exe = paths.bin(CONTAINERD);
        std::fs::copy("/bin/sleep", &exe).unwrap();
        let mut child = std::process::Command::new(&exe).arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        std::fs::write(paths.pid_file(CONTAINERD), format!("{pid}\n")).unwrap();
        let keeper = |name: &str, json: serde_json::Value| {
            std::fs::write(
                paths.pid_file(name).with_extension("keeper.json"),
                json.to_string(),
            )
            .unwrap()
        };
        keeper(
            CONTAINERD,
            serde_json::json!({"pid": pid, "restarts": 2, "quick_exits": 0,
            "last_exit": "was killed by SIGKILL", "last_exit_at": 1}),
        );
        // svcproxy exited and is not running: its record is reported all the same.
        keeper(
            SVCPROXY,
            serde_json::json!({"pid": 0, "restarts": 10, "quick_exits": 10,
            "last_exit": "exit code 1", "last_exit_at": 1}),
        );

        let report = Report::gather(&state);
        let _ = child.kill();
        let _ = child.wait();
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["bundle_version"], "v1.34.1+k3s1-gvisor.3");
        assert_eq!(json["role"], "server");
        assert_eq!(json["snapshotter"], "native");
        assert_eq!(json["launcher"]["choice"], "auto");
        assert_eq!(
            json["launcher"]["k3s_under_launcher"],
            serde_json::Value::Null
        );
        assert_eq!(json["procsys_overlay"]["laid"], true);
        assert_eq!(
            json["procsys_overlay"]["mounts"],
            serde_json::json!(["/proc/sys/net/ipv4"])
        );
        assert_eq!(json["addons_off"][0]["name"], "traefik");
        assert_eq!(json["has_k3s"], false);
        let containerd = &json["daemons"]["containerd"];
        assert_eq!(containerd["running"], true, "{json:#}");
        assert_eq!(containerd["keeper_pid"], pid);
        assert_eq!(containerd["pid"], pid);
        assert_eq!(containerd["exe"], exe.display().to_string());
        assert_eq!(containerd["restarts"], 2);
        assert_eq!(containerd["last_exit"], "was killed by SIGKILL");
        assert_eq!(json["containerd_socket_answers"], false);
        let svcproxy = &json["daemons"]["svcproxy"];
        assert_eq!(svcproxy["running"], false);
        assert_eq!(svcproxy["pid"], serde_json::Value::Null);
        assert_eq!(svcproxy["crash_loop"], true);
        assert!(json["daemons"].get("k3s").is_none());
        assert_eq!(json["healthy"], false);

        let text = report.text();
        assert!(
            text.starts_with(&format!(
                "k3s-gvisor v1.34.1+k3s1-gvisor.3 at {} (data {})\n",
                paths.prefix.display(),
                paths.data_dir.display()
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "\ncontainerd: running (pid {pid}), socket NOT answering\n"
            )),
            "{text}"
        );
        assert!(text.contains("\nk3s: not in this bundle\n"), "{text}");
        assert!(
            text.contains("\ncontainerd: restarted 2 time(s) (last exit: was killed by SIGKILL"),
            "{text}"
        );
        assert!(
            text.contains("\nsvcproxy: CRASH LOOP: 10 exits in a row"),
            "{text}"
        );
        assert!(
            text.contains("\nmounted by install: /proc/sys/net/ipv4\n"),
            "{text}"
        );
    }

    #[test]
    fn a_servers_text_names_the_api_nodes_pods_and_the_service_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = Report::gather(&state_at(dir.path()));
        report.has_k3s = true;
        report.daemons.insert(
            K3S.into(),
            DaemonReport {
                running: true,
                keeper_pid: Some(41),
                pid: Some(42),
                ..DaemonReport::default()
            },
        );
        report.daemons.insert(
            services::NODE_ROUTES.into(),
            DaemonReport {
                running: true,
                keeper_pid: Some(50),
                ..DaemonReport::default()
            },
        );
        report.api_ready = Some(true);
        report.nodes = vec![NodeReport {
            name: "n1".into(),
            ready: Some(true),
        }];
        report.pods = count_phases("Running\nRunning\nRunning\n");
        report.service_proxy = Some(ServiceProxyReport {
            name: "svcproxy",
            describe: "svcproxy (userspace) in place of kube-proxy: why".into(),
        });
        report.tools = Some("export PATH=x".into());
        let text = report.text();
        for line in [
            "k3s: running (pid 41), API ready",
            "node n1: Ready",
            "pods (all namespaces): 3 Running",
            "node-routes: running (pid 50), routes to other nodes' pods: none",
            "service proxy: svcproxy (userspace) in place of kube-proxy: why",
            "svcproxy: stopped (ClusterIP and NodePort Services do not route)",
            "add-on traefik: off (its image)",
            "tools: export PATH=x",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
    }

    #[test]
    fn pod_phases_are_counted() {
        assert_eq!(phases_line(&count_phases("")), "none");
        assert_eq!(
            phases_line(&count_phases("Running\nPending\nRunning\n")),
            "1 Pending, 2 Running"
        );
    }
}
