//! The network configuration the runtime passes on stdin, validated.
//!
//! Everything is flat at the top level (this plugin is its own IPAM), for example:
//!
//! ```json
//! {"cniVersion":"1.1.0","name":"gvisor","type":"gvisor-cni","mode":"auto",
//!  "subnet":"10.88.0.0/16","bridge":"gvcni0","dataDir":"/var/lib/cni/networks"}
//! ```

use crate::env::Attachment;
use crate::error::{CniError, Result};
use crate::ipam::range::AddressRange;
use crate::result::CniResult;
use crate::version::SpecVersion;
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Where allocations live unless the config says otherwise (the same place host-local uses).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// The bridge veth-bridge mode creates on the host side unless `bridge` is set.
pub const DEFAULT_BRIDGE: &str = "gvcni0";

/// How the pod's network namespace is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// veth-bridge where the kernel can create veth pairs and bridges, else loopback-only.
    Auto,
    /// A veth pair: CNI_IFNAME in the pod, the host end enslaved to a bridge that holds the gateway.
    VethBridge,
    /// Only `lo` is brought up; the address is allocated and reported, but no interface carries it.
    LoopbackOnly,
}

/// The raw shape of the config; `NetConf::parse` validates it into `NetConf`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    name: String,
    #[serde(rename = "type")]
    plugin_type: String,
    #[serde(default = "default_mode")]
    mode: Mode,
    subnet: Option<String>,
    range_start: Option<Ipv4Addr>,
    range_end: Option<Ipv4Addr>,
    gateway: Option<Ipv4Addr>,
    bridge: Option<String>,
    data_dir: Option<PathBuf>,
    prev_result: Option<serde_json::Value>,
}

fn default_mode() -> Mode {
    Mode::Auto
}

#[derive(Debug, Deserialize)]
struct ValidAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

/// A validated network configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub version: SpecVersion,
    pub mode: Mode,
    pub range: AddressRange,
    pub bridge: String,
    /// The store for this network: `<dataDir>/<name>`.
    pub store_dir: PathBuf,
    pub prev_result: Option<CniResult>,
    /// Present only in GC requests; `None` means the key was absent.
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Validates the decoded stdin JSON. The version has already been checked by the caller,
    /// because a version error must win over any other complaint (the spec's code 1).
    pub fn parse(version: SpecVersion, value: serde_json::Value) -> Result<Self> {
        let valid_attachments = valid_attachments(&value)?;
        let raw: RawConf = serde_json::from_value(value).map_err(|e| {
            CniError::invalid_config(
                "the network config does not have the expected fields",
                format!("{e}; see docs/cni.md for the keys gvisor-cni accepts"),
            )
        })?;
        if raw.plugin_type != "gvisor-cni" {
            return Err(CniError::invalid_config(
                format!(
                    "config is for plugin type {:?}, not \"gvisor-cni\"",
                    raw.plugin_type
                ),
                "set \"type\": \"gvisor-cni\" in the plugin's entry of the conflist",
            ));
        }
        validate_network_name(&raw.name)?;
        let subnet_text = raw.subnet.ok_or_else(|| {
            CniError::invalid_config(
                "\"subnet\" is missing",
                "set an IPv4 subnet, e.g. \"subnet\": \"10.88.0.0/16\"",
            )
        })?;
        let subnet: Ipv4Net = subnet_text.parse().map_err(|_| {
            CniError::invalid_config(
                format!("\"subnet\" {subnet_text:?} is not an IPv4 CIDR"),
                "gvisor-cni allocates IPv4 only; use a form like \"10.88.0.0/16\"",
            )
        })?;
        let range = AddressRange::new(subnet.trunc(), raw.range_start, raw.range_end, raw.gateway)?;
        let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ':', ' ']) {
            return Err(CniError::invalid_config(
                format!("\"bridge\" {bridge:?} is not a valid interface name"),
                "use 1 to 15 characters without '/', ':' or spaces",
            ));
        }
        let prev_result = match raw.prev_result {
            Some(value) => Some(CniResult::from_json(value).map_err(|e| {
                CniError::decode("\"prevResult\" is not a CNI result", e.to_string())
            })?),
            None => None,
        };
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        Ok(NetConf {
            version,
            store_dir: data_dir.join(&raw.name),
            mode: raw.mode,
            range,
            bridge,
            prev_result,
            valid_attachments,
        })
    }
}

/// GC's list of attachments that are still in use. Absent means the runtime told us nothing;
/// `null` is what Go's libcni sends for an empty list, so it means "none are valid". libcni
/// also sends the key under its misspelt pre-1.1 name `cni.dev/attachments`, accepted too.
fn valid_attachments(value: &serde_json::Value) -> Result<Option<Vec<Attachment>>> {
    let listed = value
        .get("cni.dev/valid-attachments")
        .or_else(|| value.get("cni.dev/attachments"));
    let Some(listed) = listed else {
        return Ok(None);
    };
    if listed.is_null() {
        return Ok(Some(Vec::new()));
    }
    let list: Vec<ValidAttachment> = serde_json::from_value(listed.clone()).map_err(|e| {
        CniError::invalid_config(
            "\"cni.dev/valid-attachments\" is not a list of {\"containerID\",\"ifname\"}",
            e.to_string(),
        )
    })?;
    Ok(Some(
        list.into_iter()
            .map(|a| Attachment {
                container_id: a.container_id,
                ifname: a.ifname,
            })
            .collect(),
    ))
}

/// The network name becomes a directory name in the store, so it follows the spec's rule
/// (letters, digits, '_', '.', '-', starting with a letter or digit).
fn validate_network_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::invalid_config(
            format!("network name {name:?} is invalid"),
            "a network name must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_store_dir() {
        let conf = NetConf::parse(
            SpecVersion::V1_1_0,
            json!({"cniVersion":"1.1.0","name":"net1","type":"gvisor-cni","subnet":"10.88.0.0/16"}),
        )
        .unwrap();
        assert_eq!(conf.mode, Mode::Auto);
        assert_eq!(conf.store_dir, PathBuf::from("/var/lib/cni/networks/net1"));
        assert_eq!(conf.range.gateway, Ipv4Addr::new(10, 88, 0, 1));
    }

    #[test]
    fn rejects_wrong_type_bad_subnet_and_path_like_names() {
        let base = json!({"name":"n","type":"gvisor-cni","subnet":"10.88.0.0/16"});
        let with = |key: &str, value: serde_json::Value| {
            let mut v = base.clone();
            v[key] = value;
            NetConf::parse(SpecVersion::V1_0_0, v).unwrap_err()
        };
        assert_eq!(with("type", json!("bridge")).code, 7);
        assert_eq!(with("subnet", json!("fd00::/64")).code, 7);
        assert_eq!(with("name", json!("../etc")).code, 7);
        assert_eq!(with("mode", json!("magic")).code, 7);
    }
}
