//! `pause`: the process that holds a pod's namespaces open.
//!
//! It is PID 1 of the pod's PID namespace, so it must do three things, as the Kubernetes pause
//! container and Podman's catatonit do:
//! - sleep forever without using CPU;
//! - reap every child that the kernel re-parents to it (orphans of other containers in a shared
//!   PID namespace), so that no zombie piles up;
//! - exit 0 when asked to stop with SIGINT or SIGTERM.
//!
//! Signals are blocked and then taken synchronously with `sigwaitinfo`, instead of being handled
//! in signal handlers. That keeps all work out of async-signal context, and it matters for PID 1:
//! the kernel drops signals that PID 1 neither handles nor blocks, but a blocked signal stays
//! pending and is delivered to `sigwaitinfo`.
//!
//! The binary is shipped statically linked (`-C target-feature=+crt-static`), so it runs in an
//! image that has nothing else in it.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => {}
        Some("-v") | Some("--version") => {
            println!("pause {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("-h") | Some("--help") => {
            println!(
                "pause: the pod sandbox's PID 1. Sleeps, reaps zombies, exits 0 on SIGINT or \
                 SIGTERM.\nusage: pause [-v|--version] [-h|--help]"
            );
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("pause: unknown argument {other:?}; usage: pause [-v]");
            return ExitCode::from(2);
        }
    }
    if std::process::id() != 1 {
        // Not fatal: tests and debugging run it elsewhere. The same warning as Kubernetes' pause.
        let _ = writeln!(
            std::io::stderr(),
            "pause: warning: not PID 1, orphans of this PID namespace are not re-parented to me"
        );
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pause: {err}");
            ExitCode::from(1)
        }
    }
}

/// The signals pause waits for.
const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// Block the signals we care about, then wait for them one by one until told to stop.
fn run() -> std::io::Result<()> {
    // An inherited SIG_IGN for SIGCHLD would make the kernel reap children by itself and make
    // waitpid fail with ECHILD; put the default back so that we see and reap them.
    // SAFETY: plain libc calls on valid, initialised arguments.
    unsafe {
        if libc::signal(libc::SIGCHLD, libc::SIG_DFL) == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error());
        }
    }
    let waited = signal_set(&[libc::SIGCHLD, STOP_SIGNALS[0], STOP_SIGNALS[1]])?;
    // SAFETY: `waited` is an initialised sigset_t.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &waited, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Children may have exited before SIGCHLD was blocked: reap once up front.
    reap_children();
    loop {
        // SAFETY: `waited` is initialised; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigwaitinfo(&waited, std::ptr::null_mut()) };
        if signal < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if STOP_SIGNALS.contains(&signal) {
            return Ok(());
        }
        // SIGCHLD: several exits can collapse into one pending signal, so reap all of them.
        reap_children();
    }
}

fn signal_set(signals: &[libc::c_int]) -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigemptyset initialises the zeroed set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            if libc::sigaddset(&mut set, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(set)
    }
}

/// Collect every child that has exited, without blocking.
fn reap_children() {
    loop {
        // SAFETY: a null status pointer is allowed.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        // 0: children exist but none has exited; -1: no children at all (ECHILD).
        if pid <= 0 {
            return;
        }
    }
}
