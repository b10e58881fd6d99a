//! Shared helpers for the gvisor-cni integration tests: the plugin binary, a real `cnitool`
//! built from the Go module proxy, network namespaces, and scratch directories.
//!
//! Every test here needs root and real tools; a missing tool fails the test with its name.

#![allow(dead_code)] // each test binary uses a different subset

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// cnitool's module version; the same pin xtask's `tool cnitool` uses.
pub const CNITOOL_VERSION: &str = "v1.3.1";

/// The plugin under test (built by cargo for this test run).
pub fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gvisor-cni"))
}

/// Directory to put in CNI_PATH: the one holding the plugin binary.
pub fn cni_path() -> PathBuf {
    plugin()
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// False (skip) when not root; see testkit::root_or_skip.
pub fn require_root() -> bool {
    testkit::root_or_skip("creates network namespaces and links")
}

/// Fails with the tool's name and where to get it when `name` is not on PATH.
pub fn require_tool(name: &str, hint: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success());
    assert!(
        found.unwrap_or(false),
        "required tool `{name}` is not on PATH: {hint}"
    );
}

/// The cnitool binary: $K3S_GVISOR_CNITOOL, or built once with `go install` from the Go
/// module proxy into target/tmp (the build is cached across runs).
pub fn cnitool() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("K3S_GVISOR_CNITOOL") {
            return PathBuf::from(path);
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cnitool-{CNITOOL_VERSION}"));
        let binary = dir.join("cnitool");
        if binary.is_file() {
            return binary;
        }
        require_tool("go", "install Go (scripts/install-deps.sh does), or set K3S_GVISOR_CNITOOL to a cnitool binary");
        std::fs::create_dir_all(&dir).unwrap();
        // Build into a private GOBIN, then rename: concurrent test binaries never see a
        // partial file.
        let staging = tempdir("cnitool-build");
        let out = Command::new("go")
            .args(["install", &format!("github.com/containernetworking/cni/cnitool@{CNITOOL_VERSION}")])
            .env("GOBIN", &staging)
            .env("GOFLAGS", "-buildvcs=false")
            .env("CGO_ENABLED", "0")
            .output()
            .expect("running go install");
        assert!(
            out.status.success(),
            "building cnitool {CNITOOL_VERSION} from the Go module proxy failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(staging.join("cnitool"), &binary).unwrap();
        binary
    })
    .clone()
}

/// A fresh scratch directory under target/tmp.
pub fn tempdir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gvcni-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        require_tool("ip", "apt-get install iproute2");
        let name = format!("gvcni-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        NetNs { name }
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs `ip -n NS ARGS` and returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A network config list in its own NETCONFPATH directory, with its own store.
pub struct Network {
    pub name: String,
    pub conf_dir: PathBuf,
    pub data_dir: PathBuf,
    pub plugin_conf: Value,
}

impl Network {
    /// `extra` is merged into the plugin entry (e.g. mode, subnet, bridge).
    pub fn new(tag: &str, version: &str, extra: Value) -> Network {
        let root = tempdir(tag);
        let name = format!("gvcni-{tag}");
        let data_dir = root.join("data");
        let mut plugin_conf = serde_json::json!({
            "type": "gvisor-cni",
            "subnet": "10.123.0.0/16",
            "dataDir": data_dir,
        });
        for (k, v) in extra.as_object().expect("extra is an object") {
            plugin_conf[k] = v.clone();
        }
        let conf_dir = root.join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let list = serde_json::json!({"cniVersion": version, "name": name, "plugins": [plugin_conf.clone()]});
        std::fs::write(
            conf_dir.join("10-test.conflist"),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .unwrap();
        Network {
            name,
            conf_dir,
            data_dir,
            plugin_conf,
        }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }

    /// Allocation files (named by address) currently in the store.
    pub fn allocations(&self) -> Vec<String> {
        let mut names: Vec<String> = match std::fs::read_dir(self.store_dir()) {
            Ok(dir) => dir
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect(),
            Err(_) => vec![],
        };
        names.retain(|n| n.parse::<std::net::Ipv4Addr>().is_ok());
        names.sort();
        names
    }

    /// The single-plugin config as the plugin sees it on stdin.
    pub fn stdin_conf(&self, version: &str) -> Value {
        let mut conf = self.plugin_conf.clone();
        conf["cniVersion"] = version.into();
        conf["name"] = self.name.clone().into();
        conf
    }

    /// `cnitool COMMAND NETWORK NETNS`.
    pub fn cnitool(&self, command: &str, netns: &str) -> Output {
        Command::new(cnitool())
            .args([command, &self.name, netns])
            .env("NETCONFPATH", &self.conf_dir)
            .env("CNI_PATH", cni_path())
            .output()
            .expect("running cnitool")
    }
}

/// Runs the plugin directly with `env` and `stdin`, as a runtime would.
pub fn run_plugin(env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(plugin())
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning gvisor-cni");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Asserts success and returns stdout parsed as JSON (Null when empty).
pub fn ok_json(what: &str, out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e})"))
    }
}

/// Asserts a failed plugin run and returns the error JSON; checks the spec's required fields.
pub fn error_json(what: &str, out: &Output) -> Value {
    assert!(
        !out.status.success(),
        "{what} should fail but succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: error output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(
        err["code"].is_u64() && err["msg"].is_string() && err["cniVersion"].is_string(),
        "{what}: {err}"
    );
    err
}

/// Checks a success result against the spec's types for `version` (the fields libcni's
/// types100/types040 decode) and returns the allocated address.
pub fn check_result_shape(result: &Value, version: &str) -> std::net::Ipv4Addr {
    assert_eq!(result["cniVersion"], version, "{result}");
    // libcni omits an empty interface list (omitempty), so absent means none.
    let no_interfaces = Vec::new();
    let interfaces = match &result["interfaces"] {
        Value::Null => &no_interfaces,
        list => list.as_array().expect("interfaces is a list"),
    };
    for iface in interfaces {
        assert!(
            iface["name"].is_string(),
            "interface without name: {result}"
        );
    }
    let ips = result["ips"].as_array().expect("ips is a list");
    assert_eq!(ips.len(), 1, "{result}");
    let ip = &ips[0];
    if version == "0.4.0" {
        assert_eq!(
            ip["version"], "4",
            "0.4.0 results carry the IP version: {result}"
        );
    } else {
        assert!(
            ip.get("version").is_none(),
            "1.x results must not carry version: {result}"
        );
    }
    if let Some(index) = ip.get("interface") {
        let index = index.as_u64().expect("interface index is a number") as usize;
        assert!(
            index < interfaces.len(),
            "interface index out of range: {result}"
        );
    }
    let address: ipnet::Ipv4Net = ip["address"]
        .as_str()
        .unwrap()
        .parse()
        .expect("address is a CIDR");
    address.addr()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// Names of the interfaces a result lists (none when libcni omitted the empty list).
pub fn interface_names(result: &Value) -> Vec<String> {
    result["interfaces"]
        .as_array()
        .map_or_else(Vec::new, |list| {
            list.iter()
                .map(|i| i["name"].as_str().expect("interface name").to_string())
                .collect()
        })
}
