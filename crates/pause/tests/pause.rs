//! Behaviour of the `pause` binary: it sleeps, exits 0 on SIGINT/SIGTERM, and as PID 1 of a PID
//! namespace reaps the orphans the kernel hands it. The PID 1 scenario runs on the host kernel and
//! inside gVisor (`runsc`, taken from $K3S_GVISOR_RUNSC, default `runsc` on PATH).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PAUSE: &str = env!("CARGO_BIN_EXE_pause");

/// The signal mask of a process, from /proc/<pid>/status.
fn blocked_signals(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("SigBlk:"))?;
    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
}

fn in_sigtimedwait(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("sigtimedwait"))
}

/// Start pause and wait until it has blocked its signals, so a signal sent afterwards is
/// the one under test and not one that raced the start-up.
fn start_pause() -> std::process::Child {
    let child = Command::new(PAUSE)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pause");
    let term_bit = 1u64 << (libc::SIGTERM - 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    // While it sits in sigwaitinfo the kernel shows the waited-for signals as unblocked, so
    // "ready" is: SIGTERM blocked, or asleep in the sigtimedwait system call.
    while blocked_signals(child.id()).unwrap_or(0) & term_bit == 0 && !in_sigtimedwait(child.id()) {
        assert!(Instant::now() < deadline, "pause never blocked SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn stops_with_exit_0_on(signal: libc::c_int) {
    let mut child = start_pause();
    // It keeps sleeping until signalled.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "pause exited on its own"
    );
    // SAFETY: kill on a pid we own.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let status = testkit::wait_with_timeout(&mut child, Duration::from_secs(10), "pause");
    assert_eq!(
        status.code(),
        Some(0),
        "pause should exit 0 on signal {signal}, got {status:?}"
    );
}

#[test]
fn exits_0_on_sigterm() {
    stops_with_exit_0_on(libc::SIGTERM);
}

#[test]
fn exits_0_on_sigint() {
    stops_with_exit_0_on(libc::SIGINT);
}

#[test]
fn sleeps_without_using_cpu() {
    let mut child = start_pause();
    std::thread::sleep(Duration::from_secs(1));
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    // Fields after the ")" that closes comm: state is 0, utime 11, stime 12 (clock ticks).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    assert_eq!(fields[0], "S", "pause should be asleep: {stat}");
    assert!(
        ticks <= 5,
        "pause used {ticks} clock ticks of CPU in one second"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn rejects_unknown_arguments() {
    let out = Command::new(PAUSE).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

/// A shell script that makes pause PID 1 of a new PID namespace with one orphan (`sleep 1`)
/// re-parented to it, snapshots the process table while the orphan lives and after it exited,
/// then stops pause with SIGTERM from the parent namespace and reports the exit status.
fn pid1_script() -> String {
    format!(
        r#"
unshare --pid --fork /bin/sh -c '(sleep 1 &); exec "$0"' {PAUSE} 2>/dev/null &
U=$!
sleep 0.5
P=$(busybox ps -o pid,ppid | busybox awk -v u=$U '$2 == u {{ print $1 }}')
echo "pause-pid $P"
echo "== with-orphan"; busybox ps -o pid,ppid,stat,comm
sleep 1.5
echo "== after-orphan-exit"; busybox ps -o pid,ppid,stat,comm
echo "== end"
kill -TERM $P
wait $U
echo "pause-exit $?"
"#
    )
}

struct Pid1Report {
    pause_pid: String,
    with_orphan: Vec<Vec<String>>,
    after_exit: Vec<Vec<String>>,
    exit: Option<i32>,
}

fn parse_report(out: &str) -> Pid1Report {
    let mut report = Pid1Report {
        pause_pid: String::new(),
        with_orphan: vec![],
        after_exit: vec![],
        exit: None,
    };
    let mut section = "";
    for line in out.lines() {
        if let Some(pid) = line.strip_prefix("pause-pid ") {
            report.pause_pid = pid.trim().to_string();
        } else if let Some(code) = line.strip_prefix("pause-exit ") {
            report.exit = code.trim().parse().ok();
        } else if let Some(name) = line.strip_prefix("== ") {
            section = if name == "end" { "" } else { name };
        } else {
            let row: Vec<String> = line.split_whitespace().map(String::from).collect();
            match section {
                "with-orphan" => report.with_orphan.push(row),
                "after-orphan-exit" => report.after_exit.push(row),
                _ => {}
            }
        }
    }
    report
}

fn check_pid1_report(where_: &str, out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let context = format!(
        "{where_}: stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = parse_report(&stdout);
    assert!(
        !report.pause_pid.is_empty(),
        "pause did not start; {context}"
    );
    let children_of_pause = |rows: &[Vec<String>]| -> Vec<Vec<String>> {
        rows.iter()
            .filter(|r| r.len() >= 4 && r[1] == report.pause_pid)
            .cloned()
            .collect()
    };
    let before = children_of_pause(&report.with_orphan);
    assert!(
        before.iter().any(|r| r[3] == "sleep"),
        "the orphan was not re-parented to pause (is it PID 1 of the namespace?); {context}"
    );
    let after = children_of_pause(&report.after_exit);
    assert!(
        after.is_empty(),
        "pause left children behind after the orphan exited (zombies: state Z): {after:?}; {context}"
    );
    assert_eq!(
        report.exit,
        Some(0),
        "pause as PID 1 must exit 0 on SIGTERM; {context}"
    );
}

fn require_tool(name: &str, apt_package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not on PATH: install the Debian package {apt_package}"
    );
}

#[test]
fn reaps_orphans_as_pid1_on_host() {
    require_tool("unshare", "util-linux");
    require_tool("busybox", "busybox-static");
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(pid1_script())
        .output()
        .unwrap();
    check_pid1_report("host kernel", &out);
}

#[test]
fn reaps_orphans_as_pid1_in_gvisor() {
    require_tool("unshare", "util-linux");
    require_tool("busybox", "busybox-static");
    let runsc = testkit::runsc();
    let out = testkit::runsc_sh(&runsc)
        .arg("-c")
        .arg(pid1_script())
        .output()
        .unwrap();
    check_pid1_report(&format!("gVisor ({})", runsc.display()), &out);
}
