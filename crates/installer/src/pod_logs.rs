//! Pod logs the kubelet writes outside the data dir: `/var/log/pods/<ns>_<pod>_<uid>/` and, for
//! each container, a symlink `/var/log/containers/<pod>_<ns>_<container>-<id>.log` into it.
//! Both directories are fixed in the kubelet. `stop` leaves them (the pods still exist in k3s);
//! uninstall removes those of the pods this install's kubelet ran, known by the pod UIDs under
//! `DATA/kubelet/pods/`, and leaves any other kubelet's logs alone.

use std::fs;
use std::path::{Path, PathBuf};

pub const POD_LOGS: &str = "/var/log/pods";
pub const CONTAINER_LOGS: &str = "/var/log/containers";

/// The UIDs of the pods the kubelet with this root dir ran.
fn pod_uids(kubelet_root: &Path) -> Vec<String> {
    fs::read_dir(kubelet_root.join("pods"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the pod log directories of `kubelet_root`'s pods from `pod_logs` and the symlinks
/// in `container_logs` that point into them. Returns one line per removal or failure.
pub fn remove(kubelet_root: &Path, pod_logs: &Path, container_logs: &Path) -> Vec<String> {
    let uids = pod_uids(kubelet_root);
    let mut report = Vec::new();
    let mut removed: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(pod_logs).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // <namespace>_<pod>_<uid>: names and namespaces cannot contain '_', UIDs cannot either.
        let ours = name
            .rsplit_once('_')
            .is_some_and(|(_, uid)| uids.iter().any(|u| u == uid));
        if !ours {
            continue;
        }
        match fs::remove_dir_all(entry.path()) {
            Ok(()) => removed.push(entry.path()),
            Err(error) => report.push(format!("cannot remove {}: {error}", entry.path().display())),
        }
    }
    let mut links = 0;
    for entry in fs::read_dir(container_logs).into_iter().flatten().flatten() {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if removed.iter().any(|dir| target.starts_with(dir))
            && fs::remove_file(entry.path()).is_ok()
        {
            links += 1;
        }
    }
    if !removed.is_empty() {
        report.push(format!(
            "removed the logs of {} pod(s) from {} and {links} link(s) from {}",
            removed.len(),
            pod_logs.display(),
            container_logs.display()
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_kubelets_pods_are_removed() {
        let root = std::env::temp_dir().join(format!("pod-logs-unit-{}", std::process::id()));
        let (kubelet, pods, containers) = (
            root.join("kubelet"),
            root.join("pods"),
            root.join("containers"),
        );
        for dir in [
            kubelet.join("pods/uid-ours"),
            pods.join("default_web_uid-ours/busybox"),
            pods.join("default_other_uid-theirs/busybox"),
            containers.clone(),
        ] {
            fs::create_dir_all(dir).unwrap();
        }
        let ours = pods.join("default_web_uid-ours/busybox/0.log");
        let theirs = pods.join("default_other_uid-theirs/busybox/0.log");
        fs::write(&ours, "x").unwrap();
        fs::write(&theirs, "y").unwrap();
        std::os::unix::fs::symlink(&ours, containers.join("web_default_busybox-1.log")).unwrap();
        std::os::unix::fs::symlink(&theirs, containers.join("other_default_busybox-2.log"))
            .unwrap();

        let report = remove(&kubelet, &pods, &containers);
        assert_eq!(report.len(), 1, "{report:?}");
        assert!(!pods.join("default_web_uid-ours").exists());
        assert!(!containers.join("web_default_busybox-1.log").exists());
        assert!(theirs.exists());
        assert!(fs::symlink_metadata(containers.join("other_default_busybox-2.log")).is_ok());
        fs::remove_dir_all(&root).unwrap();
    }
}
