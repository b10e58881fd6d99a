//! Daemon supervision without systemd: a daemon runs under `keeper` (crates/keeper: restarts
//! with backoff, log rotation), which is a process-group leader started with setsid,
//! its pid in a pid file. Stopping signals the whole group: the keeper and its daemon.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use keeper::KeeperStatus;

/// A daemon as the installer knows it: name, pid file, log file.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub name: String,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
    /// The daemon (or its launcher) runs from here. A pid whose executable lies elsewhere is a
    /// reused pid, e.g. after a sandbox restart, not our daemon.
    pub program_dir: PathBuf,
}

impl Daemon {
    /// The pid in the pid file, if that very process still runs: alive, not a zombie, its
    /// executable under `program_dir`, and (pid files written since the start time is recorded)
    /// started when the pid file says. A pid is reused after a sandbox restart or once the
    /// daemon died, so anything that cannot be read counts as not ours: `stop` signals the
    /// whole process group of what this returns.
    pub fn running_pid(&self) -> Option<i32> {
        let record = PidRecord::parse(&fs::read_to_string(&self.pid_file).ok()?)?;
        let pid = record.pid;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        if record
            .start_time
            .is_some_and(|at| stat_start_time(&stat) != Some(at))
        {
            return None;
        }
        let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        (exe.starts_with(&self.program_dir) && process_alive(pid)).then_some(pid)
    }

    /// Where the keeper says how the daemon is doing (crates/keeper).
    pub fn keeper_status_file(&self) -> PathBuf {
        self.pid_file.with_extension("keeper.json")
    }

    pub fn keeper_status(&self) -> Option<KeeperStatus> {
        KeeperStatus::load(&self.keeper_status_file())
    }

    /// How the daemon last exited on its own since its keeper started, if it did.
    pub fn exited(&self) -> Option<String> {
        self.keeper_status()?.last_exit
    }

