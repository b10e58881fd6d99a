//! Waiting for a daemon this process just started to become usable, and what to quote when it
//! dies instead: the last lines of its log (and of the launcher's, where it ran under it).

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

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
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let daemon = &self.daemon;
        let deadline = Instant::now() + timeout;
        let mut interval = Duration::from_millis(100);
        while Instant::now() < deadline {
            if ready() {
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
            // From 100 ms up to 1 s between checks: a wait that is over at once costs little,
            // and a long one spawns `k3s kubectl` at most once a second. A fixed 2 s made every
            // wait of install end on a 2 s step (BENCHMARKS.md "Where the start goes").
            sleep(interval);
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
