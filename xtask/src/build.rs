//! The build stage: `go build` of each upstream binary from its patched (or unpatched) tree, and
//! `cargo build` of our runtime crates, all statically linked so they run in any sandbox.
//!
//! `ldflags` and the `expect` of checks in bundle.toml may use placeholders:
//!
//! | placeholder | value |
//! |---|---|
//! | `{version}` | the component's version (`v1.34.1+k3s1`) |
//! | `{stamp}` | the bundle stamp (`k3s-gvisor-v1.34.1+k3s1-gvisor.1`) |
//! | `{commit}`, `{short_commit}` | the pinned commit, and its first 8 hex digits |
//! | `{build_date}` | SOURCE_DATE_EPOCH as RFC 3339 (never the wall clock) |
//! | `{go_version}` | the Go that builds (`go1.26.8`) |
//! | `{module_version:PATH}`, `{module_path:PATH}` | a module of the build list (its replacement's, if replaced; `v0.0.0` when absent), as k3s's scripts/version.sh reads them |
//! | anything the component's `prepare` step reports (xtask/src/prepare.rs) | |

use crate::config::{BundleConfig, Component, GoBinary};
use crate::go::{run_logged, Go};
use crate::layout::Layout;
use crate::target::Target;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What a `go build` needs besides the component.
pub struct GoBuildContext<'a> {
    pub go: &'a Go,
    /// The go version the build uses, `go env GOVERSION`.
    pub go_version: &'a str,
    pub stamp: &'a str,
    pub source_date_epoch: u64,
    /// Placeholder values the prepare step found in the tree.
    pub prepared: &'a BTreeMap<String, String>,
    /// The architecture built for, and this machine's.
    pub target: Target,
}

/// One built binary and exactly how it was built (for the manifest).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct BuiltBinary {
    pub name: String,
    pub path: PathBuf,
    /// False: it ships only inside an image.
    pub in_bundle: bool,
    /// `bin/<link>` symlinks to this binary in the bundle.
    pub links: Vec<String>,
    /// `CGO_ENABLED=.. [ENV=..] go build ...`, as run.
    pub command: String,
    /// The first line each check printed.
    pub checks: Vec<String>,
}

/// Build every binary of `c` from `tree` into `out_dir`; the log goes to `log`.
pub fn go_build(
    c: &Component,
    tree: &Path,
    out_dir: &Path,
    ctx: &GoBuildContext,
    log: &Path,
) -> Result<Vec<BuiltBinary>> {
    check_build_requires(c, &ctx.target)?;
    std::fs::create_dir_all(out_dir)?;
    if !c.vendor {
        // This build reads its modules from the module cache, which other builds share (and
        // which may have been restored from elsewhere): re-verify it first (issue 29). A
        // vendored tree was verified when patch.rs made its vendor/.
        crate::go::verify_modules(ctx.go, tree, log)?;
    }
    let values = Placeholders::resolve(c, tree, ctx)?;
    let mut built = Vec::new();
    for bin in &c.binaries {
        let out = out_dir.join(&bin.name);
        let partial = out_dir.join(format!(".{}.partial", bin.name));
        let args = go_build_args(c, bin, &values, &partial)?;
        let mut cmd = ctx.go.command();
        cmd.args(&args)
            .env("CGO_ENABLED", if bin.cgo { "1" } else { "0" })
            .env("SOURCE_DATE_EPOCH", ctx.source_date_epoch.to_string())
            .envs(ctx.target.go_env(bin.cgo))
            .envs(&bin.env)
            .current_dir(tree);
        if c.vendor {
            // A vendored tree needs no network at all.
            cmd.env("GOPROXY", "off");
        }
        run_logged(
            &mut cmd,
            log,
            &format!("go build of {} ({} {})", bin.name, c.name, c.version),
        )?;
        std::fs::rename(&partial, &out)?;
        if !crate::elf::is_static(&out)? {
            bail!(
                "{} is dynamically linked: it would not run in a sandbox that lacks the build \
                 machine's libraries; check its ldflags in bundle.toml (log: {})",
                out.display(),
                log.display()
            );
        }
        crate::elf::check_machine(&out, &ctx.target)?;
        let checks = run_checks(bin, &out, &values, &ctx.target)?;
        // As run, beyond a native build's: a cross build's GOARCH and C cross compiler first.
        let env: String = ctx
            .target
            .go_cross_env(bin.cgo)
            .iter()
            .map(|(k, v)| (k, v))
            .chain(&bin.env)
            .map(|(k, v)| format!("{k}={v} "))
            .collect();
        built.push(BuiltBinary {
            name: bin.name.clone(),
            path: out,
            in_bundle: bin.in_bundle,
            links: bin.links.clone(),
            command: format!(
                "CGO_ENABLED={} {env}go {}",
                bin.cgo as u8,
                shown_args(&args, &bin.name)
            ),
            checks,
        });
    }
    Ok(built)
}

