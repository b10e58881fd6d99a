//! The event loop: waits for ptrace stops of every task in the tree and handles each one.
//!
//! Stops that occur:
//! - seccomp stop (PTRACE_EVENT_SECCOMP): a traced path syscall is about to run; maybe rewrite it;
//! - fork/vfork/clone/exec events: bookkeeping, then continue;
//! - PTRACE_EVENT_STOP: a group-stop (SIGSTOP & co) is held with PTRACE_LISTEN so the task stays
//!   stopped as it would without us; a new task's initial stop is simply continued;
//! - syscall stops: only while injecting an mmap for scratch memory (see [`crate::scratch`]),
//!   and at the exit of a syscall that changes a root or cwd (see [`crate::fs_context`]);
//! - signal-delivery stop: the signal is passed on unchanged.

use crate::log::Log;
use crate::procsys_dir::ProcSysDir;
use crate::redirect::Redirector;
use crate::scratch::{mapping_len, Scratch, ScratchPages};
use crate::syscalls;
use crate::tracee_memory;
use anyhow::{bail, Result};
use nix::sys::ptrace;
use nix::unistd::Pid;
use std::collections::{HashMap, HashSet};

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

pub struct Tracer {
    redirector: Redirector,
    log: Log,
    main: Pid,
    scratch: ScratchPages,
    /// Threads running an injected mmap.
    injecting: HashMap<i32, Injection>,
    /// Threads in a root/cwd-changing syscall whose syscall-entry stop was seen (gVisor
    /// reports one after the seccomp stop, Linux does not; see [`Injection::entered`]).
    change_entered: HashSet<i32>,
}

/// A thread running an injected mmap instead of its own syscall.
struct Injection {
    /// Registers of the syscall it was stopped in, restored afterwards.
    saved: libc::user_regs_struct,
    /// Whether the syscall-entry stop was seen. Linux does not report one (the seccomp stop
    /// comes after it), gVisor does (it runs the syscall-entry path again after the seccomp
    /// stop); entry stops are recognised by rax still holding -ENOSYS.
    entered: bool,
}

