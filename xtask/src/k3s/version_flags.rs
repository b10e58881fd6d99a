//! The build tags and `-ldflags` of k3s's `scripts/build` (with `STATIC_BUILD=true`, as its
//! release builds use), and the version values `scripts/version.sh` computes for them.

use super::K3sPin;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// k3s's linux release tags: `static_build libsqlite3 ctrd netcgo osusergo providerless
/// urfave_cli_no_docs sqlite_omit_load_extension apparmor seccomp`, with one change: `netgo`
/// instead of `netcgo`. Upstream links statically against musl; we link statically against
/// glibc, whose `getaddrinfo` would need the build machine's NSS shared libraries at run time
/// inside a sandbox that may not have them. Go's own resolver reads /etc/hosts and
/// /etc/resolv.conf itself.
pub const BUILD_TAGS: &[&str] = &[
    "static_build",
    "libsqlite3",
    "ctrd",
    "netgo",
    "osusergo",
    "providerless",
    "urfave_cli_no_docs",
    "sqlite_omit_load_extension",
    "apparmor",
    "seccomp",
];

/// `STATIC=-extldflags '-static -lm -ldl -lz -lpthread'` of scripts/build: sqlite (libsqlite3
/// tag), libseccomp and zlib are linked from the build machine's static libraries.
pub const EXTLDFLAGS: &str = "-static -lm -ldl -lz -lpthread";

/// `CGO_CFLAGS` of scripts/build for the sqlite it links.
pub const CGO_CFLAGS: &str = "-DSQLITE_ENABLE_DBSTAT_VTAB=1 -DSQLITE_USE_ALLOCA=1";

