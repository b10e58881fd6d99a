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
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

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

/// Where [`lock_machine`]'s lock lives. Scripts take it with `flock` (svcproxy's benchmark).
pub const MACHINE_LOCK: &str = "/run/k3s-gvisor-sandbox.lock";

/// One k3s scenario on this machine at a time. A sandbox shares the host's / (no overlay): its
/// /etc/rancher, /run/containerd and /var/log/pods, and a plain-Linux run shares even more, so
/// two runs at once (two checkouts, CI beside a developer) would see each other's files, fail
/// each other's host checks and skew each other's timings. Held until the returned file is
/// dropped (or the process exits, however it ends).
pub fn lock_machine() -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(MACHINE_LOCK)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!("another k3s scenario holds {MACHINE_LOCK}; waiting for it to finish");
            file.lock()?;
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(error),
    }
    Ok(file)
}

/// True when the test may go on: the Go module proxy (`go env GOPROXY`, its first URL) accepts
/// a TCP connection within 5 s. Otherwise like [`root_or_skip`]: a panic under [`REQUIRE_ALL`],
/// else a note that the test is skipped. `what`: why the proxy is needed.
pub fn go_proxy_or_skip(what: &str) -> bool {
    use std::net::ToSocketAddrs;
    let proxy = Command::new("go")
        .args(["env", "GOPROXY"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let first = proxy.split([',', '|']).next().unwrap_or("");
    let reachable = first
        .strip_prefix("https://")
        .map(|rest| (rest.split('/').next().unwrap_or(rest), 443))
        .or_else(|| {
            first
                .strip_prefix("http://")
                .map(|rest| (rest.split('/').next().unwrap_or(rest), 80))
        })
        .and_then(|(host, port)| {
            let (host, port) = match host.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().unwrap_or(port)),
                None => (host, port),
            };
            (host, port).to_socket_addrs().ok()?.next()
        })
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)).is_ok()
        });
    if reachable {
        return true;
    }
    let message =
        format!("this test needs the Go module proxy ({proxy:?} is not reachable): it {what}");
    if std::env::var_os(REQUIRE_ALL).is_some_and(|v| !v.is_empty()) {
        panic!("{message} ({REQUIRE_ALL} is set, so it may not be skipped)");
    }
    eprintln!("skipped: {message}");
    false
}

/// `child`'s exit status, waited for at most `limit`; past it the child is killed and the test
/// fails saying `what` (e.g. "pause") did not exit.
pub fn wait_with_timeout(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it; nothing listens now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}
