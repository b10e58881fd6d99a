//! The CNI success result, written in the wire format of the requested spec version.
//!
//! 1.0.0 and 1.1.0 share one format; 0.4.0 differs only in a `"version": "4"` field on each IP.
//! The same types read `prevResult` for CHECK, which a runtime may give in any of them.

use crate::version::SpecVersion;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The netns path for interfaces inside the container; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Index into `interfaces` of the interface that carries the address. Absent when no
    /// listed interface carries it (loopback-only mode; see docs/cni.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

impl CniResult {
    /// Reads a result in any supported version (unknown fields such as `version`, `dns` and
    /// `cniVersion` are ignored; they carry nothing CHECK compares).
    pub fn from_json(value: Value) -> serde_json::Result<Self> {
        serde_json::from_value(value)
    }

    pub fn to_json(&self, version: SpecVersion) -> Value {
        let mut value = serde_json::to_value(self).expect("result always serializes");
        value["cniVersion"] = json!(version.as_str());
        value["dns"] = json!({});
        if version.ip_has_version_field() {
            for ip in value["ips"].as_array_mut().expect("ips is an array") {
                ip["version"] = json!("4");
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: None,
                sandbox: Some("/run/netns/x".into()),
            }],
            ips: vec![IpConfig {
                address: "10.88.0.5/32".parse().unwrap(),
                gateway: None,
                interface: None,
            }],
            routes: vec![],
        }
    }

    #[test]
    fn version_field_only_in_0_4_0_and_round_trip() {
        let old = sample().to_json(SpecVersion::V0_4_0);
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.4.0");
        let new = sample().to_json(SpecVersion::V1_1_0);
        assert!(new["ips"][0].get("version").is_none());
        assert!(new["ips"][0].get("interface").is_none());
        assert_eq!(CniResult::from_json(old).unwrap(), sample());
        assert_eq!(CniResult::from_json(new).unwrap(), sample());
    }
}
