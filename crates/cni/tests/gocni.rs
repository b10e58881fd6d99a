//! containerd's view of the results: gvisor-cni run through github.com/containerd/go-cni
//! (the version containerd v2.1.4 pins), by the small Go program in tests/gocni. The CRI
//! takes the pod IP from the default interface `eth0`; this checks that every mode yields
//! one, including loopback-only, whose result names no interface for the address.
//! Needs root, `ip`, and Go (the probe is built from the Go module proxy on first use).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn probe() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        require_tool("go", "install Go (scripts/install-deps.sh does)");
        let out_dir = tempdir("gocni-probe");
        let binary = out_dir.join("gocni-probe");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gocni"))
            .env("GOFLAGS", "-buildvcs=false -mod=readonly")
            .env("CGO_ENABLED", "0")
            .output()
            .expect("running go build");
        assert!(
            out.status.success(),
            "building tests/gocni failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        binary
    })
    .clone()
}

/// What go-cni saw; None (skipped) when not root.
fn pod_ip_via_go_cni(tag: &str, mode: &str, subnet: &str, bridge: &str) -> Option<Value> {
    if !require_root() {
        return None;
    }
    let net = Network::new(
        tag,
        "1.1.0",
        json!({"mode": mode, "subnet": subnet, "bridge": bridge}),
    );
    let ns = NetNs::new(tag);
    let out = Command::new(probe())
        .arg(&net.conf_dir)
        .arg(cni_path())
        .arg(ns.path())
        .arg(format!("{tag}-sandbox"))
        .output()
        .unwrap();
    let seen = ok_json("go-cni Setup/Remove", &out);
    let _ = Command::new("ip").args(["link", "del", bridge]).output();
    let ip: std::net::Ipv4Addr = seen["podIP"]
        .as_str()
        .unwrap_or_else(|| panic!("no pod IP for eth0: {seen}"))
        .parse()
        .unwrap();
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    assert!(subnet.contains(&ip), "{ip} outside {subnet}");
    assert!(
        net.allocations().is_empty(),
        "go-cni Remove must release the address"
    );
    Some(seen)
}

#[test]
fn containerd_gets_a_pod_ip_in_loopback_only_mode() {
    let Some(seen) = pod_ip_via_go_cni("gocni-lo", "loopback-only", "10.123.11.0/24", "gvt-gocni1")
    else {
        return;
    };
    let mut names: Vec<&str> = seen["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["eth0", "lo"], "{seen}");
}

#[test]
fn containerd_gets_a_pod_ip_in_veth_bridge_mode() {
    pod_ip_via_go_cni("gocni-veth", "veth-bridge", "10.123.12.0/24", "gvt-gocni2");
}
