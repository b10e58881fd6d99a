//! What CNI leaves on the host after its pods are gone; uninstall removes what this install's
//! pods left:
//! - the bridge gvisor-cni makes for the first pod (veth-bridge mode: Linux and the current
//!   gVisor), with the pod gateway address on it, when it did not exist at install (install
//!   records the links that exist);
//! - libcni's result cache, `/var/lib/cni/results/<network>-<sandbox id>-<ifname>`, written by
//!   containerd for each pod sandbox and removed only by a CNI DEL, which `stop` (killing the
//!   tasks) never makes.

use std::path::Path;

/// The name gvisor-cni uses when its config names no bridge (crates/cni/src/config.rs).
const DEFAULT_BRIDGE: &str = "gvcni0";

/// Every network interface's name and index (if_nameindex: works where /sys/class/net does
/// not exist, as in gVisor).
pub fn links() -> Vec<(String, u32)> {
    nix::net::if_::if_nameindex()
        .map(|list| {
            list.iter()
                .map(|i| (i.name().to_string_lossy().into_owned(), i.index()))
                .collect()
        })
        .unwrap_or_default()
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

/// The pod range k3s's range allocator gives the first node of a new cluster: the first /24
/// of the cluster CIDR (kube-controller-manager's default node-cidr-mask-size for IPv4; its
/// CIDR set hands out ranges from the start). None for anything else (IPv6, a prefix longer
/// than /24, not a CIDR).
pub fn first_pod_range(cluster_cidr: &str) -> Option<String> {
    let (address, prefix) = cluster_cidr.trim().split_once('/')?;
    let address: std::net::Ipv4Addr = address.parse().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    if prefix > 24 {
        return None;
    }
    let network = u32::from(address) & (u32::MAX << (32 - prefix)) & 0xffff_ff00;
    Some(format!("{}/24", std::net::Ipv4Addr::from(network)))
}

/// Does the conf dir hold a CNI config already (a pod range written by an earlier start)?
pub fn has_pod_range(conf_dir: &Path) -> bool {
    std::fs::read_dir(conf_dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// Writes each CNI config of the template dir into the conf dir with `pod_cidr` as the
/// "subnet" of its gvisor-cni plugins (the gateway is the range's first address, as before).
/// Returns whether a file changed; containerd watches the conf dir and reloads.
pub fn write_pod_range(
    template_dir: &Path,
    conf_dir: &Path,
    pod_cidr: &str,
) -> anyhow::Result<bool> {
    use anyhow::Context;
    std::fs::create_dir_all(conf_dir)?;
    let mut changed = false;
    let mut found = false;
    for entry in std::fs::read_dir(template_dir)
        .with_context(|| format!("cannot read {}", template_dir.display()))?
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path())
            .with_context(|| format!("cannot read {}", entry.path().display()))?;
        let mut conf: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", entry.path().display()))?;
        let plugins = conf["plugins"].as_array_mut().into_iter().flatten();
        for plugin in plugins.filter(|p| p["type"] == "gvisor-cni") {
            plugin["subnet"] = serde_json::Value::String(pod_cidr.to_string());
            found = true;
        }
        let rendered = serde_json::to_string_pretty(&conf)? + "\n";
        let target = conf_dir.join(entry.file_name());
        if std::fs::read_to_string(&target).ok().as_deref() != Some(rendered.as_str()) {
            // Written aside and renamed: containerd must never load half a config.
            crate::files::write_replacing(&target, rendered.as_bytes(), 0o644)
                .with_context(|| format!("cannot write {}", target.display()))?;
            changed = true;
        }
    }
    if !found {
        anyhow::bail!(
            "no gvisor-cni plugin in the CNI configs of {}: the install is damaged; reinstall",
            template_dir.display()
        );
    }
    Ok(changed)
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
        match netif::Netlink::open().and_then(|netlink| netlink.delete_link(index)) {
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
    fn the_first_pod_range_is_the_first_slash_24_of_the_cluster_cidr() {
        assert_eq!(
            first_pod_range("10.42.0.0/16").as_deref(),
            Some("10.42.0.0/24")
        );
        assert_eq!(
            first_pod_range("10.52.7.9/12").as_deref(),
            Some("10.48.0.0/24")
        );
        assert_eq!(
            first_pod_range("192.168.4.0/24").as_deref(),
            Some("192.168.4.0/24")
        );
        assert_eq!(first_pod_range("10.42.0.0/25"), None);
        assert_eq!(first_pod_range("fd00::/56"), None);
        assert_eq!(first_pod_range("10.42.0.0/16,fd00::/56"), None);
    }

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
    fn the_pod_range_replaces_the_shipped_subnet() {
        let dir = std::env::temp_dir().join(format!("cni-range-unit-{}", std::process::id()));
        let (templates, conf) = (dir.join("templates"), dir.join("net.d"));
        std::fs::create_dir_all(&templates).unwrap();
        std::fs::write(
            templates.join("10-gvisor.conflist"),
            r#"{"name": "gvisor", "plugins": [{"type": "gvisor-cni", "subnet": "10.88.0.0/16"}]}"#,
        )
        .unwrap();
        assert!(write_pod_range(&templates, &conf, "10.42.1.0/24").unwrap());
        let written: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(conf.join("10-gvisor.conflist")).unwrap(),
        )
        .unwrap();
        assert_eq!(written["plugins"][0]["subnet"], "10.42.1.0/24");
        // The same range again changes nothing (containerd is not made to reload).
        assert!(!write_pod_range(&templates, &conf, "10.42.1.0/24").unwrap());
        assert!(write_pod_range(&templates, &conf, "10.42.2.0/24").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loopback_is_always_listed() {
        assert!(link_names().iter().any(|name| name == "lo"));
    }
}