    /// Starts `program args` under its keeper (`PROGRAM_DIR/keeper`, which
    /// restarts it when it exits and writes its output to the log file) in a new session, with
    /// exactly `env` as its environment: nothing of the caller's shell leaks in, so a `start`
    /// from another shell runs the daemon as the install did. Returns the keeper's pid.
    pub fn start(&self, program: &Path, args: &[String], env: &[(String, String)]) -> Result<i32> {
        if let Some(parent) = self.log_file.parent() {
            fs::create_dir_all(parent)?;
        }
        // The keeper's own output (only if it fails itself) goes to the same log.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .with_context(|| format!("cannot open log {}", self.log_file.display()))?;
        let _ = fs::remove_file(self.keeper_status_file());
        // Bundles up to v1.34.1+k3s1-gvisor.3 ran the keeper as `installer keep-running` (the
        // same flags): an upgrade rolled back to one starts its daemons that way.
        let (keeper, subcommand) = match self.program_dir.join("keeper") {
            keeper if keeper.exists() => (keeper, None),
            _ => (self.program_dir.join("installer"), Some("keep-running")),
        };
        let mut command = Command::new(&keeper);
        command
            .args(subcommand)
            .arg(format!("--name={}", self.name))
            .arg(format!("--log={}", self.log_file.display()))
            .arg(format!("--status={}", self.keeper_status_file().display()))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env_clear();
        for (key, value) in env {
            command.env(key, value);
        }
        // The child becomes a session and group leader, so the daemon outlives the installer
        // and `stop` can signal its whole group. std has this as process_group(0) (setpgid);
        // setsid also drops the controlling terminal.
        // SAFETY: setsid is async-signal-safe, the one call made between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| {
            format!(
                "cannot start {} ({}) under its keeper {}",
                self.name,
                program.display(),
                keeper.display()
            )
        })?;
        let pid = child.id() as i32;
        // The child is reaped by init once the installer exits; while the installer runs,
        // reap_children reaps it by its pid if it exits.
        std::mem::forget(child);
        STARTED_HERE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pid);
        if let Some(parent) = self.pid_file.parent() {
            fs::create_dir_all(parent)?;
        }
        // Read while the child cannot have been reaped by anyone else: it is ours until we
        // exit, a zombie at worst.
        let start_time = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat_start_time(&stat))
            .with_context(|| format!("cannot read /proc/{pid}/stat of {}", self.name))?;
        let record = PidRecord {
            pid,
            start_time: Some(start_time),
        };
        crate::files::write_replacing(&self.pid_file, record.to_string().as_bytes(), 0o644)
            .with_context(|| format!("cannot write {}", self.pid_file.display()))?;
        Ok(pid)
    }

    /// SIGTERM to the daemon's process group, then SIGKILL after `grace`. Removes the pid file.
    /// Returns true when something was running.
    pub fn stop(&self, grace: Duration) -> bool {
        let Some(pid) = self.running_pid() else {
            let _ = fs::remove_file(&self.pid_file);
            return false;
        };
        signal_group(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !group_members(pid).is_empty() {
            reap_children();
            sleep(Duration::from_millis(100));
        }
        if !group_members(pid).is_empty() {
            signal_group(pid, Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !group_members(pid).is_empty() {
                reap_children();
                sleep(Duration::from_millis(100));
            }
        }
        let _ = fs::remove_file(&self.pid_file);
        let _ = fs::remove_file(self.keeper_status_file());
        true
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_file, lines)
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn signal_group(pgid: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// The daemons this very process started (pids), until reaped.
static STARTED_HERE: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Daemons started by this very process become its zombies when they exit; reap them so
/// liveness checks are not fooled. Only those, by pid: a wait for any child would also reap
/// the installer's other children (`ctr images import`, run on a thread while k3s starts),
/// whose own wait then fails with ECHILD (e2e of 2026-12-06 10:48Z: `cannot run
/// .../bin/ctr: No child processes (os error 10)`).
fn reap_children() {
    let mut started = STARTED_HERE.lock().unwrap_or_else(|e| e.into_inner());
    started.retain(|&pid| {
        matches!(
            waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        )
    });
}

/// Alive and not a zombie.
pub fn process_alive(pid: i32) -> bool {
    reap_children();
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_state(&stat).is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// The state letter of a /proc/PID/stat line ("pid (comm) S ...": comm may contain spaces).
fn stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A pid file: "PID START_TIME\n", START_TIME being field 22 of /proc/PID/stat (clock ticks
/// since boot), which tells the process from a later one given the same pid. Pid files written
/// before the start time was recorded hold only "PID\n".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PidRecord {
    pid: i32,
    start_time: Option<u64>,
}

impl PidRecord {
    fn parse(text: &str) -> Option<PidRecord> {
        let mut fields = text.split_whitespace();
        let pid = fields.next()?.parse().ok().filter(|pid| *pid > 0)?;
        let start_time = match fields.next() {
            None => None,
            Some(field) => Some(field.parse().ok()?),
        };
        Some(PidRecord { pid, start_time })
    }
}

impl std::fmt::Display for PidRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.start_time {
            Some(at) => writeln!(f, "{} {at}", self.pid),
            None => writeln!(f, "{}", self.pid),
        }
    }
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
fn stat_start_time(stat: &str) -> Option<u64> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Field 5 of /proc/PID/stat: the process group.
fn stat_pgrp(stat: &str) -> Option<i32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Every live pid. Reads /proc by number: gVisor lists /proc fine (only /proc/sys is odd).
pub fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live (non-zombie) members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat_pgrp(&stat) == Some(pgid)
                    && stat_state(&stat).is_some_and(|s| s != 'Z' && s != 'X')
            })
        })
        .collect()
}

/// Live processes whose executable lies under one of `roots`: containerd shims (in the prefix)
/// and container processes (their rootfs is in the data dir), which live in their own process
/// groups. Matching the executable, not the command line, never hits a shell that merely
/// mentions a path.
pub fn processes_running_from(roots: &[&Path]) -> Vec<(i32, String)> {
    let own = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|pid| *pid != own)
        .filter_map(|pid| {
            let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            let ours = roots.iter().any(|root| exe.starts_with(root));
            (ours && process_alive(pid)).then(|| (pid, exe.display().to_string()))
        })
        .collect()
}

