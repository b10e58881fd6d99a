//! svcproxy against a real k3s API, on plain Linux (in a private network and mount namespace)
//! and inside the current gVisor: ClusterIP, NodePort and LoadBalancer (status and ports) over
//! TCP and UDP, an endpoint that stops being ready gone within 5 s, zero endpoints refused,
//! the API's own Service, CoreDNS from the shipped image answering through the DNS ClusterIP,
//! DNS still answering another pod after a 10,000-query flood, a new client answered beside
//! 2,000 idle connections, quiet logs, clean exit.
//! The steps are in `scenario.sh`, the same script on both hosts.
//!
//! Needs root, iproute2, util-linux (`unshare`), busybox (busybox-static), and:
//! - k3s: $K3S_GVISOR_K3S, else the pipeline's target/k3s-gvisor/out/patched/bin/k3s
//!   (`cargo xtask bundle` builds it; scripts/test.sh runs that first);
//! - the CoreDNS image: $K3S_GVISOR_COREDNS_IMAGE, else target/k3s-gvisor/out/images/coredns.oci.tar;
//! - the current gVisor: $K3S_GVISOR_CURRENT_RUNSC, else `cargo xtask tool runsc`. Debian's 2022
//!   gVisor cannot make veth pairs or bridges, so pods there have no network to proxy for.

use flate2::read::GzDecoder;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// The steps scenario.sh must report as `@@ok`.
const STEPS: &[&str] = &[
    "k3s-ready",
    "bridge-created",
    "tcp-clusterip",
    "udp-clusterip",
    "tcp-nodeport-pod-to-gateway",
    "udp-nodeport-pod-to-gateway",
    "tcp-nodeport-node-ip",
    "udp-nodeport-node-ip",
    "tcp-nodeport-localhost",
    "tcp-clusterip-from-node",
    "kubernetes-service",
    "lb-status-rbac",
    "lb-ingress",
    "tcp-lb-node-ip",
    "udp-lb-node-ip",
    "tcp-lb-pod-to-gateway",
    "lb-class-left-alone",
    "lb-node-not-ready",
    "not-ready-dropped",
    "not-ready-dropped-udp",
    "zero-endpoints-refused",
    "scaled-up",
    "corefile",
    "dns-kubernetes",
    "dns-web",
    "dns-flood",
    "tcp-idle-2000",
    "tcp-released",
    "quiet",
    "status-file",
    "clean-exit",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One k3s at a time: the two hosts' tests would otherwise share two cores. And one per
/// machine: the e2e and soak runs (xtask/src/sandbox.rs) hold the same host lock while their
/// k3s runs, and a second k3s would skew their timing checks.
fn one_at_a_time() -> (MutexGuard<'static, ()>, std::fs::File) {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let file = testkit::lock_machine()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", testkit::MACHINE_LOCK));
    (guard, file)
}

/// False (skip) when not root (testkit::root_or_skip); panics when a tool is missing.
fn require_root_and_tools() -> bool {
    if !testkit::root_or_skip("makes network namespaces, mounts and runs runsc") {
        return false;
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
        ("busybox", "busybox-static"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "`{tool}` is not on PATH: apt-get install {package}");
    }
    true
}

fn input(env: &str, default: PathBuf, how: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    assert!(
        path.is_file(),
        "{} is missing: {how} (or set {env})",
        path.display()
    );
    path
}

fn k3s() -> PathBuf {
    input(
        "K3S_GVISOR_K3S",
        repo_root().join("target/k3s-gvisor/out/patched/bin/k3s"),
        "`cargo xtask bundle` builds it",
    )
}

/// The current gVisor's runsc, built from the Go module proxy by xtask (cached).
fn current_runsc() -> PathBuf {
    if let Some(path) = std::env::var_os("K3S_GVISOR_CURRENT_RUNSC") {
        return PathBuf::from(path);
    }
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["xtask", "tool", "runsc"])
        .current_dir(repo_root())
        .output()
        .expect("running cargo xtask tool runsc");
    assert!(
        out.status.success(),
        "cargo xtask tool runsc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .trim(),
    )
}

