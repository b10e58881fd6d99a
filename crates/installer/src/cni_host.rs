//! What CNI leaves on the host after its pods are gone; uninstall removes what this install's
//! pods left:
//! - the bridge gvisor-cni makes for the first pod (veth-bridge mode: Linux and the current
//!   gVisor), with the pod gateway address on it, when it did not exist at install (install
//!   records the links that exist);
//! - libcni's result cache, `/var/lib/cni/results/<network>-<sandbox id>-<ifname>`, written by
//!   containerd for each pod sandbox and removed only by a CNI DEL, which `stop` (killing the
//!   tasks) never makes.

use std::ffi::CStr;
use std::path::Path;

use crate::netlink;

/// The name gvisor-cni uses when its config names no bridge (crates/cni/src/config.rs).
const DEFAULT_BRIDGE: &str = "gvcni0";

/// Every network interface's name and index (if_nameindex: works where /sys/class/net does
/// not exist, as in gVisor).
pub fn links() -> Vec<(String, u32)> {
    let mut found = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below; names are
    // NUL-terminated C strings that live as long as the array.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return found;
        }
        let mut entry = list;
        while (*entry).if_index != 0 {
            let name = CStr::from_ptr((*entry).if_name)
                .to_string_lossy()
                .into_owned();
            found.push((name, (*entry).if_index));
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    found
}

pub fn link_names() -> Vec<String> {
    links().into_iter().map(|(name, _)| name).collect()
}

/// The CNI network configs in the conf dir, parsed.
fn configs(conf_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_dir(conf_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .filter_map(|text| serde_json::from_str(&text).ok())
        .collect()
}

/// The bridges the gvisor-cni plugins in the CNI config dir use.
pub fn bridges_in(conf_dir: &Path) -> Vec<String> {
    let mut bridges = Vec::new();
    for conf in configs(conf_dir) {
        let plugins = conf["plugins"].as_array().cloned().unwrap_or_default();
        for plugin in plugins.iter().filter(|p| p["type"] == "gvisor-cni") {
            let bridge = plugin["bridge"]
                .as_str()
                .unwrap_or(DEFAULT_BRIDGE)
                .to_string();
            if !bridges.contains(&bridge) {
                bridges.push(bridge);
            }
        }
    }
    bridges
}

/// Where libcni caches each attachment's result (its default cache dir).
pub const RESULTS_DIR: &str = "/var/lib/cni/results";

/// Removes the cached results of `sandboxes` on the networks of the CNI config dir. Returns
/// how many files were removed.
pub fn remove_results(conf_dir: &Path, sandboxes: &[String], results_dir: &Path) -> usize {
    let networks: Vec<String> = configs(conf_dir)
        .iter()
        .filter_map(|conf| conf["name"].as_str().map(str::to_string))
        .collect();
    let mut removed = 0;
    for entry in std::fs::read_dir(results_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = networks.iter().any(|network| {
            name.strip_prefix(network.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|rest| {
                    sandboxes
                        .iter()
                        .any(|id| rest.starts_with(&format!("{id}-")))
                })
        });
        if ours && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes each of `bridges` that exists now and is not in `links_before`. Returns a report
/// line per removal and a problem per failure.
pub fn remove_new(bridges: &[String], links_before: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut report, mut problems) = (Vec::new(), Vec::new());
    for (name, index) in links() {
        if !bridges.contains(&name) || links_before.contains(&name) {
            continue;
        }
        match netlink::delete_link(index) {
            Ok(()) => report.push(format!("removed the CNI bridge {name}")),
            Err(error) => problems.push(format!("cannot remove the CNI bridge {name}: {error}")),
        }
    }
    (report, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridges_come_from_gvisor_cni_plugins_only() {
        let dir = std::env::temp_dir().join(format!("cni-bridge-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("10-gvisor.conflist"),
            r#"{"plugins": [{"type": "gvisor-cni", "bridge": "br-test"}, {"type": "portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("20-default.conflist"),
            r#"{"plugins": [{"type": "gvisor-cni"}, {"type": "bridge", "bridge": "cni0"}]}"#,
        )
        .unwrap();
        let mut bridges = bridges_in(&dir);
        bridges.sort();
        assert_eq!(bridges, ["br-test", "gvcni0"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_our_sandboxes_results_on_our_networks_are_removed() {
        let dir = std::env::temp_dir().join(format!("cni-results-unit-{}", std::process::id()));
        let (conf, results) = (dir.join("net.d"), dir.join("results"));
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&results).unwrap();
        std::fs::write(
            conf.join("10-gvisor.conflist"),
            r#"{"name": "gvisor", "plugins": [{"type": "gvisor-cni"}]}"#,
        )
        .unwrap();
        for file in ["gvisor-aaa-eth0", "gvisor-bbb-eth0", "other-aaa-eth0"] {
            std::fs::write(results.join(file), "{}").unwrap();
        }
        let removed = remove_results(&conf, &["aaa".to_string()], &results);
        assert_eq!(removed, 1);
        assert!(!results.join("gvisor-aaa-eth0").exists());
        assert!(results.join("gvisor-bbb-eth0").exists());
        assert!(results.join("other-aaa-eth0").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loopback_is_always_listed() {
        assert!(link_names().iter().any(|name| name == "lo"));
    }
}
