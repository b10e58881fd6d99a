//! `keeper`: the process that keeps one daemon running, as systemd's
//! `Restart=always` does for k3s's own service. Every daemon of an install (containerd, k3s
//! with its launcher, svcproxy, node-routes) is started under one (the installer's
//! supervise.rs):
//! - it runs the daemon as its child, in its own process group, so `stop`'s signal to the
//!   group reaches both, and on that signal it lets the daemon exit and does not restart it;
//! - when the daemon exits on its own it is started again after a backoff (1 s, doubling to
//!   30 s; back to 1 s after a run of a minute), each exit logged and counted in a status file
//!   that `status` reads; 10 exits in a row that each came within a minute of their start are
//!   a crash loop, reported as one (it keeps trying, at the longest backoff);
//! - the daemon's output goes through it into the log file, which it rotates by size
//!   (`LOG_MAX_BYTES`, `LOG_KEEP` old files: NAME.log.1 is the newest).
//!
//! A binary of its own rather than an installer subcommand: four of them run for as long as the
//! install does, and in gVisor each process's RSS counts its whole mapped binary (the
//! installer's is 3.7 MB, this one's 2.0 MB).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use serde::{Deserialize, Serialize};

/// A log file is rotated when it would grow past this.
pub const LOG_MAX_BYTES: u64 = 10 << 20;
/// How many rotated files are kept (NAME.log.1 ... NAME.log.3).
pub const LOG_KEEP: u32 = 3;
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run at least this long counts as healthy: the backoff and the crash count start over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Quick exits in a row that make a crash loop.
pub const CRASH_LOOP_EXITS: u32 = 10;

/// What the keeper tells `status` and the installer's waits (DATA/run/NAME.keeper.json).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperStatus {
    /// The daemon's pid now (0 between a exit and its restart).
    pub pid: i32,
    /// Times it was started again after exiting on its own.
    pub restarts: u32,
    /// Exits in a row that each came within a minute of their start.
    pub quick_exits: u32,
    /// How the last unexpected exit ended ("exit code 1", "killed by SIGKILL") and when (Unix
    /// seconds).
    pub last_exit: Option<String>,
    pub last_exit_at: Option<u64>,
}

impl KeeperStatus {
    pub fn load(path: &Path) -> Option<KeeperStatus> {
        serde_json::from_str(&fs::read_to_string(path).ok()?).ok()
    }

    pub fn crash_loop(&self) -> bool {
        self.quick_exits >= CRASH_LOOP_EXITS
    }

    /// One phrase for `status`: "" when it never exited.
    pub fn describe(&self) -> String {
        let Some(last) = &self.last_exit else {
            return String::new();
        };
        let ago = self
            .last_exit_at
            .map(|at| format!(", {}s ago", now_secs().saturating_sub(at)))
            .unwrap_or_default();
        if self.crash_loop() {
            format!(
                "CRASH LOOP: {} exits in a row, each within {}s of its start (last: {last}{ago}); \
                 restarted {} times in all",
                self.quick_exits,
                HEALTHY_RUN.as_secs(),
                self.restarts
            )
        } else {
            format!(
                "restarted {} time(s) (last exit: {last}{ago})",
                self.restarts
            )
        }
    }

    fn save(&self, path: &Path) {
        // Best effort: a status that cannot be written must not stop the daemon.
        let text = serde_json::to_string(self).unwrap_or_default();
        let _ = write_replacing(path, text.as_bytes());
    }
}

/// Writes `bytes` to a new file beside `target` (mode 0644; a leftover one is removed, never
/// written through), then renames it over `target`: `status` never reads half a file.
fn write_replacing(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = target
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let temp = target.with_file_name(format!(".{name}.tmp"));
    let _ = fs::remove_file(&temp);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temp)
        .and_then(|mut file| file.write_all(bytes));
    if let Err(error) = written.and_then(|()| fs::rename(&temp, target)) {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Set by SIGTERM/SIGINT: the daemon is being stopped, so its exit is expected.
static STOPPING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    STOPPING.store(true, Ordering::SeqCst);
}