/// The entrypoint binary of the shipped CoreDNS image (an OCI archive as `ctr images import`
/// takes it), written to `to`: this is the very file the pod would run.
fn extract_coredns(to: &Path) {
    let archive = input(
        "K3S_GVISOR_COREDNS_IMAGE",
        repo_root().join("target/k3s-gvisor/out/images/coredns.oci.tar"),
        "`cargo xtask bundle` builds the image",
    );
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut tar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        blobs.insert(name.trim_start_matches("./").to_string(), data);
    }
    let json = |name: &str| -> Value {
        serde_json::from_slice(
            blobs
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing in {}", archive.display())),
        )
        .unwrap()
    };
    let blob = |digest: &Value| format!("blobs/{}", digest.as_str().unwrap().replace(':', "/"));
    let index = json("index.json");
    let manifest = json(&blob(&index["manifests"][0]["digest"]));
    let config = json(&blob(&manifest["config"]["digest"]));
    let entrypoint = config["config"]["Entrypoint"][0]
        .as_str()
        .expect("image has an entrypoint");
    let wanted = entrypoint.trim_start_matches('/');
    let mut found = None;
    for layer in manifest["layers"].as_array().unwrap() {
        let data = &blobs[&blob(&layer["digest"])];
        let mut tar = tar::Archive::new(GzDecoder::new(data.as_slice()));
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                == wanted
            {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                found = Some(bytes);
            }
        }
    }
    let bytes = found.unwrap_or_else(|| {
        panic!(
            "{entrypoint} not found in the layers of {}",
            archive.display()
        )
    });
    std::fs::write(to, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

enum Host {
    PlainLinux,
    Gvisor(PathBuf),
}

fn run_scenario(host: Host) {
    if !require_root_and_tools() {
        return;
    }
    let _one = one_at_a_time();
    let label = match host {
        Host::PlainLinux => "linux",
        Host::Gvisor(_) => "gvisor",
    };
    // Short paths under /tmp: k3s puts unix sockets in its data dir (108-byte limit).
    let work = PathBuf::from(format!("/tmp/svcproxy-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    extract_coredns(&work.join("coredns"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenario.sh");

    // The whole scenario is bounded: a hang fails the test instead of stalling CI.
    let mut command = Command::new("timeout");
    command.arg("300");
    match &host {
        // A PID namespace too: when the script (its PID 1) exits, whatever it started goes with it.
        Host::PlainLinux => command.args(["unshare", "-m", "-n", "-p", "-f", "--mount-proc"]),
        Host::Gvisor(runsc) => {
            let sandbox = testkit::runsc_sh(runsc);
            command.arg(sandbox.get_program()).args(sandbox.get_args())
        }
    };
    if matches!(host, Host::PlainLinux) {
        command.arg("/bin/sh");
    }
    command
        .arg(&script)
        .env("K3S", k3s())
        .env("SVCPROXY", env!("CARGO_BIN_EXE_svcproxy"))
        .env("TESTKIT", env!("CARGO_BIN_EXE_svcproxy-testkit"))
        .env("COREDNS", work.join("coredns"))
        .env("WORK", &work);
    let started = Instant::now();
    let out = command.output().expect("running the scenario");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let took = started.elapsed();
    let k3s_log = std::fs::read_to_string(work.join("k3s.log")).unwrap_or_default();
    let k3s_tail: Vec<&str> = k3s_log.lines().rev().take(15).collect();
    let context = format!(
        "host {label}, {took:.1?}, exit {:?}\nstdout:\n{stdout}\nstderr:\n{}\nk3s log (last lines, newest first):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        k3s_tail.join("\n")
    );
    eprintln!("{context}");

    let mut results: BTreeMap<&str, (bool, String)> = BTreeMap::new();
    for line in stdout.lines() {
        let (good, rest) = if let Some(rest) = line.strip_prefix("@@ok ") {
            (true, rest)
        } else if let Some(rest) = line.strip_prefix("@@fail ") {
            (false, rest)
        } else {
            continue;
        };
        let (name, detail) = rest.split_once(' ').unwrap_or((rest, ""));
        let name = STEPS
            .iter()
            .find(|s| **s == name)
            .copied()
            .unwrap_or("unknown step");
        results.insert(name, (good, detail.to_string()));
    }
    let failed: Vec<String> = STEPS
        .iter()
        .filter_map(|step| match results.get(step) {
            Some((true, _)) => None,
            Some((false, detail)) => Some(format!("{step}: {detail}")),
            None => Some(format!("{step}: did not run")),
        })
        .collect();
    assert!(
        stdout.contains("@@done"),
        "the scenario stopped early on {label}:\n{}",
        failed.join("\n")
    );
    assert!(
        failed.is_empty(),
        "failed on {label}:\n{}",
        failed.join("\n")
    );
    if std::env::var_os("K3S_GVISOR_KEEP_WORK").is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
}

#[test]
fn services_on_plain_linux() {
    run_scenario(Host::PlainLinux);
}

#[test]
fn services_inside_the_current_gvisor() {
    run_scenario(Host::Gvisor(current_runsc()));
}
