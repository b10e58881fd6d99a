//! Waiting for a daemon this process just started to become usable, and what to quote when it
//! dies instead: the last lines of its log (and of the launcher's, where it ran under it).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::kubectl::{Seen, Watch};
use crate::paths::Paths;
use crate::supervise::{self, Daemon};

pub const LOG_TAIL_LINES: usize = 30;

/// A daemon started by this process: `pid` is its keeper, our unreaped child, so the pid cannot
/// be reused while we wait.
pub struct Started<'a> {
    pub paths: &'a Paths,
    pub daemon: Daemon,
    pub pid: i32,
}

impl Started<'_> {
    /// Checks `ready` until it holds, failing when the daemon or its keeper exits or `timeout`
    /// passes.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl FnMut() -> bool,
    ) -> Result<()> {
        self.poll(what, timeout, ready, |interval| interval)
    }

    /// As [`Started::wait_for`], for a check that costs next to nothing (reading a file, as
    /// [`LogFollower::says`] does): asked every 100 ms throughout rather than at a pace that
    /// grows to a second.
    pub fn wait_for_often(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl FnMut() -> bool,
    ) -> Result<()> {
        self.poll(what, timeout, ready, |_| Duration::from_millis(100))
    }

    /// `ready` asked until it holds, sleeping `pace(wait_until's interval)` between asks.
    fn poll(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
        pace: impl Fn(Duration) -> Duration,
    ) -> Result<()> {
        self.wait_until(what, timeout, |interval| {
            ready() || {
                sleep(pace(interval));
                false
            }
        })
    }

    /// As [`Started::wait_for`], told by a watch instead of asking again and again: `seen` is
    /// given each line of the watch `start` starts and says whether it shows what is waited
    /// for, as soon as it comes. A watch that cannot start or ends (k3s's API not up yet, or
    /// restarting) is started again at `wait_for`'s pace.
    pub fn wait_for_watched(
        &self,
        what: &str,
        timeout: Duration,
        mut start: impl FnMut() -> Result<Watch>,
        mut seen: impl FnMut(&str) -> bool,
    ) -> Result<()> {
        let mut watch = None;
        self.wait_until(what, timeout, |interval| {
            let running = match &mut watch {
                Some(running) => running,
                None => match start() {
                    Ok(started) => watch.insert(started),
                    Err(_) => {
                        sleep(interval);
                        return false;
                    }
                },
            };
            match running.next(interval) {
                Seen::Line(line) => seen(&line),
                Seen::Nothing => false,
                Seen::Ended => {
                    watch = None;
                    sleep(interval);
                    false
                }
            }
        })
    }

    /// Calls `check` with the time it may take (it sleeps or waits for an event that long)
    /// until it returns true, failing when the daemon or its keeper exits or `timeout` passes.
    fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(Duration) -> bool,
    ) -> Result<()> {
        let daemon = &self.daemon;
        let deadline = Instant::now() + timeout;
        // From 100 ms up to 1 s between checks: a wait that is over at once costs little,
        // and a long one spawns `k3s kubectl` at most once a second. A fixed 2 s made every
        // wait of install end on a 2 s step (BENCHMARKS.md "Where the start goes").
        let mut interval = Duration::from_millis(100);
        while Instant::now() < deadline {
            if check(interval) {
                return Ok(());
            }
            if let Some(exit) = daemon.exited() {
                bail!(
                    "{} {exit} while waiting for {what} (its keeper starts it again: `status`); {}",
                    daemon.name,
                    exit_logs(self.paths, daemon)
                );
            }
            if !supervise::process_alive(self.pid) {
                bail!(
                    "{}'s keeper exited while waiting for {what}; {}",
                    daemon.name,
                    exit_logs(self.paths, daemon)
                );
            }
            interval = (interval * 2).min(Duration::from_secs(1));
        }
        bail!(
            "timed out after {}s waiting for {what}; last lines of {}:\n{}",
            timeout.as_secs(),
            daemon.log_file.display(),
            daemon.log_tail(LOG_TAIL_LINES)
        )
    }
}

/// The last lines of a daemon's log and, when it ran under the launcher, of the launcher's log
/// (a launcher that fails before the daemon starts leaves the daemon's log empty).
pub fn exit_logs(paths: &Paths, daemon: &Daemon) -> String {
    let mut text = format!(
        "last lines of {}:\n{}",
        daemon.log_file.display(),
        daemon.log_tail(LOG_TAIL_LINES)
    );
    let launcher_log = paths.launcher_log(&daemon.name);
    if launcher_log.exists() {
        text.push_str(&format!(
            "\nlast lines of {}:\n{}",
            launcher_log.display(),
            supervise::tail(&launcher_log, LOG_TAIL_LINES)
        ));
    }
    text
}

/// What a log file gains from a point on, read as it is written (only the new bytes each
/// time), with no process started.
pub struct LogFollower {
    path: PathBuf,
    offset: u64,
    /// The end of what was read last, which a text written across two reads begins in.
    carried: Vec<u8>,
}

impl LogFollower {
    /// From the log's end now (from its start when there is none yet): what it holds already
    /// does not count.
    pub fn from_end(path: &Path) -> Self {
        LogFollower {
            path: path.to_path_buf(),
            offset: std::fs::metadata(path).map_or(0, |meta| meta.len()),
            carried: Vec::new(),
        }
    }

