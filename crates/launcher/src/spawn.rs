//! Starting the command: fork, let the launcher attach with PTRACE_SEIZE, install the seccomp
//! filter in the child, exec.
//!
//! The order matters: a SECCOMP_RET_TRACE filter without a tracer makes the traced syscalls fail
//! with ENOSYS, so the child waits on a pipe until the parent has seized it, and only then
//! installs the filter. The filter is inherited across fork, clone and exec, so every descendant
//! is covered; the ptrace options make every descendant traced as well.

use anyhow::{bail, Context, Result};
use nix::sys::ptrace::{self, Options};
use nix::unistd::{fork, ForkResult, Pid};
use seccompiler::BpfProgram;
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

/// What failed in the child before exec, reported through the error pipe.
const STAGE_SECCOMP: u32 = 1;
const STAGE_EXEC: u32 = 2;

pub struct Child {
    pub pid: Pid,
    /// How the filter was installed; a line for `--log` when it was not the preferred way.
    pub filter_install: FilterInstall,
    /// Read end of a CLOEXEC pipe: empty at EOF when exec succeeded, else (stage, errno).
    error_pipe: OwnedFd,
    command: String,
}

pub fn ptrace_options() -> Options {
    Options::PTRACE_O_TRACESECCOMP
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_EXITKILL
        | Options::PTRACE_O_TRACESYSGOOD
}

/// How the child installs the seccomp filter, decided in the parent before fork by
/// [`probe_filter_install`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterInstall {
    /// `seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW, ...)`.
    ///
    /// Why SPEC_ALLOW: on kernels before 5.16, or booted with `spec_store_bypass_disable=seccomp`,
    /// installing a seccomp filter also turns on the Speculative Store Bypass mitigation (SSBD)
    /// for the task and every descendant, which slows down all of their code, not only their
    /// syscalls. That mitigation protects a sandbox from the code it confines; the launcher is a
    /// redirector, not a security boundary (the traced programs are the ones we want to run
    /// fast), so it opts out.
    SeccompSpecAllow,
    /// `seccomp(SECCOMP_SET_MODE_FILTER, 0, ...)`: the kernel does not know SPEC_ALLOW (Linux
    /// before 4.17, and gVisor, which accepts only SECCOMP_FILTER_FLAG_TSYNC). gVisor has no
    /// SSBD to turn on anyway.
    Seccomp,
    /// `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ...)`: no seccomp() syscall (Linux < 3.17).
    Prctl,
}

impl FilterInstall {
    /// A line for the `--log` file when the filter is not installed the preferred way.
    pub fn fallback_note(self) -> Option<&'static str> {
        match self {
            FilterInstall::SeccompSpecAllow => None,
            FilterInstall::Seccomp => Some(
                "seccomp refused SECCOMP_FILTER_FLAG_SPEC_ALLOW (EINVAL: kernel older than 4.17, \
                 or gVisor); filter installed with flags 0, which may enable the SSBD mitigation \
                 on old Linux kernels",
            ),
            FilterInstall::Prctl => Some(
                "no seccomp() syscall (kernel older than 3.17); filter installed with \
                 prctl(PR_SET_SECCOMP), without SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            ),
        }
    }
}

