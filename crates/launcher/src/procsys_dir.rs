//! The replacement tree (`--procsys DIR`): finds `DIR/X` for a /proc/sys path `X`, without ever
//! leaving DIR.
//!
//! `X` comes from [`crate::procsys_path`], so it has no `.`/`..` components. The only remaining
//! way out of DIR is a symlink, so every component is checked with `lstat` and a symlink anywhere
//! means "no redirect": the tracee then sees the real /proc/sys, exactly as without the launcher.

use crate::procsys_path::ProcSysPath;
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Longest path the kernel accepts, including the terminating NUL.
pub const PATH_MAX: usize = libc::PATH_MAX as usize;

pub struct ProcSysDir {
    root: PathBuf,
    /// The real /proc/sys (another directory in unit tests).
    real: PathBuf,
}

/// Why a /proc/sys path is not redirected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRedirect {
    /// `DIR/X` does not exist: the tracee sees the real /proc/sys file (or its absence).
    Missing,
    /// A component of `DIR/X` is a symlink; following it could leave DIR.
    Symlink(PathBuf),
    /// `DIR/X` is a directory and `/proc/sys/X` exists too: the real directory is kept, so
    /// that its files that DIR does not replace stay reachable (relative lookups through a
    /// cwd or dirfd in it are still redirected file by file).
    RealDirectoryExists,
    /// `DIR/X` is longer than PATH_MAX.
    TooLong,
}

impl ProcSysDir {
    /// Opens the replacement tree. DIR must be an existing directory; it is canonicalized so the
    /// rewritten paths are absolute and independent of the tracee's cwd.
    pub fn new(dir: &Path) -> Result<Self> {
        let root = std::fs::canonicalize(dir).with_context(|| {
            format!(
                "--procsys {}: cannot resolve the directory (create it and put the replacement \
                 files in it, e.g. DIR/kernel/pid_max)",
                dir.display()
            )
        })?;
        if !root.is_dir() {
            bail!("--procsys {}: not a directory", dir.display());
        }
        if root.starts_with("/proc") {
            bail!("--procsys {}: DIR must not be inside /proc", dir.display());
        }
        Ok(Self {
            root,
            real: PathBuf::from("/proc/sys"),
        })
    }

    #[cfg(test)]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The NUL-terminated path the tracee should use instead, if `DIR/X` exists and is reached
    /// without symlinks.
    pub fn replacement(&self, path: &ProcSysPath) -> Result<CString, NoRedirect> {
        let mut candidate = self.root.clone();
        let mut is_dir = false;
        for component in &path.components {
            candidate.push(std::ffi::OsStr::from_bytes(component));
            match std::fs::symlink_metadata(&candidate) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(NoRedirect::Symlink(candidate))
                }
                Ok(meta) => is_dir = meta.is_dir(),
                Err(_) => return Err(NoRedirect::Missing),
            }
        }
        if is_dir {
            let mut real = self.real.clone();
            real.extend(
                path.components
                    .iter()
                    .map(|c| std::ffi::OsStr::from_bytes(c)),
            );
            if std::fs::symlink_metadata(real).is_ok() {
                return Err(NoRedirect::RealDirectoryExists);
            }
        }
        let mut bytes = candidate.into_os_string().into_vec();
        if path.trailing_slash {
            bytes.push(b'/');
        }
        if bytes.len() + 1 > PATH_MAX {
            return Err(NoRedirect::TooLong);
        }
        // Components come from a NUL-terminated string, so they contain no NUL.
        Ok(CString::new(bytes).expect("path components never contain NUL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procsys_path::procsys_relative;

    fn tree() -> (tempdir::TempDir, ProcSysDir) {
        let tmp = tempdir::TempDir::new();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("kernel/keys")).unwrap();
        std::fs::write(d.join("kernel/pid_max"), "4194304\n").unwrap();
        std::fs::write(d.join("kernel/keys/root_maxkeys"), "1000000\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("kernel/evil")).unwrap();
        std::os::unix::fs::symlink("/etc", d.join("escape")).unwrap();
        std::fs::create_dir_all(d.join("net/bridge")).unwrap();
        std::fs::create_dir_all(d.join("real/kernel/keys")).unwrap();
        let mut dir = ProcSysDir::new(d).unwrap();
        // Stands in for the real /proc/sys: has kernel/ and kernel/keys/, no net/bridge/.
        dir.real = dir.root.join("real");
        (tmp, dir)
    }

    fn lookup(dir: &ProcSysDir, p: &str) -> Result<String, NoRedirect> {
        let path = procsys_relative(None, p.as_bytes()).unwrap();
        dir.replacement(&path).map(|c| {
            c.into_string()
                .unwrap()
                .replacen(dir.root().to_str().unwrap(), "DIR", 1)
        })
    }

    #[test]
    fn existing_files_and_directories_redirect() {
        let (_t, dir) = tree();
        assert_eq!(
            lookup(&dir, "/proc/sys/kernel/pid_max").unwrap(),
            "DIR/kernel/pid_max"
        );
        assert_eq!(
            lookup(&dir, "/proc/sys/kernel/keys/root_maxkeys").unwrap(),
            "DIR/kernel/keys/root_maxkeys"
        );
        assert_eq!(
            lookup(&dir, "/proc/sys/net/bridge/").unwrap(),
            "DIR/net/bridge/",
            "a directory missing from /proc/sys is redirected"
        );
    }

    #[test]
    fn missing_files_and_symlinks_do_not_redirect() {
        let (_t, dir) = tree();
        assert_eq!(
            lookup(&dir, "/proc/sys/kernel/panic"),
            Err(NoRedirect::Missing)
        );
        assert!(matches!(
            lookup(&dir, "/proc/sys/kernel/evil"),
            Err(NoRedirect::Symlink(_))
        ));
        assert!(matches!(
            lookup(&dir, "/proc/sys/escape/passwd"),
            Err(NoRedirect::Symlink(_))
        ));
    }

    #[test]
    fn dir_must_exist_and_say_so() {
        let err = ProcSysDir::new(Path::new("/nonexistent/procsys"))
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("--procsys /nonexistent/procsys"),
            "{err:#}"
        );
    }

    /// A tiny self-cleaning temp dir, to keep the crate free of test-only dependencies.
    mod tempdir {
        pub struct TempDir(std::path::PathBuf);
        impl TempDir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "launcher-unit-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
