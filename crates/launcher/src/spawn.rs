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
    let install = |p: &libc::sock_fprog| {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            p as *const _,
        )
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
