//! containerd: its start (never under the launcher) and the wait for its socket, its
//! environment as k3s would give it, and `ctr`, the installer's client for it (images, tasks).

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::wait::{exit_logs, LOG_TAIL_LINES};
use super::{daemon, daemon_env, shims, CONTAINERD};
use crate::paths::Paths;
use crate::state::State;
use crate::supervise::{self, Daemon};

const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);

/// The variable containerd 0005 reads in the runc shim: the group of every container without
/// an `io.containerd.runc.v2.group` annotation of its own.
const SHIM_GROUP_ENV: &str = "RUNC_SHIM_DEFAULT_GROUP";

pub fn healthy(paths: &Paths) -> bool {
    socket_accepts(&paths.containerd_socket())
}

fn socket_accepts(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// Starts containerd (if not running) and waits for its socket.
pub fn start(paths: &Paths, state: &State) -> Result<()> {
    let daemon = daemon(paths, CONTAINERD);
    if let Some(pid) = daemon.running_pid() {
        println!("containerd already running (pid {pid})");
        return Ok(());
    }
    let _ = fs::remove_file(paths.containerd_socket());
    let (env, extra_args) = env(paths, &state.env);
    let mut args = vec![
        "--config".to_string(),
        paths.containerd_config().display().to_string(),
    ];
    args.extend(extra_args);
    // Never under the launcher: its seccomp filter and ptrace would be inherited by every
    // shim, runc and pod for life, and patched containerd and runc read no /proc/sys file a
    // gVisor lacks (containerd 0002 reads the unprivileged-port sysctls only where they exist;
    // runc 0001 probes the last capability where cap_last_cap is missing). Measured: under the
    // launcher, containerd's --log stayed empty through the whole e2e in the current gVisor and
    // in gvisor-2025 (docs/installer.md).
    let pid = daemon.start(&paths.bin(CONTAINERD), &args, &env)?;
    println!(
        "containerd started (pid {pid}), log {}",
        daemon.log_file.display()
    );
    wait_for_socket(paths, &daemon, pid)
}

/// Waits until containerd's socket accepts a connection, every 200 ms rather than with
/// `Started::wait_for`'s back-off: everything else in a start waits for this socket, so a late
/// check delays all of it.
fn wait_for_socket(paths: &Paths, daemon: &Daemon, pid: i32) -> Result<()> {
    let deadline = Instant::now() + SOCKET_TIMEOUT;
    // From 10 ms up to 200 ms between tries (a connect, no process): k3s starts after this,
    // and containerd serves ~0.15 s after its start in gVisor.
    let mut interval = Duration::from_millis(10);
    while Instant::now() < deadline {
        if socket_accepts(&paths.containerd_socket()) {
            println!(
                "containerd is serving on {}",
                paths.containerd_socket().display()
            );
            return Ok(());
        }
        // The keeper we just spawned: no reuse is possible while it is our unreaped child.
        if let Some(exit) = daemon.exited() {
            bail!(
                "containerd {exit} during startup (its keeper starts it again: `status`); {}",
                exit_logs(paths, daemon)
            );
        }
        if !supervise::process_alive(pid) {
            bail!(
                "containerd's keeper exited during startup; {}",
                exit_logs(paths, daemon)
            );
        }
        sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(200));
    }
    bail!(
        "containerd did not open {} within {}s; last lines of {}:\n{}",
        paths.containerd_socket().display(),
        SOCKET_TIMEOUT.as_secs(),
        daemon.log_file.display(),
        daemon.log_tail(LOG_TAIL_LINES)
    )
}

/// containerd's environment and extra arguments, as k3s makes them for the containerd it runs
/// (pkg/agent/containerd): the proxy variables as they are, `CONTAINERD_X` as `X` (so
/// `CONTAINERD_HTTPS_PROXY` is a proxy for image pulls only), `CONTAINERD_LOG_LEVEL` as
/// `--log-level`.
///
/// And one runc shim for every pod rather than one a pod (containerd 0005,
/// `RUNC_SHIM_DEFAULT_GROUP`): in gVisor each shim costs about 29 MiB (its binary counted whole,
/// Go's runtime in 2 MiB pieces), so the e2e's seven pods took 205 MiB of shims. Set first, so
/// `CONTAINERD_RUNC_SHIM_DEFAULT_GROUP=` (empty) at install gives upstream's shim per pod back.
fn env(
    paths: &Paths,
    recorded: &std::collections::BTreeMap<String, String>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut env = daemon_env(paths);
    env.push((SHIM_GROUP_ENV.to_string(), shims::SHIM_GROUP.to_string()));
    let mut args = Vec::new();
    for (name, value) in recorded {
        if name == "CONTAINERD_LOG_LEVEL" {
            args.extend(["--log-level".to_string(), value.clone()]);
        } else if let Some(stripped) = name.strip_prefix("CONTAINERD_") {
            env.push((stripped.to_string(), value.clone()));
        } else if crate::k3s_settings::is_proxy_var(name) {
            env.push((name.clone(), value.clone()));
        }
    }
    (env, args)
}

