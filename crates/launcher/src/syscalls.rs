//! The path-taking syscalls the launcher intercepts, and the seccomp filter that makes
//! only those stop the tracee.
//!
//! Every other syscall is allowed by the filter without a ptrace stop, so a tracee that does
//! not touch paths runs at native speed.

use anyhow::{Context, Result};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use std::collections::BTreeMap;

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "the launcher decodes x86_64 syscall registers; other architectures are not supported"
);

/// Where a syscall keeps the path it operates on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathSyscall {
    pub name: &'static str,
    /// Index (0-based) of the argument register holding the path pointer.
    pub path_arg: usize,
    /// Index of the argument holding the directory fd a relative path is resolved against,
    /// or `None` when the syscall always resolves against the current directory.
    pub dirfd_arg: Option<usize>,
}

const fn cwd(name: &'static str) -> PathSyscall {
    PathSyscall {
        name,
        path_arg: 0,
        dirfd_arg: None,
    }
}

const fn at(name: &'static str) -> PathSyscall {
    PathSyscall {
        name,
        path_arg: 1,
        dirfd_arg: Some(0),
    }
}

/// The syscalls a program uses to open or probe a file by name.
///
/// `truncate` is here because the kubelet-style "write a sysctl" may use it; `chdir` so that a
/// program changing into a redirected directory lands in DIR (relative opens then work natively).
pub const TRACED: &[(i64, PathSyscall)] = &[
    (libc::SYS_open, cwd("open")),
    (libc::SYS_stat, cwd("stat")),
    (libc::SYS_lstat, cwd("lstat")),
    (libc::SYS_access, cwd("access")),
    (libc::SYS_readlink, cwd("readlink")),
    (libc::SYS_truncate, cwd("truncate")),
    (libc::SYS_chdir, cwd("chdir")),
    (libc::SYS_openat, at("openat")),
    (libc::SYS_newfstatat, at("newfstatat")),
    (libc::SYS_readlinkat, at("readlinkat")),
    (libc::SYS_faccessat, at("faccessat")),
    (libc::SYS_statx, at("statx")),
    (libc::SYS_openat2, at("openat2")),
    (libc::SYS_faccessat2, at("faccessat2")),
];

/// Syscalls that change a thread's root or current directory (for it and for the threads it
/// shares them with). They stop too, so that what [`crate::fs_context`] remembers about roots
/// and cwds is forgotten when it may have become wrong. All are rare.
pub const CONTEXT_CHANGING: &[i64] = &[
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_chroot,
    libc::SYS_pivot_root,
    libc::SYS_setns,
];

pub fn is_context_changing(nr: u64) -> bool {
    CONTEXT_CHANGING.iter().any(|n| *n as u64 == nr)
}

/// Looks up how to decode a traced syscall from its number.
pub fn lookup(nr: u64) -> Option<PathSyscall> {
    TRACED
        .iter()
        .find(|(n, _)| *n as u64 == nr)
        .map(|(_, s)| *s)
}

/// Builds the BPF program: SECCOMP_RET_TRACE for the syscalls in [`TRACED`] and
/// [`CONTEXT_CHANGING`], allow the rest.
///
/// The filter has no argument conditions, so kernels since 5.11 cache "allow" for every other
/// syscall in a bitmap and do not even run the BPF program for them.
pub fn build_filter() -> Result<BpfProgram> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = TRACED
        .iter()
        .map(|(nr, _)| *nr)
        .chain(CONTEXT_CHANGING.iter().copied())
        .map(|nr| (nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Trace(0),
        TargetArch::x86_64,
    )
    .context("describing the seccomp filter")?;
    BpfProgram::try_from(filter).context("compiling the seccomp filter to BPF")
}

/// Returns the value of syscall argument `index` (0..6) from the registers.
pub fn arg(regs: &libc::user_regs_struct, index: usize) -> u64 {
    match index {
        0 => regs.rdi,
        1 => regs.rsi,
        2 => regs.rdx,
        3 => regs.r10,
        4 => regs.r8,
        5 => regs.r9,
        _ => unreachable!("x86_64 syscalls have six arguments"),
    }
}

/// Sets syscall argument `index` (0..6) in the registers.
pub fn set_arg(regs: &mut libc::user_regs_struct, index: usize, value: u64) {
    match index {
        0 => regs.rdi = value,
        1 => regs.rsi = value,
        2 => regs.rdx = value,
        3 => regs.r10 = value,
        4 => regs.r8 = value,
        5 => regs.r9 = value,
        _ => unreachable!("x86_64 syscalls have six arguments"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_compiles_and_every_traced_syscall_decodes() {
        let program = build_filter().unwrap();
        assert!(program.len() > TRACED.len());
        for (nr, s) in TRACED {
            assert_eq!(lookup(*nr as u64), Some(*s));
        }
        assert_eq!(lookup(libc::SYS_getpid as u64), None);
        assert!(is_context_changing(libc::SYS_fchdir as u64));
        assert!(!is_context_changing(libc::SYS_openat as u64));
    }

    #[test]
    fn argument_registers_round_trip() {
        let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        for i in 0..6 {
            set_arg(&mut regs, i, 100 + i as u64);
        }
        assert_eq!(
            (0..6).map(|i| arg(&regs, i)).collect::<Vec<_>>(),
            vec![100, 101, 102, 103, 104, 105]
        );
        assert_eq!(regs.r10, 103, "the 4th syscall argument is r10, not rcx");
    }
}
