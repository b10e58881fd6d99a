//! The build stage: `go build` of each upstream binary from its patched (or unpatched) tree, and
//! `cargo build` of our runtime crates, both statically linked so they run in any sandbox.

use crate::config::{BundleConfig, Component, GoBinary};
use crate::fetch::go_command;
use crate::fsutil::tail;
use crate::layout::Layout;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The exact `go build` arguments for one binary; recorded in the manifest as its build flags.
pub fn go_build_args(c: &Component, bin: &GoBinary, stamp: &str, out: &Path) -> Vec<String> {
    let ldflags: Vec<String> = ["-s", "-w", "-buildid="]
        .iter()
        .map(|s| s.to_string())
        .chain(bin.ldflags.iter().map(|f| {
            f.replace("{version}", &c.version)
                .replace("{stamp}", &stamp.replace(' ', "-"))
        }))
        .collect();
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
    args
}

/// Build every binary of `c` from `tree` into `out_dir`; the log goes to `log`.
pub fn go_build(
    c: &Component,
    tree: &Path,
    out_dir: &Path,
    stamp: &str,
    layout: &Layout,
    source_date_epoch: u64,
    log: &Path,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir)?;
    let mut log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut outputs = Vec::new();
    for bin in &c.binaries {
        let out = out_dir.join(&bin.name);
        let args = go_build_args(c, bin, stamp, &out);
        use std::io::Write;
        writeln!(log_file, "$ go {}", args.join(" "))?;
        let bar = crate::ui::spinner(&format!("go build {} ({})", bin.name, c.name));
        // A vendored tree needs no network at all; otherwise only the module proxy.
        let status = go_command(layout, c.vendor)
            .args(&args)
            .env("CGO_ENABLED", if bin.cgo { "1" } else { "0" })
            .env("SOURCE_DATE_EPOCH", source_date_epoch.to_string())
            .current_dir(tree)
            .stdout(log_file.try_clone()?)
            .stderr(log_file.try_clone()?)
            .status()
            .context("cannot run `go build`")?;
        bar.finish_and_clear();
        if !status.success() {
            bail!(
                "go build of {} ({} {}) failed; last lines of {}:\n{}",
                bin.name,
                c.name,
                c.version,
                log.display(),
                tail(log, 30)
            );
        }
        outputs.push(out);
    }
    Ok(outputs)
}

/// RUSTFLAGS for the runtime crates: static, and free of the checkout's paths so that two
/// checkouts build identical binaries.
pub fn cargo_rustflags(layout: &Layout) -> String {
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    format!(
        "-C target-feature=+crt-static --remap-path-prefix={}=/k3s-gvisor --remap-path-prefix={}=/cargo",
        layout.repo.display(),
        cargo_home.display()
    )
}

pub const RUST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// `cargo build --release` of the runtime crates into `layout.cargo_target()`, then copy the
/// binaries into `layout.crates_bin()`.
pub fn cargo_build(config: &BundleConfig, layout: &Layout, log: &Path) -> Result<Vec<PathBuf>> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--release", "--locked", "--target", RUST_TARGET])
        .arg("--target-dir")
        .arg(layout.cargo_target())
        .env("RUSTFLAGS", cargo_rustflags(layout))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(&layout.repo);
    for p in &config.crates.packages {
        cmd.args(["-p", p]);
    }
    let log_file = std::fs::File::create(log)?;
    let bar = crate::ui::spinner("cargo build --release (runtime crates)");
    let status = cmd
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()?;
    bar.finish_and_clear();
    if !status.success() {
        bail!(
            "cargo build of the runtime crates failed; last lines of {}:\n{}",
            log.display(),
            tail(log, 30)
        );
    }
    let release = layout.cargo_target().join(RUST_TARGET).join("release");
    let bin_dir = layout.crates_bin();
    std::fs::create_dir_all(&bin_dir)?;
    let mut outputs = Vec::new();
    for p in &config.crates.packages {
        let from = release.join(p);
        let to = bin_dir.join(p);
        std::fs::copy(&from, &to)
            .with_context(|| format!("crate {p} built no binary named {p}"))?;
        outputs.push(to);
    }
    Ok(outputs)
}

/// `go version`, part of every Go build's inputs: a new toolchain means new binaries.
pub fn go_version() -> Result<String> {
    let out = Command::new("go")
        .arg("version")
        .env("GOTOOLCHAIN", "local")
        .output()
        .context("cannot run `go version`")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn rustc_version() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-V")
        .output()
        .context("cannot run `rustc -V`")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
