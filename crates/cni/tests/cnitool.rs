//! gvisor-cni driven by a CNI client that is not ours: `cnitool` from
//! github.com/containernetworking/cni (libcni), against real network namespaces.
//! Needs root, `ip` (iproute2) and Go (to build cnitool) or K3S_GVISOR_CNITOOL.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// ADD, CHECK, STATUS, DEL, DEL again, CHECK-after-DEL for one mode and spec version; the ADD
/// result. None (skipped) when not root.
fn round_trip(tag: &str, version: &str, mode: &str, subnet: &str, bridge: &str) -> Option<Value> {
    if !require_root() {
        return None;
    }
    let net = Network::new(
        tag,
        version,
        json!({"mode": mode, "subnet": subnet, "bridge": bridge}),
    );
    let ns = NetNs::new(tag);

    let result = ok_json("cnitool add", &net.cnitool("add", &ns.path()));
    let address = check_result_shape(&result, version);
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    assert!(subnet.contains(&address), "{address} outside {subnet}");
    assert_eq!(net.allocations(), vec![address.to_string()]);
    assert!(
        ns.ip(&["link", "show", "lo"]).contains("UP"),
        "lo must be up in the pod netns"
    );

    let names = interface_names(&result);
    if names.iter().any(|n| n == "eth0") {
        // veth-bridge: the interface the result names exists, with the address and a route.
        assert!(
            ns.ip(&["-4", "addr", "show", "eth0"])
                .contains(&format!("{address}/")),
            "eth0 lacks {address}"
        );
        assert!(
            ns.ip(&["route"]).contains("default via"),
            "no default route in pod netns"
        );
        assert_eq!(
            result["ips"][0]["interface"],
            json!(names.iter().position(|n| n == "eth0").unwrap())
        );
    } else {
        // loopback-only: only lo is reported, and the address is not tied to any interface.
        assert_eq!(names, vec!["lo"], "{result}");
        assert!(result["ips"][0].get("interface").is_none(), "{result}");
        assert!(
            !ns.ip(&["link"]).contains("eth0"),
            "loopback-only must not create eth0"
        );
    }

    // A retried ADD (runtime restart) keeps the address and leaves a consistent namespace.
    let again = ok_json("cnitool add (repeated)", &net.cnitool("add", &ns.path()));
    assert_eq!(
        check_result_shape(&again, version),
        address,
        "a repeated ADD must keep the address"
    );
    assert_eq!(net.allocations(), vec![address.to_string()]);

    ok_json("cnitool check", &net.cnitool("check", &ns.path()));
    if version == "1.1.0" {
        ok_json("cnitool status", &net.cnitool("status", &ns.path()));
    }
    ok_json("cnitool del", &net.cnitool("del", &ns.path()));
    assert!(net.allocations().is_empty(), "DEL must release the address");
    if names.iter().any(|n| n == "eth0") {
        assert!(
            !ns.ip(&["link"]).contains("eth0"),
            "DEL must remove the veth"
        );
    }
    ok_json("cnitool del (repeated)", &net.cnitool("del", &ns.path()));
    let _ = std::process::Command::new("ip")
        .args(["link", "del", bridge])
        .output();
    Some(result)
}

#[test]
fn round_trip_loopback_only_1_1_0() {
    round_trip(
        "rt-lo",
        "1.1.0",
        "loopback-only",
        "10.123.1.0/24",
        "gvt-rt1",
    );
}

#[test]
fn round_trip_veth_bridge_1_0_0() {
    let Some(result) = round_trip(
        "rt-veth",
        "1.0.0",
        "veth-bridge",
        "10.123.2.0/24",
        "gvt-rt2",
    ) else {
        return;
    };
    assert_eq!(result["routes"][0]["gw"], "10.123.2.1");
}

#[test]
fn round_trip_auto_0_4_0_uses_veth_on_linux() {
    let Some(result) = round_trip("rt-auto", "0.4.0", "auto", "10.123.3.0/24", "gvt-rt3") else {
        return;
    };
    let names = interface_names(&result);
    assert!(
        names.iter().any(|n| n == "eth0"),
        "on Linux, auto must wire a veth: {result}"
    );
}