/// The `go build` arguments for one binary, writing to `out`.
fn go_build_args(
    c: &Component,
    bin: &GoBinary,
    values: &Placeholders,
    out: &Path,
) -> Result<Vec<String>> {
    let mut ldflags = vec!["-s".to_string(), "-w".into(), "-buildid=".into()];
    for flag in &bin.ldflags {
        ldflags.push(values.expand(flag)?);
    }
    let mut args = vec!["build".to_string(), "-trimpath".to_string()];
    if c.vendor {
        args.push("-mod=vendor".into());
    }
    if let Some(mode) = &bin.buildmode {
        args.push(format!("-buildmode={mode}"));
    }
    if !bin.tags.is_empty() {
        args.push(format!("-tags={}", bin.tags.join(",")));
    }
    args.push(format!("-ldflags={}", ldflags.join(" ")));
    args.push("-o".into());
    args.push(out.display().to_string());
    args.push(bin.package.clone());
    Ok(args)
}

/// The arguments as the manifest records them: the output is named by the binary, not by the
/// build machine's path, so that the manifest does not depend on where the build ran.
fn shown_args(args: &[String], name: &str) -> String {
    let mut shown = args.to_vec();
    if let Some(i) = shown.iter().position(|a| a == "-o") {
        shown[i + 1] = name.to_string();
    }
    shown.join(" ")
}

/// Fail early, naming the apt packages, when the machine lacks what a (cgo) build links for
/// the target (its cross compiler too).
fn check_build_requires(c: &Component, target: &Target) -> Result<()> {
    target.check_tools()?;
    let missing: Vec<String> = c
        .for_target(target)
        .build_requires
        .into_iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(path, package)| format!("{path} (apt-get install {package})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "cannot build {} on this machine; missing (scripts/install-deps.sh installs them):\n  {}",
            c.name,
            missing.join("\n  ")
        );
    }
    Ok(())
}

/// Run each check of `bin` (argv[0] may be a link name: the check then runs through a symlink
/// named so, as users will run it). A binary of another architecture runs under the target's
/// emulator (qemu-user passes the path it is given on as argv[0], so links still dispatch).
fn run_checks(
    bin: &GoBinary,
    binary: &Path,
    values: &Placeholders,
    target: &Target,
) -> Result<Vec<String>> {
    let mut results = Vec::new();
    let links = tempfile::tempdir()?;
    for check in &bin.checks {
        let (argv0, args) = check
            .run
            .split_first()
            .context("a check needs at least argv[0]")?;
        let program = if *argv0 == bin.name {
            binary.to_path_buf()
        } else {
            let link = links.path().join(argv0);
            if !link.exists() {
                std::os::unix::fs::symlink(binary, &link)?;
            }
            link
        };
        let expect = values.expand(&check.expect)?;
        let mut cmd = match target.runner() {
            Some(emulator) => {
                let mut cmd = Command::new(emulator);
                cmd.arg(&program);
                cmd
            }
            None => Command::new(&program),
        };
        // Emulated, k3s's `--version` takes seconds where it takes milliseconds natively.
        let out = run_with_timeout(cmd.args(args), Duration::from_secs(180))
            .with_context(|| format!("check `{}` failed", check.run.join(" ")))?;
        let Some(line) = out.lines().find(|l| l.contains(&expect)) else {
            bail!(
                "check `{}` printed\n{}\nwhich does not contain `{expect}`",
                check.run.join(" "),
                out.trim()
            );
        };
        results.push(format!("{}: {}", check.run.join(" "), line.trim()));
    }
    Ok(results)
}

/// Output (stdout and stderr together) of a command that must succeed within `limit`. The
/// output goes to a temporary file, not a pipe, so a chatty command cannot block on a full pipe
/// while we wait for it.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Result<String> {
    use std::io::{Read, Seek};
    let mut output = tempfile::tempfile()?;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output.try_clone()?)
        .spawn()?;
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    output.rewind()?;
    output.read_to_string(&mut text)?;
    if !status.success() {
        bail!("exited with {status}: {}", text.trim());
    }
    Ok(text)
}

/// The values of a component's placeholders.
struct Placeholders {
    values: BTreeMap<String, String>,
}

