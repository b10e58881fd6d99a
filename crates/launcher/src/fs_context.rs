//! What the launcher remembers about each thread's root and current directory, so that a path
//! stop does not have to ask the kernel again (a `statx` of `/proc/<tid>/root`, a `readlink` of
//! `/proc/<tid>/cwd`) every time.
//!
//! A thread's root and cwd only change through the syscalls in
//! [`crate::syscalls::CONTEXT_CHANGING`] (chdir, fchdir, chroot, pivot_root, setns), which the
//! filter makes stop. They may change for other threads too (threads share them with
//! CLONE_FS; pivot_root moves every task whose root or cwd was the old root), so any such
//! syscall forgets everything remembered about every thread, twice: at its seccomp stop (before
//! it runs) and at its syscall-exit stop (after it ran; the tracer resumes the thread with
//! PTRACE_SYSCALL to see it). While one is between those two stops, nothing new is
//! remembered: another thread's answer could be read before the change lands and be stale
//! right after.
//!
//! Not covered: a `mount --move` of a mount holding some thread's cwd changes the path the
//! kernel reports for it; moving one under /proc is not something the programs we run do.

use std::collections::{HashMap, HashSet};

#[derive(Default, Clone, Copy)]
struct Facts {
    /// The thread's root is the launcher's root.
    same_root: Option<bool>,
    /// The thread's cwd is neither /proc nor below it.
    cwd_outside_proc: Option<bool>,
}

#[derive(Default)]
pub struct FsContexts {
    facts: HashMap<i32, Facts>,
    /// Threads between the seccomp stop and the syscall-exit stop of a context-changing
    /// syscall.
    changing: HashSet<i32>,
}

impl FsContexts {
    /// `tid` is about to run a context-changing syscall.
    pub fn change_starts(&mut self, tid: i32) {
        self.facts.clear();
        self.changing.insert(tid);
    }

    /// Whether `tid` is between the two stops of a context-changing syscall (the tracer keeps
    /// resuming it with PTRACE_SYSCALL until the exit stop).
    pub fn is_changing(&self, tid: i32) -> bool {
        self.changing.contains(&tid)
    }

    /// `tid`'s context-changing syscall returned.
    pub fn change_done(&mut self, tid: i32) {
        self.facts.clear();
        self.changing.remove(&tid);
    }

    /// `tid` exited, is new (its id may be a reused one) or exec'd (a non-leader's exec moves
    /// it to the leader's id, with its own root and cwd): forget it.
    pub fn forget(&mut self, tid: i32) {
        self.facts.remove(&tid);
        self.changing.remove(&tid);
    }

    /// Whether `tid` has the launcher's root; `ask` queries the kernel when it is not known.
    pub fn same_root(&mut self, tid: i32, ask: impl FnOnce() -> bool) -> bool {
        if let Some(known) = self.facts.get(&tid).and_then(|f| f.same_root) {
            return known;
        }
        let answer = ask();
        if self.changing.is_empty() {
            self.facts.entry(tid).or_default().same_root = Some(answer);
        }
        answer
    }

    /// Whether `tid`'s cwd is outside /proc; `ask` queries the kernel when it is not known
    /// (`None`: could not tell, not remembered).
    pub fn cwd_outside_proc(&mut self, tid: i32, ask: impl FnOnce() -> Option<bool>) -> bool {
        if let Some(known) = self.facts.get(&tid).and_then(|f| f.cwd_outside_proc) {
            return known;
        }
        let Some(answer) = ask() else {
            return false;
        };
        if self.changing.is_empty() {
            self.facts.entry(tid).or_default().cwd_outside_proc = Some(answer);
        }
        answer
    }
}

/// Whether a cwd, as `/proc/<tid>/cwd` reports it, is neither /proc nor below it.
pub fn outside_proc(cwd: &[u8]) -> bool {
    !(cwd == b"/proc" || cwd.starts_with(b"/proc/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_remembered_until_a_context_change() {
        let mut c = FsContexts::default();
        assert!(c.same_root(10, || true));
        assert!(c.same_root(10, || panic!("asked again")));
        assert!(c.cwd_outside_proc(10, || Some(true)));
        assert!(c.cwd_outside_proc(10, || panic!("asked again")));

        c.change_starts(11);
        assert!(c.is_changing(11));
        assert!(
            !c.same_root(10, || false),
            "forgotten at the change's start"
        );
        // While 11's change is running, answers are used but not remembered.
        assert!(!c.cwd_outside_proc(10, || Some(false)));
        assert!(c.cwd_outside_proc(10, || Some(true)));

        c.change_done(11);
        assert!(!c.is_changing(11));
        assert!(c.same_root(10, || true), "forgotten at the change's end");
        assert!(c.same_root(10, || panic!("remembered again")));
    }

    #[test]
    fn unknown_cwd_means_it_may_be_in_proc_and_forget_drops_one_thread() {
        let mut c = FsContexts::default();
        assert!(!c.cwd_outside_proc(1, || None));
        assert!(c.cwd_outside_proc(1, || Some(true)));
        assert!(c.same_root(2, || true));
        c.forget(1);
        assert!(!c.cwd_outside_proc(1, || Some(false)));
        assert!(c.same_root(2, || panic!("2 is still known")));
        c.change_starts(3);
        c.forget(3);
        assert!(
            !c.is_changing(3),
            "an exited thread's change never completes"
        );
    }

    #[test]
    fn proc_and_below_are_not_outside() {
        assert!(!outside_proc(b"/proc"));
        assert!(!outside_proc(b"/proc/sys/kernel"));
        assert!(outside_proc(b"/"));
        assert!(outside_proc(b"/procfs"));
        assert!(outside_proc(b"/tmp/proc/sys"));
    }
}
