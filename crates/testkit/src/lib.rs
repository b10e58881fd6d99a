//! What the workspace's tests (and xtask's sandbox commands) share, so each is written once:
//! - [`runsc_sh`]: a shell in a fresh gVisor sandbox, the one command line every test uses;
//! - [`runsc`]: which runsc the tests use;
//! - [`root_or_skip`]: the gate for tests that need root (mounts, network namespaces, gVisor).
//!
//! The gate lets a contributor's plain `cargo test` pass without root: such tests say on
//! stderr that they are skipped and why. `scripts/test.sh` (CI's test command) sets
//! [`REQUIRE_ALL`], and then a missing requirement fails the test instead: CI never skips.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set (to anything but empty) by scripts/test.sh: every gated test must run.
pub const REQUIRE_ALL: &str = "K3S_GVISOR_TEST_ALL";

/// `RUNSC --network=none do -force-overlay=false /bin/sh`: a fresh sandbox whose root is this
/// host's / over 9p with no overlay (writes land on the host), loopback only. Add `-c SCRIPT`
/// or a script path.
pub fn runsc_sh(runsc: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(runsc);
    command.args(["--network=none", "do", "-force-overlay=false", "/bin/sh"]);
    command
}

/// The gVisor binary under test: `$K3S_GVISOR_RUNSC`, else `runsc` on PATH. Panics with how to
/// get one.
pub fn runsc() -> PathBuf {
    let name = std::env::var("K3S_GVISOR_RUNSC").unwrap_or_else(|_| "runsc".into());
    let found = if name.contains('/') {
        Path::new(&name).is_file().then(|| PathBuf::from(&name))
    } else {
        std::env::var("PATH").ok().and_then(|path| {
            path.split(':')
                .map(|dir| Path::new(dir).join(&name))
                .find(|candidate| candidate.is_file())
        })
    };
    found.unwrap_or_else(|| {
        panic!(
            "gVisor's runsc not found (K3S_GVISOR_RUNSC={name:?}): install it with \
             `apt-get install runsc` or point K3S_GVISOR_RUNSC at a runsc binary"
        )
    })
}

/// True when the test may go on: we are root. Otherwise, with [`REQUIRE_ALL`] set, it panics
/// saying what needs root; without it, it prints that the test is skipped and returns false.
/// `what`: why root is needed, e.g. "mounts tmpfs and runs gVisor".
pub fn root_or_skip(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let message = format!("this test needs root: it {what}");
    if std::env::var_os(REQUIRE_ALL).is_some_and(|v| !v.is_empty()) {
        panic!("{message} ({REQUIRE_ALL} is set, so it may not be skipped)");
    }
    eprintln!("skipped: {message}; run `cargo test` as root, as scripts/test.sh does");
    false
}

/// `git ARGS` in `dir` with a fixed identity (test fixtures commit); its trimmed stdout. Panics
/// with the output when git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("these tests need git (apt-get install git)");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