impl Placeholders {
    fn resolve(c: &Component, tree: &Path, ctx: &GoBuildContext) -> Result<Self> {
        let mut values = ctx.prepared.clone();
        values.insert("version".into(), c.version.clone());
        values.insert("stamp".into(), ctx.stamp.replace(' ', "-"));
        values.insert("build_date".into(), rfc3339_utc(ctx.source_date_epoch));
        values.insert("go_version".into(), ctx.go_version.to_string());
        if let Some(commit) = &c.commit {
            values.insert("commit".into(), commit.clone());
            values.insert("short_commit".into(), commit[..8].to_string());
        }
        // Every module a `{module_...:PATH}` names, read in one `go list -m`.
        let texts = c
            .binaries
            .iter()
            .flat_map(|b| b.ldflags.iter().chain(b.checks.iter().map(|k| &k.expect)));
        let mut modules: Vec<String> = texts
            .flat_map(|t| placeholders_in(t))
            .filter_map(|p| p.split_once(':').map(|(_, m)| m.to_string()))
            .collect();
        modules.sort();
        modules.dedup();
        if !modules.is_empty() {
            for (module, (path, version)) in list_modules(ctx.go, tree, &modules)? {
                values.insert(format!("module_version:{module}"), version);
                values.insert(format!("module_path:{module}"), path);
            }
        }
        Ok(Placeholders { values })
    }

