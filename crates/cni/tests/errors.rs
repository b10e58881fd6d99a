//! Bad input never corrupts the store: every malformed request gets the spec's error JSON
//! with a clear message and a non-zero exit, and a store damaged by a crash is recovered.
//! The plugin is run directly, the way a runtime runs it. Needs root and `ip` for the
//! tests that ADD into a namespace.

mod common;

use common::*;
use serde_json::{json, Value};

fn add_env<'a>(ns: &'a str, id: &'a str) -> Vec<(&'static str, &'a str)> {
    env_for("ADD", ns, id)
}

/// The CNI_* environment of `command` for container `id` in netns `ns`.
fn env_for<'a>(command: &'a str, ns: &'a str, id: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", ns),
        ("CNI_PATH", "/x"),
    ]
}

fn conf(net: &Network) -> Vec<u8> {
    serde_json::to_vec(&net.stdin_conf("1.1.0")).unwrap()
}

#[test]
fn malformed_json_is_decode_error_6_and_touches_nothing() {
    let net = Network::new("badjson", "1.1.0", json!({"mode": "loopback-only"}));
    let out = run_plugin(
        &add_env("/proc/self/ns/net", "c1"),
        b"{\"cniVersion\": \"1.1.0\", \"name\": ",
    );
    let err = error_json("malformed JSON", &out);
    assert_eq!(err["code"], 6, "{err}");
    assert!(
        err["msg"].as_str().unwrap().contains("not valid JSON"),
        "{err}"
    );
    assert!(
        !net.store_dir().exists(),
        "a rejected request must not create the store"
    );
}

#[test]
fn unknown_version_is_error_1_and_lists_supported_versions() {
    let net = Network::new("badver", "1.1.0", json!({}));
    let mut c = net.stdin_conf("1.1.0");
    c["cniVersion"] = "0.2.0".into();
    let out = run_plugin(
        &add_env("/proc/self/ns/net", "c1"),
        &serde_json::to_vec(&c).unwrap(),
    );
    let err = error_json("unknown version", &out);
    assert_eq!(err["code"], 1, "{err}");
    assert!(err["details"].as_str().unwrap().contains("1.1.0"), "{err}");
    assert!(!net.store_dir().exists());
}

#[test]
fn missing_env_is_error_4_naming_the_variable() {
    let net = Network::new("badenv", "1.1.0", json!({}));
    let err = error_json("no CNI_COMMAND", &run_plugin(&[], &conf(&net)));
    assert_eq!(err["code"], 4);
    assert!(
        err["msg"].as_str().unwrap().contains("CNI_COMMAND"),
        "{err}"
    );
    for missing in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
        let env: Vec<_> = add_env("/proc/self/ns/net", "c1")
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let err = error_json(missing, &run_plugin(&env, &conf(&net)));
        assert_eq!(err["code"], 4, "{err}");
        assert!(err["msg"].as_str().unwrap().contains(missing), "{err}");
    }
    let err = error_json(
        "bad netns",
        &run_plugin(&add_env("/nonexistent/netns", "c1"), &conf(&net)),
    );
    assert_eq!(err["code"], 4, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("CNI_NETNS"), "{err}");
    assert!(
        net.allocations().is_empty(),
        "a failed ADD must not keep an address"
    );
}

#[test]
fn invalid_config_is_error_7() {
    let net = Network::new("badconf", "1.1.0", json!({}));
    for (key, value) in [
        ("subnet", json!("banana")),
        ("type", json!("bridge")),
        ("mode", json!("fast")),
        ("rangeStart", json!("10.200.0.1")),
    ] {
        let mut c = net.stdin_conf("1.1.0");
        c[key] = value;
        let err = error_json(
            key,
            &run_plugin(
                &add_env("/proc/self/ns/net", "c1"),
                &serde_json::to_vec(&c).unwrap(),
            ),
        );
        assert_eq!(err["code"], 7, "{key}: {err}");
    }
}