/// Two pods on the veth-bridge network really talk: a TCP connection from one namespace to
/// the address the other one was given.
#[test]
fn veth_bridge_pods_talk() {
    if !require_root() {
        return;
    }
    let net = Network::new(
        "talk",
        "1.1.0",
        json!({"mode": "veth-bridge", "subnet": "10.123.4.0/24", "bridge": "gvt-talk"}),
    );
    let (a, b) = (NetNs::new("talk-a"), NetNs::new("talk-b"));
    let addr_a = check_result_shape(&ok_json("add a", &net.cnitool("add", &a.path())), "1.1.0");
    ok_json("add b", &net.cnitool("add", &b.path()));

    let listener = in_netns(&a.path(), move || {
        std::net::TcpListener::bind((addr_a, 7777)).expect("bind in pod a")
    });
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        std::io::Write::write_all(&mut conn, b"hello").unwrap();
        peer
    });
    let greeting = in_netns(&b.path(), move || {
        let mut conn = std::net::TcpStream::connect_timeout(
            &(addr_a, 7777).into(),
            std::time::Duration::from_secs(5),
        )
        .expect("pod b connects to pod a");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut conn, &mut text).unwrap();
        text
    });
    assert_eq!(greeting, "hello");
    let peer = server.join().unwrap();
    assert!(
        matches!(peer.ip(), std::net::IpAddr::V4(ip) if ip.octets()[..3] == [10, 123, 4]),
        "peer {peer}"
    );
    ok_json("del a", &net.cnitool("del", &a.path()));
    ok_json("del b", &net.cnitool("del", &b.path()));
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "gvt-talk"])
        .output();
}

/// Runs `work` on a thread inside the namespace at `path`; sockets created there stay in it.
fn in_netns<T: Send + 'static>(path: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(path).unwrap();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on an open namespace file, affecting only this thread.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        work()
    })
    .join()
    .unwrap()
}

/// 64 ADDs at once get 64 distinct addresses; 64 DELs at once leave the store empty.
#[test]
fn parallel_adds_get_distinct_addresses_and_dels_empty_the_store() {
    if !require_root() {
        return;
    }
    let net = std::sync::Arc::new(Network::new(
        "par",
        "1.1.0",
        json!({"mode": "auto", "subnet": "10.123.5.0/24", "bridge": "gvt-par"}),
    ));
    let namespaces: Vec<NetNs> = (0..64).map(|i| NetNs::new(&format!("par{i}"))).collect();
    let paths: Vec<String> = namespaces.iter().map(NetNs::path).collect();

    let parallel = |command: &'static str| -> Vec<std::process::Output> {
        let handles: Vec<_> = paths
            .iter()
            .cloned()
            .map(|p| {
                let net = net.clone();
                std::thread::spawn(move || net.cnitool(command, &p))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    };

    let results = parallel("add");
    let addresses: HashSet<Ipv4Addr> = results
        .iter()
        .map(|out| check_result_shape(&ok_json("parallel add", out), "1.1.0"))
        .collect();
    assert_eq!(
        addresses.len(),
        64,
        "64 parallel ADDs must get 64 distinct addresses"
    );
    assert_eq!(net.allocations().len(), 64);

    for out in parallel("del") {
        ok_json("parallel del", &out);
    }
    assert!(
        net.allocations().is_empty(),
        "store not empty after 64 DELs: {:?}",
        net.allocations()
    );
    for out in parallel("del") {
        ok_json("repeated del", &out);
    }
    drop(namespaces);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "gvt-par"])
        .output();
}

/// GC drops exactly the attachments not named in cni.dev/valid-attachments; cnitool's own
/// gc (which DELs every cached attachment, then GCs with no list) empties the store.
#[test]
fn gc_keeps_valid_attachments_only() {
    if !require_root() {
        return;
    }
    let net = Network::new(
        "gc",
        "1.1.0",
        json!({"mode": "loopback-only", "subnet": "10.123.6.0/24"}),
    );
    let namespaces: Vec<NetNs> = (0..3).map(|i| NetNs::new(&format!("gc{i}"))).collect();
    for ns in &namespaces {
        ok_json("add", &net.cnitool("add", &ns.path()));
    }
    let records: Vec<Value> = net
        .allocations()
        .iter()
        .map(|ip| {
            serde_json::from_slice(&std::fs::read(net.store_dir().join(ip)).unwrap()).unwrap()
        })
        .collect();
    let keep = &records[0];
    let mut conf = net.stdin_conf("1.1.0");
    conf["cni.dev/valid-attachments"] =
        json!([{"containerID": keep["containerID"], "ifname": keep["ifname"]}]);
    let out = run_plugin(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/nonexistent")],
        &serde_json::to_vec(&conf).unwrap(),
    );
    ok_json("GC with one valid attachment", &out);
    let kept = net.allocations();
    assert_eq!(
        kept,
        vec![keep["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()]
    );

    ok_json("cnitool gc", &net.cnitool("gc", &namespaces[0].path()));
    assert!(
        net.allocations().is_empty(),
        "cnitool gc must leave nothing: {:?}",
        net.allocations()
    );
}