/// Where one `-X` value comes from.
enum Value {
    /// The k3s release (`v1.34.1+k3s1`).
    Version,
    Commit,
    ShortCommit,
    /// Always `clean`: the tree is a verified pristine copy plus our generated embed files.
    TreeState,
    BuildDate,
    /// The version of a module in k3s's build list (its replacement's version if replaced),
    /// `v0.0.0` when absent: `get-module-version` of scripts/version.sh.
    ModuleVersion(&'static str),
    /// The path of that module's replacement if any: `get-module-path`.
    ModulePath(&'static str),
    Literal(&'static str),
    /// `rancher/klipper-helm:<tag>`, the tag read from scripts/airgap/image-list.txt.
    HelmJobImage,
    /// The Go that builds (`go env GOVERSION`).
    GoVersion,
}

/// The `VERSIONFLAGS` of scripts/build that land in the k3s binary. Left out: the flags for
/// `containernetworking/plugins` and the flannel CNI plugin, which scripts/build passes to the
/// separate `cni` binary it clones from GitHub; our bundle ships its own CNI plugin instead.
const VERSION_VARS: &[(&str, Value)] = &[
    ("github.com/k3s-io/k3s/pkg/version.Version", Value::Version),
    (
        "github.com/k3s-io/k3s/pkg/version.GitCommit",
        Value::ShortCommit,
    ),
    // k3s refuses to start (`MustValidateGolang`) unless this equals runtime.Version().
    // Upstream stamps the Go that Kubernetes recommends and builds with exactly that Go; we build
    // with the machine's Go and stamp that one, as distribution builds of k3s do.
    (
        "github.com/k3s-io/k3s/pkg/version.UpstreamGolang",
        Value::GoVersion,
    ),
    ("k8s.io/client-go/pkg/version.gitVersion", Value::Version),
    ("k8s.io/client-go/pkg/version.gitCommit", Value::Commit),
    (
        "k8s.io/client-go/pkg/version.gitTreeState",
        Value::TreeState,
    ),
    ("k8s.io/client-go/pkg/version.buildDate", Value::BuildDate),
    ("k8s.io/component-base/version.gitVersion", Value::Version),
    ("k8s.io/component-base/version.gitCommit", Value::Commit),
    (
        "k8s.io/component-base/version.gitTreeState",
        Value::TreeState,
    ),
    ("k8s.io/component-base/version.buildDate", Value::BuildDate),
    (
        "sigs.k8s.io/cri-tools/pkg/version.Version",
        Value::ModuleVersion("sigs.k8s.io/cri-tools"),
    ),
    (
        "github.com/containerd/containerd/v2/version.Version",
        Value::ModuleVersion("github.com/containerd/containerd/v2"),
    ),
    (
        "github.com/containerd/containerd/v2/version.Package",
        Value::ModulePath("github.com/containerd/containerd/v2"),
    ),
    (
        "github.com/cloudnativelabs/kube-router/v2/pkg/version.Version",
        Value::ModuleVersion("github.com/cloudnativelabs/kube-router/v2"),
    ),
    (
        "github.com/cloudnativelabs/kube-router/v2/pkg/version.BuildDate",
        Value::BuildDate,
    ),
    (
        "github.com/Mirantis/cri-dockerd/cmd/version.Version",
        Value::ModuleVersion("github.com/Mirantis/cri-dockerd"),
    ),
    (
        "github.com/Mirantis/cri-dockerd/cmd/version.GitCommit",
        Value::Literal("HEAD"),
    ),
    (
        "github.com/Mirantis/cri-dockerd/cmd/version.BuildTime",
        Value::BuildDate,
    ),
    (
        "go.etcd.io/etcd/api/v3/version.GitSHA",
        Value::Literal("HEAD"),
    ),
    (
        "github.com/k3s-io/helm-controller/pkg/controllers/chart.DefaultJobImage",
        Value::HelmJobImage,
    ),
];

/// One module of the build list as `go list -m -json` reports it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedModule {
    path: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    replace: Option<Box<ListedModule>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Version and path of every module a `-X` value depends on, read from the tree's build list
/// (after `go mod download`). Modules not in the build list are simply absent.
pub struct ModuleVersions {
    by_path: BTreeMap<String, (String, String)>,
}

impl ModuleVersions {
    pub fn read(mut go: Command, src: &Path) -> Result<Self> {
        let mut wanted: Vec<&str> = VERSION_VARS
            .iter()
            .filter_map(|(_, v)| match v {
                Value::ModuleVersion(m) | Value::ModulePath(m) => Some(*m),
                _ => None,
            })
            .collect();
        wanted.dedup();
        let out = go
            .args(["list", "-m", "-e", "-json"])
            .args(&wanted)
            .current_dir(src)
            .output()
            .context("cannot run `go list -m`: is Go installed?")?;
        if !out.status.success() {
            bail!(
                "`go list -m -e -json {}` failed in {}: {}",
                wanted.join(" "),
                src.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Self::parse(&out.stdout)
    }

    /// `go list -m -json` prints a stream of JSON objects, one per module.
    pub fn parse(json_stream: &[u8]) -> Result<Self> {
        let mut by_path = BTreeMap::new();
        for item in serde_json::Deserializer::from_slice(json_stream).into_iter::<ListedModule>() {
            let m = item.context("cannot parse `go list -m -json` output")?;
            if m.error.is_some() {
                continue;
            }
            let (path, version) = match &m.replace {
                Some(r) => (r.path.clone(), r.version.clone()),
                None => (m.path.clone(), m.version.clone()),
            };
            by_path.insert(m.path, (path, version));
        }
        Ok(ModuleVersions { by_path })
    }

    fn version(&self, module: &str) -> String {
        match self.by_path.get(module) {
            Some((_, v)) if !v.is_empty() => v.clone(),
            _ => "v0.0.0".to_string(),
        }
    }

    fn path(&self, module: &str) -> String {
        match self.by_path.get(module) {
            Some((p, _)) => p.clone(),
            None => module.to_string(),
        }
    }
}

/// The helm job image tag k3s's version.sh reads from its airgap image list; None when the tree
/// has no such list (the binary then keeps its compiled-in default).
fn helm_job_image(src: &Path) -> Option<String> {
    let list = std::fs::read_to_string(src.join("scripts/airgap/image-list.txt")).ok()?;
    list.lines()
        .map(str::trim)
        .find(|l| l.contains("rancher/klipper-helm:"))
        .and_then(|l| l.rsplit_once('/'))
        .map(|(_, name_tag)| format!("rancher/{name_tag}"))
}

/// `-X name=value` for every version variable, in scripts/build's order.
pub fn version_ldflags(
    pin: &K3sPin,
    modules: &ModuleVersions,
    src: &Path,
    go_version: &str,
    source_date_epoch: u64,
) -> Vec<String> {
    let build_date = rfc3339_utc(source_date_epoch);
    let helm_image = helm_job_image(src);
    VERSION_VARS
        .iter()
        .filter_map(|(name, value)| {
            let value = match value {
                Value::Version => pin.version.clone(),
                Value::Commit => pin.commit.clone(),
                Value::ShortCommit => pin.short_commit().to_string(),
                Value::TreeState => "clean".to_string(),
                Value::BuildDate => build_date.clone(),
                Value::ModuleVersion(m) => modules.version(m),
                Value::ModulePath(m) => modules.path(m),
                Value::Literal(s) => s.to_string(),
                Value::HelmJobImage => helm_image.clone()?,
                Value::GoVersion => go_version.to_string(),
            };
            Some(format!("-X {name}={value}"))
        })
        .collect()
}

/// The whole `-ldflags` value: version stamps, stripped (`-w -s`, as release builds), no build
/// id (reproducible), static external link.
pub fn ldflags(version_flags: &[String]) -> String {
    let mut parts = version_flags.to_vec();
    parts.extend(["-w", "-s", "-buildid="].map(String::from));
    parts.push(format!("-extldflags '{EXTLDFLAGS}'"));
    parts.join(" ")
}

/// `2025-09-22T21:39:43Z` from seconds since the epoch: the build date is SOURCE_DATE_EPOCH,
/// not the wall clock, so two builds of the same inputs are byte-identical.
pub fn rfc3339_utc(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Howard Hinnant's days-to-civil-date algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