/// SIGKILLs the given pids and waits briefly for them to go.
pub fn kill_all(pids: &[i32]) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.iter().any(|p| process_alive(*p)) {
        sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_checks_never_reap_another_child() {
        // A child the installer waits for itself (as `ctr images import` on its thread): it
        // exits while liveness checks run, and its own wait still sees its status.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            process_alive(std::process::id() as i32);
            if fs::read_to_string(format!("/proc/{}/stat", child.id()))
                .map_or(true, |stat| stat_state(&stat) == Some('Z'))
            {
                break;
            }
            sleep(Duration::from_millis(10));
        }
        process_alive(std::process::id() as i32);
        assert_eq!(child.wait().unwrap().code(), Some(3));
    }

    #[test]
    fn parses_stat_lines_with_spaces_in_comm() {
        let stat = "1234 (containerd shim) S 1 1234 1234 0 -1";
        assert_eq!(stat_state(stat), Some('S'));
        assert_eq!(stat_pgrp(stat), Some(1234));
        let full = "7 (a) b) S 1 7 7 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
        assert_eq!(stat_start_time(full), Some(98765));
    }

    #[test]
    fn pid_files_old_and_new() {
        let new = PidRecord {
            pid: 42,
            start_time: Some(9),
        };
        assert_eq!(PidRecord::parse(&new.to_string()), Some(new));
        assert_eq!(
            PidRecord::parse("42\n"),
            Some(PidRecord {
                pid: 42,
                start_time: None
            })
        );
        for bad in ["", "x", "0", "-1", "42 x"] {
            assert_eq!(PidRecord::parse(bad), None, "{bad:?}");
        }
    }

    fn daemon_in(dir: &Path, program_dir: &Path) -> Daemon {
        Daemon {
            name: "test".into(),
            pid_file: dir.join("test.pid"),
            log_file: dir.join("test.log"),
            program_dir: program_dir.to_path_buf(),
        }
    }

    /// A prefix from before the keeper's own binary (an upgrade rolled back to one) has only
    /// `installer`: the daemon starts under `installer keep-running`, with the same flags.
    #[test]
    fn where_the_prefix_has_no_keeper_the_installers_keep_running_keeps_the_daemon() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let args_file = dir.path().join("args");
        let installer = bin.join("installer");
        fs::write(
            &installer,
            format!("#!/bin/sh\necho \"$@\" > {}\n", args_file.display()),
        )
        .unwrap();
        fs::set_permissions(&installer, fs::Permissions::from_mode(0o755)).unwrap();
        let daemon = daemon_in(dir.path(), &bin);
        daemon
            .start(Path::new("/bin/true"), &["x".into()], &[])
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !args_file.exists() && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        let args = fs::read_to_string(&args_file).unwrap_or_default();
        assert!(
            args.starts_with("keep-running --name=test --log=")
                && args.ends_with("-- /bin/true x\n"),
            "{args:?}"
        );
    }

    /// A pid whose executable cannot be read (here the kernel thread kthreadd, pid 2) is not
    /// ours: `stop` would signal its whole group.
    #[test]
    fn a_process_whose_executable_cannot_be_read_is_not_ours() {
        if fs::read_link("/proc/2/exe").is_ok() || !process_alive(2) {
            eprintln!("skipped: pid 2 is not a kernel thread here");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let daemon = daemon_in(dir.path(), Path::new("/"));
        fs::write(&daemon.pid_file, "2\n").unwrap();
        assert_eq!(daemon.running_pid(), None);
    }

    /// The pid file records the process's start time (/proc/PID/stat field 22): the same pid
    /// with another start time is a reused pid, a stranger even where it runs from our prefix.
    #[test]
    fn a_pid_file_names_the_process_by_its_start_time() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let daemon = daemon_in(dir.path(), exe.parent().unwrap());
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let started = stat_start_time(&stat).unwrap();
        fs::write(&daemon.pid_file, format!("{pid} {started}\n")).unwrap();
        let ours = daemon.running_pid();
        fs::write(&daemon.pid_file, format!("{pid} {}\n", started + 1)).unwrap();
        let reused = daemon.running_pid();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(ours, Some(pid), "the process the pid file names");
        assert_eq!(reused, None, "same pid, another start time");
    }
}
