//! The daemons of one install: containerd, k3s, svcproxy (where it serves Services, or gives
//! LoadBalancers their address) and node-routes, each started under its keeper (supervise.rs,
//! crates/keeper), waited for until usable, and all stopped together.
//!
//! One module per daemon; `wait` is how a start waits for its daemon (and the logs it quotes
//! when the daemon dies); `launcher` decides whether k3s runs under the ptrace launcher; `shims`
//! is what containerd's tasks leave behind when they are stopped.

pub mod containerd;
pub mod k3s;
mod launcher;
pub mod node_routes;
mod shims;
pub mod svcproxy;
mod wait;

use std::time::Duration;

use crate::paths::Paths;
use crate::supervise::{self, Daemon};

pub use shims::pod_sandboxes;

/// The daemons' names: their pid files, logs and keeper status files are named after them.
pub const CONTAINERD: &str = "containerd";
pub const K3S: &str = "k3s";
pub const SVCPROXY: &str = "svcproxy";
pub const NODE_ROUTES: &str = "node-routes";

pub fn daemon(paths: &Paths, name: &str) -> Daemon {
    Daemon {
        name: name.to_string(),
        pid_file: paths.pid_file(name),
        log_file: paths.log_file(name),
        program_dir: paths.prefix.join("bin"),
    }
}

/// True when the install has a k3s binary (early bundles carry containerd only).
pub fn has_k3s(paths: &Paths) -> bool {
    paths.bin(K3S).is_file()
}

/// The PATH every daemon gets after our bin dir, whatever shell ran the installer (the one a
/// systemd unit would give).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What every daemon starts with, and nothing else of the installer's shell: PATH with our bin
/// dir first (containerd finds containerd-shim-runc-v2 there, the shim finds runc) and HOME.
fn daemon_env(paths: &Paths) -> Vec<(String, String)> {
    let home = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "/".to_string(), |user| user.dir.display().to_string());
    vec![
        (
            "PATH".to_string(),
            format!("{}:{SYSTEM_PATH}", paths.prefix.join("bin").display()),
        ),
        ("HOME".to_string(), home),
    ]
}

/// Stops svcproxy, node-routes, k3s, then every container task, then containerd, then sweeps
/// any process still running from the prefix or data dir (containerd shims run in their own
/// process groups). Returns what was stopped, one line each.
pub fn stop_all(paths: &Paths) -> Vec<String> {
    let mut report = Vec::new();
    // First, while the bridge still exists: on SIGTERM it removes its ClusterIPs from it.
    report.extend(stop(paths, SVCPROXY, 10));
    // Routes stay: they are right as long as the other nodes are, and uninstall removes them.
    report.extend(stop(paths, NODE_ROUTES, 5));
    report.extend(stop(paths, K3S, 30));
    let tasks = if containerd::healthy(paths) {
        shims::kill_tasks(paths)
    } else {
        Vec::new()
    };
    report.extend(
        tasks
            .iter()
            .map(|(namespace, id)| format!("container task {namespace}/{id} killed")),
    );
    report.extend(stop(paths, CONTAINERD, 20));
    report.extend(kill_leftovers(paths));
    report.extend(shims::remove_sockets(paths, tasks));
    report
}

/// Stops daemon NAME, giving it GRACE_SECS after SIGTERM; "NAME stopped" if it was running.
fn stop(paths: &Paths, name: &str, grace_secs: u64) -> Option<String> {
    daemon(paths, name)
        .stop(Duration::from_secs(grace_secs))
        .then(|| format!("{name} stopped"))
}

/// Kills whatever still runs from the prefix or the data dir; one line per process.
fn kill_leftovers(paths: &Paths) -> Vec<String> {
    let leftovers = supervise::processes_running_from(&[&paths.prefix, &paths.data_dir]);
    if !leftovers.is_empty() {
        let pids: Vec<i32> = leftovers.iter().map(|(pid, _)| *pid).collect();
        supervise::kill_all(&pids);
    }
    leftovers
        .into_iter()
        .map(|(pid, cmdline)| format!("killed leftover process {pid}: {cmdline}"))
        .collect()
}