const GROUP_STOP_SIGNALS: [i32; 4] = [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

impl Tracer {
    pub fn new(dir: ProcSysDir, log: Log, main: Pid) -> Result<Self> {
        Ok(Self {
            redirector: Redirector::new(dir)?,
            log,
            main,
            scratch: ScratchPages::default(),
            injecting: HashMap::new(),
            change_entered: HashSet::new(),
        })
    }

    /// Runs until the command (the first task) exits. Its descendants that are still alive then
    /// are killed by PTRACE_O_EXITKILL when the launcher exits, as in a container whose init
    /// ended.
    pub fn run(&mut self) -> Result<Exit> {
        loop {
            let mut status = 0;
            // SAFETY: plain waitpid on our tracees.
            let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
            if tid < 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                bail!("waitpid failed while tracing: {err}");
            }
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                self.scratch.thread_exited(tid);
                self.injecting.remove(&tid);
                self.redirector.contexts.forget(tid);
                self.change_entered.remove(&tid);
                if tid == self.main.as_raw() {
                    return Ok(if libc::WIFEXITED(status) {
                        Exit::Code(libc::WEXITSTATUS(status))
                    } else {
                        Exit::Signal(libc::WTERMSIG(status))
                    });
                }
            } else if libc::WIFSTOPPED(status) {
                self.on_stop(tid, libc::WSTOPSIG(status), status >> 16);
            }
        }
    }

    fn on_stop(&mut self, tid: i32, sig: i32, event: i32) {
        let pid = Pid::from_raw(tid);
        match event {
            libc::PTRACE_EVENT_SECCOMP => self.on_path_syscall(pid),
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                if let Ok(new) = ptrace::getevent(pid) {
                    self.scratch.new_task(new as i32);
                    self.redirector.contexts.forget(new as i32);
                }
                resume(tid, 0);
            }
            libc::PTRACE_EVENT_EXEC => {
                let former = ptrace::getevent(pid).map_or(tid, |f| f as i32);
                self.injecting.remove(&former);
                self.scratch.exec(tid, former);
                self.redirector.contexts.forget(former);
                self.redirector.contexts.forget(tid);
                resume(tid, 0);
            }
            libc::PTRACE_EVENT_STOP => {
                if GROUP_STOP_SIGNALS.contains(&sig) {
                    // Stay stopped until SIGCONT, but keep reporting events (a later SIGCONT
                    // or SIGKILL).
                    // SAFETY: ptrace request on our tracee.
                    unsafe { libc::ptrace(libc::PTRACE_LISTEN, tid, 0, 0) };
                } else {
                    self.resume(tid, 0);
                }
            }
            0 if sig == (libc::SIGTRAP | 0x80) => self.on_syscall_stop(pid),
            // Signal-delivery stop: deliver the signal as it was.
            0 => self.resume(tid, sig),
            _ => resume(tid, 0),
        }
    }

    /// A traced path syscall is about to run in `pid`. Rewrite its path if it names a /proc/sys
    /// file that DIR replaces; always resume the thread (unless an injection starts).
    fn on_path_syscall(&mut self, pid: Pid) {
        let Ok(mut regs) = ptrace::getregs(pid) else {
            return; // The thread died (SIGKILL) meanwhile; its exit will be reported.
        };
        let tid = pid.as_raw();
        if syscalls::is_context_changing(regs.orig_rax) {
            // Forget roots and cwds now, and again at the syscall's exit (self.resume uses
            // PTRACE_SYSCALL for this thread from here on).
            self.redirector.contexts.change_starts(tid);
            self.change_entered.remove(&tid);
        }
        let Some(syscall) = syscalls::lookup(regs.orig_rax) else {
            return self.resume(tid, 0);
        };
        let Some((replacement, original)) =
            self.redirector
                .replacement_for(pid, &regs, syscall, &mut self.log)
        else {
            return self.resume(tid, 0);
        };
        let tgid = match self.scratch.has_page(pid.as_raw()) {
            true => 0, // unused: the thread already has a page
            false => match thread_group_of(pid) {
                Some(tgid) => tgid,
                None => return self.resume(tid, 0),
            },
        };
        match self.scratch.page_for(pid.as_raw(), tgid) {
            Scratch::Page(addr) => {
                let bytes = replacement.as_bytes_with_nul();
                if !self.scratch.holds(pid.as_raw(), bytes) {
                    if let Err(e) = tracee_memory::write_bytes(pid, addr, bytes) {
                        self.log.line(format_args!(
                            "pid {pid}: cannot write scratch memory ({e}); {} not redirected",
                            String::from_utf8_lossy(&original)
                        ));
                        return self.resume(tid, 0);
                    }
                    self.scratch.wrote(pid.as_raw(), bytes);
                }
                syscalls::set_arg(&mut regs, syscall.path_arg, addr);
                if ptrace::setregs(pid, regs).is_ok() && self.log.enabled() {
                    self.log.line(format_args!(
                        "pid {pid}: {} {} -> {}",
                        syscall.name,
                        String::from_utf8_lossy(&original),
                        replacement.to_string_lossy()
                    ));
                }
                self.resume(tid, 0)
            }
            Scratch::NeedsMapping => self.start_mmap_injection(pid, regs),
            Scratch::Unavailable => self.resume(tid, 0),
        }
    }

    /// Makes the thread run `mmap(NULL, len, RW, PRIVATE|ANONYMOUS)` in place of its syscall.
    /// [`Self::on_syscall_stop`] collects the address and restarts the original syscall.
    fn start_mmap_injection(&mut self, pid: Pid, regs: libc::user_regs_struct) {
        let mut mmap = regs;
        mmap.orig_rax = libc::SYS_mmap as u64;
        mmap.rdi = 0;
        mmap.rsi = mapping_len();
        mmap.rdx = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        mmap.r10 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        mmap.r8 = u64::MAX; // fd -1
        mmap.r9 = 0;
        if ptrace::setregs(pid, mmap).is_err() {
            // Registers untouched: let the original syscall run unredirected.
            return resume(pid.as_raw(), 0);
        }
        self.injecting.insert(
            pid.as_raw(),
            Injection {
                saved: regs,
                entered: false,
            },
        );
        // SAFETY: ptrace request on our tracee.
        unsafe { libc::ptrace(libc::PTRACE_SYSCALL, pid.as_raw(), 0, 0) };
    }

    fn on_syscall_stop(&mut self, pid: Pid) {
        let tid = pid.as_raw();
        if !self.injecting.contains_key(&tid) && self.redirector.contexts.is_changing(tid) {
            return self.on_context_change_stop(tid);
        }
        let Some(injection) = self.injecting.get_mut(&pid.as_raw()) else {
            return resume(pid.as_raw(), 0);
        };
        let Ok(regs) = ptrace::getregs(pid) else {
            return; // died meanwhile
        };
        let enosys = -(libc::ENOSYS as i64) as u64;
        if !injection.entered && regs.rax == enosys {
            // Syscall-entry stop (gVisor): let the mmap run, stop again at its exit.
            injection.entered = true;
            // SAFETY: ptrace request on our tracee.
            unsafe { libc::ptrace(libc::PTRACE_SYSCALL, pid.as_raw(), 0, 0) };
            return;
        }
        let mut saved = self
            .injecting
            .remove(&pid.as_raw())
            .expect("checked above")
            .saved;
        let rax = regs.rax as i64;
        let result = if (-4095..0).contains(&rax) {
            Err(-rax as i32)
        } else {
            Ok(regs.rax)
        };
        if let Some(tgid) = thread_group_of(pid) {
            if let Err(errno) = result {
                self.log.line(format_args!(
                    "pid {pid}: mmap of scratch memory failed ({}); no redirects in this process",
                    std::io::Error::from_raw_os_error(errno)
                ));
            }
            self.scratch.add_mapping(tgid, result);
        }
        // Back to the instruction that made the syscall, with the syscall number in rax, so the
        // original syscall runs again (and stops in seccomp again, now with scratch available).
        saved.rax = saved.orig_rax;
        saved.rip -= 2; // `syscall` is 0f 05
        let _ = ptrace::setregs(pid, saved);
        resume(pid.as_raw(), 0);
    }
}

