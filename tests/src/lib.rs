//! Helpers shared by the cross-crate tests in tests/tests/.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (this crate lives in <repo>/tests).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `cargo xtask ARGS` from `dir` (a checkout), with the shared download cache: K3S_GVISOR_CACHE
/// if set (several checkouts share one), else this checkout's .cache.
pub fn xtask(dir: &Path, args: &[&str]) -> Output {
    xtask_with_env(dir, args, &[])
}

/// [`xtask`] with these variables set besides.
pub fn xtask_with_env(dir: &Path, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let cache = std::env::var_os("K3S_GVISOR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache"));
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .arg("xtask")
        .args(args)
        .current_dir(dir)
        .env("K3S_GVISOR_CACHE", cache)
        .envs(env.iter().copied())
        .output()
        .expect("cannot run cargo xtask")
}

/// The path of a pinned test tool (`cargo xtask tool NAME`: runsc, crictl, cnitool, ...).
pub fn tool(name: &str) -> PathBuf {
    let out = xtask(&repo(), &["tool", name]);
    let text = check(&out, &format!("cargo xtask tool {name}"));
    let path = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .map(PathBuf::from);
    path.unwrap_or_else(|| panic!("cargo xtask tool {name} printed no path:\n{text}"))
}

/// Fail with both output streams when a command did not succeed.
pub fn check(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    format!("{stdout}{stderr}")
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}
