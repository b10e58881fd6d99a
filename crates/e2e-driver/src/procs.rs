//! Processes and files of the install as the steps look at them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The pid of daemon NAME's own process (PREFIX/bin/NAME, not the launcher in front of it):
/// the one its keeper runs, as `status --json` reports it (`daemons.NAME.pid`, `exe`), else
/// found in /proc. For k3s, the process running `k3s server` or `k3s agent` (k3s sets its title
/// to "PATH/k3s server"), not one of the `k3s kubectl` processes of the same executable.
pub fn daemon_pid(status: &serde_json::Value, prefix: &Path, name: &str) -> Option<i32> {
    let exe = prefix.join("bin").join(name);
    let daemon = &status["daemons"][name];
    if let Some(pid) = daemon["pid"].as_i64() {
        if daemon["exe"].as_str() == Some(&*exe.to_string_lossy()) {
            return Some(pid as i32);
        }
    }
    find_daemon(&exe, name)
}

/// [`daemon_pid`] from the keeper's own record, DATA/run/NAME.keeper.json (lib.sh's `pid_of`),
/// not `status --json`: the soak asks every 10 s for 30 minutes and measures what runs, so it
/// reads a file rather than start the installer each time.
pub fn daemon_pid_of_keeper(data_dir: &Path, prefix: &Path, name: &str) -> Option<i32> {
    let exe = prefix.join("bin").join(name);
    let keeper: Option<i32> = std::fs::read(data_dir.join(format!("run/{name}.keeper.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["pid"].as_i64())
        .map(|p| p as i32);
    keeper
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .as_deref()
                == Some(&*exe)
        })
        .or_else(|| find_daemon(&exe, name))
}

/// The first process in /proc running EXE (for k3s, its daemon: [`is_k3s_daemon`]).
fn find_daemon(exe: &Path, name: &str) -> Option<i32> {
    pids().into_iter().find(|pid| {
        if std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .as_deref()
            != Some(exe)
        {
            return false;
        }
        name != "k3s" || is_k3s_daemon(&cmdline(*pid))
    })
}

/// Every process's pid in /proc, in order (empty where /proc cannot be read).
pub fn pids() -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// `k3s server` or `k3s agent` (its title), not `k3s kubectl`.
pub fn is_k3s_daemon(cmdline: &str) -> bool {
    cmdline.contains("bin/k3s server") || cmdline.contains("bin/k3s agent")
}

/// /proc/PID/cmdline with its NULs as spaces.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// /proc/PID/environ, one `NAME=VALUE` each (empty when it cannot be read).
pub fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|v| !v.is_empty())
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A file's permission bits (`stat -c %a`), None when it cannot be stat'ed.
pub fn mode(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// `644` as `stat -c %a` prints it, or "missing".
pub fn mode_text(mode: Option<u32>) -> String {
    mode.map_or("missing".to_string(), |m| format!("{m:o}"))
}

/// Field NAME of /proc/PID/status (`awk '/^NAME/ {print $2}'`), None when the process or the
/// field is not there.
pub fn status_field(pid: i32, name: &str) -> Option<String> {
    field_of(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        name,
    )
}

/// Field NAME's value in a /proc/PID/status text: the first word after `NAME:`.
fn field_of(status: &str, name: &str) -> Option<String> {
    status.lines().find_map(|l| {
        let value = l.strip_prefix(name)?.strip_prefix(':')?;
        value.split_whitespace().next().map(str::to_string)
    })
}

/// VmRSS of a /proc/PID/status, in kB.
pub fn vm_rss_kb(status: &str) -> Option<u64> {
    field_of(status, "VmRSS")?.parse().ok()
}

/// Process PID's VmRSS in kB (lib.sh's `rss_kb`), None when it is gone.
pub fn rss_kb(pid: i32) -> Option<u64> {
    vm_rss_kb(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// k3s's error and fatal lines (lib.sh's `k3s_errors`: `level=error|fatal`, klog's `E1206 `).
pub fn is_k3s_error_line(line: &str) -> bool {
    if line.contains("level=error") || line.contains("level=fatal") {
        return true;
    }
    let b = line.as_bytes();
    b.len() > 5
        && (b[0] == b'E' || b[0] == b'F')
        && b[1..5].iter().all(u8::is_ascii_digit)
        && b[5] == b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keepers_pid_is_taken_only_when_it_is_the_daemon_itself() {
        let prefix = Path::new("/nonexistent-prefix");
        let status = serde_json::json!({"daemons": {"k3s": {
            "pid": 42, "exe": "/nonexistent-prefix/bin/k3s"}}});
        assert_eq!(daemon_pid(&status, prefix, "k3s"), Some(42));
        // Under the launcher the keeper runs bin/launcher: k3s is looked for in /proc (and
        // there is none here).
        let status = serde_json::json!({"daemons": {"k3s": {
            "pid": 42, "exe": "/nonexistent-prefix/bin/launcher"}}});
        assert_eq!(daemon_pid(&status, prefix, "k3s"), None);
        assert!(is_k3s_daemon("/p/bin/k3s server "));
        assert!(!is_k3s_daemon("/p/bin/k3s kubectl get nodes"));
        let me = std::process::id() as i32;
        let all = pids();
        assert!(all.contains(&me) && all.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn this_process_environ_and_a_files_mode_read_as_the_shell_did() {
        let env = environ(std::process::id() as i32);
        assert!(env.iter().any(|v| v.starts_with("PATH=")), "{env:?}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(mode_text(mode(&file)), "644");
        assert_eq!(mode_text(mode(&dir.path().join("none"))), "missing");
    }
    #[test]
    fn status_fields_are_the_word_after_the_name() {
        let status = "Name:\tsleep\nTracerPid:\t0\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        assert_eq!(field_of(status, "TracerPid").as_deref(), Some("0"));
        assert_eq!(field_of(status, "Seccomp").as_deref(), Some("2"));
        assert_eq!(field_of(status, "VmRSS"), None);
        assert!(status_field(std::process::id() as i32, "TracerPid").is_some());
    }

    #[test]
    fn rss_is_vmrss_in_kb() {
        assert_eq!(
            vm_rss_kb("Name:\ttraefik\nVmRSS:\t   51200 kB\n"),
            Some(51200)
        );
        assert_eq!(vm_rss_kb("Name:\tkthreadd\n"), None);
        assert!(rss_kb(std::process::id() as i32).is_some_and(|kb| kb > 0));
    }

    #[test]
    fn the_keepers_file_names_the_daemon_only_when_it_runs_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        let me = std::process::id();
        std::fs::write(
            dir.path().join("run/k3s.keeper.json"),
            format!("{{\"pid\":{me},\"restarts\":0}}"),
        )
        .unwrap();
        // This process is no PREFIX/bin/k3s: the keeper's pid is not taken.
        assert_eq!(
            daemon_pid_of_keeper(dir.path(), Path::new("/nonexistent-prefix"), "k3s"),
            None
        );
    }

    #[test]
    fn error_lines_are_klogs_and_logruss() {
        assert!(is_k3s_error_line("E1206 15:10:45.1 x"));
        assert!(is_k3s_error_line("F1206 15:10:45.1 x"));
        assert!(is_k3s_error_line("time=\"x\" level=error msg=y"));
        assert!(!is_k3s_error_line("I1206 15:10:45.1 x"));
        assert!(!is_k3s_error_line("Error: x"));
    }
}
