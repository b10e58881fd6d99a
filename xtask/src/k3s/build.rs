//! `go build ./cmd/server` → `k3s`, as k3s's scripts/build does it, cached by a stage stamp.

use super::version_flags::{self, ModuleVersions, BUILD_TAGS, CGO_CFLAGS, EXTLDFLAGS};
use super::K3sPin;
use crate::layout::Layout;
use crate::stamp::Stamp;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Bump when the build recipe below changes in a way the stamp inputs do not show.
const RECIPE: &str = "k3s-build-1";

/// Everything one k3s build needs.
pub struct K3sBuild<'a> {
    pub layout: &'a Layout,
    pub pin: &'a K3sPin,
    /// The prepared tree ([`super::prepare_source`]); `go build` runs here.
    pub src: &'a Path,
    /// The binary is written to `out_bin/k3s`.
    pub out_bin: &'a Path,
    /// Build date stamped into the binary (the bundle's SOURCE_DATE_EPOCH).
    pub source_date_epoch: u64,
    /// Full log of `go mod download` and `go build`; its tail is shown on failure.
    pub log: &'a Path,
    /// Forbid network access (`GOPROXY=off`): every module must already be in the cache.
    pub offline: bool,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuiltK3s {
    pub binary: PathBuf,
    /// `go build` arguments and environment that matter, for the bundle manifest.
    pub build_flags: Vec<String>,
    /// First line of `k3s --version`.
    pub version_line: String,
    /// False when the stamp was fresh and nothing was built.
    pub rebuilt: bool,
}

pub fn build_k3s(b: &K3sBuild) -> Result<BuiltK3s> {
    let binary = b.out_bin.join("k3s");
    let go_version = go_version(b.layout)?;
    let tree = crate::digest::sha256_tree(b.src)
        .with_context(|| format!("cannot hash the k3s tree {}", b.src.display()))?;
    let inputs = crate::digest::combine(
        [
            RECIPE,
            &b.pin.version,
            &b.pin.commit,
            &tree,
            &go_version,
            EXTLDFLAGS,
            CGO_CFLAGS,
            &b.source_date_epoch.to_string(),
        ]
        .into_iter()
        .chain(BUILD_TAGS.iter().copied()),
    );
    let stamp = Stamp::new(&b.layout.stamps(), "k3s", inputs);
    if stamp.is_fresh() && binary.is_file() {
        let version_line = super::check_version(&binary, b.pin)?;
        let build_flags = recorded_flags(b.layout);
        return Ok(BuiltK3s {
            binary,
            build_flags,
            version_line,
            rebuilt: false,
        });
    }
    stamp.clear();

    std::fs::create_dir_all(b.out_bin)?;
    if let Some(dir) = b.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        b.log,
        format!(
            "k3s {} ({}) in {}\n",
            b.pin.version,
            b.pin.commit,
            b.src.display()
        ),
    )?;

    // A missing C library would otherwise surface as a cgo error deep into a long build.
    check_build_prerequisites()?;
    // Dependencies first, so that a download failure is told apart from a compile failure.
    run_logged(go(b).args(["mod", "download", "-x"]), b, "go mod download")?;

    let modules = ModuleVersions::read(go(b), b.src)?;
    let version_flags =
        version_flags::version_ldflags(b.pin, &modules, b.src, &go_version, b.source_date_epoch);
    let ldflags = version_flags::ldflags(&version_flags);
    let tags = BUILD_TAGS.join(" ");
    let tmp_out = b.out_bin.join(".k3s.partial");
    let args: Vec<String> = vec![
        "build".into(),
        "-trimpath".into(),
        "-buildvcs=false".into(),
        format!("-tags={tags}"),
        format!("-ldflags={ldflags}"),
        "-o".into(),
        tmp_out.display().to_string(),
        "./cmd/server".into(),
    ];
    let started = std::time::Instant::now();
    run_logged(
        go(b)
            .args(&args)
            .env("CGO_ENABLED", "1")
            .env("CGO_CFLAGS", CGO_CFLAGS)
            .env("GOOS", "linux")
            .env("GOARCH", "amd64")
            .env("SOURCE_DATE_EPOCH", b.source_date_epoch.to_string()),
        b,
        "go build ./cmd/server",
    )?;
    let seconds = started.elapsed().as_secs();
    std::fs::rename(&tmp_out, &binary)?;
    append_log(
        b.log,
        &format!("built {} in {seconds} s\n", binary.display()),
    )?;

    if !super::is_static_elf(&binary)? {
        bail!(
            "{} is dynamically linked although it was built with -extldflags '{EXTLDFLAGS}'; \
             it would not run in a sandbox without the same libraries. Log: {}",
            binary.display(),
            b.log.display()
        );
    }
    let version_line = super::check_version(&binary, b.pin)?;

    let mut build_flags = vec![
        format!("-tags={tags}"),
        format!("-ldflags={ldflags}"),
        "-trimpath".into(),
        "CGO_ENABLED=1".into(),
        format!("CGO_CFLAGS={CGO_CFLAGS}"),
        format!("go={go_version}"),
    ];
    build_flags.dedup();
    crate::fsutil::write_atomic(&flags_file(b.layout), build_flags.join("\n").as_bytes())?;
    stamp.record(std::slice::from_ref(&binary))?;
    Ok(BuiltK3s {
        binary,
        build_flags,
        version_line,
        rebuilt: true,
    })
}