    /// Whether what the log gained since the last call says `text`. A log shorter than what
    /// was read of it was rotated (the keeper does at 10 MiB): it is read from its start.
    pub fn says(&mut self, text: &str) -> bool {
        if std::fs::metadata(&self.path).is_ok_and(|meta| meta.len() < self.offset) {
            self.offset = 0;
            self.carried.clear();
        }
        let mut gained = Vec::new();
        let read = std::fs::File::open(&self.path).and_then(|mut file| {
            file.seek(SeekFrom::Start(self.offset))?;
            file.read_to_end(&mut gained)
        });
        if read.is_err() {
            return false;
        }
        self.offset += gained.len() as u64;
        let mut window = std::mem::take(&mut self.carried);
        window.extend_from_slice(&gained);
        let said = String::from_utf8_lossy(&window).contains(text);
        self.carried = window.split_off(window.len().saturating_sub(text.len()));
        said
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubectl::{Kubectl, NodeReport};
    use std::os::unix::fs::PermissionsExt;

    /// An install whose bin/k3s is `script` (sh), with a kubeconfig.
    fn with_k3s(root: &std::path::Path, script: &str) -> (Paths, Kubectl) {
        let paths = Paths::new(&root.join("prefix"), &root.join("data"));
        std::fs::create_dir_all(paths.prefix.join("bin")).unwrap();
        let k3s = paths.bin("k3s");
        std::fs::write(&k3s, format!("#!/bin/sh\n{script}")).unwrap();
        std::fs::set_permissions(&k3s, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kubeconfig = root.join("kubeconfig");
        std::fs::write(&kubeconfig, "").unwrap();
        let kubectl = Kubectl::with(&paths, kubeconfig);
        (paths, kubectl)
    }

    /// Waits, as install does, for node vm to be Ready through `kubectl`'s watch, on behalf
    /// of a k3s daemon that never exited, kept by this test process.
    fn wait_for_vm_ready(paths: &Paths, kubectl: &Kubectl, timeout: Duration) -> Result<()> {
        let started = Started {
            paths,
            daemon: crate::services::daemon(paths, "k3s"),
            pid: std::process::id() as i32,
        };
        started.wait_for_watched(
            "node vm to be Ready",
            timeout,
            || kubectl.watch_node("vm"),
            |line| NodeReport::parse(line).is_some_and(|report| report.ready),
        )
    }

    #[test]
    fn a_watched_wait_ends_on_the_line_it_waits_for_and_restarts_a_watch_that_ended() {
        let temp = tempfile::tempdir().unwrap();
        let starts = temp.path().join("starts");
        // The first watch ends at once (k3s's API not up yet); the second reports the node
        // not Ready, then Ready, and would run on.
        let (paths, kubectl) = with_k3s(
            temp.path(),
            &format!(
                "printf '%s\\n' \"$*\" >> {starts}\n\
                 [ \"$(wc -l < {starts})\" -eq 1 ] && exit 1\n\
                 echo 'vm|False|'; sleep 0.2; echo 'vm|True|10.42.0.0/24'; exec sleep 30\n",
                starts = starts.display()
            ),
        );
        let began = Instant::now();
        wait_for_vm_ready(&paths, &kubectl, Duration::from_secs(20)).unwrap();
        // Not the 30 s of the watch's process: it is stopped when the wait is over.
        assert!(began.elapsed() < Duration::from_secs(10));
        let args = std::fs::read_to_string(&starts).unwrap();
        assert_eq!(args.lines().count(), 2, "{args}");
        assert!(
            args.lines().all(|line| line.contains(
                "get nodes --field-selector=metadata.name=vm --watch -o jsonpath={.metadata.name}|"
            )),
            "{args}"
        );
    }

    #[test]
    fn a_watched_wait_that_never_sees_its_line_times_out_naming_what_it_waited_for() {
        let temp = tempfile::tempdir().unwrap();
        let (paths, kubectl) = with_k3s(temp.path(), "echo 'vm|False|'; exec sleep 30\n");
        let error = wait_for_vm_ready(&paths, &kubectl, Duration::from_millis(500)).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("timed out after 0s waiting for node vm to be Ready"),
            "{error}"
        );
    }
    #[test]
    fn a_log_follower_sees_only_what_is_written_after_it_starts_even_across_two_reads() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("k3s.log");
        let append = |text: &str| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            file.write_all(text.as_bytes()).unwrap();
        };
        append("msg=\"Kube API server is now running\" (a start before this one)\n");
        let mut follower = LogFollower::from_end(&log);
        assert!(!follower.says("Kube API server is now running"));
        append("msg=\"Kube API server is n");
        assert!(!follower.says("Kube API server is now running"));
        append("ow running\"\n");
        assert!(follower.says("Kube API server is now running"));
        // Said once: the next call reads only what comes after.
        assert!(!follower.says("Kube API server is now running"));
    }

    #[test]
    fn a_log_follower_reads_a_rotated_log_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("k3s.log");
        std::fs::write(&log, "a long log of an earlier start\n").unwrap();
        let mut follower = LogFollower::from_end(&log);
        std::fs::rename(&log, dir.path().join("k3s.log.1")).unwrap();
        std::fs::write(&log, "ready\n").unwrap();
        assert!(follower.says("ready"));
    }

    #[test]
    fn a_log_follower_of_a_log_not_written_yet_reads_it_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("k3s.log");
        let mut follower = LogFollower::from_end(&log);
        assert!(!follower.says("ready"));
        std::fs::write(&log, "ready\n").unwrap();
        assert!(follower.says("ready"));
    }
}
