//! Test tools built from pinned Go modules: above all a current gVisor `runsc`, and `cnitool`,
//! `crictl`, `actionlint`. The pins live in tests/tools.toml.
//!
//! `tool_path(name, cache_dir, offline)` returns `<cache_dir>/tools/<name>-<version>/<name>`,
//! building it first if needed, with the pipeline's Go layer (xtask/src/go.rs) and its module
//! cache (`<cache_dir>/gomod`):
//!   1. `go mod download` of `<module>@<version>`; its h1 hash must equal the pin, both as Go
//!      reports it and as recomputed over the extracted tree;
//!   2. the pin's `patches`, if any, applied in order to a copy of it (xtask/src/patch.rs, as
//!      the pipeline applies its own);
//!   3. `go build` inside that copy (so the module's own go.mod/go.sum/replace apply), with
//!      the pin's toolchain, into a temporary file that is renamed into place only when the
//!      build succeeded.
//!
//! A built tool is never rebuilt: the version, and a hash of its patches, are part of its path.
//! Offline mode only looks.

mod lock;
pub mod pins;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use pins::ToolPin;

/// `RUNSC --network=none do -force-overlay=false /bin/sh`: a shell in a gVisor sandbox whose
/// root is this host's root over 9p (so absolute paths stay valid) with loopback-only network.
/// Add `-c SCRIPT` or a script path.
pub fn runsc_sh(runsc: &Path) -> std::process::Command {
    testkit::runsc_sh(runsc)
}

/// The path of the pinned tool `name`, built into `cache_dir` if it is not there yet.
/// With `offline`, nothing is fetched or built: a missing tool is an error that says how to
/// get it.
pub fn tool_path(name: &str, cache_dir: &Path, offline: bool) -> Result<PathBuf> {
    tool_path_with(&pins::default_pin_file(), name, cache_dir, offline)
}