/// `ctr --address SOCK -n NAMESPACE args...`, returning stdout or an error with stderr.
pub fn ctr(paths: &Paths, namespace: &str, args: &[&str]) -> Result<String> {
    let output = ctr_command(paths, namespace, args)
        .output()
        .with_context(|| format!("cannot run {}", paths.bin("ctr").display()))?;
    ctr_result(args, output)
}

/// [`ctr`] with `feed` writing its standard input, which is closed when `feed` returns.
pub fn ctr_fed(
    paths: &Paths,
    namespace: &str,
    args: &[&str],
    feed: impl FnOnce(&mut std::process::ChildStdin) -> Result<()> + Send,
) -> Result<String> {
    let mut child = ctr_command(paths, namespace, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", paths.bin("ctr").display()))?;
    let mut stdin = child.stdin.take().context("ctr's standard input")?;
    let (fed, output) = std::thread::scope(|scope| {
        // Fed beside the wait, which reads ctr's output: neither side can fill a pipe and stop.
        let feeder = scope.spawn(move || feed(&mut stdin));
        let output = child.wait_with_output();
        (feeder.join(), output)
    });
    let output = output.context("waiting for ctr")?;
    let fed = fed.map_err(|_| anyhow::anyhow!("writing ctr's standard input panicked"))?;
    match fed {
        // What `feed` could not do (read an archive, say) is why ctr saw its input cut short.
        Err(error) if !is_broken_pipe(&error) => Err(error),
        // Where ctr stopped reading, its own error says why.
        _ => ctr_result(args, output),
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn ctr_command(paths: &Paths, namespace: &str, args: &[&str]) -> Command {
    let mut command = Command::new(paths.bin("ctr"));
    command
        .arg("--address")
        .arg(paths.containerd_socket())
        .args(["-n", namespace])
        .args(args);
    command
}

fn ctr_result(args: &[&str], output: std::process::Output) -> Result<String> {
    if !output.status.success() {
        // ctr repeats containerd's deprecation warnings on every call; they are not the error.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let error: Vec<&str> = stderr
            .lines()
            .filter(|line| !line.contains("DEPRECATION"))
            .collect();
        bail!("ctr {} failed: {}", args.join(" "), error.join("\n").trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shim group is containerd's unless the user's `CONTAINERD_RUNC_SHIM_DEFAULT_GROUP`
    /// (recorded at install, empty for upstream's shim per pod) comes after it: the last value
    /// of a name is the one the daemon gets.
    #[test]
    fn the_users_shim_group_comes_after_the_installers() {
        let paths = Paths::new(Path::new("/p"), Path::new("/d"));
        let group = |recorded: &[(&str, &str)]| {
            let recorded = recorded
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let (env, _) = env(&paths, &recorded);
            env.iter()
                .rev()
                .find(|(name, _)| name == SHIM_GROUP_ENV)
                .map(|(_, value)| value.clone())
        };
        assert_eq!(group(&[]).as_deref(), Some(shims::SHIM_GROUP));
        assert_eq!(
            group(&[("CONTAINERD_RUNC_SHIM_DEFAULT_GROUP", "")]).as_deref(),
            Some("")
        );
    }

    /// An install whose bin/ctr is `script` (sh).
    fn with_ctr(root: &Path, script: &str) -> Paths {
        use std::os::unix::fs::PermissionsExt;
        let paths = Paths::new(&root.join("prefix"), &root.join("data"));
        fs::create_dir_all(paths.prefix.join("bin")).unwrap();
        let ctr = paths.bin("ctr");
        fs::write(&ctr, format!("#!/bin/sh\n{script}")).unwrap();
        fs::set_permissions(&ctr, fs::Permissions::from_mode(0o755)).unwrap();
        paths
    }

    #[test]
    fn a_feed_that_fails_is_the_error_not_ctrs_complaint_about_its_cut_input() {
        let dir = tempfile::tempdir().unwrap();
        let paths = with_ctr(
            dir.path(),
            "cat > /dev/null; echo 'unexpected EOF' >&2; exit 1",
        );
        let error = ctr_fed(&paths, "k8s.io", &["images", "import", "-"], |stdin| {
            use std::io::Write;
            stdin.write_all(b"half a tar")?;
            bail!("cannot read the image archive /b/x.tar")
        })
        .unwrap_err();
        assert_eq!(error.to_string(), "cannot read the image archive /b/x.tar");
    }

    #[test]
    fn where_ctr_stops_reading_its_own_error_is_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let paths = with_ctr(dir.path(), "echo 'not an archive' >&2; exit 1");
        let error = ctr_fed(&paths, "k8s.io", &["images", "import", "-"], |stdin| {
            use std::io::Write;
            // More than a pipe holds: the write fails once ctr has exited.
            for _ in 0..64 {
                stdin.write_all(&[0; 65536])?;
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "ctr images import - failed: not an archive"
        );
    }

    #[test]
    fn a_fed_ctr_that_succeeds_gives_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let paths = with_ctr(dir.path(), "wc -c");
        let out = ctr_fed(&paths, "k8s.io", &["images", "import", "-"], |stdin| {
            use std::io::Write;
            Ok(stdin.write_all(&[0; 100_000])?)
        })
        .unwrap();
        assert_eq!(out.trim(), "100000");
    }
}
