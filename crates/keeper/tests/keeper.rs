//! `keeper`, the process every daemon of an install runs under (lib.rs): a
//! daemon killed or crashing is started again, each exit counted; ten quick exits in a row are a
//! crash loop; a stop signal ends both without a restart; the log rotates. Short backoffs
//! (--first-backoff-ms, --max-backoff-ms) keep this fast; the defaults are in lib.rs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The keeper in a process group of its own, as `Daemon::start` runs it (setsid).
fn keeper(dir: &Path, backoff_ms: u64, command: &[&str]) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new(env!("CARGO_BIN_EXE_keeper"))
        .process_group(0)
        .arg("--name=daemon")
        .arg(format!("--log={}", dir.join("daemon.log").display()))
        .arg(format!(
            "--status={}",
            dir.join("daemon.keeper.json").display()
        ))
        .arg(format!("--first-backoff-ms={backoff_ms}"))
        .arg(format!("--max-backoff-ms={backoff_ms}"))
        .arg("--")
        .args(command)
        .spawn()
        .expect("start keeper")
}

fn status(dir: &Path) -> Value {
    std::fs::read_to_string(dir.join("daemon.keeper.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

/// Waits up to `limit` for `done(status)`; returns the last status.
fn wait_status(dir: &Path, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(dir);
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        sleep(Duration::from_millis(50));
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    testkit::wait_with_timeout(child, Duration::from_secs(10), "the keeper, after SIGTERM")
}

#[test]
fn a_killed_daemon_is_started_again_and_a_stop_signal_ends_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = keeper(
        dir.path(),
        100,
        &["sh", "-c", "echo started $$; exec sleep 600"],
    );
    let first = wait_status(dir.path(), Duration::from_secs(10), |s| {
        s["pid"].as_i64() > Some(0)
    });
    let pid = first["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let second = wait_status(dir.path(), Duration::from_secs(10), |s| {
        s["restarts"] == 1 && s["pid"].as_i64().is_some_and(|p| p > 0 && p as i32 != pid)
    });
    assert_eq!(second["restarts"], 1, "{second}");
    assert_eq!(second["last_exit"], "was killed by SIGKILL", "{second}");
    let text = log(dir.path());
    assert_eq!(text.matches("started ").count(), 2, "{text}");
    assert!(
        text.contains("[k3s-gvisor keeper] daemon was killed by SIGKILL after"),
        "{text}"
    );

    // A stop signal to the group (as `stop` sends it): no restart, the daemon gone, the status
    // file removed.
    let daemon = second["pid"].as_i64().unwrap() as i32;
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    assert_eq!(
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(daemon))).unwrap(),
        group,
        "the daemon is in its keeper's group"
    );
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM).unwrap();
    let exit = testkit::wait_with_timeout(&mut child, Duration::from_secs(10), "the keeper");
    assert!(exit.success(), "{exit}");
    sleep(Duration::from_millis(300));
    assert!(!Path::new(&format!("/proc/{daemon}")).exists() || zombie(daemon));
    assert!(!dir.path().join("daemon.keeper.json").exists());
    assert_eq!(log(dir.path()).matches("started ").count(), 2);
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn ten_quick_exits_in_a_row_are_a_crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = keeper(dir.path(), 20, &["sh", "-c", "echo failing; exit 3"]);
    let s = wait_status(dir.path(), Duration::from_secs(30), |s| {
        s["quick_exits"].as_u64() >= Some(10)
    });
    assert!(s["quick_exits"].as_u64() >= Some(10), "{s}");
    assert_eq!(s["last_exit"], "exited with code 3", "{s}");
    let text = log(dir.path());
    assert!(
        text.contains("crash loop: 10 quick exits in a row"),
        "{text}"
    );
    terminate(&mut child);
}

#[test]
fn a_stop_signal_to_the_keeper_alone_stops_its_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = keeper(dir.path(), 100, &["sleep", "600"]);
    let s = wait_status(dir.path(), Duration::from_secs(10), |s| {
        s["pid"].as_i64() > Some(0)
    });
    let daemon = s["pid"].as_i64().unwrap() as i32;
    assert!(terminate(&mut child).success());
    assert!(!Path::new(&format!("/proc/{daemon}")).exists() || zombie(daemon));
}

#[test]
fn the_daemons_output_rotates_by_size() {
    let dir = tempfile::tempdir().unwrap();
    // 12 MiB of output through the keeper: past the 10 MiB limit once.
    let mut child = keeper(
        dir.path(),
        100,
        &[
            "sh",
            "-c",
            "head -c 12582912 /dev/zero | tr '\\0' 'x'; exec sleep 600",
        ],
    );
    let rotated: PathBuf = dir.path().join("daemon.log.1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(rotated.exists() && log_size(&dir.path().join("daemon.log")) >= 2 << 20) {
        assert!(Instant::now() < deadline, "no rotation within 30 s");
        sleep(Duration::from_millis(100));
    }
    assert!(log_size(&rotated) <= 10 << 20);
    terminate(&mut child);
    assert!(log_size(&rotated) + log_size(&dir.path().join("daemon.log")) == 12 << 20);
}

fn log_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
