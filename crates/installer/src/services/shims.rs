//! What containerd's tasks leave outside the data dir: `stop` kills every task so no container
//! outlives it, then removes the sockets its shims leave in /run/containerd/s; uninstall asks
//! for the pod sandboxes' ids to remove their cached CNI results.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use super::containerd::ctr;
use crate::paths::Paths;

/// Where containerd's shims listen, whatever containerd's own state dir: `SHIM_SOCKET_DIR/
/// <sha256 of ADDRESS/NAMESPACE/ID>` (containerd v2, pkg/shim SocketAddress). A shim that
/// `stop` kills leaves its socket there.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// The one shim group of a containerd namespace's containers (containerd's environment, see
/// containerd.rs): its socket is named by this id, not by a task's.
pub const SHIM_GROUP: &str = "k3s-gvisor";

/// Kills and deletes every task in every containerd namespace, so no container outlives stop.
/// Returns (namespace, id) of each.
pub fn kill_tasks(paths: &Paths) -> Vec<(String, String)> {
    let mut killed = Vec::new();
    let namespaces = ctr(paths, "default", &["namespaces", "ls", "-q"]).unwrap_or_default();
    for namespace in namespaces.lines().map(str::trim).filter(|n| !n.is_empty()) {
        let tasks = ctr(paths, namespace, &["tasks", "ls", "-q"]).unwrap_or_default();
        for task in tasks.lines().map(str::trim).filter(|t| !t.is_empty()) {
            let _ = ctr(
                paths,
                namespace,
                &["tasks", "kill", "-a", "-s", "SIGKILL", task],
            );
            sleep(Duration::from_millis(200));
            let _ = ctr(paths, namespace, &["tasks", "delete", "-f", task]);
            killed.push((namespace.to_string(), task.to_string()));
        }
    }
    killed
}

/// Removes the sockets of the shims of `killed` tasks and of every shim bundle in containerd's
/// state dir (what shims ran, even when containerd was already gone at `stop`), and of their
/// namespaces' shim group. One line when any was removed.
pub fn remove_sockets(paths: &Paths, mut killed: Vec<(String, String)>) -> Option<String> {
    killed.extend(shim_bundles(paths));
    let mut groups: Vec<(String, String)> = killed
        .iter()
        .map(|(namespace, _)| (namespace.clone(), SHIM_GROUP.to_string()))
        .collect();
    groups.sort();
    groups.dedup();
    killed.extend(groups);
    let removed = killed
        .iter()
        .filter(|(namespace, id)| fs::remove_file(shim_socket(paths, namespace, id)).is_ok())
        .count();
    (removed > 0)
        .then(|| format!("removed {removed} socket(s) of stopped shims from {SHIM_SOCKET_DIR}"))
}

fn shim_socket(paths: &Paths, namespace: &str, id: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let key = paths.containerd_socket().join(namespace).join(id);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    Path::new(SHIM_SOCKET_DIR).join(hex::encode(digest))
}

/// The ids of the pod sandboxes containerd's CRI made (its per-sandbox root dirs).
pub fn pod_sandboxes(paths: &Paths) -> Vec<String> {
    let dir = paths
        .containerd_root()
        .join("io.containerd.grpc.v1.cri/sandboxes");
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// (namespace, id) of every shim bundle in containerd's state dir.
fn shim_bundles(paths: &Paths) -> Vec<(String, String)> {
    let root = paths
        .containerd_state()
        .join("io.containerd.runtime.v2.task");
    let mut found = Vec::new();
    for namespace in fs::read_dir(&root).into_iter().flatten().flatten() {
        for id in fs::read_dir(namespace.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            found.push((
                namespace.file_name().to_string_lossy().into_owned(),
                id.file_name().to_string_lossy().into_owned(),
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_sockets_are_named_as_containerd_names_them() {
        // From an e2e run's containerd.log: `connecting to shim 3f6b0dee...
        // address="unix:///run/containerd/s/f0af28f7..."`, containerd serving on
        // .../run/data/run/containerd.sock.
        let run = Path::new("/work/wt-k3s/target/k3s-gvisor/e2e/gvisor-current-full/run");
        let paths = Paths::new(&run.join("prefix"), &run.join("data"));
        let id = "3f6b0deeafb18393141451328c2bb5c63cebbdf46d30e706f63099ffb6a9a677";
        assert_eq!(
            shim_socket(&paths, "k8s.io", id),
            Path::new(
                "/run/containerd/s/f0af28f7d0eff1e2c27281d398b1782830e1ff0103693b156cd078f6950afb1f"
            )
        );
    }
}
