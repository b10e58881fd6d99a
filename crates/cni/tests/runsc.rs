//! The cnitool round trip inside a gVisor sandbox (`runsc do`), against network namespaces
//! made with `unshare -n` in the sandbox (`ip netns` does not work there).
//!
//! Which gVisor: $K3S_GVISOR_RUNSC, a ':'-separated list of runsc binaries (default `runsc`
//! on PATH), so one run can cover Debian's 2022 runsc and a current one. Each gets the same
//! assertions; what differs is what the kernel allows, and the result must say which:
//! - current gVisor creates veth pairs and bridges: `auto` wires eth0 and two pods talk;
//! - Debian's 2022 gVisor cannot setns into a namespace: nothing inside is configured and
//!   the result lists no interface carrying the address.
//!
//! Needs root, runsc, busybox (busybox-static), unshare/nsenter (util-linux), ip (iproute2:
//! busybox's cannot make veth pairs) and cnitool.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Command;

const SCRIPT: &str = r#"
set -u
unshare -n sleep 600 & A=$!
unshare -n sleep 600 & B=$!
own=$(readlink /proc/self/ns/net)
for i in $(seq 100); do
  [ "$(readlink /proc/$A/ns/net)" != "$own" ] && [ "$(readlink /proc/$B/ns/net)" != "$own" ] && break
  sleep 0.1
done
NS_A=/proc/$A/ns/net; NS_B=/proc/$B/ns/net
step() { name=$1; shift; "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"; rc=$?
  echo "@@step $name $rc"; cat "$WORK/$name.out"; echo; echo "@@stderr"; cat "$WORK/$name.err"; echo "@@end"; }
step add_a "$CNITOOL" add "$NET" "$NS_A"
step add_b "$CNITOOL" add "$NET" "$NS_B"
step check_a "$CNITOOL" check "$NET" "$NS_A"
step status "$CNITOOL" status "$NET" "$NS_A"
IP_A=$(sed -n 's/.*"address": *"\([0-9.]*\)\/.*/\1/p' "$WORK/add_a.out" | head -n1)
HOST_A=; HOST_B=
host_of() { sed -n 's/.*"name": *"\(gv[a-z2-7]\{13\}\)".*/\1/p' "$WORK/$1.out" | head -n1; }
if grep -q '"eth0"' "$WORK/add_a.out"; then
  # Connectivity probe, only meaningful when eth0 was wired: pod A listens, pod B connects.
  step talk sh -c 'nsenter --net="$0" sh -c "echo hello | busybox nc -l -p 7777" & sleep 1; nsenter --net="$1" busybox nc -w 3 "$2" 7777' "$NS_A" "$NS_B" "$IP_A"
  HOST_A=$(host_of add_a); HOST_B=$(host_of add_b)
  # The ownership mark: the host end's MAC address, given when the link is created.
  step mac_a ip link show "$HOST_A"
fi
step lo_a nsenter --net="$NS_A" busybox ip link show lo
step del_a "$CNITOOL" del "$NET" "$NS_A"
step del_a_again "$CNITOOL" del "$NET" "$NS_A"
if [ -n "$HOST_A" ]; then
  # Someone else's link takes A's name: ADD must fail and leave it. B's host end is replaced
  # by someone else's link too: DEL must leave it.
  step stranger_a ip link add "$HOST_A" type veth peer name gvt-str-a
  step add_a_over_stranger "$CNITOOL" add "$NET" "$NS_A"
  step stranger_a_kept ip link show "$HOST_A"
  ip link del "$HOST_A"
  step stranger_b sh -c 'ip link del "$0" && ip link add "$0" type veth peer name gvt-str-b' "$HOST_B"
fi
step del_b "$CNITOOL" del "$NET" "$NS_B"
if [ -n "$HOST_B" ]; then
  step stranger_b_kept ip link show "$HOST_B"
  ip link del "$HOST_B"
fi
step store busybox ls -a "$STORE"
kill $A $B
"#;

struct Step {
    rc: i32,
    stdout: String,
    stderr: String,
}

fn parse_steps(output: &str) -> HashMap<String, Step> {
    let mut steps = HashMap::new();
    let mut lines = output.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("@@step ") else {
            continue;
        };
        let (name, rc) = rest.split_once(' ').unwrap();
        let (mut stdout, mut stderr, mut in_err) = (String::new(), String::new(), false);
        for l in lines.by_ref() {
            match l {
                "@@stderr" => in_err = true,
                "@@end" => break,
                _ if in_err => stderr += &format!("{l}\n"),
                _ => stdout += &format!("{l}\n"),
            }
        }
        steps.insert(
            name.to_string(),
            Step {
                rc: rc.parse().unwrap(),
                stdout,
                stderr,
            },
        );
    }
    steps
}