/// What the static cgo link of k3s needs from the build machine, and the Debian package that
/// provides each: sqlite (`libsqlite3` tag, kine's datastore), libseccomp (`seccomp` tag,
/// runc's libseccomp-golang, found through pkg-config), zlib (`-lz` of the link flags).
const BUILD_PREREQUISITES: &[(&str, &str)] = &[
    ("/usr/include/sqlite3.h", "libsqlite3-dev"),
    ("/usr/lib/x86_64-linux-gnu/libsqlite3.a", "libsqlite3-dev"),
    ("/usr/include/seccomp.h", "libseccomp-dev"),
    ("/usr/lib/x86_64-linux-gnu/libseccomp.a", "libseccomp-dev"),
    ("/usr/lib/x86_64-linux-gnu/libz.a", "zlib1g-dev"),
    ("/usr/include/linux/btrfs.h", "linux-libc-dev"),
];

/// Fail early, naming the apt packages, when the machine cannot link k3s statically.
pub fn check_build_prerequisites() -> Result<()> {
    let mut missing: Vec<String> = BUILD_PREREQUISITES
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(path, package)| format!("{path} (apt-get install {package})"))
        .collect();
    for (tool, package) in [("gcc", "gcc"), ("pkg-config", "pkg-config")] {
        if Command::new(tool).arg("--version").output().is_err() {
            missing.push(format!("`{tool}` on PATH (apt-get install {package})"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "cannot build k3s statically on this machine; missing:\n  {}",
            missing.join("\n  ")
        );
    }
    Ok(())
}

/// The pipeline's `go` (its module cache, local toolchain only), run in the k3s tree.
fn go(b: &K3sBuild) -> Command {
    let mut cmd = crate::fetch::go_command(b.layout, b.offline);
    cmd.current_dir(b.src);
    cmd
}

fn go_version(layout: &Layout) -> Result<String> {
    let out = crate::fetch::go_command(layout, true)
        .args(["env", "GOVERSION"])
        .output()
        .context("cannot run `go`: install Go (see scripts/install-deps.sh) and put it on PATH")?;
    if !out.status.success() {
        bail!(
            "`go env GOVERSION` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Run `cmd` with its output appended to the build log; on failure, the error carries the log's
/// last lines so the cause is visible without opening it.
fn run_logged(cmd: &mut Command, b: &K3sBuild, what: &str) -> Result<()> {
    append_log(b.log, &format!("$ {cmd:?}\n"))?;
    let log = std::fs::OpenOptions::new().append(true).open(b.log)?;
    let status = cmd
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .status()
        .with_context(|| format!("cannot start {what}: is Go installed?"))?;
    if !status.success() {
        bail!(
            "{what} failed for k3s {} ({status}); last lines of {}:\n{}",
            b.pin.version,
            b.log.display(),
            crate::fsutil::tail(b.log, 40)
        );
    }
    Ok(())
}

fn append_log(log: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The flags of the last build, kept beside its stamp (not in out/bin, whose files ship) so a
/// cached build can still report them.
fn flags_file(layout: &Layout) -> PathBuf {
    layout.stamps().join("k3s.build-flags")
}

fn recorded_flags(layout: &Layout) -> Vec<String> {
    std::fs::read_to_string(flags_file(layout))
        .map(|t| t.lines().map(String::from).collect())
        .unwrap_or_default()
}