    /// Replace every `{name}`; an unknown name is an error, so a typo in bundle.toml cannot
    /// silently stamp a literal `{...}` into a binary.
    fn expand(&self, text: &str) -> Result<String> {
        let mut out = text.to_string();
        for name in placeholders_in(text) {
            let value = self.values.get(&name).with_context(|| {
                format!(
                    "unknown placeholder {{{name}}} in `{text}`; known: {}",
                    self.values.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            out = out.replace(&format!("{{{name}}}"), value);
        }
        Ok(out)
    }
}

/// The names of the `{...}` placeholders in `text`.
fn placeholders_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        names.push(rest[start + 1..start + len].to_string());
        rest = &rest[start + len + 1..];
    }
    names
}

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

/// (path, version) of each module as the build uses it: its replacement's if replaced (as
/// scripts/version.sh's get-module-path/get-module-version); `(module, v0.0.0)` when absent.
fn list_modules(
    go: &Go,
    tree: &Path,
    modules: &[String],
) -> Result<BTreeMap<String, (String, String)>> {
    let out = go
        .command()
        .args(["list", "-m", "-e", "-json"])
        .args(modules)
        .current_dir(tree)
        .output()
        .context("cannot run `go list -m`")?;
    if !out.status.success() {
        bail!(
            "`go list -m -e -json {}` failed in {}: {}",
            modules.join(" "),
            tree.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut found = parse_module_list(&out.stdout)?;
    for m in modules {
        found
            .entry(m.clone())
            .or_insert_with(|| (m.clone(), "v0.0.0".into()));
    }
    Ok(found)
}

fn parse_module_list(json_stream: &[u8]) -> Result<BTreeMap<String, (String, String)>> {
    let mut found = BTreeMap::new();
    for item in serde_json::Deserializer::from_slice(json_stream).into_iter::<ListedModule>() {
        let m = item.context("cannot parse `go list -m -json` output")?;
        if m.error.is_some() {
            continue;
        }
        let (path, version) = match &m.replace {
            Some(r) => (r.path.clone(), r.version.clone()),
            None => (m.path.clone(), m.version.clone()),
        };
        let version = if version.is_empty() {
            "v0.0.0".into()
        } else {
            version
        };
        found.insert(m.path, (path, version));
    }
    Ok(found)
}

/// `2025-10-01T00:00:00Z`: the build date is SOURCE_DATE_EPOCH, not the wall clock, so two
/// builds of the same inputs are byte-identical.
pub fn rfc3339_utc(epoch: u64) -> String {
    chrono::DateTime::from_timestamp(epoch as i64, 0)
        .expect("a u64 epoch second fits chrono's range")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// RUSTFLAGS for the runtime crates: static, and free of the build's paths so that two
/// checkouts build identical binaries. cargo names a workspace member's sources relative to the
/// workspace root already; what is left are the registry's sources (CARGO_HOME) and the code
/// build scripts generate (under the target dir). The checkout's own path is not in them, so
/// checkouts sharing a target dir ([`Layout::cargo_target`]) share compiled dependencies too.
pub fn cargo_rustflags(layout: &Layout) -> String {
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    format!(
        "-C target-feature=+crt-static --remap-path-prefix={}=/target --remap-path-prefix={}=/cargo",
        layout.cargo_target().display(),
        cargo_home.display()
    )
}

/// The cargo command line the crates of the bundle's architecture are built with; the manifest
/// records exactly this (after a cross build's linker, [`cargo_cross_env`]).
pub fn cargo_args(config: &BundleConfig, target: &Target) -> Vec<String> {
    let mut args: Vec<String> = ["build", "--release", "--locked", "--target"]
        .map(String::from)
        .into();
    args.push(target.rust_target().into());
    for c in config.crates_for_arch() {
        args.push("-p".into());
        args.push(c.package.clone());
    }
    args
}

/// The cross build's cargo environment as the manifest records it (`VAR=value `, or nothing).
pub fn cargo_cross_env(target: &Target) -> String {
    target
        .cargo_cross_env()
        .iter()
        .map(|(k, v)| format!("{k}={v} "))
        .collect()
}

/// `cargo build --release` of the runtime crates into `layout.cargo_target()`, then copy the
/// binaries into `layout.crates_bin()`; each must be static and for the target.
pub fn cargo_build(
    config: &BundleConfig,
    layout: &Layout,
    target: &Target,
    log: &Path,
) -> Result<Vec<PathBuf>> {
    target.check_tools()?;
    let mut cmd = static_cargo(layout, target, &cargo_args(config, target));
    let _ = std::fs::remove_file(log);
    run_logged(&mut cmd, log, "cargo build --release (runtime crates)")?;
    let release = layout
        .cargo_target()
        .join(target.rust_target())
        .join("release");
    let bin_dir = layout.crates_bin();
    std::fs::create_dir_all(&bin_dir)?;
    let mut outputs = Vec::new();
    for c in config.crates_for_arch() {
        let to = bin_dir.join(&c.package);
        std::fs::copy(release.join(&c.package), &to)
            .with_context(|| format!("crate {0} built no binary named {0}", c.package))?;
        if !crate::elf::is_static(&to)? {
            bail!(
                "{} is dynamically linked: the runtime crates must be static (RUSTFLAGS {})",
                to.display(),
                cargo_rustflags(layout)
            );
        }
        crate::elf::check_machine(&to, target)?;
        outputs.push(to);
    }
    Ok(outputs)
}

/// `cargo ARGS` as the runtime crates are built: into `layout.cargo_target()`, static and free
/// of the checkout's paths ([`cargo_rustflags`]), with a cross build's linker.
fn static_cargo(layout: &Layout, target: &Target, args: &[String]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args)
        .arg("--target-dir")
        .arg(layout.cargo_target())
        .env("RUSTFLAGS", cargo_rustflags(layout))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .envs(target.cargo_cross_env())
        .current_dir(&layout.repo);
    cmd
}

/// The e2e's driver (crates/e2e-driver), built as the runtime crates are (their dependencies
/// are shared) for the machine the e2e runs on; not part of the bundle. Returns the binary.
pub fn e2e_driver(layout: &Layout, target: &Target) -> Result<PathBuf> {
    let args = [
        "build",
        "--release",
        "--locked",
        "-p",
        "e2e-driver",
        "--target",
    ]
    .map(String::from)
    .into_iter()
    .chain([target.rust_target().to_string()])
    .collect::<Vec<_>>();
    let mut cmd = static_cargo(layout, target, &args);
    let log = layout.logs().join("e2e-driver.log");
    run_logged(&mut cmd, &log, "cargo build --release -p e2e-driver")?;
    let driver = layout
        .cargo_target()
        .join(target.rust_target())
        .join("release/e2e-driver");
    if !crate::elf::is_static(&driver)? {
        bail!(
            "{} is dynamically linked: it runs in every sandbox, so it must be static",
            driver.display()
        );
    }
    Ok(driver)
}

pub fn rustc_version() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-V")
        .output()
        .context("cannot run `rustc -V`")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_dates_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_759_276_800), "2025-10-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_210_096), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn placeholders_expand_and_an_unknown_one_is_refused() {
        let p = Placeholders {
            values: BTreeMap::from([
                ("version".to_string(), "v1".to_string()),
                ("module_version:a/b".to_string(), "v2".to_string()),
            ]),
        };
        assert_eq!(
            p.expand("-X x={version} -X y={module_version:a/b}")
                .unwrap(),
            "-X x=v1 -X y=v2"
        );
        let err = p.expand("-X x={verison}").unwrap_err();
        assert!(format!("{err:#}").contains("unknown placeholder {verison}"));
    }

    /// scripts/version.sh reads a replaced module's replacement (k3s replaces containerd with
    /// its fork), and a module go does not know as v0.0.0.
    #[test]
    fn module_placeholders_follow_replacements() {
        let listed = br#"{"Path": "github.com/containerd/containerd/v2", "Version": "v2.1.4",
            "Replace": {"Path": "github.com/k3s-io/containerd/v2", "Version": "v2.1.4-k3s2"}}
            {"Path": "sigs.k8s.io/cri-tools", "Version": "v1.34.0"}
            {"Path": "example.com/gone", "Error": {"Err": "not a known dependency"}}"#;
        let found = parse_module_list(listed).unwrap();
        assert_eq!(
            found["github.com/containerd/containerd/v2"],
            (
                "github.com/k3s-io/containerd/v2".to_string(),
                "v2.1.4-k3s2".to_string()
            )
        );
        assert_eq!(found["sigs.k8s.io/cri-tools"].1, "v1.34.0");
        assert!(!found.contains_key("example.com/gone"));
    }
}