/// What to keep running.
pub struct Keep {
    pub name: String,
    pub log_file: PathBuf,
    pub status_file: PathBuf,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// FIRST_BACKOFF and MAX_BACKOFF, except in tests.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

/// Runs `keep.program` until a stop signal, restarting it when it exits on its own.
pub fn run(keep: &Keep) -> Result<()> {
    let handler = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &handler) }.context("cannot install a signal handler")?;
    }
    let log = Arc::new(Mutex::new(RotatingLog::open(&keep.log_file)?));
    let mut status = KeeperStatus::default();
    let mut backoff = keep.first_backoff;
    loop {
        let started = Instant::now();
        let (reader, writer) = std::io::pipe().context("cannot make a pipe for the log")?;
        let mut child = Command::new(&keep.program)
            .args(&keep.args)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .spawn()
            .with_context(|| format!("cannot start {}", keep.program.display()))?;
        status.pid = child.id() as i32;
        status.save(&keep.status_file);
        let copied = copy_to_log(reader, Arc::clone(&log));
        let exit = wait_forwarding_stop(&mut child)?;
        // The daemon's last words (why it failed) must be in the log before its exit is
        // reported: the installer's wait reads the log's tail the moment the status says so.
        // The copy ends at the pipe's end, unless a child of the daemon still holds it.
        let _ = copied.recv_timeout(Duration::from_secs(1));
        if STOPPING.load(Ordering::SeqCst) {
            let _ = fs::remove_file(&keep.status_file);
            return Ok(());
        }
        let ran = started.elapsed();
        if ran >= HEALTHY_RUN {
            backoff = keep.first_backoff;
            status.quick_exits = 0;
        }
        status.quick_exits += u32::from(ran < HEALTHY_RUN);
        status.restarts += 1;
        status.pid = 0;
        status.last_exit = Some(describe_exit(exit));
        status.last_exit_at = Some(now_secs());
        status.save(&keep.status_file);
        log.lock().unwrap_or_else(|e| e.into_inner()).note(&format!(
            "{} {} after {:.1}s; starting it again in {:.1}s (restart {}{})",
            keep.name,
            status.last_exit.as_deref().unwrap_or(""),
            ran.as_secs_f64(),
            backoff.as_secs_f64(),
            status.restarts,
            if status.crash_loop() {
                format!(", crash loop: {} quick exits in a row", status.quick_exits)
            } else {
                String::new()
            }
        ));
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if STOPPING.load(Ordering::SeqCst) {
                let _ = fs::remove_file(&keep.status_file);
                return Ok(());
            }
            sleep(Duration::from_millis(100));
        }
        backoff = (backoff * 2).min(keep.max_backoff);
    }
}

/// Waits for the daemon. A stop signal is passed on to it (`stop` signals the whole group, so
/// it usually has it already; a signal to the keeper alone must stop the daemon too).
fn wait_forwarding_stop(child: &mut std::process::Child) -> Result<std::process::ExitStatus> {
    let mut forwarded = false;
    loop {
        if let Some(exit) = child.try_wait().context("waiting for the daemon")? {
            return Ok(exit);
        }
        if STOPPING.load(Ordering::SeqCst) && !forwarded {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
            forwarded = true;
        }
        sleep(Duration::from_millis(100));
    }
}

fn describe_exit(exit: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (exit.code(), exit.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(signal) => format!("was killed by {signal}"),
            Err(_) => format!("was killed by signal {signal}"),
        },
        (None, None) => "ended".to_string(),
    }
}

/// Copies what the daemon writes into the log, on a thread of its own: the wait for the
/// daemon's exit must not depend on the pipe's end (a child of the daemon may hold it open).
/// Returns a receiver that hears once the pipe has ended and all of it is in the log.
fn copy_to_log(
    mut reader: std::io::PipeReader,
    log: Arc<Mutex<RotatingLog>>,
) -> std::sync::mpsc::Receiver<()> {
    let (done, copied) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = log.write(&buf[..n]);
                }
            }
        }
        let _ = done.send(());
    });
    copied
}

/// A log file rotated by size: NAME.log, NAME.log.1 (the newest old one) ... NAME.log.KEEP.
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl RotatingLog {
    pub fn open(path: &Path) -> Result<RotatingLog> {
        RotatingLog::with_limits(path, LOG_MAX_BYTES, LOG_KEEP)
    }

    pub fn with_limits(path: &Path, max_bytes: u64, keep: u32) -> Result<RotatingLog> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            keep,
        })
    }

    /// Appends `data`, rotating first when the file would grow past its limit. A write that
    /// is larger than the limit by itself goes whole into a fresh file.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.size > 0 && self.size + data.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    /// A line of the keeper's own, marked as such.
    fn note(&mut self, line: &str) {
        let _ = self.write(format!("[k3s-gvisor keeper] {line}\n").as_bytes());
    }

    fn rotate(&mut self) -> Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let _ = fs::rename(numbered(n), numbered(n + 1));
        }
        if self.keep > 0 {
            fs::rename(&self.path, numbered(1))?;
        } else {
            fs::remove_file(&self.path)?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open log {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_rotate_by_size_and_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k3s.log");
        let mut log = RotatingLog::with_limits(&path, 10, 2).unwrap();
        for chunk in [
            "aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n", "ffff\n", "gggg\n",
        ] {
            log.write(chunk.as_bytes()).unwrap();
        }
        let read = |name: &str| fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        assert_eq!(read("k3s.log"), "gggg\n");
        assert_eq!(read("k3s.log.1"), "eeee\nffff\n");
        assert_eq!(read("k3s.log.2"), "cccc\ndddd\n");
        assert!(!dir.path().join("k3s.log.3").exists());
        // A log that is reopened goes on from its size.
        drop(log);
        let mut log = RotatingLog::with_limits(&path, 10, 2).unwrap();
        log.write(b"hhhh\n").unwrap();
        assert_eq!(read("k3s.log"), "gggg\nhhhh\n");
    }

    #[test]
    fn status_says_restarts_and_crash_loops() {
        let mut status = KeeperStatus {
            restarts: 2,
            quick_exits: 1,
            last_exit: Some("was killed by SIGKILL".into()),
            last_exit_at: Some(now_secs()),
            ..Default::default()
        };
        assert!(status
            .describe()
            .starts_with("restarted 2 time(s) (last exit: was killed by SIGKILL, 0s ago"));
        status.quick_exits = CRASH_LOOP_EXITS;
        assert!(status
            .describe()
            .starts_with("CRASH LOOP: 10 exits in a row"));
        assert_eq!(KeeperStatus::default().describe(), "");
    }
}