/// Asks the kernel which way of installing the filter it supports, without installing one:
/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, NULL)` checks the flags first (EINVAL for an
/// unknown flag, in Linux and in gVisor) and only then reads the program (EFAULT for NULL).
/// libseccomp probes flags the same way.
pub fn probe_filter_install() -> FilterInstall {
    // SAFETY: a NULL program is never installed; the call only reports an error.
    let probe = |flags: libc::c_ulong| unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    let errno = || std::io::Error::last_os_error().raw_os_error();
    if probe(libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW) != 0 && errno() == Some(libc::EFAULT) {
        return FilterInstall::SeccompSpecAllow;
    }
    if probe(0) != 0 && errno() == Some(libc::EFAULT) {
        return FilterInstall::Seccomp;
    }
    FilterInstall::Prctl
}

pub fn spawn_traced(command: &[OsString], filter: &BpfProgram) -> Result<Child> {
    // Everything the child needs is prepared before fork: after fork only async-signal-safe
    // calls are allowed.
    let argv: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.clone().into_vec()))
        .collect::<Result<_, _>>()
        .context("a COMMAND argument contains a NUL byte")?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    let install = probe_filter_install();
    let (go_read, go_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_read, err_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;

    // SAFETY: the launcher is single-threaded here, and the child only makes raw libc calls
    // before exec or _exit.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => unsafe {
            // Our copy of the write end must go, or a dead parent would never give us EOF.
            libc::close(go_write.as_raw_fd());
            child_after_fork(
                go_read.as_raw_fd(),
                err_write.as_raw_fd(),
                &prog,
                install,
                &argv_ptrs,
            )
        },
        ForkResult::Parent { child } => {
            drop(go_read);
            drop(err_write);
            if let Err(e) = ptrace::seize(child, ptrace_options()) {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                bail!(
                    "ptrace(PTRACE_SEIZE) of the command failed: {e}. The launcher needs ptrace: \
                     check kernel.yama.ptrace_scope and that CAP_SYS_PTRACE is not dropped"
                );
            }
            // Release the child: it installs the filter and execs.
            nix::unistd::write(&go_write, &[1]).context("releasing the child")?;
            drop(go_write);
            Ok(Child {
                pid: child,
                filter_install: install,
                error_pipe: err_read,
                command: command[0].to_string_lossy().into_owned(),
            })
        }
    }
}

/// Runs in the forked child. Never returns.
unsafe fn child_after_fork(
    go_read: i32,
    err_write: i32,
    prog: &libc::sock_fprog,
    how: FilterInstall,
    argv: &[*const libc::c_char],
) -> ! {
    // Rust's runtime ignores SIGPIPE; an ignored disposition survives exec, so restore it.
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    let mut byte = 0u8;
    if libc::read(go_read, &mut byte as *mut u8 as *mut libc::c_void, 1) != 1 {
        // The parent died or failed to seize us: running untraced with the filter would break
        // every open(), so just leave.
        libc::_exit(127);
    }
    // Without CAP_SYS_ADMIN the kernel requires no_new_privs for a filter. Only set it when
    // needed: it would also stop setuid binaries further down the tree.
    let install = |p: &libc::sock_fprog| -> libc::c_long {
        let seccomp = |flags: libc::c_ulong| {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                p as *const libc::sock_fprog,
            )
        };
        match how {
            FilterInstall::SeccompSpecAllow => seccomp(libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW),
            FilterInstall::Seccomp => seccomp(0),
            FilterInstall::Prctl => libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                p as *const libc::sock_fprog,
            ) as libc::c_long,
        }
    };
    if install(prog) != 0 {
        let first = *libc::__errno_location();
        if first != libc::EACCES
            || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || install(prog) != 0
        {
            report_and_exit(err_write, STAGE_SECCOMP);
        }
    }
    libc::execvp(argv[0], argv.as_ptr());
    report_and_exit(err_write, STAGE_EXEC)
}

unsafe fn report_and_exit(err_write: i32, stage: u32) -> ! {
    let errno = *libc::__errno_location() as u32;
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&stage.to_ne_bytes());
    msg[4..].copy_from_slice(&errno.to_ne_bytes());
    libc::write(err_write, msg.as_ptr() as *const libc::c_void, msg.len());
    libc::_exit(127)
}

impl Child {
    /// If the child failed before running COMMAND, the reason, phrased for the user.
    /// Only meaningful after the child exited.
    pub fn startup_error(&self) -> Option<String> {
        let mut msg = [0u8; 8];
        let n = nix::unistd::read(&self.error_pipe, &mut msg).ok()?;
        if n != msg.len() {
            return None;
        }
        let stage = u32::from_ne_bytes(msg[..4].try_into().unwrap());
        let err = std::io::Error::from_raw_os_error(
            u32::from_ne_bytes(msg[4..].try_into().unwrap()) as i32,
        );
        Some(match stage {
            STAGE_SECCOMP => format!(
                "installing the seccomp filter failed: {err} (the kernel needs CONFIG_SECCOMP_FILTER)"
            ),
            STAGE_EXEC => format!("cannot execute {:?}: {err}", self.command),
            _ => format!("the child failed before exec: {err}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (major, minor) of the running kernel, from uname.
    fn kernel_version() -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    #[test]
    fn probe_picks_spec_allow_on_linux_4_17_and_later_and_installs_nothing() {
        let how = probe_filter_install();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(
            status.lines().any(|l| l == "Seccomp:\t0"),
            "probing must not install a filter in the launcher itself:\n{status}"
        );
        // Unit tests run on the Linux host (gVisor reports 4.4.0 and refuses the flag).
        if kernel_version() >= (4, 17) {
            assert_eq!(how, FilterInstall::SeccompSpecAllow);
            assert_eq!(how.fallback_note(), None);
        } else {
            assert_ne!(how, FilterInstall::SeccompSpecAllow);
            assert!(how.fallback_note().is_some());
        }
    }
}
