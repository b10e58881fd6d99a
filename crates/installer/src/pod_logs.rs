//! Where pod logs go. By default the kubelet writes them to /var/log/pods and garbage-collects
//! every directory there whose pod it does not know, so two installs on one host (two gVisor
//! sandboxes share the host's /var over 9p) would delete each other's logs, and uninstall
//! would have to pick its own out. The installer gives the kubelet a config drop-in that moves
//! them into the data dir (`podLogsDir` has no command-line flag; k3s passes `--config-dir`
//! and writes only its own `00-k3s-defaults.conf` there).
//!
//! The kubelet still links each container's log from the fixed /var/log/containers; uninstall
//! removes the links that point into the data dir.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::paths::Paths;

/// Writes the drop-in, before k3s starts the kubelet.
pub fn write_kubelet_dropin(paths: &Paths) -> Result<()> {
    let file = paths.kubelet_dropin();
    let dir = file.parent().expect("the drop-in has a parent");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = format!(
        "# Written by the k3s-gvisor installer (crates/installer/src/pod_logs.rs): pod logs in \
         the data dir.\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         podLogsDir: {}\n",
        paths.pod_logs_dir().display()
    );
    fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))
}

/// The fixed directory of the kubelet's container log links.
pub const CONTAINER_LOGS: &str = "/var/log/containers";

/// Removes the links in `container_logs` that point into `data_dir`. Returns how many.
pub fn remove_links(container_logs: &Path, data_dir: &Path) -> usize {
    fs::read_dir(container_logs)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            fs::read_link(entry.path()).is_ok_and(|target| target.starts_with(data_dir))
                && fs::remove_file(entry.path()).is_ok()
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_links_into_the_data_dir_are_removed() {
        let root = std::env::temp_dir().join(format!("pod-logs-unit-{}", std::process::id()));
        let (data, links) = (root.join("data"), root.join("containers"));
        fs::create_dir_all(data.join("pod-logs/default_web_uid/busybox")).unwrap();
        fs::create_dir_all(&links).unwrap();
        let ours = data.join("pod-logs/default_web_uid/busybox/0.log");
        fs::write(&ours, "x").unwrap();
        std::os::unix::fs::symlink(&ours, links.join("web_default_busybox-1.log")).unwrap();
        std::os::unix::fs::symlink("/var/log/pods/x/0.log", links.join("x_default_c-2.log"))
            .unwrap();

        assert_eq!(remove_links(&links, &data), 1);
        assert!(fs::symlink_metadata(links.join("web_default_busybox-1.log")).is_err());
        assert!(fs::symlink_metadata(links.join("x_default_c-2.log")).is_ok());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_dropin_names_the_data_dir() {
        let root = std::env::temp_dir().join(format!("pod-logs-dropin-{}", std::process::id()));
        let paths = Paths::new(&root.join("prefix"), &root.join("data"));
        write_kubelet_dropin(&paths).unwrap();
        let text = fs::read_to_string(paths.kubelet_dropin()).unwrap();
        assert!(text.contains("kind: KubeletConfiguration\n"), "{text}");
        assert!(
            text.contains(&format!(
                "podLogsDir: {}\n",
                root.join("data/pod-logs").display()
            )),
            "{text}"
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
