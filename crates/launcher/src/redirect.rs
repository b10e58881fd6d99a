//! Deciding, at a path syscall's seccomp stop, whether its path is redirected and to what.
//!
//! Reads the path from the tracee, resolves a relative one against the thread's cwd or dirfd,
//! keeps only paths below /proc/sys of tasks that share the launcher's root, and asks DIR for
//! the replacement.

use crate::fs_context::{outside_proc, FsContexts};
use crate::log::Log;
use crate::procsys_dir::{NoRedirect, ProcSysDir, PATH_MAX};
use crate::procsys_path::{may_be_procsys, procsys_relative, ProcSysPath};
use crate::syscalls::{self, PathSyscall};
use crate::tracee_memory;
use anyhow::Result;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

const AT_FDCWD: i32 = libc::AT_FDCWD;

/// How long an answer about DIR (a replacement, or why there is none) is reused. Programs
/// re-read the same /proc/sys files in loops; each answer costs one lstat per path component.
/// Files added to or removed from DIR while the command runs are noticed after this long.
const LOOKUP_TTL: Duration = Duration::from_secs(1);
/// Bound on remembered answers (there are a few hundred /proc/sys files).
const LOOKUP_CACHE_MAX: usize = 4096;

pub struct Redirector {
    dir: ProcSysDir,
    lookups: HashMap<ProcSysPath, (Instant, Result<CString, NoRedirect>)>,
    /// (device, inode) of the launcher's root directory; tasks with another root (a container
    /// after pivot_root) do not get redirects, DIR is not theirs.
    our_root: (u64, u64),
    /// What is known about each thread's root and cwd.
    pub contexts: FsContexts,
}

impl Redirector {
    pub fn new(dir: ProcSysDir) -> Result<Self> {
        let root = std::fs::metadata("/")?;
        Ok(Self {
            dir,
            lookups: HashMap::new(),
            our_root: (root.dev(), root.ino()),
            contexts: FsContexts::default(),
        })
    }

    /// Decides whether the syscall's path is redirected: returns the new path and the original.
    pub fn replacement_for(
        &mut self,
        pid: Pid,
        regs: &libc::user_regs_struct,
        syscall: PathSyscall,
        log: &mut Log,
    ) -> Option<(CString, Vec<u8>)> {
        let path_addr = syscalls::arg(regs, syscall.path_arg);
        let path = tracee_memory::read_c_string(pid, path_addr, PATH_MAX - 1)?;
        let base = if path.starts_with(b"/") {
            if !may_be_procsys(&path) {
                return None;
            }
            None
        } else {
            if path.is_empty() {
                return None; // AT_EMPTY_PATH: operates on the fd itself.
            }
            let dirfd = syscall
                .dirfd_arg
                .map_or(AT_FDCWD, |i| syscalls::arg(regs, i) as i32);
            // The common case costs no readlink: when the cwd is outside /proc, a relative path
            // can only reach /proc/sys with "proc" and "sys" components of its own (folding
            // keeps either a prefix of the cwd, whose first component is not "proc", or none
            // of it). A dirfd can be anywhere, so it is always resolved.
            if dirfd == AT_FDCWD
                && !may_be_procsys(&path)
                && self.contexts.cwd_outside_proc(pid.as_raw(), || {
                    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
                    Some(outside_proc(cwd.as_os_str().as_bytes()))
                })
            {
                return None;
            }
            let link = if dirfd == AT_FDCWD {
                format!("/proc/{pid}/cwd")
            } else {
                format!("/proc/{pid}/fd/{dirfd}")
            };
            Some(std::fs::read_link(link).ok()?.into_os_string())
        };
        let target = procsys_relative(base.as_deref().map(|b| b.as_bytes()), &path)?;
        if !self.shares_our_root(pid) {
            return None;
        }
        match self.lookup(&target) {
            Ok(new) => Some((new, path)),
            Err(NoRedirect::Missing) => None,
            Err(why) => {
                log.line(format_args!(
                    "pid {pid}: {} {} not redirected: {why:?}",
                    syscall.name,
                    String::from_utf8_lossy(&path)
                ));
                None
            }
        }
    }

    /// DIR's answer for `target`, from the cache while fresh.
    fn lookup(&mut self, target: &ProcSysPath) -> Result<CString, NoRedirect> {
        let now = Instant::now();
        if let Some((at, answer)) = self.lookups.get(target) {
            if now.duration_since(*at) < LOOKUP_TTL {
                return answer.clone();
            }
        }
        if self.lookups.len() >= LOOKUP_CACHE_MAX {
            self.lookups.clear();
        }
        let answer = self.dir.replacement(target);
        self.lookups.insert(target.clone(), (now, answer.clone()));
        answer
    }

    fn shares_our_root(&mut self, pid: Pid) -> bool {
        let our_root = self.our_root;
        self.contexts.same_root(pid.as_raw(), || {
            match std::fs::metadata(format!("/proc/{pid}/root")) {
                Ok(m) => (m.dev(), m.ino()) == our_root,
                // If the sandbox does not let us look, assume the common case: same root.
                Err(_) => true,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procsys_path::procsys_relative;

    #[test]
    fn dir_answers_are_reused_while_fresh_then_refreshed() {
        let tmp =
            std::env::temp_dir().join(format!("launcher-redirect-unit-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("kernel")).unwrap();
        let mut r = Redirector::new(ProcSysDir::new(&tmp).unwrap()).unwrap();
        let target = procsys_relative(None, b"/proc/sys/kernel/pid_max").unwrap();

        assert_eq!(r.lookup(&target), Err(NoRedirect::Missing));
        std::fs::write(tmp.join("kernel/pid_max"), "1\n").unwrap();
        assert_eq!(
            r.lookup(&target),
            Err(NoRedirect::Missing),
            "fresh answer reused"
        );

        // Age the answer past the TTL: the new file is found.
        let (at, _) = r.lookups.get_mut(&target).unwrap();
        *at -= LOOKUP_TTL * 2;
        assert!(r.lookup(&target).is_ok());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