impl Tracer {
    /// A syscall stop of a thread running a root/cwd-changing syscall: at the exit stop, what
    /// was known about roots and cwds is forgotten and the thread runs on without syscall stops.
    fn on_context_change_stop(&mut self, tid: i32) {
        let Ok(regs) = ptrace::getregs(Pid::from_raw(tid)) else {
            return; // died meanwhile
        };
        let enosys = -(libc::ENOSYS as i64) as u64;
        if regs.rax == enosys && self.change_entered.insert(tid) {
            // Syscall-entry stop (gVisor): wait for the exit.
            // SAFETY: ptrace request on our tracee.
            unsafe { libc::ptrace(libc::PTRACE_SYSCALL, tid, 0, 0) };
            return;
        }
        self.change_entered.remove(&tid);
        self.redirector.contexts.change_done(tid);
        resume(tid, 0);
    }

    /// Resumes a thread after a seccomp, signal-delivery or non-group event stop: with
    /// PTRACE_SYSCALL while the launcher waits for its syscall's exit (an injected mmap, or a
    /// root/cwd change), else PTRACE_CONT. `sig` is delivered (0 for none).
    fn resume(&self, tid: i32, sig: i32) {
        if self.injecting.contains_key(&tid) || self.redirector.contexts.is_changing(tid) {
            // SAFETY: ptrace request on our tracee.
            unsafe { libc::ptrace(libc::PTRACE_SYSCALL, tid, 0, sig) };
        } else {
            resume(tid, sig);
        }
    }
}

/// Continues a stopped tracee, delivering `sig` (0 for none). ESRCH (the tracee was killed
/// meanwhile) is fine: its exit is reported by waitpid.
fn resume(tid: i32, sig: i32) {
    // SAFETY: ptrace request on our tracee; raw so that real-time signals pass through too.
    unsafe { libc::ptrace(libc::PTRACE_CONT, tid, 0, sig) };
}

/// Thread-group id of a thread, from /proc/<tid>/status.
fn thread_group_of(pid: Pid) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}
