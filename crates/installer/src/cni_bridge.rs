//! The bridge gvisor-cni makes for the first pod (veth-bridge mode: Linux and the current gVisor)
//! outlives every pod, with the pod gateway address on it. Install records the links that
//! exist; uninstall removes the bridge its CNI config names if it was not there before.

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

/// The bridges the gvisor-cni plugins in the CNI config dir use.
pub fn bridges_in(conf_dir: &Path) -> Vec<String> {
    let mut bridges = Vec::new();
    let Ok(entries) = std::fs::read_dir(conf_dir) else {
        return bridges;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(conf) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
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
    fn loopback_is_always_listed() {
        assert!(link_names().iter().any(|name| name == "lo"));
    }
}