fn tool_path_with(pin_file: &Path, name: &str, cache_dir: &Path, offline: bool) -> Result<PathBuf> {
    let pins = pins::load(pin_file)?;
    let Some(pin) = pins.get(name) else {
        bail!(
            "no tool named `{name}` is pinned in {}; known tools: {}",
            pin_file.display(),
            pins.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    let tools_dir = cache_dir.join("tools");
    let patches = pin.patch_paths(pin_file);
    let binary = installed_path(&tools_dir, name, pin, &patches)?;
    if binary.is_file() {
        return Ok(binary);
    }
    if offline {
        bail!(
            "offline, and `{name}` {} is not in the cache (looked for {}); run \
             `cargo xtask tool {name}` once with access to the Go module proxy",
            pin.version,
            binary.display()
        );
    }
    let go = crate::go::Go {
        mod_cache: cache_dir.join("gomod"),
        offline: false,
        // A pinned toolchain (an old gVisor's Go) is fetched through the module proxy and
        // checked against the checksum database by the go command itself.
        toolchain: pin.toolchain.clone().unwrap_or_else(|| "local".into()),
        env: Vec::new(),
    };
    build_tool(&go, name, pin, &patches, &tools_dir, &binary)?;
    Ok(binary)
}

/// Where the tool lives once built: the version is in the path, and so are a hash of the
/// patches' names and contents where there are any and the pinned Go toolchain where there is
/// one, so a new pin, an edited patch or another Go is a new build.
fn installed_path(
    tools_dir: &Path,
    name: &str,
    pin: &ToolPin,
    patches: &[PathBuf],
) -> Result<PathBuf> {
    let mut dir = format!("{name}-{}", pin.version);
    if !patches.is_empty() {
        let mut parts = Vec::new();
        for patch in patches {
            parts.push(
                patch
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into()),
            );
            parts.push(crate::digest::sha256_file(patch).with_context(|| {
                format!("tests/tools.toml: `{name}` names a patch that cannot be read")
            })?);
        }
        dir.push_str(&format!(
            "-patched-{}",
            &crate::digest::combine(parts)[..12]
        ));
    }
    // The Go a tool is built with is part of what it is: a gVisor built with a newer Go than
    // its own can die of its own seccomp filter (below, tests/tools.toml).
    if let Some(toolchain) = &pin.toolchain {
        dir.push_str(&format!("-{toolchain}"));
    }
    Ok(tools_dir.join(dir).join(name))
}

fn build_tool(
    go: &crate::go::Go,
    name: &str,
    pin: &ToolPin,
    patches: &[PathBuf],
    tools_dir: &Path,
    binary: &Path,
) -> Result<()> {
    std::fs::create_dir_all(tools_dir)
        .with_context(|| format!("cannot create {}", tools_dir.display()))?;
    let _lock = lock::BuildLock::acquire(&tools_dir.join(format!(".{name}.lock")), name)?;
    if binary.is_file() {
        // Another process built it while we waited for the lock.
        return Ok(());
    }
    let started = Instant::now();
    let what = format!("{name} ({}@{})", pin.module, pin.version);
    crate::ui::step("tool", format!("building {what}"));
    let module_dir = go
        .download(&pin.module, &pin.version, &pin.sum)
        .with_context(|| format!("tests/tools.toml pins {what}"))?;
    let scratch = tempfile::Builder::new()
        .prefix(&format!(".build-{name}-"))
        .tempdir_in(tools_dir)
        .with_context(|| format!("cannot create a build directory in {}", tools_dir.display()))?;
    let source = scratch.path().join("src");
    crate::fsutil::copy_tree(&module_dir, &source)?;
    for patch in patches {
        crate::patch::apply_patch(&source, patch)
            .with_context(|| format!("tests/tools.toml: a patch of {what}"))?;
        crate::ui::step("tool", format!("{name}: applied {}", patch.display()));
    }

    let mut ldflags = String::from("-s -w");
    if let Some(var) = &pin.version_var {
        ldflags.push_str(&format!(" -X {var}={}", pin.version));
    }
    let built = scratch.path().join(name);
    let mut cmd = go.command();
    // -mod=readonly: every dependency must already be in the module's own go.sum, and go
    // checks each downloaded dependency against it.
    cmd.args([
        "build",
        "-mod=readonly",
        "-trimpath",
        "-ldflags",
        &ldflags,
        "-o",
    ])
    .arg(&built)
    .arg(&pin.package)
    .env("CGO_ENABLED", if pin.cgo { "1" } else { "0" })
    // The tool's own build cache, removed with the scratch directory: the binary is what is
    // cached, and each gVisor's build cache (~400 MB, per Go toolchain) would otherwise stay in
    // the shared one for nothing (a CI machine's disk ran out, stop 32).
    .env("GOCACHE", scratch.path().join("gocache"))
    .current_dir(&source);
    let final_dir = binary.parent().expect("installed_path has a parent");
    // `<name>-<version>[-patched-<hash>].build.log`, beside the tool's directory.
    let log = tools_dir.join(format!(
        "{}.build.log",
        final_dir
            .file_name()
            .map_or("tool".into(), |n| n.to_string_lossy())
    ));
    let _ = std::fs::remove_file(&log);
    crate::go::run_logged(
        &mut cmd,
        &log,
        &format!(
            "go build {} ({what}, GOTOOLCHAIN={})",
            pin.package, go.toolchain
        ),
    )?;

    // Same filesystem (both under tools_dir), so the rename is atomic: readers see either no
    // binary or a complete one.
    std::fs::create_dir_all(final_dir)
        .with_context(|| format!("cannot create {}", final_dir.display()))?;
    if pin.flags.is_empty() {
        std::fs::rename(&built, binary)
            .with_context(|| format!("cannot move the built {name} to {}", binary.display()))?;
    } else {
        install_with_flags(&built, binary, &pin.flags)?;
    }
    crate::ui::step(
        "tool",
        format!(
            "built {what} in {:.0?}: {}",
            started.elapsed(),
            binary.display()
        ),
    );
    Ok(())
}

/// A tool pinned with `flags`: the binary goes to `<name>.bin` and `<name>` becomes
/// `exec <name>.bin FLAGS "$@"`, so every caller handed the tool's path (runsc_sh, the tests,
/// K3S_GVISOR_RUNSC) runs it with them. The wrapper is written last: its presence means the
/// tool is complete.
fn install_with_flags(built: &Path, binary: &Path, flags: &[String]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let real = binary.with_extension("bin");
    std::fs::rename(built, &real)
        .with_context(|| format!("cannot move the built tool to {}", real.display()))?;
    let real_text = real.display().to_string();
    if real_text.contains('\'') {
        bail!("cannot write a shell wrapper for {real_text}: the cache path contains a `'`");
    }
    // The flags were checked to be plain `--name=value` words (pins.rs).
    let script = format!(
        "#!/bin/sh\n# Written by `cargo xtask tool` from tests/tools.toml (`flags`): this build \
         needs them on every call.\nexec '{real_text}' {} \"$@\"\n",
        flags.join(" ")
    );
    let temp = binary.with_extension("wrapper-tmp");
    std::fs::write(&temp, script).with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&temp, binary)
        .with_context(|| format!("cannot move the wrapper to {}", binary.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pins(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("tools.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// cnitool: the smallest real pin, so the end-to-end test stays quick.
    fn cnitool_pin() -> ToolPin {
        pins::load(&pins::default_pin_file()).unwrap()["cnitool"].clone()
    }

    fn pin_text(name: &str, pin: &ToolPin) -> String {
        format!(
            "[{name}]\nmodule = \"{}\"\nversion = \"{}\"\nsum = \"{}\"\npackage = \"{}\"\n",
            pin.module, pin.version, pin.sum, pin.package
        )
    }

    #[test]
    fn a_tool_pinned_with_flags_gets_them_first_on_every_call() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let built = dir.path().join("built");
        std::fs::write(&built, "#!/bin/sh\necho \"args: $*\"\n").unwrap();
        std::fs::set_permissions(&built, std::fs::Permissions::from_mode(0o755)).unwrap();
        let binary = dir.path().join("runsc-old");
        install_with_flags(&built, &binary, &["--platform=ptrace".to_string()]).unwrap();
        let out = std::process::Command::new(&binary)
            .args(["--network=none", "do", "a b"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "args: --platform=ptrace --network=none do a b\n"
        );
        assert!(dir.path().join("runsc-old.bin").is_file());
    }

    #[test]
    fn unknown_tools_are_named_with_the_known_ones() {
        let cache = tempfile::tempdir().unwrap();
        let err = tool_path("nope", cache.path(), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no tool named `nope`"), "{err}");
        assert!(err.contains("runsc"), "{err}");
    }

    #[test]
    fn offline_names_what_is_missing_and_how_to_get_it() {
        let cache = tempfile::tempdir().unwrap();
        let err = tool_path("runsc", cache.path(), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("offline"), "{err}");
        assert!(err.contains("cargo xtask tool runsc"), "{err}");
        assert!(err.contains(&cache.path().display().to_string()), "{err}");
    }

    #[test]
    fn a_patched_tool_has_its_own_path_which_changes_with_the_patch() {
        let dir = tempfile::tempdir().unwrap();
        let pins = pins::load(&pins::default_pin_file()).unwrap();
        let pin = &pins["runsc-2025"];
        let patch = dir.path().join("0001-x.patch");
        std::fs::write(&patch, "one").unwrap();
        let tools = dir.path().join("tools");
        let plain = installed_path(&tools, "runsc-x", pin, &[]).unwrap();
        let patched = installed_path(&tools, "runsc-x", pin, std::slice::from_ref(&patch)).unwrap();
        std::fs::write(&patch, "two").unwrap();
        let edited = installed_path(&tools, "runsc-x", pin, std::slice::from_ref(&patch)).unwrap();
        assert_ne!(plain, patched);
        assert_ne!(patched, edited, "an edited patch must be a new build");
        let dir_name = patched
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        assert!(
            dir_name.starts_with(&format!("runsc-x-{}-patched-", pin.version)),
            "{dir_name}"
        );
        std::fs::remove_file(&patch).unwrap();
        let err = format!(
            "{:#}",
            installed_path(&tools, "runsc-x", pin, &[patch]).unwrap_err()
        );
        assert!(err.contains("names a patch that cannot be read"), "{err}");
    }

    #[test]
    fn a_cached_tool_is_returned_without_building() {
        let cache = tempfile::tempdir().unwrap();
        let pins = pins::load(&pins::default_pin_file()).unwrap();
        let expected =
            installed_path(&cache.path().join("tools"), "crictl", &pins["crictl"], &[]).unwrap();
        std::fs::create_dir_all(expected.parent().unwrap()).unwrap();
        std::fs::write(&expected, "#!/bin/sh\n").unwrap();
        assert_eq!(tool_path("crictl", cache.path(), true).unwrap(), expected);
        assert!(expected.ends_with(format!("crictl-{}/crictl", pins["crictl"].version)));
    }

    /// A pin whose hash does not match what the proxy serves must stop before any build.
    /// Needs `go` and the Go module proxy.
    #[test]
    fn a_wrong_pinned_hash_fails_before_building() {
        if !testkit::go_proxy_or_skip("asks the proxy for a module's hash") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut pin = cnitool_pin();
        pin.sum = "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
        let pin_file = write_pins(dir.path(), &pin_text("cnitool", &pin));
        let cache = dir.path().join("cache");
        let err = format!(
            "{:#}",
            tool_path_with(&pin_file, "cnitool", &cache, false).unwrap_err()
        );
        assert!(err.contains("hash mismatch"), "{err}");
        assert!(!installed_path(&cache.join("tools"), "cnitool", &pin, &[])
            .unwrap()
            .exists());
    }

    /// A module tree changed after download (a corrupted or tampered Go module cache: go trusts
    /// an extracted tree and still reports the recorded hash) must be caught by our own hash of
    /// the sources we build. Uses a private module cache; needs `go` and the Go module proxy.
    #[test]
    fn a_tampered_module_cache_is_caught_before_building() {
        if !testkit::go_proxy_or_skip("downloads a module into a private cache") {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let go = crate::go::Go {
            mod_cache: cache.join("gomod"),
            offline: false,
            toolchain: "local".into(),
            env: Vec::new(),
        };
        let pin = cnitool_pin();
        let module = go.download(&pin.module, &pin.version, &pin.sum).unwrap();
        let victim = module.join("cnitool/main.go");
        let parent = victim.parent().unwrap();
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut text = std::fs::read_to_string(&victim).unwrap();
        text.push_str("\n// injected\n");
        std::fs::write(&victim, text).unwrap();

        let err = format!(
            "{:#}",
            tool_path_with(&pins::default_pin_file(), "cnitool", &cache, false).unwrap_err()
        );
        assert!(err.contains("hash mismatch"), "{err}");
        assert!(
            !victim.exists(),
            "the tampered module stayed in the module cache"
        );
        // Go's module cache is read-only by design; make it removable for the tempdir cleanup.
        for entry in walkdir::WalkDir::new(cache.join("gomod")) {
            let entry = entry.unwrap();
            if entry.file_type().is_dir() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755))
                    .unwrap();
            }
        }
    }

    /// The whole path for real: fetch, verify, build, install, then a second call reuses it.
    /// Needs `go` and the Go module proxy.
    #[test]
    fn builds_cnitool_from_the_module_proxy_and_reuses_it() {
        if !testkit::go_proxy_or_skip("builds cnitool from the proxy") {
            return;
        }
        let cache = tempfile::tempdir().unwrap();
        let path = tool_path("cnitool", cache.path(), false).unwrap();
        let out = std::process::Command::new(&path).output().unwrap();
        let usage = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            usage.contains("cnitool"),
            "unexpected cnitool output: {usage}"
        );

        let built_at = std::fs::metadata(&path).unwrap().modified().unwrap();
        let again = tool_path("cnitool", cache.path(), true).unwrap();
        assert_eq!(again, path);
        assert_eq!(
            std::fs::metadata(&again).unwrap().modified().unwrap(),
            built_at
        );
        // Nothing but the tool, its build log and the lock file is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(cache.path().join("tools"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".build-"))
            .collect();
        assert!(leftovers.is_empty(), "scratch dirs left: {leftovers:?}");
    }

    /// The cache the CLI uses by default, so a runsc built here is reused by `cargo xtask tool`.
    fn shared_cache_dir() -> PathBuf {
        std::env::var_os("K3S_GVISOR_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache"))
    }

    /// The primary proof that the pinned, current runsc works on this machine: it boots a
    /// sandbox the way the product's tests will, and the sandbox is a current gVisor (Debian's
    /// 2022 runsc has no cap_last_cap and no devices cgroup, so pinning an old one fails here).
    /// Needs root, `go` and the Go module proxy; the first run builds runsc (about 2 minutes).
    #[test]
    fn current_runsc_boots_a_sandbox_here() {
        if !testkit::root_or_skip("boots a gVisor sandbox")
            || !testkit::go_proxy_or_skip("builds runsc from the proxy")
        {
            return;
        }
        let uid = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|v| v.split_whitespace().next().unwrap().to_string())
            })
            .unwrap();
        assert_eq!(uid, "0", "runsc do needs root: run this test as root");
        let runsc = tool_path("runsc", &shared_cache_dir(), false).unwrap();
        let out = runsc_sh(&runsc)
            .arg("-c")
            .arg(
                "uname -r; cat /proc/sys/kernel/cap_last_cap; cut -f1 /proc/cgroups | tr '\\n' ' '",
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} do failed ({}): {stdout}{}",
            runsc.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "unexpected sandbox output: {stdout}");
        let cap_last_cap: u32 = lines[1]
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("cap_last_cap is not a number: {stdout}"));
        assert!((36..64).contains(&cap_last_cap), "{stdout}");
        assert!(
            lines[2].split(' ').any(|c| c == "devices"),
            "no devices cgroup: {stdout}"
        );
    }

    /// Builds every pinned tool into the shared cache (slow: runsc takes minutes).
    /// Run by hand: `cargo test -p xtask tools::tests::builds_every_pinned_tool -- --ignored`.
    #[test]
    #[ignore]
    fn builds_every_pinned_tool() {
        let cache = shared_cache_dir();
        for name in pins::load(&pins::default_pin_file()).unwrap().into_keys() {
            let path = tool_path(&name, &cache, false).unwrap();
            let out = std::process::Command::new(&path)
                .arg(if name == "cnitool" {
                    "help"
                } else {
                    "--version"
                })
                .output()
                .unwrap();
            eprintln!(
                "{name}: {} {}",
                path.display(),
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
            );
        }
    }
}