#[test]
fn version_command_and_1_1_only_commands() {
    let out = run_plugin(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.0.0"}"#);
    let v = ok_json("VERSION", &out);
    assert_eq!(
        v,
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
    );
    let net = Network::new("oldstatus", "1.0.0", json!({}));
    let err = error_json(
        "STATUS on 1.0.0",
        &run_plugin(
            &[("CNI_COMMAND", "STATUS")],
            &serde_json::to_vec(&net.stdin_conf("1.0.0")).unwrap(),
        ),
    );
    assert_eq!(err["code"], 1, "{err}");
}

/// A crash mid-ADD leaves a temporary file; a damaged allocation file keeps its address
/// reserved. ADD recovers around both, GC removes the damaged file.
#[test]
fn half_written_store_is_recovered() {
    if !require_root() {
        return;
    }
    let net = Network::new(
        "halfwritten",
        "1.1.0",
        json!({"mode": "loopback-only", "subnet": "10.123.7.0/24"}),
    );
    let store = net.store_dir();
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(
        store.join("10.123.7.2"),
        br#"{"containerID":"crashed","ifna"#,
    )
    .unwrap();
    std::fs::write(
        store.join(".10.123.7.3.4242.tmp"),
        br#"{"containerID":"cra"#,
    )
    .unwrap();
    std::fs::write(store.join("last_reserved_ip"), b"10.12").unwrap();
    let ns = NetNs::new("halfwritten");
    let path = ns.path();

    let out = run_plugin(&add_env(&path, "c1"), &conf(&net));
    let result = ok_json("ADD over a damaged store", &out);
    let address = check_result_shape(&result, "1.1.0");
    assert_ne!(
        address.to_string(),
        "10.123.7.2",
        "a damaged file's address must stay reserved"
    );
    assert!(
        !store.join(".10.123.7.3.4242.tmp").exists(),
        "leftover temporary must be removed"
    );
    let warnings = stderr_of(&out);
    assert!(
        warnings.contains("10.123.7.2") && warnings.contains("damaged"),
        "stderr should explain: {warnings}"
    );

    // GC with c1 valid: the damaged file goes, c1 stays.
    let mut gc = net.stdin_conf("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    ok_json(
        "GC",
        &run_plugin(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
            &serde_json::to_vec(&gc).unwrap(),
        ),
    );
    assert_eq!(net.allocations(), vec![address.to_string()]);

    let del = env_for("DEL", &path, "c1");
    ok_json("DEL", &run_plugin(&del, &conf(&net)));
    ok_json("DEL again", &run_plugin(&del, &conf(&net)));
    assert!(net.allocations().is_empty());
}

/// A full range is a clear error (ADD code 100, STATUS code 50), and DEL makes room again.
#[test]
fn exhaustion_is_reported_and_recoverable() {
    if !require_root() {
        return;
    }
    let net = Network::new(
        "exhaust",
        "1.1.0",
        json!({"mode": "loopback-only", "subnet": "10.123.8.0/29"}),
    );
    let ns = NetNs::new("exhaust");
    let path = ns.path();
    let ids: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
    for id in &ids[..5] {
        ok_json("ADD", &run_plugin(&add_env(&path, id), &conf(&net)));
    }
    let err = error_json(
        "ADD into a full range",
        &run_plugin(&add_env(&path, &ids[5]), &conf(&net)),
    );
    assert_eq!(err["code"], 100, "{err}");
    assert!(
        err["msg"].as_str().unwrap().contains("no free address"),
        "{err}"
    );
    let status = error_json(
        "STATUS when full",
        &run_plugin(
            &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")],
            &conf(&net),
        ),
    );
    assert_eq!(status["code"], 50, "{status}");

    let del = env_for("DEL", &path, &ids[0]);
    ok_json("DEL", &run_plugin(&del, &conf(&net)));
    ok_json(
        "STATUS with one free",
        &run_plugin(
            &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")],
            &conf(&net),
        ),
    );
    ok_json(
        "ADD after DEL",
        &run_plugin(&add_env(&path, &ids[5]), &conf(&net)),
    );
}

/// CHECK compares the runtime's prevResult with the store and the namespace.
#[test]
fn check_detects_a_mismatched_prev_result_and_a_missing_interface() {
    if !require_root() {
        return;
    }
    let net = Network::new(
        "check",
        "1.1.0",
        json!({"mode": "veth-bridge", "subnet": "10.123.9.0/24", "bridge": "gvt-check"}),
    );
    let ns = NetNs::new("check");
    let path = ns.path();
    let result = ok_json("ADD", &run_plugin(&add_env(&path, "c1"), &conf(&net)));
    let check_env = env_for("CHECK", &path, "c1");
    let with_prev = |prev: &Value| {
        let mut c = net.stdin_conf("1.1.0");
        c["prevResult"] = prev.clone();
        serde_json::to_vec(&c).unwrap()
    };
    ok_json("CHECK", &run_plugin(&check_env, &with_prev(&result)));

    let mut wrong = result.clone();
    wrong["ips"][0]["address"] = "10.123.9.200/24".into();
    assert_eq!(
        error_json(
            "CHECK wrong prevResult",
            &run_plugin(&check_env, &with_prev(&wrong))
        )["code"],
        101
    );
    let err = error_json(
        "CHECK without prevResult",
        &run_plugin(&check_env, &conf(&net)),
    );
    assert_eq!(err["code"], 7, "{err}");

    ns.ip(&["link", "del", "eth0"]);
    let err = error_json(
        "CHECK after eth0 vanished",
        &run_plugin(&check_env, &with_prev(&result)),
    );
    assert!(err["msg"].as_str().unwrap().contains("eth0"), "{err}");
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "gvt-check"])
        .output();
}

