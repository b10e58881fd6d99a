//! Pure path logic: does a path the tracee passed name something under `/proc/sys`, and if so,
//! which relative path `X` inside it.
//!
//! Resolution is lexical: `.`, `..` and repeated slashes are folded the way the kernel folds
//! them when no symlink is involved (there are no symlinks inside /proc/sys). The base of a
//! relative path comes from `/proc/<tid>/cwd` or `/proc/<tid>/fd/<dirfd>`, which the kernel
//! reports already resolved.

/// A path inside /proc/sys, as its components below /proc/sys (never empty, never `.`/`..`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcSysPath {
    pub components: Vec<Vec<u8>>,
    /// The tracee wrote a trailing slash ("must be a directory"); kept in the rewritten path.
    pub trailing_slash: bool,
}

/// Cheap pre-check on an absolute path before any normalization: a path that resolves into
/// /proc/sys must mention both "proc" and "sys".
pub fn may_be_procsys(path: &[u8]) -> bool {
    contains(path, b"proc") && contains(path, b"sys")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Folds `base` (absolute, used only when `path` is relative) and `path` into components.
/// Returns `None` when `path` is relative and `base` is not an absolute path (for example the
/// fd is a socket, "socket:[123]").
pub fn normalize(base: Option<&[u8]>, path: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let push_all = |p: &[u8], out: &mut Vec<Vec<u8>>| {
        for part in p.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                // `..` at the root stays at the root, as in the kernel.
                b".." => {
                    out.pop();
                }
                other => out.push(other.to_vec()),
            }
        }
    };
    if !path.starts_with(b"/") {
        let base = base?;
        if !base.starts_with(b"/") {
            return None;
        }
        push_all(base, &mut out);
    }
    push_all(path, &mut out);
    Some(out)
}

/// Classifies a path: `Some` when it names something strictly below /proc/sys.
pub fn procsys_relative(base: Option<&[u8]>, path: &[u8]) -> Option<ProcSysPath> {
    let components = normalize(base, path)?;
    if components.len() <= 2 || components[0] != b"proc" || components[1] != b"sys" {
        return None;
    }
    Some(ProcSysPath {
        components: components[2..].to_vec(),
        trailing_slash: path.ends_with(b"/"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(base: Option<&str>, path: &str) -> Option<String> {
        procsys_relative(base.map(str::as_bytes), path.as_bytes()).map(|p| {
            let joined: Vec<String> = p
                .components
                .iter()
                .map(|c| String::from_utf8(c.clone()).unwrap())
                .collect();
            joined.join("/") + if p.trailing_slash { "/" } else { "" }
        })
    }

    #[test]
    fn absolute_paths() {
        assert_eq!(
            rel(None, "/proc/sys/kernel/pid_max").as_deref(),
            Some("kernel/pid_max")
        );
        assert_eq!(
            rel(None, "//proc///sys/./kernel//pid_max").as_deref(),
            Some("kernel/pid_max")
        );
        assert_eq!(
            rel(None, "/proc/sys/net/../kernel/panic").as_deref(),
            Some("kernel/panic")
        );
        assert_eq!(
            rel(None, "/../../proc/sys/fs/file-max").as_deref(),
            Some("fs/file-max")
        );
        assert_eq!(
            rel(None, "/proc/sys/net/bridge/").as_deref(),
            Some("net/bridge/")
        );
    }

    #[test]
    fn paths_outside_proc_sys() {
        assert_eq!(
            rel(None, "/proc/sys"),
            None,
            "/proc/sys itself is not redirected"
        );
        assert_eq!(rel(None, "/proc/sys/"), None);
        assert_eq!(rel(None, "/proc/sys/.."), None);
        assert_eq!(rel(None, "/proc/sys/kernel/../../self/status"), None);
        assert_eq!(rel(None, "/proc/self/root/proc/sys/kernel/pid_max"), None);
        assert_eq!(rel(None, "/proc/sysfoo/kernel"), None);
        assert_eq!(rel(None, "/tmp/proc/sys/kernel/pid_max"), None);
        assert_eq!(rel(None, "/etc/passwd"), None);
    }

    #[test]
    fn relative_paths_use_the_base() {
        assert_eq!(
            rel(Some("/proc/sys/kernel"), "pid_max").as_deref(),
            Some("kernel/pid_max")
        );
        assert_eq!(
            rel(Some("/proc/sys/kernel"), "../fs/nr_open").as_deref(),
            Some("fs/nr_open")
        );
        assert_eq!(
            rel(Some("/proc"), "sys/vm/panic_on_oom").as_deref(),
            Some("vm/panic_on_oom")
        );
        assert_eq!(rel(Some("/proc/sys/kernel"), "../../self/fd"), None);
        assert_eq!(rel(Some("/home"), "pid_max"), None);
        assert_eq!(rel(Some("socket:[12]"), "pid_max"), None);
        assert_eq!(
            rel(None, "kernel/pid_max"),
            None,
            "relative path without a base"
        );
        // An absolute path ignores the base.
        assert_eq!(rel(Some("/proc/sys/kernel"), "/etc/hosts"), None);
    }

    #[test]
    fn prefilter_never_rejects_a_procsys_path() {
        for p in ["/proc/sys/kernel/x", "//proc//sys//x", "/a/../proc/./sys/x"] {
            assert!(may_be_procsys(p.as_bytes()), "{p}");
        }
        assert!(!may_be_procsys(b"/usr/lib/x86_64-linux-gnu/libc.so.6"));
    }
}