fn round_trip_in(runsc: &str) {
    let net = Network::new(
        "runsc",
        "1.1.0",
        json!({"mode": "auto", "subnet": "10.123.10.0/24", "bridge": "gvt-runsc"}),
    );
    let work = net.conf_dir.parent().unwrap().to_path_buf();
    let script_path = work.join("in-sandbox.sh");
    std::fs::write(&script_path, SCRIPT).unwrap();
    let sandbox = testkit::runsc_sh(runsc);
    let out = Command::new("timeout")
        .arg("180")
        .arg(sandbox.get_program())
        .args(sandbox.get_args())
        .arg(&script_path)
        .env("CNITOOL", cnitool())
        .env("NET", &net.name)
        .env("NETCONFPATH", &net.conf_dir)
        .env("CNI_PATH", cni_path())
        .env("STORE", net.store_dir())
        .env("WORK", &work)
        .output()
        .unwrap_or_else(|e| panic!("running {runsc}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let context = format!(
        "runsc {runsc}\nstdout:\n{text}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sandbox failed: {context}");
    let steps = parse_steps(&text);
    let step = |name: &str| {
        steps
            .get(name)
            .unwrap_or_else(|| panic!("step {name} did not run: {context}"))
    };
    for name in [
        "add_a",
        "add_b",
        "check_a",
        "status",
        "del_a",
        "del_a_again",
        "del_b",
    ] {
        let s = step(name);
        assert_eq!(
            s.rc, 0,
            "{name} failed in the sandbox: {}{}\n{context}",
            s.stdout, s.stderr
        );
    }

    let result: Value =
        serde_json::from_str(step("add_a").stdout.trim()).expect("ADD result is JSON");
    let address = check_result_shape(&result, "1.1.0");
    let names = interface_names(&result);
    eprintln!("{runsc}: ADD listed interfaces {names:?} for {address}");
    if names.iter().any(|n| n == "eth0") {
        // This gVisor creates veth pairs: the pods must really reach each other.
        let talk = step("talk");
        assert!(
            talk.stdout.contains("hello"),
            "veth-bridge reported, but pod B could not reach {address}: {context}"
        );
        assert!(step("lo_a").stdout.contains("UP"), "lo not up: {context}");
        eprintln!("{runsc}: pod B reached pod A at {address} over the bridge");
        ownership_is_checked(&result, &step, &context);
    } else {
        // No veth: the result must not pretend. Only lo (or nothing, when the namespace
        // cannot be joined) is listed, and no interface claims the address.
        assert!(
            names.iter().all(|n| n == "lo"),
            "loopback-only result lists {names:?}: {context}"
        );
        assert!(
            result["ips"][0].get("interface").is_none(),
            "address tied to an interface: {context}"
        );
        let why = &step("add_a").stderr;
        assert!(
            why.contains("falls back to loopback-only") || why.contains("cannot join"),
            "the fallback must be explained on stderr: {context}"
        );
    }
    let listing = &step("store").stdout;
    assert!(
        !listing
            .lines()
            .any(|l| l.trim().parse::<std::net::Ipv4Addr>().is_ok()),
        "store not empty after DEL: {listing}\n{context}"
    );
}

/// Where this gVisor makes veths: the host end carries the MAC the result reports (set at
/// creation: gVisor refuses the alias IFLA_IFALIAS), ADD fails over a link of its name that
/// is someone else's, and DEL leaves such a link alone.
fn ownership_is_checked<'a>(result: &Value, step: &dyn Fn(&str) -> &'a Step, context: &str) {
    let host = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["name"]
                .as_str()
                .is_some_and(|n| n.len() == 15 && n.starts_with("gv"))
        })
        .unwrap_or_else(|| panic!("no host veth in the result: {context}"));
    let mac = host["mac"]
        .as_str()
        .expect("the host veth's MAC in the result");
    let shown = &step("mac_a").stdout;
    assert!(
        shown.contains(mac),
        "the host veth does not carry {mac}: {shown}\n{context}"
    );
    let first_octet = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(
        first_octet & 0b11,
        0b10,
        "{mac}: locally administered, unicast"
    );
    for name in [
        "stranger_a",
        "stranger_b",
        "stranger_a_kept",
        "stranger_b_kept",
    ] {
        assert_eq!(
            step(name).rc,
            0,
            "{name}: {}{}\n{context}",
            step(name).stdout,
            step(name).stderr
        );
    }
    let refused = step("add_a_over_stranger");
    assert_ne!(
        refused.rc, 0,
        "ADD over someone else's link succeeded: {context}"
    );
    for (name, s) in [("add_a_over_stranger", refused), ("del_b", step("del_b"))] {
        assert!(
            format!("{}{}", s.stdout, s.stderr).contains("not made by this attachment"),
            "{name} must name the link it left: {context}"
        );
    }
}

#[test]
fn cnitool_round_trip_inside_runsc() {
    if !require_root() {
        return;
    }
    require_tool("busybox", "apt-get install busybox-static");
    require_tool("nsenter", "apt-get install util-linux");
    require_tool("ip", "apt-get install iproute2");
    let list = std::env::var("K3S_GVISOR_RUNSC").unwrap_or_else(|_| "runsc".into());
    for runsc in list.split(':').filter(|s| !s.is_empty()) {
        if !runsc.contains('/') {
            require_tool(
                runsc,
                "apt-get install runsc, or set K3S_GVISOR_RUNSC to a runsc binary",
            );
        }
        round_trip_in(runsc);
    }
}