/// `ip ARGS` on the host, its output.
fn ip(args: &[&str]) -> std::process::Output {
    std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap()
}

/// Someone else's link takes `name`: a veth pair (kernel-chosen MAC), as a colliding pod's
/// would be. Returns its ifindex, by which the tests see whether it survived.
fn stranger_takes(name: &str, peer: &str) -> Option<String> {
    let made = ip(&["link", "add", name, "type", "veth", "peer", "name", peer]);
    assert!(made.status.success(), "{made:?}");
    ifindex(name)
}

fn ifindex(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).ok()
}

/// The host end's name is derived from (container ID, ifname) and uses IFNAMSIZ's whole budget
/// (15 characters); ADD marks it with the attachment's MAC address at creation and replaces a
/// leftover carrying that mark. A link of that name that this attachment did not make (a hash
/// collision with another pod's live veth, or anyone's link) is never deleted by ADD's
/// stale-link cleanup: ADD fails, naming it.
#[test]
fn add_never_deletes_a_link_of_its_name_that_it_did_not_make() {
    if !require_root() {
        return;
    }
    let net = Network::new(
        "owner",
        "1.1.0",
        json!({"mode": "veth-bridge", "subnet": "10.123.9.0/24", "bridge": "gvt-owner"}),
    );
    let ns = NetNs::new("owner");
    let add = || run_plugin(&add_env(&ns.path(), "c-owner"), &conf(&net));
    let del = || run_plugin(&env_for("DEL", &ns.path(), "c-owner"), &conf(&net));
    let result = ok_json("first ADD", &add());
    let host = interface_names(&result)
        .into_iter()
        .find(|n| n.starts_with("gv") && n != "gvt-owner")
        .expect("a host veth in the result");
    let mac = std::fs::read_to_string(format!("/sys/class/net/{host}/address")).unwrap();
    // A leftover of this attachment's own earlier ADD carries the mark and is replaced.
    let again = add();
    let mac_again = std::fs::read_to_string(format!("/sys/class/net/{host}/address"));
    ok_json("DEL", &del());
    let _ = ok_json("ADD over this attachment's own leftover", &again);
    assert_eq!(
        mac_again.ok().as_ref(),
        Some(&mac),
        "the mark is derived, stable"
    );
    let first_octet = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(
        first_octet & 0b11,
        0b10,
        "{mac}: locally administered, unicast"
    );

    let stranger = stranger_takes(&host, "gvt-stranger");
    let out = add();
    let survived = ifindex(&host);
    let _ = ip(&["link", "del", &host]);
    let _ = del();
    let _ = ip(&["link", "del", "gvt-owner"]);
    assert_eq!(
        survived, stranger,
        "ADD deleted {host}, a link it did not make"
    );
    assert_eq!(
        (
            host.len(),
            host[2..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        ),
        (15, true),
        "{host}: want gv + 13 base32 characters (65 bits)"
    );
    let err = error_json("ADD over a stranger's link", &out);
    let text = err.to_string();
    assert!(
        text.contains(&host) && text.contains("not made by") && text.contains(mac.trim()),
        "{err}"
    );
}

/// DEL removes the host end only when it carries the attachment's MAC: a link that took the
/// name after ADD (the pod's veth went with its namespace, someone's link came) is left alone,
/// DEL still succeeds (it is idempotent) and says why, and the address is released.
#[test]
fn del_never_deletes_a_link_of_its_name_that_it_did_not_make() {
    if !require_root() {
        return;
    }
    let net = Network::new(
        "owner-del",
        "1.1.0",
        json!({"mode": "veth-bridge", "subnet": "10.123.8.0/24", "bridge": "gvt-ownerd"}),
    );
    let ns = NetNs::new("owner-del");
    let result = ok_json(
        "ADD",
        &run_plugin(&add_env(&ns.path(), "c-od"), &conf(&net)),
    );
    let host = interface_names(&result)
        .into_iter()
        .find(|n| n.starts_with("gv") && n != "gvt-ownerd")
        .expect("a host veth in the result");
    let _ = ip(&["link", "del", &host]);
    let stranger = stranger_takes(&host, "gvt-strangerd");
    let out = run_plugin(&env_for("DEL", &ns.path(), "c-od"), &conf(&net));
    let survived = ifindex(&host);
    let _ = ip(&["link", "del", &host]);
    let _ = ip(&["link", "del", "gvt-ownerd"]);
    assert_eq!(
        survived, stranger,
        "DEL deleted {host}, a link it did not make"
    );
    assert!(out.status.success(), "DEL must stay idempotent: {out:?}");
    assert!(
        stderr_of(&out).contains("not made by this attachment"),
        "DEL must say why it left {host}: {}",
        stderr_of(&out)
    );
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
}
