//! Signals reach the command as they would without the launcher, and the launcher ends the way
//! the command ended.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the launcher running `args`; returns it, the tracee's stdout after the "ready <pid>"
/// line, and the tracee's pid.
fn start(tmp: &TempDir, args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>, i32) {
    let dir = make_procsys_dir(tmp.path());
    let mut child = Command::new(launcher())
        .arg("--procsys")
        .arg(&dir)
        .arg("--")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let pid = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the tracee did not start: {line:?}"));
    (child, stdout, pid)
}

fn kill(pid: u32, sig: i32) {
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// The launcher's exit status; one still running after 20 s is killed and fails the test.
fn wait_for_launcher(child: &mut Child) -> std::process::ExitStatus {
    testkit::wait_with_timeout(child, Duration::from_secs(20), "the launcher")
}

fn state_of(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(") ").next().unwrap().chars().next().unwrap()
}

#[test]
fn exit_code_is_propagated() {
    let tmp = TempDir::new("exit");
    let dir = make_procsys_dir(tmp.path());
    let status = Command::new(launcher())
        .arg("--procsys")
        .arg(&dir)
        .args(["--", "sh", "-c", "exit 7"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7));
}

#[test]
fn sigterm_to_launcher_reaches_the_command_and_its_exit_code_comes_back() {
    let tmp = TempDir::new("term-handled");
    let waiter = build_c("signal_waiter");
    let (mut child, mut stdout, _) = start(&tmp, &[waiter.to_str().unwrap(), "handle"]);
    kill(child.id(), libc::SIGTERM);
    let status = wait_for_launcher(&mut child);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "got SIGTERM\n");
    assert_eq!(status.code(), Some(42), "{status:?}");
}

#[test]
fn command_killed_by_sigterm_means_launcher_killed_by_sigterm() {
    let tmp = TempDir::new("term-default");
    let waiter = build_c("signal_waiter");
    let (mut child, _stdout, _) = start(&tmp, &[waiter.to_str().unwrap(), "default"]);
    kill(child.id(), libc::SIGTERM);
    let status = wait_for_launcher(&mut child);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

#[test]
fn sigstop_keeps_the_command_stopped_until_sigcont() {
    let tmp = TempDir::new("stop");
    let waiter = build_c("signal_waiter");
    let (mut child, mut stdout, tracee) = start(&tmp, &[waiter.to_str().unwrap(), "handle"]);
    kill(tracee as u32, libc::SIGSTOP);
    // A group-stop held with PTRACE_LISTEN shows as 't' (traced stop) or 'T'; a tracee that was
    // wrongly resumed would be back to 'S'.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(state_of(tracee), 't' | 'T') {
        assert!(
            Instant::now() < deadline,
            "the tracee never stopped: state {}",
            state_of(tracee)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        matches!(state_of(tracee), 't' | 'T'),
        "the tracee did not stay stopped"
    );
    kill(tracee as u32, libc::SIGCONT);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "continued\n");
    kill(child.id(), libc::SIGTERM);
    assert_eq!(wait_for_launcher(&mut child).code(), Some(42));
}

#[test]
fn command_dies_when_the_launcher_is_killed() {
    // PTRACE_O_EXITKILL: an untraced command would get ENOSYS from every traced syscall, so it
    // must not outlive the launcher.
    let tmp = TempDir::new("exitkill");
    let waiter = build_c("signal_waiter");
    let (mut child, _stdout, tracee) = start(&tmp, &[waiter.to_str().unwrap(), "handle"]);
    kill(child.id(), libc::SIGKILL);
    assert_eq!(wait_for_launcher(&mut child).signal(), Some(libc::SIGKILL));
    let deadline = Instant::now() + Duration::from_secs(5);
    // Gone, or a zombie waiting for its (now init) parent to reap it.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{tracee}/stat"))
            .is_ok_and(|stat| !stat.rsplit(") ").next().unwrap_or("").starts_with('Z'))
    };
    while alive() {
        assert!(
            Instant::now() < deadline,
            "the command survived the launcher"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
